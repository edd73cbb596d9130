"""The last rounds of every step's speedup, and recent failures, bounded in memory.

As blackbox_exporter's result history (``--history.limit``): each step keeps its last
``limit`` points, and failures keep their own list of the last ``limit``, so a failure stays
visible with its debug log after later rounds succeed. Memory is bounded by the configured
steps times ``limit``; steps no longer configured are dropped on reload.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from exporter.results import WorkloadReport

DEFAULT_LIMIT = 100
StepKey = tuple[str, str, str, int]  # interpreter, workload, mode, workers


@dataclass(frozen=True)
class Point:
    """One round's figure of one step; ``speedup`` is None when the step failed."""

    timestamp: float
    speedup: Optional[float]


@dataclass(frozen=True)
class Failure:
    timestamp: float
    interpreter: str
    workload: str
    mode: str
    workers: int
    reason: str
    message: str
    log: tuple[str, ...]


class History:
    """Thread-safe: the probe lane records, web requests read."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"history limit must be >= 1, got {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        self._series: dict[StepKey, deque[Point]] = {}
        self._failures: deque[Failure] = deque(maxlen=limit)

    def record(self, reports: Iterable[WorkloadReport]) -> None:
        """Add one point per available step of these reports (and their failures)."""
        with self._lock:
            for report in reports:
                timestamp = report.started_at + report.duration_seconds
                for step in report.steps:
                    if not step.available:
                        continue
                    key = (report.interpreter.name, step.workload, step.mode, step.workers)
                    speedup = step.summary.speedup if step.summary is not None else None
                    series = self._series.setdefault(key, deque(maxlen=self.limit))
                    series.append(Point(timestamp, speedup))
                    if not step.success:
                        self._failures.append(Failure(timestamp, report.interpreter.name, step.workload, step.mode,
                                                      step.workers, step.reason or "error", step.message,
                                                      tuple(step.log)))

    def series(self) -> dict[StepKey, list[Point]]:
        with self._lock:
            return {key: list(points) for key, points in self._series.items()}

    def failures(self) -> list[Failure]:
        """Recent failures, newest first."""
        with self._lock:
            return list(reversed(self._failures))

    def prune(self, keep: Callable[[str, str], bool]) -> None:
        """Drop the steps (and failures) of (interpreter, workload) pairs ``keep`` rejects."""
        with self._lock:
            self._series = {k: v for k, v in self._series.items() if keep(k[0], k[1])}
            kept = [f for f in self._failures if keep(f.interpreter, f.workload)]
            self._failures = deque(kept, maxlen=self.limit)
