"""Every template in the console's templates folder is used: rendered by name from the code, or extended
or included by a template that is."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
TEMPLATES = ROOT / "admin" / "console" / "templates"
#: A template named by another one: ``{% extends "base.html" %}``, ``{% include ... %}``.
TEMPLATE_REFERENCE = re.compile(r"""{%-?\s*(?:extends|include|import|from)\s+["']([\w./-]+)["']""")


def unused_templates(templates: Path, code: list[Path]) -> set[str]:
    """The templates no code names as a string literal and no used template extends or includes."""
    named = {match for path in code for match in re.findall(r"""["']([\w./-]+\.html)["']""", path.read_text("utf-8"))}
    names = {path.relative_to(templates).as_posix() for path in templates.rglob("*.html")}
    used = names & named
    while True:
        referenced = {ref for name in used for ref in TEMPLATE_REFERENCE.findall((templates / name).read_text("utf-8"))}
        if referenced <= used:
            return names - used
        used |= referenced & names


def test_every_console_template_is_used() -> None:
    code = sorted(path for package in ("admin", "wetbot_rewards") for path in (ROOT / package).rglob("*.py"))
    assert (TEMPLATES / "base.html").exists()
    assert unused_templates(TEMPLATES, code) == set()


def test_the_check_finds_an_unused_template(tmp_path: Path) -> None:
    (tmp_path / "base.html").write_text("{% block body %}{% endblock %}")
    (tmp_path / "page.html").write_text('{% extends "base.html" %}')
    (tmp_path / "coming.html").write_text('{% extends "base.html" %}')
    (tmp_path / "pages.py").write_text('render("page.html")\n')
    assert unused_templates(tmp_path, [tmp_path / "pages.py"]) == {"coming.html"}
