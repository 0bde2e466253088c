"""Fuzzing every POST route, and schemathesis over the app's own OpenAPI document, against a running app.

Shared by ``bench/fuzz_campaigns.py`` (long runs, figures for BENCHMARKS.md) and
``tests/wetbot_rewards/test_fuzz_routes.py`` (short runs in the suite). Each campaign sends hypothesis-generated
requests over real HTTP to an app served at ``base_url`` and tallies, per route:

- **requests** sent;
- **5xx**: answers with a status of 500 or more (the app's tokens and secrets are all set, so none is
  expected: a 503 for a missing token would be a configuration fault of the rig, and is counted too);
- **unauthenticated grants**: grants (or run-time links) that appeared in the ledger after a request
  without the right token or signature.

A failing request is counted, not raised, so one run reports every figure; the first few are kept as
``examples`` (method, path, status and what was sent) to turn into a reproduction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from redis import Redis

from producers.patreon.events import MEMBER_TRIGGERS
from producers.patreon.samples import Member, encode
from producers.patreon.webhook import signature as patreon_signature
from producers.twitch.samples import SAMPLE_TYPES, sample_payload, signed_request
from producers.twitch.signature import HEADER_SIGNATURE
from worker.keys import Keys

GUILD = "111111111111111111"
USER = "222222222222222222"
LINKED_TWITCH = "4242"

#: Rules that grant for a cheer, a follow and a new Patreon pledge: a request that got past the checks
#: unsigned would show up as a grant.
RULES = f"""
guild_id = "{GUILD}"

[[twitch.rules]]
name = "cheer"
event = "channel.cheer"
items = [{{ id = "gem", amount = 1 }}]

[[twitch.rules]]
name = "follow"
event = "channel.follow"
items = [{{ id = "welcome-kit", amount = 1 }}]

[[patreon.rules]]
name = "welcome"
event = "members:pledge:create"
items = [{{ id = "patron-crate", amount = 1 }}]

[twitch.links]
"{LINKED_TWITCH}" = "{USER}"
"""

MAX_KEPT_EXAMPLES = 5


@dataclass(frozen=True)
class Secrets:
    """What the app under test was started with."""

    grants_token: str
    twitch_secret: str
    patreon_secret: str


@dataclass
class Tally:
    """Figures of one campaign."""

    requests: int = 0
    server_errors: int = 0
    unauthenticated_grants: int = 0
    examples: list[str] = field(default_factory=list)

    def keep(self, what: str) -> None:
        if len(self.examples) < MAX_KEPT_EXAMPLES:
            self.examples.append(what)


class Answer(Protocol):
    """What ``Target.send`` reads of an answer (a ``requests`` or a schemathesis response)."""

    status_code: int

    @property
    def text(self) -> str: ...


@dataclass
class Target:
    """The app at ``base_url`` and the Redis keys (``prefix``) it writes."""

    base_url: str
    redis: Redis
    prefix: str
    secrets: Secrets
    session: requests.Session = field(default_factory=requests.Session)

    def writes(self) -> int:
        """Grants plus run-time links: what an unauthenticated request must never add to."""
        keys = Keys(self.prefix)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(keys.all_grants())
        for platform in ("twitch", "patreon"):
            pipe.hlen(keys.links(platform))
        return sum(int(n) for n in pipe.execute())

    def send(self, tally: Tally, method: str, path: str, *, authenticated: bool, call: Callable[[], Answer]) -> None:
        """Send one request (``call``) and tally it."""
        before = self.writes()
        response = call()
        tally.requests += 1
        if response.status_code >= 500:
            tally.server_errors += 1
            tally.keep(f"{method} {path} -> {response.status_code}: {response.text[:200]}")
        if not authenticated and self.writes() > before:
            tally.unauthenticated_grants += 1
            tally.keep(f"{method} {path} unauthenticated -> {response.status_code} wrote to the ledger")


# --- strategies ----------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)
#: Header values requests can send: printable latin-1 without CR/LF, as bytes (no leading whitespace).
header_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)
snowflakes = st.sampled_from([USER, GUILD, "1" * 17, "9" * 20]) | st.text("0123456789", max_size=22)
item_ids = st.sampled_from(["gem", "coins", "a" * 100]) | st.text(max_size=12)
amounts = st.sampled_from([1, -1, 0, 1e9, 1e9 + 1]) | json_values


@st.composite
def with_one_field_changed(draw: st.DrawFn, valid: dict[str, Any], fields: st.SearchStrategy[Any]) -> dict[str, Any]:
    """``valid``, or ``valid`` with one field set to anything, removed, or one field added."""
    body = dict(valid)
    action = draw(st.sampled_from(["keep", "set", "drop", "add"]))
    name = draw(st.sampled_from(sorted(body)))
    if action == "set":
        body[name] = draw(fields)
    elif action == "drop":
        del body[name]
    elif action == "add":
        body[draw(st.text(max_size=10))] = draw(json_values)
    return body


grant_bodies = st.builds(
    lambda user, item, amount, key: {
        "user_id": user,
        "items": [{"item_id": item, "amount": amount}],
        "idempotency_key": key,
    },
    snowflakes,
    item_ids,
    amounts,
    st.none() | st.text(max_size=30),
).flatmap(lambda valid: with_one_field_changed(valid, json_values | snowflakes))
link_bodies = st.builds(
    lambda platform, ext, user: {"platform": platform, "external_id": ext, "discord_user_id": user},
    st.sampled_from(["twitch", "patreon", "Twitch", ""]),
    st.text("0123456789", max_size=34),
    snowflakes,
).flatmap(lambda valid: with_one_field_changed(valid, json_values | snowflakes))


def api_bodies(valid: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """A JSON body made from ``valid`` (most of the time), any JSON value, or any bytes."""
    return (
        valid.map(lambda v: json.dumps(v).encode())
        | json_values.map(lambda v: json.dumps(v).encode())
        | st.binary(max_size=200)
    )


content_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", None])
#: How a request authenticates: the right token, none, a wrong one, or the right one in a wrong header.
AUTH_MODES = ["token", "none", "wrong token", "no scheme", "basic"]


def auth_header(mode: str, token: str) -> dict[str, str]:
    values = {
        "token": f"Bearer {token}",
        "wrong token": f"Bearer {token[:-1]}x",
        "no scheme": token,
        "basic": f"Basic {token}",
    }
    return {"Authorization": values[mode]} if mode in values else {}


twitch_bodies = st.builds(
    lambda kind, fields: json.dumps(
        {**(p := sample_payload(kind)), "event": {**p["event"], **fields}}, separators=(",", ":")
    ).encode(),
    st.sampled_from(sorted(SAMPLE_TYPES)),
    st.dictionaries(
        st.sampled_from(["user_id", "bits", "tier", "is_anonymous", "user_login"]), json_values, max_size=2
    ),
) | st.binary(max_size=300)
twitch_message_types = st.sampled_from(["notification", "revocation", "webhook_callback_verification", "other"])
#: How a Twitch or Patreon delivery is signed: right, not at all, with another secret, or tampered with after.
SIGN_MODES = ["valid", "none", "other secret", "tampered"]
patreon_bodies = (
    st.builds(
        lambda discord, status: encode(Member(discord_id=discord, status=status).document()),
        st.sampled_from([None, USER]),
        st.sampled_from(["Paid", "Declined", None]),
    )
    | json_values.map(lambda v: encode({"data": v}))
    | st.binary(max_size=300)
)
patreon_triggers = st.sampled_from(sorted(MEMBER_TRIGGERS)) | header_text


# --- campaigns -----------------------------------------------------------------------------------------------


def _run(examples: int, strategy: st.SearchStrategy[Any], test: Callable[[Any], None]) -> None:
    """Run ``test`` on ``examples`` generated values (no shrinking: failures are tallied, not raised)."""
    runner = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(given(strategy)(test))
    runner()


def fuzz_api_route(target: Target, path: str, examples: int) -> Tally:
    """``POST /grants`` or ``/links``: any body and content type, with and without the token."""
    tally = Tally()
    valid = grant_bodies if path == "/grants" else link_bodies

    def test(drawn: tuple[str, bytes, str | None]) -> None:
        mode, body, content_type = drawn
        headers = auth_header(mode, target.secrets.grants_token)
        if content_type is not None:
            headers["Content-Type"] = content_type
        url = target.base_url + path
        target.send(
            tally,
            "POST",
            path,
            authenticated=mode == "token",
            call=lambda: target.session.post(url, data=body, headers=headers, timeout=10),
        )

    _run(examples, st.tuples(st.sampled_from(AUTH_MODES), api_bodies(valid), content_types), test)
    return tally


def fuzz_twitch(target: Target, examples: int) -> Tally:
    """``POST /webhooks/twitch``: any body, signed right, not at all, with another secret, or tampered with."""
    tally = Tally()
    path = "/webhooks/twitch"

    def test(drawn: tuple[str, bytes, str, dict[str, str]]) -> None:
        mode, body, message_type, noise = drawn
        secret = target.secrets.twitch_secret if mode != "other secret" else "another-secret-0123"
        sent, text_headers = signed_request(secret, body, message_type=message_type)
        headers: dict[str, str | bytes] = dict(text_headers)
        if mode == "none":
            del headers[HEADER_SIGNATURE]
        if mode == "tampered":
            sent = sent + b" "
        headers.update({name: value.encode("latin-1") for name, value in noise.items()})
        url = target.base_url + path
        target.send(
            tally,
            "POST",
            path,
            authenticated=mode == "valid",
            call=lambda: target.session.post(url, data=sent, headers=headers, timeout=10),
        )

    noise = st.dictionaries(
        st.sampled_from(
            ["Twitch-Eventsub-Message-Retry", "Twitch-Eventsub-Subscription-Type", "Content-Type", "X-Anything"]
        ),
        header_text,
        max_size=2,
    )
    _run(examples, st.tuples(st.sampled_from(SIGN_MODES), twitch_bodies, twitch_message_types, noise), test)
    return tally


def fuzz_patreon(target: Target, examples: int) -> Tally:
    """``POST /webhooks/patreon``: any body and trigger, signed right, not at all, with another secret, tampered."""
    tally = Tally()
    path = "/webhooks/patreon"

    def test(drawn: tuple[str, bytes, str]) -> None:
        mode, body, trigger = drawn
        secret = target.secrets.patreon_secret if mode != "other secret" else "another-secret-0123"
        headers: dict[str, str | bytes] = {
            "Content-Type": "application/json",
            "X-Patreon-Event": trigger.encode("latin-1"),
        }
        if mode != "none":
            headers["X-Patreon-Signature"] = patreon_signature(secret, body)
        sent = body + b" " if mode == "tampered" else body
        url = target.base_url + path
        target.send(
            tally,
            "POST",
            path,
            authenticated=mode == "valid",
            call=lambda: target.session.post(url, data=sent, headers=headers, timeout=10),
        )

    _run(examples, st.tuples(st.sampled_from(SIGN_MODES), patreon_bodies, patreon_triggers), test)
    return tally


def fuzz_schema(target: Target, openapi: dict[str, Any], examples: int) -> Tally:
    """schemathesis over every operation of ``openapi``, positive and negative cases, with and without the token.

    The document declares no security scheme (the token is checked by ``GuardedRoute``), so each case gets
    one of ``AUTH_MODES`` here; webhook bodies are schemathesis' own (unsigned: none may grant).
    """
    tally = Tally()
    schema = schemathesis.openapi.from_dict(openapi)
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # our own document is valid
        cases = st.one_of(
            operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
        )
        _run(examples, st.tuples(cases, st.sampled_from(AUTH_MODES)), _schema_case_test(target, tally))
    return tally


def _schema_case_test(target: Target, tally: Tally) -> Callable[[tuple[schemathesis.Case[Any], str]], None]:
    def test(drawn: tuple[schemathesis.Case[Any], str]) -> None:
        case, mode = drawn
        path = case.operation.path
        headers = auth_header(mode, target.secrets.grants_token)
        authenticated = mode == "token" and not path.startswith("/webhooks/")
        target.send(
            tally,
            case.method.upper(),
            path,
            authenticated=authenticated,
            call=lambda: case.call(base_url=target.base_url, session=target.session, headers=headers, timeout=10),
        )

    return test


def fuzz_everything(target: Target, openapi: dict[str, Any], examples: int) -> dict[str, Tally]:
    """Every campaign, ``examples`` requests per POST route and per schemathesis operation."""
    return {
        "POST /grants": fuzz_api_route(target, "/grants", examples),
        "POST /links": fuzz_api_route(target, "/links", examples),
        "POST /webhooks/twitch": fuzz_twitch(target, examples),
        "POST /webhooks/patreon": fuzz_patreon(target, examples),
        f"schemathesis ({len(openapi['paths'])} paths)": fuzz_schema(target, openapi, examples),
    }
