"""Alerting rules: each has `for`, a severity, a summary, a description and a runbook link."""

from __future__ import annotations

from typing import Any

from dashboards.mixin_config import CONFIG, MixinConfig
from dashboards.recording import python_versions, speedup_baseline, speedup_median

# How an alert description names the probe it is about.
PROBE_TEXT = (
    "{{ $labels.workload }}/{{ $labels.mode }} with {{ $labels.workers }} workers "
    "on {{ $labels.interpreter }} at {{ $labels.instance }}"
)


def _alert(
    config: MixinConfig,
    name: str,
    expr: str,
    for_: str,
    summary: str,
    description: str,
    severity: str | None = None,
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity or config.severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": config.runbook_url_template % name.lower(),
        },
    }


def _probe_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    sel = c.exporter_selector
    where = PROBE_TEXT
    return [
        _alert(
            c,
            "PyParallelExporterDown",
            f"up{{{sel}}} == 0",
            c.exporter_down_for,
            "The parallelism exporter cannot be scraped.",
            "Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}) "
            f"for {c.exporter_down_for}; no probe results arrive from it.",
        ),
        _alert(
            c,
            # Unavailable modes (e.g. subinterpreters before 3.14) have no probe_success
            # series at all, only pyparallel_mode_available 0, so they never match here.
            "PyParallelProbeFailing",
            f"pyparallel_probe_success{{{sel}}} == 0",
            c.probe_failing_for,
            "A parallelism probe keeps failing.",
            f"The probe {where} has failed for {c.probe_failing_for}; "
            "see pyparallel_probe_failures_total by reason.",
        ),
        _alert(
            c,
            "PyParallelProbeResultsStale",
            f"time() - pyparallel_probe_last_success_timestamp_seconds{{{sel}}}\n"
            "  > on(job, instance) group_left()\n"
            f"    {c.stale_intervals} * pyparallel_probe_interval_seconds{{{sel}}}",
            c.stale_for,
            "Parallelism probe results are stale.",
            f"The probe {where} last succeeded {{{{ $value | humanizeDuration }}}} ago, "
            f"more than {c.stale_intervals} probe intervals.",
        ),
        _alert(
            c,
            "PyParallelConfigReloadFailed",
            f"pyparallel_config_last_reload_successful{{{sel}}} == 0",
            c.config_reload_for,
            "The parallelism exporter failed to reload its configuration.",
            "The exporter on {{ $labels.instance }} rejected its configuration file at the last "
            "reload and keeps running with the previous one.",
        ),
    ]


def _speedup_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    sel = c.exporter_selector
    where = PROBE_TEXT
    fraction = c.processes_min_speedup_fraction
    keep = 1 - c.speedup_regression_drop
    drop_pct = round(c.speedup_regression_drop * 100)
    regressed = (
        f"{speedup_median(c)}{{{sel}, {c.regression_mode_selector}}}\n"
        f"  < {keep:g} * {speedup_baseline(c)}{{{sel}, {c.regression_mode_selector}}}"
    )
    return [
        _alert(
            c,
            # Achievable speedup is min(workers, usable cores). Workers is a label, not a
            # number, so "speedup < f * min(w, u)" is written as its two halves:
            # speedup < f * usable cores, and efficiency (speedup / workers) < f.
            "PyParallelProcessesSpeedupFarBelowUsableCores",
            "(\n"
            f'  pyparallel_speedup_ratio{{{sel}, mode="processes", {c.cpu_bound_workload_selector}}}\n'
            "    < on(job, instance) group_left()\n"
            f'      {fraction:g} * pyparallel_host_cpus{{{sel}, kind="usable"}}\n'
            ")\n"
            "and\n"
            f'  pyparallel_efficiency_ratio{{{sel}, mode="processes"}} < {fraction:g}',
            c.processes_far_below_for,
            "Process-parallel speedup is far below the usable CPU cores.",
            f"The probe {where} reaches a speedup of {{{{ $value | humanize }}}}, less than "
            f"{fraction:g} of min(workers, usable cores); the host or container is not giving "
            "the exporter the cores it reports as usable.",
        ),
        _alert(
            c,
            "PyParallelSpeedupRegressed",
            regressed,
            c.regression_for,
            "Parallel speedup regressed against its own baseline.",
            f"The {c.speedup_median_window} median speedup of {where} is "
            f"{{{{ $value | humanize }}}}, more than {drop_pct}% below its median over the "
            f"{c.baseline_window} that ended {c.baseline_offset} ago.",
        ),
        _alert(
            c,
            "PyParallelSpeedupDroppedAfterPythonUpgrade",
            f"(\n  {regressed.replace(chr(10), chr(10) + '  ')}\n)\n"
            "and on(job, instance, interpreter)\n"
            f"  {python_versions(c)}{{{sel}}} > 1",
            c.upgrade_drop_for,
            "Parallel speedup dropped after a Python version change.",
            f"The Python version of {{{{ $labels.interpreter }}}} on {{{{ $labels.instance }}}} "
            f"changed within {c.upgrade_window} and the {c.speedup_median_window} median speedup "
            "of {{ $labels.workload }}/{{ $labels.mode }} with {{ $labels.workers }} workers is now "
            f"{{{{ $value | humanize }}}}, more than {drop_pct}% below its baseline.",
        ),
    ]


def _gil_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    sel = c.exporter_selector
    free_threaded = f'pyparallel_python_info{{{sel}, free_threaded_build="true"}}'
    return [
        _alert(
            c,
            "PyParallelGILEnabledOnFreeThreadedBuild",
            f"pyparallel_gil_enabled{{{sel}}} == 1\n"
            f"and on(job, instance, interpreter)\n  {free_threaded}",
            c.gil_enabled_for,
            "A free-threaded Python build runs with the GIL enabled.",
            "{{ $labels.interpreter }} on {{ $labels.instance }} is a free-threaded build, but "
            "the GIL was enabled at run time, so threads cannot run Python code in parallel.",
        ),
        _alert(
            c,
            "PyParallelModuleReenablesGIL",
            f"pyparallel_import_gil_enabled{{{sel}}} == 1\n"
            f"and on(job, instance, interpreter)\n  {free_threaded}",
            c.import_gil_for,
            "Importing {{ $labels.module }} re-enables the GIL.",
            "On the free-threaded build {{ $labels.interpreter }} on {{ $labels.instance }}, "
            "importing {{ $labels.module }} turns the GIL back on; any program importing it "
            "loses thread parallelism.",
            severity=c.info_severity,
        ),
    ]


def alerts_group(config: MixinConfig = CONFIG) -> dict[str, Any]:
    """The `pyparallel.alerts` group, in Prometheus rule-file form."""
    return {
        "name": "pyparallel.alerts",
        "rules": _probe_alerts(config) + _speedup_alerts(config) + _gil_alerts(config),
    }
