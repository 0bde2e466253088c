"""Tests of ``producers/api/``: the grants API, health and metrics, through the real app."""
