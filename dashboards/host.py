"""The per-host "Python parallelism" dashboard: speedup, efficiency and core use of one exporter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grafanalib import core as g

from dashboards.mixin_config import CONFIG, MixinConfig
from dashboards.panels import (
    DATASOURCE,
    Grid,
    dashed,
    datasource_variable,
    make_dashboard,
    over,
    query_variable,
    stat,
    steps,
    targets,
    timeseries,
    value_text,
)
from dashboards.recording import (
    blind_since,
    host_targets,
    identity_since,
    reference,
    speedup_median,
)

# The host dashboard follows one host (the host label, stable across pod rollouts, or the
# fallback label where the scrape config sets none) rather than one scrape address: the host
# variable reads the recorded series, which name every host, and the instance variable lists
# that host's scrape targets for the panels that read the exporter's own series.
PROBE_LEGEND = "{{interpreter}} {{workload}} {{mode}} ×{{workers}}"
STEP_BY = "interpreter, workload, mode, workers"

CORES = "suffix: cores"  # Grafana's custom unit: the value and the word
ON_OFF = value_text({"0": ("off", "green"), "1": ("on", "orange")})
CORE_STEPS = [{"color": "blue", "value": None}, {"color": "green", "value": 0.5}, {"color": "orange", "value": 0.9}]
OK_FAIL = value_text({"0": ("failing", "red"), "1": ("ok", "green")})


def job_selector(config: MixinConfig) -> str:
    """The selector's matchers other than `job`, and the job variable."""
    return ", ".join(m for m in (config.dashboard_selector, 'job=~"$job"') if m)


@dataclass(frozen=True)
class Selectors:
    """Matchers of one host, its interpreters and its probes, for one MixinConfig: `host`,
    `interpreter` and `probe` for the exporter's series (by scrape target), `recorded_*`
    for the recording rules' (by host)."""

    host: str
    interpreter: str
    probe: str
    recorded_interpreter: str
    recorded_probe: str

    @classmethod
    def of(cls, config: MixinConfig) -> Selectors:
        host = f'{job_selector(config)}, instance=~"$instance"'
        recorded = f'{job_selector(config)}, {config.host_label}=~"$host", interpreter=~"$interpreter"'
        interpreter = host + ', interpreter=~"$interpreter"'
        return cls(host, interpreter, interpreter + ', workload=~"$workload"',
                   recorded, recorded + ', workload=~"$workload"')


def variables(config: MixinConfig) -> list[g.Template]:
    s = Selectors.of(config)
    # Every job that exports the metrics, whatever its name: the stock JSON works for all.
    jobs = f"label_values(pyparallel_exporter_build_info{{{config.dashboard_selector}}}, job)"
    return [
        datasource_variable(),
        query_variable("job", "Job", jobs, multi=False),
        query_variable(
            "host", "Host", f"label_values({host_targets(config)}{{{job_selector(config)}}}, {config.host_label})",
            multi=False,
        ),
        query_variable(
            "instance", "Scrape target",
            f'label_values({host_targets(config)}{{{job_selector(config)}, {config.host_label}=~"$host"}}, instance)',
            multi=True, all_matches_any=False,
        ),
        query_variable(
            "interpreter", "Interpreter", f"label_values(pyparallel_python_info{{{s.host}}}, interpreter)", multi=True
        ),
        query_variable(
            "workload", "Workload", f"label_values(pyparallel_probe_success{{{s.interpreter}}}, workload)",
            multi=True, default=config.headline_workload,
        ),
    ]


def upgrade_annotation(config: MixinConfig) -> dict[str, Any]:
    """Marks where the Python identity (version, implementation, build) of a role on this host
    changed.

    Reads the host-level identity rule, so a rollout that changes `instance` keeps one series.
    `changes()` cannot see it (a new identity is a new series), so the annotation shows while
    two identities of one role were seen within the window.
    """
    window = config.annotation_window
    s = Selectors.of(config)
    identities = f"{identity_since(config)}{{{s.recorded_interpreter}}}"
    return {
        "name": "Python version change",
        "datasource": DATASOURCE,
        "enable": True,
        "hide": False,
        "iconColor": "orange",
        "expr": (
            f"{identities}\n"
            f"and on({config.role_by})\n"
            f"  (count by ({config.role_by}) (last_over_time({identities}[{window}])) > 1)"
        ),
        "step": "5m",
        "titleFormat": "Python change",
        "textFormat": "{{interpreter}} is now {{implementation}} {{version}} (free-threaded build: {{free_threaded_build}})",
        "tagKeys": "interpreter,version,implementation,free_threaded_build",
        "useValueForTime": False,
    }


def state_interval(config: MixinConfig) -> str:
    """Step of the panels that read the state group's series: two of its evaluations, so each
    step holds one of its samples whatever the group's phase."""
    from dashboards.mixin_config import duration, seconds

    return duration(2 * seconds(config.state_interval))


def questions(grid: Grid, config: MixinConfig) -> None:
    """The four questions the dashboard answers, each from one panel at the top."""
    s = Selectors.of(config)
    grid.row("The four questions")
    grid.add(stat(
        "Do threads run in parallel?",
        "Parallel efficiency of the threads probe (speedup / workers), per interpreter and worker count, last "
        "round: 1/workers (50 % with 2) when the GIL or a lock serialises the threads, near 100 % when they run "
        "in parallel. The colours mean the same at any worker count. Empty while the host was too busy to tell.",
        (f'max by ({STEP_BY}) (pyparallel_efficiency_ratio{{{s.probe}, mode="threads"}})',
         "{{interpreter}} {{workload}} ×{{workers}}"),
        unit="percentunit",
        thresholds=steps(config.efficiency_colour_steps),
    ), w=6, h=8)
    grid.add(timeseries(
        f"Did it change after the upgrade? ({config.speedup_median_window} median and reference)",
        f"The {config.speedup_median_window} median speedup per host and interpreter role (solid) and the reference "
        f"it is compared with (dashed): it follows the level slowly while the probe is healthy and holds still "
        f"while a drop lasts (up to {config.regression_memory}) or the host is too busy to tell. Orange marks: "
        "Python version, implementation or build changes of the role.",
        (over(f'{speedup_median(config)}{{{s.recorded_probe}, mode!="sequential"}}', "last"), PROBE_LEGEND),
        (over(f"{reference(config)}{{{s.recorded_probe}}}", "last"), "reference " + PROBE_LEGEND),
        minimum=0,
        overrides=[dashed("^reference .*")],
        interval=state_interval(config),
    ), w=8, h=8)
    grid.add(timeseries(
        "Is the host giving me the cores?",
        "Cores the processes probe kept busy against the usable cores (affinity and CPU quota), and the cores "
        "other processes used during the probes (interference).",
        (over(f'pyparallel_cpu_cores_used{{{s.probe}, mode="processes"}}'), PROBE_LEGEND),
        (over(f'pyparallel_host_cpus{{{s.host}, kind="usable"}}', "min"), "usable cores"),
        (over(f"pyparallel_interference_cores{{{s.probe}}}"), "other load during " + PROBE_LEGEND),
        unit=CORES,
        minimum=0,
        overrides=[dashed("^usable.*")],
        interval=config.dashboard_min_interval,
    ), w=6, h=8)
    # Every workload of the host's interpreters, not only the selected one: health is per probe.
    fresh = (
        f"pyparallel_probe_success{{{s.interpreter}}} == 1\n"
        f"and on(instance, {STEP_BY})\n"
        f"  time() - pyparallel_probe_last_success_timestamp_seconds{{{s.interpreter}}}\n"
        f"    < on(instance) group_left() {config.stale_intervals} * pyparallel_probe_interval_seconds{{{s.host}}}"
    )
    grid.add(stat(
        "Is the probe healthy?",
        f"Share of all probes (every workload) whose last round succeeded within the last "
        f"{config.stale_intervals} probe intervals, so stopped rounds count as unhealthy.",
        (f"(count({fresh}) or vector(0))\n/ count(pyparallel_probe_success{{{s.interpreter}}})", "probes fresh and ok"),
        thresholds=steps(config.success_colour_steps),
        unit="percentunit",
        text_mode="value_and_name",
    ), w=4, h=4)
    grid.add(stat(
        "Probe intervals since the last result",
        f"Time since each probe's last success, in probe intervals; above "
        f"{config.stale_intervals} the rounds have stopped or keep failing.",
        (f"max by (instance, {STEP_BY}) (time() - pyparallel_probe_last_success_timestamp_seconds{{{s.probe}}})\n"
         f"/ on(instance) group_left() pyparallel_probe_interval_seconds{{{s.host}}}", PROBE_LEGEND),
        decimals=1,
        thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1.5},
                    {"color": "red", "value": float(config.stale_intervals)}],
    ), w=4, h=4)


def overview(grid: Grid, config: MixinConfig) -> None:
    s = Selectors.of(config)
    grid.row("Overview")
    grid.add(stat(
        "Speedup by mode",
        "Latest speedup T1·N/TN of each probe. Ideal is the number of workers (no colours: a good speedup "
        "depends on it; \"Do threads run in parallel?\" colours the efficiency).",
        (f'max by ({STEP_BY}) (pyparallel_speedup_ratio{{{s.probe}, mode!="sequential"}})', PROBE_LEGEND),
        decimals=2,
    ), w=8, h=6)
    grid.add(stat(
        "GIL enabled at run time",
        "Whether the GIL is on in each interpreter while the probes run (always on for non-free-threaded builds).",
        (f"max by (interpreter) (pyparallel_gil_enabled{{{s.interpreter}}})", "{{interpreter}}"),
        mappings=ON_OFF,
    ), w=4, h=6)
    grid.add(stat(
        "Python version",
        "Version, implementation and build behind each interpreter role (the `interpreter` label names the "
        "role, e.g. `default`; the version is here).",
        (f"pyparallel_python_info{{{s.interpreter}}}",
         "{{interpreter}}: {{implementation}} {{version}}, free-threaded build {{free_threaded_build}}"),
        text_mode="name",
    ), w=4, h=6)
    grid.add(stat(
        "GIL asked for (PYTHON_GIL=1)",
        "Interpreters configured with PYTHON_GIL=1 on purpose, e.g. a free-threaded build run as a GIL control.",
        (f"max by (interpreter) (pyparallel_gil_requested{{{s.interpreter}}})", "{{interpreter}}"),
        mappings=value_text({"0": ("no", "text"), "1": ("yes", "blue")}),
    ), w=4, h=6)
    grid.add(stat(
        "Host CPUs",
        "Logical and physical CPUs, and the usable ones (affinity and cgroup CPU quota): the ceiling of process speedup.",
        (f"max by (kind) (pyparallel_host_cpus{{{s.host}}})", "{{kind}}"),
    ), w=4, h=6)
    grid.add(stat(
        "Modes available",
        "Which parallelism modes each interpreter offers (subinterpreters need Python 3.14).",
        (f"max by (interpreter, mode) (pyparallel_mode_available{{{s.interpreter}}})", "{{interpreter}} {{mode}}"),
        mappings=value_text({"0": ("not available", "text"), "1": ("available", "green")}),
    ), w=24, h=4)


def speedup(grid: Grid, config: MixinConfig) -> None:
    s = Selectors.of(config)
    grid.row("Speedup")
    grid.add(timeseries(
        "Speedup by mode (ideal = workers)",
        "Speedup of every probe. Dashed: the ideal (the worker count) and the usable cores, which cap process speedup.",
        (over(f"pyparallel_speedup_ratio{{{s.probe}}}"), PROBE_LEGEND),
        # efficiency = speedup / workers, so their quotient is the worker count as a number.
        (f"max by (workers) (\n  {over(f'pyparallel_speedup_ratio{{{s.probe}}}')}\n"
         f"  / ({over(f'pyparallel_efficiency_ratio{{{s.probe}}}')} > 0)\n)",
         "ideal ×{{workers}}"),
        (over(f'pyparallel_host_cpus{{{s.host}, kind="usable"}}', "min"), "usable cores"),
        minimum=0,
        overrides=[dashed("^(ideal|usable).*")],
        interval=config.dashboard_min_interval,
    ), w=12, h=10)
    grid.add(timeseries(
        "Speedup and its 95 % interval",
        "Each probe's speedup with the bounds of its 95 % confidence interval (dashed), from the paired "
        "parallel and sequential windows. A wide interval means a noisy host; an unsteady step exports none.",
        (over(f'pyparallel_speedup_ratio{{{s.probe}, mode!="sequential"}}'), PROBE_LEGEND),
        (over(f"pyparallel_speedup_lower_ratio{{{s.probe}}}"), "lower " + PROBE_LEGEND),
        (over(f"pyparallel_speedup_upper_ratio{{{s.probe}}}"), "upper " + PROBE_LEGEND),
        minimum=0,
        overrides=[dashed("^(lower|upper) .*")],
        interval=config.dashboard_min_interval,
    ), w=12, h=10)


def where_it_went(grid: Grid, config: MixinConfig) -> None:
    """Speedup = cores used × CPU rate ratio: which of the two fell short, and why."""
    s = Selectors.of(config)
    grid.row("Where the speedup went")
    grid.add(timeseries(
        "Cores used (CPU seconds / wall seconds)",
        "How many cores the probe kept busy on average; far below the workers means serialisation "
        "(the GIL, one event loop).",
        (over(f"pyparallel_cpu_cores_used{{{s.probe}}}"), PROBE_LEGEND),
        (over(f'pyparallel_host_cpus{{{s.host}, kind="usable"}}', "min"), "usable cores"),
        unit=CORES,
        minimum=0,
        overrides=[dashed("^usable.*")],
        interval=config.dashboard_min_interval,
    ), w=8)
    grid.add(timeseries(
        "CPU rate ratio (work per CPU second vs sequential)",
        "Work done per CPU second in the parallel window relative to the sequential one; below 1 the cores "
        "were busy but each slower: shared physical cores, memory bandwidth, a noisy neighbour.",
        (over(f'pyparallel_cpu_rate_ratio{{{s.probe}, mode!="sequential"}}'), PROBE_LEGEND),
        unit="percentunit", minimum=0,
        interval=config.dashboard_min_interval,
    ), w=8)
    grid.add(timeseries(
        "Interference: other processes' cores during the probe",
        "CPU other processes used while the probe ran, in cores (median over the step's windows). When it "
        "leaves fewer free cores than the workers can use, the round is inconclusive: no speedup is exported.",
        (over(f"pyparallel_interference_cores{{{s.probe}}}"), PROBE_LEGEND),
        unit=CORES,
        minimum=0,
        interval=config.dashboard_min_interval,
    ), w=8)
    grid.add(timeseries(
        "Conclusive rounds (0 = cannot tell)",
        "1 when the round's free cores could show the parallelism it measures, 0 when the host was too busy to "
        "tell (no speedup exported, the regression alerts see nothing). The worst round in each step is drawn.",
        (over(f"pyparallel_step_conclusive{{{s.probe}}}", "min"), PROBE_LEGEND),
        minimum=0,
        interval=config.dashboard_min_interval,
    ), w=8)
    grid.add(stat(
        "Regression detection blind since",
        f"Probes whose every round since this time was inconclusive; PyParallelRegressionDetectionBlind fires "
        f"after {config.blind_after}. Empty when the last round of every probe was conclusive.",
        (f"(last_over_time({blind_since(config)}{{{s.recorded_probe}}}[{state_interval(config)}]) > 0) * 1000",
         PROBE_LEGEND),
        unit="dateTimeFromNow",
    ), w=8, h=8)
    grid.add(timeseries(
        "Hypervisor steal",
        "Share of CPU time the hypervisor gave to other guests during the probe (exported where the kernel "
        "reports steal time).",
        (over(f"pyparallel_steal_ratio{{{s.probe}}}"), PROBE_LEGEND),
        unit="percentunit", minimum=0,
        interval=config.dashboard_min_interval,
    ), w=8)
    grid.add(timeseries(
        "Unsteady steps",
        "1 when a step's figure was withheld as physically implausible or unsteady (the probe still succeeded).",
        (over(f"pyparallel_speedup_unsteady{{{s.probe}}}", "max"), PROBE_LEGEND),
        minimum=0,
        interval=config.dashboard_min_interval,
    ), w=8)
    grid.add(stat(
        "Probe priority (nice)",
        "Nice value the probe's processes ran at; 20 means SCHED_IDLE. Above 0 the figures show what the "
        "host leaves over, not what Python can do.",
        (f"max by (interpreter) (pyparallel_probe_nice{{{s.interpreter}}})", "{{interpreter}}"),
    ), w=8, h=8)


def efficiency(grid: Grid, config: MixinConfig) -> None:
    s = Selectors.of(config)
    grid.row("Efficiency and serial fraction")
    grid.add(timeseries(
        "Parallel efficiency (speedup / workers)",
        "1.0 means every worker adds a full core's worth of work.",
        (over(f'pyparallel_efficiency_ratio{{{s.probe}, mode!="sequential"}}'), PROBE_LEGEND),
        unit="percentunit", minimum=0,
        interval=config.dashboard_min_interval,
    ), w=8)
    grid.add(timeseries(
        "Serial fraction (Karp–Flatt)",
        "Experimentally determined serial fraction; near 1 when a lock (the GIL) serialises the work.",
        (over(f'pyparallel_serial_fraction_ratio{{{s.probe}, mode!="sequential"}}'), PROBE_LEGEND),
        unit="percentunit",
        interval=config.dashboard_min_interval,
    ), w=8)
    grid.add(timeseries(
        "Speedup spread over repeats",
        "Relative spread of the speedup across the repeats of one round; high values mean a noisy host.",
        (over(f"pyparallel_speedup_spread_ratio{{{s.probe}}}"), PROBE_LEGEND),
        unit="percentunit", minimum=0,
        interval=config.dashboard_min_interval,
    ), w=8)
    grid.add(timeseries(
        "Throughput",
        "Work units per second of every probe.",
        (over(f"pyparallel_throughput_units_per_second{{{s.probe}}}"), PROBE_LEGEND),
        unit="short", minimum=0,
        interval=config.dashboard_min_interval,
    ), w=24)


def cores(grid: Grid, config: MixinConfig) -> None:
    s = Selectors.of(config)
    grid.row("CPU cores")
    grid.add(g.BarGauge(
        title="Per-core utilisation by probe (last round)",
        description=("Busy fraction of each logical CPU while each probe ran: under the GIL "
                     "threads keep about one core busy, processes all of them."),
        dataSource=DATASOURCE,
        targets=[g.Target(
            expr=f"max by ({STEP_BY}, cpu) (pyparallel_core_utilisation_ratio{{{s.probe}}})",
            legendFormat=PROBE_LEGEND + " cpu{{cpu}}",
            refId="A", datasource=DATASOURCE, instant=True,
        )],
        format="percentunit", min=0, max=1, orientation="horizontal", displayMode="gradient",
        calc="lastNotNull",
        thresholds=CORE_STEPS,
        # grafanalib writes the Grafana 6 `fieldOptions` (the generator turns it into
        # options.reduceOptions); Grafana 7+ reads the rest from fieldConfig.
        extraJson={"fieldConfig": {"defaults": {
            "unit": "percentunit", "min": 0, "max": 1, "thresholds": {"mode": "absolute", "steps": CORE_STEPS},
        }, "overrides": []}},
    ), w=12, h=10)
    grid.add(timeseries(
        "Per-core utilisation over time",
        "Busy fraction of each logical CPU during the timed window of each probe.",
        (over(f"pyparallel_core_utilisation_ratio{{{s.probe}}}"), PROBE_LEGEND + " cpu{{cpu}}"),
        unit="percentunit", minimum=0,
        interval=config.dashboard_min_interval,
    ), w=12, h=10)
    grid.add(timeseries(
        "Worker start-up cost by mode",
        "Time to start the pool of workers (threads, processes, subinterpreters); not part of the timed window.",
        (over(f"pyparallel_worker_startup_seconds{{{s.interpreter}}}"), "{{interpreter}} {{mode}} ×{{workers}}"),
        unit="s", minimum=0,
        interval=config.dashboard_min_interval,
    ), w=24)


def health(grid: Grid, config: MixinConfig) -> None:
    s = Selectors.of(config)
    grid.row("Probe health")
    grid.add(g.StateTimeline(
        title="Probe success",
        description="Worst result of each probe in each step: one failed round shows as failing. "
                    "Empty where no round reported.",
        dataSource=DATASOURCE,
        targets=targets((over(f"pyparallel_probe_success{{{s.probe}}}", "min"), PROBE_LEGEND)),
        mappings=OK_FAIL,
        showValue="never",
        mergeValues=True,
        interval=config.dashboard_min_interval,
    ), w=12, h=8)
    grid.add(timeseries(
        "Probe duration",
        "Wall time of each probe, all repeats included.",
        (over(f"pyparallel_probe_duration_seconds{{{s.probe}}}", "max"), PROBE_LEGEND),
        unit="s", minimum=0,
        interval=config.dashboard_min_interval,
    ), w=12)
    grid.add(timeseries(
        f"Probe failures by reason (increase over {config.failure_window})",
        "Failed probe runs by reason: error, crash, timeout, interpreter (could not start it), memory (reached "
        "probe.memory_limit). 0 when none failed.",
        ((f"sum by ({STEP_BY}, reason) (increase(pyparallel_probe_failures_total{{{s.probe}}}[{config.failure_window}]))\n"
          'or on() label_replace(vector(0), "reason", "none", "", "")'),
         "{{interpreter}} {{workload}} {{mode}} ×{{workers}} {{reason}}"),
        unit="short", minimum=0,
        interval=config.dashboard_min_interval,
    ), w=8)
    grid.add(timeseries(
        "Time since last successful probe",
        f"Staleness; the alert fires above {config.stale_intervals} probe intervals (dashed). A line that keeps "
        "rising means the rounds stopped.",
        # The newest success in each step: at the step's end the probe is that old.
        (f"time() - {over(f'pyparallel_probe_last_success_timestamp_seconds{{{s.probe}}}', 'max')}", PROBE_LEGEND),
        (f"{config.stale_intervals} * {over(f'pyparallel_probe_interval_seconds{{{s.host}}}', 'max')}",
         "stale threshold {{instance}}"),
        unit="s", minimum=0,
        overrides=[dashed("^stale threshold.*")],
        interval=config.dashboard_min_interval,
    ), w=8)
    grid.add(timeseries(
        "Round duration and interval",
        "Wall time of a whole probe round against the interval in force (stretched when rounds exceed the "
        "duty-cycle budget).",
        (over(f"pyparallel_round_duration_seconds{{{s.host}}}", "max"), "round duration {{instance}}"),
        (over(f"pyparallel_probe_interval_seconds{{{s.host}}}", "max"), "interval {{instance}}"),
        unit="s", minimum=0,
        overrides=[dashed("^interval.*")],
        interval=config.dashboard_min_interval,
    ), w=8)
    grid.add(stat(
        "Duty cycle",
        "Share of the time the exporter spends running probes; the probes disturb the host this much.",
        (f"pyparallel_duty_cycle_ratio{{{s.host}}}", "{{instance}}"),
        unit="percentunit",
    ), w=6, h=4)
    grid.add(stat(
        "Config reload",
        "Whether the last configuration reload succeeded.",
        (f"pyparallel_config_last_reload_successful{{{s.host}}}", "{{instance}}"),
        mappings=value_text({"0": ("failed", "red"), "1": ("ok", "green")}),
    ), w=6, h=4)
    grid.add(stat(
        "Exporter version",
        "Version of python-parallelism-exporter.",
        (f"pyparallel_exporter_build_info{{{s.host}}}", "{{version}}"),
        text_mode="name",
    ), w=6, h=4)
    grid.add(stat(
        "Modules re-enabling the GIL on import",
        "Configured modules whose import turned the GIL back on in a free-threaded build.",
        (f"pyparallel_import_gil_enabled{{{s.interpreter}}}", "{{interpreter}} {{module}}"),
        mappings=value_text({"0": ("GIL stays off", "green"), "1": ("re-enables GIL", "orange")}),
    ), w=6, h=4)


def comparison(grid: Grid, config: MixinConfig) -> None:
    s = Selectors.of(config)
    parallel = f'{s.probe}, mode!="sequential"'
    grid.row("Interpreter comparison")
    grid.add(timeseries(
        "Speedup per mode and interpreter",
        "Speedup of each mode, workload and worker count on each interpreter (one line per probe, however "
        "many exporters ran on the host); a free-threaded build lifts threads towards processes.",
        (f"max by ({STEP_BY}) ({over(f'pyparallel_speedup_ratio{{{parallel}}}')})", PROBE_LEGEND),
        minimum=0,
        interval=config.dashboard_min_interval,
    ), w=12, h=10)
    grid.add(timeseries(
        "Efficiency per mode and interpreter",
        "Parallel efficiency of each mode, workload and worker count on each interpreter.",
        (f"max by ({STEP_BY}) ({over(f'pyparallel_efficiency_ratio{{{parallel}}}')})", PROBE_LEGEND),
        unit="percentunit", minimum=0,
        interval=config.dashboard_min_interval,
    ), w=12, h=10)


def build(config: MixinConfig = CONFIG) -> g.Dashboard:
    grid = Grid()
    questions(grid, config)
    overview(grid, config)
    speedup(grid, config)
    where_it_went(grid, config)
    efficiency(grid, config)
    cores(grid, config)
    health(grid, config)
    comparison(grid, config)
    return make_dashboard(
        title=config.host_dashboard_title,
        uid=config.host_dashboard_uid,
        description=("How well Python runs CPU-bound work in parallel on one host: "
                     "threads, processes, asyncio and subinterpreters."),
        tags=config.dashboard_tags,
        refresh=config.dashboard_refresh,
        time_from=config.dashboard_time_from,
        variables=variables(config),
        panels=grid.panels,
        annotations=[upgrade_annotation(config)],
    )


dashboard = build()
