"""Alerting rules: each has `for`, a severity, a summary, a description and a runbook link."""

from __future__ import annotations

from typing import Any

from dashboards.mixin_config import CONFIG, MixinConfig
from dashboards.recording import (
    interference_median,
    python_version,
    speedup_baseline,
    speedup_median,
    speedup_of_version,
)

STEP = "interpreter, workload, mode, workers"
# An alert's value with two decimals: `humanize` would print 0.95 cores as "950m".
VALUE = '{{ printf "%.2f" $value }}'


def probe_text(where: str) -> str:
    """How an alert description names the probe it is about; `where` is a label name."""
    return (
        "{{ $labels.workload }}/{{ $labels.mode }} with {{ $labels.workers }} workers "
        f"on {{{{ $labels.interpreter }}}} at {{{{ $labels.{where} }}}}"
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


def _on_instance(c: MixinConfig) -> str:
    """Labels that match a probe's series with its exporter's own (per scrape target)."""
    return ", ".join(dict.fromkeys([*c.selector_labels, "instance"]))


def _probe_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    sel = c.exporter_selector
    where = probe_text("instance")
    target = _on_instance(c)
    step = f"{target}, {STEP}"
    rounds = c.probe_failing_rounds
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
            # Counted in rounds, so it means the same at any probe interval. Unavailable
            # modes (subinterpreters before 3.14) have no probe_success series, only
            # pyparallel_mode_available 0, so they never match here.
            "PyParallelProbeFailing",
            f"pyparallel_probe_success{{{sel}}} == 0\n"
            f"and on({step})\n"
            "(\n"
            f"    time() - pyparallel_probe_last_success_timestamp_seconds{{{sel}}}\n"
            f"  > on({target}) group_left()\n"
            f"    {rounds - 0.25:g} * pyparallel_probe_interval_seconds{{{sel}}}\n"
            "  or\n"
            f"    sum by ({step}) (pyparallel_probe_failures_total{{{sel}}}) >= {rounds}\n"
            f"  unless on({step})\n"
            f"    pyparallel_probe_last_success_timestamp_seconds{{{sel}}}\n"
            ")",
            c.probe_failing_for,
            "A parallelism probe keeps failing.",
            f"The probe {where} failed and has not succeeded for {rounds - 0.25:g} probe intervals "
            f"(about {rounds} rounds); see pyparallel_probe_failures_total by reason.",
        ),
        _alert(
            c,
            # Time-weighted share of failed rounds: catches a probe that fails every other
            # round, which never fails twice in a row.
            "PyParallelProbeFailureRatioHigh",
            f"1 - avg_over_time(pyparallel_probe_success{{{sel}}}[{c.failure_ratio_window}]) > {c.failure_ratio_threshold:g}",
            c.failure_ratio_for,
            "A parallelism probe fails often.",
            f"The probe {where} failed in {{{{ $value | humanizePercentage }}}} of the last "
            f"{c.failure_ratio_window}, more than {c.failure_ratio_threshold:.0%}.",
        ),
        _alert(
            c,
            # Alertmanager inhibits it while PyParallelProbeFailing fires for the same probe:
            # then the probe runs but fails. Alone, it means the rounds stopped.
            "PyParallelProbeResultsStale",
            f"time() - pyparallel_probe_last_success_timestamp_seconds{{{sel}}}\n"
            f"  > on({target}) group_left()\n"
            f"    {c.stale_intervals} * pyparallel_probe_interval_seconds{{{sel}}}",
            c.stale_for,
            "Parallelism probe results are stale.",
            f"The probe {where} last succeeded {{{{ $value | humanizeDuration }}}} ago, "
            f"more than {c.stale_intervals} probe intervals.",
        ),
        _alert(
            c,
            # The daemon stretches the interval to round / duty_cycle, so this holds when
            # rounds run back to back (duty_cycle 1) or a reload set an interval shorter than
            # the last round.
            "PyParallelRoundLongerThanInterval",
            f"pyparallel_round_duration_seconds{{{sel}}}\n"
            f"  >= on({target}) group_left()\n"
            f"    pyparallel_probe_interval_seconds{{{sel}}}",
            c.round_overrun_for,
            "A probe round takes as long as the probe interval.",
            "The last probe round on {{ $labels.instance }} took {{ $value | humanizeDuration }}, "
            "at least the probe interval: rounds run back to back and the probes load the host "
            "all the time.",
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


def _busy(c: MixinConfig) -> str:
    """Steps whose host was busy with other work: their drop is the host's, not Python's."""
    return f"unless on({c.probe_by})\n  {interference_median(c)}{{{c.exporter_selector}}} > {c.busy_host_cores:g}"


def _free_threaded_gil_off(c: MixinConfig) -> str:
    """`and` clause: interpreters built free-threaded whose GIL was off at run time."""
    sel = c.exporter_selector
    role = _on_instance(c) + ", interpreter"
    return (
        f"and on({role})\n  pyparallel_gil_enabled{{{sel}}} == 0\n"
        f'and on({role})\n  pyparallel_python_info{{{sel}, free_threaded_build="true"}}'
    )


def _speedup_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    sel = c.exporter_selector
    host = c.host_label
    where = probe_text("instance")
    on_host = probe_text(host)
    target = _on_instance(c)
    fraction = c.processes_min_speedup_fraction
    keep = 1 - c.speedup_regression_drop
    drop_pct = round(c.speedup_regression_drop * 100)
    modes = c.regression_mode_selector
    window = c.processes_smoothing_window
    return [
        _alert(
            c,
            # Achievable speedup is min(workers, usable cores). Workers is a label, not a
            # number, so "speedup < f * min(w, u)" is written as its two halves:
            # speedup < f * usable cores, and efficiency (speedup / workers) < f. Medians
            # over several rounds, so one noisy round neither fires nor clears it.
            "PyParallelProcessesSpeedupFarBelowUsableCores",
            "(\n"
            f"  quantile_over_time(0.5, pyparallel_speedup_ratio{{{sel}, mode=\"processes\", "
            f"{c.cpu_bound_workload_selector}}}[{window}])\n"
            f"    < on({target}) group_left()\n"
            f'      {fraction:g} * pyparallel_host_cpus{{{sel}, kind="usable"}}\n'
            ")\n"
            "and\n"
            f'  quantile_over_time(0.5, pyparallel_efficiency_ratio{{{sel}, mode="processes"}}[{window}]) < {fraction:g}',
            c.processes_far_below_for,
            "Process-parallel speedup is far below the usable CPU cores.",
            f"The probe {where} reaches a median speedup of {VALUE} over "
            f"{window}, less than {fraction:g} of min(workers, usable cores); the host or "
            "container is not giving the exporter the cores it reports as usable.",
        ),
        _alert(
            c,
            # The same round on the same host: host noise moves both modes alike, and no
            # baseline is needed. GIL-enabled interpreters are left to the GIL alert.
            "PyParallelFreeThreadedThreadsFarBelowProcesses",
            f'pyparallel_speedup_ratio{{{sel}, mode="threads", {c.cpu_bound_workload_selector}}}\n'
            f"  < on({target}, interpreter, workload, workers) group_left()\n"
            f'    {c.threads_vs_processes_fraction:g} * pyparallel_speedup_ratio{{{sel}, mode="processes"}}\n'
            f"{_free_threaded_gil_off(c)}",
            c.threads_below_processes_for,
            "Threads of a free-threaded Python fall far behind processes.",
            f"The threads probe {where} reaches a speedup of {VALUE}, less "
            f"than {c.threads_vs_processes_fraction:g} of the processes speedup of the same round, "
            "although the GIL is off: something serialises the threads (a lock, a shared object, "
            "reference-count contention).",
        ),
        _alert(
            c,
            # CPU time, not wall-clock speedup: robust to a noisy baseline. Two rounds.
            "PyParallelFreeThreadedThreadsNotParallel",
            f'pyparallel_cpu_cores_used{{{sel}, mode="threads", workers!="1", {c.cpu_bound_workload_selector}}}\n'
            f"  < {c.serial_cores_max:g}\n"
            f"{_free_threaded_gil_off(c)}\n"
            f"and on({target})\n"
            f'  pyparallel_host_cpus{{{sel}, kind="usable"}} >= 2\n'
            f"unless on({target}, {STEP})\n"
            f"  pyparallel_interference_cores{{{sel}}} > {c.busy_host_cores:g}",
            c.threads_not_parallel_for,
            "Threads of a free-threaded Python no longer run in parallel.",
            f"The threads probe {where} kept only {VALUE} cores busy with "
            "its workers on a free-threaded build whose GIL is off: the threads take turns "
            "instead of running in parallel.",
        ),
        _alert(
            c,
            "PyParallelSpeedupRegressed",
            f"{speedup_median(c)}{{{sel}, {modes}}}\n"
            f"  < {keep:g} * {speedup_baseline(c)}{{{sel}, {modes}}}\n"
            f"{_busy(c)}",
            c.regression_for,
            "Parallel speedup regressed against its own baseline.",
            f"The {c.speedup_median_window} median speedup of {on_host} is "
            f"{VALUE}, more than {drop_pct}% below its median over the "
            f"{c.baseline_window} that ended {c.baseline_offset} ago.",
        ),
        _alert(
            c,
            # Compared with what each earlier Python version of the same role on the same
            # host reached, so it keeps firing until fixed or silenced, or version_memory
            # after the upgrade — not only while the upgrade is recent.
            "PyParallelSpeedupDroppedAfterPythonUpgrade",
            f"{speedup_median(c)}{{{sel}, {modes}}}\n"
            f"  < on({c.probe_by}) group_left()\n"
            f"    {keep:g} * max without(version) (\n"
            f"      {speedup_of_version(c)}{{{sel}}}\n"
            f"      unless on({c.role_by}, version)\n"
            f"        {python_version(c)}{{{sel}}}\n"
            "    )\n"
            f"{_busy(c)}",
            c.upgrade_drop_for,
            "Parallel speedup dropped after a Python version change.",
            f"The Python version of {{{{ $labels.interpreter }}}} on {{{{ $labels.{host} }}}} changed "
            f"within {c.version_memory} and the {c.speedup_median_window} median speedup of "
            "{{ $labels.workload }}/{{ $labels.mode }} with {{ $labels.workers }} workers is now "
            f"{VALUE}, more than {drop_pct}% below what the earlier version reached.",
        ),
        _alert(
            c,
            "PyParallelHostTooBusyToMeasure",
            f"max by ({c.site_by}) (\n"
            f"  {interference_median(c)}{{{sel}}}\n"
            f") > {c.busy_host_cores:g}",
            c.host_busy_for,
            "The host is too busy for the probes to measure Python's parallelism.",
            f"Other processes on {{{{ $labels.{host} }}}} used a median of {VALUE} "
            f"cores during the probes over {c.interference_window} (above {c.busy_host_cores:g}); "
            "the speedup figures show what the host leaves over, and the regression alerts hold back.",
            severity=c.info_severity,
        ),
    ]


def _gil_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    sel = c.exporter_selector
    role = _on_instance(c) + ", interpreter"
    free_threaded = f'pyparallel_python_info{{{sel}, free_threaded_build="true"}}'
    return [
        _alert(
            c,
            # Not for an interpreter configured with PYTHON_GIL=1 on purpose (a control).
            "PyParallelGILEnabledOnFreeThreadedBuild",
            f"pyparallel_gil_enabled{{{sel}}} == 1\n"
            f"and on({role})\n  {free_threaded}\n"
            f"unless on({role})\n  pyparallel_gil_requested{{{sel}}} == 1",
            c.gil_enabled_for,
            "A free-threaded Python build runs with the GIL enabled.",
            "{{ $labels.interpreter }} on {{ $labels.instance }} is a free-threaded build, but "
            "the GIL was enabled at run time although its configuration does not ask for it "
            "(PYTHON_GIL=1), so threads cannot run Python code in parallel.",
        ),
        _alert(
            c,
            "PyParallelModuleReenablesGIL",
            f"pyparallel_import_gil_enabled{{{sel}}} == 1\n"
            f"and on({role})\n  {free_threaded}",
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
