"""Every threshold, window and selector of the mixin in one place (node-mixin's config.libsonnet)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MixinConfig:
    """Settings read by the dashboards, the rules and the generated deployment files.

    Change a value here, run ``python -m dashboards.generate`` and commit the result; the
    tests fail while the committed files differ from a fresh generation.
    """

    # --- selectors ---------------------------------------------------------------------
    # Inserted between {} of every rule query to pick the exporter's series. The job name is
    # the scrape job in deploy/prometheus/prometheus.yml and, on Kubernetes, the name of the
    # Service (the ServiceMonitor's default job label).
    exporter_selector: str = 'job="pyparallel"'
    # Workloads that keep a core busy. `sleep` releases the GIL and scales in every mode, so
    # it says nothing about CPU-bound parallelism and is left out of the capacity alert.
    cpu_bound_workload_selector: str = 'workload!="sleep"'
    # Modes whose speedup is compared with its own baseline. Sequential is 1.0 by definition;
    # asyncio is single-threaded, so its speedup only tracks the event loop's overhead.
    regression_mode_selector: str = 'mode=~"threads|processes"'

    # --- windows -------------------------------------------------------------------------
    # Window of the "current" speedup median; several probe rounds (default every 5m) fit in.
    speedup_median_window: str = "1h"
    # Window and offset of the baseline median: the day that ended one hour ago, so the
    # current hour does not pull the baseline towards itself.
    baseline_window: str = "1d"
    baseline_offset: str = "1h"
    # How long after a Python version change a speedup drop is blamed on the upgrade.
    upgrade_window: str = "6h"
    # Window of increase() over the failure counter on the dashboards; at least one round.
    failure_window: str = "1h"
    # Window in which two Python versions of one interpreter mark an upgrade annotation.
    annotation_window: str = "10m"

    # --- thresholds ----------------------------------------------------------------------
    # Stale when the last success is older than this many probe intervals
    # (pyparallel_probe_interval_seconds), leaving room for one slow or failed round.
    stale_intervals: int = 3
    # Processes speedup alert: fire below this fraction of the achievable speedup,
    # min(workers, usable cores). 0.5 on 4 usable cores and 4 workers means below 2.0.
    processes_min_speedup_fraction: float = 0.5
    # Regression alerts: fire when the current median is this fraction below the baseline.
    speedup_regression_drop: float = 0.25

    # --- how long a condition must hold before an alert fires -----------------------------
    probe_failing_for: str = "15m"  # about three rounds at the default 5m interval
    stale_for: str = "10m"
    exporter_down_for: str = "10m"
    processes_far_below_for: str = "30m"  # a single noisy round must not page anyone
    regression_for: str = "1h"
    upgrade_drop_for: str = "15m"
    gil_enabled_for: str = "10m"
    import_gil_for: str = "10m"
    config_reload_for: str = "5m"

    # --- severities ----------------------------------------------------------------------
    # Nothing here pages: the exporter measures the interpreter, it does not serve traffic.
    severity: str = "warning"
    # A module that re-enables the GIL is a finding about the configured environment.
    info_severity: str = "info"

    # --- alert annotations ---------------------------------------------------------------
    # %s is the alert name in lower case; deploy/RUNBOOK.md has a matching "Runbook: <Alert>"
    # heading (the README links to it).
    runbook_url_template: str = (
        "https://github.com/python-parallelism-exporter/python-parallelism-exporter/blob/main/deploy/RUNBOOK.md#runbook-%s"
    )

    # --- dashboards ----------------------------------------------------------------------
    host_dashboard_uid: str = "pyparallel-host"  # stable: links and bookmarks use it
    fleet_dashboard_uid: str = "pyparallel-fleet"
    host_dashboard_title: str = "Python parallelism"
    fleet_dashboard_title: str = "Python parallelism — fleet"
    dashboard_tags: tuple[str, ...] = ("pyparallel", "python-parallelism-exporter")
    dashboard_refresh: str = "1m"  # probes run every few minutes; faster refresh is waste
    dashboard_time_from: str = "now-24h"
    # Workload shown by default in the fleet table: pure-Python bytecode is what the GIL
    # serialises, so its threads speedup separates GIL builds from free-threaded ones.
    headline_workload: str = "pure_python"
    # Colours of the overview stats: red below the first value, orange below the second,
    # green above. A speedup under 0.9 means parallel work runs slower than sequential.
    speedup_colour_steps: tuple[float, float] = (0.9, 1.5)
    success_colour_steps: tuple[float, float] = (0.5, 1.0)  # share of probes succeeding
    # Modes with a speedup column in the fleet table and a panel in the comparison row.
    parallel_modes: tuple[str, ...] = ("threads", "processes", "asyncio", "subinterpreters")

    # --- Kubernetes ----------------------------------------------------------------------
    k8s_namespace: str = "pyparallel"
    # Labels on the PrometheusRule; match them to the Prometheus Operator's ruleSelector.
    prometheus_rule_labels: dict[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "parallelism-exporter", "role": "alert-rules"}
    )


CONFIG = MixinConfig()
