"""Reads the PromQL out of dashboard JSON, so tests can check and run every panel's query."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from dashboards.fleet_rules import ratio_quantiles
from dashboards.mixin_config import CONFIG
from dashboards.recording import blind_since, reference
from dashboards.services import MAY_BE_EMPTY as SERVICES_MAY_BE_EMPTY
from dashboards.services import SERVICE_METRICS
from exporter.model.metrics import exposed_names

# The series the exporter exposes (the metrics contract); dashboards and rules use no others,
# apart from the recording rules built on them and Prometheus' own `up`.
EXPORTED_METRICS: frozenset[str] = exposed_names() | SERVICE_METRICS  # exporter/model/metrics.py declares every family


# Panels (and annotations) that may show no data on a healthy host after a successful probe
# round, and why.
# Every other panel's every query returns at least one series once a round has succeeded
# (and the recording rules have been evaluated once).
MAY_BE_EMPTY: dict[str, str] = {
    "Hypervisor steal": "pyparallel_steal_ratio exists only where the kernel reports steal time",
    "Modules re-enabling the GIL on import": (
        "pyparallel_import_gil_enabled exists only when the config lists modules to check"
    ),
    # An annotation (see annotation_queries), not a panel: it marks upgrades only.
    "Python version change": "shows data only within minutes of a Python version change",
    "Regression detection blind since": "shows only probes whose every recent round was inconclusive",
    "Probes below their reference, and blind": "counts only probes below their reference or inconclusive",
    **SERVICES_MAY_BE_EMPTY,
}

# Queries that may be empty whatever the panel.
MAY_BE_EMPTY_QUERIES: dict[str, str] = {
    reference(CONFIG): f"a probe's reference is learned over its first {CONFIG.speedup_median_window}",
    blind_since(CONFIG): "recorded only for probes whose every recent round was inconclusive",
    ratio_quantiles(CONFIG): f"a probe's reference is learned over its first {CONFIG.speedup_median_window}",
}


def metrics_read(expr: str) -> set[str]:
    """The exporter's metric names a query reads (recording rules not included)."""
    bare = re.sub(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b", "", expr)
    return set(re.findall(r"\bpyparallel_\w+", bare))


def may_be_empty(title: str, expr: str) -> bool:
    """Whether the live test accepts no data from this query of this panel."""
    return (
        title in MAY_BE_EMPTY
        or any(part in expr for part in MAY_BE_EMPTY_QUERIES)
    )


# `$var`, `${var}`, `${var:format}` and the old `[[var]]` forms of a Grafana variable.
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows and old-style `rows`."""
    stack = list(dashboard.get("panels", [])) + [
        panel for row in dashboard.get("rows", []) for panel in row.get("panels", [])
    ]
    for panel in stack:
        yield panel
        yield from iter_panels({"panels": panel.get("panels", [])})


def all_panel_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expr) of every visible target of every panel, in dashboard order."""
    return [
        (panel.get("title", ""), target["expr"])
        for panel in iter_panels(dashboard)
        if panel.get("type") != "row"
        for target in panel.get("targets", [])
        if target.get("expr") and not target.get("hide")
    ]


def annotation_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(annotation name, PromQL expr) of every Prometheus annotation."""
    return [(a["name"], a["expr"]) for a in dashboard.get("annotations", {}).get("list", []) if a.get("expr")]


def variable_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(variable name, query) of every `query` template variable; these are label_values() calls."""
    return [
        (v["name"], v["query"] if isinstance(v["query"], str) else v["query"]["query"])
        for v in dashboard.get("templating", {}).get("list", [])
        if v.get("type") == "query"
    ]


def variable_names(dashboard: Mapping[str, Any]) -> set[str]:
    """Names of the dashboard's template variables."""
    return {v["name"] for v in dashboard.get("templating", {}).get("list", [])}


def variables_used(text: str) -> set[str]:
    """Names of the variables a query refers to, Grafana's own `$__...` ones included."""
    return {next(name for name in match.groups() if name) for match in _VARIABLE.finditer(text)}


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace every variable with its value; a variable missing from `values` is an error.

    Variables appear as regex matchers (`=~"$instance"`), so a value may be a regex such as
    `.+` (what "All" means in these dashboards) or an escaped literal.
    """

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise KeyError(f"no value for dashboard variable ${name} in {text!r}")
        return values[name]

    return _VARIABLE.sub(replace, text)
