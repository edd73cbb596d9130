"""The exporter daemon: probe rounds on a schedule, one lane, results swapped atomically.

APScheduler runs one round at start-up and then every ``interval`` (with jitter) on a
single-thread executor, so probes never overlap: concurrent probes would disturb each
other's numbers. A duty-cycle budget stretches the interval when rounds take too long.
Scrapes only read the latest snapshot. SIGHUP and ``POST /-/reload`` (with
``--web.enable-lifecycle``) reload the config: a bad one is kept out and reported, and a
reload never postpones the next round; SIGTERM/SIGINT (or ``POST /-/quit``) kill any running
probe tree and exit.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from exporter import __version__
from exporter.probe import run, quiet
from exporter.export.collector import Snapshot, empty_snapshot, prune_snapshot, record_round, still_configured
from exporter.config.settings import Config
from exporter.config.loader import load_config
from exporter.errors import ConfigError
from exporter.model.results import Interpreter, WorkloadReport
from exporter.export.exposition import TelemetryApp
from exporter.serve.malloc import thread_caches_off, use_one_malloc_arena
from exporter.pages.history import DEFAULT_LIMIT, History
from exporter.host.cpus import host_cpus
from exporter.logs import log_kv, setup_logging
from exporter.pages.api import Schedule
from exporter.services.collector import ServiceCollector
from exporter.services.watcher import ServiceWatcher
from exporter.pages.handlers import StatusPages
from exporter.web.listen import start_web_server
from exporter.config.webconfig import load_web_config

log = logging.getLogger(__name__)
JOB_ID = "probe-round"
RETRY_JOB_ID = "retry-inconclusive"
SHUTDOWN_GRACE_SECONDS = 3.0
# An inconclusive step (too few free cores) is tried again at these shares of the interval
# after the round started, when the host is quiet then and the duty-cycle budget has room.
RETRY_AT = (0.25, 0.5, 0.75)
QUIET_SAMPLE_SECONDS = 1.0


class Daemon:
    """Holds the config and the latest snapshot, and runs probe rounds."""

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
        self.interval_in_force = config.interval_seconds
        self.probe_seconds_this_interval = 0.0  # round and retries: what the duty cycle counts
        self._reload_lock = threading.Lock()
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},  # the one probe lane
            job_defaults={"coalesce": True, "max_instances": 1},
        )

    # --- snapshot -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def _update(self, **fields: Any) -> None:
        with self._lock:
            self._snapshot = replace(self._snapshot, **fields)

    def _publish(self, reports: list[WorkloadReport]) -> None:
        with self._lock:
            # A reload during the round may have removed this interpreter or workload: its
            # series were pruned then, and must not come back when the running round ends.
            reports = [r for r in reports if still_configured(self.config, r.interpreter.name, r.spec.workload)]
            self._snapshot = replace(self._snapshot, **record_round(self._snapshot, reports))
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
            self.history.prune(lambda interpreter, workload: still_configured(self.config, interpreter, workload))
            log_kv(log, logging.INFO, "history restored", file=path, points=points)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log_kv(log, logging.WARNING, "history file not restored; starting an empty history", file=path,
                   error=str(exc))

    def schedule(self) -> Schedule:
        """When rounds ran and will run, for the status page."""
        job = self.scheduler.get_job(JOB_ID) if self.scheduler.running else None
        next_run = job.next_run_time.timestamp() if job is not None and job.next_run_time else None
        snapshot, last = self._snapshot, self.last_round
        return Schedule(exporter_started_at=self.started_at, round_running_since=self.round_started_at,
                        last_round_started_at=last[0] if last else None,
                        last_round_finished_at=last[1] if last else None, next_round_at=next_run,
                        interval_seconds=snapshot.interval_seconds,
                        configured_interval_seconds=self.config.interval_seconds,
                        duty_cycle_ratio=snapshot.duty_cycle_ratio, duty_cycle_budget=self.config.duty_cycle)

    # --- scheduling -------------------------------------------------------------------------

    def trigger(self, interval: float, start: Optional[datetime] = None) -> IntervalTrigger:
        """Every ``interval`` seconds counted from ``start`` (round starts, not round ends)."""
        return IntervalTrigger(seconds=interval, start_date=start, jitter=self.config.jitter_seconds or None)

    def start(self) -> None:
        self.services.start()
        self.scheduler.start()
        self.scheduler.add_job(self.run_round, self.trigger(self.interval_in_force), id=JOB_ID,
                               next_run_time=datetime.now(timezone.utc), misfire_grace_time=int(self.interval_in_force))

    def stop(self) -> None:
        """Stop scheduling, kill the running probe tree, and wait briefly for the lane."""
        self.stopping.set()
        self.services.stop()
        self.scheduler.shutdown(wait=False)
        run.kill_all_runners()
        self.round_idle.wait(SHUTDOWN_GRACE_SECONDS)
        run.kill_all_runners()  # one may have started while we waited

    def run_round(self) -> None:
        """Probe every workload on every interpreter, publishing each result as it lands."""
        self.round_idle.clear()
        self.round_started_at = time.time()
        try:
            started, started_at = time.monotonic(), datetime.fromtimestamp(self.round_started_at, timezone.utc)
            config = self.config
            # Read again each round: a container's CPU limit can change under a running exporter.
            self.host = host_cpus()
            self._update(host=self.host)
            for interpreter in config.interpreter_list():
                self._probe_interpreter(config, interpreter)
                if self.stopping.is_set():
                    return
            duration = time.monotonic() - started
            self.last_round = (started_at.timestamp(), started_at.timestamp() + duration)
            self.probe_seconds_this_interval = duration
            self._apply_duty_cycle(config, duration, started_at)
            self.ready.set()
            self._schedule_retry(started_at, 0)
        except Exception:  # a bug must not kill the lane: log it, the next round runs
            log_kv(log, logging.ERROR, "probe round failed", exc_info=True)
        finally:
            self.round_started_at = None
            self.round_idle.set()

    def _probe_interpreter(self, config: Config, interpreter: Interpreter) -> None:
        free_threaded = False
        for spec in config.probe_specs(self.host.default_workers):
            if self.stopping.is_set():
                return
            report = run.run_workload(interpreter, spec)
            if self.stopping.is_set():
                return  # killed by shutdown: not a failure of the workload
            self._publish([report])
            free_threaded = free_threaded or bool(report.identity and report.identity.free_threaded_build)
            for step in report.steps:
                if step.available and not step.success:
                    log_kv(log, logging.WARNING, "probe failed", interpreter=interpreter.name,
                           workload=spec.workload, mode=step.mode, workers=step.workers,
                           reason=step.reason, message=step.message)
                elif step.summary is not None and not step.summary.shown:
                    log_kv(log, logging.INFO, "speedup withheld", interpreter=interpreter.name,
                           workload=spec.workload, mode=step.mode, workers=step.workers,
                           reason=step.summary.unsteady_reason or f"cannot tell: {step.summary.inconclusive_reason}")
        # The import check only means something where the GIL can be off.
        if free_threaded:
            self._check_imports(config, interpreter)

    # --- inconclusive steps: try again when the host is quieter -------------------------------

    def inconclusive(self) -> dict[tuple[str, str], list[tuple[str, int]]]:
        """(interpreter, workload) -> the steps of its last report that could not tell."""
        found: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for key, report in self._snapshot.reports.items():
            steps = [(s.mode, s.workers) for s in report.steps if s.summary is not None and not s.summary.conclusive]
            if steps:
                found[key] = steps
        return found

    def _schedule_retry(self, round_started: datetime, attempt: int) -> None:
        """Plan the next retry of inconclusive steps within this interval, if any is left."""
        if attempt >= len(RETRY_AT) or not self.inconclusive() or self.stopping.is_set():
            return
        when = round_started + timedelta(seconds=RETRY_AT[attempt] * self.interval_in_force)
        self.scheduler.add_job(self.retry_inconclusive, DateTrigger(run_date=when), args=(round_started, attempt),
                               id=RETRY_JOB_ID, replace_existing=True, misfire_grace_time=None)

    def retry_inconclusive(self, round_started: datetime, attempt: int) -> None:
        """Probe the inconclusive steps again, if the host is quiet now and the budget allows."""
        self.round_idle.clear()
        try:
            config = self.config
            budget = config.duty_cycle * self.interval_in_force - self.probe_seconds_this_interval
            for (name, workload), steps in self.inconclusive().items():
                interpreter = next((i for i in config.interpreter_list() if i.name == name), None)
                spec = next((s for s in config.probe_specs(self.host.default_workers) if s.workload == workload), None)
                old = self._snapshot.reports.get((name, workload))
                if interpreter is None or spec is None or old is None or self.stopping.is_set():
                    continue
                cost = sum(s.duration_seconds for s in old.steps if (s.mode, s.workers) in steps)
                if cost > budget:
                    log_kv(log, logging.INFO, "inconclusive steps not retried: duty-cycle budget spent",
                           interpreter=name, workload=workload)
                    continue
                needed = max(min(float(n), self.host.usable) for _, n in steps)
                reading = quiet.sample_free_cores(self.host.usable, needed, QUIET_SAMPLE_SECONDS)
                if not reading.enough:
                    log_kv(log, logging.INFO, "host still busy; inconclusive steps not retried yet",
                           interpreter=name, workload=workload, free_cores=round(reading.free, 2))
                    continue
                began = time.monotonic()
                retry = run.run_workload(interpreter, retry_spec(spec, steps))
                spent = time.monotonic() - began
                self.probe_seconds_this_interval += spent
                budget -= spent
                if not self.stopping.is_set():
                    self._publish_retry(old, retry, steps)
        except Exception:  # a bug must not kill the lane
            log_kv(log, logging.ERROR, "retry of inconclusive steps failed", exc_info=True)
        finally:
            self.round_idle.set()
        self._schedule_retry(round_started, attempt + 1)

    def _publish_retry(self, old: WorkloadReport, retry: WorkloadReport, steps: list[tuple[str, int]]) -> None:
        """The retried steps replace the inconclusive ones; the others keep their round's figures."""
        retried = [s for s in retry.steps if (s.mode, s.workers) in steps]
        merged = replace(old, steps=[next((r for r in retried if (r.mode, r.workers) == (s.mode, s.workers)), s)
                                     for s in old.steps])
        fresh = replace(retry, steps=retried)
        with self._lock:
            fields = record_round(self._snapshot, [fresh])
            fields["reports"][(old.interpreter.name, old.spec.workload)] = merged
            self._snapshot = replace(self._snapshot, **fields)
        self.history.record([fresh])
        for step in retried:
            log_kv(log, logging.INFO, "inconclusive step retried", interpreter=old.interpreter.name,
                   workload=old.spec.workload, mode=step.mode, workers=step.workers,
                   conclusive=bool(step.summary and step.summary.conclusive))

    def _check_imports(self, config: Config, interpreter: Interpreter) -> None:
        checks = dict(self.snapshot().import_checks)
        for module in config.import_check_modules:
            if self.stopping.is_set():
                return
            check = run.check_import(interpreter, module, config.probe.timeout_seconds, config.probe.workload_path,
                                       config.probe.memory_limit())
            checks[(interpreter.name, module)] = check
            if check.gil_enabled:
                log_kv(log, logging.WARNING, "import re-enables the GIL", interpreter=interpreter.name, module=module)
            elif check.error:
                log_kv(log, logging.WARNING, "import check failed", interpreter=interpreter.name,
                       module=module, error=check.error)
        self._update(import_checks=checks)

    def _apply_duty_cycle(self, config: Config, duration: float, started_at: datetime) -> None:
        """Stretch the interval when a round takes more than the duty-cycle budget.

        The next round then starts ``duration / duty_cycle`` after this one *started*, so
        probing takes exactly the budgeted share of wall time.
        """
        needed = max(config.interval_seconds, duration / config.duty_cycle)
        stretched = needed > config.interval_seconds
        if (stretched or self.interval_in_force != needed) and not self.stopping.is_set():
            if stretched:
                # Warn when the stretching starts; later rounds only adjust it.
                level = logging.WARNING if self.interval_in_force <= config.interval_seconds else logging.DEBUG
                log_kv(log, level, "probe round exceeds the duty-cycle budget; stretching the interval",
                       round_seconds=round(duration, 2), duty_cycle=config.duty_cycle,
                       interval_seconds=round(needed, 1))
            self.interval_in_force = needed
            self.scheduler.reschedule_job(JOB_ID, trigger=self.trigger(needed, started_at))
        self._update(round_duration_seconds=duration, duty_cycle_ratio=duration / self.interval_in_force,
                     interval_seconds=self.interval_in_force)
        log_kv(log, logging.INFO, "probe round finished", duration_seconds=round(duration, 2))

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
        old = self.config
        schedule_changed = (config.interval_seconds, config.jitter_seconds) != \
            (old.interval_seconds, old.jitter_seconds)
        if schedule_changed:
            # A new interval starts counting afresh; the duty cycle stretches it again if needed.
            self.interval_in_force = config.interval_seconds
        with self._lock:
            self.config = config
            fresh = empty_snapshot(config, self.host)
            self._snapshot = replace(self._snapshot, reload_successful=True,
                                     reload_timestamp=time.time(), interval_seconds=self.interval_in_force,
                                     per_core_series=fresh.per_core_series, start_method=fresh.start_method,
                                     **prune_snapshot(self._snapshot, config))
        self.history.prune(lambda interpreter, workload: still_configured(config, interpreter, workload))
        self.services.configure(config.services)
        if schedule_changed:
            self._reschedule_keeping_next_run()

    def next_run_time(self) -> Optional[datetime]:
        """When the next round is due (None before start or after stop)."""
        job = self.scheduler.get_job(JOB_ID) if self.scheduler.running else None
        return job.next_run_time if job is not None else None

    def _reschedule_keeping_next_run(self) -> None:
        """Apply a new interval to the rounds after the next one.

        A reload must never postpone the next round: rescheduling from "now" would let
        anyone who can trigger reloads (SIGHUP, POST /-/reload) starve probing by reloading
        more often than the interval. So the next round keeps its time, unless the new,
        shorter interval counted from the last round's start brings it earlier (but never
        into the past); later rounds follow the new interval from there.
        """
        due = self.next_run_time()
        if due is None or self.stopping.is_set():
            return
        last_start = self.round_started_at or (self.last_round[0] if self.last_round else None)
        if last_start is not None:
            sooner = datetime.fromtimestamp(last_start, timezone.utc) + timedelta(seconds=self.interval_in_force)
            due = min(due, max(sooner, datetime.now(timezone.utc)))
        self.scheduler.modify_job(JOB_ID, trigger=self.trigger(self.interval_in_force, due),
                                  next_run_time=due)


def retry_spec(spec: run.ProbeSpec, steps: list[tuple[str, int]]) -> run.ProbeSpec:
    """The same probe restricted to these steps (the runner adds the sequential one)."""
    return replace(spec, modes=tuple(dict.fromkeys(mode for mode, _ in steps)),
                   workers=tuple(dict.fromkeys(n for _, n in steps)))


def telemetry_app(daemon: Daemon) -> TelemetryApp:
    """Our families plus the usual process_/python_ ones, as every exporter has."""
    live = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=live)
    live.register(ServiceCollector(daemon.services.snapshot))  # its own window, read like the process collector's
    return TelemetryApp(daemon.snapshot, live)


def serve(args: argparse.Namespace) -> int:
    """``parallelism-exporter serve``: returns the exit code."""
    setup_logging(args.log_level, args.log_format)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise
    config = load_config(args.config_file)
    web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    if args.config_check:
        print(f"config OK: {args.config_file or '(built-in defaults)'}"
              + (f"; web config OK: {args.web_config_file}" if web_config else ""))
        return 0
    one_malloc_arena = use_one_malloc_arena()  # before the first thread starts
    daemon = Daemon(config, args.config_file, args.history_limit, args.history_file)
    pages = StatusPages(daemon, telemetry_path=args.telemetry_path, web_config=web_config,
                        config_path=args.config_file)
    stop = threading.Event()
    server = start_web_server(args.listen_address, telemetry_app(daemon),
                              telemetry_path=args.telemetry_path, web_config=web_config,
                              is_ready=daemon.ready.is_set, reload=daemon.reload, quit=stop.set,
                              enable_lifecycle=args.enable_lifecycle, max_requests=args.max_requests,
                              routes=pages.routes())
    log_kv(log, logging.INFO, "starting", version=__version__, telemetry=server.url + args.telemetry_path,
           interpreters=",".join(i.name for i in config.interpreter_list()),
           malloc_arenas="1" if one_malloc_arena else "default",
           malloc_thread_caches="off" if thread_caches_off() else "default")
    reload_wanted = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload_wanted.set())
    daemon.start()
    while not stop.wait(0.2):
        if reload_wanted.is_set():
            reload_wanted.clear()
            daemon.reload()  # never raises: a failed reload is logged and exported
    log_kv(log, logging.INFO, "shutting down")
    daemon.stop()
    server.shutdown()
    return 0
