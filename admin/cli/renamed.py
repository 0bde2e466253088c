"""Old spellings of the command line, accepted for one release with a one-line warning on stderr.

Loaded on every run of ``wetbot-rewards``, so it imports nothing but ``argparse``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["RENAMED_COMMANDS", "RenamedOption", "new_spelling", "warn_renamed"]

#: Old leading words of a command line and the words that replace them (``dead list`` lists dead grants).
RENAMED_COMMANDS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("grant",), ("grants", "create")),
    (("dead", "list"), ("grants", "list", "--state", "dead")),
    (("dead", "replay"), ("grants", "replay")),
    (("resolve",), ("grants", "resolve")),
    (("send-test", "twitch"), ("twitch", "send-test")),
    (("send-test", "patreon"), ("patreon", "send-test")),
)


def warn_renamed(old: str, new: str) -> None:
    """The one warning line an old spelling prints (on stderr, so piped output stays clean)."""
    print(f"wetbot-rewards: warning: '{old}' is deprecated and goes in the next release; use '{new}'", file=sys.stderr)


def new_spelling(argv: Sequence[str]) -> list[str]:
    """``argv`` with an old command spelling at its start replaced by the new one (and warned about once)."""
    words = list(argv)
    for old, new in RENAMED_COMMANDS:
        if tuple(words[: len(old)]) == old:
            warn_renamed(" ".join(old), " ".join(new))
            return [*new, *words[len(old) :]]
    return words


class RenamedOption(argparse.Action):
    """An option's old name (hidden from ``--help``): stores into the new option's ``dest`` and warns."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, **kwargs: object) -> None:
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        del parser
        warn_renamed(option_string or self.option_strings[0], self.new)
        setattr(namespace, self.dest, values)
