"""Tests of ``simulator/``: the WetBot simulator itself."""
