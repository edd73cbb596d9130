"""Workloads that fall short of scaling on a free-threaded build, each for its own reason.

- ``shared_constant`` is CPython's Tools/ftscalingbench ``mult_constant``: every thread
  multiplies by the same float constant, whose reference count all threads write. Both
  cores stay busy, each doing a fraction of the work: **contention**.
- ``locked`` does pure-Python work while holding one lock shared by all threads: they take
  turns, one core is busy and the other idle: **serialisation**.
"""

from __future__ import annotations

import threading

_LOCK = threading.Lock()


def shared_constant() -> float:
    x = 1.0
    for _ in range(30_000):
        x *= 1.01
    return x


def locked() -> int:
    with _LOCK:
        total = 0
        for i in range(20_000):
            total += i * i % 7
        return total
