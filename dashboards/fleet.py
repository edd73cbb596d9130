"""The "Python parallelism — fleet" dashboard: which hosts got worse, at a thousand hosts.

It reads only the recording rules' series and `ALERTS`, so it answers the same from the
Prometheus that scrapes the exporters as from a central one that receives the recorded series
(remote write, federation). Rows are keyed by host (the host label, or its fallback), never by
scrape address; time series draw fleet quantiles and counts, never one line per host.
"""

from __future__ import annotations

from typing import Any

from grafanalib import core as g

from dashboards.alerting import identity_text
from dashboards.fleet_rules import blind_probes, held_probes, ratio_quantiles, reference_ratio
from dashboards.mixin_config import CONFIG, MixinConfig, duration, seconds
from dashboards.panels import (
    DATASOURCE,
    Grid,
    datasource_variable,
    make_dashboard,
    query_variable,
    stat,
    targets,
    timeseries,
    value_text,
)
from dashboards.recording import (
    blind_since,
    current_identity,
    efficiency_last,
    gil_enabled,
    held_since,
    host_last_seen,
    identity_since,
    last_success,
    probe_success,
    reference,
    speedup_median,
)

GOOD_IF_ZERO: list[dict[str, Any]] = [{"color": "green", "value": None}, {"color": "red", "value": 1}]
ORANGE_IF_ANY: list[dict[str, Any]] = [{"color": "green", "value": None}, {"color": "orange", "value": 1}]


class Fleet:
    """Selectors and recorded series of the fleet dashboard for one MixinConfig."""

    def __init__(self, c: MixinConfig) -> None:
        self.c = c
        self.jobs = ", ".join(m for m in (c.dashboard_selector, 'job=~"$job"') if m)
        self.window = duration(2 * seconds(c.state_interval))  # one state sample whatever the phase
        self.row_by = f"{c.site_by}, interpreter, workers"

    def last(self, record: str, matchers: str = "") -> str:
        """The latest value of a recorded series of the selected jobs."""
        extra = f", {matchers}" if matchers else ""
        return f"last_over_time({record}{{{self.jobs}{extra}}}[{self.window}])"

    def probe(self, record: str, matchers: str = "") -> str:
        """A per-probe recorded series of the selected workload."""
        return self.last(record, ", ".join(m for m in ('workload=~"$workload"', matchers) if m))

    def ratio(self) -> str:
        """Current level / reference of each probe of the selected workload (recorded)."""
        return self.probe(reference_ratio(self.c))

    def with_python(self, vector: str) -> str:
        """`vector` (per probe or per role) with a `python` label naming its role's identity."""
        current = current_identity(self.c, self.last(identity_since(self.c)))
        return (f"{vector}\n* on({self.c.role_by}) group_left(python)\n"
                f"({identity_text(current, 'python')} * 0 + 1)")


def variables(config: MixinConfig) -> list[g.Template]:
    f = Fleet(config)
    return [
        datasource_variable(),
        query_variable("job", "Job", f"label_values({host_last_seen(config)}{{{config.dashboard_selector}}}, job)",
                       multi=True),
        # One workload at a time: every panel filters to it instead of mixing workloads.
        query_variable(
            "workload", "Workload", f"label_values({speedup_median(config)}{{{f.jobs}}}, workload)",
            multi=False, default=config.headline_workload,
        ),
    ]


def _by_name(name: str, *properties: tuple[str, Any]) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": key, "value": value} for key, value in properties],
    }


def _table(title: str, description: str, queries: list[tuple[str, str]], rename: dict[str, str],
           overrides: list[dict[str, Any]], sort: str, hidden: tuple[str, ...] = ()) -> g.Table:
    """An instant table: one query per column, merged on their labels."""
    refs = [t.refId for t in targets(*queries)]
    columns = {**rename, **{f"Value #{ref}": name for ref, name in zip(refs, [n for _, n in queries])}}
    return g.Table(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets(*((expr, "") for expr, _ in queries), table=True),
        transformations=[
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {
                "excludeByName": {"Time": True, "__name__": True, **{name: True for name in hidden}},
                "indexByName": {name: i for i, name in enumerate(columns)},
                "renameByName": columns,
            }},
        ],
        overrides=overrides,
        sortBy=[g.TableSortByField(displayName=sort)],
    )


def overview(grid: Grid, f: Fleet) -> None:
    c = f.c
    grid.row("Fleet")
    now = f"time() - {seconds(c.absent_after)}"
    grid.add(stat("Hosts reporting", f"Hosts with an exporter scraped in the last {c.absent_after}.",
                  (f"count({f.last(host_last_seen(c))} > {now}) or vector(0)", "hosts")), w=4, h=4)
    grid.add(stat("Hosts absent", f"Hosts seen in the last {c.forget_after} whose exporters stopped reporting.",
                  (f"count({f.last(host_last_seen(c))} <= {now}) or vector(0)", "absent"),
                  thresholds=GOOD_IF_ZERO), w=4, h=4)
    grid.add(stat("Probes below their reference", "Probes of the workload held below their reference speedup.",
                  (f"count({f.probe(held_since(c))} > 0) or vector(0)", "regressed"),
                  thresholds=GOOD_IF_ZERO), w=4, h=4)
    grid.add(stat(f"Probes blind for {c.blind_after}",
                  f"Probes of the workload whose every round for more than {c.blind_after} was inconclusive.",
                  (f"count({f.probe(blind_since(c))} > 0 < time() - {seconds(c.blind_after)}) or vector(0)", "blind"),
                  thresholds=ORANGE_IF_ANY), w=4, h=4)
    grid.add(stat("Failing probes", "Probes (every workload) whose last round failed.",
                  (f"count({f.last(probe_success(c))} == 0) or vector(0)", "failing"),
                  thresholds=GOOD_IF_ZERO), w=4, h=4)
    stale = c.stale_intervals * seconds(c.probe_interval)
    grid.add(stat("Stale probes", f"Probes without a success in {c.stale_intervals} probe intervals.",
                  (f"count(time() - {f.last(last_success(c))} > {stale}) or vector(0)", "stale"),
                  thresholds=GOOD_IF_ZERO), w=4, h=4)


def worst(grid: Grid, f: Fleet) -> None:
    """Which hosts got worse: the lowest ratios to their reference, and what fires."""
    c = f.c
    grid.row("Which hosts got worse")
    worst_n = f"bottomk({c.fleet_worst_rows}, {f.ratio()})"

    def column(vector: str) -> str:
        return f.with_python(f"{vector}\nand on({c.probe_by})\n{worst_n}")

    grid.add(_table(
        f"The {c.fleet_worst_rows} probes furthest below their reference",
        f"Probes of the selected workload with the lowest {c.speedup_median_window} median speedup relative to "
        "their reference: below 75 % the regression alerts hold (see the alerts table). Efficiency = speedup / "
        "workers.",
        [(f.with_python(worst_n), "Ratio to reference"),
         (column(f.probe(speedup_median(c))), "Speedup now"),
         (column(f.probe(reference(c))), "Reference"),
         (column(f.probe(efficiency_last(c))), "Efficiency"),
         (column(f.probe(held_since(c)) + " * 1000"), "Below since")],
        {c.host_label: "Host", "interpreter": "Interpreter", "python": "Python", "workload": "Workload",
         "mode": "Mode", "workers": "Workers"},
        [_by_name("Ratio to reference", ("unit", "percentunit"), ("decimals", 0),
                  ("custom.displayMode", "color-background"),
                  ("thresholds", {"mode": "absolute", "steps": [
                      {"color": "red", "value": None}, {"color": "orange", "value": c.keep},
                      {"color": "green", "value": c.recover}]})),
         _by_name("Speedup now", ("decimals", 2)), _by_name("Reference", ("decimals", 2)),
         _by_name("Efficiency", ("unit", "percentunit"), ("decimals", 0)),
         _by_name("Below since", ("unit", "dateTimeFromNow"),
                  ("mappings", value_text({"0": ("—", "text")})))],
        sort="Ratio to reference",
        hidden=("job",),
    ), w=16, h=10)
    grid.add(_table(
        "Firing alerts",
        "Every firing PyParallel alert of the selected jobs, with its host and, for an upgrade, both Pythons.",
        [(f'ALERTS{{alertstate="firing", alertname=~"PyParallel.*", {f.jobs}}}', "Firing")],
        {"alertname": "Alert", "severity": "Severity", c.host_label: "Host", "interpreter": "Interpreter",
         "workload": "Workload", "mode": "Mode", "workers": "Workers", "from": "From", "to": "To",
         "python": "Python"},
        [],
        sort="Alert",
        hidden=("alertstate", "job", "Firing", c.host_fallback_label),
    ), w=8, h=10)


def across(grid: Grid, f: Fleet) -> None:
    """Fleet-wide time series: recorded quantiles and counts, a handful of lines at any fleet size."""
    c = f.c
    grid.row("Across the fleet")

    def over_steps(vector: str) -> str:
        return vector.replace(f"[{f.window}]", "[$__interval]")

    workload = 'workload=~"$workload"'
    grid.add(timeseries(
        "Speedup relative to reference, fleet quantiles",
        "The 5th percentile, median and 95th percentile across the fleet of each probe's current level divided by "
        "its reference, per mode, for the selected workload (recorded every few minutes by pyparallel.fleet). "
        "1 = as before; a falling 5th percentile means some hosts got worse (the table above names them).",
        (over_steps(f.last(ratio_quantiles(c), workload)), "{{mode}} p{{quantile}}"),
        unit="percentunit",
        interval=f.window,
    ), w=12, h=9)
    grid.add(timeseries(
        "Probes below their reference, and blind",
        "How many probes of the selected workload were held below their reference, and how many had only "
        "inconclusive rounds (the host too busy to tell), per mode.",
        (over_steps(f.last(held_probes(c), workload)), "{{mode}} below reference"),
        (over_steps(f.last(blind_probes(c), workload)), "{{mode}} inconclusive"),
        minimum=0,
        interval=f.window,
    ), w=12, h=9)


def interpreters_table(f: Fleet) -> g.Table:
    """One row per host, interpreter role and worker count: identity, GIL, speedup and
    efficiency per mode for the selected workload."""
    c = f.c
    modes = ("threads", "processes")

    def per_row(record: str, mode: str) -> str:
        one_mode = f.probe(record, f'mode="{mode}"')
        return f.with_python(f"max by ({f.row_by}) ({one_mode})")

    base = f"max by ({f.row_by}) ({f.probe(speedup_median(c))})"
    gil = f"{base} * 0 + on({c.role_by}) group_left() {f.last(gil_enabled(c))}"
    queries = [(f.with_python(gil), "GIL at run time")]
    for mode in modes:
        queries += [(per_row(speedup_median(c), mode), f"{mode} speedup"),
                    (per_row(efficiency_last(c), mode), f"{mode} efficiency")]
    return _table(
        "Interpreters",
        "One row per host, interpreter role and worker count: the Python behind the role (implementation, "
        f"version, t = free-threaded build), the GIL at run time, and the {c.speedup_median_window} median speedup "
        "and efficiency per mode for the selected workload.",
        queries,
        {c.host_label: "Host", "interpreter": "Interpreter", "python": "Python", "workers": "Workers"},
        [_by_name("GIL at run time", ("mappings", value_text({"0": ("off", "green"), "1": ("on", "orange")})),
                  ("custom.displayMode", "color-text")),
         *(_by_name(f"{mode} speedup", ("decimals", 2)) for mode in modes),
         *(_by_name(f"{mode} efficiency", ("unit", "percentunit"), ("decimals", 0)) for mode in modes)],
        sort="Host",
        hidden=("job",),
    )


def build(config: MixinConfig = CONFIG) -> g.Dashboard:
    f = Fleet(config)
    grid = Grid()
    overview(grid, f)
    worst(grid, f)
    across(grid, f)
    grid.row("Interpreters")
    grid.add(interpreters_table(f), w=24, h=12)
    return make_dashboard(
        title=config.fleet_dashboard_title,
        uid=config.fleet_dashboard_uid,
        description=("Which hosts got worse: the probes furthest below their reference, the firing alerts, fleet "
                     "quantiles, and every host's Python, GIL, speedup and efficiency. Reads only recorded series."),
        tags=config.dashboard_tags,
        refresh=config.dashboard_refresh,
        time_from=config.dashboard_time_from,
        variables=variables(config),
        panels=grid.panels,
    )


dashboard = build()
