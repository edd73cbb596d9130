"""The one table of parallelism modes: what each is, what it can use, why it serialises.

blackbox_exporter names each prober once in one table; so do we. The runner's execution
environments (``exporter.runner.pools.POOLS``), the command line's help, the configuration's check,
the free-core rule and the verdicts all read this table (a test holds ``POOLS`` to its
names). It lives with the runner, the lowest layer, because the runner keys its pools by
these names inside any interpreter under test: standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Mode:
    """One way of running N workers."""

    name: str
    description: str  # one line for ``probe --help``
    # Why workers that left cores idle took turns (the GIL is named instead for threads of a
    # build that has it enabled: ``shares_gil``).
    turns: str
    shares_gil: bool = False
    # The cores the mode can use by design (one event loop: 1); None: as many as workers.
    max_cores: Optional[float] = None
    needs: str = ""  # what it needs beyond any CPython >= 3.10

    def serialisation_cause(self, gil_enabled: bool) -> str:
        return "GIL enabled" if self.shares_gil and gil_enabled else self.turns


SEQUENTIAL, THREADS, PROCESSES, ASYNCIO, SUBINTERPRETERS = (
    "sequential", "threads", "processes", "asyncio", "subinterpreters")
ALL_MODES: dict[str, Mode] = {mode.name: mode for mode in (
    Mode(SEQUENTIAL, "one unit in one worker thread, alone: the reference for the rate", turns=""),
    Mode(THREADS, "N threads in one interpreter (one core under the GIL)", shares_gil=True,
         turns="the threads took turns (a lock, or C code that holds one) while the GIL was off"),
    Mode(PROCESSES, "N worker processes (--start-method)",
         turns="the workers took turns (a lock or another resource they share)"),
    Mode(ASYNCIO, "N tasks on one event loop (one core by design)", turns="one event loop", max_cores=1.0),
    Mode(SUBINTERPRETERS, "N PEP 734 interpreters, one thread each",
         turns="the subinterpreters took turns (a lock they share, or a shared GIL)",
         needs="CPython 3.14+, or 3.13 with the backports-interpreters package"),
)}
MODES: tuple[str, ...] = tuple(ALL_MODES)


def max_cores(mode: str) -> Optional[float]:
    """The cores a mode can use by design, or None (as many as its workers)."""
    return ALL_MODES[mode].max_cores if mode in ALL_MODES else None
