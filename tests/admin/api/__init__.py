"""Tests of ``admin/api/``: the operator API (bearer ADMIN_TOKEN) through the real app."""
