"""Free-threaded workloads that contend, after CPython's Tools/ftscalingbench (benchmarks/busy.py).

Each is a no-argument function, run as ``contended_workloads:NAME`` with this folder on
``--workload.path``. On a free-threaded build their threads run at once but slow each other:
a reference count, a lock or a cache line they all write.
"""

from __future__ import annotations

import threading

SHARED: dict[int, int] = {}
_LOCAL = threading.local()


def shared_dict_writes() -> int:
    """Every thread writes the same dict: its per-object lock and cache lines are shared."""
    shared = SHARED
    for i in range(20_000):
        shared[i & 63] = i
    return len(shared)


def mult_constant() -> float:
    """ftscalingbench ``mult_constant``: one float constant, its reference count written by all."""
    x = 1.0
    for _ in range(30_000):
        x *= 1.01
    return x


def thread_local_read() -> int:
    """ftscalingbench ``thread_local_read``: attribute reads of one threading.local."""
    local = _LOCAL
    local.x = 10
    total = 0
    for _ in range(5_000):
        total += local.x + local.x + local.x + local.x + local.x
    return total


def _numbers():  # noqa: ANN202 - a generator, as ftscalingbench's simple_gen
    yield from range(10)


def generator() -> int:
    """ftscalingbench ``generator``: a generator function created and run over and over."""
    total = 0
    for _ in range(2_000):
        for value in _numbers():
            total += value
    return total


def create_dict() -> int:
    """ftscalingbench ``create_dict``: small dicts of constant keys and values."""
    count = 0
    for _ in range(20_000):
        count += len({"key": "value"})
    return count


class _Counter:
    def __init__(self) -> None:
        self.i = 0

    def next_number(self) -> int:
        self.i += 1
        return self.i


def method_call() -> int:
    """ftscalingbench ``pymethod``: a method call on an object of one shared class."""
    counter = _Counter()
    for _ in range(20_000):
        counter.next_number()
    return counter.i


FTSCALINGBENCH = ("mult_constant", "thread_local_read", "generator", "create_dict", "method_call")
