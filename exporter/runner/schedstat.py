"""The kernel's per-thread scheduler accounting: time on a CPU and time runnable but waiting.

``/proc/<pid>/task/<tid>/schedstat`` holds three numbers per thread: nanoseconds it ran on a
CPU, nanoseconds it was runnable but waited for one, and how many times it got a CPU.
Time that is neither is time the thread was blocked: on the GIL, a lock, I/O. Waiting for
a CPU is the host's doing; being blocked is the runtime's. So the workers that were
*runnable* at once — on a CPU or waiting for one — is what the runtime let run at once,
whatever other processes took: a figure that does not need idle cores.

Standard library only: the runner reads it inside the interpreter under test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

Thread = Tuple[int, int]  # (pid, tid): a thread of any process


@dataclass(frozen=True)
class Reading:
    """One thread's cumulative accounting, in seconds."""

    on_cpu: float
    waiting: float  # runnable, waiting for a CPU
    timeslices: int


def read(thread: Thread) -> Optional[Reading]:
    """The thread's accounting now; None where the kernel does not keep it (not Linux, no
    CONFIG_SCHED_INFO) or the thread is gone."""
    pid, tid = thread
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as handle:
            fields = handle.read(256).split()
        return Reading(int(fields[0]) / 1e9, int(fields[1]) / 1e9, int(fields[2]))
    except (OSError, ValueError, IndexError):
        return None


def read_all(threads: Sequence[Thread]) -> Optional[list[Reading]]:
    """Every thread's accounting, or None when any is missing (a partial sum would mislead)."""
    readings = [read(thread) for thread in threads]
    return None if any(r is None for r in readings) else readings  # type: ignore[return-value]


@dataclass(frozen=True)
class Concurrency:
    """What the workers did between two readings ``seconds`` apart, in workers (or cores)."""

    runnable: float  # workers on a CPU or waiting for one: what the runtime let run at once
    on_cpu: float  # workers on a CPU: what the host gave them
    seconds: float

    def to_json(self) -> dict:
        return {"runnable_workers": self.runnable, "on_cpu_workers": self.on_cpu, "accounted_seconds": self.seconds}


def between(before: Sequence[Reading], after: Sequence[Reading], seconds: float) -> Optional[Concurrency]:
    """The workers runnable and on a CPU, on average, between two readings of the same threads
    ``seconds`` apart."""
    if len(before) != len(after) or seconds <= 0:
        return None
    on_cpu = sum(a.on_cpu - b.on_cpu for a, b in zip(after, before))
    waiting = sum(a.waiting - b.waiting for a, b in zip(after, before))
    return Concurrency((on_cpu + waiting) / seconds, on_cpu / seconds, seconds)
