"""Tests of ``producers/patreon/``: the member webhook, its events, rules, memory and CLI."""
