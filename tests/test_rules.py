"""Prometheus rules: promtool accepts them, unit tests cover every rule, alerts are documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import require_binary
from dashboards import promtool_tests, services
from dashboards.generate import render_all
from dashboards.mixin_config import CONFIG, MixinConfig
from dashboards.queries import EXPORTED_METRICS

ROOT = Path(__file__).resolve().parent.parent

RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
TEST_FILES = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))
RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"
RUNBOOK_URL = re.compile(r"^deploy/RUNBOOK\.md#(runbook-[a-z0-9-]+)$")
LEVEL_METRIC_OPERATION = re.compile(r"^[a-z]+(_[a-z]+)*:([a-z_]+):[a-z0-9_]+$")


def _rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _recordings() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "record" in rule]


def _unit_tests() -> list[dict[str, Any]]:
    return [test for path in TEST_FILES for test in yaml.safe_load(path.read_text())["tests"]]


def _github_anchor(heading: str) -> str:
    """GitHub's heading slug: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_rule_files_exist_for_recording_rules_and_alerts() -> None:
    assert [p.name for p in RULE_FILES] == ["pyparallel-alerts.yml", "pyparallel-recording.yml"]
    assert _alerts() and _recordings()


@pytest.mark.integration
def test_promtool_check_rules_accepts_every_rule_file() -> None:
    promtool = require_binary("promtool")
    result = subprocess.run([promtool, "check", "rules", *map(str, RULE_FILES)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_promtool_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", *map(str, TEST_FILES)], check=False, capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_committed_rule_files_equal_a_fresh_generation(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "dashboards.generate", "--output-dir", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True)
    for path in RULE_FILES + TEST_FILES:
        fresh = tmp_path / path.relative_to(ROOT)
        assert fresh.read_text() == path.read_text(), f"{path.name} is stale: run python -m dashboards.generate"


def test_recording_rule_names_follow_level_metric_operation() -> None:
    for rule in _recordings():
        match = LEVEL_METRIC_OPERATION.match(rule["record"])
        assert match, rule["record"]
        assert match.group(2) in EXPORTED_METRICS, rule["record"]


def test_rules_read_only_exported_metrics_and_recording_rules() -> None:
    recorded = {rule["record"] for rule in _recordings()}
    for rule in _rules():
        expr = rule["expr"]
        for name in re.findall(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b", expr):
            assert name in recorded, f"{rule.get('alert') or rule['record']} reads unknown rule {name}"
        bare = re.sub(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b", "", expr)
        for name in re.findall(r"\bpyparallel_\w+", bare):
            assert name in EXPORTED_METRICS, f"{rule.get('alert') or rule['record']} reads unknown metric {name}"


def test_every_alert_has_for_severity_summary_description_and_runbook() -> None:
    for alert in _alerts():
        name = alert["alert"]
        assert re.fullmatch(r"\d+[smhd]", alert.get("for", "")), name
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}, name
        annotations = alert["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        anchor = RUNBOOK_URL.match(annotations["runbook_url"])
        assert anchor and anchor.group(1) == f"runbook-{name.lower()}", name


def test_every_runbook_anchor_exists_in_the_runbook() -> None:
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    anchors = {_github_anchor(heading) for heading in headings}
    for alert in _alerts():
        anchor = alert["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"{alert['alert']}: no heading for #{anchor} in {RUNBOOK.name}"


def test_the_required_alerts_exist() -> None:
    names = {alert["alert"] for alert in _alerts()}
    assert {
        "PyParallelProbeFailing",
        "PyParallelProbeResultsStale",
        "PyParallelProcessesSpeedupFarBelowUsableCores",
        "PyParallelSpeedupRegressed",
        "PyParallelSpeedupDroppedAfterPythonUpgrade",
        "PyParallelGILEnabledOnFreeThreadedBuild",
        "PyParallelModuleReenablesGIL",
        "PyParallelConfigReloadFailed",
        "PyParallelProbeFailureRatioHigh",
        "PyParallelRoundLongerThanInterval",
        "PyParallelFreeThreadedThreadsFarBelowProcesses",
        "PyParallelFreeThreadedThreadsNotParallel",
        "PyParallelHostTooBusyToMeasure",
    } <= names


def test_staleness_alert_is_relative_to_the_probe_interval() -> None:
    stale = next(a for a in _alerts() if a["alert"] == "PyParallelProbeResultsStale")
    assert "pyparallel_probe_interval_seconds" in stale["expr"]
    assert "pyparallel_probe_last_success_timestamp_seconds" in stale["expr"]


@pytest.mark.parametrize("alert", sorted(a["alert"] for a in _alerts()))
def test_every_alert_has_a_firing_and_a_silent_unit_test(alert: str) -> None:
    cases = [case for test in _unit_tests() for case in test.get("alert_rule_test", []) if case["alertname"] == alert]
    assert any(case.get("exp_alerts") for case in cases), f"no promtool case where {alert} fires"
    assert any(not case.get("exp_alerts") for case in cases), f"no promtool case where {alert} stays silent"


@pytest.mark.parametrize("record", sorted(r["record"] for r in _recordings()))
def test_every_recording_rule_has_a_unit_test(record: str) -> None:
    exprs = [case["expr"] for test in _unit_tests() for case in test.get("promql_expr_test", [])]
    assert any(record in expr for expr in exprs), f"no promql_expr_test reads {record}"


def test_every_promtool_test_file_is_generated_from_the_mixin_config() -> None:
    assert {p.name for p in TEST_FILES} == set(promtool_tests.promtool_test_files()) | set(services.promtool_test_files())
    for path in TEST_FILES:
        assert path.read_text().startswith("# Generated by"), path.name


def test_the_baseline_rule_runs_in_its_own_five_minute_group() -> None:
    groups = {g["name"]: g for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]}
    baseline = groups["pyparallel.baseline"]
    assert baseline["interval"] == "5m"
    assert any("quantile_over_time(0.5" in r["expr"] and "offset" in r["expr"] for r in baseline["rules"])
    assert all("offset" not in r["expr"] for r in groups["pyparallel.rules"]["rules"])


def test_speedup_rules_aggregate_by_host_and_role_not_by_scrape_address() -> None:
    for rule in _recordings():
        if "pyparallel_speedup_ratio" in rule["record"]:
            assert rule["record"].startswith(f"{CONFIG.host_label}_interpreter_"), rule["record"]
    by_host = next(r for r in _recordings() if r["record"].endswith(":pyparallel_speedup_ratio:avg"))
    assert f"avg by ({CONFIG.probe_by})" in by_host["expr"] and "instance" not in by_host["expr"]


def test_noisy_inputs_are_among_the_cases_of_every_alert() -> None:
    """At least one case per alert feeds series that vary by ±25 % per round (pattern or draw)."""
    noisy: set[str] = set()
    for test in _unit_tests():
        values = [s["values"].split() for s in test["input_series"]]
        varies = any(len({v for v in series if v not in {"_", "stale"}}) > 3 for series in values)
        if varies:
            noisy |= {case["alertname"] for case in test.get("alert_rule_test", [])}
    speedup_alerts = {a["alert"] for a in _alerts() if "speedup" in a["expr"] or "cores" in a["expr"]}
    assert speedup_alerts and speedup_alerts <= noisy, speedup_alerts - noisy


@pytest.mark.integration  # runs the generator or promtool in a child process
def test_rules_and_their_tests_render_for_another_selector_and_pass_promtool(tmp_path: Path) -> None:
    """A user's own job name: every rule selects it, and the generated tests still pass."""
    promtool = require_binary("promtool")
    result = subprocess.run(
        [sys.executable, "-m", "dashboards.generate", "--output-dir", str(tmp_path), "--selector",
         'job="python", env="prod"', "--runbook-url-template", "https://wiki.example.org/pyparallel#%s"],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    prometheus = tmp_path / "deploy" / "prometheus"
    rules = [rule for path in sorted((prometheus / "rules").glob("*.yml"))
             for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]
    for rule in rules:
        for selector in re.findall(r"\b(?:pyparallel_\w+|[a-z_]+:[a-z_]+:[a-z0-9_]+|up)\{([^}]*)\}", rule["expr"]):
            assert 'job="python", env="prod"' in selector, (rule.get("alert") or rule["record"], selector)
        if "alert" in rule:
            assert rule["annotations"]["runbook_url"] == f"https://wiki.example.org/pyparallel#{rule['alert'].lower()}"
    tests = sorted((prometheus / "tests").glob("*.yml"))
    assert 'env="prod"' in tests[0].read_text()
    result = subprocess.run([promtool, "test", "rules", *map(str, tests)], capture_output=True, text=True,
                            cwd=prometheus)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration  # runs the generator or promtool in a child process
@pytest.mark.parametrize("bad", ['job=python', 'job="a" env="b"', "", '{job="a"}'])
def test_generator_rejects_a_malformed_selector_with_one_line(bad: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "dashboards.generate", "--output-dir", str(tmp_path),
                             "--selector", bad], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "selector" in result.stderr


def test_a_regex_selector_renders_rules_but_not_promtool_tests() -> None:
    config = MixinConfig(exporter_selector='job=~"py.*"')
    with pytest.raises(ValueError, match="need `=` matchers"):
        render_all(config)
