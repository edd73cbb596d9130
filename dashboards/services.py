"""Watched services (issue 18): the "Python parallelism — services" dashboard, its alerts and their promtool tests.

One row per watched group (a Grafana row repeated over the `group` variable): cores used
against busy threads, parallelism and the serialisation signature, with interpreter changes
annotated. The alerts say when a service stays serial on a free-threaded build and when it
became serial after an interpreter upgrade; every threshold is in `MixinConfig`.
"""

from __future__ import annotations

from typing import Any

from grafanalib import core as g

from dashboards import promtool_inputs as pt
from dashboards.alerting import VALUE
from dashboards.alerting import alert as _alert
from dashboards.host import job_selector
from dashboards.mixin_config import CONFIG, MixinConfig, seconds
from dashboards.recording import previous
from dashboards.panels import (
    DATASOURCE,
    Grid,
    datasource_variable,
    make_dashboard,
    over,
    query_variable,
    stat,
    timeseries,
    value_text,
)
from exporter.services.collector import METRIC_NAMES

IDENTITY = "implementation, version, free_threaded_build"
# The families the dashboard and the rules read: the services collector's contract.
SERVICE_METRICS: frozenset[str] = METRIC_NAMES
# Panels that may show no data on a healthy host, and why (tests/test_dashboards_live.py).
MAY_BE_EMPTY: dict[str, str] = {
    "Parallelism": "exists only while a process of the group has busy threads",
    "Serialisation signature": "exists only while a window could judge a process (2+ busy threads)",
    "Voluntary switches per busy thread": "exists only for threads busy in two windows in a row",
    "Interpreter change": "shows data only within minutes of an interpreter change",
}


# --- dashboard -------------------------------------------------------------------------------


def _selector(config: MixinConfig) -> str:
    return f'{job_selector(config)}, {config.host_label}=~"$host", group=~"$group"'


def variables(config: MixinConfig) -> list[g.Template]:
    # Every job that exports the services' series, whatever its name: the stock JSON works for all.
    jobs = f"label_values(pyparallel_service_watch_enabled{{{config.dashboard_selector}}}, job)"
    job = job_selector(config)
    return [
        datasource_variable(),
        query_variable("job", "Job", jobs, multi=False),
        query_variable("host", "Host", f"label_values(pyparallel_service_watch_enabled{{{job}}}, "
                       f"{config.host_label})", multi=False),
        query_variable("group", "Group", f'label_values(pyparallel_service_processes{{{job}, '
                       f'{config.host_label}=~"$host"}}, group)', multi=True),
    ]


def interpreter_annotation(config: MixinConfig) -> dict[str, Any]:
    """Marks where a group's interpreter changed: two identities seen within the window."""
    processes = f"pyparallel_service_processes{{{_selector(config)}}}"
    by = f"{config.site_by}, group"
    return {
        "name": "Interpreter change", "datasource": DATASOURCE, "enable": True, "hide": False, "iconColor": "purple",
        "expr": (f"max by ({by}, {IDENTITY}) ({processes})\n"
                 f"and on({by})\n"
                 f"  (count by ({by}) (max by ({by}, {IDENTITY}) (max_over_time({processes}[{config.annotation_window}]))) > 1)"),
        "step": "60s", "titleFormat": "Interpreter change",
        "textFormat": "{{group}} now runs {{implementation}} {{version}} (free-threaded: {{free_threaded_build}})",
        "tagKeys": "group,version,free_threaded_build", "useValueForTime": False,
    }


STATE_COLOURS = {"parallel": "green", "serial": "red", "host_busy": "orange", "one_usable_core": "orange",
                 "one_busy_thread": "blue", "idle": "text", "no_process": "purple"}


def group_row(grid: Grid, config: MixinConfig) -> None:
    sel = _selector(config)
    legend = "{{version}} free-threaded={{free_threaded_build}}"
    grid.row("$group")
    grid.add(timeseries(
        "Cores used vs busy threads",
        "CPU seconds per second of the group's processes, and how many of their threads were busy (above "
        "services.busy_thread_share of a core), averaged per step. Parallel busy threads use "
        "min(busy threads, usable cores) cores; GIL-bound ones stay at one core however many are busy.",
        (f"sum by (group, {IDENTITY}) ({over(f'pyparallel_service_cores_used{{{sel}}}')})", f"cores used {legend}"),
        (f"sum by (group, {IDENTITY}) ({over(f'pyparallel_service_busy_threads{{{sel}}}')})", f"busy threads {legend}"),
        (f"max by (group) ({over(f'pyparallel_service_usable_cores{{{sel}}}', 'max')})", "usable cores"),
        minimum=0), w=12)
    grid.add(timeseries(
        "Parallelism",
        "Cores used / min(busy threads, usable cores): 100 % when every busy thread ran whenever it wanted to.",
        (over(f"pyparallel_service_parallelism_ratio{{{sel}}}"), legend), unit="percentunit", minimum=0), w=6)
    grid.add(timeseries(
        "Serialisation signature",
        "Share of the judged processes whose 2+ busy threads shared about one core while the host had cores to "
        "spare: a GIL build's GIL, or a lock or a C extension that re-enabled the GIL on a free-threaded build.",
        (over(f"pyparallel_service_serialised_ratio{{{sel}}}"), legend), unit="percentunit", minimum=0), w=6)
    grid.add(stat(
        "State", "What the last window says: parallel, serial, or why it cannot tell.",
        (f"max by (group, pyparallel_service_state) (pyparallel_service_state{{{sel}}}) == 1",
         "{{pyparallel_service_state}}"),
        text_mode="name", thresholds=[{"color": "text", "value": None}],
        mappings=value_text({state: (state, colour) for state, colour in STATE_COLOURS.items()})), w=6, h=6)
    grid.add(stat(
        "Interpreter", "Processes of the group per interpreter identity (implementation none: not Python).",
        (f"sum by ({IDENTITY}) (pyparallel_service_processes{{{sel}}})",
         "{{implementation}} {{version}} ft={{free_threaded_build}}")), w=9, h=6)
    grid.add(timeseries(
        "Voluntary switches per busy thread",
        "Voluntary context switches per second of each busy thread: GIL hand-offs (every 5 ms by default) and "
        "lock waits show here; free-running CPU-bound threads switch rarely.",
        (over(f"pyparallel_service_voluntary_context_switches_per_busy_thread{{{sel}}}"), legend),
        unit="ops", minimum=0), w=9, h=6)


def build(config: MixinConfig = CONFIG) -> g.Dashboard:
    grid = Grid()
    group_row(grid, config)
    rows = [p for p in grid.panels if isinstance(p, g.RowPanel)]
    panels = [g.RowPanel(title=p.title, gridPos=p.gridPos, repeat=g.Repeat(variable="group")) if p in rows else p
              for p in grid.panels]
    return make_dashboard(
        title=config.services_dashboard_title, uid=config.services_dashboard_uid,
        description="Watched Python services: do their busy threads use the cores they have?",
        tags=config.dashboard_tags, refresh=config.dashboard_refresh, time_from=config.dashboard_time_from,
        variables=variables(config), panels=panels, annotations=[interpreter_annotation(config)])


# --- alerts ----------------------------------------------------------------------------------


# --- recorded memory of earlier interpreters -------------------------------------------------


def _site_group_identity(config: MixinConfig) -> str:
    return "_".join([*config.selector_labels, config.host_label, "group", "identity"])


def last_seen(config: MixinConfig = CONFIG) -> str:
    """When each interpreter of a group was last seen running (state; forgotten after service_memory)."""
    return f"{_site_group_identity(config)}:pyparallel_service_processes:last_seen"


def remembered_serialised(config: MixinConfig = CONFIG) -> str:
    """Each interpreter's serialised ratio over the reference window, remembered (state) while
    `last_seen` remembers the interpreter: the yardstick after an upgrade."""
    return f"{_site_group_identity(config)}:pyparallel_service_serialised_ratio:remembered_avg"


def services_state_group(config: MixinConfig = CONFIG) -> dict[str, Any]:
    """`pyparallel.services.state`: no week-long window, each rule reads its own last value
    (as the probe state rules do, dashboards/recording.py)."""
    c = config
    sel, by = c.exporter_selector, f"{c.site_by}, group, {IDENTITY}"
    memory = seconds(c.service_memory)
    running = f"max by ({by}) (pyparallel_service_processes{{{sel}}})"
    averaged = (f"max by ({by}) (avg_over_time(pyparallel_service_serialised_ratio{{{sel}}}"
                f"[{c.reference_window}]))")
    return {"name": "pyparallel.services.state", "interval": c.state_interval, "rules": [
        {"record": last_seen(c),
         "expr": f"{running} * 0 + time()\nor\n{previous(c, last_seen(c))} > time() - {memory}"},
        {"record": remembered_serialised(c),
         "expr": (f"{averaged}\nor\n({previous(c, remembered_serialised(c))}\n"
                  f" and on({by}) {last_seen(c)}{{{sel}}})")},
    ]}


def services_alerts_group(config: MixinConfig = CONFIG) -> dict[str, Any]:
    """The `pyparallel.services` group, in Prometheus rule-file form."""
    c = config
    sel = c.exporter_selector
    window = c.service_window
    serialised = f"avg_over_time(pyparallel_service_serialised_ratio{{{sel}}}[{window}])"
    site_group = f"{c.site_by}, group"
    where = f"{{{{ $labels.group }}}} on {{{{ $labels.{c.host_label} }}}}"
    identity = "{{ $labels.implementation }} {{ $labels.version }}"
    return {"name": "pyparallel.services", "rules": [
        _alert(
            c,
            "PyParallelServiceSerialOnFreeThreadedBuild",
            f'avg_over_time(pyparallel_service_serialised_ratio{{{sel}, free_threaded_build="true"}}[{window}])'
            f" >= {c.service_serial_ratio:g}",
            c.service_serial_for,
            "A service on a free-threaded Python still runs its busy threads one at a time.",
            f"The processes of {where} run the free-threaded build {identity}, yet over {window} "
            f"{{{{ $value | humanizePercentage }}}} of those the sampler could judge kept their busy threads on about "
            "one core while the host had cores to spare: a C extension re-enabled the GIL, or a lock serialises them.",
        ),
        _alert(
            c,
            # Against every earlier interpreter of the group seen within service_memory that ran
            # parallel (its remembered average); identities still running are not "earlier".
            "PyParallelServiceBecameSerialAfterUpgrade",
            f"{serialised} >= {c.service_serial_ratio:g}\n"
            f"and on({site_group})\n"
            "(\n"
            f"    last_over_time({remembered_serialised(c)}{{{sel}}}[{c.fresh_window}])"
            f" < {c.service_parallel_ratio:g}\n"
            f"  unless on({site_group}, {IDENTITY})\n"
            f"    pyparallel_service_processes{{{sel}}}\n"
            ")",
            c.service_became_serial_for,
            "A service became serial after an interpreter change.",
            f"{where} now runs {identity} (free-threaded: {{{{ $labels.free_threaded_build }}}}) and its busy "
            f"threads are serialised ({VALUE} of the judged processes over {window}), while under an interpreter it "
            f"ran within {c.service_memory} they ran in parallel.",
        ),
        _alert(
            c,
            "PyParallelServiceNotFound",
            f'pyparallel_service_state{{{sel}, pyparallel_service_state="no_process"}} == 1',
            c.service_not_found_for,
            "No process matches a watched service group.",
            f"The group {where} matched no process for {c.service_not_found_for}: the service is down or the "
            "matcher (comm, exe, cmdline, cgroup, systemd_unit) no longer fits it.",
            severity=c.info_severity,
        ),
        _alert(
            c,
            "PyParallelServiceInterpreterUnreadable",
            f'pyparallel_service_processes{{{sel}, implementation="unknown"}} > 0',
            c.service_unreadable_for,
            "The exporter cannot tell which Python a watched service runs.",
            f"{VALUE} processes of {where} belong to another user and the exporter may not read their maps: "
            "their CPU figures are measured, their interpreter is not. Run the exporter as root or with "
            "CAP_SYS_PTRACE (read-only use) to identify them.",
            severity=c.info_severity,
        ),
        _alert(
            c,
            "PyParallelServiceWatcherStalled",
            f"pyparallel_service_scan_running_seconds{{{sel}}} > {seconds(c.service_scan_stall)}",
            c.service_stalled_for,
            "The services watcher is stuck in a read.",
            f"A scan of /proc on {{{{ $labels.{c.host_label} }}}} has been running for {VALUE} s (a scan is cut after "
            "10 s at most): a read the kernel does not answer, such as a file on a hung network or FUSE file system "
            "that a watched process maps. The service figures are those of the last scan before it.",
        ),
    ]}


# --- promtool tests --------------------------------------------------------------------------


def fires(c: MixinConfig, name: str, at: str, labels: dict[str, str], value: float) -> dict[str, Any]:
    """promtool_inputs.fires for the services group: `name` fires once, with these labels and `$value`."""
    return pt.fires([services_alerts_group(c)], name, at, labels, value)


def _cohort(t: pt.Target, group: str, version: str, free_threaded: bool) -> dict[str, str]:
    return {**t.labels, "group": group, "implementation": "cpython", "version": version,
            "free_threaded_build": str(free_threaded).lower()}


def service_tests(c: MixinConfig) -> list[dict[str, Any]]:
    t = pt.Target(c)
    rounds = seconds(c.service_window) // pt.ROUND + 4
    tests = []
    ft_app = _cohort(t, "app", "3.13.5", True)
    gil_app = _cohort(t, "app", "3.12.8", False)
    tests.append(pt.case(
        "A free-threaded service whose busy threads stay on one core fires; the same figure on a GIL build does not",
        [pt.series("pyparallel_service_serialised_ratio", ft_app, pt.const(1, rounds)),
         pt.series("pyparallel_service_serialised_ratio", {**gil_app, "group": "legacy"}, pt.const(1, rounds))],
        [fires(c, "PyParallelServiceSerialOnFreeThreadedBuild", pt.when(rounds - 1), ft_app, 1.0)],
    ))
    tests.append(pt.case(
        "A free-threaded service serial in one window of three stays silent",
        [pt.series("pyparallel_service_serialised_ratio", ft_app, [1, 0, 0] * rounds)],
        [pt.silent("PyParallelServiceSerialOnFreeThreadedBuild", pt.when(3 * rounds - 1))],
    ))
    before, after = 2 * rounds, rounds
    upgrade = [
        pt.series("pyparallel_service_serialised_ratio", gil_app, pt.const(0, before) + ["stale"]),
        pt.series("pyparallel_service_processes", gil_app, pt.const(4, before) + ["stale"]),
        pt.series("pyparallel_service_serialised_ratio", ft_app, pt.gap(before) + pt.const(1, after)),
        pt.series("pyparallel_service_processes", ft_app, pt.gap(before) + pt.const(4, after)),
    ]
    at = pt.when(before + after - 1)
    tests.append(pt.case(
        "A service parallel on 3.12 (threads releasing the GIL) that turns serial on 3.13t fires both alerts",
        upgrade,
        [fires(c, "PyParallelServiceBecameSerialAfterUpgrade", at, ft_app, 1.0),
         fires(c, "PyParallelServiceSerialOnFreeThreadedBuild", at, ft_app, 1.0)],
        # Both interpreters are remembered, each with its own serialised average.
        [{"expr": f"max by (version) ({remembered_serialised(c)})", "eval_time": at,
          "exp_samples": [{"labels": '{version="3.12.8"}', "value": 0}, {"labels": '{version="3.13.5"}', "value": 1}]},
         {"expr": f"count by (version) ({last_seen(c)})", "eval_time": at,
          "exp_samples": [{"labels": '{version="3.12.8"}', "value": 1}, {"labels": '{version="3.13.5"}', "value": 1}]}],
    ))
    serial_before = [
        pt.series("pyparallel_service_serialised_ratio", gil_app, pt.const(1, before) + ["stale"]),
        pt.series("pyparallel_service_processes", gil_app, pt.const(4, before) + ["stale"]),
        pt.series("pyparallel_service_serialised_ratio", _cohort(t, "app", "3.13.5", False),
                  pt.gap(before) + pt.const(1, after)),
        pt.series("pyparallel_service_processes", _cohort(t, "app", "3.13.5", False), pt.gap(before) + pt.const(4, after)),
    ]
    tests.append(pt.case(
        "A GIL-bound service that stays serial after an upgrade to 3.13 with the GIL did not *become* serial",
        serial_before, [pt.silent("PyParallelServiceBecameSerialAfterUpgrade", pt.when(before + after - 1))],
    ))
    rolling = [upgrade[0], pt.series("pyparallel_service_processes", gil_app, pt.const(4, before + after)), *upgrade[2:]]
    tests.append(pt.case(
        "While the old interpreter still runs (a rolling upgrade) the group has not changed interpreter yet",
        rolling, [pt.silent("PyParallelServiceBecameSerialAfterUpgrade", pt.when(before + after - 1))],
    ))
    state = {**t.labels, "group": "app"}
    tests.append(pt.case(
        "A configured group that matches no process fires after its hold time, not before",
        [pt.series("pyparallel_service_state", {**state, "pyparallel_service_state": "no_process"},
                   pt.const(0, 2) + pt.const(1, rounds))],
        [pt.silent("PyParallelServiceNotFound", pt.when(2)),
         fires(c, "PyParallelServiceNotFound", pt.when(rounds + 1), {**state, "pyparallel_service_state": "no_process"},
                  1.0)],
    ))
    # The exporter's version="" is no label at all in Prometheus.
    unknown = {**t.labels, "group": "app", "implementation": "unknown", "free_threaded_build": "unknown"}
    tests.append(pt.case(
        "Processes whose interpreter cannot be read fire the info alert with their count",
        [pt.series("pyparallel_service_processes", unknown, pt.const(3, 2 * rounds))],
        [fires(c, "PyParallelServiceInterpreterUnreadable", pt.when(2 * rounds - 1), unknown, 3.0)],
    ))
    tests.append(pt.case(
        "Processes of a group that are all identified fire no unreadable alert",
        [pt.series("pyparallel_service_processes", ft_app, pt.const(3, 2 * rounds)),
         pt.series("pyparallel_service_processes", unknown, pt.const(0, 2 * rounds))],
        [pt.silent("PyParallelServiceInterpreterUnreadable", pt.when(2 * rounds - 1))],
    ))
    sampler = dict(t.labels)
    stuck = [pt.ROUND * i for i in range(5)]  # a scan that began at the start and never ended
    tests.append(pt.case(
        "A scan that never returns fires once its running time has stayed above the stall for the hold time",
        [pt.series("pyparallel_service_scan_running_seconds", sampler, stuck)],
        [pt.silent("PyParallelServiceWatcherStalled", pt.when(1)),
         fires(c, "PyParallelServiceWatcherStalled", pt.when(4), sampler, float(stuck[4]))],
    ))
    tests.append(pt.case(
        "Scans that end (running time back to 0 between them, 10 s at their slowest) never fire",
        [pt.series("pyparallel_service_scan_running_seconds", sampler, [0, 0.05, 0, 10] * 4)],
        [pt.silent("PyParallelServiceWatcherStalled", pt.when(15))],
    ))
    return tests


def promtool_test_files(config: MixinConfig = CONFIG) -> dict[str, dict[str, Any]]:
    """File name (in deploy/prometheus/tests) -> promtool test document."""
    # The alerts live in the exporter alerts file; their memory of earlier interpreters in the recording file.
    rule_files = ["../rules/pyparallel-recording.yml", "../rules/pyparallel-exporter-alerts.yml"]
    return {"services_test.yml": pt.unit_test_file(rule_files, service_tests(config), "1m")}
