"""Printable text: refusing what is not (API input) and escaping it where it is shown (the CLI).

"Printable" is Python's ``str.isprintable()``: no control characters (Cc: NUL,
ESC, newline...), no format characters (Cf: right-to-left marks and overrides,
zero-width spaces), no surrogates (Cs), private-use (Co) or unassigned (Cn)
code points, and no line or paragraph separators (Zl, Zp) or spaces other than
the ASCII one. Such characters let a value move the operator's cursor, recolour
or clear the terminal (ESC sequences), or show something other than what is
stored (bidi overrides). Free text may keep the zero-width joiner, which
emoji sequences need.
"""

from __future__ import annotations

__all__ = ["check_printable", "terminal_safe"]

#: The zero-width joiner (Cf): harmless, and part of emoji such as "👩‍💻".
ZERO_WIDTH_JOINER = "\u200d"


def check_printable(value: str, *, text: bool = False) -> str:
    """``value`` if every character is printable (``text``: the zero-width joiner allowed too).

    Raises:
      ValueError: naming the first offending character by code point (e.g. ``U+001B``), never echoing it.
    """
    for char in value:
        if not char.isprintable() and not (text and char == ZERO_WIDTH_JOINER):
            raise ValueError(f"must be printable text (contains U+{ord(char):04X})")
    return value


def terminal_safe(value: object) -> str:
    """``str(value)`` with every non-printable character written as an escape (``\\x1b``, ``\\u202e``).

    For anything the CLI prints that came from data (ids, reasons, errors): old
    or hostile values then show what they hold instead of acting on the terminal.
    A backslash is doubled, so an escape in the output always means a character.
    """
    text = str(value)
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char.isprintable():
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)
