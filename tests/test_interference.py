"""Real probes: the step loop's alternation and stopping rules, interference from a busy
neighbour this test starts, GIL verdicts from CPU time, and probe.nice on the whole tree.

Bounds are loose and physical (this 2-core VM is shared with other work): they check that
the figures mean what they say, not how fast anything is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from exporter.probe import run as probe
from exporter.model import verdicts
from exporter.host.cpus import host_cpus
from support import could_tell, wait_for_quiet_host

pytestmark = pytest.mark.integration

TESTS = Path(__file__).parent
HOST = host_cpus()
needs_two_cores = pytest.mark.skipif(HOST.usable < 2, reason="needs 2 usable CPUs")


def run(workload: str, modes=("threads",), unit=0.1, repeats=2, env=None, **spec_fields) -> probe.WorkloadReport:
    spec_fields.setdefault("workload_path", (str(TESTS),))  # user workloads come only from here
    spec = probe.ProbeSpec(workload, modes, (2,), unit, repeats, 60.0, "forkserver", **spec_fields)
    return probe.run_workload(probe.Interpreter("test", sys.executable, env or {}), spec)


def parallel_windows(result: probe.WorkloadReport, mode: str) -> list:
    return [w for w in result.step(mode, 2).windows if w.role == "parallel"]


def test_each_step_measures_its_own_pairs_after_its_own_baseline_windows():
    result = run("sleep", modes=("threads", "asyncio"), repeats=2, max_repeats=2)
    assert len(result.step("sequential", 1).windows) == 2  # repeats windows, one unit alone each
    for mode in ("threads", "asyncio"):
        windows = result.step(mode, 2).windows
        assert sorted((w.pair, w.role) for w in windows) == [(0, "baseline"), (0, "parallel"),
                                                              (1, "baseline"), (1, "parallel")]
        assert len(result.step(mode, 2).summary.pair_speedups) == 2


def test_a_step_stops_at_the_minimum_once_precise_enough():
    # Sleeping threads overlap the same way every time: two pairs give an interval well
    # within ±100 % (a sleep's wake-up jitter is milliseconds against 0.3 s units).
    result = run("sleep", unit=0.3, repeats=2, precision=1.0, max_repeats=10)
    assert len(parallel_windows(result, "threads")) == 2
    summary = result.step("threads", 2).summary
    low, high = summary.speedup_ci
    assert low <= summary.speedup <= high and (high - low) / 2 / summary.speedup <= 1.0


def test_a_step_runs_up_to_max_repeats_while_the_precision_is_not_reached():
    result = run("sleep", repeats=2, precision=1e-9, max_repeats=4, step_budget_seconds=30.0)
    assert len(parallel_windows(result, "threads")) == 4
    assert len(result.step("sequential", 1).windows) == 2


def test_a_step_stops_when_its_budget_is_spent():
    # One pair costs ~0.2 s (a 0.1 s parallel window and a 0.1 s baseline window): after the
    # two pairs the minimum asks for, the 0.5 s budget leaves room for one or two more.
    result = run("sleep", repeats=2, precision=1e-9, max_repeats=50, step_budget_seconds=0.5)
    assert 2 <= len(parallel_windows(result, "threads")) <= 4


@needs_two_cores
def test_gil_threads_use_one_core_and_get_the_no_speedup_verdict():
    wait_for_quiet_host(2)
    result = run("pure_python", modes=("threads",), unit=0.3, repeats=3)
    step = result.step("threads", 2)
    assert step.summary.cores_used < 1.3
    assert 0.7 < step.summary.cpu_rate_ratio < 1.3  # one core at one worker's speed
    verdict = verdicts.mode_verdict(step, result, HOST.usable)
    if could_tell(step.summary, "GIL threads"):
        assert verdict.startswith("threads: no parallel speedup") and "GIL enabled" in verdict, verdict


def test_quiet_windows_report_interference_and_steal_in_range():
    result = run("pure_python", modes=("processes",), unit=0.3, repeats=2)
    for step in result.steps:
        assert 0.0 <= step.summary.interference_cores <= HOST.logical
        assert step.summary.steal_ratio is None or 0.0 <= step.summary.steal_ratio <= 1.0


@needs_two_cores
def test_a_busy_neighbour_raises_the_interference_by_about_its_own_cpu():
    # The neighbour spins on the first CPU, the probe (which inherits our affinity) on the
    # second, so the two never compete and the neighbour's CPU use stays steady all along.
    first, second, *_ = sorted(os.sched_getaffinity(0))
    ours = os.sched_getaffinity(0)
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(neighbour.pid, {first})
        os.sched_setaffinity(0, {second})
        time.sleep(0.2)
        watched = psutil.Process(neighbour.pid)
        cpu_before, started = sum(watched.cpu_times()[:2]), time.monotonic()
        result = run("pure_python", modes=("threads",), unit=0.3, repeats=3)
        neighbour_cores = (sum(watched.cpu_times()[:2]) - cpu_before) / (time.monotonic() - started)
    finally:
        os.sched_setaffinity(0, ours)
        neighbour.kill()
        neighbour.wait()
    interference = sorted(w.interference_cores for s in result.steps for w in s.windows)
    measured = interference[len(interference) // 2]
    # The neighbour is part of the other load: the figure holds about all of it (tick
    # accounting and the probe's own untimed moments give a few hundredths either way), and
    # no more than the whole host. Other work on this VM can only add to it.
    assert neighbour_cores > 0.1  # it ran (other work on this VM may take part of its CPU)
    assert measured >= neighbour_cores - 0.15
    assert measured <= HOST.logical


@pytest.mark.parametrize("nice, expected_nice, expected_policy", [(7, 7, os.SCHED_OTHER), ("idle", 0, os.SCHED_IDLE)])
def test_probe_nice_applies_to_the_whole_process_tree(tmp_path, nice, expected_nice, expected_policy):
    expected_nice = max(expected_nice, os.getpriority(os.PRIO_PROCESS, 0))  # a priority is never raised
    record = tmp_path / "priority.txt"
    result = run("priority_workloads:record_priority", modes=("threads", "processes"), unit=0.05,
                 repeats=1, max_repeats=1, nice=nice, env={"PYPARALLEL_TEST_PRIORITY_FILE": str(record)})
    assert result.success, [s.message for s in result.steps]
    lines = [line.split() for line in record.read_text().splitlines()]
    assert len({thread for _, _, thread in lines}) >= 5  # runner, 2 threads, 2 worker processes
    assert {(int(n), int(p)) for n, p, _ in lines} == {(expected_nice, expected_policy)}


def test_interval_interference_rate_and_nice_reach_prometheus(live_stack):
    """A real Prometheus scraping the real exporter holds the measurement series."""
    processes = 'interpreter="cpython-system",workload="pure_python",mode="processes",workers="2"'
    for name in ("interference_cores", "cpu_rate_ratio", "speedup_unsteady", "steal_ratio"):
        assert live_stack.query(f"pyparallel_{name}{{{processes}}}"), name
    assert [s["metric"]["interpreter"] for s in live_stack.query("pyparallel_probe_nice == 0")]
    unsteady = float(live_stack.query(f"pyparallel_speedup_unsteady{{{processes}}}")[0]["value"][1])
    conclusive = float(live_stack.query(f"pyparallel_step_conclusive{{{processes}}}")[0]["value"][1])
    assert live_stack.query(f"pyparallel_speedup_pairs{{{processes}}}")
    if unsteady == 0 and conclusive == 1:  # a steady step shows its interval around its figure
        inside = live_stack.query(f"(pyparallel_speedup_lower_ratio{{{processes}}} <= bool pyparallel_speedup_ratio) "
                                  f"* (pyparallel_speedup_upper_ratio{{{processes}}} >= bool pyparallel_speedup_ratio)")
        assert inside and float(inside[0]["value"][1]) == 1
    else:
        assert not live_stack.query(f"pyparallel_speedup_ratio{{{processes}}}")
