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
