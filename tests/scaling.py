"""Linear, not quadratic, as a test that holds on a loaded machine: two sizes timed in one run.

A speed target is never a unit test (the 2-core machine is shared, timings wander), but the
shape of the growth is: with sizes ``factor`` apart, a linear loader takes about ``factor``
times as long and a quadratic one ``factor²`` times. The bound sits between them, at
``factor ** 1.5`` (64 for 16), and each size keeps its fastest of a few runs, so a run slowed
by a neighbour does not decide.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

TRIES = 3


def fastest(run: Callable[[T], object], argument: T, tries: int = TRIES) -> float:
    """The fastest of ``tries`` runs of ``run(argument)``, in seconds."""
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        run(argument)
        best = min(best, time.perf_counter() - started)
    return best


def assert_linear(run: Callable[[T], object], make: Callable[[int], T], size: int, factor: int = 16) -> None:
    """``run(make(size * factor))`` takes less than ``factor ** 1.5`` times ``run(make(size))``.

    The large size stops at its first run under the bound: a quadratic ``run`` fails after
    ``TRIES`` slow runs, never waits for more.
    """
    small = fastest(run, make(size))
    large_input, bound = make(size * factor), factor ** 1.5
    times = []
    for _ in range(TRIES):
        times.append(fastest(run, large_input, tries=1))
        if times[-1] < bound * small:
            return
    raise AssertionError(f"{factor}× the input took {min(times) / small:.0f}× as long ({small:.4f} s → "
                         f"{min(times):.4f} s); linear is about {factor}×, quadratic {factor ** 2}×")
