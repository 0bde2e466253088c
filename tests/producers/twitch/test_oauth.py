"""The OAuth client against the Twitch simulator over HTTP: device code flow, refresh, validate, revoke, scopes."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from config.rewards import TWITCH_EVENTS, parse_rewards
from producers.twitch.oauth import (
    SCOPES_BY_EVENT,
    AccessDenied,
    DeviceCodeExpired,
    InvalidAccessToken,
    InvalidRefreshToken,
    OAuthClient,
    OAuthRefused,
    OAuthUnavailable,
    TokenPair,
    TwitchAuthError,
    missing_scopes,
    scopes_for,
)
from simulator.twitch import DEFAULT_BROADCASTER, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TwitchSimulator
from tests.conftest import GUILD

SCOPES = ("bits:read", "channel:manage:redemptions", "channel:read:redemptions")
SimFactory = Callable[..., TwitchSimulator]


@pytest.fixture
def make_sim() -> Iterator[SimFactory]:
    started: list[TwitchSimulator] = []

    def make(**kwargs: float | str | None) -> TwitchSimulator:
        options: dict[str, float | str | None] = {"device_poll_interval_s": 0.05, **kwargs}
        sim = TwitchSimulator(**options).start()  # type: ignore[arg-type]
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: SimFactory) -> TwitchSimulator:
    return make_sim()


def client_for(sim: TwitchSimulator, secret: str | None = DEFAULT_CLIENT_SECRET) -> OAuthClient:
    return OAuthClient(auth_url=sim.auth_url, client_id=DEFAULT_CLIENT_ID, client_secret=secret, timeout_s=5.0)


@pytest.fixture
def oauth(sim: TwitchSimulator) -> Iterator[OAuthClient]:
    client = client_for(sim)
    yield client
    client.close()


def token_polls(sim: TwitchSimulator) -> list[int]:
    """The statuses of the ``/oauth2/token`` requests so far."""
    return [r.status for r in sim.requests() if r.path == "/oauth2/token"]


def approve_when_polled(sim: TwitchSimulator, polls: int) -> threading.Thread:
    """Approve the pending code once the client has polled ``polls`` times (so it saw authorization_pending)."""

    def run() -> None:
        deadline = time.monotonic() + 5
        while len(token_polls(sim)) < polls and time.monotonic() < deadline:
            time.sleep(0.01)
        sim.approve()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def connect(sim: TwitchSimulator, oauth: OAuthClient) -> TokenPair:
    code = oauth.start_device_flow(SCOPES)
    approver = approve_when_polled(sim, 2)
    pair = oauth.poll_device_token(code, SCOPES)
    approver.join()
    return pair


# -- scopes -----------------------------------------------------------------------------------------


def test_every_twitch_event_says_which_scopes_it_needs() -> None:
    assert set(SCOPES_BY_EVENT) == set(TWITCH_EVENTS)


REDEEM = {
    "event": "channel.channel_points_custom_reward_redemption.add",
    "reward_id": "b0f0a3e1-0000-4000-8000-000000000001",
}


def rules(*rules: dict[str, object]) -> dict[str, object]:
    items = [{"id": "gem", "amount": 1}]
    return {"guild_id": GUILD, "twitch": {"rules": [{**rule, "items": items} for rule in rules]}}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((), ()),
        (({"event": "channel.raid"},), ()),
        (({"event": "channel.cheer"},), ("bits:read",)),
        (({"event": "channel.subscribe"},), ("channel:read:subscriptions",)),
        (({"event": "channel.subscribe", "gifted": "gifter"},), ("channel:read:subscriptions",)),
        (({"event": "channel.follow"},), ("moderator:read:followers",)),
        (
            (REDEEM,),
            ("channel:manage:redemptions", "channel:read:redemptions"),
        ),
        (
            (
                {"event": "channel.cheer"},
                {"event": "channel.cheer", "min_bits": 100},
                {"event": "channel.subscription.message"},
                REDEEM,
                {"event": "channel.follow"},
                {"event": "channel.raid"},
            ),
            (
                "bits:read",
                "channel:manage:redemptions",
                "channel:read:redemptions",
                "channel:read:subscriptions",
                "moderator:read:followers",
            ),
        ),
    ],
)
def test_scopes_are_exactly_what_the_rules_need(
    given: tuple[dict[str, object], ...], expected: tuple[str, ...]
) -> None:
    assert scopes_for(parse_rewards(rules(*given)).twitch) == expected


def test_owned_rewards_need_the_manage_scope_without_any_rule() -> None:
    """The service creates and updates ``[[twitch.rewards]]`` through Helix even before a rule names them."""
    file = {"guild_id": GUILD, "twitch": {"rewards": [{"title": "Daily chest", "cost": 10}]}}
    assert scopes_for(parse_rewards(file).twitch) == ("channel:manage:redemptions",)


def test_missing_scopes() -> None:
    assert missing_scopes(SCOPES, ["bits:read"]) == ("channel:manage:redemptions", "channel:read:redemptions")
    assert missing_scopes(["bits:read"], SCOPES) == ()


# -- device code grant flow ----------------------------------------------------------------------------


def test_the_device_flow_polls_while_pending_and_returns_the_broadcasters_tokens(
    sim: TwitchSimulator, oauth: OAuthClient
) -> None:
    code = oauth.start_device_flow(SCOPES)
    assert code.user_code in code.verification_uri and code.interval_s == 0.05
    assert code.device_code not in repr(code)
    approver = approve_when_polled(sim, 3)
    pair = oauth.poll_device_token(code, SCOPES)
    approver.join()
    assert token_polls(sim)[:3] == [400, 400, 400]  # authorization_pending, polled on
    assert token_polls(sim)[-1] == 200 and "slow_down" not in str(sim.requests())
    assert pair.scopes == SCOPES and pair.expires_in_s > 0
    assert pair.access_token not in repr(pair) and pair.refresh_token not in repr(pair)
    info = oauth.validate(pair.access_token)
    assert (info.user_id, info.login, info.client_id) == (
        DEFAULT_BROADCASTER.id,
        DEFAULT_BROADCASTER.login,
        DEFAULT_CLIENT_ID,
    )
    assert info.scopes == SCOPES


def test_slow_down_adds_five_seconds_to_the_interval(make_sim: SimFactory) -> None:
    sim = make_sim(device_poll_interval_s=0.2, device_code_lifetime_s=1.0)
    oauth = client_for(sim)
    code = dataclasses.replace(oauth.start_device_flow(SCOPES), interval_s=0.0)  # polls too fast: slow_down
    started = time.monotonic()
    with pytest.raises(DeviceCodeExpired):
        oauth.poll_device_token(code, SCOPES)
    # pending, slow_down, then one poll when the code ran out (5 s later would be past its life): not a
    # stream of polls at the old interval.
    assert len(token_polls(sim)) == 3
    assert 0.9 <= time.monotonic() - started < 3


def test_a_code_not_approved_in_time_expires(make_sim: SimFactory) -> None:
    sim = make_sim(device_code_lifetime_s=0.3)
    oauth = client_for(sim)
    code = oauth.start_device_flow(SCOPES)
    with pytest.raises(DeviceCodeExpired) as caught:
        oauth.poll_device_token(code, SCOPES)
    assert "expired" in str(caught.value) and code.device_code not in str(caught.value)


def test_a_declined_request_is_access_denied(sim: TwitchSimulator, oauth: OAuthClient) -> None:
    code = oauth.start_device_flow(SCOPES)

    def deny() -> None:
        while not token_polls(sim):
            time.sleep(0.01)
        sim.deny()

    threading.Thread(target=deny, daemon=True).start()
    with pytest.raises(AccessDenied, match="declined"):
        oauth.poll_device_token(code, SCOPES)


def test_a_poll_twitch_does_not_answer_is_tried_again(sim: TwitchSimulator, oauth: OAuthClient) -> None:
    code = oauth.start_device_flow(SCOPES)
    sim.inject("status", path="/oauth2/token", status=503, count=2)
    approver = approve_when_polled(sim, 3)
    assert oauth.poll_device_token(code, SCOPES).access_token
    approver.join()
    assert token_polls(sim)[:2] == [503, 503]


def test_an_unknown_client_id_is_refused(sim: TwitchSimulator) -> None:
    stranger = OAuthClient(auth_url=sim.auth_url, client_id="not-our-app")
    with pytest.raises(OAuthRefused, match="invalid client"):
        stranger.start_device_flow(SCOPES)


def test_an_unreachable_twitch_is_unavailable() -> None:
    nowhere = OAuthClient(auth_url="http://127.0.0.1:9/oauth2", client_id=DEFAULT_CLIENT_ID, timeout_s=1.0)
    with pytest.raises(OAuthUnavailable, match="cannot reach Twitch"):
        nowhere.start_device_flow(SCOPES)


# -- refresh, validate, revoke ---------------------------------------------------------------------------


def test_refresh_rotates_the_pair_and_the_used_refresh_token_stops_working(
    sim: TwitchSimulator, oauth: OAuthClient
) -> None:
    first = connect(sim, oauth)
    second = oauth.refresh(first.refresh_token)
    assert second.access_token != first.access_token and second.refresh_token != first.refresh_token
    assert second.scopes == SCOPES
    with pytest.raises(InvalidRefreshToken) as caught:
        oauth.refresh(first.refresh_token)
    assert caught.value.status == 400 and first.refresh_token not in str(caught.value)
    assert oauth.validate(second.access_token).user_id == DEFAULT_BROADCASTER.id


def test_a_public_client_refreshes_without_a_secret(make_sim: SimFactory) -> None:
    sim = make_sim(client_secret=None)
    oauth = client_for(sim, secret=None)
    pair = oauth.refresh(connect(sim, oauth).refresh_token)
    assert oauth.validate(pair.access_token).login == DEFAULT_BROADCASTER.login


def test_validate_says_when_the_token_is_dead(sim: TwitchSimulator, oauth: OAuthClient) -> None:
    pair = connect(sim, oauth)
    sim.expire_access_tokens()
    with pytest.raises(InvalidAccessToken) as caught:
        oauth.validate(pair.access_token)
    assert caught.value.status == 401


def test_revoke_ends_the_grant_and_a_second_revoke_is_fine(sim: TwitchSimulator, oauth: OAuthClient) -> None:
    pair = connect(sim, oauth)
    oauth.revoke(pair.access_token)
    with pytest.raises(InvalidAccessToken):
        oauth.validate(pair.access_token)
    with pytest.raises(InvalidRefreshToken):
        oauth.refresh(pair.refresh_token)
    oauth.revoke(pair.access_token)


def test_twitch_failing_a_refresh_is_unavailable_not_a_refusal(sim: TwitchSimulator, oauth: OAuthClient) -> None:
    pair = connect(sim, oauth)
    sim.inject("status", path="/oauth2/token", status=503)
    with pytest.raises(OAuthUnavailable) as caught:
        oauth.refresh(pair.refresh_token)
    assert caught.value.status == 503
    assert oauth.refresh(pair.refresh_token).access_token  # the refresh token was not used up


def test_no_error_text_holds_a_token_or_secret(sim: TwitchSimulator, oauth: OAuthClient) -> None:
    pair = connect(sim, oauth)
    echoed = f"bad {pair.refresh_token} {pair.access_token} {DEFAULT_CLIENT_SECRET}"
    texts: list[str] = []
    for kind, status in (("status", 400), ("status", 503), ("status", 403)):
        sim.inject(kind, path="/oauth2/token", status=status, message=echoed)
        with pytest.raises(TwitchAuthError) as caught:
            oauth.refresh(pair.refresh_token)
        texts += [str(caught.value), repr(caught.value)]
    sim.inject("status", path="/oauth2/validate", status=401, message=echoed)
    with pytest.raises(InvalidAccessToken) as invalid:
        oauth.validate(pair.access_token)
    texts += [str(invalid.value), repr(invalid.value)]
    assert texts and all("[redacted]" in text for text in texts[::2])
    for secret in (pair.access_token, pair.refresh_token, DEFAULT_CLIENT_SECRET):
        assert not any(secret in text for text in texts)
