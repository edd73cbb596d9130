"""A user workload that records the priority it runs at, for the probe.nice tests
(imported by the runner child and its workers)."""

from __future__ import annotations

import os
import threading


def record_priority() -> None:
    """Append "nice policy" of the calling thread to $PYPARALLEL_TEST_PRIORITY_FILE."""
    total = 0
    for i in range(20_000):  # about a millisecond of work, so calibration stays short
        total += i
    line = f"{os.getpriority(os.PRIO_PROCESS, 0)} {os.sched_getscheduler(0)} {threading.get_native_id()}\n"
    with open(os.environ["PYPARALLEL_TEST_PRIORITY_FILE"], "a", encoding="utf-8") as handle:
        handle.write(line)
