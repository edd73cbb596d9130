"""A hostile neighbourhood for the services watcher: every scan within its bound, scrapes under 50 ms.

``python benchmarks/services_hostile.py [--minutes 10] [--interval 1] [--markdown OUT.md]``

Attackers are processes a local user could run, each matched by a watched group, and
replaced at random every few seconds (so their files are read again):

- ``sleep`` with a small real library preloaded from a file named ``libpython3.13t.so``, whose
  path is then swapped for a FIFO, a 4 GiB sparse file, an ELF whose headers declare random
  counts, random bytes, a forged free-threaded libpython, a directory or a symlink loop;
- a copy of ``sleep`` named ``python3.13t``;
- Python processes with 64 KiB command lines (``celery celery ...``), searched by the docs'
  ``celery .* -Q`` regex;
- a copy of the Python executable named ``myapp`` that maps a file named like libpython
  20 000 times (a maps file of about 2 MiB, read because the name ``myapp`` settles nothing).

The real ``ServiceWatcher`` samples on its own thread every ``--interval``; a scraper renders
the services families (``generate_latest``) 20 times a second in the same process (they share
its GIL). Reported: scans and their wall time against the bound, scans cut, the longest
``scan_running_seconds`` a scrape saw, scrape latency, the sampler thread's CPU and the RSS.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from prometheus_client import CollectorRegistry, generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import fake_elf  # noqa: E402
from benchmarks.machine import publish, this_run  # noqa: E402
from exporter.config.loader import config_from_mapping  # noqa: E402
from exporter.host import procfs  # noqa: E402
from exporter.services.collector import ServiceCollector  # noqa: E402
from exporter.services.watcher import ServiceWatcher, scan_bound  # noqa: E402

SMALL_LIBRARY = "/lib/x86_64-linux-gnu/libutil.so.1"
SCRAPES_PER_SECOND = 20
SCRAPE_TARGET_MS = 50.0  # issue 27's "Done when"
POPULATION = 24  # attackers alive at a time
CHURN_SECONDS = 5.0  # two of them replaced this often
GROUPS = [
    {"name": "celery-{queue}", "cmdline": [r"celery .* -Q (?P<queue>\w+)"]},
    {"name": "long-cmdline", "cmdline": ["hostile-long-cmdline"]},
    {"name": "hostile", "comm": ["sleep", "python3.13t", "myapp"]},
]


class Attackers:
    """Hostile processes and their files, in a directory of their own."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.directory = Path(tempfile.mkdtemp(prefix="pyparallel-hostile-"))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.started: dict[str, int] = {}
        self.kinds: dict[str, Callable[[], subprocess.Popen[bytes]]] = {
            **{f"swapped to {name}": (lambda make=make: self.swapped(make)) for name, make in SWAPS.items()},
            "sleep named python3.13t": self.impostor, "64 KiB command line": self.long_cmdline,
            "20 000 mappings": self.many_mappings}

    def start_one(self) -> None:
        kind = self.random.choice(sorted(self.kinds))
        self.started[kind] = self.started.get(kind, 0) + 1
        try:
            self.processes.append(self.kinds[kind]())
        except (OSError, TimeoutError) as exc:
            print(f"could not start {kind}: {exc}", file=sys.stderr)

    def replace_some(self, count: int) -> None:
        for process in self.random.sample(self.processes, min(count, len(self.processes))):
            self.stop(process)
        for _ in range(count):
            self.start_one()

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        self.processes.remove(process)
        process.kill()
        process.wait()

    def close(self) -> None:
        for process in list(self.processes):
            self.stop(process)
        shutil.rmtree(self.directory, ignore_errors=True)

    def fresh(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.directory))

    def swapped(self, make: Callable[[Path, random.Random], None]) -> subprocess.Popen[bytes]:
        library = self.fresh() / "libpython3.13t.so"
        shutil.copy(SMALL_LIBRARY, library)
        process = spawn(["sleep", "100000"], env={"LD_PRELOAD": str(library)})
        wait_until_mapped(process.pid, str(library))
        library.unlink()
        make(library, self.random)
        return process

    def impostor(self) -> subprocess.Popen[bytes]:
        impostor = self.fresh() / "python3.13t"
        shutil.copy(shutil.which("sleep") or "/bin/sleep", impostor)
        return spawn([str(impostor), "100000"])

    def long_cmdline(self) -> subprocess.Popen[bytes]:
        return spawn([sys.executable, "-c", "import time; time.sleep(1e6)", "hostile-long-cmdline"]
                     + ["celery"] * (64 * 1024 // 7))

    def many_mappings(self) -> subprocess.Popen[bytes]:
        directory = self.fresh()
        myapp = directory / "myapp"
        shutil.copy(os.path.realpath(sys.executable), myapp)
        mapped = directory / "libpython3.11.so.1.0"
        mapped.write_bytes(bytes(8192))
        holder = ("import mmap, sys, time; f = open(sys.argv[1], 'rb'); "
                  "m = [mmap.mmap(f.fileno(), 4096, access=mmap.ACCESS_READ) for _ in range(20000)]; time.sleep(1e6)")
        return spawn([str(myapp), "-c", holder, str(mapped)])


def spawn(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until_mapped(pid: int, path: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if path in Path(f"/proc/{pid}/maps").read_text():
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{pid} never mapped {path}")


def fifo(path: Path, _: random.Random) -> None:
    os.mkfifo(path)


def sparse(path: Path, _: random.Random) -> None:
    with open(path, "wb") as handle:
        handle.truncate(4 << 30)


def lying_elf(path: Path, rng: random.Random) -> None:
    lies = {"symbol_table_bytes": rng.choice([200_000_000 * 24, 1 << 40, 4 << 20]),
            "section_count": rng.choice([4, 1000, 60000]), "string_table_bytes": rng.choice([1 << 20, 1 << 33])}
    name, value = rng.choice(sorted(lies.items()))
    data = fake_elf.elf_file(fake_elf.interpreter(3, 13, 5, True), **{name: value})
    path.write_bytes(data + bytes(36 * 1024 - len(data)))


def random_bytes(path: Path, rng: random.Random) -> None:
    path.write_bytes(b"\x7fELF" + rng.randbytes(rng.randrange(0, 100_000)))


def forged(path: Path, _: random.Random) -> None:
    path.write_bytes(fake_elf.elf_file(fake_elf.interpreter(3, 13, 5, True), banner=b"free-threading build (\0"))


def directory(path: Path, _: random.Random) -> None:
    path.mkdir()


def symlink_loop(path: Path, _: random.Random) -> None:
    path.symlink_to(path)


SWAPS: dict[str, Callable[[Path, random.Random], None]] = {
    "a FIFO": fifo, "a 4 GiB sparse file": sparse, "a lying ELF": lying_elf, "random bytes": random_bytes,
    "a forged free-threaded libpython": forged, "a directory": directory, "a symlink loop": symlink_loop}


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[int(share * (len(ordered) - 1))] if ordered else float("nan")


def run(minutes: float, interval: float, seed: int) -> list[str]:
    config = config_from_mapping({"services": {"interval": f"{interval:g}s", "groups": GROUPS}}).services
    bound = scan_bound(interval)
    attackers = Attackers(seed)
    watcher = ServiceWatcher(config, host_usable=lambda: float(os.cpu_count() or 1))
    assert watcher._sampler is not None
    watcher._sampler.matcher.own_pid = 0  # the attackers are this process's children: watch them
    registry = CollectorRegistry()
    registry.register(ServiceCollector(watcher.snapshot))
    scrapes: list[float] = []
    scans: list[float] = []
    running: list[float] = []
    seen_at: set[float] = set()
    slow: list[tuple[float, float, bool]] = []  # scrapes over the target: wall ms, own CPU ms, a scan running
    try:
        for _ in range(POPULATION):
            attackers.start_one()
        rss_start = rss_mib()
        watcher.start()
        assert watcher._thread is not None
        sampler_tid = watcher._thread.native_id
        cpu_start = procfs.read_stat(os.getpid(), sampler_tid).cpu_seconds
        started = time.monotonic()
        end = started + minutes * 60
        next_churn = started + CHURN_SECONDS
        rss_after_a_minute = None
        while time.monotonic() < end:
            if rss_after_a_minute is None and time.monotonic() - started >= 60:
                rss_after_a_minute = rss_mib()  # caches and arenas warm: what follows is growth
            scanning = watcher.snapshot().scan_started_at is not None
            begin, begin_cpu = time.perf_counter(), time.thread_time()
            generate_latest(registry)
            scrapes.append((time.perf_counter() - begin) * 1000)
            if scrapes[-1] > SCRAPE_TARGET_MS:  # waiting: for the GIL (during a scan) or for a CPU
                slow.append((scrapes[-1], (time.thread_time() - begin_cpu) * 1000, scanning))
            snapshot = watcher.snapshot()
            if snapshot.sampled_at is not None and snapshot.sampled_at not in seen_at:
                seen_at.add(snapshot.sampled_at)
                scans.append(snapshot.scan_seconds or 0.0)
            if snapshot.scan_started_at is not None:
                running.append(time.time() - snapshot.scan_started_at)
            if time.monotonic() >= next_churn:
                attackers.replace_some(2)
                next_churn += CHURN_SECONDS
            time.sleep(1 / SCRAPES_PER_SECOND)
        cpu = procfs.read_stat(os.getpid(), sampler_tid).cpu_seconds - cpu_start
        rss_end = rss_mib()
        elapsed = time.monotonic() - started
        final = watcher.snapshot()
    finally:
        watcher.stop()
        attackers.close()
    over = [s for s in scans if s > bound]
    return [
        f"- Machine: {this_run()} at the end.",
        f"- {elapsed / 60:.1f} minutes, interval {interval:g} s (scan bound {bound:g} s), {POPULATION} attackers, "
        f"two replaced every {CHURN_SECONDS:g} s; started: "
        + ", ".join(f"{kind} {count}" for kind, count in sorted(attackers.started.items())) + ".",
        f"- Scans: {len(scans)}; wall time median {statistics.median(scans) * 1000:.1f} ms, p99 "
        f"{percentile(scans, 0.99) * 1000:.1f} ms, max {max(scans) * 1000:.1f} ms; over the bound: {len(over)}; "
        f"cut (pyparallel_service_scan_overruns_total): {final.scan_overruns}; longest scan in progress a scrape "
        f"saw: {max(running, default=0.0) * 1000:.0f} ms.",
        "- Sample errors at the end: " + ", ".join(f"{k} {v}" for k, v in sorted(final.errors.items())) + ".",
        f"- Scrapes: {len(scrapes)}; latency median {statistics.median(scrapes):.2f} ms, p99 "
        f"{percentile(scrapes, 0.99):.2f} ms, max {max(scrapes):.2f} ms; over {SCRAPE_TARGET_MS:g} ms: {len(slow)}"
        + "".join(f"; {wall:.0f} ms ({cpu:.1f} ms of its own CPU, {'during' if scanning else 'between'} scans)"
                  for wall, cpu, scanning in slow[:10]) + ".",
        f"- Sampler thread CPU: {cpu:.1f} s in {elapsed:.0f} s ({cpu / elapsed:.1%} of a core); RSS "
        f"{rss_start:.1f} MiB at the start, {rss_after_a_minute or float('nan'):.1f} after a minute, "
        f"{rss_end:.1f} at the end.",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=27)
    parser.add_argument("--markdown", type=Path, help="append the results to this file")
    args = parser.parse_args()
    lines = [f"## `python benchmarks/services_hostile.py --minutes {args.minutes:g} --interval {args.interval:g}`",
             "", *run(args.minutes, args.interval, args.seed), ""]
    publish("\n".join(lines) + "\n", args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
