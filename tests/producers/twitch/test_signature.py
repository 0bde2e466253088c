"""EventSub signatures and freshness: the published vectors, header handling, stale and future timestamps."""

from __future__ import annotations

import json
import time

import pytest
from starlette.datastructures import Headers

from producers.twitch.samples import signed_request, twitch_timestamp
from producers.twitch.signature import (
    MAX_AGE_S,
    MAX_FUTURE_S,
    SignatureRejected,
    parse_timestamp,
    sign,
    signature_matches,
    verify,
)
from tests.producers.twitch.test_samples import signature_vectors

SECRET = "s3cret-for-signature-tests"


def test_published_vectors() -> None:
    for vector in signature_vectors():
        headers = Headers(vector["headers"] | {"Twitch-Eventsub-Message-Signature": vector["expected_signature"]})
        body = vector["body"].encode()
        assert len(body) == vector["body_utf8_length"]
        message_id = vector["headers"]["Twitch-Eventsub-Message-Id"]
        timestamp = vector["headers"]["Twitch-Eventsub-Message-Timestamp"]
        assert sign(vector["secret"], message_id, timestamp, body) == vector["expected_signature"]
        # Authentic, and judged at the moment it was sent.
        sent = verify(vector["secret"], headers, body, now=parse_timestamp(timestamp) + 1)
        assert sent.message_id == message_id and sent.timestamp == timestamp
        # The same bytes are stale today.
        with pytest.raises(SignatureRejected, match="older"):
            verify(vector["secret"], headers, body, now=time.time())
        # Any change to secret, id, timestamp or body breaks it.
        assert not signature_matches("other-secret", message_id, timestamp, body, vector["expected_signature"])
        assert not signature_matches(vector["secret"], message_id + "x", timestamp, body, vector["expected_signature"])
        assert not signature_matches(
            vector["secret"], message_id, timestamp[:-2] + "Z", body, vector["expected_signature"]
        )
        assert not signature_matches(vector["secret"], message_id, timestamp, body + b" ", vector["expected_signature"])


def test_the_raw_body_is_signed_not_its_json() -> None:
    """Re-serialising the JSON (spaces, key order) changes the bytes and so the signature."""
    vector = signature_vectors()[0]
    reserialised = json.dumps(json.loads(vector["body"])).encode()
    message_id = vector["headers"]["Twitch-Eventsub-Message-Id"]
    timestamp = vector["headers"]["Twitch-Eventsub-Message-Timestamp"]
    assert not signature_matches(vector["secret"], message_id, timestamp, reserialised, vector["expected_signature"])


def test_fresh_message_passes_and_header_case_does_not_matter() -> None:
    body, headers = signed_request(SECRET, b'{"x":1}')
    upper = {name.upper(): value for name, value in headers.items()}
    assert verify(SECRET, Headers(upper), body, now=time.time()).message_id == headers["twitch-eventsub-message-id"]


@pytest.mark.parametrize(
    "missing", ["twitch-eventsub-message-id", "twitch-eventsub-message-timestamp", "twitch-eventsub-message-signature"]
)
def test_missing_headers_are_rejected(missing: str) -> None:
    body, headers = signed_request(SECRET, b"{}")
    del headers[missing]
    with pytest.raises(SignatureRejected, match="missing"):
        verify(SECRET, Headers(headers), body, now=time.time())


@pytest.mark.parametrize("signature", ["", "sha256=", "sha256=" + "0" * 64, "SHA256=abc", "sha256=é", "\x00"])
def test_wrong_signatures_are_rejected(signature: str) -> None:
    body, headers = signed_request(SECRET, b"{}")
    headers["twitch-eventsub-message-signature"] = signature
    with pytest.raises(SignatureRejected):
        verify(SECRET, Headers(headers), body, now=time.time())


@pytest.mark.parametrize(
    ("age_s", "accepted"),
    [
        (0, True),
        (MAX_AGE_S - 5, True),
        (MAX_AGE_S + 5, False),
        (-MAX_FUTURE_S + 5, True),
        (-MAX_FUTURE_S - 5, False),
        (-3600, False),
        (86400 * 365, False),
    ],
)
def test_stale_and_future_timestamps(age_s: float, accepted: bool) -> None:
    now = time.time()
    body, headers = signed_request(SECRET, b"{}", timestamp=twitch_timestamp(now - age_s))
    if accepted:
        verify(SECRET, Headers(headers), body, now=now)
    else:
        with pytest.raises(SignatureRejected, match=r"older|ahead"):
            verify(SECRET, Headers(headers), body, now=now)


@pytest.mark.parametrize(
    "timestamp",
    ["yesterday", "2024-01-01T00:00:00", "2024-01-01", "2024-01-01T00:00:00.Z", " 2024-01-01T00:00:00Z", "9" * 50],
)
def test_signed_but_unparseable_timestamps_are_rejected(timestamp: str) -> None:
    body, headers = signed_request(SECRET, b"{}", timestamp=timestamp)
    with pytest.raises(SignatureRejected, match="RFC 3339"):
        verify(SECRET, Headers(headers), body, now=time.time())


def test_timestamps_with_nanoseconds_and_offsets() -> None:
    assert parse_timestamp("2019-11-16T10:11:12.634234626Z") == pytest.approx(1573899072.634234)
    assert parse_timestamp("2021-02-19T23:47:00.8091512Z") == pytest.approx(1613778420.809151)
    assert parse_timestamp("2021-02-20T00:47:00+01:00") == parse_timestamp("2021-02-19T23:47:00Z")
    now = time.time()
    assert parse_timestamp(twitch_timestamp(now)) == pytest.approx(now, abs=1e-5)


def test_overlong_or_unprintable_message_ids_are_rejected_even_when_signed() -> None:
    for message_id in ("x" * 201, "id\x00"):
        body, headers = signed_request(SECRET, b"{}", message_id=message_id)
        with pytest.raises(SignatureRejected, match="message id"):
            verify(SECRET, Headers(headers), body, now=time.time())
