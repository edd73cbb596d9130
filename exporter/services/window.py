"""One window of the watched services: the figures between two scans, pure arithmetic, no I/O.

Per process, over a window: ``cores used`` = CPU seconds / wall seconds; ``busy threads`` =
threads that used more than ``busy_thread_share`` of a core; ``capacity`` = min(busy threads,
usable cores); ``parallelism`` = cores used / capacity. The *serialisation signature* is two
or more busy threads and two or more usable cores, yet no more than ``serial_cores`` cores
used, and the kernel's per-thread accounting shows the threads held back by the runtime —
blocked for half a thread's worth of the window, or going to sleep again and again as a
GIL waiter does — rather than runnable and waiting for a CPU the host gave to others: on a
GIL build, the GIL; on a free-threaded build, a lock or an extension that re-enabled the
GIL. Without that accounting it needs ``min_free_cores`` idle on the host, and says it
cannot tell (``host_busy``) where there are none.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Mapping, Optional

from exporter.config.settings import ServicesConfig
from exporter.host.procfs import ProcKey
from exporter.model.verdicts import SERIALISED_SHORTFALL
from exporter.services.pyidentity import PythonIdentity
# refused: a file a process points at was not a regular file, or over its byte or time bound
# (procfs.UntrustedFile), or an ELF over exporter.services.elf's caps.
ERROR_REASONS = ("permission", "vanished", "pid_reused", "too_many_groups", "refused", "internal")
# Group states, one of them 1 per group: what the last window can say.
STATES = ("parallel", "serial", "host_busy", "one_usable_core", "one_busy_thread", "idle", "no_process")
# A group is serial when at least this share of its judged processes showed the signature
# (the services alerts use the same figure).
SERIAL_SHARE = 0.5
# A busy thread that goes to sleep this often waits on something: a GIL waiter wakes to ask for
# the GIL every switch interval (200 times a second at the default 5 ms), a thread that
# computes freely almost never sleeps.
WAITER_SWITCHES_PER_SECOND = 20.0
CohortKey = tuple[str, PythonIdentity]  # group, interpreter identity


@dataclass(frozen=True)
class Reading:
    """One process as read in one scan."""

    group: str
    identity: PythonIdentity
    at: float  # monotonic time of the read
    cpu_seconds: float  # the whole process, exited threads included
    threads: Mapping[int, float]  # tid -> CPU seconds
    switches: Mapping[int, int]  # tid -> voluntary context switches, for threads busy at this read
    usable_cores: float  # affinity, capped by the cgroup's CPU quota
    # tid -> seconds runnable (on a CPU or waiting for one): the kernel's accounting, for the
    # threads of multi-threaded processes; empty where the kernel keeps none.
    runnable: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Scan:
    """Every watched process at one moment, and the host's idle time then."""

    at: float
    host_idle_seconds: float  # idle + iowait, all CPUs together
    readings: Mapping[ProcKey, Reading]
    cut: bool = False  # stopped at its time bound before every watched process was read
    # Watched processes a cut scan did not reach, with their last reading: the next window
    # of each starts there.
    unread: Mapping[ProcKey, Reading] = field(default_factory=dict)

    def last(self, key: ProcKey) -> Optional[Reading]:
        """The last reading of a process as of this scan, read in it or before."""
        return self.readings.get(key) or self.unread.get(key)


@dataclass(frozen=True)
class ProcessWindow:
    """One process's figures between two scans."""

    cores_used: float
    busy_threads: int
    usable_cores: float
    switches_per_busy_thread: Optional[float]  # per second; None: no busy thread read twice
    serialised: Optional[bool]  # None: the window cannot tell (see ``signature``)
    runnable_threads: Optional[float] = None  # busy threads runnable at once; None: no accounting

    @property
    def capacity(self) -> float:
        return min(float(self.busy_threads), self.usable_cores)

    @property
    def parallelism(self) -> Optional[float]:
        return self.cores_used / self.capacity if self.capacity > 0 else None


@dataclass(frozen=True)
class Cohort:
    """The processes of one group running one interpreter identity, over the last window."""

    group: str
    identity: PythonIdentity
    processes: int
    threads: int
    cores_used: float
    busy_threads: int
    usable_cores: float  # the most any of its processes may use
    parallelism: Optional[float]  # cores used / capacity; None without busy threads
    process_parallelism: tuple[float, ...]  # min, median, max over processes with busy threads
    serialised_ratio: Optional[float]  # share of the processes the window could judge; None: none
    switches_per_busy_thread: Optional[float]


@dataclass(frozen=True)
class ServicesSnapshot:
    """What a scrape and the status page show; replaced as a whole after every scan."""

    enabled: bool = False
    configured: tuple[str, ...] = ()  # group names without placeholders: shown even when empty
    cohorts: tuple[Cohort, ...] = ()
    states: Mapping[str, str] = field(default_factory=dict)  # group -> one of STATES
    cpu_seconds: Mapping[CohortKey, float] = field(default_factory=dict)  # counters, windowed deltas summed
    errors: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_REASONS, 0))
    window_seconds: Optional[float] = None
    host_idle_cores: Optional[float] = None
    sampled_at: Optional[float] = None  # Unix time of the last scan
    scan_seconds: Optional[float] = None  # wall time the last scan took
    scan_overruns: int = 0  # scans cut at their time bound, since the start
    scan_started_at: Optional[float] = None  # Unix time the scan in progress began; None between scans
    scanned_processes: int = 0
    interval_seconds: float = 5.0


# --- one window's arithmetic -------------------------------------------------------------


def process_window(before: Reading, after: Reading, config: ServicesConfig, host_idle_cores: float) -> ProcessWindow:
    """The figures of one process between two readings of it."""
    seconds = max(after.at - before.at, 1e-6)
    busy = [tid for tid, cpu in after.threads.items()
            if tid in before.threads and (cpu - before.threads[tid]) / seconds > config.busy_thread_share]
    switched = [after.switches[t] - before.switches[t] for t in busy if t in before.switches and t in after.switches]
    cores = max(after.cpu_seconds - before.cpu_seconds, 0.0) / seconds
    usable = after.usable_cores
    counted = [t for t in busy if t in before.runnable and t in after.runnable]
    runnable = (sum(after.runnable[t] - before.runnable[t] for t in counted) / seconds
                if busy and len(counted) == len(busy) else None)
    return ProcessWindow(cores_used=cores, busy_threads=len(busy), usable_cores=usable,
                         switches_per_busy_thread=sum(switched) / len(switched) / seconds if switched else None,
                         serialised=signature(cores, len(busy), usable, host_idle_cores, config, runnable,
                                              sum(switched) / len(switched) / seconds if switched else None),
                         runnable_threads=runnable)


def signature(cores: float, busy: int, usable: float, host_idle_cores: float, config: ServicesConfig,
              runnable: Optional[float] = None, switches_per_thread: Optional[float] = None) -> Optional[bool]:
    """Whether busy threads that could run in parallel took turns; None: cannot tell.

    More than ``serial_cores`` cores used is evidence of parallelism on any host. The kernel's
    accounting says who held the threads back on any host too: threads blocked for half a
    thread's worth of the window, or that go to sleep again and again (a thread waiting for
    the GIL wakes every switch interval to ask for it), were held back by the runtime —
    the GIL, a lock; threads runnable at once that never block were held back by the host.
    Without it, about one core proves serialisation only while the host had cores to spare.
    """
    if busy < 2 or usable < 2:
        return None
    if cores > config.serial_cores:
        return False
    blocked = runnable is not None and busy - runnable >= SERIALISED_SHORTFALL
    waits = switches_per_thread is not None and switches_per_thread >= WAITER_SWITCHES_PER_SECOND
    if blocked or waits:
        return True
    if runnable is not None and switches_per_thread is not None:
        return False  # runnable at once and never asleep: the host, not the runtime, held them back
    return True if host_idle_cores >= config.min_free_cores else None


def cohort(group: str, identity: PythonIdentity, readings: list[Reading], windows: list[ProcessWindow],
           host_usable: float) -> Cohort:
    """Sum one cohort's processes; parallelism over the processes' summed capacity."""
    capacity = min(sum(w.capacity for w in windows), host_usable)
    busy = [w.parallelism for w in windows if w.parallelism is not None]
    judged = [w.serialised for w in windows if w.serialised is not None]
    rates = [w.switches_per_busy_thread for w in windows if w.switches_per_busy_thread is not None]
    cores = sum(w.cores_used for w in windows)
    return Cohort(
        group=group, identity=identity, processes=len(readings), threads=sum(len(r.threads) for r in readings),
        cores_used=cores, busy_threads=sum(w.busy_threads for w in windows),
        usable_cores=max((r.usable_cores for r in readings), default=0.0),
        parallelism=cores / capacity if capacity > 0 else None,
        process_parallelism=(min(busy), statistics.median(busy), max(busy)) if busy else (),
        serialised_ratio=sum(judged) / len(judged) if judged else None,
        switches_per_busy_thread=statistics.fmean(rates) if rates else None)


def group_state(windows: list[ProcessWindow], present: bool) -> str:
    """What the window says about one group, from the most to the least specific."""
    if not present:
        return "no_process"
    judged = [w.serialised for w in windows if w.serialised is not None]
    if judged:
        return "serial" if sum(judged) / len(judged) >= SERIAL_SHARE else "parallel"
    if not any(w.busy_threads for w in windows):
        return "idle"
    multi = [w for w in windows if w.busy_threads >= 2]
    if not multi:
        return "one_busy_thread"
    if all(w.usable_cores < 2 for w in multi):
        return "one_usable_core"
    return "host_busy"
