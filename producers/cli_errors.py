"""The one error type of the command line: a command that cannot do what was asked."""

__all__ = ["CliError"]


class CliError(Exception):
    """Raised when a command cannot do what was asked; printed as one line, exit status 1."""
