"""Tests of ``producers/twitch/``: the EventSub webhook, its signatures, rules, samples and CLI."""
