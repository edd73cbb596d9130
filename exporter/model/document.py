"""The results document: ``probe --json``, ``/api/v1/results`` and ``compare``'s input, typed.

One set of dataclasses is the document. ``build`` makes it from probe results (``serve``
adds the verdicts, schedule and history of ``/api/v1/results``: ``ServedResults``),
``to_json`` writes it, ``parse`` reads one back (a file from an older version too: missing
fields take their defaults) and names the first field that is not what it should be, and
``json_schema`` derives the published JSON Schema (docs/results.schema.json) from the same
classes — so the report, the status page, the API, push and ``compare`` cannot disagree
about a field.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

from exporter.host.cpus import HostCpus
from exporter.model import typedjson
from exporter.model.results import MAX_WORKERS, StepKey, StepResult, WorkloadReport
from exporter.model.schedule import Schedule
from exporter.model.typedjson import Bounds
from exporter.model.verdicts import parallelism, step_verdicts, workload_verdict
from exporter.runner.modes import SEQUENTIAL
from exporter.stats.measurement import BASELINE, Accounting

VERSION = 2  # 1: before the fields of independent pairs (pairs, conclusive, ...); read with their defaults


class DocumentError(ValueError):
    """A document that is not a results document: one line naming the field."""


@dataclass
class Host:
    logical_cpus: int
    physical_cpus: Optional[int]
    affinity_cpus: int
    cgroup_quota_cpus: Optional[float]
    usable_cpus: float


@dataclass
class InterpreterInfo:
    """An interpreter, with its identity once its runner reported one."""

    name: str
    path: str = ""
    version: Optional[str] = None
    implementation: Optional[str] = None
    executable: Optional[str] = None
    free_threaded_build: Optional[bool] = None
    gil_enabled: Optional[bool] = None
    gil_requested: bool = False
    start_methods: list[str] = field(default_factory=list)
    subinterpreters_unavailable: Optional[str] = None

    def identity(self) -> dict[str, Any]:
        """The identity fields that were reported (empty when none was)."""
        return {} if self.version is None else dataclasses.asdict(self)


@dataclass
class Step:
    """One (interpreter, workload, mode, workers) step. A withheld speedup (unsteady, or
    "cannot tell") has ``speedup``, ``speedup_ci``, ``efficiency`` and ``serial_fraction`` null."""

    interpreter: str
    workload: str
    mode: str
    workers: int
    success: bool
    available: bool = True
    reason: Optional[str] = None
    message: Optional[str] = ""
    start_method: Optional[str] = None
    log: list[str] = field(default_factory=list)
    duration_seconds: float = 0.0
    wall_seconds: Optional[float] = None
    speedup: Optional[float] = None
    speedup_ci: Optional[list[float]] = None
    pair_speedups: Optional[list[float]] = None
    pairs: int = 0
    speedup_spread: Optional[float] = None
    throughput_units_per_second: Optional[float] = None
    throughput_ops_per_second: Optional[float] = None
    efficiency: Optional[float] = None
    serial_fraction: Optional[float] = None
    cores_used: Optional[float] = None
    cpu_rate_ratio: Optional[float] = None
    cpu_rate_ci: Optional[list[float]] = None
    pair_cpu_rates: list[float] = field(default_factory=list)
    # The kernel's per-thread accounting (CPU-bound steps, Linux): whatever the host's load.
    runnable_workers: Optional[float] = None  # workers the runtime let run at once
    runnable_workers_ci: Optional[list[float]] = None
    on_cpu_workers: Optional[float] = None  # workers on a CPU at once: what the host gave them
    idle_speedup: Optional[float] = None  # what the step would show on an idle host
    idle_speedup_ci: Optional[list[float]] = None
    pair_idle_speedups: list[float] = field(default_factory=list)
    # parallel, serialised, contention or uncertain: what the runtime did (null: nothing can say)
    parallelism: Optional[str] = None
    interference_cores: Optional[float] = None
    steal_ratio: Optional[float] = None
    free_cores: Optional[float] = None
    unsteady: bool = False
    unsteady_reason: Optional[str] = None
    conclusive: Optional[bool] = None  # None: a document from before "cannot tell" existed
    inconclusive_reason: Optional[str] = None
    remeasured_reason: Optional[str] = None
    waited_seconds: float = 0.0
    warmup_seconds: Optional[float] = None
    core_utilisation: list[float] = field(default_factory=list)
    startup_seconds: Optional[float] = None
    repeats: list[float] = field(default_factory=list)  # wall seconds of the parallel windows

    @property
    def key(self) -> StepKey:
        return StepKey(self.interpreter, self.workload, self.mode, self.workers)

    def interval(self) -> tuple[Optional[tuple[float, float]], str]:
        """The speedup's interval and what it is (see ``speedup_interval``)."""
        return speedup_interval(self.speedup, self.speedup_ci, self.speedup_spread)


def speedup_interval(speedup: Optional[float], ci: Optional[Sequence[float]],
                     spread: Optional[float]) -> tuple[Optional[tuple[float, float]], str]:
    """A step's interval and what it is: the precision work's confidence interval, or else the
    median ± half the repeats' relative spread (what documents before version 2 carry).
    The status page and ``compare`` read intervals through this one function."""
    if speedup is None:
        return None, ""
    if ci:
        return (float(ci[0]), float(ci[1])), "confidence interval"
    if spread is None:
        return None, ""
    return (speedup * (1 - spread / 2), speedup * (1 + spread / 2)), "repeats' spread"


@dataclass
class Results:
    host: Host
    interpreters: list[InterpreterInfo]
    results: list[Step]
    interpreter: Optional[InterpreterInfo] = None  # the first of ``interpreters``
    nice: Union[int, str] = 0
    verdicts: list[str] = field(default_factory=list)
    version: int = 1  # a document without a version is from before version 2

    def interpreter_named(self, name: str) -> Optional[InterpreterInfo]:
        return next((i for i in self.interpreters if i.name == name), None)


# --- what /api/v1/results adds ---------------------------------------------------------------


@dataclass
class ServedStep(Step):
    """A step of ``/api/v1/results``, with what its figures say in words (None: sequential)."""

    verdict: Optional[str] = None


@dataclass
class WorkloadVerdict:
    interpreter: str
    workload: str
    verdict: str


@dataclass
class ExporterInfo:
    version: str


@dataclass
class HistorySeries:
    """One step's last rounds: [Unix time, speedup or null] each, oldest first, and each
    round's outcome: ok (the measured speedup), estimated (the host was too busy for the wall
    clock: the figure is the idle-host speedup from the kernel's accounting), busy (no figure
    could tell: a busy host or an unsteady figure) or failed. Files written before outcomes
    existed have none: there a null speedup is a failure."""

    interpreter: str
    workload: str
    mode: str
    workers: int
    points: list[list[Optional[float]]]
    outcomes: list[str] = field(default_factory=list)


@dataclass
class HistoryIdentity:
    """From ``since`` (Unix time of its first round) the interpreter ``interpreter`` ran as
    ``identity`` (``cpython 3.13.5, free-threaded, GIL disabled``): where it changes, an upgrade
    or a configuration change happened between two rounds."""

    interpreter: str
    since: float
    identity: str


@dataclass
class HistoryFailure:
    timestamp: float
    interpreter: str
    workload: str
    mode: str
    workers: int
    reason: str
    message: str
    log: list[str]


@dataclass
class HistoryDocument:
    """The bounded history of rounds (``--history.limit``); also the ``--history.file`` format."""

    version: int
    limit: int
    steps: list[HistorySeries]
    failures: list[HistoryFailure]  # newest first
    identities: list[HistoryIdentity] = field(default_factory=list)  # oldest first


@dataclass
class ServedResults(Results):
    """``/api/v1/results``: the last round's document plus what ``serve`` knows besides."""

    results: list[ServedStep] = field(default_factory=list)  # type: ignore[assignment]
    workload_verdicts: list[WorkloadVerdict] = field(default_factory=list)
    exporter: Optional[ExporterInfo] = None
    schedule: Optional[Schedule] = None
    history: Optional[HistoryDocument] = None
    services: Optional[dict[str, Any]] = None  # /api/v1/services' document, when services are watched


# --- building --------------------------------------------------------------------------


def step_fields(step: StepResult, report: WorkloadReport, usable: float) -> dict[str, Any]:
    """A step's fields in the document. An unsteady or inconclusive step's speedup is
    withheld: its pairs and CPU-time figures stay."""
    s = step.summary
    shown = s if s is not None and s.shown else None
    return dict(
        interpreter=report.interpreter.name, workload=step.workload, mode=step.mode, workers=step.workers,
        start_method=report.spec.start_method if step.mode == "processes" else None,
        success=step.success, available=step.available, reason=step.reason, message=step.message,
        log=list(step.log), duration_seconds=step.duration_seconds,
        wall_seconds=s.wall_seconds if s else None,
        speedup=shown.speedup if shown else None,
        speedup_ci=list(shown.speedup_ci) if shown and shown.speedup_ci else None,
        pair_speedups=list(s.pair_speedups) if s else [], pairs=s.pairs if s else 0,
        speedup_spread=s.speedup_spread if s else None,
        throughput_units_per_second=s.throughput_units_per_second if s else None,
        throughput_ops_per_second=s.throughput_ops_per_second if s else None,
        efficiency=shown.efficiency if shown else None, serial_fraction=shown.serial_fraction if shown else None,
        cores_used=s.cores_used if s else None, cpu_rate_ratio=s.cpu_rate_ratio if s else None,
        cpu_rate_ci=list(s.rate_ci) if s and s.rate_ci else None, pair_cpu_rates=list(s.pair_rates) if s else [],
        **accounting_fields(s.accounting if s else None),
        parallelism=parallelism(step, report, usable) if step.mode != SEQUENTIAL else None,
        interference_cores=s.interference_cores if s else None, steal_ratio=s.steal_ratio if s else None,
        free_cores=s.free_cores if s else None,
        unsteady=s.unsteady if s else False, unsteady_reason=s.unsteady_reason if s else None,
        conclusive=s.conclusive if s else None, inconclusive_reason=s.inconclusive_reason if s else None,
        remeasured_reason=step.remeasured_reason, waited_seconds=step.waited_seconds,
        warmup_seconds=step.warmup[1] - step.warmup[0] if step.warmup else None,
        core_utilisation=list(s.core_utilisation) if s else [],
        startup_seconds=s.startup_seconds if s else None,
        repeats=[w.wall_seconds for w in step.windows if w.role != BASELINE],
    )


def accounting_fields(a: Optional[Accounting]) -> dict[str, Any]:
    if a is None:
        return {}
    return dict(runnable_workers=a.runnable, runnable_workers_ci=list(a.runnable_ci) if a.runnable_ci else None,
                on_cpu_workers=a.on_cpu, idle_speedup=a.idle_speedup,
                idle_speedup_ci=list(a.idle_speedup_ci) if a.idle_speedup_ci else None,
                pair_idle_speedups=list(a.pair_idle_speedups))


def interpreter_of(report: WorkloadReport) -> InterpreterInfo:
    identity = dataclasses.asdict(report.identity) if report.identity is not None else {}
    identity["start_methods"] = list(identity.get("start_methods", []))
    return InterpreterInfo(name=report.interpreter.name, path=report.interpreter.path, **identity)


def build(reports: Sequence[WorkloadReport], host: HostCpus) -> Results:
    """The document of one run: interpreters, host and a flat list of every step."""
    return _build(reports, host, served=False)


def build_served(reports: Sequence[WorkloadReport], host: HostCpus, version: str, schedule: Schedule,
                 history: HistoryDocument, services: Optional[dict[str, Any]] = None) -> ServedResults:
    """``/api/v1/results``: ``build``'s document with a verdict per step and per workload."""
    served = _build(reports, host, served=True)
    assert isinstance(served, ServedResults)
    served.workload_verdicts = [WorkloadVerdict(r.interpreter.name, r.spec.workload, text)
                                for r, text in zip(reports, served.verdicts)]
    served.exporter, served.schedule, served.history, served.services = ExporterInfo(version), schedule, history, services
    return served


def _build(reports: Sequence[WorkloadReport], host: HostCpus, served: bool) -> Results:
    """Each step's verdict is said once, for its step and for its workload's line."""
    interpreters: dict[str, InterpreterInfo] = {}
    for report in reports:
        if report.identity is not None or report.interpreter.name not in interpreters:
            interpreters[report.interpreter.name] = interpreter_of(report)
    listed = list(interpreters.values())
    said = [step_verdicts(r, host.usable) for r in reports]
    steps: list[Any] = []
    for report, texts in zip(reports, said):
        for step in report.steps:
            fields = step_fields(step, report, host.usable)
            steps.append(ServedStep(**fields, verdict=texts.get((step.mode, step.workers))) if served else Step(**fields))
    return (ServedResults if served else Results)(
        host=Host(host.logical, host.physical, host.affinity, host.quota, host.usable),
        interpreters=listed, interpreter=listed[0] if listed else None,
        nice=reports[0].spec.nice if reports else 0, results=steps,
        verdicts=[workload_verdict(r, texts) for r, texts in zip(reports, said)], version=VERSION)


def to_json(document: Results) -> dict[str, Any]:
    return dataclasses.asdict(document)


# --- reading -----------------------------------------------------------------------------

FIRST_VERSION = 1  # every version since has only added fields: a reader of VERSION reads them all
NON_NEGATIVE, POSITIVE, AT_LEAST_ONE = Bounds(minimum=0), Bounds(above=0), Bounds(minimum=1)
# What each number of the document may be (by field name, in every class; "Class.field" for
# one class's): what the writer can produce (exporter/stats/measurement.py), so a document
# outside it was not written by a probe. serial_fraction (negative above linear speedup),
# steal_ratio (the kernel's steal counter can step back) and timestamps are left free.
FIELD_BOUNDS = {
    "Results.version": Bounds(minimum=FIRST_VERSION, maximum=VERSION),
    "logical_cpus": AT_LEAST_ONE, "physical_cpus": AT_LEAST_ONE, "affinity_cpus": AT_LEAST_ONE,
    "cgroup_quota_cpus": POSITIVE, "usable_cpus": POSITIVE,
    "workers": Bounds(minimum=1, maximum=MAX_WORKERS),
    "speedup": POSITIVE, "speedup_ci": Bounds(above=0, interval=True), "pair_speedups": POSITIVE,
    "idle_speedup": POSITIVE, "idle_speedup_ci": Bounds(above=0, interval=True), "pair_idle_speedups": POSITIVE,
    "cpu_rate_ratio": NON_NEGATIVE, "cpu_rate_ci": Bounds(minimum=0, interval=True), "pair_cpu_rates": POSITIVE,
    "runnable_workers": NON_NEGATIVE, "runnable_workers_ci": Bounds(interval=True),  # mean ± t·se: may dip below 0
    "on_cpu_workers": NON_NEGATIVE, "cores_used": NON_NEGATIVE, "efficiency": NON_NEGATIVE,
    "core_utilisation": Bounds(minimum=0, maximum=1), "interference_cores": NON_NEGATIVE, "free_cores": NON_NEGATIVE,
    "speedup_spread": NON_NEGATIVE, "pairs": NON_NEGATIVE,
    "throughput_units_per_second": NON_NEGATIVE, "throughput_ops_per_second": NON_NEGATIVE,
    "duration_seconds": NON_NEGATIVE, "wall_seconds": NON_NEGATIVE, "waited_seconds": NON_NEGATIVE,
    "warmup_seconds": NON_NEGATIVE, "startup_seconds": NON_NEGATIVE, "repeats": NON_NEGATIVE,
}
# A figure and the pairs it summarises: the writer's figure is their geometric mean
# (measurement.ratio_estimate); the idle-host estimate is capped at the cores the step could
# use, so it may be below its pairs' mean, never above.
PAIRED_FIGURES = (("speedup", "pair_speedups", False), ("cpu_rate_ratio", "pair_cpu_rates", False),
                  ("idle_speedup", "pair_idle_speedups", True))
# How far a figure may be from its pairs' geometric mean. Written, they agree to rounding; 5 %
# leaves room for a tool that rounds them, and is half of compare's default threshold, so the
# figure and its pairs cannot tell two stories about one regression.
PAIRS_AGREEMENT = 0.05
TYPES = typedjson.Types(FIELD_BOUNDS)


def parse(data: Any) -> Results:
    """A results document from decoded JSON; DocumentError (one line, naming the field) if not.

    Versions FIRST_VERSION to VERSION are read (missing fields at their defaults); the
    version is checked first, as a newer writer's fields may mean something else.
    """
    if not isinstance(data, dict) or "results" not in data:
        raise DocumentError("not a probe --json or /api/v1/results document (expected an object with results)")
    version = data.get("version", FIRST_VERSION)
    try:
        TYPES.reader(int, FIELD_BOUNDS["Results.version"])(version)
    except typedjson.Invalid:
        raise DocumentError(f"version: this exporter reads versions {FIRST_VERSION} to {VERSION}, "
                            f"got {typedjson.show(version)}") from None
    try:
        document: Results = TYPES.read(Results, data)
        for i, step in enumerate(document.results):
            try:
                check_pairs(step)
            except typedjson.Invalid as exc:
                raise exc.inside(f".results[{i}]") from None
    except typedjson.Invalid as exc:
        raise DocumentError(str(exc)) from None
    return document


def check_pairs(step: Step) -> None:
    """Each figure agrees with the pairs it summarises (``PAIRED_FIGURES``), or Invalid."""
    for figure_name, pairs_name, capped in PAIRED_FIGURES:
        figure, pairs = getattr(step, figure_name), getattr(step, pairs_name)
        if figure is None or not pairs:
            continue
        mean = statistics.geometric_mean(pairs)  # the pairs are > 0: their bounds say so
        if figure > mean * (1 + PAIRS_AGREEMENT) or (not capped and figure < mean / (1 + PAIRS_AGREEMENT)):
            raise typedjson.Invalid(f"{figure:g} is not what {pairs_name} say: their geometric mean is {mean:.4g}",
                                    f".{figure_name}")


# --- the schema --------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the document, derived from these classes (docs/results.schema.json)."""
    schema = TYPES.definition(Results)
    served = (ServedResults, ServedStep, WorkloadVerdict, ExporterInfo, Schedule, HistoryDocument, HistorySeries,
              HistoryFailure, HistoryIdentity)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "python-parallelism-exporter results (probe --json; /api/v1/results adds $defs/ServedResults)",
            **schema, "$defs": {cls.__name__: TYPES.definition(cls) for cls in (Host, InterpreterInfo, Step, *served)}}


if __name__ == "__main__":  # python -m exporter.model.document > docs/results.schema.json
    import json
    import sys

    json.dump(json_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
