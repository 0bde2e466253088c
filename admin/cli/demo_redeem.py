"""``wetbot-rewards demo redeem [TITLE]``: a viewer redeems a channel-point reward in the Twitch simulator.

Demo mode (``make run`` without a WetBot key) runs the Twitch simulator (``python -m simulator twitch``);
this asks it, through its control endpoints (``/_sim/rewards``, ``/_sim/redeem``, ``/_sim/redemptions``,
see ``simulator.twitch``), to redeem the reward of that title as a viewer would on Twitch. The simulator
delivers the redemption over EventSub's WebSocket to the ``eventsub`` process, which makes it a grant;
once the grant is delivered the redemption becomes ``FULFILLED``. ``--wait`` waits for that and prints
the redemption's last status. It only ever talks to the simulator's URL, never to Twitch.
"""

from __future__ import annotations

import argparse
import time

import requests

from config.errors import CliError
from config.rewards import load_rewards
from config.settings import Settings
from producers.printable import terminal_safe

__all__ = ["DEFAULT_LOGIN", "DEFAULT_SIMULATOR_URL", "add_redeem"]

#: Where ``make run`` serves the Twitch simulator unless ``TWITCH_SIM_PORT`` says otherwise.
DEFAULT_SIMULATOR_URL = "http://127.0.0.1:8098"
#: The simulator's broadcaster (Twitch user id 1337), linked to a Discord id in config/rewards.example.toml.
DEFAULT_LOGIN = "cool_user"
#: Seconds one control request may take.
TIMEOUT_S = 10.0


def add_redeem(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``redeem`` to the ``demo`` noun's commands."""
    redeem = commands.add_parser(
        "redeem",
        help="redeem a channel-point reward in the demo's Twitch simulator (as a viewer would)",
        description="Asks the Twitch simulator make run started in demo mode to redeem the reward of that title. "
        "Default: the first [[twitch.rewards]] of the rules file.",
    )
    redeem.add_argument("title", nargs="?", help="the reward's title (default: the rules file's first owned reward)")
    redeem.add_argument("--login", default=DEFAULT_LOGIN, help=f"the viewer's Twitch login (default {DEFAULT_LOGIN})")
    redeem.add_argument("--input", default="", help="the viewer's text, for a reward that asks for one")
    redeem.add_argument(
        "--simulator",
        default=DEFAULT_SIMULATOR_URL,
        help=f"the Twitch simulator's URL (default {DEFAULT_SIMULATOR_URL})",
    )
    redeem.add_argument(
        "--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds for FULFILLED or CANCELED"
    )
    redeem.set_defaults(run=_redeem)


def _redeem(settings: Settings, args: argparse.Namespace) -> int:
    title = args.title or _first_owned_title(settings)
    base = str(args.simulator).rstrip("/") + "/_sim"
    with requests.Session() as http:
        rewards = _get(http, f"{base}/rewards")["rewards"]
        matches = [r for r in rewards if str(r.get("title", "")).strip().lower() == title.strip().lower()]
        if not matches:
            known = ", ".join(sorted(str(r.get("title")) for r in rewards)) or "none yet"
            raise CliError(
                f"the Twitch simulator has no reward titled {title!r} (it has: {known}); the eventsub process "
                "creates the rules file's [[twitch.rewards]] a few seconds after make run starts"
            )
        reward = matches[0]
        answer = http.post(
            f"{base}/redeem",
            json={"reward_id": reward["id"], "login": args.login, "user_input": args.input},
            timeout=TIMEOUT_S,
        )
        if answer.status_code != 200:
            raise CliError(f"the Twitch simulator refused the redemption: {answer.status_code} {answer.text[:200]}")
        redemption_id = str(answer.json()["event"]["id"])
        print(f"redeemed {terminal_safe(reward['title'])} as {terminal_safe(args.login)}: redemption {redemption_id}")
        if args.wait > 0:
            status = _wait_for_fate(http, base, redemption_id, float(args.wait))
            print(f"redemption {redemption_id}: {status}")
            if status == "UNFULFILLED":
                return 1
    return 0


def _first_owned_title(settings: Settings) -> str:
    owned = load_rewards(settings.rewards_file, missing_ok=True).twitch.rewards
    if not owned:
        raise CliError("the rules file declares no [[twitch.rewards]]: name the reward's title")
    return owned[0].title


def _wait_for_fate(http: requests.Session, base: str, redemption_id: str, wait_s: float) -> str:
    """The redemption's status once it is no longer UNFULFILLED, or UNFULFILLED after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        status = next(
            (str(r["status"]) for r in _get(http, f"{base}/redemptions")["redemptions"] if r["id"] == redemption_id),
            "UNFULFILLED",
        )
        if status != "UNFULFILLED" or time.monotonic() >= deadline:
            return status
        time.sleep(0.2)


def _get(http: requests.Session, url: str) -> dict[str, list[dict[str, object]]]:
    try:
        answer = http.get(url, timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        raise CliError(
            f"the Twitch simulator does not answer at {url.removesuffix('/rewards').removesuffix('/_sim')} "
            f"({type(exc).__name__}): is make run running in demo mode?"
        ) from None
    if answer.status_code != 200:
        raise CliError(f"the Twitch simulator answered {answer.status_code} for {url}")
    body: dict[str, list[dict[str, object]]] = answer.json()
    return body
