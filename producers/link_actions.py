"""Linking a Twitch or Patreon user to a Discord user, and unlinking: once, for the console, the API and the CLI.

``link`` stores the link, then queues every grant parked for that user (``link_and_release``:
each grant once, so the same form or call sent twice releases nothing the second time).
``unlink`` forgets a run-time link; a static one lives in the rewards file. Both write the
audit log, refused calls included.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.grant_actions import Audit
from producers.links import PLATFORMS, LinkStore, check_link
from producers.submit import link_and_release
from worker.ledger import Ledger

__all__ = ["LinkDone", "LinkRefused", "link", "unlink"]


class LinkRefused(ValueError):
    """Nothing was linked or unlinked; the message says why."""


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
    """
    target = f"{platform}:{external_id}"[:80]
    try:
        check_link(platform, external_id, discord_user_id)
    except ValueError as exc:
        if audit is not None:
            audit.record(actor, "link-add", target, "refused", str(exc))
        raise LinkRefused(str(exc)) from None
    before = links.resolve(platform, external_id) or ""
    released = link_and_release(ledger, links, platform, external_id, discord_user_id)
    done = LinkDone(platform, external_id, discord_user_id, "" if before == discord_user_id else before,
                    before == discord_user_id, tuple(released))  # fmt: skip
    if audit is not None:
        audit.record(actor, "link-add", target, "ok", f"discord {discord_user_id}; {done.message}")
    return done


def unlink(links: LinkStore, platform: str, external_id: str, *, audit: Audit | None = None, actor: str = "") -> None:
    """Forget a run-time link.

    Raises:
      LinkRefused: no run-time link for that user (a static one is in the rewards file).
    """
    target = f"{platform}:{external_id}"[:80]
    if platform not in PLATFORMS or not external_id.isdigit() or len(external_id) > 32:
        why = "not a platform user id"
    elif links.remove(platform, external_id):
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
