"""The exporter daemon: probe rounds on one lane, on a schedule, results swapped atomically.

One thread, the probe lane, runs a round at start-up and then whenever ``RoundClock`` says
the next one is due, so probes never overlap (concurrent probes would disturb each other's
numbers). Between rounds it retries steps that could not tell (too few free cores) when
the host is quieter, within the duty-cycle budget. Scrapes only read the latest snapshot.
A reload swaps the config in (a bad one is kept out and reported) and never postpones the
next round; ``stop`` kills any running probe tree.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Optional

from exporter.config.loader import load_config
from exporter.config.settings import Config, serve_wait_quiet
from exporter.errors import ConfigError
from exporter.export.collector import empty_snapshot
from exporter.host.cpus import host_cpus
from exporter.logs import log_kv
from exporter.model.results import Interpreter, ProbeSpec, WorkloadReport
from exporter.model.schedule import Schedule
from exporter.model.snapshot import Snapshot
from exporter.pages.history import DEFAULT_LIMIT, History
from exporter.probe import quiet, run as probe
from exporter.serve.clock import RoundClock
from exporter.services.watcher import ServiceWatcher

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_SECONDS = 3.0
# An inconclusive step (too few free cores) is tried again at these shares of the interval
# after the round started, when the host is quiet then and the duty-cycle budget has room.
RETRY_AT = (0.25, 0.5, 0.75)
QUIET_SAMPLE_SECONDS = 1.0

Steps = list[tuple[str, int]]


@dataclass(frozen=True)
class Retry:
    """A planned retry of the last round's inconclusive steps."""

    at: float  # Unix time
    attempt: int  # index into RETRY_AT


class Daemon:
    """Holds the config and the latest snapshot, and runs probe rounds on its lane."""

    def __init__(self, config: Config, config_path: Optional[str], history_limit: int = DEFAULT_LIMIT,
                 history_file: Optional[str] = None) -> None:
        self.config = config
        self.config_path = config_path
        self.history = History(history_limit)  # the status page's sparklines and recent failures
        self.history_file = history_file
        if history_file:
            self._restore_history(history_file)
        self.started_at = time.time()
        self.round_started_at: Optional[float] = None  # the round running now
        self.last_round: Optional[tuple[float, float]] = None  # start and end of the last complete round
        self.host = host_cpus()
        self.services = ServiceWatcher(config.services)  # samples on its own thread, when configured
        self._snapshot = empty_snapshot(config, self.host)
        self._lock = threading.Lock()  # guards swaps of _snapshot and config
        self.ready = threading.Event()  # set when the first round has finished
        self.stopping = threading.Event()
        self.round_idle = threading.Event()
        self.round_idle.set()
        self.clock = RoundClock(config.interval_seconds, config.jitter_seconds, config.duty_cycle, due=time.time())
        self.retry: Optional[Retry] = None
        self.probe_seconds_this_interval = 0.0  # round and retries: what the duty cycle counts
        self.waited_this_round = 0.0  # seconds the round waited for free cores (not probe time)
        self._wake = threading.Event()  # a reload or stop: the lane looks at the clock again
        self._reload_lock = threading.Lock()
        self._lane = threading.Thread(target=self._run_lane, name="probe-lane", daemon=True)

    # --- snapshot -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def _update(self, **fields: object) -> None:
        with self._lock:
            self._snapshot = replace(self._snapshot, **fields)  # type: ignore[arg-type]

    def _publish(self, reports: list[WorkloadReport], merged: Optional[WorkloadReport] = None) -> None:
        """Show these reports (and ``merged``, a retry folded into its round) and record them."""
        with self._lock:
            # A reload during the round may have removed this interpreter or workload: its
            # series were pruned then, and must not come back when the running round ends.
            reports = [r for r in reports if self.config.configures(r.interpreter.name, r.spec.workload)]
            snapshot = self._snapshot.with_round(reports)
            if merged is not None and reports:
                snapshot = snapshot.with_report(merged)
            self._snapshot = snapshot
        self.history.record(reports)
        if self.history_file:
            try:
                self.history.save(self.history_file)
            except OSError as exc:
                log_kv(log, logging.WARNING, "cannot write the history file", file=self.history_file, error=str(exc))

    def _restore_history(self, path: str) -> None:
        """A missing file is a first start; a damaged one is logged and started afresh."""
        try:
            points = self.history.restore(path)
            self.history.prune(self.config.configures)
            log_kv(log, logging.INFO, "history restored", file=path, points=points)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log_kv(log, logging.WARNING, "history file not restored; starting an empty history", file=path,
                   error=str(exc))

    def schedule(self) -> Schedule:
        """When rounds ran and will run, for the status page."""
        snapshot, last = self._snapshot, self.last_round
        running = self._lane.is_alive() and not self.stopping.is_set()
        return Schedule(exporter_started_at=self.started_at, round_running_since=self.round_started_at,
                        last_round_started_at=last[0] if last else None,
                        last_round_finished_at=last[1] if last else None,
                        next_round_at=self.clock.next_round_at if running else None,
                        interval_seconds=snapshot.interval_seconds,
                        configured_interval_seconds=self.config.interval_seconds,
                        duty_cycle_ratio=snapshot.duty_cycle_ratio, duty_cycle_budget=self.config.duty_cycle)

    # --- the lane ---------------------------------------------------------------------------

    def start(self) -> None:
        self.services.start()
        self._lane.start()

    def stop(self) -> None:
        """Stop the lane, kill the running probe tree, and wait briefly for the lane."""
        self.stopping.set()
        self._wake.set()
        self.services.stop()
        probe.kill_all_runners()
        self.round_idle.wait(SHUTDOWN_GRACE_SECONDS)
        probe.kill_all_runners()  # one may have started while we waited

    def _run_lane(self) -> None:
        """Run whatever is due: the next round, else a retry; sleep until one is, or a wake-up."""
        while not self.stopping.is_set():
            self._wake.clear()
            now = time.time()
            if self.clock.next_round_at <= now:
                self.clock.round_started(now)
                self.run_round(now)
            elif self.retry is not None and self.retry.at <= now:
                self.retry_inconclusive(self.retry.attempt)
            else:
                due = min(self.clock.next_round_at, self.retry.at if self.retry else float("inf"))
                self._wake.wait(due - now)

    def run_round(self, started_at: Optional[float] = None) -> None:
        """Probe every workload on every interpreter, publishing each result as it lands."""
        self.round_idle.clear()
        self.round_started_at = started_at or time.time()
        self.retry = None
        self.waited_this_round = 0.0
        started = time.monotonic()
        try:
            config = self.config
            # Read again each round: a container's CPU limit can change under a running exporter.
            self.host = host_cpus()
            self._update(host=self.host)
            for interpreter in config.interpreter_list():
                self._probe_interpreter(config, interpreter)
                if self.stopping.is_set():
                    return
            duration = time.monotonic() - started
            self.last_round = (self.round_started_at, self.round_started_at + duration)
            # Waiting for free cores is not probing: the duty cycle pays for measurement only.
            probing = max(0.0, duration - self.waited_this_round)
            self.probe_seconds_this_interval = probing
            self._apply_duty_cycle(config, probing, self.round_started_at)
            self._plan_retry(0)
        except Exception:  # a bug must not kill the lane: log it, the next round runs
            log_kv(log, logging.ERROR, "probe round failed", exc_info=True)
        finally:
            if not self.stopping.is_set():
                self.ready.set()  # the first round is over, however it went: its results say the rest
            self.round_started_at = None
            self.round_idle.set()

    def _probe_interpreter(self, config: Config, interpreter: Interpreter) -> None:
        free_threaded = False
        for spec in config.probe_specs(self.host.default_workers, serve_wait_quiet(config.interval_seconds)):
            if self.stopping.is_set():
                return
            report = probe.run_workload(interpreter, spec, earlier=self.history.figures(interpreter.name, spec.workload))
            self.waited_this_round += sum(step.waited_seconds for step in report.steps)
            if self.stopping.is_set():
                return  # killed by shutdown: not a failure of the workload
            self._publish([report])
            free_threaded = free_threaded or bool(report.identity and report.identity.free_threaded_build)
            _log_outcome(report)
        # The import check only means something where the GIL can be off.
        if free_threaded:
            self._check_imports(config, interpreter)

    def _check_imports(self, config: Config, interpreter: Interpreter) -> None:
        checks = dict(self.snapshot().import_checks)
        for module in config.import_check_modules:
            if self.stopping.is_set():
                return
            check = probe.check_import(interpreter, module, config.probe.timeout_seconds, config.probe.workload_path,
                                       config.probe.memory_limit())
            checks[(interpreter.name, module)] = check
            if check.gil_enabled:
                log_kv(log, logging.WARNING, "import re-enables the GIL", interpreter=interpreter.name, module=module)
            elif check.error:
                log_kv(log, logging.WARNING, "import check failed", interpreter=interpreter.name,
                       module=module, error=check.error)
        self._update(import_checks=checks)

    def _apply_duty_cycle(self, config: Config, duration: float, started_at: float) -> None:
        """Stretch the interval when a round takes more than the duty-cycle budget."""
        was = self.clock.in_force
        stretched = self.clock.round_finished(started_at, duration, time.time())
        if stretched:
            # Warn when the stretching starts; later rounds only adjust it.
            level = logging.WARNING if was <= config.interval_seconds else logging.DEBUG
            log_kv(log, level, "probe round exceeds the duty-cycle budget; stretching the interval",
                   round_seconds=round(duration, 2), duty_cycle=config.duty_cycle,
                   interval_seconds=round(self.clock.in_force, 1))
        self._update(round_duration_seconds=duration, duty_cycle_ratio=duration / self.clock.in_force,
                     interval_seconds=self.clock.in_force)
        log_kv(log, logging.INFO, "probe round finished", duration_seconds=round(duration, 2),
               waited_seconds=round(self.waited_this_round, 2))

    # --- inconclusive steps: try again when the host is quieter -------------------------------

    def inconclusive(self) -> dict[tuple[str, str], Steps]:
        """(interpreter, workload) -> the steps of its last report that could not tell."""
        found: dict[tuple[str, str], Steps] = {}
        for key, report in self._snapshot.reports.items():
            steps = [(s.mode, s.workers) for s in report.steps if s.summary is not None and not s.summary.conclusive]
            if steps:
                found[key] = steps
        return found

    def _plan_retry(self, attempt: int) -> None:
        """Plan the next retry of inconclusive steps within this interval, if any is left."""
        last = self.last_round
        if attempt >= len(RETRY_AT) or last is None or not self.inconclusive() or self.stopping.is_set():
            self.retry = None
            return
        self.retry = Retry(last[0] + RETRY_AT[attempt] * self.clock.in_force, attempt)

    def retry_inconclusive(self, attempt: int) -> None:
        """Probe the inconclusive steps again, if the host is quiet now and the budget allows."""
        self.round_idle.clear()
        try:
            config = self.config
            budget = config.duty_cycle * self.clock.in_force - self.probe_seconds_this_interval
            for (name, workload), steps in self.inconclusive().items():
                if self.stopping.is_set():
                    return
                spent = self._retry_steps(config, name, workload, steps, budget)
                self.probe_seconds_this_interval += spent
                budget -= spent
        except Exception:  # a bug must not kill the lane
            log_kv(log, logging.ERROR, "retry of inconclusive steps failed", exc_info=True)
        finally:
            self.round_idle.set()
            self._plan_retry(attempt + 1)

    def _retry_steps(self, config: Config, name: str, workload: str, steps: Steps, budget: float) -> float:
        """Retry one workload's inconclusive steps; the seconds spent probing."""
        interpreter = next((i for i in config.interpreter_list() if i.name == name), None)
        spec = next((s for s in config.probe_specs(self.host.default_workers, serve_wait_quiet(config.interval_seconds))
                     if s.workload == workload), None)
        old = self._snapshot.reports.get((name, workload))
        if interpreter is None or spec is None or old is None:
            return 0.0
        cost = sum(s.duration_seconds for s in old.steps if (s.mode, s.workers) in steps)
        if cost > budget:
            log_kv(log, logging.INFO, "inconclusive steps not retried: duty-cycle budget spent",
                   interpreter=name, workload=workload)
            return 0.0
        needed = max(min(float(n), self.host.usable) for _, n in steps)
        reading = quiet.sample_free_cores(self.host.usable, needed, QUIET_SAMPLE_SECONDS)
        if not reading.enough:
            log_kv(log, logging.INFO, "host still busy; inconclusive steps not retried yet",
                   interpreter=name, workload=workload, free_cores=round(reading.free, 2))
            return 0.0
        began = time.monotonic()
        retry = probe.run_workload(interpreter, retry_spec(spec, steps))
        if not self.stopping.is_set():
            self._publish_retry(old, retry, steps)
        return time.monotonic() - began

    def _publish_retry(self, old: WorkloadReport, retry: WorkloadReport, steps: Steps) -> None:
        """The retried steps replace the inconclusive ones; the others keep their round's figures."""
        retried = [s for s in retry.steps if (s.mode, s.workers) in steps]
        merged = replace(old, steps=[next((r for r in retried if (r.mode, r.workers) == (s.mode, s.workers)), s)
                                     for s in old.steps])
        self._publish([replace(retry, steps=retried)], merged)
        for step in retried:
            log_kv(log, logging.INFO, "inconclusive step retried", interpreter=old.interpreter.name,
                   workload=old.spec.workload, mode=step.mode, workers=step.workers,
                   conclusive=bool(step.summary and step.summary.conclusive))

    # --- reload -----------------------------------------------------------------------------

    def reload(self) -> tuple[bool, str]:
        """Load the config file again; a bad one keeps the old config and is reported.

        Any failure counts, not only a ConfigError: a reload must never take the daemon
        down (SIGHUP runs it on the main thread) nor leave the reload metric at 1.
        """
        with self._reload_lock:  # SIGHUP and POST /-/reload may arrive together
            try:
                self._apply(load_config(self.config_path))
            except ConfigError as exc:
                self._update(reload_successful=False)
                log_kv(log, logging.ERROR, "config reload failed", error=str(exc))
                return False, str(exc)
            except Exception as exc:  # a bug, not a bad file: say so, with the traceback
                message = f"error reloading config file: {self.config_path}: {type(exc).__name__}: {exc}"
                self._update(reload_successful=False)
                log_kv(log, logging.ERROR, "config reload failed with an internal error", exc_info=True)
                return False, message
        log_kv(log, logging.INFO, "config reloaded", file=self.config_path or "(defaults)")
        return True, "config reloaded"

    def _apply(self, config: Config) -> None:
        self.clock.reschedule(config.interval_seconds, config.jitter_seconds, config.duty_cycle, time.time())
        names = {i.name for i in config.interpreter_list()}
        with self._lock:
            self.config = config
            fresh = empty_snapshot(config, self.host)
            self._snapshot = replace(self._snapshot.keeping(config.configures, names, config.import_check_modules),
                                     reload_successful=True, reload_timestamp=time.time(),
                                     interval_seconds=self.clock.in_force, per_core_series=fresh.per_core_series,
                                     start_method=fresh.start_method)
        self.history.prune(config.configures)
        self.services.configure(config.services)
        self._wake.set()  # the next round may have moved earlier


def _log_outcome(report: WorkloadReport) -> None:
    """A line for each step that failed or whose speedup is withheld."""
    for step in report.steps:
        if step.available and not step.success:
            log_kv(log, logging.WARNING, "probe failed", interpreter=report.interpreter.name,
                   workload=report.spec.workload, mode=step.mode, workers=step.workers,
                   reason=step.reason, message=step.message)
        elif step.summary is not None and not step.summary.shown:
            log_kv(log, logging.INFO, "speedup withheld", interpreter=report.interpreter.name,
                   workload=report.spec.workload, mode=step.mode, workers=step.workers,
                   reason=step.summary.unsteady_reason or f"cannot tell: {step.summary.inconclusive_reason}")


def retry_spec(spec: ProbeSpec, steps: Steps) -> ProbeSpec:
    """The same probe restricted to these steps (the runner adds the sequential one)."""
    return replace(spec, modes=tuple(dict.fromkeys(mode for mode, _ in steps)),
                   workers=tuple(dict.fromkeys(n for _, n in steps)))
