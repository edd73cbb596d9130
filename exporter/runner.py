"""The probe runner: runs inside the interpreter under test and times the workers.

It is started as a child process by ``exporter.probe`` (so probes never compete with the
exporter's own threads for a GIL), reads one JSON request on stdin and writes JSON events,
one per line, on a private copy of stdout. Standard library only, and it must run on any
CPython >= 3.10, including free-threaded builds that have none of our dependencies.

Every worker stamps its own start and end with ``time.perf_counter`` (system-wide monotonic
on Linux), so process start-up and teardown stay outside the timed window; start-up is timed
and reported separately. Sequential and parallel windows alternate, and a step asks for more
windows until its speedup is precise enough or its budget is spent; the parent does the rest
of the arithmetic (``exporter.measurement``, which is standard library only too).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import queue
import select
import sys
import sysconfig
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

from exporter import measurement, workloads

POLL_SECONDS = 0.05
EXIT_GRACE_SECONDS = 5.0  # a worker process exits in milliseconds once its unit is done
CALIBRATION_SECONDS = 0.2
MODES = ("sequential", "threads", "processes", "asyncio", "subinterpreters")

Event = Dict[str, Any]


class WorkerFailed(Exception):
    """A worker raised (reason ``error``) or its process died (reason ``crash``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- identity -------------------------------------------------------------------------


def gil_enabled() -> bool:
    """Whether the GIL is enabled right now (always true before 3.13's free-threaded build)."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def interpreters_module() -> Any:
    """PEP 734's ``concurrent.interpreters`` (CPython 3.14+), its backport on 3.13, or None."""
    try:
        from concurrent import interpreters  # type: ignore[attr-defined]

        return interpreters
    except ImportError:
        pass
    try:
        from backports import interpreters  # type: ignore[import-not-found]  # pip install backports-interpreters

        return interpreters
    except ImportError:
        return None


def subinterpreters_unavailable_reason() -> Optional[str]:
    """None when subinterpreters can be used, else why not."""
    if interpreters_module() is None:
        return (f"concurrent.interpreters needs CPython 3.14+ (or the backports-interpreters "
                f"package on 3.13), this is {platform.python_version()}")
    return None


def identity() -> Event:
    """Who is running the probe: version, implementation, build and GIL state."""
    return {
        "event": "identity",
        "version": platform.python_version(),
        "implementation": platform.python_implementation().lower(),
        "executable": sys.executable,
        "free_threaded_build": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "gil_enabled": gil_enabled(),
        "start_methods": multiprocessing.get_all_start_methods(),
        "subinterpreters_unavailable": subinterpreters_unavailable_reason(),
    }


# --- lifetime ---------------------------------------------------------------------------


def die_with_parent(parent_pid: Optional[int] = None) -> None:
    """Have Linux SIGKILL this process when its parent dies (``PR_SET_PDEATHSIG``).

    Then nothing a probe starts outlives an exporter killed with SIGKILL. If the parent
    died before the request took effect (we were re-parented already), exit at once.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        return  # no ctypes in this build: the parent's containment still kills us
    orphaned = os.getppid() == 1 if parent_pid is None else os.getppid() != parent_pid
    if orphaned:
        os._exit(1)


def exit_with(pid: int) -> None:
    """SIGKILL this process when process ``pid`` exits, wherever we sit in the tree.

    A forkserver worker's parent is the forkserver, which lives as long as any worker
    does (each holds its "alive" pipe): watching the runner itself breaks that circle.
    """
    try:
        pidfd = os.pidfd_open(pid)  # type: ignore[attr-defined]  # Linux, Python 3.9+
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):
        return

    def watch() -> None:
        select.select([pidfd], [], [])
        os.kill(os.getpid(), 9)  # SIGKILL: a workload stuck in C code ignores anything softer

    threading.Thread(target=watch, name="exit-with-runner", daemon=True).start()


# --- one unit of work ------------------------------------------------------------------


def run_unit(operation: Callable[[], object], ops: int) -> None:
    for _ in range(ops):
        operation()


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


def describe_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]


def timed_unit(workload_name: str, ops: int, cpu_clock: Callable[[], float]) -> Tuple[float, float, float]:
    """Run one unit and return (start, end, cpu seconds), stamped here, inside the worker."""
    operation = workloads.resolve(workload_name).operation
    start, cpu_start = time.perf_counter(), cpu_clock()
    run_unit(operation, ops)
    return start, time.perf_counter(), cpu_clock() - cpu_start


# --- workers ---------------------------------------------------------------------------
# All worker kinds speak the same protocol over a queue: ("ready", i) once warmed up,
# then ("result", i, start, end, cpu) after the go signal, or ("error", i, message).


def worker_body(workload_name: str, ops: int, index: int, go: Any, results: Any,
                cpu_clock: Callable[[], float]) -> None:
    try:
        workloads.resolve(workload_name).operation()  # warm up: imports, caches
        results.put(("ready", index))
        go.wait()
        results.put(("result", index) + timed_unit(workload_name, ops, cpu_clock))
    except BaseException as exc:  # a workload may raise anything, SystemExit included
        results.put(("error", index, describe_exception(exc)))


def process_worker(workload_name: str, extra_path: List[str], ops: int, index: int,
                   go: Any, results: Any) -> None:
    """Entry point of a worker process (module level so every start method can import it)."""
    die_with_parent()
    runner = multiprocessing.parent_process()
    if runner is not None and runner.pid is not None and runner.pid != os.getppid():
        exit_with(runner.pid)
    sys.path.extend(p for p in extra_path if p not in sys.path)
    worker_body(workload_name, ops, index, go, results, time.process_time)
    # multiprocessing joins non-daemon threads before the process may exit: one the
    # workload left running would hold this worker (and the probe) until the timeout.
    left = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if left:
        results.put(("leftover", index, left))


def subinterpreter_worker(workload_name: str, extra_path: List[str], ops: int, index: int,
                          go: threading.Event, results: "queue.Queue[tuple]") -> None:
    """A host thread that drives one subinterpreter (PEP 734); the unit runs in this thread."""
    try:
        interp = interpreters_module().create()
        # Only the workload catalogue is imported there: the runner's own imports
        # (multiprocessing, ...) need not support subinterpreters.
        setup = (f"import sys; sys.path[:] = {sys.path + extra_path!r}\n"
                 f"from exporter import workloads\n"
                 f"operation = workloads.resolve({workload_name!r}).operation\n"
                 f"operation()\n")
        interp.exec(setup)
        results.put(("ready", index))
        go.wait()
        start, cpu_start = time.perf_counter(), time.thread_time()
        interp.exec(f"for _ in range({ops}): operation()")
        results.put(("result", index, start, time.perf_counter(), time.thread_time() - cpu_start))
        interp.close()
    except BaseException as exc:
        results.put(("error", index, describe_exception(exc)))


def collect(results: Any, kind: str, count: int, alive: Callable[[], Optional[str]]) -> List[tuple]:
    """Wait for ``count`` messages of ``kind``; raise WorkerFailed on an error or a death."""
    messages: List[tuple] = []
    while len(messages) < count:
        try:
            message = results.get(timeout=POLL_SECONDS)
        except queue.Empty:
            death = alive()
            if death:
                raise WorkerFailed("crash", death) from None
            continue
        if message[0] == "error":
            raise WorkerFailed("error", message[2])
        if message[0] == "leftover":  # one worker finished while the others still run
            raise left_threads(message)
        if message[0] != kind:  # the protocol is ready-then-result; anything else is a bug
            raise WorkerFailed("error", f"worker sent {message[0]!r} while the runner waited for {kind!r}")
        messages.append(message)
    return messages


def await_exit(pool: list, results: Any) -> None:
    """Wait for the worker processes to exit after their unit; raise WorkerFailed naming the
    threads a workload left running in one (the process cannot exit while they run)."""
    deadline = time.monotonic() + EXIT_GRACE_SECONDS
    while any(process.is_alive() for process in pool) and time.monotonic() < deadline:
        try:
            message = results.get(timeout=0.01)
        except queue.Empty:
            continue
        if message[0] == "leftover":
            raise left_threads(message)


def left_threads(message: tuple) -> WorkerFailed:
    """The failure for a worker's ("leftover", index, thread names) message."""
    names = ", ".join(repr(name) for name in message[2][:5])
    return WorkerFailed("error", f"the workload left {len(message[2])} thread(s) running in worker process "
                                 f"{message[1]} ({names}), which keep it from exiting; killed")


class Window:
    """Runs N warmed-up workers through one timed window, released together."""

    def __init__(self, request: Event, handshake: Callable[[], None]) -> None:
        self.workload = request["workload"]
        self.ops = request["ops_per_unit"]
        self.extra_path = request.get("extra_path", [])
        self.start_method = request.get("start_method")
        self.handshake = handshake

    def run(self, mode: str, workers: int) -> Event:
        runners = {"sequential": self.sequential, "threads": self.threads,
                   "processes": self.processes, "asyncio": self.asyncio_tasks,
                   "subinterpreters": self.subinterpreters}
        return runners[mode](workers)

    def sequential(self, workers: int) -> Event:
        workloads.resolve(self.workload).operation()
        self.handshake()
        try:
            start, end, cpu = timed_unit(self.workload, self.ops, time.thread_time)
        except BaseException as exc:
            raise WorkerFailed("error", describe_exception(exc)) from exc
        return {"starts": [start], "ends": [end], "cpu_seconds": [cpu], "startup_seconds": 0.0}

    def threads(self, workers: int) -> Event:
        go, results = threading.Event(), queue.Queue()  # type: ignore[var-annotated]
        pool = [threading.Thread(target=worker_body, daemon=True,
                                 args=(self.workload, self.ops, i, go, results, time.thread_time))
                for i in range(workers)]
        return self.release(pool, go, results, lambda: None)

    def subinterpreters(self, workers: int) -> Event:
        go, results = threading.Event(), queue.Queue()  # type: ignore[var-annotated]
        pool = [threading.Thread(target=subinterpreter_worker, daemon=True,
                                 args=(self.workload, self.extra_path, self.ops, i, go, results))
                for i in range(workers)]
        return self.release(pool, go, results, lambda: None)

    def processes(self, workers: int) -> Event:
        context = multiprocessing.get_context(self.start_method)
        go, results = context.Event(), context.Queue()
        pool = [context.Process(target=process_worker, daemon=True,
                                args=(self.workload, self.extra_path, self.ops, i, go, results))
                for i in range(workers)]

        def death() -> Optional[str]:
            for process in pool:
                if process.exitcode is not None and process.exitcode != 0:
                    return f"worker process exited with code {process.exitcode}"
            return None

        try:
            timings = self.release(pool, go, results, death)
            await_exit(pool, results)
            return timings
        except WorkerFailed:
            for process in pool:  # the others may wait for a go signal that never comes
                if process.is_alive():
                    process.kill()
            raise
        finally:
            for process in pool:
                process.join(timeout=5)
                if process.is_alive():
                    process.kill()

    def release(self, pool: list, go: Any, results: Any, death: Callable[[], Optional[str]]) -> Event:
        """Start the pool, wait until every worker is warm, then time them from one signal."""
        asked = time.perf_counter()
        for worker in pool:
            worker.start()
        collect(results, "ready", len(pool), death)
        startup = time.perf_counter() - asked
        self.handshake()
        go.set()
        done = sorted(collect(results, "result", len(pool), death), key=lambda m: m[1])
        return {"starts": [m[2] for m in done], "ends": [m[3] for m in done],
                "cpu_seconds": [m[4] for m in done], "startup_seconds": startup}

    def asyncio_tasks(self, workers: int) -> Event:
        workload = workloads.resolve(self.workload)
        ops = self.ops

        async def task() -> Tuple[float, float]:
            start = time.perf_counter()
            for _ in range(ops):
                if workload.async_operation is not None:
                    await workload.async_operation()
                else:
                    # A CPU operation cannot overlap; yield between operations so the
                    # coroutines interleave the way an event loop really schedules them.
                    workload.operation()
                    await asyncio.sleep(0)
            return start, time.perf_counter()

        async def all_tasks() -> List[Tuple[float, float]]:
            return list(await asyncio.gather(*(task() for _ in range(workers))))

        workload.operation()
        self.handshake()
        cpu_start = time.thread_time()
        try:
            stamps = asyncio.run(all_tasks())
        except BaseException as exc:
            raise WorkerFailed("error", describe_exception(exc)) from exc
        cpu = time.thread_time() - cpu_start
        # One thread ran every coroutine: its CPU time is shared out evenly between them.
        return {"starts": [s for s, _ in stamps], "ends": [e for _, e in stamps],
                "cpu_seconds": [cpu / workers] * workers, "startup_seconds": 0.0}


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
SEQUENTIAL: Step = ("sequential", 1)


class StepLoop:
    """Alternates baseline and parallel windows until every step is precise enough.

    The order is baseline, A, B, baseline, A, B, baseline, ...: every parallel window has
    a baseline window on each side, which the parent averages, so a slow drift of the
    host's speed cancels in each pair. After ``repeats`` rounds a step runs again only while
    its speedup's 95 % interval is wider than ``precision`` (relative half-width), it has had
    fewer than ``max_repeats`` rounds, and one more round fits in ``step_budget_seconds`` —
    a step is charged its own windows and the baseline windows run for it.
    """

    def __init__(self, request: Event, window: Window, channel: Channel, steps: List[Step],
                 started: Callable[[], float]) -> None:
        self.window, self.channel, self.started = window, channel, started
        self.minimum = request["repeats"]
        self.maximum = max(self.minimum, request.get("max_repeats") or self.minimum)
        self.precision = request.get("precision") or 0.0
        self.budget = request.get("step_budget_seconds") or float("inf")
        self.parallel = [step for step in steps if step != SEQUENTIAL]
        self.baseline: List[measurement.Window] = []
        self.windows: Dict[Step, List[measurement.Window]] = {step: [] for step in self.parallel}
        self.spent: Dict[Step, float] = {step: 0.0 for step in self.parallel}
        self.last_cost: Dict[Step, float] = {step: 0.0 for step in self.parallel}
        self.index = 0

    def timed(self, step: Step, repeat: int) -> Optional[measurement.Window]:
        """Run one window and send it; None (after a step_failed event) if it failed."""
        mode, workers = step
        self.channel.send({"event": "step", "mode": mode, "workers": workers})
        try:
            timings = self.window.run(mode, workers)
        except WorkerFailed as failure:
            self.channel.send({"event": "step_failed", "mode": mode, "workers": workers,
                               "reason": failure.reason, "message": str(failure)})
            return None
        # The probe's process tree: this process (every thread, the coordinating ones
        # included) since just before the handshake, plus — for worker processes, which are
        # not our children under forkserver and are never reaped before the window ends —
        # the CPU seconds each of them measured around its own unit.
        tree = time.process_time() - self.started()
        if mode == "processes":
            tree += sum(timings["cpu_seconds"])
        self.channel.send(dict(timings, event="window", mode=mode, workers=workers, repeat=repeat,
                               index=self.index, tree_cpu_seconds=tree))
        self.index += 1
        return measurement.Window(timings["starts"], timings["ends"], timings["cpu_seconds"],
                                  timings["startup_seconds"], index=self.index - 1)

    def wants_more(self, step: Step, rounds: int) -> bool:
        if rounds < self.minimum:
            return True
        if rounds >= self.maximum or self.spent[step] + self.last_cost[step] > self.budget:
            return False
        return measurement.speedup_precision(self.windows[step], self.baseline, step[1]) > self.precision

    def baseline_window(self, repeat: int) -> bool:
        window = self.timed(SEQUENTIAL, repeat)
        if window is not None:
            self.baseline.append(window)
        return window is not None

    def run(self) -> None:
        if not self.parallel:  # only the baseline was asked for
            for repeat in range(self.minimum):
                if not self.baseline_window(repeat):
                    return
            return
        if not self.baseline_window(0):
            return  # without the baseline no other step has a speedup
        for repeat in range(self.maximum):
            active = [step for step in self.parallel if self.wants_more(step, repeat)]
            if not active:
                return
            costs: Dict[Step, float] = {}
            for step in active:
                began = time.perf_counter()
                window = self.timed(step, repeat)
                if window is None:
                    self.parallel.remove(step)
                    continue
                self.windows[step].append(window)
                costs[step] = time.perf_counter() - began
            began = time.perf_counter()
            if not self.baseline_window(repeat + 1):
                return
            baseline_cost = time.perf_counter() - began
            for step, cost in costs.items():
                self.last_cost[step] = cost + baseline_cost
                self.spent[step] += cost + baseline_cost


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
    tree_started = [time.process_time()]

    def handshake() -> None:
        tree_started[0] = time.process_time()
        if request.get("handshake"):
            channel.send({"event": "ready"})
            channel.receive()  # "go": the parent has read the per-CPU counters

    window = Window(dict(request, ops_per_unit=ops), handshake)
    steps = [(step["mode"], step["workers"]) for step in request["steps"]]
    for mode, workers in steps:
        if mode == "subinterpreters" and subinterpreters_unavailable_reason():
            channel.send({"event": "unavailable", "mode": mode, "workers": workers,
                          "message": subinterpreters_unavailable_reason()})
    runnable = [(m, n) for m, n in steps if m != "subinterpreters" or not subinterpreters_unavailable_reason()]
    StepLoop(request, window, channel, runnable, lambda: tree_started[0]).run()


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
