"""Alerts about each exporter and its probe steps: they read the exporter's raw series, so they
are evaluated by the Prometheus that scrapes it (`pyparallel-exporter-alerts.yml`).

Each expression is passed through ``MixinConfig.host_of``, so every alert names its host even
where the scrape config sets no host label.
"""

from __future__ import annotations

from typing import Any

from dashboards.alerting import STEP, VALUE, alert, probe_text
from dashboards.mixin_config import CONFIG, MixinConfig

EXPORTER_GROUP = "pyparallel.exporter"


def on_instance(c: MixinConfig) -> str:
    """Labels that match a probe's series with its exporter's own (per scrape target)."""
    return ", ".join(dict.fromkeys([*c.selector_labels, "instance"]))


def _probe_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    sel = c.exporter_selector
    where = probe_text(c)
    target = on_instance(c)
    step = f"{target}, {STEP}"
    rounds = c.probe_failing_rounds
    return [
        alert(
            c,
            "PyParallelExporterDown",
            c.host_of(f"up{{{sel}}} == 0"),
            c.exporter_down_for,
            "The parallelism exporter on {{ $labels.%s }} cannot be scraped." % c.host_label,
            "Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}) on "
            f"{{{{ $labels.{c.host_label} }}}} for {c.exporter_down_for}; no probe results arrive from it.",
        ),
        alert(
            c,
            # Counted in rounds, so it means the same at any probe interval. Unavailable
            # modes (subinterpreters before 3.14) have no probe_success series, only
            # pyparallel_mode_available 0, so they never match here.
            "PyParallelProbeFailing",
            c.host_of(
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
                ")"),
            c.probe_failing_for,
            "A parallelism probe keeps failing.",
            f"The probe {where} failed and has not succeeded for {rounds - 0.25:g} probe intervals "
            f"(about {rounds} rounds); see pyparallel_probe_failures_total by reason.",
        ),
        alert(
            c,
            # Alertmanager inhibits it while PyParallelProbeFailing fires for the same probe:
            # then the probe runs but fails. Alone, it means the rounds stopped.
            "PyParallelProbeResultsStale",
            c.host_of(
                f"time() - pyparallel_probe_last_success_timestamp_seconds{{{sel}}}\n"
                f"  > on({target}) group_left()\n"
                f"    {c.stale_intervals} * pyparallel_probe_interval_seconds{{{sel}}}"),
            c.stale_for,
            "Parallelism probe results are stale.",
            f"The probe {where} last succeeded {{{{ $value | humanizeDuration }}}} ago, "
            f"more than {c.stale_intervals} probe intervals.",
        ),
        alert(
            c,
            # The daemon stretches the interval to round / duty_cycle, so this holds when
            # rounds run back to back (duty_cycle 1) or a reload set an interval shorter than
            # the last round.
            "PyParallelRoundLongerThanInterval",
            c.host_of(
                f"pyparallel_round_duration_seconds{{{sel}}}\n"
                f"  >= on({target}) group_left()\n"
                f"    pyparallel_probe_interval_seconds{{{sel}}}"),
            c.rounds_for,
            "A probe round takes as long as the probe interval.",
            "The last probe round on {{ $labels.instance }} took {{ $value | humanizeDuration }}, "
            "at least the probe interval: rounds run back to back and the probes load the host "
            "all the time.",
        ),
        alert(
            c,
            "PyParallelConfigReloadFailed",
            c.host_of(f"pyparallel_config_last_reload_successful{{{sel}}} == 0"),
            c.config_reload_for,
            "The parallelism exporter failed to reload its configuration.",
            "The exporter on {{ $labels.instance }} rejected its configuration file at the last "
            "reload and keeps running with the previous one.",
        ),
    ]


def _free_threaded_gil_off(c: MixinConfig) -> str:
    """`and` clause: interpreters built free-threaded whose GIL was off at run time."""
    sel = c.exporter_selector
    role = on_instance(c) + ", interpreter"
    return (
        f"and on({role})\n  pyparallel_gil_enabled{{{sel}}} == 0\n"
        f'and on({role})\n  pyparallel_python_info{{{sel}, free_threaded_build="true"}}'
    )


def _capacity_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    sel = c.exporter_selector
    where = probe_text(c)
    target = on_instance(c)
    fraction = c.processes_min_speedup_fraction
    window = c.processes_smoothing_window
    return [
        alert(
            c,
            # Achievable speedup is min(workers, usable cores). Workers is a label, not a
            # number, so "speedup < f * min(w, u)" is written as its two halves:
            # speedup < f * usable cores, and efficiency (speedup / workers) < f. Medians
            # over several rounds, so one noisy round neither fires nor clears it; a busy
            # host exports no speedup (cannot tell), so it never reads as a shortfall.
            "PyParallelProcessesSpeedupFarBelowUsableCores",
            c.host_of(
                "(\n"
                f"  quantile_over_time(0.5, pyparallel_speedup_ratio{{{sel}, mode=\"processes\", "
                f"{c.cpu_bound_workload_selector}}}[{window}])\n"
                f"    < on({target}) group_left()\n"
                f'      {fraction:g} * pyparallel_host_cpus{{{sel}, kind="usable"}}\n'
                ")\n"
                "and\n"
                f'  quantile_over_time(0.5, pyparallel_efficiency_ratio{{{sel}, mode="processes"}}[{window}])'
                f" < {fraction:g}"),
            c.processes_far_below_for,
            "Process-parallel speedup is far below the usable CPU cores.",
            f"The probe {where} reaches a median speedup of {VALUE} over "
            f"{window}, less than {fraction:g} of min(workers, usable cores); the host or "
            "container is not giving the exporter the cores it reports as usable.",
        ),
        alert(
            c,
            # The same round on the same host: host noise moves both modes alike, and no
            # reference is needed. GIL-enabled interpreters are left to the GIL alert.
            "PyParallelFreeThreadedThreadsFarBelowProcesses",
            c.host_of(
                f'pyparallel_speedup_ratio{{{sel}, mode="threads", {c.cpu_bound_workload_selector}}}\n'
                f"  < on({target}, interpreter, workload, workers) group_left()\n"
                f'    {c.threads_vs_processes_fraction:g} * pyparallel_speedup_ratio{{{sel}, mode="processes"}}\n'
                f"{_free_threaded_gil_off(c)}"),
            c.rounds_for,
            "Threads of a free-threaded Python fall far behind processes.",
            f"The threads probe {where} reaches a speedup of {VALUE}, less "
            f"than {c.threads_vs_processes_fraction:g} of the processes speedup of the same round, "
            "although the GIL is off: something serialises the threads (a lock, a shared object, "
            "reference-count contention).",
        ),
        alert(
            c,
            # CPU time, not wall-clock speedup: robust to a noisy baseline. Only conclusive
            # rounds count: on a busy host the threads could not have had the cores.
            "PyParallelFreeThreadedThreadsNotParallel",
            c.host_of(
                f'pyparallel_cpu_cores_used{{{sel}, mode="threads", workers!="1", {c.cpu_bound_workload_selector}}}\n'
                f"  < {c.serial_cores_max:g}\n"
                f"{_free_threaded_gil_off(c)}\n"
                f"and on({target})\n"
                f'  pyparallel_host_cpus{{{sel}, kind="usable"}} >= 2\n'
                f"and on({target}, {STEP})\n"
                f"  pyparallel_step_conclusive{{{sel}}} == 1"),
            c.rounds_for,
            "Threads of a free-threaded Python no longer run in parallel.",
            f"The threads probe {where} kept only {VALUE} cores busy with "
            "its workers on a free-threaded build whose GIL is off: the threads take turns "
            "instead of running in parallel.",
        ),
    ]


def _gil_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    sel = c.exporter_selector
    role = on_instance(c) + ", interpreter"
    free_threaded = f'pyparallel_python_info{{{sel}, free_threaded_build="true"}}'
    host = f"{{{{ $labels.{c.host_label} }}}}"
    return [
        alert(
            c,
            # Not for an interpreter configured with PYTHON_GIL=1 on purpose (a control).
            "PyParallelGILEnabledOnFreeThreadedBuild",
            c.host_of(
                f"pyparallel_gil_enabled{{{sel}}} == 1\n"
                f"and on({role})\n  {free_threaded}\n"
                f"unless on({role})\n  pyparallel_gil_requested{{{sel}}} == 1"),
            c.rounds_for,
            "A free-threaded Python build runs with the GIL enabled.",
            f"{{{{ $labels.interpreter }}}} on {host} is a free-threaded build, but "
            "the GIL was enabled at run time although its configuration does not ask for it "
            "(PYTHON_GIL=1), so threads cannot run Python code in parallel.",
        ),
        alert(
            c,
            "PyParallelModuleReenablesGIL",
            c.host_of(
                f"pyparallel_import_gil_enabled{{{sel}}} == 1\n"
                f"and on({role})\n  {free_threaded}"),
            c.rounds_for,
            "Importing {{ $labels.module }} re-enables the GIL.",
            f"On the free-threaded build {{{{ $labels.interpreter }}}} on {host}, "
            "importing {{ $labels.module }} turns the GIL back on; any program importing it "
            "loses thread parallelism.",
            severity=c.info_severity,
        ),
    ]


def exporter_alerts_group(config: MixinConfig = CONFIG) -> dict[str, Any]:
    """The `pyparallel.exporter` group, in Prometheus rule-file form."""
    return {
        "name": EXPORTER_GROUP,
        "rules": _probe_alerts(config) + _capacity_alerts(config) + _gil_alerts(config),
    }
