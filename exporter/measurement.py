"""Measurement arithmetic: speedup, efficiency, serial fraction, spread, per-core busy time.

Every derived figure the exporter reports is computed here, from the raw timings the runner
stamped inside its workers and the kernel's per-CPU counters, so the formulas live in one
place and are tested on constructed numbers.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

# Kernel CPU-time fields that are not busy time; guest time is already counted in user/nice.
IDLE_FIELDS = ("idle", "iowait")
DOUBLE_COUNTED_FIELDS = ("guest", "guest_nice")


def speedup(sequential_seconds: float, parallel_seconds: float, workers: int) -> float:
    """Weak-scaling speedup T1·N/TN: N workers each did the unit one worker did in T1."""
    return sequential_seconds * workers / parallel_seconds


def efficiency(speedup_ratio: float, workers: int) -> float:
    """Parallel efficiency: speedup per worker, 1.0 is perfect scaling."""
    return speedup_ratio / workers


def serial_fraction(speedup_ratio: float, workers: int) -> Optional[float]:
    """Karp–Flatt experimentally determined serial fraction; undefined for one worker."""
    if workers < 2 or speedup_ratio <= 0:
        return None
    return (1 / speedup_ratio - 1 / workers) / (1 - 1 / workers)


def relative_spread(values: Sequence[float]) -> float:
    """(max - min) / median: how far the repeats disagree, as a fraction of the median."""
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else 0.0


def busy_fractions(before: Sequence[Mapping[str, float]],
                   after: Sequence[Mapping[str, float]]) -> list[float]:
    """Busy fraction of each CPU between two readings of its cumulative CPU-time fields."""
    fractions = []
    for start, end in zip(before, after):
        delta = {name: end[name] - start[name] for name in end if name in start}
        total = sum(v for k, v in delta.items() if k not in DOUBLE_COUNTED_FIELDS)
        idle = sum(delta.get(k, 0.0) for k in IDLE_FIELDS)
        fractions.append(min(1.0, max(0.0, (total - idle) / total)) if total > 0 else 0.0)
    return fractions


@dataclass(frozen=True)
class Window:
    """One timed window: every worker's own start, end and CPU seconds."""

    starts: Sequence[float]
    ends: Sequence[float]
    cpu_seconds: Sequence[float]
    startup_seconds: float
    core_utilisation: Sequence[float] = ()

    @property
    def wall_seconds(self) -> float:
        """From the first worker's start to the last worker's end."""
        return max(self.ends) - min(self.starts)

    @property
    def cores_used(self) -> float:
        """CPU seconds of all workers over wall seconds: ~1 for GIL threads, ~N for processes."""
        return sum(self.cpu_seconds) / self.wall_seconds


@dataclass(frozen=True)
class Summary:
    """The figures of one (mode, workers) step over its repeats; medians unless noted."""

    wall_seconds: float
    speedup: float
    speedup_spread: float
    efficiency: float
    serial_fraction: Optional[float]
    throughput_units_per_second: float
    throughput_ops_per_second: float
    cores_used: float
    core_utilisation: list[float]
    startup_seconds: float


def summarise(windows: Sequence[Window], sequential_seconds: float, workers: int,
              ops_per_unit: int) -> Summary:
    """Median figures of a step's repeats against the sequential baseline T1."""
    walls = [w.wall_seconds for w in windows]
    speedups = [speedup(sequential_seconds, wall, workers) for wall in walls]
    median_speedup = statistics.median(speedups)
    median_wall = statistics.median(walls)
    per_cpu = [list(cpu) for cpu in zip(*(w.core_utilisation for w in windows))]
    return Summary(
        wall_seconds=median_wall,
        speedup=median_speedup,
        speedup_spread=relative_spread(speedups),
        efficiency=efficiency(median_speedup, workers),
        serial_fraction=serial_fraction(median_speedup, workers),
        throughput_units_per_second=workers / median_wall,
        throughput_ops_per_second=workers * ops_per_unit / median_wall,
        cores_used=statistics.median(w.cores_used for w in windows),
        core_utilisation=[statistics.median(cpu) for cpu in per_cpu],
        startup_seconds=statistics.median(w.startup_seconds for w in windows),
    )
