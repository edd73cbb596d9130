"""Watch running Python services: do their busy threads use the cores they have?

A passive collector, off by default: every ``services.interval`` a thread of the daemon scans
``/proc`` (``procfs``), assigns processes to the configured groups (``servicematch``),
identifies their interpreter (``pyidentity``) and compares each process's CPU and its
threads' CPU with the previous scan (``servicewindow``). The figures of that window are
published as one frozen ``ServicesSnapshot``: a scrape reads it and never walks ``/proc``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import replace
from typing import Callable, Mapping, Optional


from exporter.host import cpus, procfs
from exporter.config.settings import ServicesConfig
from exporter.logs import log_kv
from exporter.host.procfs import ProcKey
from exporter.services.pyidentity import UNREADABLE, BinaryCache, PythonIdentity, identify
from exporter.services.match import Matcher
from exporter.services.window import (
    ERROR_REASONS,
    CohortKey,
    ProcessWindow,
    Reading,
    Scan,
    ServicesSnapshot,
    cohort,
    group_state,
    process_window,
)

log = logging.getLogger(__name__)
USABLE_REFRESH_SCANS = 12  # a minute at the default interval


# --- scanning ------------------------------------------------------------------------------


class Sampler:
    """Scans /proc and turns two consecutive scans into a snapshot."""

    def __init__(self, config: ServicesConfig, proc: str = procfs.PROC, own_pid: Optional[int] = None) -> None:
        self.config = config
        self.proc = proc
        self.matcher = Matcher(config.groups, own_pid=own_pid, proc=proc)
        self.binaries = BinaryCache()
        self.identities: dict[ProcKey, PythonIdentity] = {}
        self.previous: Optional[Scan] = None
        self.errors: Counter[str] = Counter(dict.fromkeys(ERROR_REASONS, 0))
        self.cpu_seconds: dict[CohortKey, float] = {}
        self.last_pids: dict[int, int] = {}  # pid -> start ticks, to notice a pid reused
        self.quotas: dict[str, Optional[float]] = {}  # per cgroup, for one scan
        self.usable: dict[ProcKey, tuple[int, float]] = {}  # scan number of the read, usable cores
        self.scans = 0

    def count(self, reason: str) -> None:
        self.errors[reason] += 1

    def scan(self) -> tuple[Scan, int]:
        """Read every process's stat, decide groups, read the watched ones in detail."""
        stats: dict[int, procfs.Stat] = {}
        read_at: dict[int, float] = {}
        self.scans += 1
        for pid in procfs.pids(self.proc):
            try:
                stats[pid] = procfs.read_stat(pid, proc=self.proc)
                read_at[pid] = time.monotonic()
            except procfs.Vanished:
                continue  # exited between the listing and the read: it was never watched
            except PermissionError:
                self.count("permission")
        for pid, stat in stats.items():
            if self.last_pids.get(pid, stat.start_ticks) != stat.start_ticks:
                self.count("pid_reused")
        self.last_pids = {pid: stat.start_ticks for pid, stat in stats.items()}
        members = self.matcher.decide(stats, self.count)
        self.quotas = {}
        readings = {}
        for key, group in members.items():
            reading = self._read(key, group, stats[key[0]], read_at[key[0]])
            if reading is not None:
                readings[key] = reading
        for gone in self.identities.keys() - readings.keys():
            del self.identities[gone]
        for gone in self.usable.keys() - readings.keys():
            del self.usable[gone]
        host = procfs.cpu_times()
        return Scan(time.monotonic(), host["idle"] + host.get("iowait", 0.0), readings), len(stats)

    def _read(self, key: ProcKey, group: str, stat: procfs.Stat, stat_at: float) -> Optional[Reading]:
        pid = key[0]
        try:
            if stat.threads == 1:  # most processes: the scan's own read says it all
                at, cpu, threads = stat_at, stat, {pid: stat.cpu_seconds}
            else:  # the threads, then the process again, so both span the same window
                at = time.monotonic()
                threads = procfs.thread_cpu_seconds(pid, self.proc)
                cpu = procfs.read_stat(pid, proc=self.proc)
            if cpu.start_ticks != key[1]:
                self.count("pid_reused")  # reused between the scan and this read
                return None
            usable = self._usable_cores(key)
            identity = self._identity(key)
            switches = self._switches(key, threads, at)
        except procfs.Vanished:
            self.count("vanished")
            return None
        except PermissionError:
            self.count("permission")
            return None
        return Reading(group, identity, at, cpu.cpu_seconds, threads, switches, usable)

    def _usable_cores(self, key: ProcKey) -> float:
        """Affinity capped by the cgroup quota; read again every USABLE_REFRESH_SCANS scans
        (both change rarely, and reading them is most of a steady scan's cost)."""
        cached = self.usable.get(key)
        if cached is not None and self.scans - cached[0] < USABLE_REFRESH_SCANS:
            return cached[1]
        cores = float(procfs.affinity(key[0], self.proc))
        text = procfs.cgroup(key[0], self.proc)
        if text not in self.quotas:
            self.quotas[text] = cpus.cgroup_cpu_quota(text)
        quota = self.quotas[text]
        usable = min(cores, quota) if quota else cores
        self.usable[key] = (self.scans, usable)
        return usable

    def _identity(self, key: ProcKey) -> PythonIdentity:
        if key not in self.identities:
            pid = key[0]
            try:
                self.identities[key] = identify(pid, procfs.exe(pid, self.proc), procfs.mapped_files(pid, self.proc),
                                                self.binaries, self.proc)
            except PermissionError:
                self.count("permission")
                self.identities[key] = UNREADABLE
        return self.identities[key]

    def _switches(self, key: ProcKey, threads: Mapping[int, float], at: float) -> dict[int, int]:
        """Voluntary switches of the threads busy since the last scan (read only for those)."""
        before = self.previous.readings.get(key) if self.previous else None
        if before is None:
            return {}
        seconds = max(at - before.at, 1e-6)
        busy = [t for t, cpu in threads.items()
                if t in before.threads and (cpu - before.threads[t]) / seconds > self.config.busy_thread_share]
        switches = {}
        for tid in busy:
            try:
                switches[tid] = procfs.voluntary_switches(key[0], tid, self.proc)
            except procfs.Vanished:
                continue
        return switches

    def sample(self, host_usable: float) -> ServicesSnapshot:
        """One scan; the figures of the window since the previous one."""
        started, wall = time.monotonic(), time.time()
        current, scanned = self.scan()
        previous, self.previous = self.previous, current
        per_cohort: dict[CohortKey, list[Reading]] = {}
        for reading in current.readings.values():
            per_cohort.setdefault((reading.group, reading.identity), []).append(reading)
        window = current.at - previous.at if previous else None
        idle = (current.host_idle_seconds - previous.host_idle_seconds) / window if previous and window else None
        windows: dict[CohortKey, list[ProcessWindow]] = {}
        if previous is not None and idle is not None:
            for key, after in current.readings.items():
                before = previous.readings.get(key)
                if before is not None and before.group == after.group:
                    w = process_window(before, after, self.config, idle)
                    windows.setdefault((after.group, after.identity), []).append(w)
                    cohort_key = (after.group, after.identity)
                    self.cpu_seconds[cohort_key] = self.cpu_seconds.get(cohort_key, 0.0) + w.cores_used * (after.at - before.at)
        cohorts = tuple(cohort(g, i, readings, windows.get((g, i), []), host_usable)
                        for (g, i), readings in sorted(per_cohort.items(), key=lambda kv: (kv[0][0], kv[0][1].version)))
        groups = sorted({c.group for c in cohorts} | set(configured_names(self.config)))
        # No state before a group's first window (a process is measured from its second scan on):
        # nothing is known yet, so nothing is claimed.
        present = {c.group for c in cohorts}
        measured = {g for g, _ in windows}
        states = {g: group_state([w for (wg, _), ws in windows.items() if wg == g for w in ws], g in present)
                  for g in groups if g in measured or g not in present} if previous else {}
        live = {(c.group, c.identity) for c in cohorts}
        self.cpu_seconds = {k: v for k, v in self.cpu_seconds.items() if k in live}
        return ServicesSnapshot(
            enabled=True, configured=configured_names(self.config), cohorts=cohorts, states=states,
            cpu_seconds=dict(self.cpu_seconds), errors=dict(self.errors), window_seconds=window,
            host_idle_cores=idle, sampled_at=wall, scan_seconds=time.monotonic() - started,
            scanned_processes=scanned, interval_seconds=self.config.interval_seconds)


def configured_names(config: ServicesConfig) -> tuple[str, ...]:
    """Group names that are literal (no placeholder): these exist even with no process."""
    return tuple(dict.fromkeys(g.name for g in config.groups if "{" not in g.name))


# --- the daemon's thread -------------------------------------------------------------------


class ServiceWatcher:
    """Samples on its own thread every ``services.interval``; scrapes read ``snapshot()``."""

    def __init__(self, config: ServicesConfig, host_usable: Callable[[], float] = lambda: cpus.host_cpus().usable,
                 proc: str = procfs.PROC) -> None:
        self._config = config
        self._host_usable = host_usable
        self._proc = proc
        self._sampler = Sampler(config, proc) if config.enabled else None
        self._snapshot = ServicesSnapshot(enabled=config.enabled, configured=configured_names(config),
                                          interval_seconds=config.interval_seconds)
        self._lock = threading.Lock()  # guards the sampler swap on reload
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def snapshot(self) -> ServicesSnapshot:
        return self._snapshot

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="services-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def configure(self, config: ServicesConfig) -> None:
        """Apply a reloaded config; new groups start a fresh window (and fresh counters)."""
        with self._lock:
            if config == self._config:
                return
            errors = self._sampler.errors if self._sampler else None
            self._config = config
            self._sampler = Sampler(config, self._proc) if config.enabled else None
            if self._sampler is not None and errors is not None:
                self._sampler.errors = errors  # error counters never go back
            self._snapshot = ServicesSnapshot(enabled=config.enabled, configured=configured_names(config),
                                              interval_seconds=config.interval_seconds)

    def sample_once(self) -> None:
        """One scan; a bug or an unexpected /proc is logged and counted, never fatal."""
        with self._lock:
            sampler = self._sampler
            if sampler is None:
                return
            try:
                self._snapshot = sampler.sample(self._host_usable())
            except Exception:
                sampler.count("internal")
                log_kv(log, logging.ERROR, "services sample failed", exc_info=True)
                self._snapshot = replace(self._snapshot, errors=dict(sampler.errors))

    def _run(self) -> None:
        slow = False
        while not self._stop.is_set():
            started = time.monotonic()
            self.sample_once()
            was_slow, slow = slow, (self._snapshot.scan_seconds or 0) > self._config.interval_seconds / 2
            if slow and not was_slow:  # once when it starts, not every interval
                log_kv(log, logging.WARNING, "services scan takes more than half the interval",
                       scan_seconds=round(self._snapshot.scan_seconds or 0, 3), interval=self._config.interval_seconds)
            self._stop.wait(max(0.1, self._config.interval_seconds - (time.monotonic() - started)))
