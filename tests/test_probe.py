"""Real probes in a child interpreter: sane figures on this host, and isolated failures.

The ranges are physical, loose enough never to flake on a 2-core machine: they check that
the harness measures what it says (GIL threads on one core, processes on all), not speed.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from exporter.probe import run as probe
from exporter.model import verdicts
from exporter.host.cpus import host_cpus
from exporter.probe import quiet
from support import could_tell, processes_with_token, wait_for_quiet_host

pytestmark = pytest.mark.integration  # every test starts the runner

TESTS = Path(__file__).parent
TWO_CORES = host_cpus().usable >= 2
needs_two_cores = pytest.mark.skipif(not TWO_CORES, reason="needs 2 usable CPUs")


def this_python(**env: str) -> probe.Interpreter:
    return probe.Interpreter("test", sys.executable, env)


def run(workload: str, modes=("threads", "processes"), workers=(2,), unit=0.3, repeats=5,
        timeout=60.0, env=None, **fields) -> probe.WorkloadReport:
    # User workloads are imported only from configured directories: tests/ holds faulty_workloads.
    spec = probe.ProbeSpec(workload, modes, workers, unit, repeats, timeout, "forkserver",
                           workload_path=(str(TESTS),), **fields)
    return probe.run_workload(this_python(**(env or {})), spec)


@pytest.fixture(scope="module")
def pure_python_report() -> probe.WorkloadReport:
    wait_for_quiet_host(2)
    return run("pure_python", modes=("threads", "processes", "asyncio"))


def test_identity_of_this_interpreter(pure_python_report):
    identity = pure_python_report.identity
    assert identity.version == ".".join(map(str, sys.version_info[:3]))
    assert identity.implementation == "cpython"
    assert identity.free_threaded_build is False
    assert identity.gil_enabled is True


def test_calibration_sizes_a_unit_near_the_target(pure_python_report):
    unit = pure_python_report.ops_per_unit * pure_python_report.op_seconds
    assert 0.15 < unit < 0.6


@needs_two_cores
def test_processes_scale_for_pure_python(pure_python_report):
    step = pure_python_report.step("processes", 2)
    assert step.success, step.message
    assert step.summary.startup_seconds > 0
    if could_tell(step.summary, "pure_python processes"):
        summary = step.summary
        # On a shared VM two busy vCPUs may be SMT siblings of one physical core (the guest's
        # topology does not show it), and then any CPU-bound mode tops out well below 2x
        # (1.1-1.4x seen here; x1.20 with each worker at 64 % of one alone on a CI machine):
        # the speedup bound only says two processes beat one. Cores used is the firm check.
        assert summary.speedup > 1.1, summary
        assert summary.cores_used > 1.6, summary
        # One worker process alone is the baseline: it runs no faster per CPU-second.
        assert 0.5 < summary.cpu_rate_ratio <= 1.0 + 0.05, summary
        # The parts explain the whole: speedup = cores busy x work per CPU-second (one
        # baseline worker keeps ~one core busy), so the report's causes add up.
        assert summary.speedup == pytest.approx(summary.cores_used * summary.cpu_rate_ratio, rel=0.15), summary
        verdict = verdicts.mode_verdict(step, pure_python_report, host_cpus().usable)
        if summary.cpu_rate_ratio < verdicts.CONTENTION_RATE and not verdict.startswith("processes: scales"):
            # Processes share no interpreter: a slower rate is the hardware, and the verdict
            # must say so (contention), never "serialised" or a bare low figure.
            assert "contention" in verdict and "SMT siblings" in verdict, verdict


@needs_two_cores
def test_gil_threads_do_not_scale_and_use_one_core(pure_python_report):
    step = pure_python_report.step("threads", 2)
    assert step.success, step.message
    assert step.summary.cores_used < 1.3
    if could_tell(step.summary, "pure_python GIL threads"):
        assert step.summary.speedup < 1.15, step.summary


# --- what the runtime did, from the kernel's accounting: these hold on a loaded host too ------


@needs_two_cores
def test_the_kernel_sees_two_processes_run_at_once_and_one_gil_thread_at_a_time(pure_python_report):
    """Workers runnable at once do not need free cores: processes read ~2, GIL threads ~1 and
    one event loop 1, whatever other work ran, and the verdicts classify them so."""
    usable = host_cpus().usable
    figures = {}
    for mode in ("processes", "threads", "asyncio"):
        step = pure_python_report.step(mode, 2)
        accounting = step.summary.accounting
        assert accounting is not None, f"{mode}: no kernel accounting on Linux"
        figures[mode] = accounting
        # The host gives at most what ran: on a CPU is part of runnable.
        assert 0 < accounting.on_cpu <= accounting.runnable + 0.05, accounting
    assert figures["processes"].runnable > 1.8, figures["processes"]
    assert figures["threads"].runnable < 1.2, figures["threads"]
    assert figures["asyncio"].runnable < 1.1, figures["asyncio"]
    kinds = {mode: verdicts.parallelism(pure_python_report.step(mode, 2), pure_python_report, usable)
             for mode in figures}
    assert kinds["threads"] == kinds["asyncio"] == "serialised", kinds
    # Processes are parallel, or slow each other on SMT siblings (contention): never serialised.
    assert kinds["processes"] in ("parallel", "contention"), kinds
    # The idle-host speedup: about the runnable workers times their rate, two for processes.
    assert figures["processes"].idle_speedup > 1.5 or kinds["processes"] == "contention"
    assert figures["threads"].idle_speedup < 1.25


def test_the_idle_host_estimate_agrees_with_the_wall_clock_where_the_host_was_quiet(pure_python_report):
    for mode in ("processes", "threads"):
        summary = pure_python_report.step(mode, 2).summary
        if summary.accounting is not None and could_tell(summary, f"pure_python {mode}"):
            assert summary.accounting.idle_speedup == pytest.approx(summary.speedup, abs=0.15), summary


def test_asyncio_runs_cpu_work_on_one_core(pure_python_report):
    summary = pure_python_report.step("asyncio", 2).summary
    assert summary.speedup < 1.3
    assert summary.cores_used < 1.3


def test_sequential_baseline_has_speedup_one(pure_python_report):
    summary = pure_python_report.step("sequential", 1).summary
    assert summary.speedup == pytest.approx(1.0, abs=0.15)
    assert summary.serial_fraction is None


@needs_two_cores
def test_per_core_utilisation_shows_processes_on_every_core(pure_python_report):
    cores = pure_python_report.step("processes", 2).summary.core_utilisation
    assert len(cores) == psutil.cpu_count()
    assert all(0.0 <= c <= 1.0 for c in cores)
    assert sum(cores) > 1.5  # two busy workers (and any other load): about two whole CPUs busy


def test_every_pair_has_its_own_baseline_window_in_alternating_order(pure_python_report):
    """Independent pairs: one baseline window (one worker of the step's own pool) and one
    parallel window each; no window in two pairs; the order alternates BP, PB, ..."""
    for mode in ("threads", "processes", "asyncio"):
        step = pure_python_report.step(mode, 2)
        windows = sorted(step.windows, key=lambda w: w.index)
        pairs = sorted({w.pair for w in windows})
        assert len(pairs) >= 5, (mode, len(pairs))  # repeats=5 is the minimum
        for pair in pairs:
            roles = [w.role for w in windows if w.pair == pair]
            assert sorted(roles) == ["baseline", "parallel"], (mode, pair, roles)
            assert roles == (["baseline", "parallel"] if pair % 2 == 0 else ["parallel", "baseline"])
        assert all(len(w.starts) == 1 for w in windows if w.role == "baseline")
        assert all(len(w.starts) == 2 for w in windows if w.role == "parallel")


def test_a_whole_untimed_unit_warms_every_worker_before_the_first_timed_window(pure_python_report):
    """The first timed window is never the first thing the workers' code and caches see."""
    for step in pure_python_report.steps:
        assert step.warmup is not None, step.mode
        first_timed = min(min(w.starts) for w in step.windows)
        timed_wall = statistics.median(w.wall_seconds for w in step.windows if w.role != "parallel")
        assert step.warmup[1] <= first_timed
        # A whole unit on every worker (asyncio's coroutines share one loop: N units).
        assert step.warmup[1] - step.warmup[0] >= 0.8 * timed_wall, step.mode


def test_a_step_stops_at_its_precision_or_its_budget(pure_python_report):
    for mode in ("threads", "processes"):
        summary = pure_python_report.step(mode, 2).summary
        spec = pure_python_report.spec
        if summary.pairs < spec.max_repeats and summary.conclusive:
            # It stopped early: either precise enough, or out of budget.
            half = (summary.speedup_ci[1] - summary.speedup_ci[0]) / 2 / summary.speedup
            assert half <= spec.precision or pure_python_report.step(mode, 2).duration_seconds > spec.step_budget_seconds * 0.8


def test_a_busy_host_makes_the_wall_clock_say_cannot_tell_and_the_accounting_answer():
    """Another process keeps a core busy: processes ×2 cannot show their parallelism on the
    wall clock, and the product says so instead of a speedup near 1; the kernel's accounting
    answers instead: two processes ran at once."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        report = run("pure_python", modes=("processes",), repeats=3, step_budget_seconds=3.0)
    finally:
        burner.kill()
        burner.wait()
    summary = report.step("processes", 2).summary
    assert summary is not None and not summary.conclusive and not summary.shown
    assert "other processes used" in (summary.inconclusive_reason or "")
    assert summary.interference_cores > 0.4, summary
    assert summary.accounting is not None and summary.accounting.runnable > 1.8, summary.accounting
    verdict = verdicts.mode_verdict(report.step("processes", 2), report, 2.0)
    # Parallel, or on SMT siblings contention — never a low figure presented as the runtime's.
    assert verdict.startswith(("processes: parallel — ", "processes: contention — ")), verdict


def test_wait_quiet_waits_for_free_cores_before_a_step():
    burner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.monotonic() + 2.5\n"
                               "while time.monotonic() < end: pass"])
    try:
        time.sleep(0.3)
        report = run("pure_python", modes=("processes",), repeats=3, wait_quiet_seconds=30.0)
    finally:
        burner.kill()
        burner.wait()
    step = report.step("processes", 2)
    # It waited while the burner ran, then until the host was quiet or, where other work kept
    # it busy, to the end of its bound (a shared CI machine: a step measured then still answers).
    assert 1.0 < step.waited_seconds <= 30.0 + quiet.SAMPLE_SECONDS * 2, step.waited_seconds


def test_sleep_overlaps_in_threads_and_asyncio():
    report = run("sleep", modes=("threads", "asyncio"), unit=0.3, repeats=1)
    assert report.step("threads", 2).summary.speedup > 1.7
    assert report.step("asyncio", 2).summary.speedup > 1.7
    assert report.step("threads", 2).summary.cores_used < 0.5


def test_subinterpreters_mode_reports_itself_unavailable_before_3_14():
    if sys.version_info >= (3, 14):
        pytest.skip("this interpreter has concurrent.interpreters")
    report = run("sleep", modes=("subinterpreters",), unit=0.05, repeats=1)
    step = report.step("subinterpreters", 2)
    assert step.available is False and step.success is False and step.reason is None
    assert "3.14" in step.message
    assert report.success  # unavailable is not a failure


# --- failures are isolated ----------------------------------------------------------------


def run_faulty(function: str, monkeypatch, modes=("threads", "processes"), timeout=5.0):
    token = uuid.uuid4().hex
    report = run(f"faulty_workloads:{function}", modes=modes, unit=0.05, repeats=1,
                 timeout=timeout, env={"PYPARALLEL_TEST_TOKEN": token})
    return report, processes_with_token(token)


def test_raising_workload_fails_every_step_with_reason_error(monkeypatch):
    report, leftovers = run_faulty("raises", monkeypatch)
    assert not report.success
    assert {s.reason for s in report.steps} == {"error"}
    assert "ValueError: boom from a workload" in report.step("sequential", 1).message
    assert leftovers == []


def test_a_lone_surrogate_in_a_workloads_message_is_printed_replaced_not_a_traceback():
    """The report printed the message as is: UnicodeEncodeError and a traceback (issue 27)."""
    result = subprocess.run([sys.executable, "-m", "exporter", "probe", "--workload", "faulty_workloads:raises_a_lone_surrogate",
                             "--workload.path", str(TESTS), "--mode", "threads", "--workers", "2", "--seconds", "0.05",
                             "--repeats", "1"], capture_output=True, timeout=120)
    assert result.returncode == 1, result.stderr  # a probe failed
    assert b"Traceback" not in result.stderr
    assert "ValueError: bad \ufffd text" in result.stdout.decode("utf-8")


def test_aborting_workload_is_a_crash_with_the_signal_named(monkeypatch):
    report, leftovers = run_faulty("aborts", monkeypatch)
    assert {s.reason for s in report.steps} == {"crash"}
    assert "SIGABRT" in report.step("sequential", 1).message
    assert leftovers == []


def test_failed_step_keeps_the_runners_last_stderr_lines_as_its_log(monkeypatch):
    report, leftovers = run_faulty("complains_then_aborts", monkeypatch, modes=("threads",))
    step = report.step("sequential", 1)
    assert step.reason == "crash"
    assert "workload: about to abort" in step.log
    assert leftovers == []


def test_hanging_workload_is_killed_after_its_timeout(monkeypatch):
    report, leftovers = run_faulty("hangs", monkeypatch, timeout=2.0)
    assert {s.reason for s in report.steps} == {"timeout"}
    assert report.duration_seconds < 15
    assert leftovers == []


def test_crash_in_one_worker_process_fails_only_the_processes_step(monkeypatch):
    report, leftovers = run_faulty("aborts_in_worker_process", monkeypatch)
    assert report.step("sequential", 1).success
    assert report.step("threads", 2).success
    processes = report.step("processes", 2)
    assert processes.reason == "crash"
    assert "-6" in processes.message  # the worker's exit code: SIGABRT
    assert leftovers == []


def test_hang_in_a_worker_process_kills_the_whole_tree(monkeypatch):
    report, leftovers = run_faulty("hangs_in_worker_process", monkeypatch, timeout=2.0)
    assert report.step("threads", 2).success
    assert report.step("processes", 2).reason == "timeout"
    assert leftovers == []


def test_workload_printing_to_stdout_does_not_corrupt_the_results(monkeypatch):
    report, _ = run_faulty("prints", monkeypatch, modes=("threads",))
    assert report.success


def test_missing_interpreter_is_a_failed_probe_with_reason_interpreter():
    spec = probe.ProbeSpec("pure_python", ("threads",), (2,), 0.1, 1, 5.0)
    report = probe.run_workload(probe.Interpreter("ghost", "/nonexistent/python3"), spec)
    assert {s.reason for s in report.steps} == {"interpreter"}
    assert "/nonexistent/python3" in report.step("threads", 2).message


def test_interpreter_that_cannot_run_the_runner_is_reason_interpreter(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Python 2.7 says no' >&2\nexit 1\n")
    fake.chmod(0o755)
    spec = probe.ProbeSpec("pure_python", ("threads",), (2,), 0.1, 1, 5.0)
    report = probe.run_workload(probe.Interpreter("old", str(fake)), spec)
    assert {s.reason for s in report.steps} == {"interpreter"}
    assert "Python 2.7 says no" in report.step("sequential", 1).message


def test_fixed_unit_size_skips_calibration_for_equal_work_across_interpreters():
    spec = probe.ProbeSpec("sleep", ("threads",), (2,), 0.5, 1, 30.0, ops_per_unit=7)
    report = probe.run_workload(this_python(), spec)
    assert report.ops_per_unit == 7
    # 7 sleeps of 5 ms: far shorter than the 0.5 s a calibrated unit would take.
    assert report.step("sequential", 1).summary.wall_seconds < 0.3


def test_steps_measured_before_a_timeout_keep_their_windows():
    spec = probe.ProbeSpec("faulty_workloads:hangs_in_worker_process", ("threads", "processes"), (2,),
                           0.05, 3, 2.0, "forkserver", workload_path=(str(TESTS),))
    report = probe.run_workload(this_python(), spec)
    # Steps run one after another: sequential and threads finished, then processes hung and
    # the runner was killed; the finished steps keep their figures.
    assert report.step("processes", 2).reason == "timeout"
    assert report.step("sequential", 1).success and len(report.step("sequential", 1).windows) == 3
    threads = report.step("threads", 2)
    assert threads.success and threads.summary is not None and len(threads.summary.pair_speedups) >= 1


def test_pooled_runs_keep_every_runs_pairs_apart_and_a_failure_in_any_run_fails_the_step():
    from exporter.model.results import StepResult, WorkloadReport
    from exporter.stats.measurement import Window

    def window(role: str, pair: int, attempt: int = 0) -> Window:
        return Window([0.0, 0.0], [0.3, 0.3], [0.3, 0.3], 0.01, role=role, pair=pair, attempt=attempt)

    def report(fail: bool) -> WorkloadReport:
        spec = probe.ProbeSpec("pure_python", ("threads",), (2,))
        threads = StepResult("pure_python", "threads", 2, windows=[window("baseline", 0, 0), window("baseline", 0, 1),
                                                                   window("parallel", 0, 1)])
        if fail:
            threads.fail("crash", "boom")
        return WorkloadReport(probe.Interpreter("x", "/x"), spec, steps=[StepResult("pure_python", "sequential", 1),
                                                                         threads])

    pooled = probe.pool_runs([report(False), report(False)])
    windows = pooled.step("threads", 2).windows
    assert len(windows) == 4 and {w.attempt for w in windows} == {0}  # each run's last attempt only
    assert len({w.pair for w in windows}) == 2  # the two runs' pair 0 stay two pairs
    failed = probe.pool_runs([report(False), report(True)]).step("threads", 2)
    assert failed.reason == "crash" and failed.summary is None
