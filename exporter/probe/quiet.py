"""Is the host quiet enough to measure? The other processes' load, read from the kernel.

A step can show the parallelism it measures only when the cores free for it (usable, less
steal, less other processes' load) are about what its workers can use. ``probe --wait-quiet``
and the daemon's retries of inconclusive steps wait here, bounded, for such a moment.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable

from exporter.host import procfs
from exporter.stats import measurement

SAMPLE_SECONDS = 0.5


def cpu_counters() -> list[dict[str, float]]:
    """Each CPU's cumulative times, read at the edges of every timed window."""
    return procfs.per_cpu_times()


def sample_free_cores(usable: float, needed: float, seconds: float = SAMPLE_SECONDS,
                      own_cpu: Callable[[], float] = lambda: 0.0) -> measurement.FreeCores:
    """The host's free cores over ``seconds`` (``own_cpu``: CPU seconds of ours to leave out)."""
    before, own_before, started = cpu_counters(), own_cpu(), time.monotonic()
    time.sleep(seconds)
    after, wall = cpu_counters(), time.monotonic() - started
    load = measurement.host_load(before, after, wall, own_cpu() - own_before)
    return measurement.FreeCores(usable, load.interference_cores, load.steal_ratio or 0.0, needed, float(len(after)))


@dataclass(frozen=True)
class Wait:
    """How a wait for a quiet host ended."""

    quiet: bool
    waited_seconds: float
    last: measurement.FreeCores


def wait_for_free_cores(usable: float, needed: float, timeout: float,
                        sample: Callable[[float, float], measurement.FreeCores] = sample_free_cores,
                        stop: Callable[[], bool] = lambda: False,
                        pause: Callable[[], float] = lambda: random.uniform(0.0, SAMPLE_SECONDS)) -> Wait:
    """Sample until enough cores are free, ``timeout`` seconds pass or ``stop()`` says so.

    Between busy samples it pauses a random part of a sample, so exporters on one host (or a
    fleet started together) do not sample, and then probe, in step.
    """
    started = time.monotonic()
    while True:
        reading = sample(usable, needed)
        waited = time.monotonic() - started
        if reading.enough or waited >= timeout or stop():
            return Wait(reading.enough, waited, reading)
        time.sleep(min(pause(), max(0.0, timeout - waited)))
