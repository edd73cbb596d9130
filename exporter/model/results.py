"""The probe's vocabulary: what to measure, what came back, and why a step failed.

Data types only, with no execution code: configuration, the collector, the report and the
web layer import these without loading the probe machinery (subprocess, the runner).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Union

from exporter.stats import measurement

from exporter.runner.modes import SEQUENTIAL

# memory: the probe's process tree reached probe.memory_limit (the kernel killed a process
# of it, or an allocation failed).
FAILURE_REASONS = ("error", "crash", "timeout", "interpreter", "memory")

# The most workers a step has: a config asks for at most this many (probe.workers), and a
# results document that claims more is refused. Beyond it a probe measures the scheduler, not
# the interpreter.
MAX_WORKERS = 256

# probe.nice: a nice value 0..19, or "idle" for the SCHED_IDLE policy.
Nice = Union[int, str]
SCHED_IDLE = "idle"


@dataclass(frozen=True)
class Interpreter:
    """An interpreter to probe: a label for the metrics, a path and extra environment."""

    name: str
    path: str
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeSpec:
    """What to measure for one workload. Its defaults are the configuration's too
    (exporter/config/settings.py ``ProbeConfig`` reads them here)."""

    workload: str
    modes: Sequence[str]
    workers: Sequence[int]
    unit_seconds: float = 0.3  # units under ~0.3 s are dominated by noise on small VMs
    repeats: int = 3
    timeout_seconds: float = 60.0  # the longest wait for the runner's next event
    start_method: Optional[str] = None
    # A fixed unit size instead of calibrating, so different interpreters do equal work.
    ops_per_unit: Optional[int] = None
    # A step runs at least ``repeats`` rounds, then more until its speedup's 95 % interval
    # is within ``precision`` (relative half-width), ``max_repeats`` or its time budget. On
    # an idle 2-core host three 0.3 s pairs reach ±5 % and the daemon's default round
    # (2 workloads, 3 modes) takes about 15 s, 5 % of the 5-minute interval.
    precision: float = 0.05
    max_repeats: int = 10
    step_budget_seconds: float = 5.0
    nice: Nice = 0
    # Directories appended to the runner's sys.path for package.module:function workloads.
    workload_path: Sequence[str] = ()
    # The whole probe's wall-clock limit; None: timeout x (steps + 1), see deadline_seconds().
    deadline: Optional[float] = None
    # Wait up to this long before each parallel step for enough free cores (probe --wait-quiet).
    wait_quiet_seconds: float = 0.0
    # The whole probe tree's memory limit in bytes (config.ProbeConfig); None: no limit.
    memory_limit_bytes: Optional[int] = None

    def deadline_seconds(self) -> float:
        """Wall-clock limit of the whole probe: events must not keep a runaway alive."""
        if self.deadline is not None:
            return self.deadline
        waits = self.wait_quiet_seconds * (len(self.steps()) - 1)
        return self.timeout_seconds * (len(self.steps()) + 1) + waits  # +1: start-up and calibration

    def steps(self) -> list[tuple[str, int]]:
        """Sequential (the baseline) first, then every other mode at every worker count."""
        parallel = [(m, n) for m in self.modes if m != SEQUENTIAL for n in self.workers]
        return [(SEQUENTIAL, 1)] + parallel


class StepKey(NamedTuple):
    """Which step: the labels of every per-step series, the history's and the document's key."""

    interpreter: str
    workload: str
    mode: str
    workers: int

    @property
    def labels(self) -> list[str]:
        """Label values in the order of the per-step families' labels."""
        return [self.interpreter, self.workload, self.mode, str(self.workers)]

    @property
    def step(self) -> tuple[str, str, int]:
        """The step whatever the interpreter: what ``compare`` matches across two files."""
        return (self.workload, self.mode, self.workers)


def other_share(summary: measurement.Summary) -> float:
    """Share of a step's busy CPU time that other processes used. Host-wide, not per CPU: the
    kernel's per-CPU counters cannot tell whose a CPU's busy time was, so the report's bars and
    the chart draw this same part of every CPU as other load."""
    busy = sum(summary.core_utilisation)
    if not summary.interference_cores or busy <= 0:
        return 0.0
    return min(1.0, summary.interference_cores / busy)


def identity_text(identity: Mapping[str, Any]) -> str:
    """``cpython 3.13.5, free-threaded, GIL disabled`` from an Identity's fields (or an
    interpreter of the JSON document): how every output describes an interpreter."""
    build = "free-threaded" if identity.get("free_threaded_build") else "GIL build"
    gil = "GIL enabled" if identity.get("gil_enabled") else "GIL disabled"
    return f"{identity.get('implementation', '')} {identity['version']}, {build}, {gil}"


def interpreter_label(name: str, identity: Optional[Mapping[str, Any]], path: str = "") -> str:
    """``cpython-3.13t: cpython 3.13.5, free-threaded, GIL disabled``, or the path when the
    interpreter never reported an identity."""
    if not identity or identity.get("version") is None:
        return f"{name} ({path or 'no identity reported'})"
    return f"{name}: {identity_text(identity)}"


@dataclass(frozen=True)
class Identity:
    version: str
    implementation: str
    executable: str
    free_threaded_build: bool
    gil_enabled: bool
    start_methods: Sequence[str]
    subinterpreters_unavailable: Optional[str]
    gil_requested: bool = False  # PYTHON_GIL=1 in the runner's environment: the GIL on purpose


@dataclass
class StepResult:
    """The outcome of one (mode, workers) step; ``summary`` is set when it succeeded."""

    workload: str
    mode: str
    workers: int
    success: bool = False
    available: bool = True
    reason: Optional[str] = None
    message: str = ""
    duration_seconds: float = 0.0
    summary: Optional[measurement.Summary] = None
    windows: list[measurement.Window] = field(default_factory=list)
    # The runner's last lines on stderr when the step failed: its debug log, as blackbox's.
    log: list[str] = field(default_factory=list)
    # Why the runner measured the step again from scratch (an implausible first attempt).
    remeasured_reason: Optional[str] = None
    # Seconds spent waiting for a quiet host before the step (probe --wait-quiet).
    waited_seconds: float = 0.0
    # The untimed warm-up window of every worker before the first timed one: (start, end).
    warmup: Optional[tuple[float, float]] = None

    def fail(self, reason: str, message: str) -> None:
        self.success, self.reason, self.message = False, reason, message


@dataclass
class WorkloadReport:
    """Everything one runner child reported for one workload on one interpreter."""

    interpreter: Interpreter
    spec: ProbeSpec
    identity: Optional[Identity] = None
    ops_per_unit: int = 0
    op_seconds: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    duration_seconds: float = 0.0

    def step(self, mode: str, workers: int) -> StepResult:
        return next(s for s in self.steps if s.mode == mode and s.workers == workers)

    @property
    def sequential(self) -> StepResult:
        """The step every other is measured against (its rate's reference)."""
        return self.step(SEQUENTIAL, 1)

    def key(self, step: StepResult) -> StepKey:
        return StepKey(self.interpreter.name, step.workload, step.mode, step.workers)

    @property
    def label(self) -> str:
        identity = dataclasses.asdict(self.identity) if self.identity is not None else None
        return interpreter_label(self.interpreter.name, identity, self.interpreter.path)

    @property
    def success(self) -> bool:
        return all(s.success for s in self.steps if s.available)


@dataclass(frozen=True)
class ImportCheck:
    """Whether importing ``module`` re-enabled the GIL of a free-threaded interpreter."""

    interpreter: str
    module: str
    gil_enabled: Optional[bool]  # None: the import failed or the runner did not answer
    error: str = ""
