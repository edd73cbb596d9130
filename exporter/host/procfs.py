"""Reading the kernel's accounting from ``/proc``: the CPUs' counters, processes and threads.

The one reader of ``/proc`` in the package (psutil reads the same files, one attribute at a
time, and costs several times as much per scan: benchmarks/proc_readers.py). A scan of every
process on the host every few seconds needs ``/proc/<pid>/stat`` once per process and nothing
more (comm, parent, start time and CPU time are all in it). Files that need more rights
(``exe``, ``maps``, ``environ``) are read only for the processes that need them, once each.
A process that exits mid-read raises ``Vanished``; one we may not read raises
``PermissionError``: callers count both and go on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Optional

PROC = "/proc"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
ProcKey = tuple[int, int]  # pid, start time in clock ticks after boot: one process, whatever reuses its pid
MAX_THREADS_READ = 4096  # threads of one process read per sample: beyond, the rest is ignored
MAX_MAPS_BYTES = 8 * 1024 * 1024  # a huge maps file (a JVM, a leak) is read up to this much
MAX_ENVIRON_BYTES = 4 * 1024 * 1024  # twice Linux's default limit on arguments and environment
# The fields of a ``cpu`` line of /proc/stat, in the kernel's order (proc(5)); guest and
# guest_nice are already counted in user and nice.
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")


class Vanished(Exception):
    """The process or thread exited while it was being read."""


@dataclass(frozen=True)
class Stat:
    """The fields of ``/proc/<pid>/stat`` (or ``task/<tid>/stat``) we use."""

    comm: str
    ppid: int
    cpu_seconds: float  # user + system, this task (or the whole process)
    threads: int
    start_ticks: int  # clock ticks after boot: (pid, start_ticks) identifies a process


def parse_stat(text: str) -> Stat:
    """Parse a stat line; ``comm`` may hold spaces and parentheses, so split at the last ')'."""
    head, _, rest = text.rpartition(")")
    comm = head.partition("(")[2]
    fields = rest.split()
    # fields[0] is field 3 (state) of proc(5): ppid 4, utime 14, stime 15, num_threads 20, starttime 22.
    return Stat(comm=comm, ppid=int(fields[1]), cpu_seconds=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
                threads=int(fields[17]), start_ticks=int(fields[19]))


def _read(path: str, limit: int = 65536) -> bytes:
    """At most ``limit`` bytes, read a page-sized chunk at a time (no buffer of ``limit`` bytes
    for a file that is usually a few hundred)."""
    try:
        with open(path, "rb", buffering=0) as handle:
            chunks, size = [], 0
            while size < limit and (chunk := handle.read(min(65536, limit - size))):
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)
    except (FileNotFoundError, ProcessLookupError):
        raise Vanished(path) from None
    except PermissionError:
        raise
    except OSError as exc:  # ESRCH and friends while the process is being reaped
        raise Vanished(f"{path}: {exc}") from None


def read_stat(pid: int, tid: Optional[int] = None, proc: str = PROC) -> Stat:
    path = f"{proc}/{pid}/stat" if tid is None else f"{proc}/{pid}/task/{tid}/stat"
    try:
        return parse_stat(_read(path).decode("utf-8", "replace"))
    except (ValueError, IndexError):
        raise Vanished(path) from None  # an empty read: the task is gone


def parse_cpu_times(text: str) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The whole host's and each CPU's cumulative times in seconds, from /proc/stat's text."""
    total: dict[str, float] = {}
    per_cpu: list[dict[str, float]] = []
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *ticks = line.split()
        times = {field: int(value) / CLOCK_TICKS for field, value in zip(CPU_FIELDS, ticks)}
        if name == "cpu":
            total = times
        else:
            per_cpu.append(times)
    return total, per_cpu


def cpu_times(proc: str = PROC) -> dict[str, float]:
    """The whole host's cumulative CPU times in seconds (user, idle, iowait, steal...)."""
    return parse_cpu_times(_read(f"{proc}/stat", 1 << 20).decode("ascii", "replace"))[0]


def per_cpu_times(proc: str = PROC) -> list[dict[str, float]]:
    """Each online CPU's cumulative times in seconds, in the kernel's order."""
    return parse_cpu_times(_read(f"{proc}/stat", 1 << 20).decode("ascii", "replace"))[1]


def memory_total_bytes(proc: str = PROC) -> int:
    """The host's physical memory (``MemTotal`` of /proc/meminfo)."""
    for line in _read(f"{proc}/meminfo").decode("ascii", "replace").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{proc}/meminfo has no MemTotal")


def environ(pid: int, proc: str = PROC) -> dict[str, str]:
    """A process's environment as it started; needs the rights ptrace's read mode needs."""
    pairs = _read(f"{proc}/{pid}/environ", MAX_ENVIRON_BYTES).split(b"\0")
    return dict(pair.decode("utf-8", "replace").partition("=")[::2] for pair in pairs if b"=" in pair)


def pids(proc: str = PROC) -> Iterator[int]:
    for name in os.listdir(proc):
        if name.isdigit():
            yield int(name)


def thread_ids(pid: int, proc: str = PROC) -> list[int]:
    try:
        names = os.listdir(f"{proc}/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        raise Vanished(f"{proc}/{pid}/task") from None
    return sorted(int(n) for n in names if n.isdigit())[:MAX_THREADS_READ]


def thread_cpu_seconds(pid: int, proc: str = PROC) -> dict[int, float]:
    """CPU seconds of each live thread; threads that exit mid-read are left out."""
    times = {}
    for tid in thread_ids(pid, proc):
        try:
            times[tid] = read_stat(pid, tid, proc).cpu_seconds
        except Vanished:
            continue
    return times


def voluntary_switches(pid: int, tid: int, proc: str = PROC) -> int:
    """A thread's voluntary context switches (``task/<tid>/status``; the process's own
    ``status`` counts only its first thread)."""
    for line in _read(f"{proc}/{pid}/task/{tid}/status").decode("utf-8", "replace").splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise Vanished(f"{proc}/{pid}/task/{tid}/status")


def cmdline(pid: int, proc: str = PROC) -> str:
    """The command line, arguments joined by spaces (as process-exporter matches it)."""
    return _read(f"{proc}/{pid}/cmdline").rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


def exe(pid: int, proc: str = PROC) -> str:
    """The executable's path as the process sees it; needs the rights ptrace's read mode needs."""
    try:
        return os.readlink(f"{proc}/{pid}/exe")
    except (FileNotFoundError, ProcessLookupError):
        raise Vanished(f"{proc}/{pid}/exe") from None
    except PermissionError:
        raise
    except OSError:
        return ""  # a kernel thread has no executable


def cgroup(pid: int, proc: str = PROC) -> str:
    """The text of ``/proc/<pid>/cgroup`` (``hostinfo`` reads the path and the CPU quota)."""
    return _read(f"{proc}/{pid}/cgroup").decode("utf-8", "replace")


def mapped_files(pid: int, proc: str = PROC) -> list[str]:
    """Paths of the files mapped into the process (its libraries, its executable)."""
    files = set()
    for line in _read(f"{proc}/{pid}/maps", MAX_MAPS_BYTES).decode("utf-8", "replace").splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            files.add(parts[5])
    return sorted(files)


def parse_cpu_list(text: str) -> int:
    """How many CPUs a list such as ``0-3,8,10-11`` names."""
    count = 0
    for part in text.strip().split(","):
        if part:
            low, _, high = part.partition("-")
            count += int(high or low) - int(low) + 1
    return count


def affinity(pid: int, proc: str = PROC) -> int:
    """How many CPUs the process may run on (``Cpus_allowed_list`` of its status)."""
    for line in _read(f"{proc}/{pid}/status").decode("utf-8", "replace").splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return parse_cpu_list(line.split(":", 1)[1])
    raise Vanished(f"{proc}/{pid}/status")
