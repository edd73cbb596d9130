"""The Prometheus collector: metric families from the last completed probe results.

Like client_python's own collectors, ``collect()`` only reads a snapshot that is already at
hand (swapped atomically by the daemon when a probe finishes) and never does probe work, so
a scrape is fast and never waits for a probe. The families themselves (names, help, labels:
the contract the dashboards and alert rules depend on) are declared in exporter/model/metrics.py.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Mapping, Optional

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.config import inputs
from exporter.config.settings import PER_CORE_SERIES_MAX_CPUS, Config
from exporter.host.cpus import HostCpus
from exporter.model.metrics import family  # every family's name, type, help and labels
from exporter.model.results import FAILURE_REASONS, SCHED_IDLE, Identity, ImportCheck, Nice, StepResult, WorkloadReport

SCHED_IDLE_NICE = 20  # pyparallel_probe_nice for the SCHED_IDLE policy: below every nice value
StepLabels = tuple[str, str, str, str]  # interpreter, workload, mode, workers: label values


def step_key(report: WorkloadReport, step: StepResult) -> StepLabels:
    return (report.interpreter.name, step.workload, step.mode, str(step.workers))


@dataclass(frozen=True)
class Snapshot:
    """Everything one scrape shows; replaced as a whole, never mutated."""

    host: HostCpus
    per_core_series: bool
    interval_seconds: float
    start_method: str
    reports: Mapping[tuple[str, str], WorkloadReport] = field(default_factory=dict)
    identities: Mapping[str, Identity] = field(default_factory=dict)
    last_success: Mapping[StepLabels, float] = field(default_factory=dict)
    failures: Mapping[tuple[StepLabels, str], int] = field(default_factory=dict)
    import_checks: Mapping[tuple[str, str], ImportCheck] = field(default_factory=dict)
    round_duration_seconds: Optional[float] = None
    duty_cycle_ratio: Optional[float] = None
    reload_successful: bool = True
    reload_timestamp: float = field(default_factory=time.time)


# The per-step families in the order they are exposed (exporter.model.metrics declares each).
STEP_FAMILIES = ("probe_success", "probe_duration_seconds", "speedup_ratio", "speedup_lower_ratio",
                 "speedup_upper_ratio", "speedup_unsteady", "step_conclusive", "speedup_pairs", "step_remeasured",
                 "speedup_spread_ratio", "efficiency_ratio", "serial_fraction_ratio", "throughput_units_per_second",
                 "cpu_cores_used", "cpu_rate_ratio", "interference_cores", "steal_ratio", "core_utilisation_ratio")


def step_families(snapshot: Snapshot) -> Iterator[Metric]:
    """Per-(interpreter, workload, mode, workers) results and health.

    An unsteady step (a speedup the host's cores cannot explain) or an inconclusive one (too
    few cores were free for it: "cannot tell") keeps its success and its CPU-time figures but
    exports no speedup, interval, efficiency or serial fraction — never a low figure.
    """
    (success, duration, speedup, lower, upper, unsteady, conclusive, pairs, remeasured, spread, efficiency, serial,
     throughput, cores, rate, interference, steal, per_core) = (family(name) for name in STEP_FAMILIES)
    for report in snapshot.reports.values():
        for step in report.steps:
            if not step.available:
                continue
            key = list(step_key(report, step))
            success.add_metric(key, 1.0 if step.success else 0.0)
            duration.add_metric(key, step.duration_seconds)
            summary = step.summary
            if summary is None:
                continue
            unsteady.add_metric(key, 1.0 if summary.unsteady else 0.0)
            if step.mode != "sequential":
                conclusive.add_metric(key, 1.0 if summary.conclusive else 0.0)
                pairs.add_metric(key, summary.pairs)
                remeasured.add_metric(key, 1.0 if step.remeasured_reason else 0.0)
            if summary.shown:
                speedup.add_metric(key, summary.speedup)
                efficiency.add_metric(key, summary.efficiency)
                if summary.serial_fraction is not None:
                    serial.add_metric(key, summary.serial_fraction)
                if summary.speedup_ci is not None:
                    lower.add_metric(key, summary.speedup_ci[0])
                    upper.add_metric(key, summary.speedup_ci[1])
            spread.add_metric(key, summary.speedup_spread)
            throughput.add_metric(key, summary.throughput_units_per_second)
            cores.add_metric(key, summary.cores_used)
            if summary.cpu_rate_ratio is not None:
                rate.add_metric(key, summary.cpu_rate_ratio)
            if summary.interference_cores is not None:
                interference.add_metric(key, summary.interference_cores)
            if summary.steal_ratio is not None:
                steal.add_metric(key, summary.steal_ratio)
            if snapshot.per_core_series:
                for cpu, busy in enumerate(summary.core_utilisation):
                    per_core.add_metric(key + [str(cpu)], busy)
    yield from (success, duration, speedup, lower, upper, unsteady, conclusive, pairs, remeasured, spread,
                efficiency, serial, throughput, cores, rate, interference, steal)
    if snapshot.per_core_series:
        yield per_core


def nice_number(nice: Nice) -> int:
    """The exported value of probe.nice: the nice value, SCHED_IDLE as 20."""
    return SCHED_IDLE_NICE if nice == SCHED_IDLE else int(nice)


def health_families(snapshot: Snapshot) -> Iterator[Metric]:
    last_success = family("probe_last_success_timestamp_seconds")
    for key, timestamp in snapshot.last_success.items():
        last_success.add_metric(list(key), timestamp)
    yield last_success
    failures = family("probe_failures")
    for (key, reason), count in snapshot.failures.items():
        failures.add_metric(list(key) + [reason], count)
    yield failures
    startup = family("worker_startup_seconds")
    for labels, seconds in startup_medians(snapshot).items():
        startup.add_metric(list(labels), seconds)
    yield startup


def startup_medians(snapshot: Snapshot) -> dict[tuple[str, str, str], float]:
    values: dict[tuple[str, str, str], list[float]] = {}
    for report in snapshot.reports.values():
        for step in report.steps:
            if step.summary is not None and step.mode != "sequential":
                labels = (report.interpreter.name, step.mode, str(step.workers))
                values.setdefault(labels, []).append(step.summary.startup_seconds)
    return {labels: statistics.median(v) for labels, v in values.items()}


def interpreter_families(snapshot: Snapshot) -> Iterator[Metric]:
    info = family("python_info")
    gil = family("gil_enabled")
    available = family("mode_available")
    requested = family("gil_requested")
    environments = {report.interpreter.name: report.interpreter.env for report in snapshot.reports.values()}
    for name, identity in snapshot.identities.items():
        info.add_metric([name, identity.version, identity.implementation, str(identity.free_threaded_build).lower()], 1)
        gil.add_metric([name], 1 if identity.gil_enabled else 0)
        requested.add_metric([name], 1 if environments.get(name, {}).get("PYTHON_GIL") == "1" else 0)
    seen: dict[tuple[str, str], bool] = {}
    for report in snapshot.reports.values():
        for step in report.steps:
            seen[(report.interpreter.name, step.mode)] = step.available
    for (name, mode), is_available in seen.items():
        available.add_metric([name, mode], 1 if is_available else 0)
    imports = family("import_gil_enabled")
    for check in snapshot.import_checks.values():
        if check.gil_enabled is not None:
            imports.add_metric([check.interpreter, check.module], 1 if check.gil_enabled else 0)
    nice = family("probe_nice")
    for name, value in {r.interpreter.name: nice_number(r.spec.nice) for r in snapshot.reports.values()}.items():
        nice.add_metric([name], value)
    yield from (info, gil, requested, available, imports, nice)


def exporter_families(snapshot: Snapshot) -> Iterator[Metric]:
    host = family("host_cpus")
    host.add_metric(["logical"], snapshot.host.logical)
    if snapshot.host.physical:
        host.add_metric(["physical"], snapshot.host.physical)
    host.add_metric(["usable"], snapshot.host.usable)
    yield host
    if snapshot.round_duration_seconds is not None:
        round_duration = family("round_duration_seconds")
        round_duration.add_metric([], snapshot.round_duration_seconds)
        yield round_duration
    if snapshot.duty_cycle_ratio is not None:
        duty = family("duty_cycle_ratio")
        duty.add_metric([], snapshot.duty_cycle_ratio)
        yield duty
    interval = family("probe_interval_seconds")
    interval.add_metric([], snapshot.interval_seconds)
    yield interval
    start_method = family("process_start_method_info")
    start_method.add_metric([snapshot.start_method], 1)
    yield start_method
    reload_ok = family("config_last_reload_successful")
    reload_ok.add_metric([], 1 if snapshot.reload_successful else 0)
    yield reload_ok
    reload_time = family("config_last_reload_success_timestamp_seconds")
    reload_time.add_metric([], snapshot.reload_timestamp)
    yield reload_time
    build = family("exporter_build_info")
    build.add_metric([__version__], 1)
    yield build


class ParallelismCollector(Collector):
    """Yields every pyparallel_ family from whatever snapshot ``source()`` returns now."""

    def __init__(self, source: Callable[[], Snapshot]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        snapshot = self.source()  # one read: the whole scrape sees one consistent snapshot
        for families in (step_families, health_families, interpreter_families, exporter_families):
            yield from families(snapshot)


def record_round(snapshot: Snapshot, reports: list[WorkloadReport]) -> dict:
    """The snapshot fields that change when these reports complete (for ``replace``)."""
    results = dict(snapshot.reports)
    identities = dict(snapshot.identities)
    last_success = dict(snapshot.last_success)
    failures = dict(snapshot.failures)
    for report in reports:
        results[(report.interpreter.name, report.spec.workload)] = report
        if report.identity is not None:
            identities[report.interpreter.name] = report.identity
        finished = report.started_at + report.duration_seconds
        for step in report.steps:
            if not step.available:
                continue
            key = step_key(report, step)
            for reason in FAILURE_REASONS:  # every reason exists from the start, at 0
                failures.setdefault((key, reason), 0)
            if step.success:
                last_success[key] = finished
            elif step.reason:
                failures[(key, step.reason)] += 1
    return {"reports": results, "identities": identities, "last_success": last_success,
            "failures": failures}


def still_configured(config: Config, interpreter: str, workload: str) -> bool:
    return (interpreter in {i.name for i in config.interpreter_list()}
            and workload in config.probe.workloads)


def prune_snapshot(snapshot: Snapshot, config: Config) -> dict:
    """Drop series of interpreters, workloads and modules no longer configured (bounded cardinality)."""
    def kept(key: tuple) -> bool:
        return still_configured(config, key[0], key[1])

    names = {i.name for i in config.interpreter_list()}
    return {
        "reports": {k: v for k, v in snapshot.reports.items() if still_configured(config, *k)},
        "identities": {k: v for k, v in snapshot.identities.items() if k in names},
        "last_success": {k: v for k, v in snapshot.last_success.items() if kept(k)},
        "failures": {k: v for k, v in snapshot.failures.items() if kept(k[0])},
        "import_checks": {k: v for k, v in snapshot.import_checks.items()
                          if k[0] in names and k[1] in config.import_check_modules},
    }


def empty_snapshot(cfg: Config, host: HostCpus) -> Snapshot:
    """A snapshot with no results yet, for this config; per-core series only on hosts of
    up to PER_CORE_SERIES_MAX_CPUS CPUs unless configured."""
    per_core = cfg.probe.per_core_series
    if per_core is None:
        per_core = host.logical <= PER_CORE_SERIES_MAX_CPUS
    return Snapshot(host=host, per_core_series=per_core, interval_seconds=cfg.interval_seconds,
                    start_method=cfg.probe.start_method)


def write_textfile(path: str, reports: list[WorkloadReport], host: HostCpus, cfg: Config) -> None:
    """Write the metrics of a one-shot run for node_exporter's textfile collector.

    prometheus_client writes a temporary file and renames it, so node_exporter never reads
    a half-written file. The rename never replaces a device or a FIFO given as the path.
    """
    inputs.refuse_to_replace(path)
    snapshot = empty_snapshot(cfg, host)
    snapshot = replace(snapshot, **record_round(snapshot, reports))
    registry = CollectorRegistry()
    registry.register(ParallelismCollector(lambda: snapshot))
    write_to_textfile(path, registry)
