"""The ``parallelism-exporter`` console script: signal handlers first, then everything else.

Importing the command line takes a few hundred milliseconds (rich, prometheus_client,
the probe machinery). A Ctrl-C in that time used to print a ``KeyboardInterrupt`` traceback
and a SIGTERM to kill the process with no word (exit -15). So this module imports only the
standard library, turns SIGINT and SIGTERM into exceptions before anything else is loaded,
and answers either with one line and exit code 130 or 143. ``probe`` keeps these handlers
(it catches the exceptions to kill its runners first); ``serve`` replaces them with its own
once it runs.

``serve`` also re-executes itself here, once, before the heavy imports: glibc's per-thread
malloc caches can be turned off only from the environment a process starts with (see
``exporter.serve.malloc``).
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Optional, Sequence

from exporter.errors import Terminated
from exporter.serve import malloc


def _raise_terminated(signum: int, frame: Optional[FrameType]) -> None:
    raise Terminated()


def install_handlers() -> None:
    """SIGINT raises KeyboardInterrupt (Python's own default, restored if changed), SIGTERM
    raises Terminated."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_terminated)


def interrupted(exc: BaseException) -> int:
    """One line for the user and the exit code 128 + the signal's number."""
    signum = signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM
    print(f"parallelism-exporter: interrupted by {signum.name}", file=sys.stderr)
    return 128 + signum


def run(argv: Optional[Sequence[str]] = None) -> int:
    try:
        from exporter import cli  # the heavy imports, now under the handlers

        return cli.run(argv)
    except (KeyboardInterrupt, Terminated) as exc:
        return interrupted(exc)


def main() -> None:
    install_handlers()
    malloc.restart_serve_once_without_thread_caches(sys.argv)
    try:
        code = run()
    except (KeyboardInterrupt, Terminated) as exc:  # a signal while ``run`` was returning
        code = interrupted(exc)
    sys.exit(code)
