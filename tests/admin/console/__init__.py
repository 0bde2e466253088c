"""Tests of ``admin/console/``: the operator console over HTTP, in a real browser, and through a Redis outage."""
