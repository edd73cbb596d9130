"""The command line as a user runs it: exit codes, one-line errors, JSON and the chart."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import sys

import pytest

from exporter.config import inputs
from exporter.config.settings import Config
from exporter.errors import ConfigError
from exporter.export.collector import write_textfile
from exporter.host.cpus import host_cpus


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.integration  # runs the command line in a child process
@pytest.mark.parametrize("args, message", [
    (["probe", "--workload", "nope"], "--workload: unknown workload 'nope'"),
    (["probe", "--mode", "greenlets"], "--mode: unknown mode 'greenlets'"),
    (["probe", "--repeats", "0"], "--repeats: must be an integer >= 1, got 0"),
    (["probe", "--workers", "two"], "--workers: must be an integer >= 1, got 'two'"),
    (["probe", "--seconds", "-1"], "--seconds: must be a number > 0, got -1.0"),
    (["probe", "--start-method", "thread"], "--start-method: must be one of fork, forkserver, spawn"),
    (["probe", "--timeout", "soon"], "--timeout: must be a duration like 30s or 5m, got 'soon'"),
    (["probe", "--workers", "100000"], "--workers: must be at most 256, got 100000"),
    (["probe", "--repeats", "1000000000"], "--repeats: must be at most 1000, got 1000000000"),
    (["probe", "--seconds", "inf"], "--seconds: must be a number > 0, got inf"),
    (["probe", "--seconds", "nan"], "--seconds: must be a number > 0, got nan"),
    (["probe", "--timeout", "5s5m"], "--timeout: must be a duration like 30s or 5m, got '5s5m'"),
    (["probe", "--timeout", "2h"], "--timeout: must be at most 1h, got '2h'"),
    (["probe", "--deadline", "1.5m"], "--deadline: must be a duration like 30s or 5m, got '1.5m'"),
    (["probe", "--workload.path", "/no/such/dir"], "--workload.path: not a directory: /no/such/dir"),
    (["probe", "--textfile", "/no/such/dir/x.prom"], "--textfile: /no/such/dir/x.prom: directory /no/such/dir does not exist"),
    (["probe", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["probe", "--config.file", "/no/such.yml"], "error parsing config file: /no/such.yml"),
    (["bogus"], "invalid choice: 'bogus'"),
])
def test_bad_input_exits_2_with_one_line(args, message):
    result = cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr


def probe_json(*extra: str) -> dict:
    result = cli("probe", "--workload", "sleep", "--mode", "threads,asyncio", "--workers", "2",
                 "--seconds", "0.1", "--repeats", "1", "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.integration  # runs the command line in a child process
def test_json_document_has_interpreter_host_and_results():
    document = probe_json()
    assert document["interpreter"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert document["interpreter"]["gil_enabled"] is True
    assert document["host"]["usable_cpus"] == host_cpus().usable
    modes = [(r["mode"], r["workers"]) for r in document["results"]]
    assert modes == [("sequential", 1), ("threads", 2), ("asyncio", 2)]
    for result in document["results"]:
        assert result["success"] is True
        assert result["workload"] == "sleep"
        for key in ("speedup", "throughput_units_per_second", "efficiency", "cores_used"):
            assert isinstance(result[key], float)
        assert len(result["core_utilisation"]) == host_cpus().logical
    assert document["results"][1]["speedup"] > 1.5  # sleeping threads overlap


@pytest.mark.integration  # runs the command line in a child process
def test_failed_probe_exits_1_and_says_why():
    from support import TESTS

    result = cli("probe", "--workload", "faulty_workloads:raises", "--workload.path", str(TESTS),
                 "--mode", "threads", "--seconds", "0.1", "--repeats", "1", "--json")
    assert result.returncode == 1
    results = json.loads(result.stdout)["results"]
    assert {r["reason"] for r in results} == {"error"}


@pytest.mark.parametrize("kind", ["missing", "not executable", "directory"])
def test_a_bad_python_is_exit_2_and_one_line_before_probing(tmp_path, capsys, kind):
    """No process starts (the unit-test guard would fail the test): the path alone says it."""
    from exporter import cli as command_line

    path = {"missing": tmp_path / "python3.13", "not executable": tmp_path / "python", "directory": tmp_path}[kind]
    if kind == "not executable":
        path.write_text("#!/bin/sh\n")
    assert command_line.run(["probe", "--python", str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"parallelism-exporter: --python: {path}: "), err


@pytest.mark.integration  # the check runs each interpreter once
@pytest.mark.parametrize("script, expected", [
    ('echo "3 9"', "Python 3.9 is too old: the probe needs 3.10 or newer"),
    ("echo boom >&2; exit 1", "does not run as Python (boom)"),
])
def test_an_interpreter_too_old_or_not_python_is_exit_2_before_probing(tmp_path, capsys, script, expected):
    from exporter import cli as command_line

    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    assert command_line.run(["probe", "--python", f"old={fake}", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"parallelism-exporter: --python: {fake}: {expected}\n"


def test_a_user_workload_module_not_found_names_workload_path():
    from exporter.probe.run import with_import_hint

    missing = "ModuleNotFoundError: No module named 'myapp'"
    assert "--workload.path" in with_import_hint(missing, "myapp.bench:score_batch")
    assert "--workload.path" in with_import_hint("ModuleNotFoundError: No module named 'myapp.bench'",
                                                 "myapp.bench:score_batch")
    # A module the workload itself imports is the user's dependency, not a path to add.
    numpy = "ModuleNotFoundError: No module named 'numpy'"
    assert with_import_hint(numpy, "myapp.bench:score_batch") == numpy
    assert with_import_hint(missing, "pure_python") == missing


@pytest.mark.integration  # runs the command line in a child process
def test_plot_writes_a_png(tmp_path):
    chart = tmp_path / "chart.png"
    probe_json("--plot", str(chart))
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration  # runs the command line in a child process
def test_terminal_report_has_table_bars_and_verdict():
    result = cli("probe", "--workload", "sleep", "--mode", "threads", "--workers", "2",
                 "--seconds", "0.1", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "sleep" in out and "threads" in out and "speedup" in out
    assert "per-core utilisation" in out and "cpu0" in out
    assert "sleep: threads: overlaps waiting" in out


@pytest.mark.integration  # runs the command line in a child process
def test_json_has_the_measurement_fields_and_the_nice_used():
    document = probe_json("--nice", "3", "--max-repeats", "2", "--precision", "0.5", "--step-budget", "2s")
    assert document["nice"] == 3
    threads = document["results"][1]
    for key in ("cpu_rate_ratio", "interference_cores"):
        assert isinstance(threads[key], float), key
    assert threads["unsteady"] is False and threads["unsteady_reason"] is None
    assert "steal_ratio" in threads and isinstance(threads["pair_speedups"], list)
    assert threads["speedup_ci"] is None or threads["speedup_ci"][0] <= threads["speedup"] <= threads["speedup_ci"][1]


@pytest.mark.integration  # runs the command line in a child process
@pytest.mark.parametrize("flags, message", [
    (["--nice", "20"], "--nice: must be an integer 0..19 or idle, got 20"),
    (["--precision", "2"], "--precision: must be a number in (0, 1], got 2.0"),
    (["--step-budget", "soon"], "--step-budget: must be a duration like 30s or 5m, got 'soon'"),
    (["--timeout", "3", "--step-budget", "5s"], "probe.step_budget: must be shorter than probe.timeout (3s), got 5s"),
    # The same bound a config file is held to (tests/testdata/invalid-max-repeats.yml).
    (["--repeats", "5", "--max-repeats", "2"], "probe.max_repeats: must be >= probe.repeats (5), got 2"),
])
def test_bad_measurement_flags_are_one_line_and_exit_2(flags, message):
    result = cli("probe", "--workload", "sleep", *flags)
    assert result.returncode == 2
    assert result.stderr.strip() == f"parallelism-exporter: {message}"


# --- in-process checks of the command line (no probe runs: these start no process) -------


def test_flags_are_held_to_the_bounds_a_config_file_is_held_to(tmp_path):
    """--repeats above --max-repeats is refused as the same values in a file are; a repeats
    above the default max_repeats alone, in a file or a flag, is not."""
    from exporter import cli as command_line

    def config(*flags: str):
        return command_line.one_shot_config(command_line.build_parser().parse_args(["probe", *flags]))

    with pytest.raises(ConfigError, match=r"probe.max_repeats: must be >= probe.repeats \(5\), got 2"):
        config("--repeats", "5", "--max-repeats", "2")
    file = tmp_path / "c.yml"
    file.write_text("probe:\n  repeats: 5\n")
    with pytest.raises(ConfigError, match=r"probe.max_repeats: must be >= probe.repeats \(5\), got 2"):
        config("--config.file", str(file), "--max-repeats", "2")
    assert config("--repeats", "20").probe.repeats == 20
    file.write_text("probe:\n  max_repeats: 4\n")
    with pytest.raises(ConfigError, match=r"probe.max_repeats: must be >= probe.repeats \(6\), got 4"):
        config("--config.file", str(file), "--repeats", "6")


def test_plot_without_matplotlib_fails_before_probing_and_names_the_install_command(monkeypatch, capsys):
    from exporter import cli as command_line

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert command_line.run(["probe", "--plot", "chart.png"]) == 2  # no runner started: the guard would fail it
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "matplotlib is not installed" in error and "scripts/install plot" in error


def test_probe_help_lists_workloads_modes_and_both_defaults(capsys):
    from exporter import cli as command_line
    from exporter.config.settings import ProbeConfig
    from exporter.runner.modes import MODES
    from exporter.runner.workloads import ALL_WORKLOADS

    with pytest.raises(SystemExit) as exit_:
        command_line.run(["probe", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for name in [*ALL_WORKLOADS, *MODES]:
        assert f"\n  {name} " in text, name
    assert f"default: {','.join(command_line.ONE_SHOT.workloads)}; serve's default: {','.join(ProbeConfig().workloads)}" in text
    assert f"default: {','.join(command_line.ONE_SHOT.modes)}; serve's default: {','.join(ProbeConfig().modes)}" in text


@pytest.mark.integration  # runs the command line in a child process
def test_progress_goes_to_a_terminal_never_into_a_pipe_or_the_json():
    import os
    import pty

    piped = cli("probe", "--workload", "sleep", "--mode", "threads", "--workers", "2", "--seconds", "0.1",
                "--repeats", "2", "--json")
    assert piped.returncode == 0 and piped.stderr == ""
    json.loads(piped.stdout)  # nothing but the document
    leader, follower = pty.openpty()
    shown = bytearray()

    def read_terminal() -> None:  # read as it comes: a full terminal buffer would block the probe
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        completed = subprocess.run([sys.executable, "-m", "exporter", "probe", "--workload", "sleep", "--mode", "threads",
                                    "--workers", "2", "--seconds", "0.1", "--repeats", "2", "--json"],
                                   stdout=subprocess.PIPE, stderr=follower, timeout=120, text=True)
    finally:
        os.close(follower)
        reader.join(5)
        os.close(leader)
    assert completed.returncode == 0
    json.loads(completed.stdout)
    assert b"sleep: threads" in shown and b"pair" in shown  # workload, step and pairs so far


@pytest.mark.integration  # runs the command line in a child process
def test_a_report_into_a_pipe_keeps_every_figure_whole():
    result = cli("probe", "--workload", "sleep", "--mode", "sequential,threads,processes,asyncio", "--workers", "2",
                 "--seconds", "0.1", "--repeats", "2")
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout, result.stdout


def special_files(directory) -> list:
    """A FIFO, and as root a character device with /dev/full's numbers, in ``directory``."""
    fifo = directory / "x.fifo"
    os.mkfifo(fifo)
    if os.geteuid() != 0:
        return [fifo]
    device = directory / "full"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    return [fifo, device]


@pytest.mark.integration  # runs the command line in a child process
def test_textfile_never_replaces_a_device_or_fifo_and_fails_before_probing(tmp_path):
    for path in special_files(tmp_path):
        kind = os.lstat(path).st_mode
        result = cli("probe", "--workload", "pure_python", "--repeats", "50", "--textfile", str(path), timeout=60)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [f"parallelism-exporter: --textfile: {path} is not a regular file "
                                              f"({inputs.file_kind(kind)}); not replacing it"]
        assert os.lstat(path).st_mode == kind


def test_writing_the_textfile_never_replaces_a_device_or_fifo(tmp_path):
    """The same guard at the write, for a FIFO made while the probe ran."""
    paths = special_files(tmp_path)
    for path in paths:
        kind = os.lstat(path).st_mode
        with pytest.raises(OSError, match="is not a regular file"):
            write_textfile(str(path), [], host_cpus(), Config())
        assert os.lstat(path).st_mode == kind
    assert sorted(tmp_path.iterdir()) == sorted(paths)  # no temporary file left behind


@pytest.mark.parametrize("argv, codes", [
    ([], ("0", "1", "2", "3")), (["compare"], ("0", "1", "2", "3")), (["serve"], ("0", "2"))])
def test_help_describes_the_command_and_its_exit_codes(capsys, argv, codes):
    from exporter import cli as command_line

    with pytest.raises(SystemExit) as exit_:
        command_line.run([*argv, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    description = text.split("\n\n")[1]  # after the usage
    assert not description.startswith(("positional arguments", "options")), text
    exit_codes = text.split("exit codes:", 1)[1]
    for code in codes:
        assert f" {code} " in exit_codes, (code, text)
    if not argv:
        assert "3 inconclusive" in exit_codes
