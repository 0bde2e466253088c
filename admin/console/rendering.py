"""Templates of the console (Jinja2, autoescaped): one environment, a few filters, ``render_html``.

Every value reaches the HTML escaped (``autoescape``), so an event body, a rule's error
text or a typed-in id can never become markup. Undefined names fail loudly
(``StrictUndefined``) instead of rendering as nothing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined

__all__ = ["ENV", "ago", "render_html", "when"]


def when(epoch_s: float | None) -> str:
    """``2025-01-02 13:04:05 UTC`` (empty for None)."""
    if epoch_s is None:
        return ""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(epoch_s: float | None, now: float | None = None) -> str:
    """How long ago, in the largest unit that fits: ``just now``, ``5 min ago``, ``3 h ago``, ``2 days ago``."""
    if epoch_s is None:
        return ""
    seconds = (time.time() if now is None else now) - epoch_s
    if seconds < 60:
        return "just now"
    for unit_s, name in ((86_400, "days"), (3600, "h"), (60, "min")):
        if seconds >= unit_s:
            count = int(seconds // unit_s)
            return f"{count} {'day' if name == 'days' and count == 1 else name} ago"
    return "just now"  # unreachable: seconds >= 60 matched "min"


ENV = Environment(
    loader=PackageLoader("admin.console", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["when"] = when
ENV.filters["ago"] = ago


def render_html(template: str, values: dict[str, Any], *, status_code: int = 200) -> HTMLResponse:
    """``template`` rendered with ``values`` as an HTML response."""
    return HTMLResponse(ENV.get_template(template).render(values), status_code=status_code)
