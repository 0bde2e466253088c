"""The webhook subscription sweep: Helix's EventSub subscriptions made to follow the rules.

One pass (``SubscriptionSweep.run``) compares the subscriptions the rules need (``wanted_subscriptions``)
with Helix's list (every page) and

* creates each one missing;
* deletes and creates again each one of ours in a failed or revoked state: any status but ``enabled`` and
  ``webhook_callback_verification_pending`` (docs/sources-sync.md §2.1, docs/twitch.md §1.1);
* deletes our own stale ones: our callback, no longer needed by any rule;
* never touches a subscription with another callback or transport (another deployment's, or a tool's).

A 409 on create means Twitch holds an active one with that type and condition: the list is read again and
the pass says whose it is. A Helix 5xx, 429 or no answer at all ends the pass (``SweepFailed``): the next
pass tries again. Any other refusal of one create (e.g. 403, a scope the broadcaster did not grant) is that
subscription's failure; the pass carries on. ``wetbot-rewards twitch subscribe`` runs one pass and prints its
lines; the Twitch process (``producers.twitch.runner``) runs ``SweepPass`` at start and every
``SWEEP_EVERY_S``, logging them and writing the status snapshot (``producers.twitch.subscription_status``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from config.rewards import TwitchSection
from producers.twitch.helix import HelixClient, HelixError, Subscription, SubscriptionExists
from producers.twitch.subscription_status import SubscriptionEntry, SubscriptionStatusBook
from producers.twitch.subscriptions import WantedSubscription, wanted_subscriptions

__all__ = ["SWEEP_EVERY_S", "SubscriptionSweep", "SweepFailed", "SweepPass", "SweepReport", "webhook_callback"]

_T = TypeVar("_T")

logger = logging.getLogger("wetbot_rewards.twitch.subscriptions")

#: Seconds between sweeps in the Twitch process (also run at start and soon after a gap).
SWEEP_EVERY_S: Final = 180.0
#: Where Twitch posts webhook messages, under ``PUBLIC_URL``.
WEBHOOK_PATH: Final = "/webhooks/twitch"


class SweepFailed(HelixError):
    """The pass stopped: Helix answered 5xx or 429, or did not answer; the next pass tries again."""


def _fatal(exc: HelixError) -> bool:
    return exc.status == 0 or exc.status == 429 or exc.status >= 500


def webhook_callback(public_url: str | None) -> str | None:
    """``<PUBLIC_URL>/webhooks/twitch`` when ``PUBLIC_URL`` is https (Twitch calls nothing else), else None."""
    if public_url is None or not public_url.startswith("https://"):
        return None
    return public_url.rstrip("/") + WEBHOOK_PATH


def _describe(subscription: Subscription) -> str:
    shown = " ".join(f"{k}={v}" for k, v in sorted(subscription.condition.items()))
    return f"{subscription.type} v{subscription.version} ({shown})"


@dataclass
class SweepReport:
    """What one pass did: a line per subscription (``problem`` lines are failures) and the counts."""

    lines: list[tuple[str, bool]] = field(default_factory=list)
    created: int = 0
    kept: int = 0
    removed: int = 0
    failed: int = 0

    def say(self, text: str, *, problem: bool = False) -> None:
        self.lines.append((text, problem))

    def summary(self) -> str:
        return f"{self.created} created, {self.kept} already there, {self.failed} failed, {self.removed} stale removed"


class SubscriptionSweep:
    """One pass over the webhook subscriptions of ``callback`` (see the module docstring).

    Parameters:
      helix: Helix with the app access token.
      callback: our ``https://.../webhooks/twitch``.
      secret: ``TWITCH_WEBHOOK_SECRET`` (new subscriptions sign with it).
      status: where the snapshot is written after the pass (None: nowhere, e.g. ``twitch subscribe``).
    """

    def __init__(
        self, helix: HelixClient, callback: str, secret: str, status: SubscriptionStatusBook | None = None
    ) -> None:
        self._helix = helix
        self._callback = callback
        self._secret = secret
        self._status = status

    def ours(self, subscription: Subscription) -> bool:
        return subscription.method == "webhook" and subscription.callback == self._callback

    def run(self, wanted: Sequence[WantedSubscription], *, dry_run: bool = False) -> SweepReport:
        """One pass. Raises ``SweepFailed`` (Helix 5xx/429/unreachable) or ``HelixError`` (the list refused)."""
        report = SweepReport()
        existing = self._call(self._helix.list_subscriptions)
        changed = False
        for item in wanted:
            matches = [sub for sub in existing if self.ours(sub) and item.matched_by(sub, self._callback)]
            active = [sub for sub in matches if sub.active]
            if active:
                report.say(f"exists   {item.describe()}: {active[0].status}")
                report.kept += 1
                continue
            if dry_run:
                for dead in matches:
                    report.say(f"would remove {item.describe()}: {dead.status}")
                report.say(f"would create {item.describe()}")
                continue
            changed = True
            for dead in matches:
                report.say(f"removing {item.describe()}: {dead.status}")
                self._delete(dead.id)
            self._create(item, report)
        for stale in [
            sub for sub in existing if self.ours(sub) and not any(w.matched_by(sub, self._callback) for w in wanted)
        ]:
            if dry_run:
                report.say(f"would remove stale {_describe(stale)}: {stale.status}")
                continue
            changed = True
            self._delete(stale.id)
            report.say(f"removed  stale {_describe(stale)}: no rule needs it")
            report.removed += 1
        if self._status is not None and not dry_run:
            now = time.time()
            listed = self._call(self._helix.list_subscriptions) if changed else existing
            self._status.write("webhook", (SubscriptionEntry.of(s, now, ours=self.ours(s)) for s in listed), at=now)
        return report

    def _create(self, item: WantedSubscription, report: SweepReport) -> None:
        try:
            made = self._helix.create_subscription(
                item.type, item.version, item.condition, self._callback, self._secret
            )
        except SubscriptionExists:
            self._exists(item, report)
            return
        except HelixError as exc:
            if _fatal(exc):
                raise SweepFailed(str(exc), exc.status) from None
            report.say(f"FAILED   {item.describe()}: {exc}", problem=True)
            report.failed += 1
            return
        report.say(f"created  {item.describe()}: {made.status}")
        report.created += 1

    def _exists(self, item: WantedSubscription, report: SweepReport) -> None:
        """A 409: Twitch keys duplicates on type and condition; the one it has may send elsewhere."""
        listed = self._call(self._helix.list_subscriptions)
        if any(self.ours(sub) and sub.active and item.matched_by(sub, self._callback) for sub in listed):
            report.say(f"exists   {item.describe()}: Twitch says it already exists")
            report.kept += 1
            return
        others = sorted(
            {
                sub.callback or sub.method
                for sub in listed
                if sub.active and sub.type == item.type and sub.condition == item.condition and not self.ours(sub)
            }
        )
        elsewhere = f", sending to {', '.join(others)}" if others else ""
        report.say(f"exists   {item.describe()}: Twitch says it already exists{elsewhere}")
        report.kept += 1

    def _delete(self, subscription_id: str) -> None:
        self._call(lambda: self._helix.delete_subscription(subscription_id))

    def _call(self, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except SweepFailed:
            raise
        except HelixError as exc:
            if _fatal(exc):
                raise SweepFailed(str(exc), exc.status) from None
            raise


class SweepPass:
    """The Twitch process's periodic sweep (webhook transport): the broadcaster from the stored tokens.

    Parameters:
      make_helix: a Helix client with the app token, or why there is none (a setting missing); the client is
        kept for the process's life.
      section: the rules.
      broadcaster_id: the connected broadcaster's id (from the token vault).
      callback: ``webhook_callback(PUBLIC_URL)``; None: subscriptions are not managed, and the snapshot says why.
      secret: ``TWITCH_WEBHOOK_SECRET`` (None: not managed either).
      status: the snapshot.
    """

    def __init__(
        self,
        *,
        helix: HelixClient | None,
        section: TwitchSection,
        broadcaster_id: Callable[[], str],
        callback: str | None,
        secret: str | None,
        status: SubscriptionStatusBook,
    ) -> None:
        self._helix = helix
        self._section = section
        self._broadcaster_id = broadcaster_id
        self._callback = callback
        self._secret = secret
        self._status = status
        self._said: str | None = None

    def blocker(self) -> str | None:
        """Why subscriptions cannot be managed (None: they can)."""
        if self._helix is None:
            return "TWITCH_CLIENT_SECRET is not set: webhook subscriptions need the app access token"
        if self._secret is None:
            return "TWITCH_WEBHOOK_SECRET is not set: webhook subscriptions are signed with it"
        if self._callback is None:
            return (
                "PUBLIC_URL is not an https:// address: Twitch sends webhooks to https://<PUBLIC_URL>/webhooks/twitch"
            )
        return None

    def run_once(self) -> SweepReport | None:
        """One pass; every way it can fail is one logged line and the snapshot's error (the next pass retries)."""
        blocker = self.blocker()
        if blocker is not None:
            if blocker != self._said:
                logger.warning("EventSub subscriptions not managed: %s", blocker)
                self._said = blocker
            self._status.failed("webhook", blocker)
            return None
        assert self._helix is not None and self._callback is not None and self._secret is not None
        sweep = SubscriptionSweep(self._helix, self._callback, self._secret, self._status)
        broadcaster_id = self._broadcaster_id()
        if not broadcaster_id:
            self._status.failed("webhook", "no channel is connected (run wetbot-rewards twitch connect)")
            return None
        try:
            wanted = wanted_subscriptions(self._section, broadcaster_id)
            report = sweep.run(wanted)
        except HelixError as exc:
            text = f"the subscription sweep failed, the next one tries again: {exc}"
            logger.warning("EventSub subscriptions: %s", text)
            self._status.failed("webhook", text)
            return None
        self._said = None
        for line, problem in report.lines:
            if problem:
                logger.warning("EventSub subscription %s", line)
            elif not line.startswith("exists"):
                logger.info("EventSub subscription %s", line)
        if report.created or report.removed or report.failed:
            logger.info("EventSub subscriptions swept: %s", report.summary())
        return report
