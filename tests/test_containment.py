"""The fault suite: a workload that attacks the harness is a failed probe, and nothing it
started outlives the probe (or the exporter, even after SIGKILL).

Every test marks its processes with a fresh PYPARALLEL_TEST_TOKEN and counts leftovers by
that token only: other probes run on this machine at the same time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

import support
from exporter.probe import containment
from exporter.probe import run as probe
from support import processes_with_token

pytestmark = pytest.mark.integration

TESTS = Path(__file__).parent


def run(workload: str, *, modes=("threads",), repeats=1, unit=0.05, timeout=5.0, deadline=None,
        interpreter: str = sys.executable, token: str | None = None) -> probe.WorkloadReport:
    spec = probe.ProbeSpec(workload, modes, (2,), unit, repeats, timeout, "forkserver",
                           workload_path=(str(TESTS),), deadline=deadline)
    env = {"PYPARALLEL_TEST_TOKEN": token or uuid.uuid4().hex}
    return probe.run_workload(probe.Interpreter("test", interpreter, env), spec)


def run_faulty(function: str, **kwargs) -> tuple[probe.WorkloadReport, list]:
    token = uuid.uuid4().hex
    report = run(f"faulty_workloads:{function}", token=token, **kwargs)
    return report, processes_with_token(token)


def reasons(report: probe.WorkloadReport) -> set:
    return {s.reason for s in report.steps if s.available}


def test_probe_processes_are_contained_by_a_cgroup_where_the_host_allows_it():
    parent, kind = containment.cgroup_parent()
    if os.geteuid() != 0 or parent is None:
        pytest.skip("no writable cgroup hierarchy: the token sweep is the boundary here")
    assert kind in ("cgroup2", "cgroup1")
    boundary = containment.Containment()
    try:
        assert boundary.cgroup is not None and boundary.cgroup.parent == parent
    finally:
        boundary.close()
    assert not boundary_dirs_of_this_process(parent)


def boundary_dirs_of_this_process(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if p.name.startswith(f"{containment.CGROUP_PREFIX}{os.getpid()}-")]


def test_exiting_workload_is_a_crash_with_the_exit_code():
    report, leftovers = run_faulty("exits")
    assert reasons(report) == {"crash"}
    assert "exited with code 3" in report.step("sequential", 1).message
    assert leftovers == []


@pytest.mark.parametrize("function", ["forks_sleepers", "forks_detached_sleepers", "double_forks_a_daemon"])
def test_processes_a_workload_leaves_behind_fail_the_probe_and_are_killed(function):
    report, leftovers = run_faulty(function)
    assert reasons(report) == {"error"}
    assert "left" in report.step("sequential", 1).message and "killed" in report.step("sequential", 1).message
    assert report.duration_seconds < 15
    assert leftovers == []


def test_child_holding_stderr_open_does_not_hold_the_lane_or_pass():
    report, leftovers = run_faulty("holds_stderr_open", timeout=10.0)
    assert reasons(report) == {"error"}
    assert report.duration_seconds < 10  # well inside the timeout; once it was 90 s past it
    assert leftovers == []


def test_ten_megabytes_without_a_newline_keep_memory_bounded():
    before = psutil.Process().memory_info().rss
    report, leftovers = run_faulty("floods_output_without_newline")
    grown = psutil.Process().memory_info().rss - before
    assert report.success, [s.message for s in report.steps]
    assert grown < 30 * 2**20, f"the parent grew by {grown / 2**20:.0f} MiB"
    assert leftovers == []


def test_invalid_utf8_on_stderr_is_replaced_and_the_step_still_reports():
    report, leftovers = run_faulty("writes_invalid_utf8_then_raises")
    step = report.step("sequential", 1)
    assert step.reason == "error" and "after invalid UTF-8" in step.message
    assert any(line.startswith("bad bytes: \ufffd") for line in step.log), step.log
    assert leftovers == []


def test_memory_growth_then_hang_is_a_timeout_and_leaves_nothing():
    report, leftovers = run_faulty("grows_memory_then_hangs", timeout=3.0)
    assert reasons(report) - {None} == {"timeout"}  # steps measured before the hang keep their windows
    assert report.duration_seconds < 20
    assert leftovers == []


def test_a_thread_left_running_in_a_worker_process_is_named_well_before_the_timeout():
    """Issue 17: the worker could not exit (multiprocessing joins non-daemon threads), and the
    probe failed only at the full timeout, as a plain ``timeout``."""
    report, leftovers = run_faulty("leaves_a_thread_running", modes=("processes",), timeout=30.0)
    step = report.step("processes", 2)
    assert step.reason == "error"
    assert "left 1 thread(s) running in worker process" in step.message and "'forgotten-sleeper'" in step.message
    assert report.duration_seconds < 20
    assert leftovers == []


# --- the memory limit (issue 17: one allocating 100 MB chunks reached 4 GB in seconds) -------


def tree_memory_peak(token: str, stop: threading.Event, peak: list[int]) -> None:
    """The largest sum of RSS of the probe's processes, sampled every 20 ms (shared pages
    count once per process, so this overstates what the cgroup charges)."""
    while not stop.is_set():
        total = 0
        for process in psutil.process_iter():
            try:
                if process.environ().get("PYPARALLEL_TEST_TOKEN") == token:
                    total += process.memory_info().rss
            except (psutil.Error, OSError):
                continue
        peak[0] = max(peak[0], total)
        stop.wait(0.02)


LIMIT = 256 << 20


@pytest.mark.parametrize("function, mode", [("grows_memory_without_end", "threads"),
                                            ("grows_memory_in_worker_process", "processes")])
def test_a_workload_that_grows_without_end_fails_at_the_memory_limit(function, mode):
    token, stop, peak = uuid.uuid4().hex, threading.Event(), [0]
    sampler = threading.Thread(target=tree_memory_peak, args=(token, stop, peak), daemon=True)
    sampler.start()
    spec = probe.ProbeSpec(f"faulty_workloads:{function}", (mode,), (2,), 0.05, 1, 60.0, "forkserver",
                           workload_path=(str(TESTS),), memory_limit_bytes=LIMIT)
    try:
        report = probe.run_workload(probe.Interpreter("test", sys.executable, {"PYPARALLEL_TEST_TOKEN": token}), spec)
    finally:
        stop.set()
        sampler.join()
    failed = report.step(mode, 2)
    assert failed.reason == "memory", (failed.reason, failed.message)
    assert "probe.memory_limit 256 MiB" in failed.message
    assert report.duration_seconds < 10  # the limit is hit within a second of start; the timeout is 60 s
    assert peak[0] < LIMIT * 1.5, f"the probe's processes reached {peak[0] >> 20} MiB"
    assert processes_with_token(token) == []


def test_where_no_cgroup_can_be_written_a_memory_error_under_rlimit_as_is_the_memory_reason(monkeypatch):
    from exporter.probe import memorylimit

    monkeypatch.setattr(containment, "_LAYOUT", replace(containment.layout(), memory=None))
    monkeypatch.setattr(memorylimit, "MIN_ADDRESS_SPACE_BYTES", 0)  # the floor 3.13t needs would hide a 256 MiB test
    token = uuid.uuid4().hex
    spec = probe.ProbeSpec("faulty_workloads:grows_memory_without_end", ("threads",), (2,), 0.05, 1, 60.0,
                           "forkserver", workload_path=(str(TESTS),), memory_limit_bytes=LIMIT)
    report = probe.run_workload(probe.Interpreter("test", sys.executable, {"PYPARALLEL_TEST_TOKEN": token}), spec)
    assert {s.reason for s in report.steps} == {"memory"}
    assert "RLIMIT_AS 256 MiB per process" in report.step("threads", 2).message
    assert report.duration_seconds < 10
    assert processes_with_token(token) == []


def test_fork_storm_in_worker_processes_is_killed_with_the_tree():
    report, leftovers = run_faulty("forks_sleepers", modes=("processes",))
    assert reasons(report) == {"error"}
    assert leftovers == []


def test_events_that_keep_coming_cannot_outlive_the_deadline():
    """repeats: 1000000000 once ran for ever: every event reset the timeout."""
    token = uuid.uuid4().hex
    started = time.monotonic()
    report = run("sleep", repeats=1_000_000_000, unit=0.02, timeout=5.0, deadline=3.0, token=token)
    elapsed = time.monotonic() - started
    failed = [s for s in report.steps if s.reason is not None]
    assert failed and {s.reason for s in failed} == {"timeout"}  # the steps cut short; the rest keep their windows
    assert all("deadline of 3s" in s.message for s in failed)
    assert 3.0 <= elapsed < 10
    assert processes_with_token(token) == []


def test_default_deadline_is_timeout_times_steps_plus_one():
    spec = probe.ProbeSpec("sleep", ("threads", "processes"), (2, 4), timeout_seconds=10.0)
    assert spec.deadline_seconds() == 10.0 * (5 + 1)


# --- the protocol: one bad interpreter fails its own steps, never the round -----------------


def fake_interpreter(tmp_path: Path, output: str, name: str = "python") -> str:
    """An 'interpreter' that answers the request with ``output`` on stdout (and the command
    line's check before probing with its version)."""
    script = tmp_path / name
    script.write_text(f"#!{sys.executable}\nimport sys\nif 'print(*sys.version_info' in sys.argv[-1]: sys.exit(print(3, 11))\n"
                      f"sys.stdout.write({output!r})\nsys.stdout.flush()\nsys.stdin.readline()\n")
    script.chmod(0o755)
    return str(script)


IDENTITY = ('{"event": "identity", "version": "3.11.0", "implementation": "cpython", "executable": "x", '
            '"free_threaded_build": false, "gil_enabled": true, "start_methods": [], '
            '"subinterpreters_unavailable": null}\n')


@pytest.mark.parametrize("output, expected", [
    ('{"version": "3.99"}\n', "not an event object with an 'event' key"),
    ("[1, 2, 3]\n", "not an event object"),
    ('{"event": "step", "mode": "greenlets", "workers": 1}\n', "malformed 'step' event"),
    ('{"event": "identity", "version": 3}\n', "malformed 'identity' event"),
    ('{"event": "calibrated", "ops_per_unit": "many", "op_seconds": 1}\n', "malformed 'calibrated' event"),
    ("OVERLONG", "longer than"),
    (IDENTITY.replace('"3.11.0"', '"' + "9" * 500 + '"'), "malformed 'identity' event"),
    (IDENTITY + '{"event": "calibrated", "ops_per_unit": 1, "op_seconds": 0.1}\n'
     '{"event": "step", "mode": "sequential", "workers": 1}\n'
     '{"event": "window", "mode": "sequential", "workers": 1, "starts": ["a"], "ends": [1.0], '
     '"cpu_seconds": [1.0], "startup_seconds": 0}\n', "malformed 'window' event"),
    (IDENTITY + '{"event": "done"}\n', "finished without measuring"),
], ids=["no-event-key", "not-an-object", "unknown-step", "bad-identity", "bad-calibration", "2-MiB-line",
        "version-as-label-bomb", "window-of-strings", "done-without-results"])
def test_output_that_is_not_an_event_fails_the_probe_with_a_reason(tmp_path, output, expected):
    output = '{"event": "' + "x" * (2 << 20) + '"}\n' if output == "OVERLONG" else output
    report = run("sleep", interpreter=fake_interpreter(tmp_path, output))
    assert reasons(report) == {"error"}
    assert expected in report.step("sequential", 1).message


def test_unknown_failure_reasons_from_a_runner_become_error(tmp_path):
    """Failure reasons are a label: a runner cannot invent new values."""
    output = IDENTITY + '{"event": "failed", "reason": "pwned", "message": "m"}\n{"event": "done"}\n'
    report = run("sleep", interpreter=fake_interpreter(tmp_path, output))
    assert reasons(report) == {"error"}


def test_a_broken_interpreter_does_not_stop_the_ones_after_it(tmp_path):
    bad = fake_interpreter(tmp_path, '{"no": "event"}\n')
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "probe", "--json", "--workload", "sleep", "--mode", "threads",
         "--workers", "2", "--seconds", "0.05", "--repeats", "1", "--python", f"bad={bad}",
         "--python", f"good={sys.executable}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    results = json.loads(result.stdout)["results"]
    assert {r["reason"] for r in results if r["interpreter"] == "bad"} == {"error"}
    assert all("not an event object" in r["message"] for r in results if r["interpreter"] == "bad")
    assert [r["success"] for r in results if r["interpreter"] == "good"] == [True, True]


# --- isolation from the working directory -----------------------------------------------------


def test_the_working_directory_is_not_on_the_runners_path(tmp_path, monkeypatch):
    (tmp_path / "json.py").write_text("raise SystemExit('json.py from the working directory ran')\n")
    (tmp_path / "local_workloads.py").write_text("def work():\n    pass\n")
    monkeypatch.chdir(tmp_path)
    spec = probe.ProbeSpec("sha256", ("threads",), (2,), 0.05, 1, 30.0)
    assert probe.run_workload(probe.Interpreter("t", sys.executable), spec).success
    local = probe.ProbeSpec("local_workloads:work", ("threads",), (2,), 0.05, 1, 30.0)
    report = probe.run_workload(probe.Interpreter("t", sys.executable), local)
    assert reasons(report) == {"error"} and "No module named 'local_workloads'" in report.step("sequential", 1).message
    explicit = probe.ProbeSpec("local_workloads:work", ("threads",), (2,), 0.05, 1, 30.0, workload_path=(str(tmp_path),))
    assert probe.run_workload(probe.Interpreter("t", sys.executable), explicit).success


# --- nothing outlives the exporter --------------------------------------------------------------


@pytest.mark.parametrize("start_method", ["forkserver", "spawn", "fork"])
def test_sigkill_of_the_daemon_mid_round_leaves_no_process_within_5s(tmp_path, start_method):
    token = uuid.uuid4().hex
    config = {"interval": "1h", "jitter": "0s", "duty_cycle": 1,
              "probe": {"workloads": ["faulty_workloads:hangs_in_worker_process"], "modes": ["processes"],
                        "workers": [2], "unit_seconds": 0.05, "repeats": 1, "timeout": "10m",
                        "start_method": start_method}}
    exporter = support.start_exporter(tmp_path, config, env={"PYPARALLEL_TEST_TOKEN": token})
    try:
        # The exporter, its runner and two hanging workers (and a forkserver, a resource tracker).
        support.wait_for(lambda: len(processes_with_token(token)) >= 4, 60, "the workers to hang")
        time.sleep(0.5)  # let the workers reach the hang
    finally:
        exporter.stop(signal.SIGKILL)
    support.wait_for(lambda: not processes_with_token(token), 5, "every probe process to die", interval=0.1)


def test_sigterm_of_a_one_shot_probe_kills_the_runner_tree():
    token = uuid.uuid4().hex
    command = [sys.executable, "-m", "exporter", "probe", "--workload", "faulty_workloads:hangs_in_worker_process",
               "--workload.path", str(TESTS), "--mode", "processes", "--workers", "2", "--seconds", "0.05",
               "--repeats", "1", "--timeout", "10m"]
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        child = subprocess.Popen(command, env=dict(os.environ, PYPARALLEL_TEST_TOKEN=token),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        support.wait_for(lambda: len(processes_with_token(token)) >= 5, 60, "the workers to hang")
        child.send_signal(sig)
        _, stderr = child.communicate(timeout=30)
        assert child.returncode == code
        assert stderr.strip().splitlines()[-1] == (
            f"parallelism-exporter: interrupted by {sig.name}; probe processes killed")
        assert "Traceback" not in stderr
        support.wait_for(lambda: not processes_with_token(token), 5, "every probe process to die", interval=0.1)


def test_textfile_in_a_missing_directory_fails_before_probing(tmp_path):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "exporter", "probe", "--workload", "pure_python",
                             "--repeats", "50", "--textfile", str(tmp_path / "nope" / "x.prom")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"parallelism-exporter: --textfile: {tmp_path / 'nope' / 'x.prom'}: directory {tmp_path / 'nope'} does not exist\n"
    assert time.monotonic() - started < 20  # 50 repeats of every mode would take minutes


def test_textfile_write_failure_is_one_line_and_exit_2(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a full file system")
    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        filler = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:  # fill the file system
            while os.write(filler, b"x" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(filler)
        result = subprocess.run([sys.executable, "-m", "exporter", "probe", "--workload", "sleep", "--mode", "threads",
                                 "--workers", "2", "--seconds", "0.05", "--repeats", "1",
                                 "--textfile", str(mount / "x.prom")], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"parallelism-exporter: --textfile: cannot write {mount / 'x.prom'}: ")
        assert len(result.stderr.splitlines()) == 1
        assert [p.name for p in mount.iterdir()] == ["filler"]  # no half-written temporary file
    finally:
        subprocess.run(["umount", str(mount)])


def test_stale_cgroups_of_a_dead_exporter_are_emptied_and_removed():
    parent, kind = containment.cgroup_parent()
    if os.geteuid() != 0 or parent is None:
        pytest.skip("no writable cgroup hierarchy")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = parent / f"{containment.CGROUP_PREFIX}{dead.pid}-{uuid.uuid4().hex}"
    stale.mkdir()
    token = uuid.uuid4().hex
    orphan = subprocess.Popen(["sleep", "600"], env=dict(os.environ, PYPARALLEL_TEST_TOKEN=token))
    (stale / "cgroup.procs").write_text(str(orphan.pid))
    containment.Containment().close()
    assert orphan.wait(5) == -signal.SIGKILL
    assert not stale.exists()


def test_a_broken_interpreter_does_not_stop_the_daemons_round(tmp_path):
    """An interpreter printing JSON without an 'event' key once aborted the whole round."""
    from test_daemon import sample, scrape

    bad = fake_interpreter(tmp_path, '{"no": "event"}\n')
    config = {"interval": "1h", "jitter": "0s", "duty_cycle": 1,
              "interpreters": [{"name": "bad", "path": bad}, {"name": "good", "path": sys.executable}],
              "probe": {"workloads": ["sleep"], "modes": ["threads"], "workers": [2], "unit_seconds": 0.05,
                        "repeats": 1, "timeout": "10s"}}
    exporter = support.start_exporter(tmp_path / "exporter", config)
    try:
        support.wait_ready(exporter, timeout=60)
        text = scrape(exporter)
        labels = {"workload": "sleep", "mode": "threads", "workers": "2"}
        assert sample(text, "pyparallel_probe_success", interpreter="bad", **labels) == 0
        assert sample(text, "pyparallel_probe_success", interpreter="good", **labels) == 1
        assert exporter.alive()
    finally:
        exporter.stop()


def test_a_relative_interpreter_path_is_relative_to_our_working_directory(tmp_path, monkeypatch):
    """The runner starts in '/', but ./bin/python still means the one next to us."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(sys.executable)
    monkeypatch.chdir(tmp_path)
    spec = probe.ProbeSpec("sleep", ("threads",), (2,), 0.05, 1, 30.0)
    assert probe.run_workload(probe.Interpreter("t", "./bin/python"), spec).success


@pytest.mark.parametrize("function", ["forks_detached_sleepers", "double_forks_a_daemon", "holds_stderr_open"])
def test_without_a_cgroup_the_token_sweep_still_kills_detached_processes(function, monkeypatch):
    monkeypatch.setattr(containment, "_LAYOUT", containment.Layout(None, None, None))
    report, leftovers = run_faulty(function)
    assert reasons(report) == {"error"}
    assert "left" in report.step("sequential", 1).message
    assert report.duration_seconds < 15
    assert leftovers == []


def v1_pids_only() -> containment.Layout:
    parent = Path("/sys/fs/cgroup/pids")
    if not (parent / "cgroup.procs").exists() or not os.access(parent, os.W_OK):
        pytest.skip("needs a writable cgroup v1 pids hierarchy at /sys/fs/cgroup/pids")
    own = containment.Hierarchy(Path(str(parent) + (containment._own_cgroup("pids") or "/").rstrip("/")), "cgroup1")
    return containment.Layout(own, own, None)


@pytest.mark.parametrize("layout", [v1_pids_only, containment.layout], ids=["v1 pids", "this host's own"])
def test_a_fork_bomb_meets_the_probe_cgroups_process_limit(monkeypatch, layout):
    """With a pids controller a probe cannot fork without bound: the v1 pids hierarchy alone,
    and this host's own layout (on a hybrid host the v2 boundary has no pids.max: the v1
    pids cgroup beside it holds the limit)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    found = layout()
    if found.pids is None:
        pytest.skip("no writable pids controller here")
    monkeypatch.setattr(containment, "_LAYOUT", found)
    monkeypatch.setattr(containment, "MAX_PROBE_PROCESSES", 24)
    report, leftovers = run_faulty("forks_sleepers")
    assert reasons(report) == {"error"}
    assert "Resource temporarily unavailable" in report.step("sequential", 1).message
    assert leftovers == []


def test_textfile_on_a_read_only_file_system_fails_before_probing(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a read-only file system")
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "exporter", "probe", "--workload", "pure_python",
                                 "--repeats", "50", "--textfile", str(mount / "x.prom")],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert result.stderr == (f"parallelism-exporter: --textfile: {mount / 'x.prom'}: "
                                 f"cannot write in {mount}: Read-only file system\n")
        assert time.monotonic() - started < 20
    finally:
        subprocess.run(["umount", str(mount)])


# --- hybrid cgroup layouts (issue 27: v2 with only hugetlb, v1 controllers writable) ----------


def fake_hierarchy(root: Path, name: str, subtree_control: str = "") -> Path:
    directory = root / name
    directory.mkdir()
    (directory / "cgroup.procs").write_text("")
    (directory / "cgroup.subtree_control").write_text(subtree_control)
    return directory


@pytest.mark.parametrize("delegated, pids_kind, memory_kind", [("hugetlb", "cgroup1", "cgroup1"),
                                                                ("memory pids", "cgroup2", "cgroup2"),
                                                                ("pids", "cgroup2", "cgroup1")])
def test_each_limit_goes_where_its_controller_is_writable(tmp_path, monkeypatch, caplog, delegated, pids_kind,
                                                          memory_kind):
    """v2 kills the tree (cgroup.kill); pids.max and the memory limit go to v2 only where it
    delegates their controller, else to the v1 hierarchy of that controller; the first probe
    says in the log which it uses."""
    v2, pids, memory = (fake_hierarchy(tmp_path, "unified", delegated), fake_hierarchy(tmp_path, "pids"),
                        fake_hierarchy(tmp_path, "memory"))
    monkeypatch.setattr(containment, "_mounts", lambda: [(str(v2), "cgroup2", set()), (str(pids), "cgroup", {"pids"}),
                                                         (str(memory), "cgroup", {"memory"})])
    monkeypatch.setattr(containment, "_own_cgroup", lambda controller: "/")
    monkeypatch.setattr(containment, "_kernel_has_cgroup_kill", lambda: True)
    monkeypatch.setattr(containment, "_LAYOUT", None)
    caplog.set_level(logging.INFO, logger=containment.__name__)
    found = containment.layout()
    where = {"cgroup2": v2, "cgroup1": None}
    assert found.boundary == containment.Hierarchy(v2, "cgroup2")
    assert found.pids == containment.Hierarchy(where[pids_kind] or pids, pids_kind)
    assert found.memory == containment.Hierarchy(where[memory_kind] or memory, memory_kind)
    said = next(r.kv for r in caplog.records if r.getMessage() == "probe containment")
    assert said == {"boundary": str(found.boundary), "pids_limit": str(found.pids), "memory_limit": str(found.memory)}


def test_sigkill_of_the_daemon_leaves_no_detached_process_after_a_second(tmp_path):
    """setsid'd sleeps and a double-forked daemon are out of reach of PR_SET_PDEATHSIG: the
    sentinel kills them when the exporter's pipe ends."""
    token = uuid.uuid4().hex
    config = {"interval": "1h", "jitter": "0s", "duty_cycle": 1,
              "probe": {"workloads": ["faulty_workloads:detaches_sleepers_then_hangs"], "modes": ["sequential"],
                        "workers": [1], "unit_seconds": 0.05, "repeats": 1, "timeout": "10m"}}
    exporter = support.start_exporter(tmp_path, config, env={"PYPARALLEL_TEST_TOKEN": token})
    try:
        support.wait_for(lambda: sum(p.name() == "sleep" for p in processes_with_token(token)) >= 6, 60,
                         "the detached sleeps")
    finally:
        exporter.stop(signal.SIGKILL)
    killed = time.monotonic()
    support.wait_for(lambda: not processes_with_token(token), 5, "every probe process to die", interval=0.02)
    assert time.monotonic() - killed < 1.0


def test_a_root_workload_that_unshares_and_leaves_its_cgroup_leaves_nothing_behind():
    """Out of the cgroup v2 boundary, in a PID namespace of its own: still in the probe's v1
    cgroups and still carrying its token, so it dies with the probe, and no cgroup is left."""
    found = containment.layout()
    if os.geteuid() != 0 or shutil.which("unshare") is None or found.boundary is None:
        pytest.skip("needs root, unshare(1) and a cgroup")
    token = uuid.uuid4().hex
    spec = probe.ProbeSpec("faulty_workloads:unshares_and_leaves_its_cgroup", ("threads",), (2,), 0.05, 1, 30.0,
                           "forkserver", workload_path=(str(TESTS),), memory_limit_bytes=LIMIT)
    report = probe.run_workload(probe.Interpreter("test", sys.executable, {"PYPARALLEL_TEST_TOKEN": token}), spec)
    assert reasons(report) == {"error"}  # it left processes behind: a failed probe
    assert processes_with_token(token) == []
    for hierarchy in (found.boundary, found.pids, found.memory):
        if hierarchy is not None:
            assert not boundary_dirs_of_this_process(hierarchy.parent)
