"""The collector on a fresh registry: families from real probe results, failures by reason,
last success kept across a failed round, and per-core series switched by the config."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from exporter.export import collector
from exporter.model.snapshot import Snapshot
from exporter.config import settings
from exporter.host import cpus as hostinfo
from exporter.probe import run
from exporter.model import results

pytestmark = pytest.mark.integration  # the samples come from real probes (runner processes)

LABELS = {"interpreter": "test", "workload": "sleep", "mode": "threads", "workers": "2"}


@pytest.fixture(scope="module")
def sleep_report() -> run.WorkloadReport:
    spec = run.ProbeSpec("sleep", ("threads",), (2,), 0.05, 1, 30.0)
    return run.run_workload(run.Interpreter("test", sys.executable), spec)


def registry_for(snapshot: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector.ParallelismCollector(lambda: snapshot))
    return registry


def snapshot_with(*reports: run.WorkloadReport, per_core: bool | None = None) -> Snapshot:
    cfg = settings.Config(probe=settings.ProbeConfig(per_core_series=per_core))
    snapshot = collector.empty_snapshot(cfg, hostinfo.host_cpus())
    for report in reports:
        snapshot = snapshot.with_round([report])
    return snapshot


def failed_copy(report: run.WorkloadReport, reason: str) -> run.WorkloadReport:
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

    def source() -> Snapshot:
        calls.append(1)
        return snapshot

    list(collector.ParallelismCollector(source).collect())
    assert calls == [1]


@pytest.mark.parametrize("cpus, expected", [(2, True), (64, True), (65, False), (256, False)])
def test_per_core_series_default_on_up_to_64_cpus(cpus, expected):
    host = hostinfo.HostCpus(logical=cpus, physical=cpus // 2, affinity=cpus, quota=None)
    assert collector.empty_snapshot(settings.Config(), host).per_core_series is expected


def test_interval_rate_interference_and_nice_become_samples(sleep_report):
    registry = registry_for(snapshot_with(sleep_report))
    summary = sleep_report.step("threads", 2).summary
    low = registry.get_sample_value("pyparallel_speedup_lower_ratio", LABELS)
    high = registry.get_sample_value("pyparallel_speedup_upper_ratio", LABELS)
    if summary.speedup_ci is None:
        assert low is None and high is None
    else:
        assert low <= registry.get_sample_value("pyparallel_speedup_ratio", LABELS) <= high
    assert registry.get_sample_value("pyparallel_speedup_unsteady", LABELS) == 0
    assert 0 <= registry.get_sample_value("pyparallel_interference_cores", LABELS) <= hostinfo.host_cpus().logical
    assert registry.get_sample_value("pyparallel_cpu_rate_ratio", dict(LABELS, mode="sequential", workers="1")) == 1
    steal = registry.get_sample_value("pyparallel_steal_ratio", LABELS)
    assert steal is None or 0 <= steal <= 1
    assert registry.get_sample_value("pyparallel_probe_nice", {"interpreter": "test"}) == 0


def test_an_unsteady_step_keeps_success_but_exports_no_speedup(sleep_report):
    steps = [replace(s, summary=replace(s.summary, unsteady_reason="speedup ×2.30 exceeds the 2 cores"))
             if s.mode == "threads" else s for s in sleep_report.steps]
    registry = registry_for(snapshot_with(replace(sleep_report, steps=steps)))
    assert registry.get_sample_value("pyparallel_probe_success", LABELS) == 1
    assert registry.get_sample_value("pyparallel_speedup_unsteady", LABELS) == 1
    for name in ("speedup_ratio", "speedup_lower_ratio", "speedup_upper_ratio", "efficiency_ratio",
                 "serial_fraction_ratio"):
        assert registry.get_sample_value(f"pyparallel_{name}", LABELS) is None, name
    assert registry.get_sample_value("pyparallel_cpu_cores_used", LABELS) is not None


def test_sched_idle_is_exported_as_nice_20(sleep_report):
    idle = replace(sleep_report, spec=replace(sleep_report.spec, nice="idle"))
    registry = registry_for(snapshot_with(idle))
    assert registry.get_sample_value("pyparallel_probe_nice", {"interpreter": "test"}) == 20


def test_gil_requested_says_whether_the_configured_env_sets_python_gil_1(sleep_report):
    asked = replace(sleep_report, interpreter=run.Interpreter("control", sys.executable, {"PYTHON_GIL": "1"}))
    off = replace(sleep_report, interpreter=run.Interpreter("off", sys.executable, {"PYTHON_GIL": "0"}))
    registry = registry_for(snapshot_with(sleep_report, asked, off))
    assert registry.get_sample_value("pyparallel_gil_requested", {"interpreter": "test"}) == 0
    assert registry.get_sample_value("pyparallel_gil_requested", {"interpreter": "control"}) == 1
    assert registry.get_sample_value("pyparallel_gil_requested", {"interpreter": "off"}) == 0
