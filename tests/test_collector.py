"""The collector on a fresh registry: families from real probe results, failures by reason,
last success kept across a failed round, and per-core series switched by the config."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from exporter import collector, config, hostinfo, probe, results

pytestmark = pytest.mark.integration  # the samples come from real probes (runner processes)

LABELS = {"interpreter": "test", "workload": "sleep", "mode": "threads", "workers": "2"}


@pytest.fixture(scope="module")
def sleep_report() -> probe.WorkloadReport:
    spec = probe.ProbeSpec("sleep", ("threads",), (2,), 0.05, 1, 30.0)
    return probe.run_workload(probe.Interpreter("test", sys.executable), spec)


def registry_for(snapshot: collector.Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector.ParallelismCollector(lambda: snapshot))
    return registry


def snapshot_with(*reports: probe.WorkloadReport, per_core: bool | None = None) -> collector.Snapshot:
    cfg = config.Config(probe=config.ProbeConfig(per_core_series=per_core))
    snapshot = collector.empty_snapshot(cfg, hostinfo.host_cpus())
    for report in reports:
        snapshot = replace(snapshot, **collector.record_round(snapshot, [report]))
    return snapshot


def failed_copy(report: probe.WorkloadReport, reason: str) -> probe.WorkloadReport:
    """The same report as if its threads step had failed (for the bookkeeping only)."""
    steps = [replace(s, success=False, reason=reason, summary=None) if s.mode == "threads" else s
             for s in report.steps]
    return replace(report, steps=steps, started_at=report.started_at + 60)


def test_results_of_a_real_probe_become_samples(sleep_report):
    registry = registry_for(snapshot_with(sleep_report))
    assert registry.get_sample_value("pyparallel_probe_success", LABELS) == 1
    assert registry.get_sample_value("pyparallel_speedup_ratio", LABELS) > 1.5
    assert registry.get_sample_value("pyparallel_efficiency_ratio", LABELS) > 0.75
    assert registry.get_sample_value("pyparallel_gil_enabled", {"interpreter": "test"}) == 1
    assert registry.get_sample_value("pyparallel_host_cpus", {"kind": "logical"}) == hostinfo.host_cpus().logical
    assert registry.get_sample_value("pyparallel_core_utilisation_ratio", dict(LABELS, cpu="0")) is not None


def test_sequential_has_no_serial_fraction(sleep_report):
    registry = registry_for(snapshot_with(sleep_report))
    sequential = dict(LABELS, mode="sequential", workers="1")
    assert registry.get_sample_value("pyparallel_speedup_ratio", sequential) is not None
    assert registry.get_sample_value("pyparallel_serial_fraction_ratio", sequential) is None


def test_every_failure_reason_starts_at_zero_and_counts_up(sleep_report):
    registry = registry_for(snapshot_with(sleep_report, failed_copy(sleep_report, "timeout")))
    for reason in results.FAILURE_REASONS:
        expected = 1 if reason == "timeout" else 0
        assert registry.get_sample_value("pyparallel_probe_failures_total", dict(LABELS, reason=reason)) == expected


def test_last_success_survives_a_failed_round_and_success_drops_to_0(sleep_report):
    first = snapshot_with(sleep_report)
    then = snapshot_with(sleep_report, failed_copy(sleep_report, "crash"))
    stamp = registry_for(first).get_sample_value("pyparallel_probe_last_success_timestamp_seconds", LABELS)
    registry = registry_for(then)
    assert registry.get_sample_value("pyparallel_probe_last_success_timestamp_seconds", LABELS) == stamp
    assert registry.get_sample_value("pyparallel_probe_success", LABELS) == 0
    assert registry.get_sample_value("pyparallel_speedup_ratio", LABELS) is None  # no stale figure


def test_per_core_series_can_be_switched_off(sleep_report):
    registry = registry_for(snapshot_with(sleep_report, per_core=False))
    assert registry.get_sample_value("pyparallel_core_utilisation_ratio", dict(LABELS, cpu="0")) is None
    assert registry.get_sample_value("pyparallel_cpu_cores_used", LABELS) is not None


def test_collect_reads_the_snapshot_once_per_scrape(sleep_report):
    calls = []
    snapshot = snapshot_with(sleep_report)

    def source() -> collector.Snapshot:
        calls.append(1)
        return snapshot

    list(collector.ParallelismCollector(source).collect())
    assert calls == [1]


@pytest.mark.parametrize("cpus, expected", [(2, True), (64, True), (65, False), (256, False)])
def test_per_core_series_default_on_up_to_64_cpus(cpus, expected):
    host = hostinfo.HostCpus(logical=cpus, physical=cpus // 2, affinity=cpus, quota=None)
    assert collector.empty_snapshot(config.Config(), host).per_core_series is expected
