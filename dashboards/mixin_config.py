"""Every threshold, window and selector of the mixin in one place (node-mixin's config.libsonnet)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from exporter.config.validators import format_duration as duration, parse_duration
from exporter.model.verdicts import NOT_PARALLEL
from exporter.services.window import SERIAL_SHARE

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


def seconds(text: str) -> int:
    """Seconds of a Prometheus duration such as `1d`, `5m` or `1h30m` (the exporter's own parser)."""
    return int(parse_duration(text))


@dataclass(frozen=True)
class MixinConfig:
    """Settings read by the dashboards, the rules and the generated deployment files.

    Change a value here, run ``python -m dashboards.generate`` and commit the result; the
    tests fail while the committed files differ from a fresh generation. To render for your
    own Prometheus without editing this file: ``python -m dashboards.generate --selector
    'job="python"' --runbook-url-template 'https://.../RUNBOOK.md#runbook-%s' --output-dir out``.
    """

    # --- selectors ---------------------------------------------------------------------
    # Inserted between {} of every rule to pick the exporter's series. The job name is the
    # scrape job in deploy/prometheus/prometheus.yml and, on Kubernetes, the name of the
    # Service (the ServiceMonitor's default job label). Every label it names is kept by the
    # recording rules. The dashboards pick the job with their `job` variable instead, so the
    # stock JSON works under any job name; they keep the selector's other matchers.
    exporter_selector: str = 'job="pyparallel"'
    # The label naming the machine a measurement was taken on. Regression rules compare a
    # probe with its own history per host and interpreter role, not per scrape address, so a
    # pod rollout (new `instance`) keeps its reference. deploy/prometheus/prometheus.yml sets
    # it from the target's host name, the ServiceMonitor from the pod's node name.
    host_label: str = "node"
    # Where the host label is missing or empty, the rules copy this label into it, so every
    # alert still names its host; PyParallelHostLabelMissing warns that this identity is not
    # stable (a new scrape address starts a new history).
    host_fallback_label: str = "instance"
    # Workloads that keep a core busy. `sleep` releases the GIL and scales in every mode, so
    # it says nothing about CPU-bound parallelism and is left out of the capacity alerts.
    cpu_bound_workload_selector: str = 'workload!="sleep"'
    # Modes whose speedup is compared with its own reference. Sequential is 1.0 by
    # definition; asyncio is single-threaded, so its speedup only tracks the loop's overhead.
    regression_mode_selector: str = 'mode=~"threads|processes|subinterpreters"'

    # --- the probe schedule the rules assume -------------------------------------------------
    # The exporter's probe interval (its `interval`, default 5m). Alerts that judge rounds
    # hold for alert_rounds of them plus round_margin (jitter, round length), so one odd
    # round never fires and never clears an alert.
    probe_interval: str = "5m"
    alert_rounds: int = 2
    round_margin: str = "1m"

    # --- the reference a probe's speedup is compared with ------------------------------------
    # Evaluation interval of the state group (pyparallel.state), which keeps each probe's
    # reference, hold and blind-since series. Its rules read their own last values, so the
    # state survives without long windows; the alerts read it over two intervals and a
    # margin, so an evaluation that comes late never makes a series vanish.
    state_interval: str = "5m"
    # How far back a state rule looks for its own last value: a Prometheus outage shorter
    # than this keeps every reference and hold; a longer one starts learning afresh.
    state_carry: str = "1h"
    # The current level: the median speedup of the rounds in this window.
    speedup_median_window: str = "1h"
    # What the reference follows while the probe is healthy: the median of the current
    # levels over this window, approached with a time constant of reference_time_constant,
    # so the hour or two a drop needs to be caught (even one that creeps) never moves it.
    reference_window: str = "3h"
    reference_time_constant: str = "12h"
    # A new probe (host, role, workload, mode, workers) alerts only after this much history.
    baseline_min_history: str = "1d"
    # A drop holds the reference (the alert keeps firing) until the speedup recovers or this
    # long has passed; then the new level becomes the reference (accepted). Silencing the
    # alert until then accepts it sooner (RUNBOOK.md).
    regression_memory: str = "14d"
    # No conclusive round for this long while the probe runs: regression detection is blind.
    blind_after: str = "24h"
    # An exporter that stopped reporting counts as absent after this long, and is forgotten
    # (the absent alert ends, its references are dropped) after forget_after.
    absent_after: str = "15m"
    forget_after: str = "3d"
    # Window of increase() over the failure counter on the dashboards; at least one round.
    failure_window: str = "1h"
    # Window in which two Python identities of one role mark a change on the dashboard.
    annotation_window: str = "30m"
    # Window of the median of the processes speedup in the capacity alert: six rounds, so
    # one noisy round neither fires nor clears it.
    processes_smoothing_window: str = "30m"
    # Window of the share of failed rounds in the failure-ratio alert.
    failure_ratio_window: str = "6h"
    # Gaps this short in the step_conclusive gauge (an exporter restart) do not count as a
    # change of state.
    gauge_bridge_window: str = "15m"

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
    # Regression: the current level is this fraction below the reference. The hold ends when
    # it is back within speedup_recovery_drop of it (hysteresis: no flapping at the edge).
    speedup_regression_drop: float = 0.25
    speedup_recovery_drop: float = 0.125
    # Free-threaded threads alert: threads speedup below this fraction of the processes
    # speedup of the same round. ±25 % noise on both gives at worst 0.75/1.25 = 0.6.
    threads_vs_processes_fraction: float = 0.5
    # Free-threaded threads are "not parallel" when the cores they kept busy stay below this
    # with at least two workers and two usable cores (GIL threads read 1.0).
    # The exporter's own "not parallel" verdict uses the same figure (exporter/model/verdicts.py).
    serial_cores_max: float = NOT_PARALLEL

    # --- how long a condition must hold before an alert fires -----------------------------
    # Alerts that judge rounds use rounds_for (alert_rounds intervals plus the margin).
    probe_failing_for: str = "0s"  # counts rounds itself (probe_failing_rounds)
    stale_for: str = "10m"
    exporter_down_for: str = "10m"
    failure_ratio_for: str = "30m"
    processes_far_below_for: str = "15m"  # on top of the 30m median
    config_reload_for: str = "5m"
    host_label_missing_for: str = "30m"

    # --- severities ----------------------------------------------------------------------
    # Nothing here pages: the exporter measures the interpreter, it does not serve traffic.
    severity: str = "warning"
    # Findings about the environment (a module re-enabling the GIL).
    info_severity: str = "info"

    # --- alert annotations ---------------------------------------------------------------
    # %s is the alert name in lower case; deploy/RUNBOOK.md has a matching "Runbook: <Alert>"
    # heading. Absolute, so the link opens from a notification; render with
    # --runbook-url-template to link your own copy (a wiki, your Git host).
    runbook_url_template: str = (
        "https://github.com/python-parallelism-exporter/python-parallelism-exporter/blob/main/deploy/RUNBOOK.md#runbook-%s"
    )
    # Grafana's address as your on-call people reach it; each alert links its host's
    # dashboard there (docker compose serves Grafana on port 3000).
    grafana_url: str = "http://localhost:3000"

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
    # Colours of parallel efficiency (speedup / workers): red below the first value, orange
    # below the second, green above — the same at any worker count. GIL-bound threads
    # reach 1/workers.
    efficiency_colour_steps: tuple[float, float] = (0.6, 0.8)
    success_colour_steps: tuple[float, float] = (0.5, 1.0)  # share of probes succeeding
    # Modes with a speedup column in the fleet table and a panel in the comparison row.
    parallel_modes: tuple[str, ...] = ("threads", "processes", "asyncio", "subinterpreters")
    # Rows of the fleet dashboard's "which hosts got worse" table.
    fleet_worst_rows: int = 20

    # --- watched services (dashboards/services.py) ---------------------------------------
    # Window of the serialised ratio's average in the service alerts: about 180 windows of
    # the sampler's default 5 s, so one busy moment neither fires nor clears them.
    service_window: str = "15m"
    # Serial: at least this share of the judged processes showed the signature, on average.
    service_serial_ratio: float = SERIAL_SHARE  # the watcher's own threshold for a serial group
    # Parallel under an earlier interpreter: its serialised ratio averaged below this.
    service_parallel_ratio: float = 0.25
    service_serial_for: str = "15m"
    service_became_serial_for: str = "15m"
    # How long an earlier interpreter's parallel service stays the yardstick of the current
    # one (Prometheus must keep this much history; its default retention is 15d).
    service_memory: str = "7d"
    # A configured group with no process: a stopped service or a matcher gone stale.
    service_not_found_for: str = "15m"
    service_unreadable_for: str = "30m"
    # A scan running this long is stuck in a read (exporter/services/watcher.py cuts a scan
    # after at most 10 s), held for service_stalled_for so a slow moment does not page.
    service_scan_stall: str = "1m"
    service_stalled_for: str = "5m"
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
        for name in ("host_label", "host_fallback_label"):
            if not re.fullmatch(r"[a-zA-Z_]\w*", getattr(self, name)):
                raise ValueError(f"{name} must be a Prometheus label name, not {getattr(self, name)!r}")
        if self.runbook_url_template.count("%s") != 1:
            raise ValueError("runbook_url_template needs exactly one %s (the alert name in lower case)")
        if not re.match(r"https?://", self.runbook_url_template):
            raise ValueError("runbook_url_template must be an absolute http(s) URL, so it opens from a notification")
        for name in ("probe_interval", "round_margin", "state_interval", "state_carry", "regression_memory",
                     "blind_after", "reference_time_constant"):
            seconds(getattr(self, name))
        if not 0 < self.speedup_recovery_drop < self.speedup_regression_drop < 1:
            raise ValueError("need 0 < speedup_recovery_drop < speedup_regression_drop < 1")
        if self.alert_rounds < 1:
            raise ValueError("alert_rounds must be at least 1")

    # --- derived values --------------------------------------------------------------------

    @property
    def selector_labels(self) -> tuple[str, ...]:
        """Labels the selector names, `job` first: recording rules keep them."""
        return tuple(dict.fromkeys(["job", *parse_selector(self.exporter_selector)]))

    @property
    def dashboard_selector(self) -> str:
        """The selector's matchers other than `job`, which the dashboards' job variable sets."""
        rest = {k: v for k, v in parse_selector(self.exporter_selector).items() if k != "job"}
        return ", ".join(f'{name}{op}"{value}"' for name, (op, value) in rest.items())

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

    @property
    def rounds_for(self) -> str:
        """`for` of an alert that judges rounds: alert_rounds whole rounds and the margin."""
        return duration(self.alert_rounds * seconds(self.probe_interval) + seconds(self.round_margin))

    @property
    def fresh_window(self) -> str:
        """Range over which the alerts read the state group's series: two evaluations and
        the margin, so a late evaluation (or a remote-write delay) never makes one vanish."""
        return duration(2 * seconds(self.state_interval) + seconds(self.round_margin))

    @property
    def identity_settle(self) -> str:
        """A new Python identity becomes the reference's once the current level holds none
        of the previous one's rounds (an old pod's last round included): the median window,
        a round and the margin after the change."""
        return duration(seconds(self.speedup_median_window) + seconds(self.probe_interval) + seconds(self.round_margin))

    @property
    def reference_step(self) -> float:
        """Share of the gap to its target the reference closes per state evaluation."""
        return 1 - math.exp(-seconds(self.state_interval) / seconds(self.reference_time_constant))

    @property
    def keep(self) -> float:
        """Fraction of the reference below which a probe regressed."""
        return round(1 - self.speedup_regression_drop, 6)

    @property
    def recover(self) -> float:
        """Fraction of the reference at which a held probe counts as recovered."""
        return round(1 - self.speedup_recovery_drop, 6)

    def host_of(self, vector: str) -> str:
        """`vector` with the host label filled from the fallback label where it is missing.

        label_join gives "<host>;<fallback>", and only ";<fallback>" (no host) matches the
        regex; the helper label is emptied, which removes it.
        """
        host, fallback, helper = self.host_label, self.host_fallback_label, "tmp_host_key"
        joined = f'label_join({vector}, "{helper}", ";", "{host}", "{fallback}")'
        filled = f'label_replace({joined}, "{host}", "$1", "{helper}", ";(.+)")'
        return f'label_replace({filled}, "{helper}", "", "", "")'


CONFIG = MixinConfig()
