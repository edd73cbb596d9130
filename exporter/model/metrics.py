"""Every metric family the exporter exports, declared once as data: name, type, help, labels.

client_python declares a family's name, type, documentation and labels before it fills it;
this table does the same for all of ours. The collector builds its families from it, the
push path and the dashboards' list of exported metrics read it, and a test holds
docs/metrics.md to it — so a metric is named in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, StateSetMetricFamily

PREFIX = "pyparallel"
STEP_LABELS = ("interpreter", "workload", "mode", "workers")
# A watched group and the identity of the interpreter its processes run (exporter/services/watcher.py).
COHORT_LABELS = ("group", "implementation", "version", "free_threaded_build")


@dataclass(frozen=True)
class MetricSpec:
    """One family: its name without the prefix, type, HELP text and labels."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    kind: str = "gauge"  # "counter" (exposed with _total) or "stateset"
    # Who fills it: "step" (per probe step), "interpreter", "host" (the same for any run on this
    # host), "daemon" (the serving process's schedule and reloads; not pushed by a one-shot
    # probe) or "service" (the watched services, docs/services.md).
    scope: str = "step"

    @property
    def full_name(self) -> str:
        """The name as exposed (a counter's samples carry ``_total``)."""
        return f"{PREFIX}_{self.name}" + ("_total" if self.kind == "counter" else "")

    def family(self) -> Union[GaugeMetricFamily, CounterMetricFamily, StateSetMetricFamily]:
        name = f"{PREFIX}_{self.name}"
        kind = {"counter": CounterMetricFamily, "stateset": StateSetMetricFamily}.get(self.kind, GaugeMetricFamily)
        return kind(name, self.help, labels=list(self.labels))


def _specs(*specs: MetricSpec) -> dict[str, MetricSpec]:
    return {spec.name: spec for spec in specs}


METRICS: dict[str, MetricSpec] = _specs(
    # --- per step: (interpreter, workload, mode, workers) ---------------------------------
    MetricSpec("probe_success", "Whether the last probe of this step succeeded (1) or failed (0).", STEP_LABELS),
    MetricSpec("probe_duration_seconds", "Wall time the last probe of this step took, start-up and pairs included.",
               STEP_LABELS),
    MetricSpec("speedup_ratio", "Weak-scaling speedup T1*N/TN, T1 one worker of the same pool alone: geometric mean "
               "over independent window pairs.", STEP_LABELS),
    MetricSpec("speedup_lower_ratio", "Lower end of the speedup's 95% interval (Student t over the pairs, widened by "
               "the variance between probes).", STEP_LABELS),
    MetricSpec("speedup_upper_ratio", "Upper end of the speedup's 95% interval (Student t over the pairs, widened by "
               "the variance between probes; never above the cores CPU-bound work can use).", STEP_LABELS),
    MetricSpec("speedup_unsteady", "1 when the speedup was withheld as physically implausible (CPU-bound and above the "
               "usable cores, or a baseline that did less work per CPU-second than the workers) after measuring it "
               "again, else 0.", STEP_LABELS),
    MetricSpec("step_conclusive", "1 when enough cores were free (usable, less steal and other processes' load) for "
               "the step's figures to show its parallelism; 0 = cannot tell: no speedup is exported.", STEP_LABELS),
    MetricSpec("speedup_pairs", "Independent (one worker, N workers) window pairs behind the speedup.", STEP_LABELS),
    MetricSpec("step_remeasured", "1 when the runner measured this step again from scratch because the first attempt "
               "was implausible, else 0.", STEP_LABELS),
    MetricSpec("speedup_spread_ratio", "Relative spread (max-min)/median of the pair speedups.", STEP_LABELS),
    MetricSpec("efficiency_ratio", "Parallel efficiency: speedup divided by the number of workers.", STEP_LABELS),
    MetricSpec("serial_fraction_ratio", "Karp-Flatt experimentally determined serial fraction (2 or more workers).",
               STEP_LABELS),
    MetricSpec("throughput_units_per_second", "Units of work completed per second by all workers together.",
               STEP_LABELS),
    MetricSpec("cpu_cores_used", "CPU seconds of the workers divided by wall seconds of the timed window.", STEP_LABELS),
    MetricSpec("cpu_rate_ratio", "Work per CPU-second of the workers together relative to one worker of the same pool "
               "alone; speedup ~ cpu_cores_used * cpu_rate_ratio.", STEP_LABELS),
    MetricSpec("runnable_workers", "Workers the runtime let run at once, on a CPU or waiting for one (the kernel's "
               "per-thread accounting, mean over the parallel windows): a figure of the runtime, not of the host's "
               "load. GIL-bound threads read ~1, parallel workers ~N.", STEP_LABELS),
    MetricSpec("runnable_workers_lower", "Lower end of the runnable workers' 95% interval.", STEP_LABELS),
    MetricSpec("runnable_workers_upper", "Upper end of the runnable workers' 95% interval.", STEP_LABELS),
    MetricSpec("idle_speedup_ratio", "The speedup the step would show on an idle host: runnable workers (at most the "
               "cores they could use) times cpu_rate_ratio, geometric mean over the pairs. Exported whatever the "
               "host's load; on a quiet host it agrees with pyparallel_speedup_ratio.", STEP_LABELS),
    MetricSpec("idle_speedup_lower_ratio", "Lower end of the idle-host speedup's 95% interval.", STEP_LABELS),
    MetricSpec("idle_speedup_upper_ratio", "Upper end of the idle-host speedup's 95% interval.", STEP_LABELS),
    MetricSpec("on_cpu_workers", "Workers on a CPU at once in the timed windows: the cores the host gave the step "
               "(median of the parallel windows).", STEP_LABELS),
    MetricSpec("interference_cores", "CPU used by other processes during the timed windows, in cores: host busy time "
               "(kernel per-CPU counters, steal excluded) minus the probe's process tree, median of windows.",
               STEP_LABELS),
    MetricSpec("steal_ratio", "Share of the host's CPU time stolen by the hypervisor during the timed windows, median "
               "of windows.", STEP_LABELS),
    MetricSpec("core_utilisation_ratio", "Busy fraction of each logical CPU during the timed window (kernel per-CPU "
               "counters).", STEP_LABELS + ("cpu",)),
    MetricSpec("probe_last_success_timestamp_seconds", "Unix time of the last successful probe of this step.",
               STEP_LABELS),
    MetricSpec("probe_failures", "Failed probes of this step by reason: error, crash, timeout, interpreter, memory.",
               STEP_LABELS + ("reason",), kind="counter"),
    MetricSpec("worker_startup_seconds", "Time to start and warm up the workers of a mode, median over workloads.",
               ("interpreter", "mode", "workers")),
    # --- per interpreter ---------------------------------------------------------------------
    MetricSpec("python_info", "Identity of a probed interpreter; always 1.",
               ("interpreter", "version", "implementation", "free_threaded_build"), scope="interpreter"),
    MetricSpec("gil_enabled", "Whether the GIL was enabled at run time in the probe's interpreter (after importing the "
               "workload).", ("interpreter",), scope="interpreter"),
    MetricSpec("mode_available", "Whether the interpreter offers this mode (subinterpreters need CPython 3.14+).",
               ("interpreter", "mode"), scope="interpreter"),
    MetricSpec("gil_requested", "Whether the interpreter's configured environment sets PYTHON_GIL=1, asking for the GIL "
               "on purpose (e.g. a free-threaded build run as a GIL control).", ("interpreter",), scope="interpreter"),
    MetricSpec("import_gil_enabled", "Whether importing this configured module re-enabled the GIL of a free-threaded "
               "interpreter.", ("interpreter", "module"), scope="interpreter"),
    MetricSpec("probe_nice", "Priority the probe's process tree ran at (probe.nice): a nice value 0..19, or 20 for the "
               "SCHED_IDLE policy; above 0 the figures show what the host leaves over.", ("interpreter",),
               scope="interpreter"),
    # --- the host and the exporter -----------------------------------------------------------
    MetricSpec("host_cpus", "CPUs of this host: logical, physical, and usable (affinity and cgroup CPU quota).",
               ("kind",), scope="host"),
    MetricSpec("process_start_method_info", "Start method of the processes mode's workers; always 1.",
               ("start_method",), scope="host"),
    MetricSpec("exporter_build_info", "Version of python-parallelism-exporter; always 1.", ("version",), scope="host"),
    MetricSpec("round_duration_seconds", "Probe time of the last complete round: its wall time less the time it "
               "waited for free cores.", scope="daemon"),
    MetricSpec("duty_cycle_ratio", "Share of wall time spent probing: last round's probe time over the interval in "
               "force.", scope="daemon"),
    MetricSpec("probe_interval_seconds", "Interval between probe round starts in force: the configured one, stretched "
               "when rounds exceed the duty-cycle budget.", scope="daemon"),
    MetricSpec("config_last_reload_successful", "Whether the last configuration reload succeeded.", scope="daemon"),
    MetricSpec("config_last_reload_success_timestamp_seconds", "Unix time of the last successful configuration load.",
               scope="daemon"),
    # --- watched services: per group and interpreter identity --------------------------------
    MetricSpec("service_processes", "Processes of the group running this interpreter (implementation none: not "
               "Python; unknown: its maps could not be read).", COHORT_LABELS, scope="service"),
    MetricSpec("service_threads", "Threads of those processes.", COHORT_LABELS, scope="service"),
    MetricSpec("service_cores_used", "CPU seconds of those processes per wall second over the last window.",
               COHORT_LABELS, scope="service"),
    MetricSpec("service_busy_threads", "Threads that used more than services.busy_thread_share of a core over the "
               "last window.", COHORT_LABELS, scope="service"),
    MetricSpec("service_usable_cores", "Cores the processes may use: CPU affinity, capped by their cgroup's CPU quota "
               "(the most of any process).", COHORT_LABELS, scope="service"),
    MetricSpec("service_parallelism_ratio", "Cores used divided by min(busy threads, usable cores), per process "
               "summed over the processes; absent without busy threads.", COHORT_LABELS, scope="service"),
    MetricSpec("service_serialised_ratio", "Share of the processes with 2+ busy threads and 2+ usable cores, on a host "
               "with idle cores, that used at most services.serial_cores cores: the serialisation signature (a GIL, "
               "or a lock). Absent when no process could be judged.", COHORT_LABELS, scope="service"),
    MetricSpec("service_voluntary_context_switches_per_busy_thread", "Voluntary context switches per second of each "
               "busy thread, averaged (GIL hand-offs and lock waits show here).", COHORT_LABELS, scope="service"),
    MetricSpec("service_process_parallelism_ratio", "Parallelism of single processes with busy threads: stat min, "
               "median or max over the group's processes (a gauge: quantile is a summary's label).",
               COHORT_LABELS + ("stat",), scope="service"),
    MetricSpec("service_cpu_seconds", "CPU seconds the group's processes used while watched, summed over the windows.",
               COHORT_LABELS, kind="counter", scope="service"),
    MetricSpec("service_state", "What the last window says of each group: parallel, serial, or why it cannot tell "
               "(host_busy, one_usable_core, one_busy_thread, idle, no_process).", ("group",), kind="stateset",
               scope="service"),
    MetricSpec("service_watch_enabled", "Whether the services section configures groups to watch.", scope="service"),
    MetricSpec("service_sample_errors", "Processes the sampler could not read, by reason: permission, vanished "
               "(exited mid-read), pid_reused, too_many_groups, refused (a file it points at is not a regular file, "
               "or over its byte or time bound), internal.", ("reason",), kind="counter", scope="service"),
    MetricSpec("service_window_seconds", "Length of the last window between two scans.", scope="service"),
    MetricSpec("service_host_idle_cores", "Idle cores of the host over the last window (idle and iowait time).",
               scope="service"),
    MetricSpec("service_scan_duration_seconds", "Wall time the last scan of /proc took.", scope="service"),
    MetricSpec("service_scan_overruns", "Scans cut at their time bound (half the interval, at most 10 s); the "
               "processes a cut scan did not reach wait for the next one.", kind="counter", scope="service"),
    MetricSpec("service_scan_running_seconds", "How long the scan in progress has been running, 0 between scans; "
               "beyond the scan's bound the sampler is stuck in a read.", scope="service"),
    MetricSpec("service_last_scan_timestamp_seconds", "Unix time of the last scan.", scope="service"),
    MetricSpec("service_scanned_processes", "Processes on the host the last scan read.", scope="service"),
)


def family(name: str) -> Any:
    """A new, empty family of the metric declared as ``name`` (without the prefix): a
    GaugeMetricFamily, CounterMetricFamily or StateSetMetricFamily as declared."""
    return METRICS[name].family()


def exposed_names(*scopes: str) -> frozenset[str]:
    """Full names as exposed (``pyparallel_…``, counters with ``_total``), of these scopes or all."""
    return frozenset(spec.full_name for spec in METRICS.values() if not scopes or spec.scope in scopes)
