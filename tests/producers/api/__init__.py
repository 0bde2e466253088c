"""Tests of ``producers/api/``: the suppliers' grants API through the real app."""
