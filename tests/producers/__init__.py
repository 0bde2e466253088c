"""Tests of ``producers/``: what its sources share (links, the event inbox, grant creation batching, replica
confirmation of a producer's answer, how ``send-test`` prints an answer)."""
