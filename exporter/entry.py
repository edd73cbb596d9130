"""The ``parallelism-exporter`` console script: signals held from its first statement, then everything else.

Importing the command line takes a few hundred milliseconds (rich, prometheus_client,
the probe machinery). A Ctrl-C in that time would print a ``KeyboardInterrupt`` traceback
and a SIGTERM would kill the process with no word (exit -15); an exception raised by a
handler in the middle of a library's import can even come out as another error. So the
first statements of this module block SIGINT and SIGTERM: one that arrives while the
modules load waits, pending, until they are loaded and ``main`` has its handlers and its
``try`` in place, and is then answered with one line and exit code 130 or 143. ``probe`` keeps these handlers (it catches the
exceptions to kill its runners first); ``serve`` replaces them with its own once it runs.
What nothing of ours can cover is the interpreter's own start-up, before this module's
first statement (benchmarks/results-signals.md).

``serve`` also re-executes itself here, once, before the heavy imports: glibc's per-thread
malloc caches can be turned off only from the environment a process starts with (see
``exporter.serve.malloc``). The signals stay blocked across that ``execve`` (a signal mask
survives it, and so does a pending signal), and the restarted process releases them once
its own handlers are in place. (So importing this module blocks both signals: only the
console script and ``python -m exporter`` import it, and call ``main``.)
"""

from __future__ import annotations

import signal

HELD = frozenset({signal.SIGINT, signal.SIGTERM})
# Blocked here, by us, rather than already by whoever started us: those are released in main.
_HELD_HERE = HELD - signal.pthread_sigmask(signal.SIG_BLOCK, HELD)

import os  # noqa: E402 - after the signals are held
import sys  # noqa: E402
from types import FrameType, ModuleType  # noqa: E402
from typing import Iterable, Optional, Sequence  # noqa: E402

from exporter.errors import Terminated  # noqa: E402
from exporter.serve import malloc  # noqa: E402

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


def load_command_line(argv: Sequence[str]) -> ModuleType:
    """Import the command line, and the daemon for ``serve`` (imported lazily by it): with the
    signals still held, so no exception is raised inside a library's import (Python 3.11
    turns one raised while a class is made into a RuntimeError: a traceback, not a line)."""
    from exporter import cli

    if argv[1:2] == ["serve"]:
        import exporter.serve.daemon  # noqa: F401 - loaded now, under the held signals
    return cli


def run(argv: Optional[Sequence[str]] = None, held: Iterable[int] = ()) -> int:
    """The command's exit code; the ``held`` signals are released once the command line is
    loaded, and one that waited is answered then."""
    try:
        cli = load_command_line(sys.argv if argv is None else ["parallelism-exporter", *argv])
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
        return cli.run(argv)
    except (KeyboardInterrupt, Terminated) as exc:
        return interrupted(exc)


def held_by_us() -> set[int]:
    """The signals this process must release: those its import held, and those the process
    it was restarted from held (the variable is removed, so no child ever sees it)."""
    held = {int(sig) for sig in _HELD_HERE}
    pid, _, numbers = os.environ.pop(malloc.HELD_SIGNALS, "").partition(" ")
    if pid == str(os.getpid()):
        held |= {int(n) for n in numbers.split(",") if n.isdigit() and int(n) in HELD}
    return held


def main() -> None:
    held = held_by_us()
    try:
        install_handlers()
        malloc.restart_serve_once_without_thread_caches(
            sys.argv, {malloc.HELD_SIGNALS: f"{os.getpid()} {','.join(map(str, sorted(held)))}"})
        code = run(held=held)
    except (KeyboardInterrupt, Terminated) as exc:  # also one while ``run`` was returning
        code = interrupted(exc)
    sys.exit(code)
