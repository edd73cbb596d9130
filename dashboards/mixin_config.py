"""Every threshold, window and selector of the mixin in one place (node-mixin's config.libsonnet)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# One matcher of a PromQL selector: `name="value"`, `name!="value"`, `name=~"re"`, `name!~"re"`.
_MATCHER = re.compile(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')


def parse_selector(selector: str) -> dict[str, tuple[str, str]]:
    """The matchers of a selector (without braces) by label name; ValueError when malformed.

    >>> parse_selector('job="python", env=~"prod|staging"')
    {'job': ('=', 'python'), 'env': ('=~', 'prod|staging')}
    """
    matchers: dict[str, tuple[str, str]] = {}
    text = selector.strip()
    position = 0
    while position < len(text):
        match = _MATCHER.match(text, position)
        if match is None:
            raise ValueError(f"not a PromQL label selector: {selector!r} (expected e.g. job=\"pyparallel\")")
        matchers[match.group(1)] = (match.group(2), match.group(3))
        position = match.end()
        if position < len(text):
            if text[position] != ",":
                raise ValueError(f"not a PromQL label selector: {selector!r} (matchers are separated by commas)")
            position += 1
    if not matchers:
        raise ValueError("the selector must have at least one matcher, e.g. job=\"pyparallel\"")
    return matchers


@dataclass(frozen=True)
class MixinConfig:
    """Settings read by the dashboards, the rules and the generated deployment files.

    Change a value here, run ``python -m dashboards.generate`` and commit the result; the
    tests fail while the committed files differ from a fresh generation. To render for your
    own Prometheus without editing this file: ``python -m dashboards.generate --selector
    'job="python"' --runbook-url-template 'https://.../RUNBOOK.md#runbook-%s' --output-dir out``.
    """

    # --- selectors ---------------------------------------------------------------------
    # Inserted between {} of every rule and dashboard query to pick the exporter's series.
    # The job name is the scrape job in deploy/prometheus/prometheus.yml and, on Kubernetes,
    # the name of the Service (the ServiceMonitor's default job label). Every label it names
    # is kept by the recording rules, so the selector also picks their series.
    exporter_selector: str = 'job="pyparallel"'
    # The label naming the machine a measurement was taken on. Regression rules compare a
    # probe with its own history per host and interpreter role, not per scrape address, so a
    # pod rollout (new `instance`) keeps its baseline. deploy/prometheus/prometheus.yml sets
    # it from the target's host name, the ServiceMonitor from the pod's node name.
    host_label: str = "node"
    # Workloads that keep a core busy. `sleep` releases the GIL and scales in every mode, so
    # it says nothing about CPU-bound parallelism and is left out of the capacity alerts.
    cpu_bound_workload_selector: str = 'workload!="sleep"'
    # Modes whose speedup is compared with its own baseline. Sequential is 1.0 by definition;
    # asyncio is single-threaded, so its speedup only tracks the event loop's overhead.
    regression_mode_selector: str = 'mode=~"threads|processes"'

    # --- windows -------------------------------------------------------------------------
    # Window of the "current" speedup median; twelve probe rounds (default every 5m) fit in.
    speedup_median_window: str = "1h"
    # Window and offset of the baseline median: the day that ended one hour ago, so the
    # current hour does not pull the baseline towards itself.
    baseline_window: str = "1d"
    baseline_offset: str = "1h"
    # A baseline counts only once the series has this much history (it had samples this
    # long ago); a new host or role gets no regression alerts before.
    baseline_min_history: str = "1d"
    # Evaluation interval of the baseline group: quantiles over a day of samples change
    # slowly, and a probe round comes every 5 minutes anyway.
    baseline_group_interval: str = "5m"
    # How long the speedup of an earlier Python version stays the yardstick of the current
    # one: an upgrade drop stays firing until fixed, silenced, or this long after the upgrade.
    # Prometheus must keep this much history (its default retention is 15d).
    version_memory: str = "7d"
    # Window of increase() over the failure counter on the dashboards; at least one round.
    failure_window: str = "1h"
    # Window in which two Python versions of one interpreter mark an upgrade annotation.
    annotation_window: str = "10m"
    # Window of the median of the processes speedup in the capacity alert: six rounds, so
    # one noisy round neither fires nor clears it.
    processes_smoothing_window: str = "30m"
    # Window of the share of failed rounds in the failure-ratio alert.
    failure_ratio_window: str = "6h"
    # Window of the median of the interference (other processes' CPU use during a probe).
    interference_window: str = "1h"

    # --- thresholds ----------------------------------------------------------------------
    # Stale when the last success is older than this many probe intervals
    # (pyparallel_probe_interval_seconds), leaving room for one slow or failed round.
    stale_intervals: int = 3
    # A probe is failing once about this many rounds in a row failed: its last round failed
    # and its last success is older than (rounds - 0.25) probe intervals (the quarter absorbs
    # jitter and round length), or it never succeeded and failed this many times.
    probe_failing_rounds: int = 2
    # Share of rounds (time-weighted) failing over failure_ratio_window.
    failure_ratio_threshold: float = 0.2
    # Processes speedup alert: fire below this fraction of the achievable speedup,
    # min(workers, usable cores). 0.5 on 4 usable cores and 4 workers means below 2.0.
    processes_min_speedup_fraction: float = 0.5
    # Regression alerts: fire when the current median is this fraction below the baseline.
    speedup_regression_drop: float = 0.25
    # Free-threaded threads alert: threads speedup below this fraction of the processes
    # speedup of the same round. ±25 % noise on both gives at worst 0.75/1.25 = 0.6.
    threads_vs_processes_fraction: float = 0.5
    # Free-threaded threads are "not parallel" when the cores they kept busy stay below this
    # with at least two workers and two usable cores (GIL threads read 1.0).
    serial_cores_max: float = 1.25
    # Other processes' CPU use (cores) during a probe above which the host is too busy to
    # measure; the regression alerts hold back while the 1 h median is above it.
    busy_host_cores: float = 0.5

    # --- how long a condition must hold before an alert fires -----------------------------
    # Rule files carry these as `for`. The failing alert counts rounds instead (above).
    probe_failing_for: str = "0s"
    stale_for: str = "10m"
    exporter_down_for: str = "10m"
    failure_ratio_for: str = "30m"
    processes_far_below_for: str = "15m"  # on top of the 30m median
    regression_for: str = "1h"
    upgrade_drop_for: str = "15m"  # shorter than regression_for, so it inhibits that first
    threads_not_parallel_for: str = "5m"  # the second round in a row fires it
    threads_below_processes_for: str = "10m"
    host_busy_for: str = "30m"
    round_overrun_for: str = "15m"
    gil_enabled_for: str = "10m"
    import_gil_for: str = "10m"
    config_reload_for: str = "5m"

    # --- severities ----------------------------------------------------------------------
    # Nothing here pages: the exporter measures the interpreter, it does not serve traffic.
    severity: str = "warning"
    # Findings about the environment (a module re-enabling the GIL, a busy host).
    info_severity: str = "info"

    # --- alert annotations ---------------------------------------------------------------
    # %s is the alert name in lower case; deploy/RUNBOOK.md has a matching "Runbook: <Alert>"
    # heading. The default is the runbook's path in this repository (every clone has it);
    # render with --runbook-url-template to link your own copy (a wiki, your Git host).
    runbook_url_template: str = "deploy/RUNBOOK.md#runbook-%s"

    # --- dashboards ----------------------------------------------------------------------
    host_dashboard_uid: str = "pyparallel-host"  # stable: links and bookmarks use it
    fleet_dashboard_uid: str = "pyparallel-fleet"
    host_dashboard_title: str = "Python parallelism"
    fleet_dashboard_title: str = "Python parallelism — fleet"
    dashboard_tags: tuple[str, ...] = ("pyparallel", "python-parallelism-exporter")
    dashboard_refresh: str = "1m"  # probes run every few minutes; faster refresh is waste
    dashboard_time_from: str = "now-24h"
    # Smallest step of the time-series panels: the default probe interval. Each point is an
    # *_over_time over the step, so no round is skipped at any zoom level.
    dashboard_min_interval: str = "5m"
    # Workload shown by default: pure-Python bytecode is what the GIL serialises, so its
    # threads speedup separates GIL builds from free-threaded ones.
    headline_workload: str = "pure_python"
    # Colours of the overview stats: red below the first value, orange below the second,
    # green above. A speedup under 0.9 means parallel work runs slower than sequential.
    speedup_colour_steps: tuple[float, float] = (0.9, 1.5)
    success_colour_steps: tuple[float, float] = (0.5, 1.0)  # share of probes succeeding
    # Modes with a speedup column in the fleet table and a panel in the comparison row.
    parallel_modes: tuple[str, ...] = ("threads", "processes", "asyncio", "subinterpreters")

    # --- watched services (dashboards/services.py) ---------------------------------------
    # Window of the serialised ratio's average in the service alerts: about 180 windows of
    # the sampler's default 5 s, so one busy moment neither fires nor clears them.
    service_window: str = "15m"
    # Serial: at least this share of the judged processes showed the signature, on average.
    service_serial_ratio: float = 0.5
    # Parallel under an earlier interpreter: its serialised ratio averaged below this.
    service_parallel_ratio: float = 0.25
    service_serial_for: str = "15m"
    service_became_serial_for: str = "15m"
    # A configured group with no process: a stopped service or a matcher gone stale.
    service_not_found_for: str = "15m"
    service_unreadable_for: str = "30m"
    services_dashboard_uid: str = "pyparallel-services"  # stable: links and bookmarks use it
    services_dashboard_title: str = "Python parallelism — services"

    # --- Kubernetes ----------------------------------------------------------------------
    k8s_namespace: str = "pyparallel"
    # Labels on the PrometheusRule; match them to the Prometheus Operator's ruleSelector.
    prometheus_rule_labels: dict[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "parallelism-exporter", "role": "alert-rules"}
    )

    def __post_init__(self) -> None:
        parse_selector(self.exporter_selector)
        if not re.fullmatch(r"[a-zA-Z_]\w*", self.host_label):
            raise ValueError(f"host_label must be a Prometheus label name, not {self.host_label!r}")
        if self.runbook_url_template.count("%s") != 1:
            raise ValueError("runbook_url_template needs exactly one %s (the alert name in lower case)")

    @property
    def selector_labels(self) -> tuple[str, ...]:
        """Labels the selector names, `job` first: recording rules keep them."""
        return tuple(dict.fromkeys(["job", *parse_selector(self.exporter_selector)]))

    @property
    def site_by(self) -> str:
        """`by` labels of one host: the selector's labels and the host label."""
        return ", ".join(dict.fromkeys([*self.selector_labels, self.host_label]))

    @property
    def role_by(self) -> str:
        """`by` labels of one interpreter role on one host."""
        return f"{self.site_by}, interpreter"

    @property
    def probe_by(self) -> str:
        """`by` labels of one probe step on one host, whatever its scrape address."""
        return f"{self.role_by}, workload, mode, workers"


CONFIG = MixinConfig()
