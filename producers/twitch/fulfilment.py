"""Tell Twitch each redemption's fate: one pass decides what can be decided and makes the Helix calls due.

A pass (``Fulfiller.run_once``) is safe in any number of processes at once and after any crash: decisions are
atomic (``RedemptionBook.decide``), calls are claimed with a lease, and a call repeated after a crash between
it and its record changes nothing on Twitch (Helix moves only UNFULFILLED redemptions); the pass then reads
back what Twitch holds and records that. A redemption Twitch no longer lists (its reward deleted) or will not
let us change (another app's reward) is recorded as such; if it was to be refunded, it was not, and its
grants may be replayed again (``Told.refunded``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from producers.twitch.broadcaster_api import BroadcasterHelix, HelixRateLimited, seconds_until
from producers.twitch.helix import HelixError
from producers.twitch.oauth import TwitchAuthError
from producers.twitch.redemptions import CallBatch, Fate, RedemptionBook, Told

__all__ = ["FulfilmentPass", "Fulfiller"]

logger = logging.getLogger(__name__)

#: Seconds a claimed call may take before another pass may make it again.
CALL_LEASE_S = 60.0
#: Seconds before a call that failed (no answer, 5xx, a token that could not be refreshed) is tried again.
RETRY_S = 15.0

_DONE_NOTE = {
    Fate.FULFILLED: "redemption {rid} marked fulfilled",
    Fate.CANCELED: "redemption {rid} cancelled: the viewer has the channel points back",
}


@dataclass(frozen=True)
class FulfilmentPass:
    """What one pass did."""

    decided: int = 0
    #: Helix calls made (updates and read-backs).
    calls: int = 0
    #: redemptions recorded done.
    done: int = 0
    #: redemptions whose call failed and is due again later.
    retried: int = 0


class Fulfiller:
    """Drains the redemption book into Helix calls as the connected broadcaster."""

    def __init__(
        self, book: RedemptionBook, helix: BroadcasterHelix, *, lease_s: float = CALL_LEASE_S, retry_s: float = RETRY_S
    ) -> None:
        self._book = book
        self._helix = helix
        self._lease_s = lease_s
        self._retry_s = retry_s

    def run_once(self) -> FulfilmentPass:
        """Decide, then make every call due now; returns what was done. Raises only for Redis."""
        decided = len(self._book.decide())
        calls = done = retried = 0
        batches = self._book.claim_calls(lease_s=self._lease_s)
        for index, batch in enumerate(batches):
            try:
                outcomes, made = self._tell(batch)
            except HelixRateLimited as exc:
                # The bucket is empty for everyone: this batch and the rest wait until Twitch refills it.
                delay = seconds_until(exc.reset_at)
                for waiting in batches[index:]:
                    retried += self._book.record_retry(_each(waiting, str(exc)), delay_s=delay)
                logger.warning("Twitch rate limit reached: redemption updates wait %.0f s", delay)
                break
            except (HelixError, TwitchAuthError) as exc:
                retried += self._book.record_retry(_each(batch, str(exc)), delay_s=self._retry_s)
                logger.warning("telling Twitch the fate of %d redemption(s) failed: %s", len(batch.redemption_ids), exc)
                continue
            calls += made
            done += self._book.record_done(outcomes)
        return FulfilmentPass(decided=decided, calls=calls, done=done, retried=retried)

    def _tell(self, batch: CallBatch) -> tuple[dict[str, Told], int]:
        """The update call for ``batch``, and a read-back of what it did not change; what Twitch holds."""
        try:
            update = self._helix.update_redemptions(
                batch.broadcaster_id, batch.reward_id, batch.redemption_ids, batch.fate.value
            )
        except HelixError as exc:
            if exc.status != 403:
                raise
            note = (
                "Twitch refuses to change it: the reward was made by another app (only that app can fulfil or refund)"
            )
            return {rid: Told(f"redemption {rid}: {note}") for rid in batch.redemption_ids}, 1
        outcomes = {
            rid: Told(_DONE_NOTE[batch.fate].format(rid=rid), refunded=batch.fate is Fate.CANCELED)
            for rid in update.changed
            if rid in batch.redemption_ids
        }
        rest = [rid for rid in batch.redemption_ids if rid not in outcomes]
        if not rest:
            return outcomes, 1
        held = self._helix.redemption_statuses(batch.broadcaster_id, batch.reward_id, rest)
        for rid in rest:
            status = held.get(rid)
            if status is None:
                outcomes[rid] = Told(f"redemption {rid} is gone on Twitch (its reward was deleted): nothing to tell")
            elif status == batch.fate.value:  # a repeat: an earlier call went through, its record did not
                outcomes[rid] = Told(_DONE_NOTE[batch.fate].format(rid=rid), refunded=batch.fate is Fate.CANCELED)
            elif status == "UNFULFILLED":
                raise HelixError(f"Twitch left redemption {rid} unfulfilled without saying why")
            else:
                outcomes[rid] = Told(
                    f"redemption {rid} was already {status.lower()} on Twitch (set there): left as it is",
                    refunded=status == Fate.CANCELED.value,
                )
        return outcomes, 2


def _each(batch: CallBatch, error: str) -> dict[str, str]:
    return dict.fromkeys(batch.redemption_ids, error)
