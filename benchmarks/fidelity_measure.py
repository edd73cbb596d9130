"""The measuring half of fidelity.py: probe runs, paired raw timings, per-core samples, figures.

Every probe goes through ``exporter.probe.run.run_workload`` exactly as the exporter calls it;
the only change is a fixed ops count per workload, so that runs and interpreters do equal
work and their unit times can be compared directly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional, Sequence

import procstat_sampler
from exporter.probe import run as probe
from exporter.model.results import Interpreter, ProbeSpec, StepResult, WorkloadReport

MODES = ("sequential", "threads", "processes")
PER_CORE_WORKLOAD = "pure_python"
PER_CORE_REPEATS = 5  # more windows than the default 3: each is one agreement sample

# A fresh child times the same operation the way anyone would by hand; the loop lives in a
# function, as the runner's does, so both use fast local lookups.
RAW_TIMING = """\
import json, sys, time
sys.path.append({parent!r})
from exporter.runner.workloads import resolve

def unit(operation, ops):
    start = time.perf_counter()
    for _ in range(ops):
        operation()
    return time.perf_counter() - start

operation = resolve({workload!r}).operation
operation()  # warm up, as the runner does before its timed window
print(json.dumps([unit(operation, {ops}) for _ in range({repeats})]))
"""

BUILD_QUERY = """\
import json, sys, sysconfig
gil = getattr(sys, "_is_gil_enabled", lambda: True)()
print(json.dumps({"version": sys.version.split()[0], "gil_enabled": gil,
                  "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED"))}))
"""

STARTED = time.monotonic()
Key = tuple[str, str]  # (interpreter name, workload)


def progress(message: str) -> None:
    """Progress goes to stderr so stdout carries only the report."""
    print(f"[{time.monotonic() - STARTED:5.0f}s] {message}", file=sys.stderr, flush=True)


# --- settings and interpreters ----------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The probe settings every run shares; repeats, timeout and start method are the exporter's."""

    runs: int
    unit: float
    workers: int
    repeats: int
    timeout: float
    start_method: str

    def spec(self, workload: str, modes: Sequence[str] = MODES, repeats: int = 0) -> ProbeSpec:
        return ProbeSpec(workload, modes, [self.workers], self.unit, repeats or self.repeats,
                         self.timeout, self.start_method)


@dataclass(frozen=True)
class Build:
    version: str
    free_threaded: bool
    gil_enabled: bool


def describe_build(interpreter: Interpreter) -> Build:
    """Version and build of an interpreter, asked in a child; raises RuntimeError if it cannot run."""
    try:
        done = subprocess.run([interpreter.path, "-c", BUILD_QUERY], capture_output=True, text=True,
                              env=dict(os.environ, **interpreter.env), timeout=30, check=True)
        return Build(**json.loads(done.stdout))
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise RuntimeError(f"cannot run interpreter {interpreter.name} ({interpreter.path}): {exc}") from exc


# --- probing ----------------------------------------------------------------------------


def probe_fixed(interpreter: Interpreter, spec: ProbeSpec, ops: int) -> WorkloadReport:
    """run_workload with a fixed ``ops_per_unit``, so every run and interpreter does equal work."""
    return probe.run_workload(interpreter, dataclasses.replace(spec, ops_per_unit=ops))


def calibrate(interpreter: Interpreter, workload: str, settings: Settings) -> int:
    """Operations per unit, calibrated once by the probe itself on the reference interpreter."""
    report = probe.run_workload(interpreter, settings.spec(workload, ("sequential",), 1))
    if not report.ops_per_unit:
        reasons = "; ".join(s.message for s in report.steps if s.message)
        raise RuntimeError(f"calibrating {workload} on {interpreter.name} failed: {reasons}")
    return report.ops_per_unit


def raw_unit_seconds(interpreter: Interpreter, workload: str, ops: int, settings: Settings) -> Optional[float]:
    """Median of ``repeats`` hand-timed units in a fresh child; None (and a note) if it fails."""
    code = RAW_TIMING.format(parent=probe.PACKAGE_PARENT, workload=workload, ops=ops,
                             repeats=settings.repeats)
    try:
        # A session of its own, like the runner's, so both get the same scheduling treatment
        # (each session is its own autogroup on Linux) and only the harness differs.
        done = subprocess.run([interpreter.path, "-c", code], capture_output=True, text=True,
                              env=dict(os.environ, **interpreter.env), timeout=settings.timeout,
                              check=True, start_new_session=True)
        return statistics.median(json.loads(done.stdout))
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        progress(f"raw timing of {workload} on {interpreter.name} failed: {exc}")
        return None


@dataclass(frozen=True)
class Run:
    """One probe of one workload on one interpreter, and the raw timing paired with it."""

    report: WorkloadReport
    raw_seconds: Optional[float]


def one_run(interpreter: Interpreter, workload: str, ops: int, settings: Settings, raw_first: bool) -> Run:
    raw = raw_unit_seconds(interpreter, workload, ops, settings) if raw_first else None
    report = probe_fixed(interpreter, settings.spec(workload), ops)
    if not raw_first:
        raw = raw_unit_seconds(interpreter, workload, ops, settings)
    for step in report.steps:
        if not step.success:
            progress(f"  {interpreter.name} {workload} {step.mode}: failed ({step.reason}: {step.message})")
    return Run(report, raw)


def all_runs(interpreters: Sequence[Interpreter], ops: dict[str, int], settings: Settings) -> dict[Key, list[Run]]:
    """Every round probes every workload on every interpreter, so drift spreads over all of them."""
    runs: dict[Key, list[Run]] = defaultdict(list)
    for index in range(settings.runs):
        # Alternating the order (interpreters, and raw timing before/after the probe) every
        # round makes a slow drift land on both sides of each comparison alike.
        order = interpreters if index % 2 == 0 else list(reversed(interpreters))
        for workload, count in ops.items():
            for interpreter in order:
                progress(f"round {index + 1}/{settings.runs}: {workload} on {interpreter.name}")
                runs[(interpreter.name, workload)].append(
                    one_run(interpreter, workload, count, settings, raw_first=index % 2 == 0))
    return runs


# --- figures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    mean: float
    cv: Optional[float]  # stdev / mean; None with fewer than two values
    low: float
    high: float
    count: int


def spread(values: Sequence[float]) -> Optional[Spread]:
    if not values:
        return None
    mean = statistics.fmean(values)
    cv = statistics.stdev(values) / mean if len(values) > 1 and mean else None
    return Spread(mean, cv, min(values), max(values), len(values))


def succeeded(step: StepResult) -> bool:
    return step.success and step.summary is not None


def run_figure(report: WorkloadReport, mode: str, workers: int) -> Optional[float]:
    """Speedup of a parallel step; for the sequential step (speedup 1 by definition) ops/s."""
    step = report.step(mode, 1 if mode == "sequential" else workers)
    if not succeeded(step):
        return None
    assert step.summary is not None
    return step.summary.throughput_ops_per_second if mode == "sequential" else step.summary.speedup


def mode_spread(runs: Sequence[Run], mode: str, workers: int) -> Optional[Spread]:
    figures = [run_figure(r.report, mode, workers) for r in runs]
    return spread([f for f in figures if f is not None])


def sequential_seconds(report: WorkloadReport) -> Optional[float]:
    """The harness's unit time: median wall time of the sequential step's windows."""
    step = report.step("sequential", 1)
    return step.summary.wall_seconds if succeeded(step) and step.summary else None


@dataclass(frozen=True)
class Overhead:
    harness_seconds: float  # median over runs
    raw_seconds: float  # median over runs
    overhead: float  # median over interleaved pairs of harness/raw - 1
    low: float  # smallest and largest pair's harness/raw - 1
    high: float
    pairs: int


def overhead_of(runs: Sequence[Run]) -> Optional[Overhead]:
    """Harness vs raw unit time; the median pair ratio shrugs off one pair hit by a neighbour."""
    pairs = [(sequential_seconds(r.report), r.raw_seconds) for r in runs]
    valid = [(h, raw) for h, raw in pairs if h is not None and raw]
    if not valid:
        return None
    ratios = [h / raw for h, raw in valid]
    return Overhead(statistics.median(h for h, _ in valid), statistics.median(raw for _, raw in valid),
                    statistics.median(ratios) - 1, min(ratios) - 1, max(ratios) - 1, len(valid))


def median_sequential(runs: Sequence[Run]) -> Optional[float]:
    values = [s for s in (sequential_seconds(r.report) for r in runs) if s is not None]
    return statistics.median(values) if values else None


# --- per-core agreement -----------------------------------------------------------------


@dataclass(frozen=True)
class CoreAgreement:
    """One step's per-CPU busy share, as the probe reported it and as /proc/stat says."""

    mode: str
    windows: int
    harness: list[float]  # per CPU, median over windows
    independent: list[float]
    max_difference_pp: list[float]  # per CPU, worst window
    window_seconds: float  # median window, for the counters' resolution

    @property
    def tick_pp(self) -> float:
        """One USER_HZ tick as percentage points of a window: the finest difference visible."""
        return 100 / (os.sysconf("SC_CLK_TCK") * self.window_seconds)

    @property
    def worst_pp(self) -> float:
        return max(self.max_difference_pp)


def agreement(step: StepResult, samples: Sequence[procstat_sampler.Sample]) -> Optional[CoreAgreement]:
    """Compare each window's reported busy shares with /proc/stat bracketing the workers' stamps."""
    pairs = []
    for window in step.windows:
        bracket = procstat_sampler.bracketing(samples, min(window.starts), max(window.ends))
        if bracket is not None:
            pairs.append((list(window.core_utilisation), procstat_sampler.busy_between(*bracket)))
    if not pairs:
        return None
    harness = [statistics.median(cpu) for cpu in zip(*(h for h, _ in pairs))]
    independent = [statistics.median(cpu) for cpu in zip(*(i for _, i in pairs))]
    worst = [100 * max(abs(h[cpu] - i[cpu]) for h, i in pairs) for cpu in range(len(harness))]
    seconds = statistics.median(w.wall_seconds for w in step.windows)
    return CoreAgreement(step.mode, len(pairs), harness, independent, worst, seconds)


def per_core(interpreter: Interpreter, ops: int, settings: Settings) -> dict[str, Optional[CoreAgreement]]:
    """One probe with the sampler running; the sampler thread costs well under 1 % of a CPU."""
    spec = settings.spec(PER_CORE_WORKLOAD, repeats=PER_CORE_REPEATS)
    progress(f"per-core: {PER_CORE_WORKLOAD} on {interpreter.name}, {PER_CORE_REPEATS} windows per step")
    with procstat_sampler.Sampler() as sampler:
        report = probe_fixed(interpreter, spec, ops)
    return {mode: agreement(report.step(mode, workers), sampler.samples)
            for mode, workers in spec.steps()}
