"""Tests of ``config/``: settings and the rewards file."""
