"""Errors the command line turns into an exit code and one line of text (standard library only:
the console script imports this module before anything else)."""

from __future__ import annotations


class ConfigError(ValueError):
    """Invalid configuration: a config file, a web config file or a command-line flag.

    The message is the whole line a user sees, naming the source, the field and the problem,
    e.g. ``error parsing config file: /etc/x.yml: probe.repeats: must be >= 1, got 0``.
    """


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so ``finally`` blocks and runner cleanup run."""
