#!/usr/bin/env python3
"""Soak: does the daemon stay flat through a long bad day?

For ``--duration`` (default 30 minutes) a real ``parallelism-exporter serve`` runs short
probe rounds in which faulty workloads (tests/faulty_workloads.py: raising, aborting,
hanging, noisy) are mixed with good ones, while 50 loopback clients scrape /metrics, a
``POST /-/reload`` arrives every few seconds and SIGHUPs come in between, some of them with a
broken (non-UTF-8) config file. It reports rounds completed, scrape outcomes, reload
outcomes, and the exporter's RSS, threads and open fds at the start and the end and over the
last third of the run (which should be flat once the status page's history is full: run for
more rounds than ``--history.limit`` before the last third starts), then stops the exporter
and counts the processes it left behind (every process it started carries a token in its
environment, so none can hide by re-parenting).

Run by hand, never by the test suite: ``python benchmarks/soak.py --duration 5m``.
Loopback only; every request loop is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from machine import cpu_model

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"

SCRAPE_TIMEOUT_SECONDS = 10.0  # a slower scrape counts as an error
MAX_SCRAPES_PER_CLIENT = 1_000_000  # the count bound of each scrape loop
SAMPLE_EVERY_SECONDS = 10.0
# The worker pool and caches fill up early; flat means no growth from here to the end.
WARM_UP_SHARE = 0.1
STOP_GRACE_SECONDS = 10.0
LEFTOVER_WAIT_SECONDS = 5.0
# Flat, as the report judges it: 0.5 % of 50 MB is 0.25 MB, which about half a byte per
# scrape would reach in the last third of a 30-minute run (~500 000 scrapes).
RSS_FLAT_SHARE = 0.005
FLOOR_SLACK = 2
SNAPSHOTS = 9  # tracemalloc snapshots over a run, with --tracemalloc

# Short rounds: every workload once per round, good ones and faulty ones.
WORKLOADS = ["sleep", "pure_python", "faulty_workloads:raises", "faulty_workloads:aborts",
             "faulty_workloads:hangs", "faulty_workloads:prints",
             "faulty_workloads:aborts_in_worker_process", "faulty_workloads:complains_then_aborts",
             # the containment suite's attacks: detached fork storms, a child holding stderr,
             # 10 MB without a newline, bytes that are not UTF-8
             "faulty_workloads:forks_detached_sleepers", "faulty_workloads:double_forks_a_daemon",
             "faulty_workloads:holds_stderr_open", "faulty_workloads:floods_output_without_newline",
             "faulty_workloads:writes_invalid_utf8_then_raises",
             # issue 17: allocating without end (stopped at probe.memory_limit), a thread left
             # running in a worker process
             "faulty_workloads:grows_memory_without_end", "faulty_workloads:leaves_a_thread_running"]
MEMORY_LIMIT = "512MiB"


def config_document(interval: str) -> dict:
    return {"interval": interval, "jitter": "0s", "duty_cycle": 1,
            "interpreters": [{"name": "cpython-soak", "path": sys.executable}],
            "probe": {"workloads": WORKLOADS, "workload_path": [str(TESTS)],
                      "modes": ["sequential", "threads", "processes"], "workers": [2],
                      "unit_seconds": 0.05, "repeats": 1, "max_repeats": 2, "step_budget": "1s",
                      "timeout": "3s", "memory_limit": MEMORY_LIMIT}}


BROKEN_CONFIG = b"interval: 5s\nprobe:\n  workloads: [sle\xffep]\n"


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected e.g. 300, 90s, 5m or 1h, got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Sample:
    at: float
    rss_mb: float
    threads: int
    fds: int
    children: int


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    scrapes: Counter = field(default_factory=Counter)  # "200", "503", "error: ..." -> count
    reloads: Counter = field(default_factory=Counter)
    sighups: Counter = field(default_factory=Counter)

    def add(self, counter: Counter, key: str) -> None:
        with self.lock:
            counter[key] += 1


def sample(process: psutil.Process, started: float) -> Sample:
    with process.oneshot():
        return Sample(time.monotonic() - started, process.memory_info().rss / 2**20,
                      process.num_threads(), process.num_fds(), len(process.children(recursive=True)))


def request(port: int, method: str, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SCRAPE_TIMEOUT_SECONDS)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def scraper(port: int, until: float, pause: float, tally: Tally) -> None:
    for _ in range(MAX_SCRAPES_PER_CLIENT):
        if time.monotonic() >= until:
            return
        try:
            status, body = request(port, "GET", "/metrics")
            key = str(status) if status != 200 or b"pyparallel_exporter_build_info" in body else "200 without our metrics"
        except (OSError, http.client.HTTPException) as exc:
            key = f"error: {type(exc).__name__}"
        tally.add(tally.scrapes, key)
        time.sleep(pause)


def controller(process: subprocess.Popen, port: int, config_path: Path, until: float,
               reload_every: float, tally: Tally) -> None:
    """Alternate the config between two good ones and a broken one; reload over HTTP and by
    SIGHUP in turn."""
    documents = [yaml.safe_dump(config_document("5s")).encode(), BROKEN_CONFIG,
                 yaml.safe_dump(config_document("6s")).encode()]
    if reload_every <= 0:  # --reload-every 0: no reloads, to tell what scrapes alone do
        return
    for step in range(int((until - time.monotonic()) / reload_every) + 1):
        if time.monotonic() >= until or process.poll() is not None:
            return
        config_path.write_bytes(documents[step % len(documents)])
        broken = step % len(documents) == 1
        if step % 2 == 0:
            try:
                status, _ = request(port, "POST", "/-/reload")
                outcome = {200: "ok", 500: "refused"}.get(status, f"HTTP {status}")
            except (OSError, http.client.HTTPException) as exc:
                outcome = f"error: {type(exc).__name__}"
            tally.add(tally.reloads, f"{outcome} ({'broken' if broken else 'good'} config)")
        else:
            process.send_signal(signal.SIGHUP)
            tally.add(tally.sighups, f"sent ({'broken' if broken else 'good'} config)")
        time.sleep(reload_every)


def with_token(token: str) -> list[psutil.Process]:
    found = []
    for candidate in psutil.process_iter():
        try:
            if candidate.environ().get("PYPARALLEL_SOAK_TOKEN") == token:
                found.append(candidate)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def failures_by_reason(port: int) -> Counter:
    """``pyparallel_probe_failures_total`` summed by reason, from one scrape."""
    totals: Counter = Counter()
    try:
        _, body = request(port, "GET", "/metrics")
    except (OSError, http.client.HTTPException):
        return totals
    for match in re.finditer(rb'^pyparallel_probe_failures_total\{[^}]*reason="(\w+)"[^}]*\} (\S+)$', body, re.M):
        totals[match.group(1).decode()] += int(float(match.group(2)))
    return totals


def is_malloc_setting(name: str) -> bool:
    return name.startswith("MALLOC_") or name == "GLIBC_TUNABLES"


def exporter_allocator(log_text: str) -> str:
    """What the exporter's ``starting`` line says of its malloc (one arena, per-thread caches)."""
    found = re.search(r"malloc_arenas=(\S+) malloc_thread_caches=(\S+)", log_text)
    return f"arenas {found[1]}, per-thread caches {found[2]}" if found else "not logged"


def count_rounds(log_text: str) -> int:
    return log_text.count('msg="probe round finished"') + log_text.count('"msg": "probe round finished"')


def run(args: argparse.Namespace) -> str:
    token = uuid.uuid4().hex
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="pyparallel-soak-"))
    config_path = workdir / "config.yml"
    config_path.write_text(yaml.safe_dump(config_document("5s")))
    port = free_port()
    log_path = workdir / "exporter.log"
    env = dict(os.environ, PYPARALLEL_SOAK_TOKEN=token, PYTHONPATH=str(REPO))
    launcher = ["-m", "exporter"]
    if args.tracemalloc:
        args.tracemalloc.mkdir(parents=True, exist_ok=True)
        for stale in args.tracemalloc.glob("snapshot-*.pickle"):  # a reused DIR must not mix runs
            stale.unlink()
        env.update(PYPARALLEL_SOAK_SNAPSHOT_DIR=str(args.tracemalloc.resolve()),
                   PYPARALLEL_SOAK_SNAPSHOT_EVERY=str(args.duration / SNAPSHOTS))
        launcher = [str(Path(__file__).resolve().with_name("tracemalloc_serve.py"))]
    command = [sys.executable, *launcher, "serve", f"--config.file={config_path}",
               f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle",
               f"--history.limit={args.history_limit}"]
    tally = Tally()
    samples: list[Sample] = []
    with open(log_path, "w") as log:
        exporter = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=TESTS, env=env)
    try:
        proc = psutil.Process(exporter.pid)
        ready_by = time.monotonic() + 120
        while time.monotonic() < ready_by:
            try:
                if request(port, "GET", "/-/healthy")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        started = time.monotonic()
        until = started + args.duration
        samples.append(sample(proc, started))
        warm: Sample | None = None
        workers = [threading.Thread(target=scraper, args=(port, until, args.scrape_pause, tally), daemon=True)
                   for _ in range(args.concurrency)]
        workers.append(threading.Thread(target=controller, daemon=True,
                                        args=(exporter, port, config_path, until, args.reload_every, tally)))
        for worker in workers:
            worker.start()
        warm_at = started + args.duration * WARM_UP_SHARE
        while time.monotonic() < until and exporter.poll() is None:
            time.sleep(min(SAMPLE_EVERY_SECONDS, max(0.0, until - time.monotonic())))
            if exporter.poll() is None:
                samples.append(sample(proc, started))
                if warm is None and time.monotonic() >= warm_at:
                    warm = samples[-1]
                print(f"  … {samples[-1].at:6.0f}s  rss {samples[-1].rss_mb:.1f} MB  threads {samples[-1].threads}"
                      f"  fds {samples[-1].fds}  scrapes {sum(tally.scrapes.values())}", file=sys.stderr, flush=True)
        for worker in workers:
            worker.join(SCRAPE_TIMEOUT_SECONDS + args.reload_every + 1)
        # Quiet again: the figures at the end are taken without load, like the ones at the start.
        failures: Counter = Counter()
        if exporter.poll() is None:
            time.sleep(2)
            samples.append(sample(proc, started))
            failures = failures_by_reason(port)
        alive_at_end = exporter.poll() is None
    finally:
        if exporter.poll() is None:
            exporter.send_signal(signal.SIGTERM)
            try:
                exporter.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                exporter.kill()
                exporter.wait()
    time.sleep(LEFTOVER_WAIT_SECONDS)
    leftovers = with_token(token)
    leftover_names = Counter(p.name() for p in leftovers if p.is_running())
    for leftover in leftovers:  # the report says how many; the machine is left clean anyway
        try:
            leftover.kill()
        except psutil.Error:
            pass
    log_text = log_path.read_text(errors="replace")
    return report(args, load_before, samples, warm or samples[-1], tally, count_rounds(log_text),
                  alive_at_end, exporter.returncode, len(leftovers), leftover_names,
                  log_text.count("Traceback"), failures, exporter_allocator(log_text))


def report(args: argparse.Namespace, load_before: tuple[float, float, float], samples: list[Sample],
           warm: Sample, tally: Tally, rounds: int,
           alive: bool, exit_code: int | None, leftovers: int, leftover_names: Counter,
           tracebacks: int, failures: Counter, allocator: str) -> str:
    first, last = samples[0], samples[-1]
    peak = max(samples, key=lambda s: s.rss_mb)
    # The last third under load (the quiet sample after the load stopped is not part of it).
    loaded = samples[:-1] if len(samples) > 2 else samples
    third = [s for s in loaded if s.at >= args.duration * 2 / 3] or loaded[-1:]
    scrapes = sum(tally.scrapes.values())
    errors = sum(n for key, n in tally.scrapes.items() if key not in ("200", "503"))
    reloads = (f"a reload every {args.reload_every:g} s (POST /-/reload and SIGHUP in turn)" if args.reload_every > 0
               else "no reloads")
    lines = [
        f"Machine: {cpu_model()}, {psutil.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; host load average before: "
        f"{', '.join(f'{v:.2f}' for v in load_before)}; glibc tunables from the environment: "
        f"{', '.join(f'{k}={v}' for k, v in sorted(os.environ.items()) if is_malloc_setting(k)) or 'none'}; "
        f"the exporter's malloc: {allocator}.",
        f"Duration {args.duration:g} s, {args.concurrency} scraping clients (pause {args.scrape_pause:g} s), "
        f"{reloads}. Cold: when /-/healthy first answered; warm: the first sample after {WARM_UP_SHARE:.0%} of the run; "
        "end: 2 s after the load stopped.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| rounds completed | {rounds} |",
        f"| exporter alive at the end | {'yes' if alive else 'NO'} (exit code after SIGTERM: {exit_code}) |",
        f"| scrapes | {scrapes} ({', '.join(f'{k}: {v}' for k, v in sorted(tally.scrapes.items()))}) |",
        f"| scrape errors (neither 200 nor the 503 of --web.max-requests) | {errors} |",
        f"| POST /-/reload | {', '.join(f'{k}: {v}' for k, v in sorted(tally.reloads.items()))} |",
        f"| SIGHUP | {', '.join(f'{k}: {v}' for k, v in sorted(tally.sighups.items()))} |",
        f"| RSS cold → warm → end (peak) | {first.rss_mb:.1f} → {warm.rss_mb:.1f} → {last.rss_mb:.1f} MB "
        f"({peak.rss_mb:.1f} MB at {peak.at:.0f} s) |",
        f"| threads cold → warm → end (max) | {first.threads} → {warm.threads} → {last.threads} "
        f"({max(s.threads for s in samples)}) |",
        f"| open fds cold → warm → end (max) | {first.fds} → {warm.fds} → {last.fds} ({max(s.fds for s in samples)}) |",
        f"| last third ({third[0].at:.0f}–{third[-1].at:.0f} s, {len(third)} samples): RSS first → last (min–max) "
        f"| {third[0].rss_mb:.1f} → {third[-1].rss_mb:.1f} MB ({min(s.rss_mb for s in third):.1f}–"
        f"{max(s.rss_mb for s in third):.1f}) |",
        f"| last third: threads first → last (min–max) | {third[0].threads} → {third[-1].threads} "
        f"({min(s.threads for s in third)}–{max(s.threads for s in third)}) |",
        f"| last third: open fds first → last (min–max) | {third[0].fds} → {third[-1].fds} "
        f"({min(s.fds for s in third)}–{max(s.fds for s in third)}) |",
        f"| flat over the last third? (RSS within {RSS_FLAT_SHARE:.1%}; threads' and fds' floor within "
        f"{FLOOR_SLACK}) | {flat_verdict(third)} |",
        f"| history limit; rounds | {args.history_limit}; {rounds} |",
        f"| probe failures by reason at the end | {', '.join(f'{k}: {v}' for k, v in sorted(failures.items()))} |",
        f"| child processes cold → end (a probe may be running) | {first.children} → {last.children} |",
        f"| leftover processes 5 s after SIGTERM | {leftovers}"
        + (f" ({', '.join(f'{k}×{v}' for k, v in leftover_names.items())})" if leftovers else "") + " |",
        f"| tracebacks in the exporter's log | {tracebacks} |",
    ]
    return "\n".join(lines)


def flat_verdict(third: list[Sample]) -> str:
    """Flat: RSS at the end of the last third within RSS_FLAT_SHARE of its start, and the
    floor of threads and of fds in its second half no higher than in its first half (a leak
    raises the floor; a probe round in progress only adds peaks)."""
    halves = third[:len(third) // 2] or third, third[len(third) // 2:]
    rss_change = third[-1].rss_mb / third[0].rss_mb - 1

    def floor_rise(attribute: str) -> int:
        return min(getattr(s, attribute) for s in halves[1]) - min(getattr(s, attribute) for s in halves[0])

    rises = {"threads": floor_rise("threads"), "fds": floor_rise("fds")}
    flat = rss_change <= RSS_FLAT_SHARE and all(rise <= FLOOR_SLACK for rise in rises.values())
    return (f"{'yes' if flat else 'NO'}: RSS {rss_change:+.2%}, floor of threads {rises['threads']:+d}, "
            f"of fds {rises['fds']:+d}")


def growth_report(directory: Path, top: int = 8) -> str:
    """What allocated memory grew between the snapshot at a third of the run and the last one."""
    import tracemalloc

    snapshots = sorted(directory.glob("snapshot-*.pickle"))
    if len(snapshots) < 2:
        return f"tracemalloc: only {len(snapshots)} snapshot(s) in {directory}; nothing to compare"
    first = snapshots[len(snapshots) // 3]
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
    old = tracemalloc.Snapshot.load(str(first)).filter_traces(ignore)
    new = tracemalloc.Snapshot.load(str(snapshots[-1])).filter_traces(ignore)
    total_old = sum(trace.size for trace in old.traces)
    total_new = sum(trace.size for trace in new.traces)
    lines = [f"tracemalloc: traced {total_old / 1e6:.2f} MB in {first.name}, {total_new / 1e6:.2f} MB in "
             f"{snapshots[-1].name} ({(total_new - total_old) / 1e3:+.1f} kB). Largest growths by allocation site:", ""]
    for stat in new.compare_to(old, "traceback")[:top]:
        lines.append(f"- {stat.size_diff / 1e3:+.1f} kB in {stat.count_diff:+d} blocks (now {stat.size / 1e3:.1f} kB)")
        lines.extend(f"    {line}" for line in stat.traceback.format(limit=6, most_recent_first=True))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=parse_duration, default=1800.0, help="e.g. 30m (default), 5m, 300")
    parser.add_argument("--concurrency", type=int, default=50, help="scraping clients (default 50)")
    parser.add_argument("--scrape-pause", type=float, default=0.05,
                        help="pause of each client between scrapes, seconds (default 0.05)")
    parser.add_argument("--history-limit", type=int, default=100,
                        help="the exporter's --history.limit (default 100, its own default)")
    parser.add_argument("--reload-every", type=float, default=3.0,
                        help="seconds between reloads, alternating POST /-/reload and SIGHUP (default 3; 0: none)")
    parser.add_argument("--tracemalloc", type=Path, metavar="DIR",
                        help="run the exporter under tracemalloc, dump snapshots into DIR and report "
                             "what grew over the last two thirds (slower: for finding a leak, not for figures)")
    args = parser.parse_args()
    print(run(args))
    if args.tracemalloc:
        print()
        print(growth_report(args.tracemalloc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
