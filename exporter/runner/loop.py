"""The probe runner: runs inside the interpreter under test and times the workers.

It is started as a child process by ``exporter.probe.run`` (so probes never compete with the
exporter's own threads for a GIL), reads one JSON request on stdin and writes JSON events,
one per line, on a private copy of stdout. Standard library only, and it must run on any
CPython >= 3.10, including free-threaded builds that have none of our dependencies.

Every worker stamps its own start and end with ``time.perf_counter`` (system-wide monotonic
on Linux), so start-up and teardown stay outside the timed windows. Each step runs in its own
pool of warmed workers (``exporter.runner.pools``): an untimed warm-up, then independent pairs of a
one-worker baseline window and an all-workers window, in alternating order, until the
speedup is precise enough or the step's budget is spent. A step whose figure is physically
implausible, or whose baseline did less work per CPU-second than its workers, is measured
again from scratch once. The parent does the rest of the arithmetic (``exporter.stats.measurement``,
standard library only too).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import sys
import sysconfig
import time
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

from exporter.stats import measurement
from exporter.runner import workloads
from exporter.runner.gilstate import gil_enabled
from exporter.runner.modes import PROCESSES, SEQUENTIAL as SEQUENTIAL_MODE, SUBINTERPRETERS, max_cores
from exporter.runner.pools import (AnyPool, WorkerFailed, describe_exception, die_with_parent, make_pool,
                            subinterpreters_unavailable_reason)

__all__ = ["main", "die_with_parent"]

CALIBRATION_SECONDS = 0.2
MAX_ATTEMPTS = 2  # a step found implausible is measured once more from scratch

Event = Dict[str, Any]


# --- identity -------------------------------------------------------------------------


def identity() -> Event:
    """Who is running the probe: version, implementation, build and GIL state."""
    return {
        "event": "identity",
        "version": platform.python_version(),
        "implementation": platform.python_implementation().lower(),
        "executable": sys.executable,
        "free_threaded_build": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "gil_enabled": gil_enabled(),
        # PYTHON_GIL=1 asks a free-threaded build for the GIL on purpose (a control run).
        "gil_requested": os.environ.get("PYTHON_GIL") == "1",
        "start_methods": multiprocessing.get_all_start_methods(),
        "subinterpreters_unavailable": subinterpreters_unavailable_reason(),
    }


# --- one unit of work ------------------------------------------------------------------


def calibrate(operation: Callable[[], object], unit_seconds: float) -> Tuple[int, float]:
    """Return (operations per unit, seconds per operation) for a unit of ``unit_seconds``."""
    operation()  # warm caches and lazy imports before timing
    count, started = 0, time.perf_counter()
    while True:
        operation()
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= CALIBRATION_SECONDS and count >= 3:
            break
    op_seconds = elapsed / count
    return max(1, round(unit_seconds / op_seconds)), op_seconds


# --- protocol --------------------------------------------------------------------------


class Channel:
    """The JSON-lines conversation with the parent, on private copies of stdin/stdout."""

    def __init__(self) -> None:
        # Keep the real stdout for the protocol and point fd 1 at stderr, so a workload
        # that prints cannot corrupt the event stream.
        self.out: TextIO = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        self.inp: TextIO = sys.stdin

    def send(self, event: Event) -> None:
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()

    def receive(self) -> Event:
        line = self.inp.readline()
        if not line:
            raise SystemExit("parent closed the channel")
        return json.loads(line)


def apply_priority(nice: Any) -> None:
    """Lower this process's priority (a nice value, or "idle" for SCHED_IDLE) before any
    worker exists: threads, forkserver and worker processes all inherit it."""
    if nice == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined]
    elif nice:
        # Never raise the priority: an exporter already running niced stays as nice.
        os.setpriority(os.PRIO_PROCESS, 0, max(int(nice), os.getpriority(os.PRIO_PROCESS, 0)))


Step = Tuple[str, int]
SEQUENTIAL: Step = (SEQUENTIAL_MODE, 1)


class Handshake:
    """Tells the parent before each timed window (it reads the per-CPU counters) and marks the
    probe tree's CPU clock, so the parent can take the probe's own CPU off the host's load."""

    def __init__(self, channel: Channel, enabled: bool) -> None:
        self.channel, self.enabled = channel, enabled
        self.cpu_mark = time.process_time()

    def __call__(self) -> None:
        self.cpu_mark = time.process_time()
        if self.enabled:
            self.channel.send({"event": "ready"})
            self.channel.receive()  # "go": the parent has read the per-CPU counters

    def step_may_start(self) -> None:
        """Wait for the parent's word before a step (it may wait for a quieter host)."""
        if self.enabled:
            self.channel.receive()

    def window_was_clean(self) -> bool:
        """The parent's answer to a window: did other load leave it the cores it needed?"""
        return bool(self.channel.receive().get("clean", True)) if self.enabled else True


class StepLoop:
    """Measures every step in turn, each in its own pool, in independent pairs.

    A parallel step: start the pool and warm it with one untimed window of all its workers,
    then pairs (baseline = one worker, parallel = all workers; the order alternates BP, PB,
    ... so a linear drift cancels) — at least ``repeats``, then more while the speedup's 95 %
    interval is wider than ``precision`` or the figure is implausible, up to ``max_repeats``
    clean pairs and ``step_budget_seconds`` (a pair the host's other load spoiled is replaced).
    An implausible result (above the cores CPU-bound work can use, or a baseline slower per
    CPU-second than the workers) is measured once more from scratch with a fresh pool; if it
    stays, the parent withholds it.
    """

    def __init__(self, request: Event, channel: Channel, handshake: Handshake) -> None:
        self.request, self.channel, self.handshake = request, channel, handshake
        self.workload, self.ops = request["workload"], request["ops_per_unit"]
        self.minimum = request["repeats"]
        self.maximum = max(self.minimum, request.get("max_repeats") or self.minimum)
        self.precision = request.get("precision") or 0.0
        self.budget = request.get("step_budget_seconds") or float("inf")
        self.usable = request.get("usable_cpus")
        self.index = 0

    def pool(self, step: Step) -> AnyPool:
        mode, workers = step
        pool = make_pool(mode, workers, self.workload, self.request.get("extra_path", []),
                         self.request.get("start_method"))
        pool.start()
        return pool

    def timed(self, pool: AnyPool, step: Step, members: List[int], role: str, pair: int,
              attempt: int) -> measurement.Window:
        """Run one timed window, send it, and learn from the parent whether the host left it
        the cores it needed (the parent reads the kernel's counters around it)."""
        mode, workers = step
        timings = pool.window(members, self.ops, self.handshake)
        # The probe's process tree: this process (every thread, the coordinating ones
        # included) since the handshake, plus — for worker processes, which are not our
        # children under forkserver — the CPU seconds each of them measured around its unit.
        tree = time.process_time() - self.handshake.cpu_mark
        if mode == PROCESSES:
            tree += sum(timings["cpu_seconds"])
        self.channel.send(dict(timings, event="window", mode=mode, workers=workers, role=role, pair=pair,
                               attempt=attempt, index=self.index, tree_cpu_seconds=tree))
        self.index += 1
        clean = self.handshake.window_was_clean()
        concurrency = timings.get("concurrency") or {}
        return measurement.Window(timings["starts"], timings["ends"], timings["cpu_seconds"],
                                  timings["startup_seconds"], role=role, pair=pair, attempt=attempt, clean=clean,
                                  runnable_workers=concurrency.get("runnable_workers"),
                                  on_cpu_workers=concurrency.get("on_cpu_workers"))

    def warm_up(self, pool: AnyPool, step: Step) -> None:
        """Untimed: every worker runs a whole unit together first, so no timed window is the
        first thing the code, caches, allocator and CPU frequency see in this environment."""
        mode, workers = step
        timings = pool.window(list(range(workers)), self.ops, lambda: None)
        self.channel.send({"event": "warmup", "mode": mode, "workers": workers,
                           "starts": timings["starts"], "ends": timings["ends"]})

    def sequential(self) -> None:
        pool = self.pool(SEQUENTIAL)
        try:
            self.warm_up(pool, SEQUENTIAL)
            for repeat in range(self.minimum):
                self.timed(pool, SEQUENTIAL, [0], measurement.SEQUENTIAL_ROLE, repeat, 0)
        finally:
            pool.close()

    def pairs(self, pool: AnyPool, step: Step, attempt: int) -> Optional[measurement.Assessment]:
        """Measure pairs until the stopping rule says enough; the last assessment of the clean
        pairs (None: none was clean — the host never left the step the cores it needed)."""
        workers = step[1]
        everyone = list(range(workers))
        clean: List[measurement.Pair] = []
        measured: List[measurement.Pair] = []  # clean or not: the kernel's accounting needs no free cores
        verdict: Optional[measurement.Assessment] = None
        spent, k = 0.0, 0
        while True:
            began = time.perf_counter()
            alone = [k % workers]  # each worker takes its turn as the baseline
            if k % 2 == 0:
                baseline = self.timed(pool, step, alone, measurement.BASELINE, k, attempt)
                parallel = self.timed(pool, step, everyone, measurement.PARALLEL, k, attempt)
            else:
                parallel = self.timed(pool, step, everyone, measurement.PARALLEL, k, attempt)
                baseline = self.timed(pool, step, alone, measurement.BASELINE, k, attempt)
            k += 1
            measured.append(measurement.Pair(baseline, parallel))
            if baseline.clean and parallel.clean:
                clean.append(measured[-1])
                verdict = measurement.assess(clean, workers, self.usable)
            last_cost = time.perf_counter() - began
            spent += last_cost
            if not self.wants_more(verdict, len(clean), measured, spent, last_cost, step):
                return verdict

    def accounted_precisely(self, pairs: List[measurement.Pair], step: Step) -> bool:
        """The kernel's accounting of these pairs gives the idle-host speedup to the precision."""
        mode, workers = step
        limit = max_cores(mode)
        cores = min(float(workers), self.usable or float(workers), limit if limit is not None else float(workers))
        accounting = measurement.account(pairs, workers, cores)
        if accounting is None or accounting.idle_speedup is None:
            return False
        return measurement.relative_half_width(accounting.idle_speedup, accounting.idle_speedup_ci) <= self.precision

    def wants_more(self, verdict: Optional[measurement.Assessment], clean: int, pairs: List[measurement.Pair],
                   spent: float, last_cost: float, step: Step) -> bool:
        measured = len(pairs)
        if measured < self.minimum:
            return True  # the configured minimum always runs
        # Spoiled pairs (other load took the cores) are replaced, within the budget and up
        # to twice the most pairs, so a burst of other load costs time, not the figure —
        # unless the kernel's accounting of every pair already gives the step's idle-host
        # speedup precisely: then a busy host costs the fewest pairs, not the whole budget.
        if measured >= 2 * self.maximum or spent + last_cost > self.budget:
            return False
        if clean < self.minimum:
            return not self.accounted_precisely(pairs, step)
        if verdict is None or clean >= self.maximum or verdict.clearly_implausible():
            return False
        return verdict.half_width > self.precision or verdict.trouble() is not None

    def parallel(self, step: Step) -> None:
        mode, workers = step
        for attempt in range(MAX_ATTEMPTS):
            pool = self.pool(step)
            try:
                self.warm_up(pool, step)
                verdict = self.pairs(pool, step, attempt)
            finally:
                pool.close()
            trouble = verdict.trouble() if verdict is not None and verdict.pairs >= self.minimum else None
            if trouble is None or attempt + 1 == MAX_ATTEMPTS:
                return
            self.channel.send({"event": "remeasure", "mode": mode, "workers": workers, "reason": trouble})

    def run_step(self, step: Step) -> bool:
        """Measure one step; False (after a step_failed event) if it failed."""
        mode, workers = step
        self.channel.send({"event": "step", "mode": mode, "workers": workers})
        self.handshake.step_may_start()
        try:
            self.sequential() if step == SEQUENTIAL else self.parallel(step)
        except WorkerFailed as failure:
            self.channel.send({"event": "step_failed", "mode": mode, "workers": workers,
                               "reason": failure.reason, "message": str(failure)})
            return False
        return True

    def run(self, steps: List[Step]) -> None:
        if not self.run_step(SEQUENTIAL):
            return  # without a working workload no other step can do better
        for step in steps:
            if step != SEQUENTIAL:
                self.run_step(step)


def run_request(request: Event, channel: Channel) -> None:
    """Answer one probe request: identity, calibration, then every (mode, workers) step."""
    try:
        workload = workloads.resolve(request["workload"])
    except BaseException as exc:
        channel.send(identity())
        channel.send({"event": "failed", "reason": "error", "message": describe_exception(exc)})
        return
    channel.send(identity())  # after the import: an extension may have re-enabled the GIL
    try:
        apply_priority(request.get("nice"))
    except (OSError, ValueError) as exc:
        channel.send({"event": "failed", "reason": "error",
                      "message": f"cannot apply probe.nice {request.get('nice')!r}: {describe_exception(exc)}"})
        return
    ops, op_seconds = request.get("ops_per_unit") or 0, 0.0
    if not ops:
        try:
            ops, op_seconds = calibrate(workload.operation, request["unit_seconds"])
        except BaseException as exc:
            channel.send({"event": "failed", "reason": "error", "message": describe_exception(exc)})
            return
    channel.send({"event": "calibrated", "ops_per_unit": ops, "op_seconds": op_seconds})
    steps = [(step["mode"], step["workers"]) for step in request["steps"]]
    unavailable = subinterpreters_unavailable_reason()
    for mode, workers in steps:
        if mode == SUBINTERPRETERS and unavailable:
            channel.send({"event": "unavailable", "mode": mode, "workers": workers, "message": unavailable})
    runnable = [(m, n) for m, n in steps if m != SUBINTERPRETERS or not unavailable]
    handshake = Handshake(channel, bool(request.get("handshake")))
    StepLoop(dict(request, ops_per_unit=ops), channel, handshake).run(runnable)


def import_check(module: str) -> Event:
    """Import one module and say whether the GIL is enabled afterwards."""
    before = gil_enabled()
    try:
        __import__(module)
    except BaseException as exc:
        return {"event": "import", "module": module, "error": describe_exception(exc)}
    return {"event": "import", "module": module, "gil_enabled_before": before,
            "gil_enabled": gil_enabled()}


def main() -> None:
    channel = Channel()
    request = channel.receive()
    sys.path.extend(p for p in request.get("extra_path", []) if p not in sys.path)
    if "import_module" in request:
        channel.send(identity())
        channel.send(import_check(request["import_module"]))
    else:
        run_request(request, channel)
    channel.send({"event": "done"})
    # Skip interpreter finalisation: the results are out, and a crash while tearing down
    # subinterpreters or a workload's modules must not turn a finished probe into a failure.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
