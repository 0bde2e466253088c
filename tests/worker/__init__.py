"""Tests of the delivery side (``worker/``): ledger, schedule, delivery, limiter, client, retention."""
