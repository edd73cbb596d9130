"""Which /proc reader: psutil or exporter.host.procfs? The cost of one scan at N processes.

The services watcher reads every process on the host each window (comm, parent, start time,
CPU seconds, thread count), and the containment scan reads every process's environment.
This starts N sleeping processes, then times a scan of the whole host both ways, in one run,
alternating, and prints the medians. Run by hand (as root, 2 cores are enough):

    .venv/bin/python benchmarks/proc_readers.py --processes 1000 --scans 20
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402  (the reference measured against; not a dependency of the package)

from exporter.host import procfs  # noqa: E402
from machine import cpu_model  # noqa: E402


def scan_procfs() -> int:
    """The watcher's scan: /proc/<pid>/stat of every process, parsed once."""
    count = 0
    for pid in procfs.pids():
        try:
            procfs.read_stat(pid)
        except (procfs.Vanished, PermissionError):
            continue
        count += 1
    return count


def scan_psutil() -> int:
    """The same fields through psutil."""
    count = 0
    for process in psutil.process_iter(["name", "ppid", "cpu_times", "create_time", "num_threads"]):
        count += process.info["name"] is not None
    return count


def environ_procfs() -> int:
    """The containment scan: every process's environment."""
    count = 0
    for pid in procfs.pids():
        try:
            procfs.environ(pid)
        except (procfs.Vanished, PermissionError):
            continue
        count += 1
    return count


def environ_psutil() -> int:
    count = 0
    for process in psutil.process_iter():
        try:
            process.environ()
        except (psutil.Error, OSError):
            continue
        count += 1
    return count


def timed(scan) -> float:
    started = time.perf_counter()
    scan()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=1000)
    parser.add_argument("--scans", type=int, default=20)
    args = parser.parse_args()
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(args.processes)]
    try:
        time.sleep(1)
        total = len(list(procfs.pids()))
        results: dict[str, list[float]] = {name: [] for name in ("stat: procfs", "stat: psutil",
                                                                   "environ: procfs", "environ: psutil")}
        for _ in range(args.scans):  # alternating, so a drift of the VM's speed hits both alike
            results["stat: procfs"].append(timed(scan_procfs))
            results["stat: psutil"].append(timed(scan_psutil))
            results["environ: procfs"].append(timed(environ_procfs))
            results["environ: psutil"].append(timed(environ_psutil))
    finally:
        for sleeper in sleepers:
            sleeper.kill()
        for sleeper in sleepers:
            sleeper.wait()
    print(f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
          f"CPython {platform.python_version()}, psutil {psutil.__version__}")
    print(f"{total} processes on the host, {args.scans} scans each, alternating\n")
    print("| scan | median ms | min ms | max ms |")
    print("|---|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values) * 1000:.1f} | {min(values) * 1000:.1f} | "
              f"{max(values) * 1000:.1f} |")


if __name__ == "__main__":
    main()
