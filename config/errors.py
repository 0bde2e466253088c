"""The service's exception tree: one root, families below it, leaves that say "Raised when…".

The root lives here, in ``config/`` (the package every other package already
imports), so ``worker/`` and ``producers/`` can hang their own families off it
without importing each other.
"""

from __future__ import annotations

import sys

__all__ = [
    "CliError",
    "ConfigError",
    "RewardsFileError",
    "WetbotRewardsError",
    "format_rewards_problem",
    "report_config_error",
]

#: How many further rewards-file problems the one-line message spells out after
#: the first; the rest are counted (all of them are in ``RewardsFileError.problems``).
_MORE_SHOWN = 3


class WetbotRewardsError(Exception):
    """Base class of every error the service raises on purpose.

    Catch this to tell "something we anticipated and described" from a bug.
    """


class CliError(WetbotRewardsError):
    """Raised when a command of the ``wetbot-rewards`` command line cannot do what was asked; printed as one
    line, exit status 1. The message holds values as they are: the command line escapes it once, as it prints it."""


class ConfigError(WetbotRewardsError):
    """Raised when the environment (or a ``.env`` file) holds a missing or bad value.

    ``str()`` is exactly one line that names the variable in its environment
    form (``WETBOT_RATE_LIMIT: expected N/<seconds>s such as 10/60s``). It never
    repeats the offending value, because that value may be a secret.

    Attributes:
      variables: the variables that were wrong, in the order reported (may be
        empty for problems that are not about one variable).
    """

    def __init__(self, message: str, *, variables: tuple[str, ...] = ()) -> None:
        super().__init__(_one_line(message))
        self.variables = variables


class RewardsFileError(ConfigError):
    """Raised when the rewards file is missing, is not valid TOML, or breaks the rules schema.

    ``str()`` is one line: ``<file>: <rule>: <field>: <problem>``, e.g.
    ``config/rewards.toml: twitch.rules[2] (channel.cheer): per_bits: must be at least 1``.
    Parts that do not apply are left out (a TOML syntax error names the file
    and the line instead). When the file has several problems the first one is
    spelled out, then up to three more and a count of the rest; ``problems``
    lists them all.

    Attributes:
      path: the file as it was given (not resolved, so it reads like the setting).
      locator: the rule, e.g. ``twitch.rules[2] (channel.cheer)``, or ``None``.
      field: the field within the rule (or the top-level key), e.g.
        ``items[0].amount``, or ``None``.
      problem: what is wrong with it.
      problems: every problem found, each as a full one-line message.
    """

    def __init__(
        self,
        path: str,
        problem: str,
        *,
        locator: str | None = None,
        field: str | None = None,
        more: tuple[str, ...] = (),
    ) -> None:
        self.path = path
        self.locator = locator
        self.field = field
        self.problem = problem
        first = format_rewards_problem(path, problem, locator=locator, field=field)
        self.problems = (first, *more)
        message = first
        if more:
            shown = "; ".join(line.removeprefix(f"{path}: ") for line in more[:_MORE_SHOWN])
            rest = len(more) - _MORE_SHOWN
            message += f" (also: {shown}" + (f"; and {rest} more)" if rest > 0 else ")")
        super().__init__(message, variables=("REWARDS_FILE",))


def format_rewards_problem(path: str, problem: str, *, locator: str | None = None, field: str | None = None) -> str:
    """Join the parts of a rewards-file problem into its one-line form (parts that are ``None`` are skipped)."""
    return ": ".join(part for part in (path, locator, field, problem) if part)


def _one_line(text: str) -> str:
    """Collapse line breaks so a message stays one log line (log parsers and the CLI rely on it)."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def report_config_error(exc: ConfigError) -> None:
    """Write ``wetbot-rewards: configuration error: <exc>`` to stderr as one line, in one write.

    One write, not ``print()``'s two (text, then newline): in a Dramatiq worker
    process stderr is a pipe whose every write is a message the main process
    relays as it comes, so the main process' own line ("exited unexpectedly")
    could land between the text and its newline.
    """
    sys.stderr.write(f"wetbot-rewards: configuration error: {exc}\n")
    sys.stderr.flush()
