"""An independent reading of per-CPU busy time, to check the probe's per-core figures against.

The probe reads the kernel's counters through psutil at its handshake and window events;
this module parses ``/proc/stat`` itself, in a sampling thread stamped with
``time.perf_counter`` (CLOCK_MONOTONIC on Linux, the same clock the runner's workers stamp
their windows with), so a window can be bracketed by the workers' own stamps rather than by
the probe's event timing. Nothing is shared with ``exporter.stats.measurement`` on purpose.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Optional, Sequence

PROC_STAT = Path("/proc/stat")
SAMPLE_SECONDS = 0.010  # /proc/stat moves in USER_HZ (100 Hz) ticks: sampling faster buys nothing
# Column order of a cpuN line: user nice system idle iowait irq softirq steal guest guest_nice.
# Guest time is already inside user/nice, so only the first eight columns add up to the total.
TOTAL_COLUMNS = 8
IDLE, IOWAIT, STEAL = 3, 4, 7


@dataclass(frozen=True)
class Sample:
    """One read of /proc/stat, between two perf_counter stamps taken around the read."""

    read_start: float
    read_end: float
    text: str


def cpu_ticks(text: str) -> list[list[int]]:
    """Per-CPU tick counters from the ``cpuN`` lines, in the kernel's (and psutil's) order."""
    return [[int(value) for value in line.split()[1:]]
            for line in text.splitlines() if line.startswith("cpu") and line[3:4].isdigit()]


def busy_fraction(before: Sequence[int], after: Sequence[int]) -> float:
    """Busy share of one CPU between two readings: (total - idle - iowait) / total."""
    delta = [end - start for start, end in zip(before, after)]
    total = sum(delta[:TOTAL_COLUMNS])
    return (total - delta[IDLE] - delta[IOWAIT]) / total if total > 0 else 0.0


def busy_between(before: Sample, after: Sample) -> list[float]:
    """Busy share of every CPU between two samples."""
    return [busy_fraction(b, a) for b, a in zip(cpu_ticks(before.text), cpu_ticks(after.text))]


def bracketing(samples: Sequence[Sample], start: float, end: float) -> Optional[tuple[Sample, Sample]]:
    """The last sample read wholly before ``start`` and the first read wholly after ``end``."""
    before = [s for s in samples if s.read_end <= start]
    after = [s for s in samples if s.read_start >= end]
    return (before[-1], after[0]) if before and after else None


class Sampler:
    """Reads /proc/stat every SAMPLE_SECONDS in a daemon thread while in a ``with`` block."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _read(self) -> None:
        started = time.perf_counter()
        text = PROC_STAT.read_text()
        # Parsing is left for later so each sample costs one read, not a parse, while timing.
        self.samples.append(Sample(started, time.perf_counter(), text))

    def _loop(self) -> None:
        self._read()
        while not self._stop.wait(SAMPLE_SECONDS):
            self._read()
        self._read()

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, kind: Optional[type[BaseException]], value: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        self._stop.set()
        self._thread.join()
