"""Linking a Twitch or Patreon user to a Discord user, and unlinking: once, for the console, the API and the CLI.

``link`` stores the link, then queues every grant parked for that user (``link_and_release``:
each grant once, so the same form or call sent twice releases nothing the second time).
``unlink`` forgets a run-time link; a static one lives in the rewards file. Both write the
audit log, refused calls included.

Both are confirmed by the replicas (``REDIS_WAIT_REPLICAS``, ``worker.replication``): the link, the release
of its parked grants, and the state an unlink's "there was no such link" rests on. Short of them the call
raises ``ActionUnconfirmed`` (``producers.unconfirmed``) and claims nothing; linking or unlinking again is
safe (the link is set again, what is still parked is released, nothing twice).
"""

from __future__ import annotations

from dataclasses import dataclass

from config.domain import InvalidInput, is_platform_user_id
from config.errors import WetbotRewardsError
from producers.audit import Audit
from producers.links import PLATFORMS, LinkStore, check_link
from producers.submit import link_and_release
from producers.unconfirmed import ActionUnconfirmed
from worker.connections import follow_failover
from worker.ledger import Ledger
from worker.replication import NotReplicated

__all__ = ["LinkDone", "LinkRefused", "link", "unlink"]


class LinkRefused(WetbotRewardsError):
    """Raised when nothing was linked or unlinked; the message says why."""


@dataclass(frozen=True)
class LinkDone:
    platform: str
    external_id: str
    discord_user_id: str
    #: the Discord user it was linked to before ("" when none, or the same).
    replaced: str
    #: True when it was linked to the same user already.
    already: bool
    released: tuple[str, ...]

    @property
    def message(self) -> str:
        was = "already linked; " if self.already else (f"was {self.replaced}; " if self.replaced else "")
        return (
            f"Linked {self.platform} user {self.external_id} to Discord {self.discord_user_id} "
            f"({was}{len(self.released)} parked grant(s) queued)"
        )


def link(
    ledger: Ledger,
    links: LinkStore,
    platform: str,
    external_id: str,
    discord_user_id: str,
    *,
    audit: Audit | None = None,
    actor: str = "",
) -> LinkDone:
    """Link the user and queue every grant parked for them.

    Raises:
      LinkRefused: a platform, id or Discord id that is not one.
      ActionUnconfirmed: too few replicas confirmed the link or the release (module docstring).
    """
    target = f"{platform}:{external_id}"[:80]
    try:
        check_link(platform, external_id, discord_user_id)
    except InvalidInput as exc:
        if audit is not None:
            audit.record(actor, "link-add", target, "refused", str(exc))
        raise LinkRefused(str(exc)) from None
    follow_failover(ledger.redis)
    before = links.resolve(platform, external_id) or ""
    try:
        released = link_and_release(ledger, links, platform, external_id, discord_user_id)
    except NotReplicated as exc:
        unconfirmed = ActionUnconfirmed(f"the link of {platform} user {external_id}", exc)
        if audit is not None:
            audit.record(actor, "link-add", target, "not confirmed", f"discord {discord_user_id}; {unconfirmed}")
        raise unconfirmed from exc
    done = LinkDone(
        platform,
        external_id,
        discord_user_id,
        "" if before == discord_user_id else before,
        before == discord_user_id,
        tuple(released),
    )
    if audit is not None:
        audit.record(actor, "link-add", target, "ok", f"discord {discord_user_id}; {done.message}")
    return done


def unlink(links: LinkStore, platform: str, external_id: str, *, audit: Audit | None = None, actor: str = "") -> None:
    """Forget a run-time link.

    Raises:
      LinkRefused: no run-time link for that user (a static one is in the rewards file).
      ActionUnconfirmed: too few replicas confirmed the removal, or that there was no link (module docstring).
    """
    target = f"{platform}:{external_id}"[:80]
    if platform not in PLATFORMS or not is_platform_user_id(external_id):
        why = "not a platform user id"
    elif _removed(links, platform, external_id, audit, actor, target):
        if audit is not None:
            audit.record(actor, "link-remove", target, "ok")
        return
    elif links.static_user(platform, external_id):
        why = f"it is in the rewards file ([{platform}.links]); edit the file"
    else:
        why = "there was no such link"
    if audit is not None:
        audit.record(actor, "link-remove", target, "refused", why)
    raise LinkRefused(why)


def _removed(links: LinkStore, platform: str, external_id: str, audit: Audit | None, actor: str, target: str) -> bool:
    """``links.remove``, a shortfall of replicas audited and raised as ``ActionUnconfirmed``."""
    follow_failover(links.redis)
    try:
        return links.remove(platform, external_id)
    except NotReplicated as exc:
        unconfirmed = ActionUnconfirmed(f"the removal of the link of {platform} user {external_id}", exc)
        if audit is not None:
            audit.record(actor, "link-remove", target, "not confirmed", str(unconfirmed))
        raise unconfirmed from exc
