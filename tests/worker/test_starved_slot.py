"""A run starved between taking its rate slot and sending: its slot must still count.

The chaos tests saw one 429 under CPU load. A slot counted from its start until a window later, and the
answer re-stamped it only if it was still there; but a request can reach WetBot well after its slot was
taken (a starved process, a slow connect, a request the server stamps late) and a run can end without
recording its answer (a killed worker, a read timeout longer than the window). A slot that left the
window before its request arrived let another request in, and WetBot saw N+1 arrivals in one window.

Starvation is played deterministically here: the client is held between the slot and the send for
longer than the window (an event, not a race), so the tests do not depend on how loaded the machine is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import pytest
from redis import Redis

from config.settings import RateLimit
from simulator.wetbot import WetbotSimulator
from tests.conftest import API_KEY, GUILD, OTHER_USER, USER, ScheduleDriver, SettingsFactory, wait_for
from tests.schedule_view import due_in_s
from tests.worker.conftest import S, age_rate_state, now_us, scores, seed_slot, window_us
from worker.client import CallOutcome, CallResult, ItemDelta, WetbotClient
from worker.delivery import Deliverer
from worker.effects import StepEffects
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.limiter import SlidingWindowLimiter
from worker.replication import NotReplicated
from worker.runtime import build_deliverer
from worker.timings import Timings

#: WetBot's (and the service's) window in these tests: 1 request per 2 s.
LIMIT, WINDOW_S = 1, 2.0


class _Killed(BaseException):
    """The worker process dying mid-run: nothing after it in the run happens (not an ``Exception``)."""


def _grant(ledger: Ledger, user: str) -> str:
    new = NewGrant(GUILD, user, (GrantItem("gem", 1),), source="test", idempotency_key=f"starved:{user}")
    return ledger.create(new).grant.id


def _user(path: str) -> str:
    """The user a WetBot request was for (``/api/guilds/<g>/users/<u>/...``)."""
    return path.split("/users/")[1].split("/")[0]


def _key_id(deliverer: Deliverer) -> str:
    client = deliverer.clients.for_guild(GUILD)
    assert client is not None
    return client.key_id


def _slot_start(redis: Redis, keys: Keys, deliverer: Deliverer) -> float:
    slots = cast(list[tuple[bytes, float]], redis.zrange(keys.rate_window(_key_id(deliverer)), 0, -1, withscores=True))
    assert len(slots) == 1, slots
    return slots[0][1] / 1_000_000


def _only_slot(redis: Redis, keys: Keys, deliverer: Deliverer) -> str:
    members = cast(list[bytes], redis.zrange(keys.rate_window(_key_id(deliverer)), 0, -1))
    assert len(members) == 1, members
    return members[0].decode()


def _wait_past_window(redis: Redis, deliverer: Deliverer, start: float) -> None:
    """Until the slot taken at ``start`` is older than the limiter's window (on Redis' clock)."""
    past = start + deliverer.limiter.effective_window_s + 0.05
    wait_for(lambda: now_us(redis) > past * S, timeout_s=10, interval_s=0.02)


@pytest.fixture
def deliverer(make_settings: SettingsFactory, redis: Redis, sim: WetbotSimulator) -> Deliverer:
    sim.set_limit(LIMIT, WINDOW_S)
    return build_deliverer(make_settings(wetbot_rate_limit=f"{LIMIT}/{WINDOW_S:g}s"), redis)


def test_a_run_starved_past_the_window_before_sending_still_holds_its_slot(
    deliverer: Deliverer,
    redis: Redis,
    keys: Keys,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    starved, resume = threading.Event(), threading.Event()
    send = WetbotClient.add_items

    def starved_send(client: WetbotClient, guild_id: str, user_id: str, items: Iterable[ItemDelta]) -> CallResult:
        if user_id == USER and not resume.is_set():
            starved.set()  # slot taken, step into "sending" done: the process gets no CPU for a while
            assert resume.wait(30)
        return send(client, guild_id, user_id, items)

    monkeypatch.setattr(WetbotClient, "add_items", starved_send)
    first, second = _grant(ledger, USER), _grant(ledger, OTHER_USER)
    run = threading.Thread(target=deliverer.deliver, args=(first,), name="starved-run")
    run.start()
    try:
        assert starved.wait(10)
        _wait_past_window(redis, deliverer, _slot_start(redis, keys, deliverer))
        deliverer.deliver(second)  # another worker asks for a slot while the starved request is not out yet
        sent_meanwhile = len(sim.requests())
        held = ledger.get(second)
    finally:
        resume.set()  # the starved process sends at last
        run.join(30)
    seen = [(_user(r.path), r.status) for r in sim.requests()]
    assert sim.count_status(429) == 0, seen
    assert sent_meanwhile == 0, f"no request may go out while the starved one can still arrive: {seen}"
    assert held is not None and held.state == GrantState.QUEUED and held.attempts == 0
    driver.run(deliverer, timeout_s=30)
    for grant_id in (first, second):
        done = ledger.get(grant_id)
        assert done is not None and done.state == GrantState.DELIVERED, done
    assert sim.count_status(429) == 0
    assert sim.max_in_window(key=API_KEY) <= LIMIT
    assert redis.zcard(keys.rate_pending(_key_id(deliverer))) == 0, "every recorded answer ended its slot's hold"


def test_a_slot_whose_request_is_not_sent_after_all_holds_one_window_only(
    deliverer: Deliverer,
    redis: Redis,
    keys: Keys,
    ledger: Ledger,
    sim: WetbotSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No replica confirmed the step into sending: the run steps back without sending; its slot is spent."""
    step = deliverer.ledger.transition_many

    def unconfirmed(*args: Any, **kwargs: Any) -> list[str]:
        moved = step(*args, **kwargs)
        if args[1] == GrantState.SENDING:
            raise NotReplicated("0 of 1 Redis replicas confirmed the write within 50 ms", [1, "queued"])
        return moved

    monkeypatch.setattr(deliverer.ledger, "transition_many", unconfirmed)
    grant_id = _grant(ledger, USER)
    deliverer.deliver(grant_id)
    assert sim.requests() == []
    key_id = _key_id(deliverer)
    assert redis.zcard(keys.rate_window(key_id)) == 1
    assert redis.zcard(keys.rate_pending(key_id)) == 0, "not sent: the slot is not held for a request"


def test_the_slot_of_a_run_killed_after_sending_holds_until_its_request_can_no_longer_arrive(
    deliverer: Deliverer,
    redis: Redis,
    keys: Keys,
    ledger: Ledger,
    sim: WetbotSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    send = WetbotClient.add_items

    def late_send_then_killed(
        client: WetbotClient, guild_id: str, user_id: str, items: Iterable[ItemDelta]
    ) -> CallResult:
        if user_id == USER:
            time.sleep(0.5)  # reaches WetBot late (starved, slow connect): well past the limiter's margin
            send(client, guild_id, user_id, items)
            raise _Killed  # the worker dies with the answer: its slot is never re-stamped
        return send(client, guild_id, user_id, items)

    monkeypatch.setattr(WetbotClient, "add_items", late_send_then_killed)
    first, second = _grant(ledger, USER), _grant(ledger, OTHER_USER)
    with pytest.raises(_Killed):
        deliverer.deliver(first)
    _wait_past_window(redis, deliverer, _slot_start(redis, keys, deliverer))
    deliverer.deliver(second)
    assert sim.count_status(429) == 0, [(_user(r.path), r.status) for r in sim.requests()]
    assert [_user(r.path) for r in sim.requests()] == [USER], "the killed run's request may still be in WetBot's window"
    held = ledger.get(second)
    assert held is not None and held.state == GrantState.QUEUED and held.attempts == 0
    due_s = due_in_s(deliverer.redis, deliverer.keys, second)
    assert due_s is not None and due_s > 1.0, "handed back for a later turn"


def test_a_request_that_got_no_answer_keeps_its_slot_held_while_it_may_still_arrive(
    make_settings: SettingsFactory,
    redis: Redis,
    keys: Keys,
    ledger: Ledger,
    sim: WetbotSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read timeout is not an answer: the request may reach WetBot after the client gave up (a server
    that is slow to accept, a stamp taken late), within what the run's leases promise. Recording the
    timeout must not end the slot's hold, or the slot leaves the window a window after the timeout while
    WetBot may still count the request, and the next request gets a 429."""
    sim.set_limit(LIMIT, WINDOW_S)
    settings = make_settings(wetbot_rate_limit=f"{LIMIT}/{WINDOW_S:g}s", wetbot_timeout=0.5, ambiguous_policy="hold")
    # The slot's hold (claim lease + timeout + margin: 4.55 s) outlasts a window after the timeout.
    deliverer = build_deliverer(settings, redis, timings=Timings(lease_margin_s=2.0))
    send = WetbotClient.add_items
    late: list[Callable[[], CallResult]] = []

    def no_answer(client: WetbotClient, guild_id: str, user_id: str, items: Iterable[ItemDelta]) -> CallResult:
        if user_id != USER:
            return send(client, guild_id, user_id, items)
        late.append(lambda: send(client, guild_id, user_id, list(items)))  # WetBot has not stamped it yet
        return CallResult(CallOutcome.AMBIGUOUS, None, "no answer within the timeout")

    monkeypatch.setattr(WetbotClient, "add_items", no_answer)
    first, second = _grant(ledger, USER), _grant(ledger, OTHER_USER)
    deliverer.deliver(first)
    recorded = ledger.get(first)
    assert recorded is not None and recorded.state == GrantState.UNKNOWN
    answered = cast(float, redis.zscore(keys.rate_window(_key_id(deliverer)), _only_slot(redis, keys, deliverer)))
    _wait_past_window(redis, deliverer, answered / 1_000_000)  # a window after the timeout was recorded
    late[0]()  # ... the request reaches WetBot at last, still within its run's leases
    deliverer.deliver(second)
    seen = [(_user(r.path), r.status) for r in sim.requests()]
    assert sim.count_status(429) == 0, seen
    assert [user for user, _ in seen] == [USER], "the unanswered request may still be in WetBot's window"
    held = ledger.get(second)
    assert held is not None and held.state == GrantState.QUEUED and held.attempts == 0


# --- the window itself (the key's state written relative to Redis' clock where a slot's age matters) --------

#: The window of the tests below: wide, so that the state they write stays seconds from any boundary.
SLOW_WINDOW_S = 60.0


def _limiter(redis: Redis, keys: Keys, limit: int = 1) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(redis, keys, RateLimit(limit, SLOW_WINDOW_S))


def test_an_unanswered_slot_counts_until_a_window_after_the_latest_its_request_may_arrive(
    redis: Redis, keys: Keys
) -> None:
    lim = _limiter(redis, keys)
    window, hold_s = window_us(lim), 30
    taken = lim.try_acquire("new", hold_s=hold_s)
    assert taken.granted
    start = scores(redis, keys.rate_window("new"))[taken.member]
    assert scores(redis, keys.rate_pending("new")) == {taken.member: start + hold_s * S}, "it may arrive until then"
    now = now_us(redis)
    # Its start is over a window old, but its request may still arrive: it counts from now at the soonest ...
    held = seed_slot(redis, keys, "held", now - window - 5 * S, pending_until_us=now + 20 * S)
    refused = lim.try_acquire("held")
    assert not refused.granted and round(refused.wait_s * S) == window
    assert now <= scores(redis, keys.rate_window("held"))[held] <= now_us(redis), "moved up to the script's now"
    # ... from the latest its request may arrive once that is past ...
    deadline = now - window + 5 * S
    late = seed_slot(redis, keys, "late", now - window - 40 * S, pending_until_us=deadline)
    assert not lim.try_acquire("late").granted
    assert scores(redis, keys.rate_window("late")) == {late: deadline}
    # ... and a window after that, it is gone.
    seed_slot(redis, keys, "over", now - window - 40 * S, pending_until_us=now - window - 2 * S)
    assert lim.try_acquire("over").granted
    assert len(scores(redis, keys.rate_window("over"))) == 1


def test_its_answer_ends_the_hold_and_the_slot_counts_a_window_from_the_answer(redis: Redis, keys: Keys) -> None:
    lim = _limiter(redis, keys)
    window = window_us(lim)
    slot = lim.try_acquire("k", hold_s=30.0)
    redis.zadd(keys.rate_window("k"), {slot.member: now_us(redis) - 10 * S})  # its answer took 10 s to come back
    before = now_us(redis)
    lim.settle("k", slot.member)
    after = now_us(redis)
    assert redis.zscore(keys.rate_pending("k"), slot.member) is None
    answered = scores(redis, keys.rate_window("k"))[slot.member]
    assert before <= answered <= after, "re-stamped with its answer's time"
    asked = now_us(redis)
    refused = lim.try_acquire("k")
    assert not refused.granted
    assert asked <= answered + window - round(refused.wait_s * S) <= now_us(redis), "it frees a window after its answer"
    # A window after its answer the slot is gone: the hold it had (its request could arrive until 30 s after
    # the slot was taken) would still keep it, had the answer not ended it.
    age_rate_state(redis, keys, "k", answered + window + 2 * S - now_us(redis))
    assert lim.try_acquire("k").granted


def test_an_answer_that_comes_back_after_its_slot_left_the_window_brings_the_slot_back(
    redis: Redis, keys: Keys
) -> None:
    """A read timeout longer than the window: the request may have reached WetBot just before its answer."""
    lim = _limiter(redis, keys, limit=2)
    slow = seed_slot(redis, keys, "k", now_us(redis) - window_us(lim) - 2 * S)  # a slot taken over a window ago
    assert lim.try_acquire("k").granted
    assert redis.zscore(keys.rate_window("k"), slow) is None, "the old one has left the window"
    lim.settle("k", slow)  # ... and its answer comes back only now
    assert not lim.try_acquire("k").granted, "the answered request counts a window from its answer"


def test_the_step_that_records_an_outcome_ends_the_hold_even_when_it_moves_no_grant(
    redis: Redis, keys: Keys, ledger: Ledger
) -> None:
    lim = _limiter(redis, keys)
    slot = lim.try_acquire("k", hold_s=30.0)
    grant_id = _grant(ledger, USER)
    moved = ledger.transition(  # another run took the grant over: this run's outcome moves nothing
        grant_id,
        GrantState.DELIVERED,
        "answered",
        expect=[GrantState.SENDING],
        effects=StepEffects(slot=lim.settle_ref("k", slot.member)),
    )
    assert not moved
    assert redis.zscore(keys.rate_pending("k"), slot.member) is None


def test_the_eta_mirror_sees_the_window_the_script_sees(redis: Redis, keys: Keys) -> None:
    lim = _limiter(redis, keys, limit=3)
    window, now = window_us(lim), now_us(redis)
    unanswered = seed_slot(redis, keys, "k", now - window - 5 * S, pending_until_us=now + 20 * S)  # a window old
    gone = seed_slot(redis, keys, "k", now - window - 3 * S)  # no hold: out of the window
    recent = seed_slot(redis, keys, "k", now - window + 10 * S, pending_until_us=now + 20 * S)  # within it
    assert lim.held_slots("k", now / S) == pytest.approx([(now - window + 10 * S) / S, now / S], abs=1e-6)
    # The script agrees: one slot free; then the next frees a window after the recent one, the one after a
    # window from the unanswered one, moved up to the script's now.
    decisions = [lim.try_acquire("k", waiter=f"w{n}") for n in range(3)]
    assert [d.granted for d in decisions] == [True, False, False]
    window_now = scores(redis, keys.rate_window("k"))
    assert gone not in window_now
    assert window_now[unanswered] == window_now[decisions[0].member], "moved up to the script's now"
    turns = scores(redis, keys.rate_line("k"))
    assert turns == {"w1": window_now[recent] + window, "w2": window_now[unanswered] + window}
    assert lim.held_slots("k", window_now[unanswered] / S) == pytest.approx(
        sorted(score / S for score in window_now.values()), abs=1e-6
    )
