"""User workloads that misbehave, for the fault-isolation tests (imported by the runner child)."""

from __future__ import annotations

import multiprocessing
import os
import time


def in_worker_process() -> bool:
    return multiprocessing.parent_process() is not None


def raises() -> None:
    raise ValueError("boom from a workload")


def aborts() -> None:
    os.abort()


def hangs() -> None:
    time.sleep(3600)


def aborts_in_worker_process() -> None:
    """Fine in the runner itself; kills only a worker process of the processes mode."""
    if in_worker_process():
        os.abort()
    time.sleep(0.001)


def hangs_in_worker_process() -> None:
    if in_worker_process():
        time.sleep(3600)
    time.sleep(0.001)


def prints() -> None:
    """Writes to stdout, which must not corrupt the runner's event stream."""
    print("noise on stdout {not json")
    time.sleep(0.001)


def raises_in_subinterpreter() -> None:
    """Fine in the main interpreter; raises inside a PEP 734 subinterpreter."""
    import _interpreters  # CPython 3.13+

    if _interpreters.get_current()[0] != _interpreters.get_main()[0]:
        raise ValueError("boom in a subinterpreter")
    time.sleep(0.001)


def complains_then_aborts() -> None:
    """Leaves a line on stderr, then dies: the step's log must keep that line."""
    import sys

    print("workload: about to abort", file=sys.stderr, flush=True)
    os.abort()


def raises_with_markup() -> None:
    """A message full of HTML, which the status page must show as text."""
    raise ValueError('<img src=x onerror=alert(1)> & <b>not bold</b>')
