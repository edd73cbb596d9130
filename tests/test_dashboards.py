"""Grafana dashboards: generated from their sources, structurally sound, every query valid PromQL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import require_binary
from dashboards import queries
from dashboards.generate import FLEET_DASHBOARD, HOST_DASHBOARD, SERVICES_DASHBOARD

ROOT = Path(__file__).resolve().parent.parent

DASHBOARD_FILES = {"host": ROOT / HOST_DASHBOARD, "fleet": ROOT / FLEET_DASHBOARD,
                   "services": ROOT / SERVICES_DASHBOARD}
STABLE_UIDS = {"host": "pyparallel-host", "fleet": "pyparallel-fleet", "services": "pyparallel-services"}
# Panel types Grafana ships (core visualisations); a typo or a plugin id would render as an error.
GRAFANA_PANEL_TYPES = {
    "alertlist", "annolist", "barchart", "bargauge", "candlestick", "canvas", "dashlist", "flamegraph",
    "gauge", "geomap", "graph", "heatmap", "histogram", "logs", "news", "nodeGraph", "piechart", "row",
    "stat", "state-timeline", "status-history", "table", "text", "timeseries", "traces", "trend", "xychart",
}
# Values the later integration test would use; here only to make the queries parseable.
SAMPLE_VALUES = {"datasource": "prometheus", "job": "pyparallel", "host": "host", "instance": "host:9860", "group": ".+",
                 "interpreter": ".+", "workload": "pure_python", "__interval": "5m"}
# Metrics with the step labels: aggregating one of them must keep workload and workers.
STEP_METRICS = ("speedup", "efficiency", "cores_used", "core_utilisation", "serial_fraction", "throughput",
                "probe_success", "probe_duration", "probe_failures", "last_success", "interference", "steal",
                "cpu_rate", "unsteady")


def _load(name: str) -> dict[str, Any]:
    return json.loads(DASHBOARD_FILES[name].read_text())


def _panels(name: str) -> list[dict[str, Any]]:
    return [p for p in queries.iter_panels(_load(name)) if p["type"] != "row"]


@pytest.fixture(params=sorted(DASHBOARD_FILES))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.integration
def test_committed_dashboards_equal_a_fresh_generation(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "dashboards.generate", "--output-dir", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True)
    for path in DASHBOARD_FILES.values():
        fresh = tmp_path / path.relative_to(ROOT)
        assert fresh.read_text() == path.read_text(), f"{path.name} is stale: run python -m dashboards.generate"


@pytest.mark.integration
def test_generator_check_mode_flags_an_edited_file(tmp_path: Path) -> None:
    generate = [sys.executable, "-m", "dashboards.generate", "--output-dir", str(tmp_path)]
    subprocess.run(generate, cwd=ROOT, check=True, capture_output=True)
    assert subprocess.run([*generate, "--check"], cwd=ROOT, check=False, capture_output=True).returncode == 0
    (tmp_path / HOST_DASHBOARD).write_text("{}\n")
    result = subprocess.run([*generate, "--check"], cwd=ROOT, check=False, capture_output=True, text=True)
    assert result.returncode == 1 and str(HOST_DASHBOARD) in result.stderr


def test_schema_is_current_with_no_legacy_keys(name: str) -> None:
    """Grafana migrates older schemas on import and rebuilds graphTooltip from `sharedCrosshair`."""
    from dashboards.generate import LEGACY_DASHBOARD_KEYS, LEGACY_PANEL_KEYS, LEGACY_TARGET_KEYS

    dashboard = _load(name)
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["graphTooltip"] == 1  # shared crosshair
    assert not set(LEGACY_DASHBOARD_KEYS) & set(dashboard)
    text = DASHBOARD_FILES[name].read_text()
    for key in ("fieldOptions", "sharedCrosshair", '"rows"'):
        assert key not in text, key
    for panel in queries.iter_panels(dashboard):
        # `repeat` stays on a row repeated over a variable (the services dashboard's row per group).
        assert panel.get("repeat") is None or panel["type"] == "row", panel["title"]
        assert not (set(LEGACY_PANEL_KEYS) - {"repeat"}) & set(panel), panel["title"]
        for target in panel.get("targets", []):
            assert not set(LEGACY_TARGET_KEYS) & set(target), panel["title"]
        if panel["type"] == "bargauge":
            assert panel["options"]["reduceOptions"]["calcs"] == ["lastNotNull"]


def test_time_series_sample_every_round_and_draw_no_lines_across_gaps(name: str) -> None:
    """Panels of the exporter's series step by the probe interval; panels of the state rules'
    series (written every state_interval) by two of those, so each step holds a sample."""
    from dashboards.mixin_config import CONFIG, duration, seconds

    state_step = duration(2 * seconds(CONFIG.state_interval))
    for panel in _panels(name):
        if panel["type"] not in ("timeseries", "state-timeline"):
            continue
        exprs = " ".join(t["expr"] for t in panel["targets"])
        recorded_only = not re.findall(r"\bpyparallel_\w+", re.sub(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b", "", exprs))
        assert panel["interval"] == (state_step if recorded_only else CONFIG.dashboard_min_interval), panel["title"]
        assert "maxDataPoints" not in panel, panel["title"]
        if panel["type"] == "timeseries":
            assert panel["fieldConfig"]["defaults"]["custom"]["spanNulls"] is False, panel["title"]
        for target in panel["targets"]:
            if "increase(" in target["expr"]:
                continue  # a counter's increase over a fixed window counts every round already
            assert re.search(r"_over_time\([^\[]+\[\$__interval\]\)", target["expr"]), (panel["title"], target["expr"])


def test_every_aggregation_of_probe_series_keeps_workload_and_workers(name: str) -> None:
    """`max by (interpreter, mode)` over workloads lets the sleep control win: a figure per
    interpreter or mode keeps the step labels, or (fleet) filters to the one selected workload.
    (Reference lines such as `max by (workers)` for the ideal speedup are per worker count.)"""
    dashboard = _load(name)
    single_workload = any(v["name"] == "workload" and not v.get("multi")
                          for v in dashboard["templating"]["list"])
    for title, expr in queries.all_panel_queries(dashboard):
        if not any(metric in expr for metric in STEP_METRICS):
            continue
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            labels = {label.strip() for label in group.split(",")}
            if not labels & {"interpreter", "mode"}:
                continue
            filtered = single_workload and 'workload=~"$workload"' in expr
            assert filtered or {"workload", "workers"} <= labels, (title, expr)


@pytest.mark.parametrize("name", ["host", "fleet"])  # the services dashboard has no workloads
def test_the_workload_variable_defaults_to_the_headline_workload(name: str) -> None:
    from dashboards.mixin_config import CONFIG

    workload = next(v for v in _load(name)["templating"]["list"] if v["name"] == "workload")
    assert workload["current"]["value"] in (CONFIG.headline_workload, [CONFIG.headline_workload])


def test_the_four_questions_are_answered_at_the_top() -> None:
    panels = [p for p in _panels("host") if p["gridPos"]["y"] < 10]
    titles = {p["title"].split(" (")[0] for p in panels}
    assert {"Do threads run in parallel?", "Did it change after the upgrade?", "Is the host giving me the cores?",
            "Is the probe healthy?"} <= titles
    upgrade = next(p for p in panels if p["title"].startswith("Did it change"))
    exprs = " ".join(t["expr"] for t in upgrade["targets"])
    assert ":median1h" in exprs and ":reference" in exprs  # the level and its reference on one panel


def test_probe_health_notices_stopped_rounds() -> None:
    """The health stat counts a probe only while its last success is fresh, not just success == 1."""
    healthy = next(p for p in _panels("host") if p["title"] == "Is the probe healthy?")
    expr = healthy["targets"][0]["expr"]
    assert "pyparallel_probe_last_success_timestamp_seconds" in expr and "pyparallel_probe_interval_seconds" in expr


@pytest.mark.integration  # runs the generator or promtool in a child process
def test_dashboards_render_for_another_selector(tmp_path: Path) -> None:
    """The selector's other matchers go into every query; the job comes from the job variable."""
    subprocess.run([sys.executable, "-m", "dashboards.generate", "--output-dir", str(tmp_path),
                    "--selector", 'job="python", env="prod"'], cwd=ROOT, check=True, capture_output=True)
    for path in DASHBOARD_FILES.values():
        dashboard = json.loads((tmp_path / path.relative_to(ROOT)).read_text())
        texts = [e for _, e in queries.all_panel_queries(dashboard) + queries.annotation_queries(dashboard)]
        texts += [q for _, q in queries.variable_queries(dashboard)]
        for text in texts:
            for selector in re.findall(r"\b(?:pyparallel_\w+|[a-z_]+:[a-z_]+:[a-z0-9_]+)\{([^}]*)\}", text):
                assert selector.startswith('env="prod"') and 'job="' not in selector, (path.name, text)


def test_dashboard_uids_are_stable_and_unique() -> None:
    assert {name: _load(name)["uid"] for name in DASHBOARD_FILES} == STABLE_UIDS
    assert len(set(STABLE_UIDS.values())) == len(STABLE_UIDS)


def test_panel_ids_are_unique_and_panels_fit_the_grid(name: str) -> None:
    panels = list(queries.iter_panels(_load(name)))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and None not in ids
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]


def test_every_panel_type_is_a_known_grafana_type(name: str) -> None:
    for panel in queries.iter_panels(_load(name)):
        assert panel["type"] in GRAFANA_PANEL_TYPES, f"{panel['title']}: {panel['type']}"


def test_every_panel_has_a_title_and_at_least_one_target(name: str) -> None:
    for panel in _panels(name):
        assert panel["title"].strip(), panel
        assert [t for t in panel["targets"] if t["expr"].strip()], panel["title"]


def test_every_panel_and_target_uses_the_datasource_variable(name: str) -> None:
    reference = {"type": "prometheus", "uid": "${datasource}"}
    for panel in _panels(name):
        assert panel["datasource"] == reference, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == reference, panel["title"]
    for annotation in _load(name)["annotations"]["list"]:
        assert annotation["datasource"] == reference, annotation["name"]
    datasource = next(v for v in _load(name)["templating"]["list"] if v["name"] == "datasource")
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"


def test_every_variable_used_is_defined(name: str) -> None:
    dashboard = _load(name)
    defined = queries.variable_names(dashboard) | {"__interval", "__rate_interval", "__range"}  # Grafana's own
    texts = [expr for _, expr in queries.all_panel_queries(dashboard) + queries.annotation_queries(dashboard)]
    texts += [query for _, query in queries.variable_queries(dashboard)]
    texts += [p["title"] for p in queries.iter_panels(dashboard)]
    for text in texts:
        assert queries.variables_used(text) <= defined, text


def test_host_dashboard_has_the_variables_and_rows_asked_for() -> None:
    dashboard = _load("host")
    assert [v["name"] for v in dashboard["templating"]["list"]] == [
        "datasource", "job", "host", "instance", "interpreter", "workload"]
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["The four questions", "Overview", "Speedup", "Where the speedup went",
                    "Efficiency and serial fraction", "CPU cores", "Probe health", "Interpreter comparison"]
    exprs = " ".join(expr for _, expr in queries.all_panel_queries(dashboard))
    for metric in ("pyparallel_speedup_ratio", "pyparallel_gil_enabled", "pyparallel_python_info",
                   "pyparallel_core_utilisation_ratio", "pyparallel_cpu_cores_used", "pyparallel_worker_startup_seconds",
                   "pyparallel_probe_failures_total", "pyparallel_probe_last_success_timestamp_seconds",
                   "pyparallel_interference_cores", "pyparallel_cpu_rate_ratio", "pyparallel_speedup_lower_ratio",
                   "pyparallel_speedup_upper_ratio"):
        assert metric in exprs, metric


def test_speedup_panel_draws_the_ideal_as_a_reference_line() -> None:
    panel = next(p for p in _panels("host") if p["title"].startswith("Speedup by mode (ideal"))
    legends = [t["legendFormat"] for t in panel["targets"]]
    assert any(legend.startswith("ideal") for legend in legends)
    assert panel["fieldConfig"]["overrides"][0]["matcher"]["options"].startswith("^(ideal")


def test_failure_panel_counts_with_increase_and_a_zero_fallback() -> None:
    expr = next(e for t, e in queries.all_panel_queries(_load("host")) if t.startswith("Probe failures by reason"))
    assert "increase(pyparallel_probe_failures_total" in expr and "or on() label_replace(vector(0)" in expr


def test_host_dashboard_annotates_python_identity_changes_of_the_stable_series() -> None:
    """Keyed on version, implementation and build (3.13t -> 3.13 with the same version string
    is a change), on the host-level rule that a rollout does not split."""
    from dashboards.recording import identity_since

    dashboard = _load("host")
    (name, expr), = queries.annotation_queries(dashboard)
    assert name == "Python version change" and identity_since() in expr and "instance" not in expr
    (annotation,) = dashboard["annotations"]["list"]
    assert set(annotation["tagKeys"].split(",")) == {"interpreter", "version", "implementation", "free_threaded_build"}


def test_stock_dashboards_work_under_any_job_name() -> None:
    """The job variable lists every job exporting the metrics, and no query pins a job beside it."""
    for name in DASHBOARD_FILES:
        dashboard = _load(name)
        job = next(v for v in dashboard["templating"]["list"] if v["name"] == "job")
        assert "job=" not in job["query"] and "job=~" not in job["query"], job["query"]
        texts = [e for _, e in queries.all_panel_queries(dashboard) + queries.annotation_queries(dashboard)]
        texts += [q for n, q in queries.variable_queries(dashboard) if n != "job"]
        for text in texts:
            assert 'job="' not in text, text


def test_host_panels_select_one_hosts_scrape_targets_not_every_instance() -> None:
    """Without a host label the host variable still lists hosts (the recorded series name them by
    the fallback label); the exporter's own series are then picked by that host's targets. "All"
    must send the listed targets, not a regex matching every instance of the job."""
    dashboard = _load("host")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert ":" in variables["host"]["query"]  # a recorded series, with the fallback applied
    assert variables["instance"]["allValue"] is None and '=~"$host"' in variables["instance"]["query"]
    for title, expr in queries.all_panel_queries(dashboard):
        bare = re.sub(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\{[^}]*\}", "", expr)
        for selector in re.findall(r"\bpyparallel_\w+\{([^}]*)\}", bare):
            assert 'instance=~"$instance"' in selector, (title, expr)


def test_cores_panels_have_a_unit_and_threads_colours_scale_with_workers() -> None:
    panels = {p["title"]: p for p in _panels("host")}
    for title in ("Is the host giving me the cores?", "Interference: other processes' cores during the probe",
                  "Cores used (CPU seconds / wall seconds)"):
        assert panels[title]["fieldConfig"]["defaults"]["unit"] == "suffix: cores", title
    threads = panels["Do threads run in parallel?"]
    assert "pyparallel_efficiency_ratio" in threads["targets"][0]["expr"]
    assert threads["fieldConfig"]["defaults"]["unit"] == "percentunit"


def test_staleness_panel_shows_the_age_of_the_newest_success_in_each_step() -> None:
    """min_over_time made a healthy probe read one whole step (3600 s at a 1 h step) old."""
    expr = next(e for t, e in queries.all_panel_queries(_load("host")) if t == "Time since last successful probe")
    assert "time() - max_over_time(pyparallel_probe_last_success_timestamp_seconds" in expr


def _columns(table: dict[str, Any]) -> set[str]:
    organize = next(t for t in table["transformations"] if t["id"] == "organize")
    return set(organize["options"]["renameByName"].values())


def test_fleet_tables_are_keyed_by_host_with_workers_and_efficiency() -> None:
    tables = {p["title"]: p for p in _panels("fleet") if p["type"] == "table"}
    assert {"Host", "Interpreter", "Python", "Workers", "GIL at run time", "threads speedup", "processes speedup",
            "threads efficiency", "processes efficiency"} <= _columns(tables["Interpreters"])
    worst = next(t for title, t in tables.items() if "furthest below their reference" in title)
    assert {"Host", "Interpreter", "Python", "Mode", "Workers", "Ratio to reference", "Speedup now", "Reference",
            "Efficiency"} <= _columns(worst)
    assert all("bottomk(" in t["expr"] for t in worst["targets"])
    assert "Firing alerts" in tables and "ALERTS{" in tables["Firing alerts"]["targets"][0]["expr"]
    for table in tables.values():
        assert all(t["format"] == "table" and t["instant"] for t in table["targets"])
        assert "instance" not in " ".join(_columns(table)).lower()


def test_fleet_dashboard_reads_only_recorded_series_and_alerts() -> None:
    """It answers from a central Prometheus that receives only the recorded series."""
    dashboard = _load("fleet")
    texts = [e for _, e in queries.all_panel_queries(dashboard)] + [q for _, q in queries.variable_queries(dashboard)]
    for text in texts:
        assert not re.findall(r"\bpyparallel_\w+", re.sub(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b", "", text)), text


def test_fleet_time_series_draw_a_few_lines_at_any_fleet_size() -> None:
    """Fleet-level recorded series (quantiles, counts per workload and mode), never one line
    per host (1000 lines at 500 hosts), nor a per-probe computation at every step of 7 days."""
    from dashboards.mixin_config import CONFIG

    for panel in _panels("fleet"):
        if panel["type"] == "timeseries":
            for target in panel["targets"]:
                (record,) = re.findall(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b", target["expr"])
                assert record.startswith("job_workload_mode:"), (panel["title"], target["expr"])
                assert CONFIG.host_label not in record.split(":")[0], record


@pytest.mark.integration
def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    """promtool parses each query (variables filled in) as the expr of a recording rule."""
    promtool = require_binary("promtool")
    rules = []
    for name in DASHBOARD_FILES:
        dashboard = _load(name)
        for i, (title, expr) in enumerate(queries.all_panel_queries(dashboard) + queries.annotation_queries(dashboard)):
            rules.append({"record": f"dashboard:{name}:query{i}", "expr": queries.substitute(expr, SAMPLE_VALUES),
                          "labels": {"panel": title}})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_queries_read_only_exported_metrics_and_recording_rules(name: str) -> None:
    recorded = {rule["record"] for path in (ROOT / "deploy/prometheus/rules").glob("*.yml")
                for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"] if "record" in rule}
    dashboard = _load(name)
    texts = [e for _, e in queries.all_panel_queries(dashboard) + queries.annotation_queries(dashboard)]
    texts += [q for _, q in queries.variable_queries(dashboard)]
    for text in texts:
        for rule in re.findall(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b", text):
            assert rule in recorded, text
        bare = re.sub(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b", "", text)
        assert set(re.findall(r"\bpyparallel_\w+", bare)) <= queries.EXPORTED_METRICS, text


def test_may_be_empty_names_existing_panels_with_a_reason() -> None:
    titles = {p["title"] for name in DASHBOARD_FILES for p in _panels(name)}
    titles |= {a for name in DASHBOARD_FILES for a, _ in queries.annotation_queries(_load(name))}
    for title, reason in queries.MAY_BE_EMPTY.items():
        assert title in titles and reason.strip(), title


def test_all_panel_queries_reads_nested_rows_and_skips_hidden_targets() -> None:
    dashboard = {"panels": [
        {"type": "row", "title": "open", "panels": [], "targets": []},
        {"type": "stat", "title": "a", "targets": [{"expr": "up"}, {"expr": "hidden", "hide": True}]},
        {"type": "row", "title": "collapsed", "panels": [
            {"type": "timeseries", "title": "b", "targets": [{"expr": 'up{job=~"$job"}'}, {"expr": ""}]},
        ]},
    ]}
    assert queries.all_panel_queries(dashboard) == [("a", "up"), ("b", 'up{job=~"$job"}')]


def test_substitute_fills_every_variable_form_and_rejects_unknown_ones() -> None:
    expr = 'x{a=~"$job", b=~"${instance}", c=~"${interpreter:regex}", d="[[workload]]"}'
    assert queries.substitute(expr, {"job": "j", "instance": "i", "interpreter": ".+", "workload": "w"}) == (
        'x{a=~"j", b=~"i", c=~".+", d="w"}')
    with pytest.raises(KeyError, match=r"\$job"):
        queries.substitute('up{job="$job"}', {})


def test_generator_without_grafanalib_is_one_line_naming_the_install_command(monkeypatch, capsys) -> None:
    import runpy

    monkeypatch.setitem(sys.modules, "grafanalib", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "grafanalib._gen", None)
    monkeypatch.delitem(sys.modules, "dashboards.generate", raising=False)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("dashboards.generate", run_name="__main__")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "./scripts/install dashboards" in err


def test_generator_help_prints_every_option_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse %-formats help texts: the runbook template's %s once crashed `--help`."""
    from dashboards.generate import run

    with pytest.raises(SystemExit) as exit_:
        run(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--runbook-url-template" in out and "RUNBOOK.md#runbook-%s" in out
