"""``config.domain``: one rule per kind of value, ASCII digits only, and errors that name the field."""

from __future__ import annotations

import pytest

from config import domain
from config.domain import InvalidInput
from config.errors import CliError, WetbotRewardsError

#: Text that ``str.isdigit()`` or ``int()`` accepts but no one sends as an id or a count on purpose.
NOT_ASCII_DIGITS = [
    "\u0661\u0662\u0663",  # Arabic-Indic
    "²",  # superscript two
    "\uff11\uff12",  # full-width
    "\u07c1\u07c2",  # NKo
    " 12",
    "12 ",
    "12\n",
    "+5",
    "-5",
    "1_000",
    "12.0",
    "",
]


@pytest.mark.parametrize("text", NOT_ASCII_DIGITS)
def test_parse_digits_takes_ascii_digits_only(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"^count: "):
        domain.parse_digits(text, field="count")


def test_parse_digits_reads_ascii_digits_within_the_width() -> None:
    assert domain.parse_digits("0042", field="n") == 42
    with pytest.raises(InvalidInput):
        domain.parse_digits("1" * 21, field="n")
    assert domain.parse_digits("1" * 3, field="n", max_digits=3) == 111


def test_whole_number_bounds() -> None:
    assert domain.whole_number("100", field="--limit", minimum=1, maximum=100) == 100
    for text in ("0", "101", "1000", "\u0661"):
        with pytest.raises(InvalidInput, match=r"^--limit: expected a whole number 1-100"):
            domain.whole_number(text, field="--limit", minimum=1, maximum=100)


GOOD_DISCORD = "222222222222222222"


@pytest.mark.parametrize(
    "text",
    [
        "\u0662" * 18,
        "²" * 18,
        "\uff12" * 18,
        " " + GOOD_DISCORD,
        GOOD_DISCORD + "\n",
        "+" + GOOD_DISCORD[1:],
        GOOD_DISCORD[:9] + "_" + GOOD_DISCORD[10:],
        "0" + GOOD_DISCORD[1:],  # no snowflake starts with 0
        "1" * 16,
        "1" * 21,
        str(2**64),  # 20 digits, but not 64 bits
        222222222222222222,  # an int, not text
    ],
)
def test_discord_id_rule(text: object) -> None:
    assert not domain.is_discord_id(text)
    with pytest.raises(InvalidInput, match=r"^--user: expected a Discord id"):
        domain.discord_id(text, field="--user")


def test_discord_id_accepts_snowflakes() -> None:
    for text in (GOOD_DISCORD, "1" * 17, str(2**64 - 1)):
        assert domain.discord_id(text) == text


@pytest.mark.parametrize("text", ["\u0661\u0662", "²", "12\n", " 12", "", "1" * 21, "12a"])
def test_platform_user_id_rule(text: str) -> None:
    assert not domain.is_platform_user_id(text)
    with pytest.raises(InvalidInput, match=r"^external_id: expected a numeric user id"):
        domain.platform_user_id(text, field="external_id")
    assert domain.platform_user_id("0", field="x") == "0" and domain.is_platform_user_id("1" * 20)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "must not be 0"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (domain.MAX_ABS_AMOUNT + 1, "between"),
        (-domain.MAX_ABS_AMOUNT - 0.5, "between"),
        (True, "must be a number"),
        ("5", "must be a number"),
    ],
)
def test_amount_rule(value: object, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        domain.amount(value)


def test_amounts_within_the_range_pass() -> None:
    assert domain.amount(domain.MAX_ABS_AMOUNT) == domain.MAX_ABS_AMOUNT
    assert domain.amount(-0.25) == -0.25


@pytest.mark.parametrize("text", ["\u0661", "²", " 5", "5 ", "1_0", "nan", "inf", "0x10", "", "--5", "5e"])
def test_parse_amount_is_ascii_only(text: str) -> None:
    with pytest.raises(InvalidInput):
        domain.parse_amount(text)


@pytest.mark.parametrize(("text", "value"), [("5", 5.0), ("-1.5", -1.5), ("1e3", 1000.0), (".5", 0.5), ("+2", 2.0)])
def test_parse_amount_reads_plain_numbers(text: str, value: float) -> None:
    assert domain.parse_amount(text) == value


@pytest.mark.parametrize("text", ["", "has space", "a/b", "a?b", "a#b", "tab\there", "x" * 101, "bell\x07", "c1\x85"])
def test_item_id_rule(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"^item id: "):
        domain.item_id(text)


def test_item_ids_may_be_any_printable_word() -> None:
    for text in ("gem", "sub-chest", "x" * 100, "émeraude"):
        assert domain.item_id(text) == text


def test_cursor_ms_is_none_for_the_first_page_and_ascii_digits_otherwise() -> None:
    assert domain.cursor_ms("") is None
    assert domain.cursor_ms("1700000000000") == 1_700_000_000_000
    for text in ("²", "\u0661\u0667\u0660\u0660", "1" * 16, "-1", " 1"):
        with pytest.raises(InvalidInput, match=r"^before_ms: "):
            domain.cursor_ms(text)


def test_invalid_input_is_a_project_error_and_a_value_error_that_never_repeats_the_value() -> None:
    with pytest.raises(InvalidInput) as caught:
        domain.discord_id("\x1b[31mhostile", field="user_id")
    assert isinstance(caught.value, WetbotRewardsError) and isinstance(caught.value, ValueError)
    assert "hostile" not in str(caught.value) and caught.value.field == "user_id"


def test_command_line_turns_a_broken_rule_into_a_cli_error() -> None:
    limit = domain.command_line(domain.whole_number, field="--limit", minimum=1)
    assert limit("7") == 7
    with pytest.raises(CliError, match=r"^--limit: "):
        limit("\u0667")
