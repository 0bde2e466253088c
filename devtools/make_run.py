"""The Python pieces of ``scripts/run.sh`` (``make run``), one sub-command each: ``python -m devtools.make_run``.

- ``demo-env``: write ``.env`` from ``.env.example`` with generated demo secrets, readable by its owner only.
- ``check``: what web and worker will check at start (settings, the rewards file, a key for every rule's
  guild), before anything starts or the demo banner prints: one line and exit status 2 on a problem.
- ``demo-guilds``: the rewards file's default guild, then every other guild a rule names (for demo keys).
- ``local-redis``: may ``make run`` start a local ``redis-server`` for ``REDIS_URL``? Prints the port, or
  exits 1 saying why not.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from config.errors import ConfigError
from config.rewards import RewardsConfig, load_rewards
from config.settings import Settings, settings_or_exit
from worker.runtime import worker_keyring

__all__ = ["DEFAULT_REDIS_PORT", "local_redis_port", "main", "write_demo_env"]

#: Secrets ``demo-env`` generates (the CLI's ``send-test`` and the banner's ``curl`` read them from ``.env``).
#: TOKEN_ENCRYPTION_KEY encrypts the demo channel's tokens (from the Twitch simulator) in Redis.
DEMO_SECRETS = ("GRANTS_API_TOKEN", "TWITCH_WEBHOOK_SECRET", "PATREON_WEBHOOK_SECRET", "TOKEN_ENCRYPTION_KEY")
#: The only port ``make run`` starts a local Redis on: a server on any other port would be a typo's new,
#: empty Redis, and the service would run against it without the grants already queued.
DEFAULT_REDIS_PORT = 6379
_LOCAL_HOSTS = ("localhost", "127.0.0.1")


def write_demo_env(example: Path, target: Path) -> None:
    """Write ``target`` from ``example`` with a fresh value for each of ``DEMO_SECRETS``; mode 0600.

    The file is created with its final mode (never world-readable, not even for a moment) and never
    overwritten: an existing ``.env`` is the user's.

    Raises:
      FileExistsError: ``target`` exists.
    """
    text = example.read_text(encoding="utf-8")
    for name in DEMO_SECRETS:
        text = re.sub(rf"^{name}=$", f"{name}={secrets.token_hex(20)}", text, flags=re.M)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def check(settings: Settings) -> None:
    """Raise what web or worker would raise at start for ``settings``.

    Raises:
      ConfigError: the rewards file is missing (outside demo mode) or invalid, or (outside demo mode,
        where ``make run`` makes a demo key for every guild) a rule's guild has no WetBot key.
    """
    load_rewards(settings.rewards_file, missing_ok=settings.demo_mode)
    if not settings.demo_mode:
        worker_keyring(settings)


def demo_guilds(rewards: RewardsConfig, fallback: str) -> list[str]:
    """The default guild (``fallback`` when the file names none) first, then the other rules' guilds, sorted."""
    default = rewards.guild_id or fallback
    return [default, *sorted({g.guild_id for g in rewards.rule_guilds()} - {default})]


def local_redis_port(url: str) -> int:
    """The port of the local ``redis-server`` ``make run`` may start for ``url``, which did not answer.

    Only for this machine's default port 6379 without a password (the default ``REDIS_URL`` and its
    other databases): a mistyped port or host must fail loudly, not get a new, empty Redis of its own.

    Raises:
      ValueError: with the reason and what to do, as one line.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.hostname not in _LOCAL_HOSTS:
        raise ValueError("REDIS_URL names another host, TLS or a socket: start that Redis, or fix REDIS_URL")
    port = parts.port or DEFAULT_REDIS_PORT
    if port != DEFAULT_REDIS_PORT:
        raise ValueError(
            f"make run starts a local redis-server only on the default port {DEFAULT_REDIS_PORT}, not {port}"
            " (a mistyped port would get a new, empty Redis): start your Redis there, or fix REDIS_URL"
        )
    if parts.password:
        raise ValueError("REDIS_URL has a password a new local redis-server would not have: start your Redis")
    return port


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.make_run")
    parser.add_argument("command", choices=["demo-env", "check", "demo-guilds", "local-redis"])
    args = parser.parse_args(argv)
    if args.command == "demo-env":
        write_demo_env(Path(".env.example"), Path(".env"))
        return 0
    if args.command == "local-redis":
        url = os.environ.get("REDIS_URL") or "redis://localhost:6379/0"
        try:
            print(local_redis_port(url))
        except ValueError as exc:
            print(f"make run: {exc}", file=sys.stderr)
            return 1
        return 0
    settings = settings_or_exit()
    try:
        if args.command == "check":
            check(settings)
        else:
            fallback = "111111111111111111"
            print(" ".join(demo_guilds(load_rewards(settings.rewards_file, missing_ok=True), fallback)))
    except ConfigError as exc:
        print(f"wetbot-rewards: configuration error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
