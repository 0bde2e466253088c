"""Tests of ``admin/``: operator actions, the operator API, the console and the operator CLI."""
