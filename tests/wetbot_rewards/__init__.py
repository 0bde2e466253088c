"""Tests of the assembled web app as a whole: error bodies, hostile HTTP, fuzzing every route, read routes."""
