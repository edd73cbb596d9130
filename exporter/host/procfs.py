"""Reading the kernel's accounting from ``/proc``: the CPUs' counters, processes and threads.

The one reader of ``/proc`` in the package (psutil reads the same files, one attribute at a
time, and costs several times as much per scan: benchmarks/proc_readers.py). A scan of every
process on the host every few seconds needs ``/proc/<pid>/stat`` once per process and nothing
more (comm, parent, start time and CPU time are all in it). Files that need more rights
(``exe``, ``maps``, ``environ``) are read only for the processes that need them, once each.
A process that exits mid-read raises ``Vanished``; one we may not read raises
``PermissionError``: callers count both and go on.

Every file is opened without blocking and read only if it is a regular file, with a byte cap.
The files a process can point us at (the binaries its ``maps`` names) are another user's:
``UntrustedFile`` opens them without ever opening a device or a FIFO, and holds each read to a
byte budget and a deadline (``Deadline``), so a scan's time is bounded by what it reads.
"""

from __future__ import annotations

import math
import os
import stat as stat_mode
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

PROC = "/proc"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
ProcKey = tuple[int, int]  # pid, start time in clock ticks after boot: one process, whatever reuses its pid
MAX_THREADS_READ = 4096  # threads of one process read per sample: beyond, the rest is ignored
MAX_MAPS_BYTES = 8 * 1024 * 1024  # a huge maps file (a JVM, a leak) is read up to this much
MAX_ENVIRON_BYTES = 4 * 1024 * 1024  # twice Linux's default limit on arguments and environment
# The command line matchers see: its first 4 KiB (one page, all /proc/<pid>/cmdline showed
# before Linux 4.2, and what ps shows). A regex's cost grows with the text, up to its square
# for a pattern such as 'celery .* -Q': 64 KiB of "celery " cost half a second a process.
MAX_CMDLINE_BYTES = 4096
# One read of another user's file may take this long: a local file within our byte caps reads
# in milliseconds, so only a stalled network file system reaches it.
FILE_SECONDS = 1.0
_CHUNK_BYTES = 65536  # one read() at a time, so a deadline is checked between them
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


class Refused(Exception):
    """A file broke the rules for reading another user's file: not a regular file, or over
    its byte cap or its time."""


class ScanCut(Exception):
    """The scan's time bound passed: what is left of it waits for the next scan."""


@dataclass(frozen=True)
class Deadline:
    """When a scan must end (``time.monotonic()``); each file read in it ends by
    ``FILE_SECONDS`` after it starts, or with the scan."""

    at: float = math.inf

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def check(self) -> None:
        """Raise ScanCut once the scan's time is up."""
        if self.passed():
            raise ScanCut()

    def for_file(self) -> float:
        return min(self.at, time.monotonic() + FILE_SECONDS)


UNBOUNDED = Deadline()


def _read(path: str, limit: int = 65536, deadline: Deadline = UNBOUNDED) -> bytes:
    """At most ``limit`` bytes of the regular file ``path``, a chunk at a time (no buffer of
    ``limit`` bytes for a file that is usually a few hundred)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except (FileNotFoundError, ProcessLookupError):
        raise Vanished(path) from None
    except PermissionError:
        raise
    except OSError as exc:  # ESRCH and friends while the process is being reaped
        raise Vanished(f"{path}: {exc}") from None
    try:
        _require_regular(fd, path)
        return _read_to_end(fd, path, limit, deadline.for_file(), deadline)
    except OSError as exc:
        raise Vanished(f"{path}: {exc}") from None
    finally:
        os.close(fd)


def _require_regular(fd: int, path: str) -> os.stat_result:
    status = os.fstat(fd)
    if not stat_mode.S_ISREG(status.st_mode):
        raise Refused(f"{path}: not a regular file")
    return status


def _read_to_end(fd: int, path: str, limit: int, until: float, deadline: Deadline) -> bytes:
    chunks, size = [], 0
    while size < limit and (chunk := os.read(fd, min(_CHUNK_BYTES, limit - size))):
        chunks.append(chunk)
        size += len(chunk)
        if time.monotonic() >= until:
            deadline.check()
            raise Refused(f"{path}: not read within {FILE_SECONDS} s")
    return b"".join(chunks)


class UntrustedFile:
    """A file another user may have written or replaced since we learnt its name.

    Opened first with ``O_PATH``, which opens nothing (a device's driver never sees an open,
    a FIFO never waits for a writer), and read only when ``fstat`` shows a regular file: then
    the same inode is opened for reading, without blocking, and checked again. Every read
    counts against ``max_bytes`` and the deadline; ``Refused`` when either is exceeded or the
    file is not what it must be.
    """

    def __init__(self, path: str, max_bytes: int, deadline: Deadline = UNBOUNDED) -> None:
        self.path = path
        self._left = max_bytes
        self._deadline = deadline
        self._until = deadline.for_file()
        handle = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            _require_regular(handle, path)
            self.fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        finally:
            os.close(handle)
        try:
            status = _require_regular(self.fd, path)
        except BaseException:
            os.close(self.fd)
            raise
        self.size = status.st_size
        # One file whatever its name: an inode, as long as it keeps its size and time.
        self.key = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)

    def pread(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at ``offset``; Refused past the end, the budget or the time."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise Refused(f"{self.path}: {size} bytes at {offset} are outside the file")
        if size > self._left:
            raise Refused(f"{self.path}: more than the bytes allowed for one file")
        self._left -= size
        chunks = []
        while size > 0:
            if time.monotonic() >= self._until:
                self._deadline.check()
                raise Refused(f"{self.path}: not read within {FILE_SECONDS} s")
            chunk = os.pread(self.fd, min(_CHUNK_BYTES, size), offset)
            if not chunk:
                raise Refused(f"{self.path}: shorter than it said")
            chunks.append(chunk)
            offset += len(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> UntrustedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def thread_runnable_seconds(pid: int, tids: Iterable[int], proc: str = PROC) -> dict[int, float]:
    """Seconds each thread was runnable — on a CPU or waiting for one — from the kernel's
    per-thread accounting (``task/<tid>/schedstat``); threads that exit mid-read, or a kernel
    that keeps no such accounting, are left out."""
    times = {}
    for tid in tids:
        try:
            fields = _read(f"{proc}/{pid}/task/{tid}/schedstat", 256).split()
            times[tid] = (int(fields[0]) + int(fields[1])) / 1e9
        except (Vanished, PermissionError, ValueError, IndexError):
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
    """The command line's first ``MAX_CMDLINE_BYTES``, arguments joined by spaces (as
    process-exporter matches it)."""
    raw = _read(f"{proc}/{pid}/cmdline", MAX_CMDLINE_BYTES)
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


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


def mapped_files(pid: int, proc: str = PROC, deadline: Deadline = UNBOUNDED) -> list[str]:
    """Paths of the files mapped into the process (its libraries, its executable)."""
    files = set()
    for line in _read(f"{proc}/{pid}/maps", MAX_MAPS_BYTES, deadline).decode("utf-8", "replace").splitlines():
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
