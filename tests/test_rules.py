"""Prometheus rules: promtool accepts them, unit tests cover every rule, alerts are documented."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import require_binary
from dashboards import promtool_tests, services
from dashboards.generate import ALERTING_RULES, EXPORTER_ALERTING_RULES, RECORDING_RULES, render_all
from dashboards.mixin_config import CONFIG, MixinConfig, seconds
from dashboards.queries import EXPORTED_METRICS

ROOT = Path(__file__).resolve().parent.parent

RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
TEST_FILES = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))
RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"
RUNBOOK_URL = re.compile(r"^https?://\S+/deploy/RUNBOOK\.md#(runbook-[a-z0-9-]+)$")
LEVEL_METRIC_OPERATION = re.compile(r"^[a-z]+(_[a-z]+)*:([a-z_]+):[a-z0-9_]+$")
RECORDED = re.compile(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b")
# Alerts that judge probe rounds: their `for` spans alert_rounds whole rounds and the margin.
ROUND_ALERTS = {"PyParallelFreeThreadedThreadsFarBelowProcesses", "PyParallelFreeThreadedThreadsNotParallel",
                "PyParallelGILEnabledOnFreeThreadedBuild", "PyParallelModuleReenablesGIL",
                "PyParallelRoundLongerThanInterval", "PyParallelSpeedupRegressed",
                "PyParallelSpeedupDroppedAfterPythonUpgrade", "PyParallelRegressionDetectionBlind"}


def _groups(path: Path) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())["groups"]


def _rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in _groups(path) for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _recordings() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "record" in rule]


def _unit_tests() -> list[dict[str, Any]]:
    return [test for path in TEST_FILES for test in yaml.safe_load(path.read_text())["tests"]]


def _github_anchor(heading: str) -> str:
    """GitHub's heading slug: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_rule_files_exist_for_recording_rules_and_both_kinds_of_alerts() -> None:
    assert [p.name for p in RULE_FILES] == sorted(p.name for p in (ALERTING_RULES, EXPORTER_ALERTING_RULES,
                                                                    RECORDING_RULES))
    assert _alerts() and _recordings()


@pytest.mark.integration
def test_promtool_check_rules_accepts_every_rule_file() -> None:
    promtool = require_binary("promtool")
    result = subprocess.run([promtool, "check", "rules", *map(str, RULE_FILES)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_promtool_unit_tests_pass() -> None:
    """One promtool per file, as many at a time as there are cores (the scenarios span days)."""
    promtool = require_binary("promtool")

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([promtool, "test", "rules", str(path)], check=False, capture_output=True, text=True,
                              cwd=ROOT)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, TEST_FILES))
    failed = [r.stdout + r.stderr for r in results if r.returncode != 0]
    assert failed == []


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
        texts = [rule["expr"], *rule.get("annotations", {}).values()]
        for name in (n for text in texts for n in RECORDED.findall(text)):
            assert name in recorded, f"{rule.get('alert') or rule['record']} reads unknown rule {name}"
        bare = RECORDED.sub("", rule["expr"])
        for name in re.findall(r"\bpyparallel_\w+", bare):
            assert name in EXPORTED_METRICS, f"{rule.get('alert') or rule['record']} reads unknown metric {name}"


def test_central_alerts_read_only_recorded_series_each_over_the_fresh_window() -> None:
    """pyparallel-alerts.yml answers from a Prometheus that only receives the recorded series,
    and reads each (written every state_interval) over two evaluations and a margin, so a late
    evaluation or a remote-write lag never makes one vanish between evaluations."""
    for group in _groups(ROOT / ALERTING_RULES):
        # A rule recorded earlier in the same group is read at this very evaluation: no window.
        recorded_before: set[str] = set()
        for rule in group["rules"]:
            expr, name = rule["expr"], rule.get("alert") or rule.get("record")
            assert not re.findall(r"\bpyparallel_\w+", RECORDED.sub("", expr)), name
            reads = [read for read in RECORDED.findall(expr) if read not in recorded_before]
            recorded_before.add(rule.get("record", ""))
            if not reads:
                assert RECORDED.findall(expr), name
                continue
            windows = re.findall(rf"\w+_over_time\((?:[0-9.]+, )?({RECORDED.pattern})\{{[^}}]*\}}\[(\w+)\]\)", expr)
            assert reads and sorted(reads) == sorted(read for read, _ in windows), name
            assert all(seconds(window) >= seconds(CONFIG.fresh_window) for _, window in windows), name


def test_no_rule_has_a_subquery_or_a_window_longer_than_the_state_carry() -> None:
    """Cheap at fleet scale: no `[7d:5m]` subquery (series x 2016 samples held at once) and no
    week-long window; the state rules remember by reading their own last value instead."""
    longest = max(seconds(CONFIG.state_carry), seconds(CONFIG.reference_window), seconds(CONFIG.failure_ratio_window))
    for rule in _rules():
        assert not re.search(r"\[\w+:\w*\]", rule["expr"]), rule.get("alert") or rule["record"]
        for window in re.findall(r"\[(\w+)\]", rule["expr"]):
            assert seconds(window) <= longest, (rule.get("alert") or rule["record"], window)


def test_alerts_that_judge_rounds_hold_for_two_rounds_and_a_margin() -> None:
    """One odd round never fires (nor clears) them: `for` spans alert_rounds probe intervals
    and the margin (the old ThreadsNotParallel's `for: 5m` fired and flapped on one round)."""
    for alert in _alerts():
        if alert["alert"] in ROUND_ALERTS:
            assert seconds(alert["for"]) >= CONFIG.alert_rounds * seconds(CONFIG.probe_interval) + 60, alert["alert"]


def test_every_alert_has_for_severity_summary_description_runbook_and_dashboard() -> None:
    for alert in _alerts():
        name = alert["alert"]
        assert re.fullmatch(r"\d+[smhd]", alert.get("for", "")), name
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}, name
        annotations = alert["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        anchor = RUNBOOK_URL.match(annotations["runbook_url"])
        assert anchor and anchor.group(1) == f"runbook-{name.lower()}", name
        assert annotations["dashboard_url"].startswith(CONFIG.grafana_url + "/d/" + CONFIG.host_dashboard_uid), name


def test_every_firing_case_names_the_host_the_alert_is_about() -> None:
    """Every alert carries the host label (the fallback label's value where the scrape config
    set none), so a notification says which machine."""
    for test in _unit_tests():
        for check in test.get("alert_rule_test", []):
            for expected in check["exp_alerts"]:
                assert expected["exp_labels"].get(CONFIG.host_label), (check["alertname"], test["name"])


def test_every_runbook_anchor_exists_in_the_runbook() -> None:
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    anchors = {_github_anchor(heading) for heading in headings}
    for alert in _alerts():
        anchor = alert["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"{alert['alert']}: no heading for #{anchor} in {RUNBOOK.name}"


def test_the_required_alerts_exist() -> None:
    names = {alert["alert"] for alert in _alerts()}
    assert {
        "PyParallelRegressionDetectionBlind",
        "PyParallelExporterAbsent",
        "PyParallelHostLabelMissing",
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


def test_the_state_rules_run_in_one_group_at_the_configured_interval_reading_earlier_values() -> None:
    state_groups = _groups(ROOT / RECORDING_RULES)  # the probes' and the watched services'
    assert all(g["interval"] == CONFIG.state_interval for g in _groups(ROOT / ALERTING_RULES) if "interval" in g)
    assert all(state["interval"] == CONFIG.state_interval for state in state_groups)
    # A state rule reads its own (and later rules') values from before this evaluation.
    for rule in (rule for state in state_groups for rule in state["rules"]):
        for own in re.findall(rf"last_over_time\({re.escape(rule['record'])}\{{[^}}]*\}}\[(\w+)\]( offset 1s)?", rule["expr"]):
            assert own == (CONFIG.state_carry, " offset 1s"), rule["record"]


def test_recorded_series_are_per_host_never_per_scrape_address() -> None:
    """A rollout (new instance on the same host) keeps every probe's history."""
    for rule in _recordings():
        if rule["record"].startswith(f"{CONFIG.host_label}_interpreter"):
            for group in re.findall(r"\bby \(([^)]*)\)", rule["expr"]):
                assert "instance" not in group.replace(" ", "").split(","), (rule["record"], group)


def test_noisy_inputs_are_among_the_cases_of_every_alert() -> None:
    """At least one case per alert feeds series that vary by ±25 % per round (pattern or draw)."""
    noisy: set[str] = set()
    for test in _unit_tests():
        values = [{token.split("x")[0] for token in s["values"].split()} - {"_", "stale"} for s in test["input_series"]]
        varies = any(len(distinct) > 3 for distinct in values)
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
    # The tests that exercise every rule in a short time span; the multi-day scenarios run
    # with the shipped selector above.
    tests = [prometheus / "tests" / name for name in (
        "probes_test.yml", "speedup_test.yml", "gil_test.yml", "recording_test.yml", "host_identity_test.yml")]
    assert all('env="prod"' in path.read_text() for path in tests)
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
