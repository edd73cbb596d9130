"""The Prometheus collector: metric families from the last completed probe results.

Like client_python's own collectors, ``collect()`` only reads a snapshot that is already at
hand (swapped atomically by the daemon when a probe finishes) and never does probe work, so
a scrape is fast and never waits for a probe. The families themselves (names, help, labels:
the contract the dashboards and alert rules depend on) are declared in exporter/model/metrics.py.
"""

from __future__ import annotations

import statistics
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.config import inputs
from exporter.config.settings import Config
from exporter.host.cpus import HostCpus
from exporter.model.metrics import family  # every family's name, type, help and labels
from exporter.model.results import SCHED_IDLE, Nice, WorkloadReport
from exporter.model.snapshot import Snapshot
from exporter.runner.modes import SEQUENTIAL

SCHED_IDLE_NICE = 20  # pyparallel_probe_nice for the SCHED_IDLE policy: below every nice value


# The per-step families in the order they are exposed (exporter.model.metrics declares each).
STEP_FAMILIES = ("probe_success", "probe_duration_seconds", "speedup_ratio", "speedup_lower_ratio",
                 "speedup_upper_ratio", "speedup_unsteady", "step_conclusive", "speedup_pairs", "step_remeasured",
                 "speedup_spread_ratio", "efficiency_ratio", "serial_fraction_ratio", "throughput_units_per_second",
                 "cpu_cores_used", "cpu_rate_ratio", "interference_cores", "steal_ratio", "core_utilisation_ratio")
# The kernel's accounting of a step: exported whatever the host's load (CPU-bound steps, Linux).
ACCOUNTING_FAMILIES = ("runnable_workers", "runnable_workers_lower", "runnable_workers_upper", "on_cpu_workers",
                       "idle_speedup_ratio", "idle_speedup_lower_ratio", "idle_speedup_upper_ratio")


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
            key = report.key(step).labels
            success.add_metric(key, 1.0 if step.success else 0.0)
            duration.add_metric(key, step.duration_seconds)
            summary = step.summary
            if summary is None:
                continue
            unsteady.add_metric(key, 1.0 if summary.unsteady else 0.0)
            if step.mode != SEQUENTIAL:
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
    yield from accounting_families(snapshot)


def accounting_families(snapshot: Snapshot) -> Iterator[Metric]:
    """Workers runnable at once and the idle-host speedup, with their intervals."""
    families = [family(name) for name in ACCOUNTING_FAMILIES]
    runnable, runnable_low, runnable_high, on_cpu, idle, idle_low, idle_high = families
    for report in snapshot.reports.values():
        for step in report.steps:
            a = step.summary.accounting if step.summary is not None and step.available else None
            if a is None or step.mode == SEQUENTIAL:
                continue
            key = report.key(step).labels
            runnable.add_metric(key, a.runnable)
            on_cpu.add_metric(key, a.on_cpu)
            if a.runnable_ci is not None:
                runnable_low.add_metric(key, a.runnable_ci[0])
                runnable_high.add_metric(key, a.runnable_ci[1])
            if a.idle_speedup is not None:
                idle.add_metric(key, a.idle_speedup)
            if a.idle_speedup_ci is not None:
                idle_low.add_metric(key, a.idle_speedup_ci[0])
                idle_high.add_metric(key, a.idle_speedup_ci[1])
    yield from families


def nice_number(nice: Nice) -> int:
    """The exported value of probe.nice: the nice value, SCHED_IDLE as 20."""
    return SCHED_IDLE_NICE if nice == SCHED_IDLE else int(nice)


def health_families(snapshot: Snapshot) -> Iterator[Metric]:
    last_success = family("probe_last_success_timestamp_seconds")
    for key, timestamp in snapshot.last_success.items():
        last_success.add_metric(key.labels, timestamp)
    yield last_success
    failures = family("probe_failures")
    for (key, reason), count in snapshot.failures.items():
        failures.add_metric(key.labels + [reason], count)
    yield failures
    startup = family("worker_startup_seconds")
    for labels, seconds in startup_medians(snapshot).items():
        startup.add_metric(list(labels), seconds)
    yield startup


def startup_medians(snapshot: Snapshot) -> dict[tuple[str, str, str], float]:
    values: dict[tuple[str, str, str], list[float]] = {}
    for report in snapshot.reports.values():
        for step in report.steps:
            if step.summary is not None and step.mode != SEQUENTIAL:
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


def empty_snapshot(cfg: Config, host: HostCpus) -> Snapshot:
    """A snapshot with no results yet, for this config; per-core series only on hosts of
    up to PER_CORE_SERIES_MAX_CPUS CPUs unless configured."""
    return Snapshot(host=host, per_core_series=cfg.per_core_series_for(host.logical),
                    interval_seconds=cfg.interval_seconds, start_method=cfg.probe.start_method)


def write_textfile(path: str, reports: list[WorkloadReport], host: HostCpus, cfg: Config) -> None:
    """Write the metrics of a one-shot run for node_exporter's textfile collector.

    prometheus_client writes a temporary file and renames it, so node_exporter never reads
    a half-written file. The rename never replaces a device or a FIFO given as the path.
    """
    inputs.refuse_to_replace(path)
    snapshot = empty_snapshot(cfg, host).with_round(reports)
    registry = CollectorRegistry()
    registry.register(ParallelismCollector(lambda: snapshot))
    write_to_textfile(path, registry)
