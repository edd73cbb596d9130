"""The ``pyparallel_service_*`` families: the watched services' last window, as Prometheus sees it.

A collector beside ``ParallelismCollector`` (which exports the probes): like client_python's
process collector it yields families from data already at hand, the sampler's last
``ServicesSnapshot``, and never reads ``/proc`` itself. Labels are the configured group and
the interpreter identity (implementation, version, free-threaded build): never a PID or a
thread name, so the series count is bounded by the configuration.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, StateSetMetricFamily
from prometheus_client.registry import Collector

from exporter.servicewindow import ERROR_REASONS, STATES, Cohort, ServicesSnapshot

PREFIX = "pyparallel_service"
COHORT_LABELS = ["group", "implementation", "version", "free_threaded_build"]
QUANTILES = ("0", "0.5", "1")  # min, median, max over a group's processes

# name (without the prefix) -> help; one place for the contract the dashboards and rules read.
COHORT_GAUGES: dict[str, str] = {
    "processes": "Processes of the group running this interpreter (implementation none: not Python; "
                 "unknown: its maps could not be read).",
    "threads": "Threads of those processes.",
    "cores_used": "CPU seconds of those processes per wall second over the last window.",
    "busy_threads": "Threads that used more than services.busy_thread_share of a core over the last window.",
    "usable_cores": "Cores the processes may use: CPU affinity, capped by their cgroup's CPU quota (the most of any process).",
    "parallelism_ratio": "Cores used divided by min(busy threads, usable cores), per process summed over the "
                         "processes; absent without busy threads.",
    "serialised_ratio": "Share of the processes with 2+ busy threads and 2+ usable cores, on a host with idle cores, "
                        "that used at most services.serial_cores cores: the serialisation signature (a GIL, or a "
                        "lock). Absent when no process could be judged.",
    "voluntary_context_switches_per_busy_thread": "Voluntary context switches per second of each busy thread, "
                                                  "averaged (GIL hand-offs and lock waits show here).",
}
METRIC_NAMES: frozenset[str] = frozenset(
    {f"{PREFIX}_{name}" for name in COHORT_GAUGES}
    | {f"{PREFIX}_{name}" for name in ("process_parallelism_ratio", "cpu_seconds_total", "state",
                                         "sample_errors_total", "window_seconds", "host_idle_cores",
                                         "scan_duration_seconds", "last_scan_timestamp_seconds",
                                         "scanned_processes", "watch_enabled")})


def cohort_values(c: Cohort) -> dict[str, Optional[float]]:
    """Each gauge's value for one cohort; None: no sample (the window cannot tell)."""
    return {"processes": c.processes, "threads": c.threads, "cores_used": c.cores_used,
            "busy_threads": c.busy_threads, "usable_cores": c.usable_cores, "parallelism_ratio": c.parallelism,
            "serialised_ratio": c.serialised_ratio,
            "voluntary_context_switches_per_busy_thread": c.switches_per_busy_thread}


def cohort_labels(c: Cohort) -> list[str]:
    return [c.group, c.identity.implementation, c.identity.version, c.identity.build]


def cohort_families(snapshot: ServicesSnapshot) -> Iterator[Metric]:
    gauges = {name: GaugeMetricFamily(f"{PREFIX}_{name}", text, labels=COHORT_LABELS)
              for name, text in COHORT_GAUGES.items()}
    spread = GaugeMetricFamily(f"{PREFIX}_process_parallelism_ratio",
                               "Parallelism of single processes with busy threads: quantile 0 the lowest, "
                               "0.5 the median, 1 the highest.", labels=COHORT_LABELS + ["quantile"])
    for c in snapshot.cohorts:
        labels = cohort_labels(c)
        for name, value in cohort_values(c).items():
            if value is not None:
                gauges[name].add_metric(labels, value)
        for quantile, value in zip(QUANTILES, c.process_parallelism):
            spread.add_metric(labels + [quantile], value)
    yield from gauges.values()
    yield spread
    cpu = CounterMetricFamily(f"{PREFIX}_cpu_seconds", "CPU seconds the group's processes used while watched, "
                              "summed over the windows.", labels=COHORT_LABELS)
    for (group, identity), seconds in snapshot.cpu_seconds.items():
        cpu.add_metric([group, identity.implementation, identity.version, identity.build], seconds)
    yield cpu


def state_family(snapshot: ServicesSnapshot) -> Metric:
    state = StateSetMetricFamily(f"{PREFIX}_state", "What the last window says of each group: parallel, serial, "
                                 "or why it cannot tell (host_busy, one_usable_core, one_busy_thread, idle, "
                                 "no_process).", labels=["group"])
    for group, current in snapshot.states.items():
        state.add_metric([group], {name: name == current for name in STATES})
    return state


def sampler_families(snapshot: ServicesSnapshot) -> Iterator[Metric]:
    enabled = GaugeMetricFamily(f"{PREFIX}_watch_enabled", "Whether the services section configures groups to watch.")
    enabled.add_metric([], 1 if snapshot.enabled else 0)
    yield enabled
    if not snapshot.enabled:
        return
    errors = CounterMetricFamily(f"{PREFIX}_sample_errors", "Processes the sampler could not read, by reason: "
                                 "permission, vanished (exited mid-read), pid_reused, too_many_groups, internal.",
                                 labels=["reason"])
    for reason in ERROR_REASONS:
        errors.add_metric([reason], snapshot.errors.get(reason, 0))
    yield errors
    single = {
        "window_seconds": ("Length of the last window between two scans.", snapshot.window_seconds),
        "host_idle_cores": ("Idle cores of the host over the last window (idle and iowait time).",
                            snapshot.host_idle_cores),
        "scan_duration_seconds": ("Wall time the last scan of /proc took.", snapshot.scan_seconds),
        "last_scan_timestamp_seconds": ("Unix time of the last scan.", snapshot.sampled_at),
        "scanned_processes": ("Processes on the host the last scan read.", float(snapshot.scanned_processes)),
    }
    for name, (text, value) in single.items():
        if value is not None:
            family = GaugeMetricFamily(f"{PREFIX}_{name}", text)
            family.add_metric([], value)
            yield family


class ServiceCollector(Collector):
    """Yields every pyparallel_service_ family from whatever snapshot ``source()`` returns now."""

    def __init__(self, source: Callable[[], ServicesSnapshot]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        snapshot = self.source()  # one read: the whole scrape sees one window
        yield from sampler_families(snapshot)
        if snapshot.enabled:
            yield from cohort_families(snapshot)
            yield state_family(snapshot)
