"""Coalescing under races and operator actions: reproductions of defects an adversarial review found.

Each test failed on the code it was written against; the docstrings say how.
"""

from __future__ import annotations

import time

import pytest

from producers.submit import requeue_grant
from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, USER, CapturingTransport, DelivererFactory, ScheduleDriver, SettingsFactory
from wetbot_rewards.cli import main as cli_main
from worker.delivery import Deliverer
from worker.grant import GrantItem, GrantState, NewGrant
from worker.ledger import Ledger


def add(ledger: Ledger, key: str, *items: tuple[str, float], user: str = USER) -> str:
    new = NewGrant(GUILD, user, tuple(GrantItem(i, a) for i, a in items), source="test", idempotency_key=f"t:{key}")
    return ledger.create(new).grant.id


def test_cancelling_the_lead_while_it_waits_for_a_slot_does_not_strand_its_companions(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    sentry_events: CapturingTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lead of a merged request is cancelled (a Patreon take-back, ``Ledger.cancel``) after its run
    claimed it and while it waits for a rate slot (``_take_slot`` sleeps up to 5 s inline).

    ``_send`` then calls ``transition_many([lead, companion], SENDING, begin=token, lease_set=...)``.
    ``transition.lua`` checks each grant on its own: the cancelled lead answers 0, the companion answers 1
    and IS moved to ``sending`` (attempt = the run's token, lease set). ``Ledger.transition_many`` sees the
    first grant's code 0 and returns ``[]``; ``_send`` takes that for "nothing moved", reschedules the
    lead and returns without sending. The companion sits in ``sending`` with nothing sent; when its due
    time comes (timeout + 10 s + 1 s) it is taken for an abandoned request: under AMBIGUOUS_POLICY=hold it
    ends ``unknown`` (Sentry "grant unknown", an operator must decide about a request that was never sent),
    under ``verify`` it costs a read-back and a failure, under ``retry`` it is resent as a possible duplicate.
    """
    sim.set_items(GUILD, ["gem", "potion"])
    first = add(ledger, "lead", ("gem", 1))
    second = add(ledger, "companion", ("potion", 2))
    cancelled: list[str] = []
    original = Deliverer._take_slot

    def take_slot_while_cancelled(self: Deliverer, run):  # type: ignore[no-untyped-def]
        if not cancelled:  # the first run to get here is the lead; cancel it while it waits for its slot
            assert ledger.cancel(run.grant.id, "patreon: pledge deleted")
            cancelled.append(run.grant.id)
        return original(self, run)

    monkeypatch.setattr(Deliverer, "_take_slot", take_slot_while_cancelled)
    driver.run(make_deliverer(make_settings(wetbot_timeout_s=0.3, ambiguous_policy="hold")))

    lead = cancelled[0]
    companion = second if lead == first else first
    assert ledger.get(lead).state == GrantState.CANCELLED  # type: ignore[union-attr]
    done = ledger.get(companion)
    assert done is not None
    history = [f"{t.from_state}->{t.to_state}: {t.reason}" for t in ledger.history(companion)]
    assert done.state == GrantState.DELIVERED, history
    assert "the worker stopped while sending" not in " ".join(history)
    assert sentry_events.events == [], "no Sentry report for a grant that simply was delivered"


def test_a_companion_is_not_given_up_for_the_leads_exhausted_attempts(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    sentry_events: CapturingTransport,
) -> None:
    """``_failed``/``_gave_up`` (and ``_read_back_failed``, ``_judged``'s not-applied branch) compare only
    ``run.grant.failures`` (the lead's) with ``WETBOT_MAX_ATTEMPTS``, then apply the verdict to every grant
    of the merged request.

    Here (max attempts 2) grant A already had one transient failure and is ``retrying``; grant B is new. A
    leads the next request, which carries B too, and it fails transiently once more: A's 2nd failure, B's
    1st. Both end ``dead`` ("gave up after 2 failures") with one Sentry report each, although B had one
    failure of the two it is allowed (WETBOT_MAX_ATTEMPTS: "failures a grant may have before it is dead").
    The converse also happens: when B leads, A gets past its budget. With AMBIGUOUS_POLICY=retry the
    same path makes a fresh companion ``unknown``.
    """
    settings = make_settings(wetbot_max_attempts=2, wetbot_retry_backoff_s=0.05)
    deliverer = make_deliverer(settings)
    a = add(ledger, "a", ("gem", 1))
    sim.inject("status", method="POST", status=408, message="Request timeout")
    deliverer.deliver(a)
    assert ledger.get(a).failures == 1  # type: ignore[union-attr]
    time.sleep(0.3)  # A is due (backoff over) before B exists: A leads the next request
    b = add(ledger, "b", ("potion", 2))
    sim.inject("status", method="POST", status=408, message="Request timeout")
    driver.run(deliverer)
    assert ledger.get(a).state == GrantState.DEAD  # type: ignore[union-attr]
    companion = ledger.get(b)
    assert companion is not None
    assert companion.state == GrantState.DELIVERED, (companion.failures, ledger.history(b)[-1].reason)


def test_resolve_verify_on_each_member_of_an_unknown_merged_request_decides_them_all(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    """A merged request {A, B} (gem 1 + gem 2) answered 500 after WetBot applied it; AMBIGUOUS_POLICY=hold
    leaves both ``unknown``. The operator runs ``resolve A --verify``, then ``resolve B --verify``.

    ``requeue_grant(..., verify=True)`` moves only A. Its read-back judges A's ``sent_items`` — the
    merged sum gem 3 — against the merged baseline: applied, so A is ``delivered`` (its profile stored,
    the snapshot's ``seq`` moves). ``same_request`` only looks in the pending index, where the
    ``unknown`` B is not, so B stays ``unknown`` although the read-back just proved its request applied.
    ``resolve B --verify`` then reads back once more, but B's ``baseline_seq`` no longer matches
    ("the member's recorded profile changed since the request": A's own verdict moved it), so B is
    held ``unknown`` again, for ever: the read-back can never decide the second member, and an
    operator who then picks ``--resend`` doubles B's items.
    """
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.3, ambiguous_policy="hold"))
    a = add(ledger, "a", ("gem", 1))
    b = add(ledger, "b", ("gem", 2))
    sim.inject("500_after", method="POST")
    driver.run(deliverer)
    assert [ledger.get(g).state for g in (a, b)] == [GrantState.UNKNOWN] * 2  # type: ignore[union-attr]
    assert sim.inventory(GUILD, USER) == {"gem": 3}

    for grant_id in (a, b):
        if ledger.get(grant_id).state == GrantState.UNKNOWN:  # type: ignore[union-attr]
            assert requeue_grant(
                ledger, grant_id, "operator asked for a read-back", expect=GrantState.UNKNOWN, verify=True
            )
            driver.run(deliverer)
    assert ledger.get(a).state == GrantState.DELIVERED  # type: ignore[union-attr]
    done = ledger.get(b)
    assert done is not None
    assert done.state == GrantState.DELIVERED, ledger.history(b)[-1].reason


def test_resolve_delivered_decides_every_grant_of_the_merged_request(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(wetbot_timeout_s=0.3, ambiguous_policy="hold")
    a, b = add(ledger, "a", ("gem", 1)), add(ledger, "b", ("gem", 2))
    sim.inject("500_after", method="POST")
    driver.run(make_deliverer(settings))
    assert [ledger.get(g).state for g in (a, b)] == [GrantState.UNKNOWN] * 2  # type: ignore[union-attr]
    env = {
        "REDIS_URL": settings.redis_url,
        "REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "WETBOT_API_KEY": "unused-here-but-set",
        "REWARDS_FILE": str(settings.rewards_file),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert cli_main(["grants", "resolve", a, "--delivered"]) == 0
    assert f"with the 1 other grant(s) its merged request carried: {b}" in capsys.readouterr().out
    assert [ledger.get(g).state for g in (a, b)] == [GrantState.DELIVERED] * 2  # type: ignore[union-attr]
    assert len(sim.applied()) == 1
