"""Execution environments for the runner: pools of warmed workers kept alive for a whole step.

Each parallel mode runs in a pool of N workers (threads, processes, subinterpreters, or the
coroutines of one event loop) started once per step, warmed up, and then released together
for every timed window — all N of them, or just one for the step's baseline window. So the
baseline runs exactly where the workers run: a unit in the runner's main thread or in the
runner process is not compared with units in worker threads or fresh processes, whose speed
per CPU-second can differ by several per cent (docs/measurement.md). Worker start-up stays
outside every timed window, as in CPython's Tools/ftscalingbench.

Standard library only: this runs inside the interpreter under test, next to exporter.runner.loop.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import platform
import queue
import select
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from exporter.runner import schedstat, workloads
from exporter.runner.gilstate import gil_enabled
from exporter.runner.modes import ASYNCIO, PROCESSES, SEQUENTIAL, SUBINTERPRETERS, THREADS

POLL_SECONDS = 0.05
JOIN_SECONDS = 5.0
# A thread waiting for the GIL wakes every switch interval (5 ms by default) to ask for it.
# On a busy host each wake-up waits for a CPU, and the kernel counts that wait as runnable
# time: two threads taking turns read as up to ~1.45 workers at once with one other process
# busy (0.2 s: 1.00-1.04 with zero, one or two: benchmarks/results-busy.md). So a timed
# window of threads runs with this switch interval while the GIL is on: the threads still
# take turns, in longer slices, and a waiter stays blocked as it would on an idle host.
GIL_WAIT_SECONDS = 0.2

Timings = Dict[str, Any]
Handshake = Callable[[], None]


class WorkerFailed(Exception):
    """A worker raised (reason ``error``) or its process died (reason ``crash``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def describe_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]


def run_unit(operation: Callable[[], object], ops: int) -> None:
    for _ in range(ops):
        operation()


# --- lifetime of worker processes -------------------------------------------------------


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


# --- the worker side ---------------------------------------------------------------------
# Every worker kind speaks one protocol over queues: ("ready", i, pid, tid) once warmed up
# (the thread the kernel accounts its work to); then for
# each command (a number of operations) ("armed", i), a wait for the shared go signal, and
# ("result", i, start, end, cpu seconds) stamped inside the worker; ("error", i, message)
# when the workload raises. None on the inbox ends the worker.


def serve_windows(index: int, inbox: Any, go: Any, results: Any, prepare: Callable[[], Callable[[int], None]],
                  cpu_clock: Callable[[], float]) -> None:
    """A worker's life: warm up, then run one unit per command, timed from the go signal."""
    try:
        run = prepare()
        results.put(("ready", index, os.getpid(), threading.get_native_id()))
        while (ops := inbox.get()) is not None:
            results.put(("armed", index))
            go.wait()
            start, cpu_start = time.perf_counter(), cpu_clock()
            run(ops)
            results.put(("result", index, start, time.perf_counter(), cpu_clock() - cpu_start))
    except BaseException as exc:  # a workload may raise anything, SystemExit included
        results.put(("error", index, describe_exception(exc)))


def warmed_operation(workload_name: str) -> Callable[[int], None]:
    """The workload's unit runner, after one untimed operation (imports, caches)."""
    operation = workloads.resolve(workload_name).operation
    operation()
    return lambda ops: run_unit(operation, ops)


def process_worker(workload_name: str, extra_path: List[str], index: int, inbox: Any, go: Any,
                   results: Any) -> None:
    """Entry point of a worker process (module level so every start method can import it)."""
    die_with_parent()
    runner = multiprocessing.parent_process()
    if runner is not None and runner.pid is not None and runner.pid != os.getppid():
        exit_with(runner.pid)
    sys.path.extend(p for p in extra_path if p not in sys.path)
    serve_windows(index, inbox, go, results, lambda: warmed_operation(workload_name), time.process_time)
    # multiprocessing joins non-daemon threads before the process may exit: one the workload
    # left running would hold this worker (and the probe) until the timeout. Name them.
    left = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if left:
        results.put(("leftover", index, left))


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


def subinterpreter_operation(workload_name: str, extra_path: List[str], created: List[Any]) -> Callable[[int], None]:
    """A new subinterpreter (PEP 734) with the workload warmed up in it; its unit runs there."""
    interp = interpreters_module().create()
    created.append(interp)
    # Only the workload catalogue is imported there: the runner's own imports
    # (multiprocessing, ...) need not support subinterpreters.
    interp.exec(f"import sys; sys.path[:] = {sys.path + extra_path!r}\n"
                f"from exporter.runner import workloads\n"
                f"operation = workloads.resolve({workload_name!r}).operation\n"
                f"operation()\n")
    return lambda ops: interp.exec(f"for _ in range({ops}): operation()")


# --- the runner side ---------------------------------------------------------------------


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
        if message[0] != kind:  # the protocol is ready-armed-result; anything else is a bug
            raise WorkerFailed("error", f"worker sent {message[0]!r} while the runner waited for {kind!r}")
        messages.append(message)
    return messages


class Pool:
    """N workers of one mode, started and warmed once, released together for each window."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.inboxes: List[Any] = []
        self.go: Any = None
        self.results: Any = None
        self.members: List[Any] = []
        self.threads: List[schedstat.Thread] = []  # each worker's (pid, tid), by index
        self.startup_seconds = 0.0

    def spawn(self) -> None:
        """Create the queues, the go signal and the (not yet started) workers."""
        raise NotImplementedError

    def death(self) -> Optional[str]:
        """Why a worker is gone, if one died without saying so (a crashed process)."""
        return None

    def start(self) -> None:
        asked = time.perf_counter()
        self.spawn()
        for member in self.members:
            member.start()
        ready = sorted(collect(self.results, "ready", self.workers, self.death), key=lambda m: m[1])
        self.threads = [(m[2], m[3]) for m in ready]
        self.startup_seconds = time.perf_counter() - asked

    def window(self, indexes: Sequence[int], ops: int, handshake: Handshake) -> Timings:
        """Time one unit on each worker in ``indexes``, all released by one signal.

        The kernel's accounting of the released workers is read just before the signal and
        again as soon as the first of them reports its end: over that span every worker had
        its unit to run, so the workers runnable at once are what the runtime allowed
        (exporter/runner/schedstat.py), not a tail where only the slowest still works.
        """
        self.go.clear()  # safe: every worker of the last window passed its wait already
        for index in indexes:
            self.inboxes[index].put(ops)
        collect(self.results, "armed", len(indexes), self.death)
        handshake()
        threads = [self.threads[i] for i in indexes]
        before, released = schedstat.read_all(threads), time.perf_counter()
        self.go.set()
        first = collect(self.results, "result", 1, self.death)
        after, first_end = schedstat.read_all(threads), time.perf_counter()
        rest = collect(self.results, "result", len(indexes) - 1, self.death)
        done = sorted(first + rest, key=lambda m: m[1])
        concurrency = schedstat.between(before, after, first_end - released) if before and after else None
        return {"starts": [m[2] for m in done], "ends": [m[3] for m in done],
                "cpu_seconds": [m[4] for m in done], "startup_seconds": self.startup_seconds,
                "concurrency": concurrency.to_json() if concurrency else None}

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for member in self.members:
            member.join(timeout=JOIN_SECONDS)


class ThreadPool(Pool):
    """Worker threads of the runner process (the threads mode, and the sequential unit)."""

    def __init__(self, workers: int, workload: str) -> None:
        super().__init__(workers)
        self.workload = workload

    def spawn(self) -> None:
        self.go, self.results = threading.Event(), queue.Queue()
        self.inboxes = [queue.Queue() for _ in range(self.workers)]
        self.members = [threading.Thread(target=serve_windows, daemon=True, name=f"probe-worker-{i}",
                                         args=(i, self.inboxes[i], self.go, self.results, self.prepare,
                                               time.thread_time))
                        for i in range(self.workers)]

    def prepare(self) -> Callable[[int], None]:
        return warmed_operation(self.workload)

    def window(self, indexes: Sequence[int], ops: int, handshake: Handshake) -> Timings:
        """With the GIL on, a window runs with the switch interval at ``GIL_WAIT_SECONDS``."""
        if not gil_enabled():
            return super().window(indexes, ops, handshake)
        previous = sys.getswitchinterval()
        sys.setswitchinterval(GIL_WAIT_SECONDS)
        try:
            return super().window(indexes, ops, handshake)
        finally:
            sys.setswitchinterval(previous)


class SubinterpreterPool(ThreadPool):
    """Host threads that each drive one subinterpreter (PEP 734), kept for the whole step."""

    def __init__(self, workers: int, workload: str, extra_path: List[str]) -> None:
        super().__init__(workers, workload)
        self.extra_path = extra_path
        self.interpreters: List[Any] = []

    def prepare(self) -> Callable[[int], None]:
        return subinterpreter_operation(self.workload, self.extra_path, self.interpreters)

    def close(self) -> None:
        super().close()
        for interp in self.interpreters:
            try:
                interp.close()
            except Exception:  # a subinterpreter still running (a stuck workload) stays to os._exit
                pass


class ProcessPool(Pool):
    """Worker processes started with the configured multiprocessing start method."""

    def __init__(self, workers: int, workload: str, extra_path: List[str], start_method: Optional[str]) -> None:
        super().__init__(workers)
        self.workload, self.extra_path = workload, extra_path
        self.context: Any = multiprocessing.get_context(start_method)

    def spawn(self) -> None:
        self.go, self.results = self.context.Event(), self.context.Queue()
        self.inboxes = [self.context.Queue() for _ in range(self.workers)]
        self.members = [self.context.Process(target=process_worker, daemon=True,
                                             args=(self.workload, self.extra_path, i, self.inboxes[i], self.go,
                                                   self.results))
                        for i in range(self.workers)]

    def death(self) -> Optional[str]:
        for process in self.members:
            if process.exitcode is not None and process.exitcode != 0:
                return f"worker process exited with code {process.exitcode}"
        return None

    def close(self) -> None:
        """Stop the workers; raise WorkerFailed (unless another failure is on its way) when a
        workload left threads running that keep a worker process from exiting."""
        alive = [p for p in self.members if p.is_alive()]
        left: Optional[tuple] = None
        try:
            for inbox in self.inboxes:
                inbox.put(None)
            left = self.await_exit()
        finally:
            for process in alive:
                if process.is_alive():
                    process.kill()
                    process.join(timeout=JOIN_SECONDS)
        if left is not None and sys.exc_info()[1] is None:
            names = ", ".join(repr(name) for name in left[2][:5])
            raise WorkerFailed("error", f"the workload left {len(left[2])} thread(s) running in worker process "
                                        f"{left[1]} ({names}), which keep it from exiting; killed")

    def await_exit(self) -> Optional[tuple]:
        """Wait for the workers to exit; a ("leftover", index, thread names) message one sent
        instead, as soon as it comes."""
        deadline = time.monotonic() + JOIN_SECONDS
        while self.results is not None and any(p.is_alive() for p in self.members) and time.monotonic() < deadline:
            try:
                message = self.results.get(timeout=0.01)
            except queue.Empty:
                continue
            if message[0] == "leftover":
                return message
        return None


class EventLoopPool:
    """N coroutines of one event loop in the runner's thread: asyncio's concurrency.

    There is nothing to start; a window runs ``len(indexes)`` tasks, so the baseline is one
    task in the same loop machinery, and the loop thread's CPU time is shared out evenly.
    """

    def __init__(self, workers: int, workload: str) -> None:
        self.workers = workers
        self.workload = workloads.resolve(workload)
        self.startup_seconds = 0.0

    def start(self) -> None:
        self.workload.operation()

    def window(self, indexes: Sequence[int], ops: int, handshake: Handshake) -> Timings:
        workload = self.workload

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
            return list(await asyncio.gather(*(task() for _ in indexes)))

        handshake()
        loop_thread = [(os.getpid(), threading.get_native_id())]  # every task runs in this one thread
        before, cpu_start, released = schedstat.read_all(loop_thread), time.thread_time(), time.perf_counter()
        try:
            stamps = asyncio.run(all_tasks())
        except BaseException as exc:
            raise WorkerFailed("error", describe_exception(exc)) from exc
        after, cpu, ended = schedstat.read_all(loop_thread), time.thread_time() - cpu_start, time.perf_counter()
        count = len(indexes)
        concurrency = schedstat.between(before, after, ended - released) if before and after else None
        return {"starts": [s for s, _ in stamps], "ends": [e for _, e in stamps],
                "cpu_seconds": [cpu / count] * count, "startup_seconds": 0.0,
                "concurrency": concurrency.to_json() if concurrency else None}

    def close(self) -> None:
        pass


AnyPool = Any  # Pool or EventLoopPool: start(), window(), close(), startup_seconds


POOLS: Dict[str, Callable[..., AnyPool]] = {
    SEQUENTIAL: lambda workers, workload, extra_path, start_method: ThreadPool(workers, workload),
    THREADS: lambda workers, workload, extra_path, start_method: ThreadPool(workers, workload),
    PROCESSES: lambda workers, workload, extra_path, start_method: ProcessPool(workers, workload, extra_path,
                                                                              start_method),
    ASYNCIO: lambda workers, workload, extra_path, start_method: EventLoopPool(workers, workload),
    SUBINTERPRETERS: lambda workers, workload, extra_path, start_method: SubinterpreterPool(workers, workload,
                                                                                           extra_path),
}


def make_pool(mode: str, workers: int, workload: str, extra_path: List[str], start_method: Optional[str]) -> AnyPool:
    """The execution environment of a mode (exporter.runner.modes names them); ``sequential`` is a
    pool of one worker thread."""
    if mode not in POOLS:
        raise ValueError(f"unknown mode {mode!r}")
    return POOLS[mode](workers, workload, extra_path, start_method)
