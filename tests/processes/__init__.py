"""Tests of the Procfile's real processes, started as a host would start them."""
