"""The service's input rules, each in one place: ids, amounts, item ids, cursors and whole numbers.

Every way in (the HTTP routes, the console's forms and queries, the command
line, the rewards file, the webhooks) checks what it is given with these, so
one value means the same everywhere. Digits are ASCII digits only: Python's
``str.isdigit()`` also accepts ``'²'`` and Arabic-Indic digits, and ``int()``
also accepts ``' 12'``, ``'+5'`` and ``'1_000'``, none of which is an id or a
count anyone sent on purpose.

The checks raise ``InvalidInput`` (a ``WetbotRewardsError`` and a
``ValueError``) whose message names the field; the ``is_*`` forms answer a
plain yes or no. ``config.domain_fields`` has the same rules as pydantic field
types; this module imports no pydantic, so the command line starts fast.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, TypeGuard, TypeVar

from config.errors import CliError, WetbotRewardsError

__all__ = [
    "DISCORD_ID_RULE",
    "MAX_ABS_AMOUNT",
    "MAX_CURSOR_DIGITS",
    "MAX_ITEM_ID_LENGTH",
    "PLATFORM_ID_RULE",
    "InvalidInput",
    "amount",
    "command_line",
    "cursor_ms",
    "discord_id",
    "idempotency_key",
    "is_ascii_digits",
    "is_discord_id",
    "is_platform_user_id",
    "item_id",
    "parse_amount",
    "parse_digits",
    "platform_user_id",
    "whole_number",
]

#: WetBot accepts item amounts in [-1e9, 1e9] (docs/wetbot-api.md).
MAX_ABS_AMOUNT = 1_000_000_000
#: A millisecond cursor (``before_ms``) has at most this many digits (year 33658 is far enough).
MAX_CURSOR_DIGITS = 15
#: Item ids: what WetBot takes in ``itemID`` and what stays readable in a URL and a log line.
MAX_ITEM_ID_LENGTH = 100
DISCORD_ID_RULE = "a Discord id: 17-20 digits 0-9, not starting with 0"
PLATFORM_ID_RULE = "a numeric user id: 1-20 digits 0-9"

T = TypeVar("T")

_ASCII_DIGITS = re.compile(r"[0-9]+")
_DISCORD_ID = re.compile(r"[1-9][0-9]{16,19}")
_PLATFORM_ID = re.compile(r"[0-9]{1,20}")
#: No whitespace, nothing that would end a URL path segment (and every character printable: ``item_id``).
_ITEM_ID = re.compile(r"[^\s/?#]+")


class InvalidInput(WetbotRewardsError, ValueError):
    """Raised when a value someone gave (a field, an argument, a query parameter) breaks its rule.

    ``str()`` is one line, ``<field>: <what it must be>``; ``field`` and ``problem`` hold the parts.
    The offending value is not repeated: it may be hostile text for a terminal or a log.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


def is_ascii_digits(text: object) -> TypeGuard[str]:
    """``text`` is a non-empty string of the digits 0-9 and nothing else (no sign, space, ``_`` or newline)."""
    return isinstance(text, str) and _ASCII_DIGITS.fullmatch(text) is not None


def parse_digits(text: object, *, field: str, max_digits: int = 20) -> int:
    """The number written in ``text``: 1 to ``max_digits`` ASCII digits, nothing else."""
    if not is_ascii_digits(text) or len(str(text)) > max_digits:
        raise InvalidInput(field, f"expected a whole number of at most {max_digits} digits 0-9")
    return int(str(text))


def whole_number(text: object, *, field: str, minimum: int = 0, maximum: int | None = None) -> int:
    """``parse_digits`` within ``minimum``..``maximum`` (inclusive)."""
    width = 20 if maximum is None else max(1, len(str(maximum)))
    try:
        value = parse_digits(text, field=field, max_digits=width)
    except InvalidInput:
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum}-{maximum}" if maximum is not None else f"at least {minimum}"
        raise InvalidInput(field, f"expected a whole number {bound} (digits 0-9)")
    return value


def is_discord_id(text: object) -> TypeGuard[str]:
    """A Discord id (snowflake): 17-20 ASCII digits, no leading 0, below 2**64."""
    return isinstance(text, str) and _DISCORD_ID.fullmatch(text) is not None and int(text) < 2**64


def discord_id(text: object, *, field: str = "discord id") -> str:
    """``text`` when it is a Discord id (``is_discord_id``), else ``InvalidInput``."""
    if not is_discord_id(text):
        raise InvalidInput(field, f"expected {DISCORD_ID_RULE}")
    return str(text)


def is_platform_user_id(text: object) -> TypeGuard[str]:
    """A Twitch or Patreon user id: 1-20 ASCII digits."""
    return isinstance(text, str) and _PLATFORM_ID.fullmatch(text) is not None


def platform_user_id(text: object, *, field: str = "user id") -> str:
    """``text`` when it is a Twitch or Patreon user id (``is_platform_user_id``), else ``InvalidInput``."""
    if not is_platform_user_id(text):
        raise InvalidInput(field, f"expected {PLATFORM_ID_RULE}")
    return str(text)


def amount(value: object, *, field: str = "amount") -> float:
    """An item amount: a finite number (not a bool), not 0, within ±``MAX_ABS_AMOUNT`` (fractions allowed)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(field, "must be a number")
    if not math.isfinite(value):
        raise InvalidInput(field, "must be a finite number")
    if not -MAX_ABS_AMOUNT <= value <= MAX_ABS_AMOUNT:
        raise InvalidInput(field, f"must be between {-MAX_ABS_AMOUNT} and {MAX_ABS_AMOUNT}")
    if value == 0:
        raise InvalidInput(field, "must not be 0")
    return float(value)


#: ``-12.5``, ``3``, ``1e3``: ASCII only (``float()`` also takes Arabic-Indic digits, ``' 5'``, ``'1_0'``, ``nan``).
_AMOUNT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_amount(text: str, *, field: str = "amount") -> float:
    """An amount written as text (the command line's ``ID=AMOUNT``), then checked as ``amount``."""
    if not _AMOUNT_TEXT.fullmatch(text):
        raise InvalidInput(field, "amount is not a number (digits 0-9, optionally - . e)")
    return amount(float(text), field=field)


def item_id(text: object, *, field: str = "item id") -> str:
    """A WetBot item id: 1-100 printable characters (``str.isprintable``: no control, format or bidi
    characters), no whitespace, no ``/ ? #``. A refusal names an unprintable character by its code point."""
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_ITEM_ID_LENGTH or not _ITEM_ID.fullmatch(text):
        raise InvalidInput(field, f"expected 1-{MAX_ITEM_ID_LENGTH} printable characters without spaces, / ? or #")
    for char in text:
        if not char.isprintable():
            raise InvalidInput(field, f"must be printable text (contains U+{ord(char):04X})")
    return text


#: An idempotency key: what ``POST /grants`` and ``grants create --key`` take (visible ASCII, no spaces).
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")


def idempotency_key(text: object, *, field: str = "idempotency_key") -> str:
    """``text`` when it is 1-200 printable ASCII characters without spaces, else ``InvalidInput``."""
    if not isinstance(text, str) or not _IDEMPOTENCY_KEY.fullmatch(text):
        raise InvalidInput(field, "expected 1-200 printable ASCII characters without spaces")
    return text


def cursor_ms(text: str, *, field: str = "before_ms") -> int | None:
    """A millisecond paging cursor: ``None`` for ``""`` (the first page), else ``parse_digits``."""
    if text == "":
        return None
    return parse_digits(text, field=field, max_digits=MAX_CURSOR_DIGITS)


def command_line(check: Callable[..., T], *, field: str, **bounds: Any) -> Callable[[str], T]:
    """``check`` as an argparse ``type=``: an argument that breaks its rule raises ``CliError`` (one line,
    exit status 1, from ``wetbot_rewards.cli.main``) rather than argparse's usage text and exit status 2."""

    def parse(text: str) -> T:
        try:
            return check(text, field=field, **bounds)
        except InvalidInput as exc:
            raise CliError(str(exc)) from None

    return parse
