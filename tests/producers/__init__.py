"""Tests of what ``producers/`` shares between its sources: the operator CLI, links, grant creation batching."""
