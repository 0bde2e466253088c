"""``python -m simulator``: run the WetBot simulator as a process (see ``simulator.wetbot.main``)."""

from simulator.wetbot import main

raise SystemExit(main())
