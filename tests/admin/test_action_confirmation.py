"""Operator actions answer "done" only once the replicas confirm them (``REDIS_WAIT_REPLICAS``).

The shared test Redis has no replicas: asked for one confirmation, every action (API, console, CLI:
cancel, replay, resolve, bulk replay, link, unlink) answers "could not be confirmed" — 503, a page, exit
status 1 — claims nothing, and writes "not confirmed" to the audit log. Its step stands on the primary
(the documented choice: it reaches the replicas later, or a failover drops it), and a repeat is safe:
it finds the step done and does nothing twice; what it says then is confirmed too, or it is refused
alike. ``tests/chaos/test_operator_failover.py`` shows the same across a real failover.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from admin import grant_actions
from config.settings import Settings
from producers.audit import AuditLog
from producers.links import LinkStore
from producers.twitch.samples import sample_event, sample_payload, signed_request
from producers.unconfirmed import ActionUnconfirmed
from tests.conftest import GUILD, TOKEN, USER, SettingsFactory
from wetbot_rewards.app import create_app
from wetbot_rewards.cli import main
from worker.creation import Mode, Planned
from worker.grant import Grant, GrantItem, GrantState, NewGrant
from worker.grant_search import GrantQuery
from worker.keys import Keys
from worker.ledger import Ledger
from worker.replication import NotReplicated, ReplicaAcks

AS_ADMIN = {"Authorization": f"Bearer {TOKEN}"}
#: One replica, a short wait: the shared Redis has none, so nothing is ever confirmed (quickly).
ONE = ReplicaAcks(replicas=1, timeout_ms=50)
TWITCH_USER = "31337"


def new(key: str, **fields: Any) -> NewGrant:
    values: dict[str, Any] = {"guild_id": GUILD, "user_id": USER, "items": (GrantItem("gem", 1),)}
    values.update(fields)
    return NewGrant(source="test", idempotency_key=f"confirm:{key}", **values)


def queued(ledger: Ledger, key: str) -> str:
    return ledger.create(new(key)).grant.id


def dead(ledger: Ledger, key: str) -> str:
    grant_id = queued(ledger, key)
    assert ledger.transition(grant_id, GrantState.DEAD, "test: dead")
    return grant_id


def unknown(ledger: Ledger, key: str) -> str:
    grant_id = queued(ledger, key)
    assert ledger.transition(grant_id, GrantState.SENDING, "test: sent")
    assert ledger.transition(grant_id, GrantState.UNKNOWN, "test: outcome unknown")
    return grant_id


def parked(ledger: Ledger, key: str) -> str:
    grant = new(key, user_id="", platform="twitch", external_id=TWITCH_USER)
    return ledger.create_many([Planned(grant, Mode.RESOLVE, "")]).results[0].grant.id


@pytest.fixture
def unconfirmed_settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(redis_wait_replicas=1, redis_wait_timeout_s=0.05, admin_token=TOKEN)


@pytest.fixture
def client(unconfirmed_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(unconfirmed_settings)) as test_client:
        yield test_client


def assert_unconfirmed(answer: Any) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "5"
    body = answer.json()
    assert set(body) == {"error", "detail"}  # nothing claimed: no "done", no "grant"
    assert "could not be confirmed by the Redis replicas" in body["error"]
    assert "a repeat is safe" in body["error"]


def outcomes(redis: Redis, keys: Keys, action: str) -> list[str]:
    return [entry.outcome for entry in reversed(AuditLog(redis, keys).recent()) if entry.action == action]


# --------------------------------------------------------------------------------------------- API


ACTIONS: dict[str, tuple[Callable[[Ledger, str], str], str, dict[str, Any], GrantState]] = {
    "cancel": (queued, "cancel", {"reason": "fraud"}, GrantState.CANCELLED),
    "replay": (dead, "replay", {}, GrantState.QUEUED),
    "resolve": (unknown, "resolve", {"decision": "delivered"}, GrantState.DELIVERED),
}


@pytest.mark.parametrize("name", list(ACTIONS))
def test_an_api_action_the_replicas_do_not_confirm_answers_503_and_a_repeat_is_safe(
    name: str, client: TestClient, ledger: Ledger, redis: Redis, keys: Keys, make_settings: SettingsFactory
) -> None:
    arrange, path, body, after = ACTIONS[name]
    grant_id = arrange(ledger, name)
    before = len(ledger.history(grant_id))
    assert_unconfirmed(client.post(f"/admin/grants/{grant_id}/{path}", json=body or None, headers=AS_ADMIN))
    # The step stands on the primary (reaching the replicas later, or dropped by a failover): not claimed.
    assert ledger.get(grant_id).state == after  # type: ignore[union-attr]
    # A repeat finds it done, but cannot confirm that either: refused alike, and nothing happens twice.
    assert_unconfirmed(client.post(f"/admin/grants/{grant_id}/{path}", json=body or None, headers=AS_ADMIN))
    assert len(ledger.history(grant_id)) == before + 1
    assert outcomes(redis, keys, name if name != "resolve" else "resolve delivered") == ["not confirmed"] * 2
    # Once replicas are not asked for, the repeat answers from the state the first try left.
    with TestClient(create_app(make_settings(grants_api_token=TOKEN))) as plain:
        again = plain.post(f"/admin/grants/{grant_id}/{path}", json=body or None, headers=AS_ADMIN)
    if name == "cancel":
        assert again.status_code == 200 and again.json()["done"] is False, again.text  # "already cancelled"
    else:
        assert again.status_code == 409 and " already" in again.json()["error"], again.text
    assert len(ledger.history(grant_id)) == before + 1


def test_a_refusal_rests_on_a_confirmed_state_too(client: TestClient, ledger: Ledger) -> None:
    """A refusal says what the grant is now; unconfirmed, that may not survive a failover: 503 as well."""
    grant_id = queued(ledger, "refused")
    assert_unconfirmed(client.post(f"/admin/grants/{grant_id}/replay", headers=AS_ADMIN))
    assert ledger.get(grant_id).state == GrantState.QUEUED  # type: ignore[union-attr]
    # "No such grant" is an answer too: a demoted primary resyncing in a failover can read from an empty
    # dataset, so it is confirmed like the others (404 once confirmed: test_no_such_grant_is_an_answer...).
    assert_unconfirmed(client.post(f"/admin/grants/{'0' * 32}/replay", headers=AS_ADMIN))


def test_a_link_the_replicas_do_not_confirm_answers_503_and_a_repeat_releases_nothing_twice(
    client: TestClient, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    grant_id = parked(ledger, "parked")
    link = {"platform": "twitch", "external_id": TWITCH_USER, "discord_user_id": USER}
    assert_unconfirmed(client.post("/links", json=link, headers=AS_ADMIN))
    assert LinkStore(redis, keys).resolve("twitch", TWITCH_USER) == USER  # on the primary
    assert_unconfirmed(client.post("/links", json=link, headers=AS_ADMIN))
    assert_unconfirmed(client.delete(f"/links/twitch/{TWITCH_USER}", headers=AS_ADMIN))
    assert_unconfirmed(client.delete(f"/links/twitch/{TWITCH_USER}", headers=AS_ADMIN))  # "no link", unconfirmed
    assert outcomes(redis, keys, "link-add") == ["not confirmed"] * 2
    assert outcomes(redis, keys, "link-remove") == ["not confirmed"] * 2
    released = [t for t in ledger.history(grant_id) if t.from_state == GrantState.PARKED.value]
    assert len(released) <= 1


def test_a_reprocess_the_replicas_do_not_confirm_answers_503(
    make_settings: SettingsFactory, tmp_path: Path, redis: Redis, keys: Keys
) -> None:
    secret = "twitch-secret-confirm-0042"
    no_rules, cheer_rules = tmp_path / "none.toml", tmp_path / "cheer.toml"
    no_rules.write_text(f'guild_id = "{GUILD}"\n', encoding="utf-8")
    cheer_rules.write_text(
        f'guild_id = "{GUILD}"\n\n[[twitch.rules]]\nname = "cheer"\nevent = "channel.cheer"\n'
        'items = [{ id = "gem", amount = 1 }]\n',
        encoding="utf-8",
    )
    body, headers = signed_request(secret, sample_payload("channel.cheer", sample_event("channel.cheer")))
    with TestClient(create_app(make_settings(rewards_file=no_rules, twitch_webhook_secret=secret))) as before:
        answer = before.post("/webhooks/twitch", content=body, headers=headers).json()
    assert answer["outcome"] == "ignored"
    fixed = make_settings(
        rewards_file=cheer_rules,
        twitch_webhook_secret=secret,
        admin_token=TOKEN,
        redis_wait_replicas=1,
        redis_wait_timeout_s=0.05,
    )
    with TestClient(create_app(fixed)) as after:
        assert_unconfirmed(after.post(f"/admin/events/{answer['event_id']}/reprocess", headers=AS_ADMIN))
    assert outcomes(redis, keys, "reprocess") == ["not confirmed"]


# --------------------------------------------------------------------------------------------- actions


def test_a_bulk_replay_stops_at_the_first_unconfirmed_grant(ledger: Ledger, redis: Redis, keys: Keys) -> None:
    confirming = Ledger(redis, keys, acks=ONE)
    ids = {dead(ledger, f"bulk-{n}") for n in range(3)}
    with pytest.raises(ActionUnconfirmed, match=r"bulk replay .* could not be confirmed") as caught:
        grant_actions.bulk_replay(confirming, GrantQuery(), up_to=1e12, audit=AuditLog(redis, keys), actor="t")
    assert caught.value.done == ()
    assert sum(ledger.get(g).state == GrantState.QUEUED for g in ids) == 1  # type: ignore[union-attr]
    assert outcomes(redis, keys, "bulk replay") == ["not confirmed"]
    # Without replicas to wait for, the second run replays the rest, each once.
    done = grant_actions.bulk_replay(ledger, GrantQuery(), up_to=1e12)
    assert len(done.replayed) == 2
    assert all(ledger.get(g).state == GrantState.QUEUED for g in ids)  # type: ignore[union-attr]


def test_confirmed_reads_and_releases_wait_for_the_replicas(ledger: Ledger, redis: Redis, keys: Keys) -> None:
    confirming = Ledger(redis, keys, acks=ONE)
    grant_id = parked(ledger, "release")
    with pytest.raises(NotReplicated):
        confirming.confirmed(grant_id)
    assert ledger.confirmed(grant_id)[0].state == GrantState.PARKED  # type: ignore[union-attr]
    with pytest.raises(NotReplicated):
        confirming.release_parked("twitch", TWITCH_USER, USER, confirm=True)
    assert ledger.get(grant_id).state == GrantState.QUEUED  # type: ignore[union-attr]
    # Released already: nothing moves, and the answer (none) still waits for the replicas.
    with pytest.raises(NotReplicated):
        confirming.release_parked("twitch", TWITCH_USER, USER, confirm=True)
    assert confirming.release_parked("twitch", TWITCH_USER, USER) == []  # not asked to confirm


# --------------------------------------------------------------------------------------------- console


def test_the_console_shows_a_could_not_be_confirmed_page(client: TestClient, ledger: Ledger) -> None:
    grant_id = queued(ledger, "console")
    page = client.get("/console/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)[1]  # type: ignore[index]
    assert client.post("/console/login", data={"csrf": csrf, "token": TOKEN}, follow_redirects=False).status_code == 303
    page = client.get(f"/console/grants/{grant_id}").text
    form = {name: re.search(rf'name="{name}" value="([^"]+)"', page)[1] for name in ("csrf", "version")}  # type: ignore[index]
    answer = client.post(f"/console/grants/{grant_id}/cancel", data={**form, "reason": "fraud"}, follow_redirects=False)
    assert answer.status_code == 503
    assert "Could not be confirmed" in answer.text and "Run it again" in answer.text
    assert "cancelled: it will not be sent" not in client.get(f"/console/grants/{grant_id}").text  # no flash


# --------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_WAIT_REPLICAS", "1")
    monkeypatch.setenv("REDIS_WAIT_TIMEOUT_S", "0.05")


@pytest.mark.usefixtures("cli_env")
def test_the_cli_exits_1_saying_it_could_not_be_confirmed(capsys: pytest.CaptureFixture[str], ledger: Ledger) -> None:
    grant_id = queued(ledger, "cli")
    assert main(["grants", "cancel", grant_id, "--reason", "fraud"]) == 1
    err = capsys.readouterr().err
    assert "could not be confirmed by the Redis replicas" in err and "Run it again" in err
    assert main(["links", "add", "twitch", TWITCH_USER, USER]) == 1
    assert "could not be confirmed" in capsys.readouterr().err
    assert main(["grants", "replay", "--all"]) == 0  # nothing dead: nothing to confirm


class _MovesBeforeConfirming(Ledger):
    """A ledger whose confirmation read comes after the worker moved the grant on (its step landed in between)."""

    def __init__(self, *args: Any, move: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._move: Callable[[], None] | None = move

    def confirmed(self, grant_id: str) -> tuple[Grant | None, int]:
        move, self._move = self._move, None
        if move is not None:
            move()
        return super().confirmed(grant_id)


def test_a_refusal_whose_grant_moved_on_is_judged_again_not_called_unconfirmed(redis: Redis, keys: Keys) -> None:
    """A cancel finds the grant ``sending`` and refuses; before the refusal is confirmed the worker records
    ``delivered``. With no replica in sight that is no "could not be confirmed": it is refused as it is now."""
    plain = Ledger(redis, keys)
    grant_id = plain.create(
        NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="api", idempotency_key="t:moved")
    ).grant.id
    assert plain.transition(grant_id, GrantState.SENDING, "sending", expect=[GrantState.QUEUED])

    def delivered() -> None:
        assert plain.transition(grant_id, GrantState.DELIVERED, "delivered", expect=[GrantState.SENDING])

    ledger = _MovesBeforeConfirming(redis, keys, move=delivered)
    with pytest.raises(grant_actions.ActionRefused) as refused:
        grant_actions.cancel(ledger, grant_id, "race")
    assert "is delivered" in refused.value.message
    found = plain.get(grant_id)
    assert found is not None and found.state == GrantState.DELIVERED


class _EmptyReadOnce(Ledger):
    """A ledger whose first read of a grant comes from a node that answers from an empty dataset (a demoted
    primary resyncing during a failover); the confirmed read reaches the data."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._empty = True

    def get(self, grant_id: str) -> Grant | None:
        empty, self._empty = self._empty, False
        return None if empty else super().get(grant_id)


def test_no_such_grant_is_an_answer_confirmed_like_the_others(redis: Redis, keys: Keys) -> None:
    plain = Ledger(redis, keys)
    grant_id = plain.create(
        NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="api", idempotency_key="t:empty")
    ).grant.id
    done = grant_actions.cancel(_EmptyReadOnce(redis, keys), grant_id, "read from an empty node first")
    assert done.done
    found = plain.get(grant_id)
    assert found is not None and found.state == GrantState.CANCELLED
    with pytest.raises(grant_actions.GrantMissing):
        grant_actions.cancel(plain, "0" * 32, "no such grant")
