"""Every dashboard query, with its variables filled in, returns data from a real Prometheus
that scrapes a live exporter; and a failing workload's alert reaches a real Alertmanager."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dashboards import queries

pytestmark = pytest.mark.integration

DASHBOARDS = sorted((Path(__file__).resolve().parent.parent / "dashboards").glob("*.json"))


def variable_values(stack) -> dict[str, str]:
    """What a user picking "All" (or this stack's host) would send for each variable."""
    target = stack.exporter.url.split("//")[1]
    host = target.rsplit(":", 1)[0]  # deploy/prometheus sets it from the address
    return {"job": "pyparallel", "host": host, "instance": target, "interpreter": ".+",
            "workload": ".+", "group": ".+", "datasource": "prometheus", "__all": ".+",
            "__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


def panel_queries(dashboard_path: Path) -> list[tuple[str, str]]:
    dashboard = json.loads(dashboard_path.read_text())
    return queries.all_panel_queries(dashboard) + queries.annotation_queries(dashboard)


@pytest.mark.parametrize("dashboard_path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_query_returns_data_from_the_live_stack(live_stack, dashboard_path):
    values = variable_values(live_stack)
    empty = []
    for title, expr in panel_queries(dashboard_path):
        result = live_stack.query(queries.substitute(expr, values))  # raises on a PromQL error
        if not result and not queries.may_be_empty(title, expr):
            empty.append((title, expr))
    assert empty == []


@pytest.mark.parametrize("dashboard_path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_template_variable_finds_values(live_stack, dashboard_path):
    """label_values(metric, label) variables: ask Prometheus for that label's values."""
    dashboard = json.loads(dashboard_path.read_text())
    for name, query in queries.variable_queries(dashboard):
        match = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", query.strip())
        assert match, f"variable {name}: unexpected query {query!r}"
        selector, label = match.groups()
        selector = queries.substitute(selector or "up", variable_values(live_stack))
        found = {s["metric"].get(label) for s in live_stack.query(selector)} - {None}
        assert found, f"variable {name} ({query}) finds no values"


def test_probe_failing_alert_for_a_raising_workload_reaches_alertmanager(live_stack):
    alerts = live_stack.delivered_alerts("PyParallelProbeFailing")
    assert {a["labels"]["workload"] for a in alerts} == {"faulty_workloads:raises"}
    assert all(a["labels"]["severity"] for a in alerts)
    assert all(a["annotations"]["runbook_url"] for a in alerts)


def test_no_alert_fires_for_the_healthy_workloads(live_stack):
    firing = live_stack.query('ALERTS{alertstate="firing",workload=~"pure_python|sleep"}')
    assert [a["metric"]["alertname"] for a in firing
            if a["metric"].get("interpreter") == "cpython-system"] == []


def test_the_exporter_exports_the_metrics_the_dashboards_read(live_stack):
    """Every metric the dashboards and rules read is exported by the real exporter."""
    import support

    _, text = support.http_get(live_stack.exporter.url + "/metrics")
    exported = set(re.findall(r"^# TYPE (pyparallel_\w+) ", text, flags=re.MULTILINE))
    exported |= {name.removesuffix("_total") for name in exported}
    assert queries.EXPORTED_METRICS <= exported | {"pyparallel_probe_failures_total"}
