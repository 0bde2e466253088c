"""``python -m simulator``: run the WetBot simulator as a process (see ``simulator.wetbot.main``);
``python -m simulator twitch ...`` runs the Twitch one (see ``simulator.twitch_cli.main``)."""

import sys

if sys.argv[1:2] == ["twitch"]:
    from simulator.twitch_cli import main as twitch_main

    raise SystemExit(twitch_main(sys.argv[2:]))

from simulator.wetbot import main

raise SystemExit(main())
