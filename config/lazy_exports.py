"""A package's re-exports imported on first use (PEP 562 module ``__getattr__``).

``from worker import Ledger`` keeps working, but ``import worker.grant`` no longer loads the broker, the
WetBot client and everything else the package re-exports, which keeps the command line's start-up short.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module

__all__ = ["lazy_exports"]


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], object]:
    """The module ``__getattr__`` of ``package``: each name of ``homes`` (name → module) is imported when
    first asked for and then kept in the package, so the second use costs nothing."""

    def __getattr__(name: str) -> object:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(home), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
