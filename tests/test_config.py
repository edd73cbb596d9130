"""Config validation: defaults, a full file, and one exact message per invalid file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from exporter.config import loader, settings, validators
from exporter.errors import ConfigError

TESTDATA = Path(__file__).parent / "testdata"

INVALID = {
    "invalid-repeats-zero.yml": "probe.repeats: must be an integer >= 1, got 0",
    "invalid-unknown-workload.yml": "probe.workloads: unknown workload 'nope' (known: json, objects, pure_python, sha256, sleep, zlib, or package.module:function)",
    "invalid-unknown-mode.yml": "probe.modes: unknown mode 'greenlets' (known: sequential, threads, processes, asyncio, subinterpreters)",
    "invalid-unknown-key.yml": "intervall: unknown field (known: duty_cycle, import_check, interpreters, interval, jitter, probe, services)",
    "invalid-unknown-probe-key.yml": "probe.unit_second: unknown field (known: deadline, max_repeats, memory_limit, modes, nice, per_core_series, precision, repeats, start_method, step_budget, timeout, unit_seconds, wait_quiet, workers, workload_path, workloads)",
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
    "invalid-precision.yml": "probe.precision: must be a number in (0, 1], got 0",
    "invalid-max-repeats.yml": "probe.max_repeats: must be >= probe.repeats (5), got 3",
    "invalid-step-budget.yml": "probe.step_budget: must be shorter than probe.timeout (10s), got 10s",
    "invalid-nice.yml": "probe.nice: must be an integer 0..19 or idle, got -5",
    # issue 10's reproductions: each crashed serve, hung it, or was accepted silently
    "invalid-not-utf8.yml": "not UTF-8 text: invalid start byte at byte 45",
    "invalid-deep-nesting.yml": "line 2: invalid YAML: nested more than 32 levels deep",
    "invalid-alias-bomb.yml": "probe.modes: unknown mode ['x', 'x', 'x', 'x', 'x', 'x', ...] (known: sequential, threads, processes, asyncio, subinterpreters)",
    "invalid-bad-timestamp.yml": "invalid YAML: month must be in 1..12",
    "invalid-interval-inf.yml": "interval: must be a finite duration, got inf",
    "invalid-interval-nan.yml": "interval: must be a finite duration, got nan",
    "invalid-interval-huge.yml": "interval: must be between 1s and 1w, got 1e+30",
    "invalid-timeout-inf.yml": "probe.timeout: must be a finite duration, got inf",
    "invalid-duplicate-key.yml": "line 2: invalid YAML: duplicate key 'interval'",
    "invalid-duplicate-probe-key.yml": "line 3: invalid YAML: duplicate key 'workloads'",
    "invalid-duration-order.yml": "interval: must be a duration like 30s or 5m, got '5s5m'",
    "invalid-duration-fraction.yml": "interval: must be a duration like 30s or 5m, got '1.5m'",
    "invalid-duty-cycle-nan.yml": "duty_cycle: must be a number in (0, 1], got nan",
    "invalid-workers-huge.yml": "probe.workers: must be at most 256, got 100000",
    "invalid-repeats-huge.yml": "probe.repeats: must be at most 1000, got 1000000000",
    "invalid-unit-seconds-huge.yml": "probe.unit_seconds: must be at most 60, got 1000000000.0",
    "invalid-workload-path.yml": "probe.workload_path: not a directory: /no/such/dir",
    "invalid-interpreter-env-name.yml": "interpreters[0].env: variable names are letters, digits and _, got 'A=B'",
    # the services section (issue 18)
    "invalid-services-regex.yml": "services.groups[0].cmdline: invalid regular expression '(unclosed': missing ), unterminated subpattern at position 0",
    "invalid-services-no-name.yml": "services.groups[0].name: is required",
    "invalid-services-no-matcher.yml": "services.groups[0]: needs at least one of comm, exe, cmdline, cgroup, systemd_unit",
    "invalid-services-placeholder.yml": "services.groups[0].name: unknown placeholder {worker} (known: comm, exe_base, unit)",
    "invalid-services-unknown-key.yml": "services.groups[0].pid: unknown field (known: cgroup, cmdline, comm, exe, name, systemd_unit)",
    "invalid-services-interval.yml": "services.interval: must be a duration like 30s or 5m, got '0.5s'",
    "invalid-services-busy-share.yml": "services.busy_thread_share: must be a number in (0, 1], got 2",
    "invalid-services-groups.yml": "services.groups: must be a non-empty list, got 'web'",
    "invalid-services-serial-cores.yml": "services.serial_cores: must be a number > 0, got -1",
    # issue 17's reproductions: each passed --config.check
    "invalid-duration-arabic-digits.yml": "interval: must be a duration like 30s or 5m, got '\u0665m'",
    "invalid-interval-hex.yml": "interval: must be a duration like 30s or 5m, got '0x10'",
    "invalid-repeats-underscore.yml": "probe.repeats: must be an integer >= 1, got '1_000'",
    "invalid-interpreter-env-integer.yml": 'interpreters[0].env.PYTHON_GIL: must be a string (quote it: "1"), got 1',
    "invalid-workload-module.yml": "probe.workloads: user workloads are written package.module:function, got 'not a module:run'",
    "invalid-memory-limit-small.yml": "probe.memory_limit: must be at least 64MiB, got '32MiB'",
    "invalid-memory-limit-unit.yml": "probe.memory_limit: must be a size like 512MiB or 2GiB, got '512 MB'",
    # issue 27: each passed --config.check or crashed later
    "invalid-lone-surrogate.yml": "interpreters[0].env.PYTHONWARNINGS: not valid Unicode: a lone surrogate U+DC80 "
                                  "(a \\ud800-\\udfff escape must be half of a pair)",
    "invalid-yaml11-boolean.yml": "probe.per_core_series: must be true, false or auto, got 'on' (the file is YAML 1.2: "
                                  "write true or false; yes, no, on, off, y and n are strings)",
}


def test_every_invalid_file_in_testdata_has_an_expected_message():
    assert {p.name for p in TESTDATA.glob("invalid-*.yml")} == set(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_config_file_is_one_line_naming_file_field_and_problem(name):
    path = TESTDATA / name
    with pytest.raises(ConfigError) as error:
        loader.load_config(str(path))
    assert str(error.value) == f"error parsing config file: {path}: {INVALID[name]}"
    assert "\n" not in str(error.value)


def test_missing_config_file_names_the_file():
    with pytest.raises(ConfigError, match=r"^error parsing config file: /no/such\.yml: No such file"):
        loader.load_config("/no/such.yml")


def test_no_file_means_defaults():
    cfg = loader.load_config(None)
    assert cfg == settings.Config()
    assert cfg.interval_seconds == 300 and cfg.duty_cycle == 0.05
    assert cfg.probe.workers == (2,)  # two free cores answer on a busy or a large host alike


def test_usable_workers_are_the_usable_cores_found_at_run_time():
    cfg = loader.config_from_mapping({"probe": {"workers": [2, "usable"]}})
    assert [spec.workers for spec in cfg.probe_specs(8)] == [(2, 8), (2, 8)]
    assert cfg.probe_specs(2)[0].workers == (2,)  # one step where both are the same
    with pytest.raises(loader.Located, match=r"probe.workers: must be an integer >= 1, got 'all'"):
        loader.config_from_mapping({"probe": {"workers": ["all"]}})


def test_two_workers_need_two_free_cores_on_a_large_host_a_tenth_busy_where_all_would_need_all():
    """On 64 usable cores with 7 busy, two workers can show their parallelism; 64 cannot."""
    from exporter.stats.measurement import FreeCores

    assert FreeCores(64.0, 7.0, 0.0, needed=2.0, logical=64.0).enough
    assert not FreeCores(64.0, 7.0, 0.0, needed=64.0, logical=64.0).enough


def test_default_interpreter_is_the_running_python():
    (only,) = settings.Config().interpreter_list()
    assert only.name == "default" and only.path == sys.executable  # a role, no version: see RUNBOOK


def test_full_file_sets_every_field():
    cfg = loader.load_config(str(TESTDATA / "valid-full.yml"))
    assert cfg.interval_seconds == 90 and cfg.jitter_seconds == 5 and cfg.duty_cycle == 0.1
    assert cfg.interpreters[1] == settings.Interpreter(
        "cpython-3.13t-gil", "/opt/python3.13t/bin/python3.13t", {"PYTHON_GIL": "1"})
    assert cfg.probe == settings.ProbeConfig(
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
    loader.load_config(str(example))


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("5m", 300), ("1h30m", 5400),
                                           ("250ms", 0.25), (42, 42), (1.5, 1.5), ("1w", 604800),
                                           ("1d2h", 93600), ("1y", 31536000), ("1m500ms", 60.5)])
def test_durations_in_prometheus_style(text, seconds):
    assert validators.parse_duration(text) == seconds


def test_nice_accepts_0_to_19_and_idle_only():
    assert validators.nice_value(0) == 0 and validators.nice_value(19) == 19 and validators.nice_value("idle") == "idle"
    for bad in (20, -1, True, "10", 1.5):
        with pytest.raises(ValueError):
            validators.nice_value(bad)


def test_precision_fields_reach_every_probe_spec():
    cfg = loader.config_from_mapping({"probe": {"precision": 0.02, "max_repeats": 6, "step_budget": "5s", "nice": 10}})
    spec = cfg.probe_specs(2)[0]
    assert (spec.precision, spec.max_repeats, spec.step_budget_seconds, spec.nice) == (0.02, 6, 5.0, 10)


def test_default_max_repeats_below_a_configured_repeats_is_not_an_error():
    # Only an explicit max_repeats below repeats contradicts; the runner uses max(repeats, max_repeats).
    assert loader.config_from_mapping({"probe": {"repeats": 12}}).probe.repeats == 12


def test_a_short_timeout_alone_keeps_the_default_step_budget_valid():
    assert loader.config_from_mapping({"probe": {"timeout": "2s"}}).probe.timeout_seconds == 2


@pytest.mark.parametrize("text", ["5s5m", "1.5m", "1m1m", "5", "", " 5m", "5m ", "5M", "1h-5m", "ms", "0s", "0"])
def test_durations_outside_prometheus_grammar_or_not_positive_are_refused(text):
    with pytest.raises(ValueError):
        validators.parse_duration(text)


def test_worker_bound_follows_the_hosts_cpus():
    limit = validators.max_workers()
    assert limit == min(256, 4 * (os.cpu_count() or 1))
    assert validators.worker_count(limit) == limit
    with pytest.raises(ValueError, match=f"must be at most {limit}"):
        validators.worker_count(limit + 1)


def test_relative_workload_path_is_relative_to_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "workloads").mkdir()
    path = tmp_path / "exporter.yml"
    path.write_text("probe:\n  workload_path: [workloads]\n")
    monkeypatch.chdir("/")
    cfg = loader.load_config(str(path))
    assert cfg.probe.workload_path == (str(tmp_path / "workloads"),)
    assert cfg.probe_specs(2)[0].workload_path == (str(tmp_path / "workloads"),)


def test_config_file_over_the_size_limit_is_refused_without_parsing(tmp_path):
    path = tmp_path / "big.yml"
    path.write_text("# " + "x" * (256 * 1024) + "\ninterval: 5m\n")
    with pytest.raises(ConfigError, match=r": file is larger than 256 KiB$"):
        loader.load_config(str(path))


def test_a_fifo_as_config_file_is_refused_instead_of_blocking(tmp_path):
    fifo = tmp_path / "config.yml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r": not a regular file \(a FIFO\)$"):
        loader.load_config(str(fifo))


@pytest.mark.parametrize("text, value", [
    ("010", 10),  # YAML 1.2 decimal; YAML 1.1 read octal 8
    ("+7", 7), ("-3", -3), ("1e3", 1000.0), ("0.5", 0.5), (".5", 0.5),
    ("0x10", "0x10"), ("0o17", "0o17"), ("0b101", "0b101"), ("1_000", "1_000"),
    ("1:30", "1:30"),  # YAML 1.1 base 60: 90
    ("\u0665", "\u0665"), ("\u0661\u0660", "\u0661\u0660"),  # Arabic-Indic digits stay text
])
def test_numbers_are_yaml_1_2_ascii_decimals(text, value):
    from exporter.config import yamlfile

    assert yamlfile.parse(f"v: {text}\n".encode()) == {"v": value}


@pytest.mark.parametrize("text", ["\u0665m", "\u0661h\u0663\u0660m", "\uff15m", "\u096ds", "5m\n"])
def test_durations_take_ascii_digits_only(text):
    """Issue 17: ``\\d`` matched any Unicode digit and int() read it: "٥m" was 5 minutes."""
    with pytest.raises(ValueError, match="must be a duration like 30s or 5m"):
        validators.parse_duration(text)


@pytest.mark.parametrize("text, size", [("512MiB", 512 << 20), ("2GiB", 2 << 30), ("512MB", 512 << 20),
                                        ("1GB", 1 << 30), (128 << 20, 128 << 20), ("67108864", 64 << 20),
                                        ("65536KiB", 64 << 20)])
def test_memory_limit_sizes(text, size):
    assert validators.memory_size(text) == size


@pytest.mark.parametrize("text", ["\u0665\u0661\u0662MiB", "512 MiB", "512mb", "0.5GiB", "-512MiB", "1e9", True, 1.5e9,
                                  "", "MiB"])
def test_memory_limit_outside_the_grammar_is_refused(text):
    with pytest.raises(ValueError, match="must be a size like 512MiB or 2GiB"):
        validators.memory_size(text)


def test_memory_limit_default_is_half_the_hosts_memory_and_reaches_every_probe_spec():
    from exporter.host import cpus

    default = settings.default_memory_limit()
    assert default <= cpus.memory_bytes() and default >= min(cpus.memory_bytes(), 256 << 20)
    assert abs(default - cpus.memory_bytes() // 2) <= 1 << 20 or default == 256 << 20
    assert {s.memory_limit_bytes for s in settings.Config().probe_specs(2)} == {default}
    cfg = loader.config_from_mapping({"probe": {"memory_limit": "300MiB"}})
    assert {s.memory_limit_bytes for s in cfg.probe_specs(2)} == {300 << 20}


def test_memory_limit_above_the_hosts_memory_is_refused():
    from exporter.host import cpus

    too_much = (cpus.memory_bytes() >> 20 << 20) + (1 << 30)
    with pytest.raises(ValueError, match=r"must be at most \d+MiB \(this host's memory\)"):
        validators.memory_size(too_much)
