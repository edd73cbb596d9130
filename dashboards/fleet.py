"""The "Python parallelism — fleet" dashboard: one table row per exporter instance and interpreter."""

from __future__ import annotations

from typing import Any

from grafanalib import core as g

from dashboards.mixin_config import CONFIG, MixinConfig
from dashboards.panels import (
    DATASOURCE,
    Grid,
    datasource_variable,
    make_dashboard,
    over,
    query_variable,
    stat,
    targets,
    timeseries,
    value_text,
)
from dashboards.recording import speedup_median

# Variables are used as regex matchers, so any value (or ".+") can be substituted.
BY = "job, instance, interpreter"
GOOD_IF_ZERO: list[dict[str, Any]] = [{"color": "green", "value": None}, {"color": "red", "value": 1}]


def jobs(config: MixinConfig) -> str:
    """The mixin's selector and the job variable."""
    return f'{config.exporter_selector}, job=~"$job"'


def variables(config: MixinConfig) -> list[g.Template]:
    return [
        datasource_variable(),
        query_variable(
            "job", "Job", f"label_values(pyparallel_exporter_build_info{{{config.exporter_selector}}}, job)", multi=True
        ),
        # One workload at a time: every panel filters to it instead of mixing workloads.
        query_variable(
            "workload", "Workload", f"label_values(pyparallel_probe_success{{{jobs(config)}}}, workload)",
            multi=False, default=config.headline_workload,
        ),
    ]


def mode_speedup(config: MixinConfig, mode: str) -> str:
    """Best speedup of `mode` per interpreter over worker counts, for the one selected workload;
    NaN (shown as "not probed") when there is none."""
    job = jobs(config)
    return (
        f'max by ({BY}) (pyparallel_speedup_ratio{{{job}, workload=~"$workload", mode="{mode}"}})\n'
        f"or on({BY})\n"
        f"max by ({BY}) (pyparallel_python_info{{{job}}}) * NaN"
    )


def _by_name(name: str, *properties: tuple[str, Any]) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": key, "value": value} for key, value in properties],
    }


def interpreters_table(config: MixinConfig) -> g.Table:
    modes = config.parallel_modes
    job = jobs(config)
    queries = [
        (f"pyparallel_python_info{{{job}}}", ""),
        (f"max by ({BY}) (pyparallel_gil_enabled{{{job}}})", ""),
        *((mode_speedup(config, mode), "") for mode in modes),
        (f'min by ({BY}) (pyparallel_probe_last_success_timestamp_seconds{{{job}, workload=~"$workload"}}) * 1000', ""),
    ]
    refs = [t.refId for t in targets(*queries)]
    speedup_columns = {f"Value #{ref}": f"{mode} speedup" for ref, mode in zip(refs[2:], modes)}
    rename = {
        "instance": "Instance", "interpreter": "Interpreter", "version": "Version",
        "implementation": "Implementation", "free_threaded_build": "Free-threaded build",
        f"Value #{refs[1]}": "GIL at run time", **speedup_columns,
        f"Value #{refs[-1]}": "Last success (oldest probe)",
    }
    not_probed = {"type": "special", "options": {"match": "nan", "result": {"text": "not probed", "index": 0}}}
    return g.Table(
        title="Interpreters",
        description=("One row per exporter instance and interpreter: identity, GIL state, "
                     "best speedup per mode for the selected workload, and the age of the oldest last success."),
        dataSource=DATASOURCE,
        targets=targets(*queries, table=True),
        transformations=[
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {
                "excludeByName": {"Time": True, "__name__": True, "job": True, f"Value #{refs[0]}": True},
                "indexByName": {name: i for i, name in enumerate(rename)},
                "renameByName": rename,
            }},
        ],
        overrides=[
            _by_name("GIL at run time", ("mappings", value_text({"0": ("off", "green"), "1": ("on", "orange")})),
                     ("custom.displayMode", "color-text")),
            *(_by_name(column, ("decimals", 2), ("mappings", [not_probed])) for column in speedup_columns.values()),
            _by_name("Last success (oldest probe)", ("unit", "dateTimeFromNow")),
        ],
        sortBy=[g.TableSortByField(displayName="Instance")],
    )


def build(config: MixinConfig = CONFIG) -> g.Dashboard:
    median = speedup_median(config)
    job = jobs(config)
    host = config.host_label
    grid = Grid()
    grid.row("Fleet")
    grid.add(stat(
        "Exporters", "Exporter instances reporting.",
        (f"count(pyparallel_exporter_build_info{{{job}}})", "exporters"),
    ), w=6, h=4)
    grid.add(stat(
        "Failing probes", "Probes whose last round failed.",
        (f"count(pyparallel_probe_success{{{job}}} == 0) or vector(0)", "failing"),
        thresholds=GOOD_IF_ZERO,
    ), w=6, h=4)
    grid.add(stat(
        "Stale probes", f"Probes without a success in {config.stale_intervals} probe intervals.",
        ((f"count(time() - pyparallel_probe_last_success_timestamp_seconds{{{job}}}"
          f" > on(job, instance) group_left() {config.stale_intervals} * pyparallel_probe_interval_seconds{{{job}}})"
          " or vector(0)"), "stale"),
        thresholds=GOOD_IF_ZERO,
    ), w=6, h=4)
    grid.add(stat(
        "Free-threaded builds running with the GIL", "Free-threaded interpreters whose GIL was on at run time.",
        ((f"count(pyparallel_gil_enabled{{{job}}} == 1 and on({BY})"
          f' pyparallel_python_info{{{job}, free_threaded_build="true"}}) or vector(0)'), "GIL on"),
        thresholds=GOOD_IF_ZERO,
    ), w=6, h=4)
    grid.add(interpreters_table(config), w=24, h=10)
    grid.row("Speedup across the fleet")
    grid.add(timeseries(
        f"Threads speedup, {config.speedup_median_window} median",
        "Threads speedup of the selected workload per host, interpreter role and worker count.",
        (over(f'{median}{{{job}, workload=~"$workload", mode="threads"}}'),
         f"{{{{{host}}}}} {{{{interpreter}}}} ×{{{{workers}}}}"),
        minimum=0,
        interval=config.dashboard_min_interval,
    ), w=12, h=9)
    grid.add(timeseries(
        f"Processes speedup, {config.speedup_median_window} median",
        "Processes speedup of the selected workload per host, interpreter role and worker count.",
        (over(f'{median}{{{job}, workload=~"$workload", mode="processes"}}'),
         f"{{{{{host}}}}} {{{{interpreter}}}} ×{{{{workers}}}}"),
        minimum=0,
        interval=config.dashboard_min_interval,
    ), w=12, h=9)
    return make_dashboard(
        title=config.fleet_dashboard_title,
        uid=config.fleet_dashboard_uid,
        description="Every exporter at a glance: Python version, free-threaded build, GIL, speedup per mode.",
        tags=config.dashboard_tags,
        refresh=config.dashboard_refresh,
        time_from=config.dashboard_time_from,
        variables=variables(config),
        panels=grid.panels,
    )


dashboard = build()
