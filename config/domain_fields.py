"""The rules of ``config.domain`` as pydantic field types, for the API bodies and the rewards file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError

from config.domain import InvalidInput, discord_id, idempotency_key, item_id, parse_digits, platform_user_id

__all__ = ["Digits", "DiscordId", "IdempotencyKey", "ItemId", "PlatformUserId", "pydantic_check"]


def pydantic_check(check: Callable[..., Any]) -> Callable[[Any], Any]:
    """``check`` as a pydantic validator: its ``InvalidInput`` problem becomes the field's message (without
    pydantic's ``Value error,`` prefix, so the API's error line reads as the CLI's and the console's do)."""

    def validate(value: Any) -> Any:
        try:
            return check(value, field="")
        except InvalidInput as exc:
            raise PydanticCustomError("value_error", "{problem}", {"problem": exc.problem}) from None

    return validate


def _digits(value: Any, *, field: str) -> Any:
    """Text (a query parameter) must be ASCII digits; anything else goes on to the field's own type check."""
    return parse_digits(value, field=field) if isinstance(value, str) else value


#: Pydantic field types for the same rules (the API bodies and the rewards file).
DiscordId = Annotated[str, BeforeValidator(pydantic_check(discord_id))]
PlatformUserId = Annotated[str, BeforeValidator(pydantic_check(platform_user_id))]
ItemId = Annotated[str, AfterValidator(pydantic_check(item_id))]
IdempotencyKey = Annotated[str, AfterValidator(pydantic_check(idempotency_key))]
#: A whole number written in ASCII digits, for query parameters: pydantic's lax ``int`` would also take
#: ``' 12'``, ``'+5'``, ``'1_000'``, ``'12.0'`` and ``'12\n'``.
Digits = Annotated[int, BeforeValidator(pydantic_check(_digits))]
