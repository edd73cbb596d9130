"""The ``pyparallel_service_*`` families: the watched services' last window, as Prometheus sees it.

A collector beside ``ParallelismCollector`` (which exports the probes): like client_python's
process collector it yields families from data already at hand, the sampler's last
``ServicesSnapshot``, and never reads ``/proc`` itself. Labels are the configured group and
the interpreter identity (implementation, version, free-threaded build): never a PID or a
thread name, so the series count is bounded by the configuration.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, Optional

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter.model.metrics import exposed_names, family
from exporter.services.window import ERROR_REASONS, STATES, Cohort, ServicesSnapshot

COHORT_GAUGES = ("processes", "threads", "cores_used", "busy_threads", "usable_cores", "parallelism_ratio",
                 "serialised_ratio", "voluntary_context_switches_per_busy_thread")
STATS = ("min", "median", "max")  # over a group's processes
METRIC_NAMES: frozenset[str] = exposed_names("service")  # exporter/model/metrics.py declares each family


def cohort_values(c: Cohort) -> dict[str, Optional[float]]:
    """Each gauge's value for one cohort; None: no sample (the window cannot tell)."""
    return {"processes": c.processes, "threads": c.threads, "cores_used": c.cores_used,
            "busy_threads": c.busy_threads, "usable_cores": c.usable_cores, "parallelism_ratio": c.parallelism,
            "serialised_ratio": c.serialised_ratio,
            "voluntary_context_switches_per_busy_thread": c.switches_per_busy_thread}


def cohort_labels(c: Cohort) -> list[str]:
    return [c.group, c.identity.implementation, c.identity.version, c.identity.build]


def cohort_families(snapshot: ServicesSnapshot) -> Iterator[Metric]:
    gauges = {name: family(f"service_{name}") for name in COHORT_GAUGES}
    spread = family("service_process_parallelism_ratio")
    for c in snapshot.cohorts:
        labels = cohort_labels(c)
        for name, value in cohort_values(c).items():
            if value is not None:
                gauges[name].add_metric(labels, value)
        for stat, value in zip(STATS, c.process_parallelism):
            spread.add_metric(labels + [stat], value)
    yield from gauges.values()
    yield spread
    cpu = family("service_cpu_seconds")
    for (group, identity), seconds in snapshot.cpu_seconds.items():
        cpu.add_metric([group, identity.implementation, identity.version, identity.build], seconds)
    yield cpu


def state_family(snapshot: ServicesSnapshot) -> Metric:
    state = family("service_state")
    for group, current in snapshot.states.items():
        state.add_metric([group], {name: name == current for name in STATES})
    return state


def sampler_families(snapshot: ServicesSnapshot) -> Iterator[Metric]:
    enabled = family("service_watch_enabled")
    enabled.add_metric([], 1 if snapshot.enabled else 0)
    yield enabled
    if not snapshot.enabled:
        return
    errors = family("service_sample_errors")
    for reason in ERROR_REASONS:
        errors.add_metric([reason], snapshot.errors.get(reason, 0))
    yield errors
    overruns = family("service_scan_overruns")
    overruns.add_metric([], snapshot.scan_overruns)
    yield overruns
    running = time.time() - snapshot.scan_started_at if snapshot.scan_started_at is not None else 0.0
    single = {"window_seconds": snapshot.window_seconds, "host_idle_cores": snapshot.host_idle_cores,
              "scan_duration_seconds": snapshot.scan_seconds, "last_scan_timestamp_seconds": snapshot.sampled_at,
              "scanned_processes": float(snapshot.scanned_processes), "scan_running_seconds": max(running, 0.0)}
    for name, value in single.items():
        if value is not None:
            sampler = family(f"service_{name}")
            sampler.add_metric([], value)
            yield sampler


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
