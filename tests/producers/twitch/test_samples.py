"""Twitch's documented EventSub samples and the published signature vectors, kept with the tests.

``tests/producers/twitch/data`` holds verbatim copies of the research samples
(``../shared/samples/twitch`` from the repository, see docs/twitch.md §2-3) so the suite
runs in a fresh clone; ``test_copies_match_the_research_samples`` checks the
copies whenever the originals are present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SAMPLES = Path(__file__).parent / "data"
#: The shared research samples beside the repository (``../shared`` from its root), where present.
RESEARCH_SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples" / "twitch"


def documented(name: str) -> bytes:
    """The exact bytes of a documented sample, e.g. ``documented("channel.cheer.json")``."""
    return (SAMPLES / name).read_bytes()


def signature_vectors() -> list[dict[str, Any]]:
    """The two published (secret, headers, body) -> signature vectors."""
    vectors: list[dict[str, Any]] = json.loads(documented("signature_test_vectors.json"))
    return vectors


def _contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


@pytest.mark.skipif(not RESEARCH_SAMPLES.is_dir(), reason="research samples not on this machine")
def test_copies_match_the_research_samples() -> None:
    assert _contents(RESEARCH_SAMPLES) == _contents(SAMPLES)


def test_every_sample_is_json() -> None:
    for name, raw in _contents(SAMPLES).items():
        assert isinstance(json.loads(raw), dict | list), name
