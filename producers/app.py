"""The web app's first import path, ``producers.app:app``, kept for one release for deployments that name it.

The app is assembled above both sides in ``wetbot_rewards.app`` (ingestion here, the operator side in
``admin``); this alias only forwards ``app`` there and warns once, so a Procfile or a unit file written for
the old path keeps serving while it is updated.
"""

from __future__ import annotations

import logging
from typing import Any

OLD_PATH = "producers.app:app"
NEW_PATH = "wetbot_rewards.app:app"


def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from wetbot_rewards.app import app

    logging.getLogger(__name__).warning("%s is deprecated and goes in the next release: serve %s", OLD_PATH, NEW_PATH)
    return app
