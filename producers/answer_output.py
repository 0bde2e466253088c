"""How ``send-test`` prints the service's answer: the status line, then the body (indented when JSON).

The webhook answers say what happened to the event (grants made, parked, ignored and why), so the body is
what a user trying the service needs to see; it is printed with control characters escaped (the terminal
must not run what a body carries) and cut at ``MAX_SHOWN_CHARS``.
"""

from __future__ import annotations

import contextlib
import json

__all__ = ["MAX_SHOWN_CHARS", "format_answer"]

#: Characters of the body printed at most.
MAX_SHOWN_CHARS = 4000


def format_answer(status: int, reason: str, body: bytes) -> str:
    """``answer: <status> <reason>`` and, when there is a body, the body on the lines below it."""
    lines = [f"answer: {status} {reason}".rstrip()]
    text = body.decode("utf-8", "replace").strip()
    if text:
        with contextlib.suppress(ValueError):  # not JSON: shown as text
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        shown = _escape_controls(text[:MAX_SHOWN_CHARS])
        lines.append(shown + (" ..." if len(text) > MAX_SHOWN_CHARS else ""))
    return "\n".join(lines)


def _escape_controls(text: str) -> str:
    """Control characters (ESC, NUL, ...) as ``\\x1b``; line breaks and tabs stay."""
    return "".join(c if c.isprintable() or c in "\n\t" else c.encode("unicode_escape").decode("ascii") for c in text)
