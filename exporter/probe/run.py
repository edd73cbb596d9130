"""Run one workload's probe in a child interpreter and turn its events into results.

The parent side of ``exporter.runner.loop``: it sends the request, reads the kernel's per-CPU
counters at the edges of every timed window, enforces the inactivity timeout and the
probe's wall-clock deadline, and reports a workload that raises, crashes its interpreter,
hangs, floods its output, breaks the protocol or leaves processes behind as failed steps
with a reason — never an exception. Starting, capturing and killing the runner's process
tree is ``exporter.probe.child``'s job.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import re
import statistics
import time
from typing import Callable, Iterator, Mapping, Optional, Sequence

from exporter.stats import measurement
from exporter.runner import modes, workloads
from exporter.runner.modes import SEQUENTIAL
from exporter.probe.child import PACKAGE_PARENT, ProtocolError, RunnerProcess, kill_all_runners
from exporter.host.cpus import host_cpus
from exporter.probe.memorylimit import MemoryLimitHit
from exporter.probe.quiet import cpu_counters, wait_for_free_cores
from exporter.logs import log_kv
from exporter.model.results import (FAILURE_REASONS, Identity, ImportCheck, Interpreter, ProbeSpec, StepResult,
                                    WorkloadReport)

log = logging.getLogger(__name__)

__all__ = ["run_workload", "run_pooled", "pool_runs", "check_import", "kill_all_runners", "PACKAGE_PARENT", "Interpreter",
           "ProbeSpec", "WorkloadReport"]

Progress = Callable[[str], None]
# After the runner exits, its multiprocessing helpers (forkserver, resource tracker) see
# end-of-file and exit too; what is still alive after this is the workload's.
LEFTOVER_GRACE_SECONDS = 2.0


class DeadlineExceeded(Exception):
    """The probe ran past its wall-clock deadline."""


def request_for(spec: ProbeSpec, usable_cpus: float) -> dict:
    return {"workload": spec.workload, "unit_seconds": spec.unit_seconds,
            "repeats": spec.repeats, "start_method": spec.start_method, "handshake": True,
            "precision": spec.precision, "max_repeats": spec.max_repeats,
            "step_budget_seconds": spec.step_budget_seconds, "nice": spec.nice,
            "ops_per_unit": spec.ops_per_unit, "usable_cpus": usable_cpus,
            "extra_path": list(spec.workload_path),
            "steps": [{"mode": m, "workers": n} for m, n in spec.steps()]}


# --- the conversation -------------------------------------------------------------------


class Conversation:
    """Folds a runner's events into a WorkloadReport."""

    def __init__(self, report: WorkloadReport, runner: RunnerProcess, progress: Progress,
                 usable_cpus: float = 1.0) -> None:
        self.report, self.runner, self.progress = report, runner, progress
        self.usable_cpus = usable_cpus
        self.current: Optional[StepResult] = None
        self.step_started = time.monotonic()
        self.counters_before: list[dict[str, float]] = []
        self.counters_read_at = time.monotonic()
        self.done = False  # the runner said everything it had to say

    def events(self, timeout: float, deadline: float) -> Iterator[dict]:
        """Events until ``done`` or the end of output.

        Raises queue.Empty when no event came within ``timeout``, DeadlineExceeded past
        ``deadline`` (a monotonic time) even while events keep coming, ProtocolError for
        output that is not an event.
        """
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded
            try:
                event = self.runner.next_event(min(timeout, left))
            except queue.Empty:
                if timeout >= left:
                    raise DeadlineExceeded from None
                raise
            if event is None:
                return
            if event["event"] == "done":
                self.done = True
                return
            yield event

    def handle(self, event: dict) -> None:
        """Fold one event in; a malformed one is a ProtocolError, an unknown kind is skipped."""
        try:
            self._handle(event)
        except (KeyError, TypeError, ValueError, AttributeError, StopIteration) as exc:
            raise ProtocolError(f"runner sent a malformed {event.get('event')!r} event "
                                f"({type(exc).__name__}: {str(exc)[:200]})") from None

    def _handle(self, event: dict) -> None:
        kind = event["event"]
        if kind == "identity":
            fields = {k: v for k, v in event.items() if k != "event"}
            self.report.identity = _checked_identity(Identity(**fields))
        elif kind == "calibrated":
            ops, op_seconds = event["ops_per_unit"], event["op_seconds"]
            if not isinstance(ops, int) or not isinstance(op_seconds, (int, float)):
                raise ValueError("ops_per_unit and op_seconds must be numbers")
            self.report.ops_per_unit, self.report.op_seconds = ops, op_seconds
        elif kind == "step":
            self.finish_step()
            self.current = self.report.step(event["mode"], event["workers"])
            self.wait_for_quiet(self.current)
            self.step_started = time.monotonic()
            self.progress(f"{self.report.spec.workload}: {event['mode']} ×{event['workers']}")
            self.runner.send({"go": True})
        elif kind == "warmup":
            step = self.report.step(event["mode"], event["workers"])
            starts, ends = _numbers(event["starts"], step.workers), _numbers(event["ends"], step.workers)
            step.warmup = (min(starts), max(ends))
        elif kind == "remeasure":
            step = self.report.step(event["mode"], event["workers"])
            step.remeasured_reason = _text(event["reason"])
            self.progress(f"{self.report.spec.workload}: {event['mode']} ×{event['workers']}: measuring again")
        elif kind == "ready":
            self.counters_before, self.counters_read_at = cpu_counters(), time.monotonic()
            self.runner.send({"go": True})
        elif kind == "window":
            self.add_window(event)
        elif kind == "step_failed":
            self.report.step(event["mode"], event["workers"]).fail(_reason(event["reason"]), _text(event["message"]))
        elif kind == "unavailable":
            step = self.report.step(event["mode"], event["workers"])
            step.available, step.message = False, _text(event["message"])
        elif kind == "failed":
            self.fail_unfinished(_reason(event["reason"]), with_import_hint(_text(event["message"]),
                                                                            self.report.spec.workload))
        else:
            log_kv(log, logging.DEBUG, "ignoring a runner event", event=str(kind)[:100])  # a newer runner's

    def wait_for_quiet(self, step: StepResult) -> None:
        """probe --wait-quiet: before a parallel step, wait (bounded) for enough free cores."""
        wait = self.report.spec.wait_quiet_seconds
        if wait <= 0 or step.mode == SEQUENTIAL:
            return
        self.progress(f"{self.report.spec.workload}: {step.mode} ×{step.workers}: waiting for a quiet host")
        needed = min(float(step.workers), self.usable_cpus)
        step.waited_seconds = wait_for_free_cores(self.usable_cpus, needed, wait).waited_seconds

    def add_window(self, event: dict) -> None:
        after, wall = cpu_counters(), time.monotonic() - self.counters_read_at
        step = self.report.step(event["mode"], event["workers"])
        role, pair, attempt = event.get("role", measurement.PARALLEL), event.get("pair", -1), event.get("attempt", 0)
        if role not in measurement.ROLES or not all(_is_int(v) for v in (pair, attempt)):
            raise ValueError("expected a known role and integer pair and attempt")
        count = 1 if role != measurement.PARALLEL else step.workers
        cpu_seconds = _numbers(event["cpu_seconds"], count)
        # The runner's own figure for its process tree, workers included (see StepLoop.timed).
        probe_cpu = _numbers([event.get("tree_cpu_seconds", sum(cpu_seconds))], 1)[0]
        load = measurement.host_load(self.counters_before, after, wall, probe_cpu)
        index = event.get("index", -1)
        if not _is_int(index):
            raise ValueError("expected an integer window index")
        runnable, on_cpu = _concurrency(event.get("concurrency"), count)
        window = measurement.Window(
            starts=_numbers(event["starts"], count), ends=_numbers(event["ends"], count),
            cpu_seconds=cpu_seconds, startup_seconds=_numbers([event["startup_seconds"]], 1)[0],
            core_utilisation=measurement.busy_fractions(self.counters_before, after),
            index=index, interference_cores=load.interference_cores, steal_ratio=load.steal_ratio,
            role=role, pair=pair, attempt=attempt, runnable_workers=runnable, on_cpu_workers=on_cpu)
        free = measurement.window_free_cores(window, self.usable_cpus, modes.max_cores(step.mode))
        window = dataclasses.replace(window, clean=free.enough)
        step.windows.append(window)
        self.runner.send({"clean": free.enough})
        if role == measurement.PARALLEL:
            pairs = len(measurement.pair_windows(step.windows))
            self.progress(f"{self.report.spec.workload}: {step.mode} ×{step.workers}: {pairs} pair"
                          + ("s" if pairs != 1 else ""))

    def finish_step(self) -> None:
        """Add the time since the step's last start to it (its repeats are interleaved)."""
        if self.current is not None:
            self.current.duration_seconds += time.monotonic() - self.step_started
            self.current = None

    def fail_unfinished(self, reason: str, message: str) -> None:
        """The runner died: fail the running step and the steps that never ran.

        Steps run one after another: the ones finished before keep their figures.
        """
        running = self.current
        for step in self.report.steps:
            if not step.available or step.reason is not None:
                continue
            if step is running or running is None:
                step.fail(reason, message)
            elif not step.windows:
                step.fail(reason, f"not run: {message}")
        self.finish_step()


def summarise_steps(report: WorkloadReport, usable_cpus: Optional[float] = None,
                    earlier: Mapping[tuple[str, int], Sequence[float]] = {}) -> None:
    """Compute every successful step's figures from its own windows.

    A CPU-bound speedup above ``usable_cpus``, or a baseline slower per CPU-second than the
    workers, marks the step unsteady; too few free cores mark it inconclusive. ``earlier``
    holds a step's figures from earlier probes: their spread widens its interval.
    """
    sequential = report.sequential
    for step in report.steps:
        if not step.available or step.reason is not None:
            continue
        if step is not sequential and sequential.reason is not None:
            step.fail(sequential.reason, f"not run: the sequential step failed: {sequential.message}")
            continue
        try:
            if step is sequential:
                step.summary = measurement.summarise_sequential(step.windows, report.ops_per_unit)
            else:
                step.summary = measurement.summarise(
                    step.windows, step.workers, report.ops_per_unit, usable_cpus, step.remeasured_reason,
                    modes.max_cores(step.mode), report.spec.repeats,
                    measurement.between_probe_sd(earlier.get((step.mode, step.workers), ())))
        except (ValueError, statistics.StatisticsError):  # no (complete) window
            step.fail("error", "the runner finished without measuring this step")
            continue
        step.success = True


_VERSION = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}[a-z0-9+]{0,16}$")
_IMPLEMENTATION = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_MESSAGE_CHARS = 1000
# The kernel updates a running thread's accounting at its scheduler tick, so one reading can
# be a few milliseconds behind: over a 0.3 s span a sum may exceed the threads by ~2 %.
RUNNABLE_SLACK = 1.05


def _checked_identity(identity: Identity) -> Identity:
    """Identity fields become label values: they must look like what CPython reports."""
    if not isinstance(identity.version, str) or not _VERSION.match(identity.version):
        raise ValueError(f"version {identity.version!r:.40} is not a Python version")
    if not isinstance(identity.implementation, str) or not _IMPLEMENTATION.match(identity.implementation):
        raise ValueError(f"implementation {identity.implementation!r:.40} is not a short lowercase name")
    if not isinstance(identity.free_threaded_build, bool) or not isinstance(identity.gil_enabled, bool):
        raise ValueError("free_threaded_build and gil_enabled must be booleans")
    if not isinstance(identity.executable, str) or len(identity.executable) > 4096:
        raise ValueError("executable must be a path")
    return identity


def _numbers(values: object, count: int) -> list[float]:
    """``count`` finite numbers, or ValueError (a malformed window)."""
    if not isinstance(values, list) or len(values) != count:
        raise ValueError(f"expected a list of {count} numbers")
    if not all(measurement.finite_number(v) for v in values):
        raise ValueError("expected finite numbers")
    return [float(v) for v in values]


def _concurrency(value: object, workers: int) -> tuple[Optional[float], Optional[float]]:
    """The window's (runnable, on CPU) workers from the kernel's accounting; (None, None)
    where the runner had none. A figure no thread can reach is a protocol error."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise ValueError("expected the window's concurrency as an object")
    runnable, on_cpu = _numbers([value["runnable_workers"], value["on_cpu_workers"]], 2)
    # Each worker is runnable at most all the time; a few per cent over is the kernel's tick.
    if not 0 <= on_cpu <= runnable <= workers * RUNNABLE_SLACK + RUNNABLE_SLACK:
        raise ValueError(f"runnable workers {runnable:.3g} and on CPU {on_cpu:.3g} are not possible for {workers}")
    return runnable, on_cpu


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"


MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '([^']+)'")


def with_import_hint(message: str, workload: str) -> str:
    """A user workload's own module not found: say where the runner looks for it (the
    working directory is not one of those places, on purpose)."""
    missing = MISSING_MODULE.match(message)
    module = workload.partition(":")[0]
    if not workloads.is_user_workload(workload) or missing is None:
        return message
    if module != missing.group(1) and not module.startswith(missing.group(1) + "."):
        return message  # a module the workload imports: the user's dependency, not its path
    return (f"{message} (workload modules are imported from a --workload.path DIR, probe.workload_path in a "
            f"config file, or the interpreter's own sys.path; never from the working directory)")


def _reason(value: object) -> str:
    """A failure reason from the runner; anything unknown is ``error`` (labels stay bounded)."""
    return value if isinstance(value, str) and value in FAILURE_REASONS else "error"


def run_workload(interpreter: Interpreter, spec: ProbeSpec, progress: Progress = lambda _: None,
                 earlier: Mapping[tuple[str, int], Sequence[float]] = {}) -> WorkloadReport:
    """Probe one workload on one interpreter; failures become failed steps with a reason.
    ``earlier``: each step's figures from earlier probes (the daemon's history)."""
    report = WorkloadReport(interpreter, spec,
                            steps=[StepResult(spec.workload, m, n) for m, n in spec.steps()])
    started = time.monotonic()
    usable = host_cpus().usable
    try:
        runner = RunnerProcess(interpreter, spec.memory_limit_bytes)
    except (OSError, ValueError) as exc:  # ValueError: a path subprocess cannot take
        for step in report.steps:
            step.fail("interpreter", f"cannot start {interpreter.path}: {getattr(exc, 'strerror', None) or exc}")
        return report
    conversation = Conversation(report, runner, progress, usable)
    try:
        converse(conversation, spec, started + spec.deadline_seconds())
    except Exception as exc:  # a bug here must fail this probe, not the round
        log_kv(log, logging.ERROR, "probe failed with an internal error", workload=spec.workload,
               interpreter=interpreter.name, exc_info=True)
        conversation.fail_unfinished("error", f"internal error: {type(exc).__name__}: {exc}")
    finally:
        runner.kill()  # after a clean exit this only removes the empty cgroup
    for step in report.steps:
        if step.reason is not None:
            step.log = runner.stderr_tail
    try:
        summarise_steps(report, usable, earlier)
    except Exception as exc:  # figures a runner sent that the arithmetic cannot take
        log_kv(log, logging.ERROR, "summarising a probe failed with an internal error", workload=spec.workload,
               interpreter=interpreter.name, exc_info=True)
        for step in report.steps:
            if step.available:
                step.success, step.summary = False, None
                step.fail("error", f"internal error: {type(exc).__name__}: {exc}")
    report.duration_seconds = time.monotonic() - started
    return report


def run_pooled(interpreter: Interpreter, spec: ProbeSpec, runs: int,
               progress: Progress = lambda _: None) -> WorkloadReport:
    """Probe a workload ``runs`` times, each in a fresh runner, and pool the runs' pairs into
    one report whose intervals hold the variance between the runs (pyperf's lesson: one
    process's values miss the variance between processes; contended code can settle into a
    different regime in each)."""
    reports = [run_workload(interpreter, spec, _numbered(progress, i, runs)) for i in range(runs)]
    if runs == 1:
        return reports[0]
    pooled = pool_runs(reports)
    summarise_steps(pooled, host_cpus().usable, {(s.mode, s.workers): shown_speedups(reports, s) for s in pooled.steps})
    return pooled


def _numbered(progress: Progress, index: int, runs: int) -> Progress:
    return lambda message: progress(f"run {index + 1}/{runs}: {message}")


def shown_speedups(reports: Sequence[WorkloadReport], step: StepResult) -> list[float]:
    """The step's measured speedup in each report that has one."""
    summaries = [r.step(step.mode, step.workers).summary for r in reports]
    return [s.speedup for s in summaries if s is not None and s.shown]


RUN_PAIRS_APART = 1_000_000  # pair numbers of one run, apart from the next run's


def pool_runs(reports: Sequence[WorkloadReport]) -> WorkloadReport:
    """One report of several runs: each step's windows of every run's last attempt, the
    runs' pairs numbered apart; a step that failed in any run fails with that run's reason."""
    first = reports[0]
    steps = []
    for step in first.steps:
        runs = [r.step(step.mode, step.workers) for r in reports]
        failed = next((s for s in runs if s.reason is not None or not s.available), None)
        if failed is not None:
            steps.append(dataclasses.replace(failed, summary=None, success=False))
            continue
        windows = [dataclasses.replace(w, pair=w.pair + number * RUN_PAIRS_APART, attempt=0)
                   for number, run in enumerate(runs) for w in measurement.last_attempt(run.windows)]
        steps.append(dataclasses.replace(step, windows=windows, summary=None, success=False,
                                         waited_seconds=sum(s.waited_seconds for s in runs),
                                         duration_seconds=sum(s.duration_seconds for s in runs)))
    return dataclasses.replace(first, steps=steps, duration_seconds=sum(r.duration_seconds for r in reports))


def converse(conversation: Conversation, spec: ProbeSpec, deadline: float) -> None:
    """Send the request and fold every event in, enforcing the timeout and the deadline."""
    runner, report = conversation.runner, conversation.report
    try:
        runner.send(request_for(spec, conversation.usable_cpus))
        for event in conversation.events(spec.timeout_seconds, deadline):
            conversation.handle(event)
        conversation.finish_step()
    except queue.Empty:
        runner.kill()
        conversation.fail_unfinished("timeout", f"no progress within {spec.timeout_seconds:g}s; process tree killed")
        return
    except DeadlineExceeded:
        runner.kill()
        conversation.fail_unfinished("timeout", f"still running at the probe's deadline of "
                                                f"{spec.deadline_seconds():g}s; process tree killed")
        return
    except ProtocolError as exc:
        runner.kill()
        conversation.fail_unfinished("error", f"{exc}; process tree killed")
        return
    except MemoryLimitHit as exc:
        runner.kill()
        conversation.fail_unfinished("memory", f"{exc}; process tree killed")
        return
    except OSError as exc:  # BrokenPipeError: the runner died before reading the request
        runner.kill()
        reason = "crash" if report.identity else "interpreter"
        conversation.fail_unfinished(reason, f"{runner.exit_description()} ({exc})")
        return
    code = runner.wait(min(5.0, max(deadline - time.monotonic(), 0.5)))
    if code is None:
        runner.kill()
        if not conversation.done:
            conversation.fail_unfinished("timeout", "runner closed its output but did not exit; process tree killed")
            return
    elif code != 0 and conversation.done:
        log_kv(log, logging.WARNING, "runner failed after reporting every result", exit=runner.exit_description())
    elif code != 0:
        # No identity means the runner never started: a missing or too old interpreter.
        conversation.fail_unfinished("crash" if report.identity else "interpreter", runner.exit_description())
        return
    fail_on_leftovers(conversation)


def fail_on_leftovers(conversation: Conversation) -> None:
    """A workload that leaves processes running after the probe fails; they are killed."""
    runner = conversation.runner
    until = time.monotonic() + LEFTOVER_GRACE_SECONDS
    while (left := runner.leftovers()) and time.monotonic() < until:
        time.sleep(0.05)
    if left:
        runner.kill()
        conversation.fail_unfinished(
            "error", f"the workload left {len(left)} process(es) running after the probe; killed")


def check_import(interpreter: Interpreter, module: str, timeout: float,
                 workload_path: tuple[str, ...] = (), memory_limit_bytes: Optional[int] = None) -> ImportCheck:
    """Import ``module`` in a fresh runner and say whether that import turned the GIL on."""
    def failed(message: str) -> ImportCheck:
        return ImportCheck(interpreter.name, module, None, message)

    try:
        runner = RunnerProcess(interpreter, memory_limit_bytes)
    except (OSError, ValueError) as exc:  # ValueError: a path subprocess cannot take (as run_workload)
        return failed(f"cannot start {interpreter.path}: {getattr(exc, 'strerror', None) or exc}")
    try:
        runner.send({"import_module": module, "extra_path": list(workload_path)})
        deadline = time.monotonic() + timeout
        while (event := runner.next_event(deadline - time.monotonic())) is not None:
            if event["event"] == "import":
                if "error" in event:
                    return failed(str(event["error"]))
                # Only a flip counts: with PYTHON_GIL=1 the GIL was on before the import.
                return ImportCheck(interpreter.name, module,
                                   bool(event["gil_enabled"]) and not event["gil_enabled_before"])
        runner.wait(5)
        return failed(runner.exit_description())
    except queue.Empty:
        return failed(f"no answer within {timeout:g}s")
    except (ProtocolError, KeyError) as exc:
        return failed(f"runner protocol error: {exc}")
    except MemoryLimitHit as exc:
        return failed(str(exc))
    except OSError as exc:
        return failed(str(exc))
    except Exception as exc:  # a bug here must fail this check, not the round
        log_kv(log, logging.ERROR, "import check failed with an internal error", module=module,
               interpreter=interpreter.name, exc_info=True)
        return failed(f"internal error: {type(exc).__name__}: {exc}")
    finally:
        runner.kill()
