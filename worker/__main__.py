"""``python -m worker [Dramatiq options]``: the worker as the Procfile runs it.

It is Dramatiq's own command line for ``worker.actors`` (``dramatiq worker.actors ...`` still works), with
the service's logging set up first: Dramatiq's supervisor process then logs in ``LOG_FORMAT`` too (its
``basicConfig`` finds the handler in place), so web and worker write one format, ``json`` included, with
secrets redacted, from the first line to the last.
"""

from __future__ import annotations

import sys

from dramatiq.cli import main as dramatiq_main
from dramatiq.cli import make_argument_parser

from config.settings import settings_or_exit
from worker.observability import configure_logging


def main(argv: list[str] | None = None) -> int:
    settings = settings_or_exit()
    configure_logging(settings)
    parser = make_argument_parser()  # type: ignore[no-untyped-call]
    args = parser.parse_args(["worker.actors", *(sys.argv[1:] if argv is None else argv)])
    return int(dramatiq_main(args) or 0)  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    raise SystemExit(main())
