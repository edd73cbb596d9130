"""Run one workload's probe in a child interpreter and turn its events into results.

The parent side of ``exporter.runner``: it starts the runner in the chosen interpreter (in a
new session, so its whole process tree can be killed), reads the kernel's per-CPU counters
at the edges of every timed window, enforces the timeout, and reports a workload that
raises, crashes its interpreter or hangs as failed steps with a reason — never an exception.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import psutil

from exporter import measurement
from exporter.results import Identity, ImportCheck, Interpreter, ProbeSpec, StepResult, WorkloadReport

log = logging.getLogger(__name__)

PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)

# Appending (not prepending) the package's parent keeps the child's own stdlib and
# site-packages first, so a 3.13t child never picks up the parent's compiled modules.
BOOTSTRAP = (
    "import sys\n"
    "if sys.version_info < (3, 10):\n"
    "    sys.exit('python >= 3.10 is required, this is ' + sys.version.split()[0])\n"
    f"sys.path.append({PACKAGE_PARENT!r})\n"
    "from exporter.runner import main\n"
    "main()\n"
)

Progress = Callable[[str], None]


# --- the child process ------------------------------------------------------------------

_live_runners: set["RunnerProcess"] = set()
_live_lock = threading.Lock()


def kill_all_runners() -> None:
    """Kill every runner tree still alive (used on shutdown)."""
    with _live_lock:
        runners = list(_live_runners)
    for runner in runners:
        runner.kill()


class RunnerProcess:
    """A runner child in its own session, spoken to in JSON lines."""

    def __init__(self, interpreter: Interpreter) -> None:
        env = dict(os.environ, **interpreter.env)
        self.process = subprocess.Popen(
            [interpreter.path, "-c", BOOTSTRAP], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, text=True, start_new_session=True)
        self.events: "queue.Queue[Optional[dict]]" = queue.Queue()
        self.stderr_tail: list[str] = []
        threading.Thread(target=self._read_events, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        with _live_lock:
            _live_runners.add(self)

    def _read_events(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                log.warning("runner wrote a line that is not an event: %r", line[:200])
        self.events.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_tail = (self.stderr_tail + [line.rstrip()])[-20:]

    def send(self, message: dict) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def next_event(self, timeout: float) -> Optional[dict]:
        """The next event, None at end of output; raises queue.Empty after ``timeout``."""
        return self.events.get(timeout=timeout)

    def kill(self) -> None:
        """Kill the runner and every descendant (worker processes may have their own pid)."""
        try:
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.kill()
        for member in descendants:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
        # Popen must reap its own child (psutil reaping it would turn the exit code into 0);
        # psutil waits for the rest, which have been re-parented away from us.
        self.close()
        psutil.wait_procs(descendants, timeout=5)

    def close(self) -> None:
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass  # a dead child's stdin can fail to flush
        with _live_lock:
            _live_runners.discard(self)

    def exit_description(self) -> str:
        code = self.process.returncode
        if code is not None and code < 0:
            what = f"killed by {signal.Signals(-code).name}"
        else:
            what = f"exited with code {code}"
        tail = next((line for line in reversed(self.stderr_tail) if line.strip()), "")
        return f"interpreter {what}" + (f": {tail}" if tail else "")


def cpu_counters() -> list[dict[str, float]]:
    return [t._asdict() for t in psutil.cpu_times(percpu=True)]


def request_for(spec: ProbeSpec) -> dict:
    return {"workload": spec.workload, "unit_seconds": spec.unit_seconds,
            "repeats": spec.repeats, "start_method": spec.start_method, "handshake": True,
            "ops_per_unit": spec.ops_per_unit,
            "extra_path": [os.getcwd()],
            "steps": [{"mode": m, "workers": n} for m, n in spec.steps()]}


# --- the conversation -------------------------------------------------------------------


class Conversation:
    """Folds a runner's events into a WorkloadReport."""

    def __init__(self, report: WorkloadReport, runner: RunnerProcess, progress: Progress) -> None:
        self.report, self.runner, self.progress = report, runner, progress
        self.current: Optional[StepResult] = None
        self.step_started = time.monotonic()
        self.counters_before: list[dict[str, float]] = []
        self.done = False  # the runner said everything it had to say

    def events(self, timeout: float) -> Iterator[dict]:
        while True:
            event = self.runner.next_event(timeout)
            if event is None:
                return
            if event["event"] == "done":
                self.done = True
                return
            yield event

    def handle(self, event: dict) -> None:
        kind = event["event"]
        if kind == "identity":
            fields = {k: v for k, v in event.items() if k != "event"}
            self.report.identity = Identity(**fields)
        elif kind == "calibrated":
            self.report.ops_per_unit, self.report.op_seconds = event["ops_per_unit"], event["op_seconds"]
        elif kind == "step":
            self.finish_step()
            self.current = self.report.step(event["mode"], event["workers"])
            self.step_started = time.monotonic()
            self.progress(f"{self.report.spec.workload}: {event['mode']} × {event['workers']}")
        elif kind == "ready":
            self.counters_before = cpu_counters()
            self.runner.send({"go": True})
        elif kind == "window":
            self.add_window(event)
        elif kind == "step_failed":
            self.report.step(event["mode"], event["workers"]).fail(event["reason"], event["message"])
        elif kind == "unavailable":
            step = self.report.step(event["mode"], event["workers"])
            step.available, step.message = False, event["message"]
        elif kind == "failed":
            self.fail_unfinished(event["reason"], event["message"])

    def add_window(self, event: dict) -> None:
        after = cpu_counters()
        window = measurement.Window(
            starts=event["starts"], ends=event["ends"], cpu_seconds=event["cpu_seconds"],
            startup_seconds=event["startup_seconds"],
            core_utilisation=measurement.busy_fractions(self.counters_before, after))
        self.report.step(event["mode"], event["workers"]).windows.append(window)

    def finish_step(self) -> None:
        """Add the time since the step's last start to it (its repeats are interleaved)."""
        if self.current is not None:
            self.current.duration_seconds += time.monotonic() - self.step_started
            self.current = None

    def fail_unfinished(self, reason: str, message: str) -> None:
        """The runner died: fail the running step and the steps that never ran.

        Repeats go round the steps, so other steps may hold some of their windows; they
        keep them and are summarised from fewer repeats.
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


def summarise_steps(report: WorkloadReport) -> None:
    """Compute every successful step's figures against the sequential baseline."""
    baseline = report.step("sequential", 1)
    for step in report.steps:
        if not step.available or step.reason is not None:
            continue
        if baseline.reason is not None or not baseline.windows:
            step.fail(baseline.reason or "error", f"no sequential baseline: {baseline.message}")
            continue
        t1 = measurement.summarise(baseline.windows, 1.0, 1, report.ops_per_unit).wall_seconds
        step.summary = measurement.summarise(step.windows, t1, step.workers, report.ops_per_unit)
        step.success = True


def run_workload(interpreter: Interpreter, spec: ProbeSpec,
                 progress: Progress = lambda _: None) -> WorkloadReport:
    """Probe one workload on one interpreter; failures become failed steps with a reason."""
    report = WorkloadReport(interpreter, spec,
                            steps=[StepResult(spec.workload, m, n) for m, n in spec.steps()])
    started = time.monotonic()
    try:
        runner = RunnerProcess(interpreter)
    except OSError as exc:
        for step in report.steps:
            step.fail("interpreter", f"cannot start {interpreter.path}: {exc.strerror or exc}")
        return report
    conversation = Conversation(report, runner, progress)
    try:
        runner.send(request_for(spec))
        for event in conversation.events(spec.timeout_seconds):
            conversation.handle(event)
        conversation.finish_step()
        runner.close()
        if conversation.done and runner.process.returncode != 0:
            log.warning("runner %s after reporting every result", runner.exit_description())
        elif runner.process.returncode != 0:
            # No identity means the runner never started: a missing or too old interpreter.
            reason = "crash" if report.identity else "interpreter"
            conversation.fail_unfinished(reason, runner.exit_description())
    except queue.Empty:
        runner.kill()
        conversation.fail_unfinished("timeout", f"no progress within {spec.timeout_seconds:g}s; process tree killed")
    except (BrokenPipeError, OSError) as exc:
        runner.kill()
        reason = "crash" if report.identity else "interpreter"
        conversation.fail_unfinished(reason, f"{runner.exit_description()} ({exc})")
    finally:
        if runner.process.returncode is None:
            runner.kill()
    for step in report.steps:
        if step.reason is not None:
            step.log = list(runner.stderr_tail)
    summarise_steps(report)
    report.duration_seconds = time.monotonic() - started
    return report


def check_import(interpreter: Interpreter, module: str, timeout: float) -> ImportCheck:
    """Import ``module`` in a fresh runner and say whether that import turned the GIL on."""
    def failed(message: str) -> ImportCheck:
        return ImportCheck(interpreter.name, module, None, message)

    try:
        runner = RunnerProcess(interpreter)
    except OSError as exc:
        return failed(f"cannot start {interpreter.path}: {exc.strerror or exc}")
    try:
        runner.send({"import_module": module, "extra_path": [os.getcwd()]})
        while (event := runner.next_event(timeout)) is not None:
            if event["event"] == "import":
                if "error" in event:
                    return failed(event["error"])
                # Only a flip counts: with PYTHON_GIL=1 the GIL was on before the import.
                return ImportCheck(interpreter.name, module,
                                   event["gil_enabled"] and not event["gil_enabled_before"])
        runner.close()
        return failed(runner.exit_description())
    except queue.Empty:
        return failed(f"no answer within {timeout:g}s")
    except OSError as exc:
        return failed(str(exc))
    finally:
        runner.kill()
