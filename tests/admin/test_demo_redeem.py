"""``wetbot-rewards demo redeem``: a redemption in the Twitch simulator, found by title, through its control URL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.chaos.servers import free_port
from simulator.twitch import TwitchSimulator
from wetbot_rewards.cli import main


@pytest.fixture
def twitch() -> Iterator[TwitchSimulator]:
    sim = TwitchSimulator().start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.mark.usefixtures("cli_env")
def test_redeems_the_reward_of_that_title_as_the_viewer(
    twitch: TwitchSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    reward = twitch.create_reward("Daily chest", 100)
    assert main(["demo", "redeem", " daily CHEST", "--login", "viewer_two", "--simulator", twitch.root_url]) == 0
    [redemption] = twitch.redemptions()
    assert redemption["reward"]["id"] == reward["id"] and redemption["user_login"] == "viewer_two"  # type: ignore[index]
    assert redemption["status"] == "UNFULFILLED"
    out = capsys.readouterr().out
    assert out == f"redeemed Daily chest as viewer_two: redemption {redemption['id']}\n"


@pytest.mark.usefixtures("cli_env")
def test_an_unknown_title_is_one_line_naming_the_rewards_there(
    twitch: TwitchSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    twitch.create_reward("Daily chest", 100)
    assert main(["demo", "redeem", "Potion", "--simulator", twitch.root_url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("wetbot-rewards: the Twitch simulator has no reward titled 'Potion' (it has: Daily chest)")
    assert len(err.splitlines()) == 1 and twitch.redemptions() == []


@pytest.mark.usefixtures("cli_env")
def test_waiting_for_a_fate_that_never_comes_fails(twitch: TwitchSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    twitch.create_reward("Daily chest", 100)
    assert main(["demo", "redeem", "Daily chest", "--simulator", twitch.root_url, "--wait", "0.3"]) == 1
    assert capsys.readouterr().out.rstrip().endswith(": UNFULFILLED")


@pytest.mark.usefixtures("cli_env")
def test_no_simulator_is_one_line_saying_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "redeem", "Potion", "--simulator", f"http://127.0.0.1:{free_port()}"]) == 1
    err = capsys.readouterr().err
    assert (
        "the Twitch simulator does not answer at http://127.0.0.1:" in err
        and "is make run running in demo mode?" in err
    )
