"""The service assembled: the web app (``wetbot_rewards.app:app``) and the ``wetbot-rewards`` command line
(``wetbot_rewards.cli:main``), each built from the routers and commands of ``producers`` and ``admin``.
"""

__all__ = ["app", "cli"]
