"""Text from data (ids, reasons, bodies) made safe to print in an operator's terminal."""

from __future__ import annotations

import unicodedata

__all__ = ["shown"]

#: Unicode categories printed as escapes: controls, format marks (RTL overrides...), separators, unassigned.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def shown(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control or format character as a ``\\x..``/``\\u....`` escape (ESC, NUL, RTL marks).

    Data that reached Redis from a webhook or an old version may hold anything;
    printed raw, an escape sequence could rewrite the operator's screen.
    """
    out: list[str] = []
    for char in text:
        if keep_newlines and char == "\n":
            out.append(char)
        elif unicodedata.category(char) in _UNSAFE_CATEGORIES or char == "\\":
            out.append("\\\\" if char == "\\" else char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)
