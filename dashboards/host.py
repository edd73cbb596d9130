"""The per-host "Python parallelism" dashboard: speedup, efficiency and core use of one exporter."""

from __future__ import annotations

from typing import Any

from grafanalib import core as g

from dashboards.mixin_config import CONFIG, MixinConfig
from dashboards.panels import (
    DATASOURCE,
    Grid,
    dashed,
    datasource_variable,
    make_dashboard,
    query_variable,
    stat,
    steps,
    timeseries,
    value_text,
)
from dashboards.recording import speedup_baseline, speedup_median

HOST = 'job=~"$job", instance=~"$instance"'
INTERPRETER = HOST + ', interpreter=~"$interpreter"'
PROBE = INTERPRETER + ', workload=~"$workload"'
PROBE_LEGEND = "{{interpreter}} {{workload}} {{mode}} ×{{workers}}"

ON_OFF = value_text({"0": ("off", "green"), "1": ("on", "orange")})
CORE_STEPS = [{"color": "blue", "value": None}, {"color": "green", "value": 0.5}, {"color": "orange", "value": 0.9}]
OK_FAIL = value_text({"0": ("failing", "red"), "1": ("ok", "green")})


def variables() -> list[g.Template]:
    return [
        datasource_variable(),
        query_variable("job", "Job", "label_values(pyparallel_exporter_build_info, job)", multi=False),
        query_variable(
            "instance", "Instance", 'label_values(pyparallel_exporter_build_info{job=~"$job"}, instance)', multi=False
        ),
        query_variable(
            "interpreter", "Interpreter", f"label_values(pyparallel_python_info{{{HOST}}}, interpreter)", multi=True
        ),
        query_variable(
            "workload", "Workload", f"label_values(pyparallel_probe_success{{{INTERPRETER}}}, workload)", multi=True
        ),
    ]


def upgrade_annotation(config: MixinConfig) -> dict[str, Any]:
    """Marks where an interpreter's Python version changed.

    `changes(pyparallel_python_info[...])` stays 0 (the value is always 1; a new version is a
    new series), so the annotation shows the current info series while two versions of the
    same interpreter were seen within the window.
    """
    window = config.annotation_window
    return {
        "name": "Python version change",
        "datasource": DATASOURCE,
        "enable": True,
        "hide": False,
        "iconColor": "orange",
        "expr": (
            f"pyparallel_python_info{{{HOST}}}\n"
            "and on(job, instance, interpreter)\n"
            f"  (count by (job, instance, interpreter) (max_over_time(pyparallel_python_info{{{HOST}}}[{window}])) > 1)"
        ),
        "step": "60s",
        "titleFormat": "Python version change",
        "textFormat": "{{interpreter}} is now {{implementation}} {{version}} (free-threaded build: {{free_threaded_build}})",
        "tagKeys": "interpreter,version",
        "useValueForTime": False,
    }


def overview(grid: Grid, config: MixinConfig) -> None:
    grid.row("Overview")
    grid.add(stat(
        "Speedup by mode",
        "Latest speedup T1·N/TN of each mode (best worker count). Ideal is the number of workers.",
        (f'max by (interpreter, workload, mode) (pyparallel_speedup_ratio{{{PROBE}, mode!="sequential"}})',
         "{{interpreter}} {{workload}} {{mode}}"),
        decimals=2,
        thresholds=steps(config.speedup_colour_steps),
    ), w=8, h=6)
    grid.add(stat(
        "GIL enabled at run time",
        "Whether the GIL is on in each interpreter while the probes run (always on for non-free-threaded builds).",
        (f"pyparallel_gil_enabled{{{INTERPRETER}}}", "{{interpreter}}"),
        mappings=ON_OFF,
    ), w=4, h=6)
    grid.add(stat(
        "Python version",
        "Version, implementation and build of each configured interpreter.",
        (f"pyparallel_python_info{{{INTERPRETER}}}",
         "{{interpreter}}: {{implementation}} {{version}}, free-threaded build {{free_threaded_build}}"),
        text_mode="name",
    ), w=4, h=6)
    grid.add(stat(
        "Probes succeeding",
        "Share of probes whose last round succeeded.",
        (f"avg(pyparallel_probe_success{{{PROBE}}})", "probes"),
        unit="percentunit",
        thresholds=steps(config.success_colour_steps),
    ), w=4, h=6)
    grid.add(stat(
        "Host CPUs",
        "Logical and physical CPUs, and the usable ones (affinity and cgroup CPU quota): the ceiling of process speedup.",
        (f"pyparallel_host_cpus{{{HOST}}}", "{{kind}}"),
    ), w=4, h=6)
    grid.add(stat(
        "Modes available",
        "Which parallelism modes each interpreter offers (subinterpreters need Python 3.14).",
        (f"pyparallel_mode_available{{{INTERPRETER}}}", "{{interpreter}} {{mode}}"),
        mappings=value_text({"0": ("not available", "text"), "1": ("available", "green")}),
    ), w=24, h=4)


def speedup(grid: Grid, config: MixinConfig) -> None:
    grid.row("Speedup")
    grid.add(timeseries(
        "Speedup by mode (ideal = workers)",
        "Speedup of every probe. Dashed: the ideal (the worker count) and the usable cores, which cap process speedup.",
        (f"pyparallel_speedup_ratio{{{PROBE}}}", PROBE_LEGEND),
        # efficiency = speedup / workers, so their quotient is the worker count as a number.
        (f"max by (workers) (pyparallel_speedup_ratio{{{PROBE}}} / (pyparallel_efficiency_ratio{{{PROBE}}} > 0))",
         "ideal ×{{workers}}"),
        (f'pyparallel_host_cpus{{{HOST}, kind="usable"}}', "usable cores"),
        minimum=0,
        overrides=[dashed("^(ideal|usable).*")],
    ), w=24, h=10)
    grid.add(timeseries(
        f"Speedup, {config.speedup_median_window} median",
        "The recorded median the regression alerts compare with the baseline.",
        (f"{speedup_median(config)}{{{PROBE}}}", PROBE_LEGEND),
        minimum=0,
    ), w=12)
    grid.add(timeseries(
        f"Speedup baseline ({config.baseline_window} median ending {config.baseline_offset} ago)",
        "What the speedup used to be; a regression alert fires when the current median falls well below it.",
        (f"{speedup_baseline(config)}{{{PROBE}}}", PROBE_LEGEND),
        minimum=0,
    ), w=12)


def efficiency(grid: Grid) -> None:
    grid.row("Efficiency and serial fraction")
    grid.add(timeseries(
        "Parallel efficiency (speedup / workers)",
        "1.0 means every worker adds a full core's worth of work.",
        (f'pyparallel_efficiency_ratio{{{PROBE}, mode!="sequential"}}', PROBE_LEGEND),
        unit="percentunit", minimum=0,
    ), w=8)
    grid.add(timeseries(
        "Serial fraction (Karp–Flatt)",
        "Experimentally determined serial fraction; near 1 when a lock (the GIL) serialises the work.",
        (f'pyparallel_serial_fraction_ratio{{{PROBE}, mode!="sequential"}}', PROBE_LEGEND),
        unit="percentunit",
    ), w=8)
    grid.add(timeseries(
        "Speedup spread over repeats",
        "Relative spread of the speedup across the repeats of one round; high values mean a noisy host.",
        (f"pyparallel_speedup_spread_ratio{{{PROBE}}}", PROBE_LEGEND),
        unit="percentunit", minimum=0,
    ), w=8)
    grid.add(timeseries(
        "Throughput",
        "Work units per second of every probe.",
        (f"pyparallel_throughput_units_per_second{{{PROBE}}}", PROBE_LEGEND),
        unit="short", minimum=0,
    ), w=24)


def cores(grid: Grid) -> None:
    grid.row("CPU cores")
    grid.add(g.BarGauge(
        title="Per-core utilisation by mode (last round)",
        description=("Busy fraction of each logical CPU while the probe ran: under the GIL "
                     "threads keep about one core busy, processes all of them."),
        dataSource=DATASOURCE,
        targets=[g.Target(
            expr=f"avg by (interpreter, mode, cpu) (pyparallel_core_utilisation_ratio{{{PROBE}}})",
            legendFormat="{{interpreter}} {{mode}} cpu{{cpu}}",
            refId="A", datasource=DATASOURCE, instant=True,
        )],
        format="percentunit", min=0, max=1, orientation="horizontal", displayMode="gradient",
        calc="lastNotNull",
        thresholds=CORE_STEPS,
        # grafanalib writes the Grafana 6 `fieldOptions`; Grafana 7+ reads fieldConfig.
        extraJson={"fieldConfig": {"defaults": {
            "unit": "percentunit", "min": 0, "max": 1, "thresholds": {"mode": "absolute", "steps": CORE_STEPS},
        }}},
    ), w=12, h=10)
    grid.add(timeseries(
        "Per-core utilisation over time",
        "Busy fraction of each logical CPU during the timed window of each probe.",
        (f"pyparallel_core_utilisation_ratio{{{PROBE}}}", "{{interpreter}} {{workload}} {{mode}} ×{{workers}} cpu{{cpu}}"),
        unit="percentunit", minimum=0,
    ), w=12, h=10)
    grid.add(timeseries(
        "Cores used (CPU seconds / wall seconds)",
        "How many cores the probe kept busy on average; compare with the speedup to see overhead.",
        (f"pyparallel_cpu_cores_used{{{PROBE}}}", PROBE_LEGEND),
        (f'pyparallel_host_cpus{{{HOST}, kind="usable"}}', "usable cores"),
        minimum=0,
        overrides=[dashed("^usable.*")],
    ), w=12)
    grid.add(timeseries(
        "Worker start-up cost by mode",
        "Time to start the pool of workers (threads, processes, subinterpreters); not part of the timed window.",
        (f"pyparallel_worker_startup_seconds{{{INTERPRETER}}}", "{{interpreter}} {{mode}} ×{{workers}}"),
        unit="s", minimum=0,
    ), w=12)


def health(grid: Grid, config: MixinConfig) -> None:
    grid.row("Probe health")
    grid.add(g.StateTimeline(
        title="Probe success",
        description="1 when the last round of the probe succeeded.",
        dataSource=DATASOURCE,
        targets=[g.Target(
            expr=f"pyparallel_probe_success{{{PROBE}}}", legendFormat=PROBE_LEGEND, refId="A", datasource=DATASOURCE,
        )],
        mappings=OK_FAIL,
        showValue="never",
    ), w=12, h=8)
    grid.add(timeseries(
        "Probe duration",
        "Wall time of each probe, all repeats included.",
        (f"pyparallel_probe_duration_seconds{{{PROBE}}}", PROBE_LEGEND),
        unit="s", minimum=0,
    ), w=12)
    grid.add(timeseries(
        f"Probe failures by reason (increase over {config.failure_window})",
        "Failed probe runs by reason: error, crash, timeout, interpreter (could not start it). 0 when none failed.",
        ((f"sum by (interpreter, reason) (increase(pyparallel_probe_failures_total{{{PROBE}}}[{config.failure_window}]))\n"
          'or on() label_replace(vector(0), "reason", "none", "", "")'),
         "{{interpreter}} {{reason}}"),
        unit="short", minimum=0,
    ), w=8)
    grid.add(timeseries(
        "Time since last successful probe",
        f"Staleness; the alert fires above {config.stale_intervals} probe intervals (dashed).",
        (f"time() - pyparallel_probe_last_success_timestamp_seconds{{{PROBE}}}", PROBE_LEGEND),
        (f"{config.stale_intervals} * pyparallel_probe_interval_seconds{{{HOST}}}", "stale threshold"),
        unit="s", minimum=0,
        overrides=[dashed("^stale threshold$")],
    ), w=8)
    grid.add(timeseries(
        "Round duration and interval",
        "Wall time of a whole probe round against the interval in force (stretched when rounds exceed the duty-cycle budget).",
        (f"pyparallel_round_duration_seconds{{{HOST}}}", "round duration"),
        (f"pyparallel_probe_interval_seconds{{{HOST}}}", "interval"),
        unit="s", minimum=0,
        overrides=[dashed("^interval$")],
    ), w=8)
    grid.add(stat(
        "Duty cycle",
        "Share of the time the exporter spends running probes; the probes disturb the host this much.",
        (f"pyparallel_duty_cycle_ratio{{{HOST}}}", "duty cycle"),
        unit="percentunit",
    ), w=6, h=4)
    grid.add(stat(
        "Config reload",
        "Whether the last configuration reload succeeded.",
        (f"pyparallel_config_last_reload_successful{{{HOST}}}", "last reload"),
        mappings=value_text({"0": ("failed", "red"), "1": ("ok", "green")}),
    ), w=6, h=4)
    grid.add(stat(
        "Exporter version",
        "Version of python-parallelism-exporter.",
        (f"pyparallel_exporter_build_info{{{HOST}}}", "{{version}}"),
        text_mode="name",
    ), w=6, h=4)
    grid.add(stat(
        "Modules re-enabling the GIL on import",
        "Configured modules whose import turned the GIL back on in a free-threaded build.",
        (f"pyparallel_import_gil_enabled{{{INTERPRETER}}}", "{{interpreter}} {{module}}"),
        mappings=value_text({"0": ("GIL stays off", "green"), "1": ("re-enables GIL", "orange")}),
    ), w=6, h=4)


def comparison(grid: Grid) -> None:
    grid.row("Interpreter comparison")
    grid.add(timeseries(
        "Speedup per mode and interpreter",
        "Best speedup of each mode on each interpreter; a free-threaded build lifts threads towards processes.",
        (f'max by (interpreter, mode) (pyparallel_speedup_ratio{{{PROBE}, mode!="sequential"}})', "{{interpreter}} {{mode}}"),
        minimum=0,
    ), w=12, h=10)
    grid.add(timeseries(
        "Efficiency per mode and interpreter",
        "Best parallel efficiency of each mode on each interpreter.",
        (f'max by (interpreter, mode) (pyparallel_efficiency_ratio{{{PROBE}, mode!="sequential"}})', "{{interpreter}} {{mode}}"),
        unit="percentunit", minimum=0,
    ), w=12, h=10)


def build(config: MixinConfig = CONFIG) -> g.Dashboard:
    grid = Grid()
    overview(grid, config)
    speedup(grid, config)
    efficiency(grid)
    cores(grid)
    health(grid, config)
    comparison(grid)
    return make_dashboard(
        title=config.host_dashboard_title,
        uid=config.host_dashboard_uid,
        description=("How well Python runs CPU-bound work in parallel on one host: "
                     "threads, processes, asyncio and subinterpreters."),
        tags=config.dashboard_tags,
        refresh=config.dashboard_refresh,
        time_from=config.dashboard_time_from,
        variables=variables(),
        panels=grid.panels,
        annotations=[upgrade_annotation(config)],
    )


dashboard = build()
