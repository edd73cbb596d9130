"""Small grafanalib helpers shared by the dashboards: datasource, targets, panels, grid layout."""

from __future__ import annotations

import string
from typing import Any

import attr
from grafanalib import core as g

# Every panel and every target points at the `datasource` template variable.
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}

# Threshold steps: a single neutral colour, for panels whose colour means nothing.
NEUTRAL = [{"color": "text", "value": None}]


def steps(bounds: tuple[float, float]) -> list[dict[str, Any]]:
    """Red below the first bound, orange below the second, green from it on."""
    low, high = bounds
    return [{"color": "red", "value": None}, {"color": "orange", "value": low}, {"color": "green", "value": high}]


def targets(*queries: tuple[str, str], instant: bool = False, table: bool = False) -> list[g.Target]:
    """Targets A, B, ... from (expr, legend) pairs, all on the datasource variable."""
    return [
        g.Target(
            expr=expr,
            legendFormat=legend,
            refId=string.ascii_uppercase[i],
            datasource=DATASOURCE,
            instant=instant or table,
            format=g.TABLE_TARGET_FORMAT if table else g.TIME_SERIES_TARGET_FORMAT,
        )
        for i, (expr, legend) in enumerate(queries)
    ]


def value_text(mapping: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """A Grafana value mapping: raw value -> (display text, colour)."""
    options = {
        value: {"text": text, "color": colour, "index": i}
        for i, (value, (text, colour)) in enumerate(mapping.items())
    }
    return [{"type": "value", "options": options}]


def over(selector: str, function: str = "avg") -> str:
    """`<function>_over_time(selector[$__interval])`: every round in each step counts once.

    Probe gauges change once per round (default every 5 minutes); an instant sample per step
    would pick every n-th round on long time ranges and alias the per-round noise.
    """
    return f"{function}_over_time({selector}[$__interval])"


def timeseries(
    title: str,
    description: str,
    *queries: tuple[str, str],
    unit: str = "",
    minimum: int | None = None,
    overrides: list[dict[str, Any]] | None = None,
    interval: str = "5m",
) -> g.TimeSeries:
    """A time-series panel with the legend as a table of last/mean/max; no lines across gaps."""
    return g.TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets(*queries),
        unit=unit,
        valueMin=minimum,
        legendDisplayMode="table",
        legendPlacement="bottom",
        legendCalcs=["lastNotNull", "mean", "max"],
        tooltipMode="multi",
        tooltipSort="desc",
        showPoints="auto",
        # A failed or missing round is a gap, not a line from the round before to the one after.
        spanNulls=False,
        overrides=overrides or [],
        interval=interval,
    )


def dashed(regex: str) -> dict[str, Any]:
    """A field override drawing the series whose name matches `regex` as a dashed line."""
    return {
        "matcher": {"id": "byRegexp", "options": regex},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.lineWidth", "value": 2},
        ],
    }


def stat(
    title: str,
    description: str,
    *queries: tuple[str, str],
    unit: str = "none",
    decimals: int | None = None,
    mappings: list[dict[str, Any]] | None = None,
    text_mode: str = "value_and_name",
    thresholds: list[dict[str, Any]] | None = None,
) -> g.Stat:
    """A stat panel showing the latest value of every series."""
    return g.Stat(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets(*queries, instant=True),
        format=unit,
        decimals=decimals,
        mappings=mappings or [],
        textMode=text_mode,
        graphMode="none",
        reduceCalc="lastNotNull",
        colorMode="value",
        thresholds=thresholds or NEUTRAL,
    )


class Grid:
    """Places panels left to right in rows of 24 columns, each group under a row header."""

    def __init__(self) -> None:
        self.panels: list[g.Panel] = []
        self._x = 0
        self._y = 0
        self._height = 0

    def row(self, title: str) -> Grid:
        self._newline()
        self.panels.append(g.RowPanel(title=title, gridPos=g.GridPos(h=1, w=24, x=0, y=self._y)))
        self._y += 1
        return self

    def add(self, panel: g.Panel, w: int, h: int = 8) -> Grid:
        if self._x + w > 24:
            self._newline()
        self.panels.append(attr.evolve(panel, gridPos=g.GridPos(h=h, w=w, x=self._x, y=self._y)))
        self._x += w
        self._height = max(self._height, h)
        return self

    def _newline(self) -> None:
        self._y += self._height
        self._x = 0
        self._height = 0


def query_variable(name: str, label: str, query: str, *, multi: bool, default: str | None = None,
                   all_matches_any: bool = True, hide: int = 0) -> g.Template:
    """A Prometheus `label_values()` variable, refreshed when the time range changes.

    With "All" selected, `all_matches_any` sends a regex matching any value, which keeps the
    query short; without it Grafana sends the listed values, for a variable whose values are
    only some of the label's (one host's instances).
    """
    return g.Template(
        name=name,
        label=label,
        query=query,
        dataSource=DATASOURCE,
        multi=multi,
        includeAll=multi,
        allValue=".+" if multi and all_matches_any else None,
        hide=hide,
        default="$__all" if multi and default is None else default,
        refresh=g.REFRESH_ON_TIME_RANGE_CHANGE,
        sort=g.SORT_ALPHA_ASC,
    )


def datasource_variable() -> g.Template:
    """The datasource picker every panel refers to."""
    return g.Template(
        name="datasource",
        label="Data source",
        query="prometheus",
        type="datasource",
        default="Prometheus",
    )


def make_dashboard(
    title: str, uid: str, description: str, tags: tuple[str, ...], refresh: str, time_from: str,
    variables: list[g.Template], panels: list[g.Panel], annotations: list[dict[str, Any]] | None = None,
) -> g.Dashboard:
    """A dashboard with stable panel ids and links to the other dashboards of the mixin."""
    return g.Dashboard(
        title=title,
        uid=uid,
        description=description,
        tags=list(tags),
        refresh=refresh,
        time=g.Time(time_from, "now"),
        timezone="browser",
        # The generator drops grafanalib's legacy `sharedCrosshair`, from which Grafana's
        # schema migration would rebuild (and lose) this setting.
        graphTooltip=g.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        editable=True,
        templating=g.Templating(list=variables),
        annotations=g.Annotations(list=annotations or []),
        links=[
            {
                "title": "Python parallelism dashboards",
                "type": "dashboards",
                "tags": [tags[0]],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
            }
        ],
        panels=panels,
    ).auto_panel_ids()
