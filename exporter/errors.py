"""Errors that the command line turns into exit code 2 with one line of text."""

from __future__ import annotations


class ConfigError(ValueError):
    """Invalid configuration: a config file, a web config file or a command-line flag.

    The message is the whole line a user sees, naming the source, the field and the problem,
    e.g. ``error parsing config file: /etc/x.yml: probe.repeats: must be >= 1, got 0``.
    """
