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
# A scan is cut at this share of the interval, so the windows stay about one interval long,
SCAN_SHARE = 0.5
# and at most this long: a host's scan takes tens of milliseconds (250 ms wall for 1 000
# watched processes on a loaded 2-CPU VM, benchmarks/results-services.md).
MAX_SCAN_SECONDS = 10.0


def scan_bound(interval_seconds: float) -> float:
    """How long one scan may take before it is cut."""
    return min(interval_seconds * SCAN_SHARE, MAX_SCAN_SECONDS)


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
        self.read_in: dict[ProcKey, int] = {}  # the scan that last read each watched process
        self.scans = 0
        self.overruns = 0  # scans cut at their bound
        self.bound_seconds = scan_bound(config.interval_seconds)

    def count(self, reason: str) -> None:
        self.errors[reason] += 1

    def scan(self) -> tuple[Scan, int]:
        """Read every process's stat, decide groups, read the watched ones in detail, until
        the scan's bound; returns the scan and how many processes' stat it read."""
        deadline = procfs.Deadline.after(self.bound_seconds)
        self.scans += 1
        stats, read_at, cut = self._read_stats(deadline)
        members = self.matcher.decide(stats, self.count, deadline, complete=not cut)
        readings, cut_short = self._read_members(members, stats, read_at, deadline)
        cut = cut or cut_short
        unread = {}
        if cut and self.previous is not None:
            # those still watched, and those a scan cut short of /proc could not see
            unread = {k: r for k, r in {**self.previous.unread, **self.previous.readings}.items()
                      if k not in readings and (k in members or k[0] not in stats)}
        else:  # only a whole scan knows which processes are gone
            for cache in (self.identities, self.usable, self.read_in):
                for gone in cache.keys() - members.keys():
                    del cache[gone]
        host = procfs.cpu_times()
        return Scan(time.monotonic(), host["idle"] + host.get("iowait", 0.0), readings, cut, unread), len(stats)

    def _read_stats(self, deadline: procfs.Deadline) -> tuple[dict[int, procfs.Stat], dict[int, float], bool]:
        """Every process's stat and when it was read; True when the deadline cut the list."""
        stats: dict[int, procfs.Stat] = {}
        read_at: dict[int, float] = {}
        cut = False
        for pid in procfs.pids(self.proc):
            if deadline.passed():
                cut = True
                break
            try:
                stats[pid] = procfs.read_stat(pid, proc=self.proc)
                read_at[pid] = time.monotonic()
            except procfs.Vanished:
                continue  # exited between the listing and the read: it was never watched
            except PermissionError:
                self.count("permission")
            except procfs.Refused:
                self.count("refused")
        for pid, stat in stats.items():
            if self.last_pids.get(pid, stat.start_ticks) != stat.start_ticks:
                self.count("pid_reused")
        self.last_pids = {pid: stat.start_ticks for pid, stat in stats.items()}
        return stats, read_at, cut

    def _read_members(self, members: Mapping[ProcKey, str], stats: Mapping[int, procfs.Stat],
                      read_at: Mapping[int, float], deadline: procfs.Deadline) -> tuple[dict[ProcKey, Reading], bool]:
        """The watched processes' readings; True when the deadline cut them short.

        Processes read before stay measured whatever new ones cost: they come first, the
        longest unread first; new ones (an identity to read) after them.
        """
        self.quotas = {}
        readings: dict[ProcKey, Reading] = {}
        for key in sorted(members, key=lambda k: (k not in self.read_in, self.read_in.get(k, 0))):
            try:
                deadline.check()
                reading = self._read(key, members[key], stats[key[0]], read_at[key[0]], deadline)
            except procfs.ScanCut:
                return readings, True
            if reading is not None:
                readings[key] = reading
                self.read_in[key] = self.scans
        return readings, False

    def _read(self, key: ProcKey, group: str, stat: procfs.Stat, stat_at: float,
              deadline: procfs.Deadline) -> Optional[Reading]:
        pid = key[0]
        try:
            runnable: dict[int, float] = {}  # a single thread cannot take turns with itself
            if stat.threads == 1:  # most processes: the scan's own read says it all
                at, cpu, threads = stat_at, stat, {pid: stat.cpu_seconds}
            else:  # the threads, then the process again, so both span the same window
                at = time.monotonic()
                threads = procfs.thread_cpu_seconds(pid, self.proc)
                runnable = procfs.thread_runnable_seconds(pid, threads, self.proc)
                cpu = procfs.read_stat(pid, proc=self.proc)
            if cpu.start_ticks != key[1]:
                self.count("pid_reused")  # reused between the scan and this read
                return None
            usable = self._usable_cores(key)
            identity = self._identity(key, deadline)
            switches = self._switches(key, threads, at)
        except procfs.Vanished:
            self.count("vanished")
            return None
        except PermissionError:
            self.count("permission")
            return None
        except procfs.Refused:
            self.count("refused")
            return None
        return Reading(group, identity, at, cpu.cpu_seconds, threads, switches, usable, runnable)

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

    def _identity(self, key: ProcKey, deadline: procfs.Deadline) -> PythonIdentity:
        """Read once per process (ScanCut leaves it for the next scan)."""
        if key not in self.identities:
            pid = key[0]
            try:
                self.identities[key] = identify(pid, procfs.exe(pid, self.proc),
                                                lambda: procfs.mapped_files(pid, self.proc, deadline),
                                                self.binaries, self.proc, deadline, self.count)
            except PermissionError:
                self.count("permission")
                self.identities[key] = UNREADABLE
            except procfs.Refused:
                self.count("refused")
                self.identities[key] = UNREADABLE
        return self.identities[key]

    def _switches(self, key: ProcKey, threads: Mapping[int, float], at: float) -> dict[int, int]:
        """Voluntary switches of the threads busy since the last scan (read only for those)."""
        before = self.previous.last(key) if self.previous else None
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
        self.overruns += current.cut
        per_cohort: dict[CohortKey, list[Reading]] = {}
        for reading in current.readings.values():
            per_cohort.setdefault((reading.group, reading.identity), []).append(reading)
        window = current.at - previous.at if previous else None
        idle = (current.host_idle_seconds - previous.host_idle_seconds) / window if previous and window else None
        windows: dict[CohortKey, list[ProcessWindow]] = {}
        if previous is not None and idle is not None:
            for key, after in current.readings.items():
                before = previous.last(key)
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
            scan_overruns=self.overruns, scanned_processes=scanned, interval_seconds=self.config.interval_seconds)


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
        self._lock = threading.Lock()  # guards the sampler swap on reload (never held during a scan)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        # Unix time the scan in progress began: a scan stuck in a read shows here, even after
        # a reload replaced its sampler.
        self._scan_started: Optional[float] = None

    def snapshot(self) -> ServicesSnapshot:
        return replace(self._snapshot, scan_started_at=self._scan_started)

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
            old = self._sampler
            self._config = config
            self._sampler = Sampler(config, self._proc) if config.enabled else None
            if self._sampler is not None and old is not None:
                self._sampler.errors = old.errors  # counters never go back
                self._sampler.overruns = old.overruns
            self._snapshot = ServicesSnapshot(enabled=config.enabled, configured=configured_names(config),
                                              interval_seconds=config.interval_seconds)

    def sample_once(self) -> None:
        """One scan; a bug or an unexpected /proc is logged and counted, never fatal."""
        with self._lock:
            sampler = self._sampler
        if sampler is None:
            return
        self._scan_started = time.time()
        try:
            snapshot = sampler.sample(self._host_usable())
        except Exception:
            sampler.count("internal")
            log_kv(log, logging.ERROR, "services sample failed", exc_info=True)
            snapshot = replace(self._snapshot, errors=dict(sampler.errors))
        finally:
            self._scan_started = None
        with self._lock:
            if self._sampler is sampler:  # a reload during the scan started afresh: drop it
                self._snapshot = snapshot

    def _run(self) -> None:
        cut = False
        while not self._stop.is_set():
            started = time.monotonic()
            overruns = self._snapshot.scan_overruns
            self.sample_once()
            was_cut, cut = cut, self._snapshot.scan_overruns > overruns
            if cut and not was_cut:  # once when it starts, not every interval
                log_kv(log, logging.WARNING, "services scan cut at its time bound: the processes it did not reach "
                       "wait for the next scan", bound_seconds=scan_bound(self._config.interval_seconds),
                       interval=self._config.interval_seconds)
            self._stop.wait(max(0.1, self._config.interval_seconds - (time.monotonic() - started)))
