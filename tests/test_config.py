"""Config validation: defaults, a full file, and one exact message per invalid file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from exporter import config
from exporter.errors import ConfigError

TESTDATA = Path(__file__).parent / "testdata"

INVALID = {
    "invalid-repeats-zero.yml": "probe.repeats: must be an integer >= 1, got 0",
    "invalid-unknown-workload.yml": "probe.workloads: unknown workload 'nope' (known: json, objects, pure_python, sha256, sleep, zlib, or package.module:function)",
    "invalid-unknown-mode.yml": "probe.modes: unknown mode 'greenlets' (known: sequential, threads, processes, asyncio, subinterpreters)",
    "invalid-unknown-key.yml": "intervall: unknown field (known: duty_cycle, import_check, interpreters, interval, jitter, probe)",
    "invalid-unknown-probe-key.yml": "probe.unit_second: unknown field (known: max_repeats, modes, nice, per_core_series, precision, repeats, start_method, step_budget, timeout, unit_seconds, workers, workloads)",
    "invalid-interval.yml": "interval: must be a duration like 30s or 5m, got 'soon'",
    "invalid-workers.yml": "probe.workers: must be an integer >= 1, got -1",
    "invalid-start-method.yml": "probe.start_method: must be one of fork, forkserver, spawn, got 'thread'",
    "invalid-yaml.yml": "line 2: invalid YAML: expected ',' or ']', but got '<stream end>'",
    "invalid-top-level.yml": "(top level): must be a mapping, got list",
    "invalid-interpreter-no-path.yml": "interpreters[0].path: is required",
    "invalid-interpreter-duplicate.yml": "interpreters: names must be unique, got ['a', 'a']",
    "invalid-duty-cycle.yml": "duty_cycle: must be a number in (0, 1], got 1.5",
    "invalid-jitter.yml": "jitter: must be shorter than interval",
    "invalid-import-module.yml": "import_check.modules: must be a dotted module name, got 'not a module'",
    "invalid-timeout.yml": "probe.timeout: must be a duration like 30s or 5m, got '-5s'",
    "invalid-precision.yml": "probe.precision: must be a number > 0, got 0",
    "invalid-max-repeats.yml": "probe.max_repeats: must be >= probe.repeats (5), got 3",
    "invalid-step-budget.yml": "probe.step_budget: must be shorter than probe.timeout (10s), got 10s",
    "invalid-nice.yml": "probe.nice: must be an integer 0..19 or idle, got -5",
}


def test_every_invalid_file_in_testdata_has_an_expected_message():
    assert {p.name for p in TESTDATA.glob("invalid-*.yml")} == set(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_config_file_is_one_line_naming_file_field_and_problem(name):
    path = TESTDATA / name
    with pytest.raises(ConfigError) as error:
        config.load_config(str(path))
    assert str(error.value) == f"error parsing config file: {path}: {INVALID[name]}"
    assert "\n" not in str(error.value)


def test_missing_config_file_names_the_file():
    with pytest.raises(ConfigError, match=r"^error parsing config file: /no/such\.yml: No such file"):
        config.load_config("/no/such.yml")


def test_no_file_means_defaults():
    cfg = config.load_config(None)
    assert cfg == config.Config()
    assert cfg.interval_seconds == 300 and cfg.duty_cycle == 0.05
    assert cfg.probe.workers == ()  # the usable cores, found at run time


def test_default_interpreter_is_the_running_python():
    (only,) = config.Config().interpreter_list()
    assert only.name == "default" and only.path == sys.executable  # a role, no version: see RUNBOOK


def test_full_file_sets_every_field():
    cfg = config.load_config(str(TESTDATA / "valid-full.yml"))
    assert cfg.interval_seconds == 90 and cfg.jitter_seconds == 5 and cfg.duty_cycle == 0.1
    assert cfg.interpreters[1] == config.Interpreter(
        "cpython-3.13t-gil", "/opt/python3.13t/bin/python3.13t", {"PYTHON_GIL": "1"})
    assert cfg.probe == config.ProbeConfig(
        workloads=("pure_python", "json:dumps"),
        modes=("sequential", "threads", "processes", "asyncio", "subinterpreters"),
        workers=(1, 2, 4), unit_seconds=0.3, repeats=5, timeout_seconds=30,
        start_method="spawn", per_core_series=False, precision=0.1, max_repeats=8,
        step_budget_seconds=6, nice="idle")
    assert cfg.import_check_modules == ("json", "xml.etree.ElementTree")


def test_the_shipped_example_config_is_valid():
    example = Path(__file__).parent.parent / "deploy" / "config.example.yml"
    if not example.exists():
        pytest.skip("deploy/config.example.yml not written yet")
    config.load_config(str(example))


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("5m", 300), ("1h30m", 5400),
                                           ("250ms", 0.25), (42, 42), (1.5, 1.5)])
def test_durations_in_prometheus_style(text, seconds):
    assert config.parse_duration(text) == seconds


def test_nice_accepts_0_to_19_and_idle_only():
    assert config.nice_value(0) == 0 and config.nice_value(19) == 19 and config.nice_value("idle") == "idle"
    for bad in (20, -1, True, "10", 1.5):
        with pytest.raises(ValueError):
            config.nice_value(bad)


def test_precision_fields_reach_every_probe_spec():
    cfg = config.config_from_mapping({"probe": {"precision": 0.02, "max_repeats": 6, "step_budget": "5s", "nice": 10}})
    spec = cfg.probe_specs(2)[0]
    assert (spec.precision, spec.max_repeats, spec.step_budget_seconds, spec.nice) == (0.02, 6, 5.0, 10)


def test_default_max_repeats_below_a_configured_repeats_is_not_an_error():
    # Only an explicit max_repeats below repeats contradicts; the runner uses max(repeats, max_repeats).
    assert config.config_from_mapping({"probe": {"repeats": 12}}).probe.repeats == 12


def test_a_short_timeout_alone_keeps_the_default_step_budget_valid():
    assert config.config_from_mapping({"probe": {"timeout": "2s"}}).probe.timeout_seconds == 2
