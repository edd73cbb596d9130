#!/usr/bin/env python3
"""What the daemon costs its host: scrape latency under load, idle footprint, per-core agreement.

Run by hand on an idle machine, never by the test suite; benchmarks/DAEMON.md explains how
every figure is measured. All traffic goes to 127.0.0.1, and every process started here
(the exporter, node_exporter, probe runners) is stopped on the way out, Ctrl-C included.
Quick trial: ``python benchmarks/daemon.py --quick``.
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import psutil
import yaml

from machine import cpu_model
from exporter.config import settings
from exporter.host import cpus
from exporter.probe import run as probe

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
NODE_COLLECTORS = {
    # The collectors a small host exporter would plausibly be compared with: node_exporter
    # then answers fastest, which makes "no worse than node_exporter" the stricter target.
    "minimal": ["--collector.disable-defaults", "--collector.cpu", "--collector.meminfo",
                "--collector.loadavg"],
    "default": [],
}
# The probe the daemon runs in sections 1 and 2, as the brief fixes it.
DAEMON_PROBE = {"workloads": ["pure_python"], "modes": ["sequential", "threads", "processes"],
                "unit_seconds": 0.5, "repeats": 3, "timeout": "60s", "start_method": "forkserver"}
PER_CORE_MODES = ("sequential", "threads", "processes")

# Targets.
MAX_ERRORS = 0
P99_TARGET_MS = 10.0
IDLE_RSS_TARGET_MB = 50.0
IDLE_CPU_TARGET_PERCENT = 0.5
PER_CORE_TARGET_PP = 5.0

REQUEST_TIMEOUT_SECONDS = 10.0  # one scrape; a slower answer counts as an error
LOAD_BLOCK = 1000  # scrapes per block; blocks alternate between the two targets
LOAD_BUDGET_SECONDS = 900.0  # the load test stops issuing scrapes after this, and says so
MONITOR_SECONDS = 0.1  # how often the load test looks for a running probe
NUDGE_AFTER_IDLE_SECONDS = 0.5  # a round is over once no probe child was seen for this long
NUDGE_EVERY_SECONDS = 2.5
NODE_SAMPLE_SECONDS = 0.05
IDLE_SAMPLE_SECONDS = 1.0
IDLE_SCRAPE_EVERY_SECONDS = 15.0
SETTLE_SECONDS = 2.0  # after /-/ready, before the idle windows start
HOST_BUSY_WARN_PERCENT = 10.0


def progress(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


# --- the machine -------------------------------------------------------------------------



def node_exporter_version() -> str:
    try:
        out = subprocess.run([NODE_EXPORTER, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = out.stdout + out.stderr
    match = re.search(r"version (\S+)", text)
    return match.group(1) if match else text.strip().splitlines()[0] if text.strip() else "unknown"


def describe_machine() -> list[tuple[str, str]]:
    host = cpus.host_cpus()
    busy = psutil.cpu_percent(interval=1.0)  # over one second, before anything starts
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return [
        ("CPU", cpu_model()),
        ("cores", f"{host.logical} logical, {host.physical or '?'} physical, {host.usable:g} usable"),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"),
        ("node_exporter", node_exporter_version()),
        ("host before the run", f"{busy:.1f} % CPU busy over 1 s, load average {load}"
         + ("  — NOT IDLE: these figures are not results" if busy > HOST_BUSY_WARN_PERCENT else "")),
    ]


# --- processes we start ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """A server process in its own session, with its log; ``stop`` also kills what it left behind."""

    def __init__(self, name: str, args: list[str], workdir: Path, port: int) -> None:
        self.name, self.port = name, port
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "w")
        # Own session: a Ctrl-C in the terminal reaches only us, and we stop it in order.
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir,
                                        start_new_session=True)
        self.ps = psutil.Process(self.process.pid)

    def log_tail(self, lines: int = 15) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}")

    def stop(self) -> None:
        try:
            leftovers = self.ps.children(recursive=True)  # probe runners live in their own session
        except psutil.NoSuchProcess:
            leftovers = []
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for child in leftovers:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(leftovers, timeout=5)
        self._log.close()


def start_exporter(stack: ExitStack, workdir: Path, settings: dict) -> Service:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "exporter.yml"
    path.write_text(yaml.safe_dump(settings))
    port = free_port()
    service = Service("exporter", [sys.executable, "-m", "exporter", "serve", f"--config.file={path}",
                                   f"--web.listen-address=127.0.0.1:{port}"], workdir, port)
    stack.callback(service.stop)
    wait_for(lambda: status(service, "/-/healthy") == 200, 30, service)
    return service


def start_node_exporter(stack: ExitStack, workdir: Path, collectors: str) -> Service:
    port = free_port()
    # No in-flight limit (default 40): with 50 concurrent scrapes it would answer some with a
    # quick 503, which would flatter its latency; the exporter has no such limit either.
    args = [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", "--web.max-requests=0",
            *NODE_COLLECTORS[collectors]]
    service = Service("node_exporter", args, workdir, port)
    stack.callback(service.stop)
    wait_for(lambda: status(service, "/metrics") == 200, 30, service)
    return service


def wait_for(check: Callable[[], bool], timeout: float, service: Service) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service.check_alive()
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{service.name} not ready within {timeout:g}s:\n{service.log_tail()}")


def request(service: Service, path: str, method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def status(service: Service, path: str) -> int:
    return request(service, path)[0]


def has_probe(service: Service) -> bool:
    try:
        return bool(service.ps.children())
    except psutil.NoSuchProcess:
        return False


# --- figures -----------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Check:
    """One row of a result table; ``ok`` None means the row has no target."""

    cells: list[str]
    ok: Optional[bool] = None

    def row(self) -> list[str]:
        return self.cells + ["" if self.ok is None else "PASS" if self.ok else "MISS"]


@dataclass
class Section:
    title: str
    header: list[str]
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.2f} ms"


# --- 1. scrape latency under load --------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    service: Service
    marker: bytes  # a scrape without it is an error, even with status 200


@dataclass
class Scrape:
    seconds: float
    error: Optional[str]
    during_probe: bool
    new_connection: bool
    size: int


@dataclass
class TargetLoad:
    scrapes: list[Scrape] = field(default_factory=list)
    wall_seconds: float = 0.0
    server_cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0


class ProbeMonitor(threading.Thread):
    """Watches for a probe child of the exporter, and starts the next round when one ends.

    With ``duty_cycle: 1`` the daemon reschedules the next round one round-length after the
    previous one *ended*, so rounds alone would cover only about half of the time. A
    ``POST /-/reload`` once the probe child has gone resets the interval to the configured
    1 s, so the next round starts about a second later.
    """

    def __init__(self, exporter: Service) -> None:
        super().__init__(daemon=True)
        self.exporter = exporter
        self.running = False
        self.stopping = threading.Event()
        self.samples = 0
        self.samples_running = 0
        self.nudges = 0

    def run(self) -> None:
        last_seen = last_nudge = time.monotonic()
        while not self.stopping.wait(MONITOR_SECONDS):
            self.running = has_probe(self.exporter)
            now = time.monotonic()
            self.samples += 1
            if self.running:
                self.samples_running += 1
                last_seen = now
            elif now - last_seen >= NUDGE_AFTER_IDLE_SECONDS and now - last_nudge >= NUDGE_EVERY_SECONDS:
                last_nudge = now
                try:
                    request(self.exporter, "/-/reload", "POST")
                    self.nudges += 1
                except OSError:
                    pass

    @property
    def coverage(self) -> float:
        return self.samples_running / self.samples if self.samples else 0.0


class LoadClient:
    """Worker threads, each with one persistent ``http.client`` connection per target."""

    def __init__(self, concurrency: int, monitor: ProbeMonitor) -> None:
        self.concurrency, self.monitor = concurrency, monitor
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="scraper")
        self.local = threading.local()
        self.connections: list[http.client.HTTPConnection] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def connection(self, target: Target) -> http.client.HTTPConnection:
        conns = self.local.__dict__.setdefault("conns", {})
        if target.name not in conns:
            conns[target.name] = http.client.HTTPConnection("127.0.0.1", target.service.port,
                                                            timeout=REQUEST_TIMEOUT_SECONDS)
            with self.lock:
                self.connections.append(conns[target.name])
        return conns[target.name]

    def scrape(self, target: Target) -> Scrape:
        conn = self.connection(target)
        # http.client reopens a connection the server closed (HTTP/1.0 answers close it).
        fresh, during = conn.sock is None, self.monitor.running
        started = time.perf_counter()
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            body = response.read()
            seconds = time.perf_counter() - started
            error = (None if response.status == 200 and target.marker in body
                     else f"HTTP {response.status}" if response.status != 200 else "marker missing")
            return Scrape(seconds, error, during, fresh, len(body))
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            return Scrape(time.perf_counter() - started, type(exc).__name__, during, fresh, 0)

    def block(self, target: Target, count: int, deadline: float) -> list[Scrape]:
        """``count`` scrapes of ``target``, ``concurrency`` at a time."""
        tickets = iter(range(count))

        def work() -> list[Scrape]:
            done = []
            while not self.stopping.is_set() and time.monotonic() < deadline:
                with self.lock:
                    if next(tickets, None) is None:
                        break
                done.append(self.scrape(target))
            return done

        futures = [self.pool.submit(work) for _ in range(self.concurrency)]
        return [scrape for future in futures for scrape in future.result()]

    def close(self) -> None:
        self.stopping.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for conn in self.connections:
            conn.close()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)  # the process itself, not its children


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def scrape_latency(stack: ExitStack, workdir: Path, node: Service, total: int, concurrency: int) -> Section:
    settings = {"interval": "1s", "jitter": "0s", "duty_cycle": 1.0, "probe": DAEMON_PROBE}
    exporter = start_exporter(stack, workdir / "load", settings)
    # Wait for the start-up round's probe child, so the first scrape already meets a probe.
    deadline = time.monotonic() + 30
    while not has_probe(exporter) and time.monotonic() < deadline:
        exporter.check_alive()
        time.sleep(0.02)
    monitor = ProbeMonitor(exporter)
    monitor.start()
    stack.callback(monitor.stopping.set)
    client = LoadClient(concurrency, monitor)
    stack.callback(client.close)
    targets = [Target("parallelism-exporter", exporter, b"pyparallel_"),
               Target("node_exporter", node, b"node_")]
    loads = {t.name: TargetLoad() for t in targets}
    blocks = max(1, math.ceil(total / LOAD_BLOCK))
    budget_end = time.monotonic() + LOAD_BUDGET_SECONDS
    for index in range(blocks):
        count = min(LOAD_BLOCK, total - index * LOAD_BLOCK)
        for target in targets:  # alternate, so both meet the same mix of probe phases
            load = loads[target.name]
            progress(f"scrapes {index * LOAD_BLOCK + 1}-{index * LOAD_BLOCK + count} of {total}: {target.name}")
            wall, server, own = time.perf_counter(), cpu_seconds(target.service.ps), client_cpu_seconds()
            load.scrapes += client.block(target, count, budget_end)
            load.wall_seconds += time.perf_counter() - wall
            load.server_cpu_seconds += cpu_seconds(target.service.ps) - server
            load.client_cpu_seconds += client_cpu_seconds() - own
            exporter.check_alive()
    monitor.stopping.set()
    client.close()
    return latency_section(loads, targets, total, concurrency, monitor, budget_end)


def latency_section(loads: dict[str, TargetLoad], targets: list[Target], total: int, concurrency: int,
                    monitor: ProbeMonitor, budget_end: float) -> Section:
    ours, theirs = (loads[t.name] for t in targets)

    def during(load: TargetLoad) -> list[float]:
        return [s.seconds for s in load.scrapes if s.error is None and s.during_probe]

    def every(load: TargetLoad) -> list[float]:
        return [s.seconds for s in load.scrapes if s.error is None]

    def errors(load: TargetLoad) -> str:
        kinds = Counter(s.error for s in load.scrapes if s.error)
        return str(sum(kinds.values())) + (f" ({', '.join(f'{k}: {n}' for k, n in kinds.items())})" if kinds else "")

    def both(figure: Callable[[TargetLoad], str]) -> list[str]:
        return [figure(ours), figure(theirs)]

    p99_ours, p99_theirs = percentile(during(ours), 99), percentile(during(theirs), 99)
    section = Section("1. Scrape latency while probe rounds run",
                      ["figure", targets[0].name, targets[1].name, "target", "result"])
    sent_ok = all(len(load.scrapes) == total for load in loads.values())
    section.checks = [
        Check(["scrapes sent (of which while a probe ran)",
               *both(lambda ld: f"{len(ld.scrapes)} ({sum(s.during_probe for s in ld.scrapes)})"),
               f"{total} each"], sent_ok),
        Check(["errors", *both(errors), f"{MAX_ERRORS}"],
              sum(s.error is not None for s in ours.scrapes) <= MAX_ERRORS),
        Check(["p50 latency, while a probe ran", *both(lambda ld: ms(percentile(during(ld), 50))), ""]),
        Check(["p99 latency, while a probe ran", ms(p99_ours), ms(p99_theirs),
               f"≤ {P99_TARGET_MS:g} ms and ≤ node_exporter's"],
              p99_ours <= P99_TARGET_MS / 1000 and p99_ours <= p99_theirs),
        Check(["max latency, while a probe ran", *both(lambda ld: ms(max(during(ld), default=math.nan))), ""]),
        Check(["mean latency, all (concurrency ÷ throughput)",
               *both(lambda ld: f"{ms(statistics.mean(every(ld) or [math.nan]))}"
                     f" ({ms(concurrency * ld.wall_seconds / len(ld.scrapes)) if ld.scrapes else 'n/a'})"), ""]),
        Check(["p99 latency, all scrapes", *both(lambda ld: ms(percentile(every(ld), 99))), ""]),
        Check(["TCP connections opened", *both(lambda ld: str(sum(s.new_connection for s in ld.scrapes))), ""]),
        Check(["response size (median)",
               *both(lambda ld: f"{statistics.median([s.size for s in ld.scrapes] or [0]) / 1024:.1f} KiB"), ""]),
        Check(["server CPU per scrape", *both(lambda ld: ms(ld.server_cpu_seconds / max(1, len(ld.scrapes)))), ""]),
        Check(["load generator CPU (cores busy)",
               *both(lambda ld: f"{ld.client_cpu_seconds / ld.wall_seconds:.2f}" if ld.wall_seconds else "n/a"), ""]),
        Check(["throughput",
               *both(lambda ld: f"{len(ld.scrapes) / ld.wall_seconds:.0f} scrapes/s" if ld.wall_seconds else "n/a"), ""]),
    ]
    section.notes = [
        f"{concurrency} concurrent scrapes, in blocks of {LOAD_BLOCK} alternating between the two targets;"
        " latency is from sending the request to the last byte of the body, connection set-up included.",
        f"A probe child was running in {monitor.coverage:.0%} of {monitor.samples} checks"
        f" ({monitor.nudges} rounds started early by POST /-/reload).",
        "The load is a closed loop: each of the scrapers sends its next scrape when the last one is"
        " answered, so mean latency ≈ concurrency ÷ throughput (Little's law) and the latency figures"
        " mostly measure throughput; `--concurrency 1` measures one scrape's own latency.",
        "The load generator is Python threads on the same 2 cores as both servers and the probe workers:"
        " it competes with them for CPU, and its GIL hand-offs add to every latency, for both targets alike.",
    ]
    if time.monotonic() > budget_end:
        section.notes.append(f"The {LOAD_BUDGET_SECONDS:g} s budget ran out before every scrape was sent.")
    return section


# --- 2. idle cost ------------------------------------------------------------------------


@dataclass
class IdleWindow:
    rss_max: int
    rss_mean: float
    children_max: int
    children_rss_max: int
    cpu_percent: float
    scrapes: int


def idle_window(exporter: Service, seconds: float, scrape_every: Optional[float]) -> IdleWindow:
    """Sample the exporter (and any children) for ``seconds``, scraping it every ``scrape_every``."""
    started = time.perf_counter()
    cpu_before = cpu_seconds(exporter.ps)
    rss: list[int] = []
    children: list[int] = []
    children_rss: list[int] = []
    scrapes = 0
    next_scrape = started + 1.0 if scrape_every else math.inf
    next_sample = started
    while (now := time.perf_counter()) < started + seconds:
        if now >= next_scrape:
            code, _ = request(exporter, "/metrics")
            if code != 200:
                raise RuntimeError(f"scrape during the idle window answered {code}")
            scrapes += 1
            next_scrape += scrape_every or math.inf
        if now >= next_sample:
            rss.append(exporter.ps.memory_info().rss)
            kids = exporter.ps.children(recursive=True)
            children.append(len(kids))
            children_rss.append(sum(_rss(k) for k in kids))
            next_sample += IDLE_SAMPLE_SECONDS
        time.sleep(max(0.0, min(next_sample, next_scrape, started + seconds) - time.perf_counter()))
    wall = time.perf_counter() - started
    cpu = cpu_seconds(exporter.ps) - cpu_before
    return IdleWindow(max(rss), statistics.mean(rss), max(children), max(children_rss), 100 * cpu / wall, scrapes)


def _rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.NoSuchProcess:
        return 0


def idle_cost(stack: ExitStack, workdir: Path, seconds: float) -> Section:
    # A long interval: after the start-up round nothing runs until well after the windows.
    settings = {"interval": "10m", "jitter": "0s", "probe": DAEMON_PROBE}
    exporter = start_exporter(stack, workdir / "idle", settings)
    progress("idle: waiting for the start-up round to finish (/-/ready)")
    wait_for(lambda: status(exporter, "/-/ready") == 200, 120, exporter)
    time.sleep(SETTLE_SECONDS)
    progress(f"idle: {seconds:g} s with no scrapes")
    quiet = idle_window(exporter, seconds, None)
    progress(f"idle: {seconds:g} s with one scrape every {IDLE_SCRAPE_EVERY_SECONDS:g} s")
    scraped = idle_window(exporter, seconds, IDLE_SCRAPE_EVERY_SECONDS)
    exporter.stop()

    def mb(value: float) -> str:
        return f"{value / 1e6:.1f} MB"

    section = Section("2. Idle cost between rounds",
                      ["figure", "no scrapes", f"one scrape every {IDLE_SCRAPE_EVERY_SECONDS:g} s", "target", "result"])
    rss_ok = max(quiet.rss_max, scraped.rss_max) < IDLE_RSS_TARGET_MB * 1e6
    cpu_ok = max(quiet.cpu_percent, scraped.cpu_percent) < IDLE_CPU_TARGET_PERCENT
    section.checks = [
        Check(["exporter RSS, max (mean)", f"{mb(quiet.rss_max)} ({mb(quiet.rss_mean)})",
               f"{mb(scraped.rss_max)} ({mb(scraped.rss_mean)})", f"< {IDLE_RSS_TARGET_MB:g} MB"], rss_ok),
        Check(["exporter CPU (% of one core)", f"{quiet.cpu_percent:.3f} %", f"{scraped.cpu_percent:.3f} %",
               f"< {IDLE_CPU_TARGET_PERCENT:g} %"], cpu_ok),
        Check(["child processes, max (their RSS)", f"{quiet.children_max} ({mb(quiet.children_rss_max)})",
               f"{scraped.children_max} ({mb(scraped.children_rss_max)})", "0"],
              quiet.children_max == 0 and scraped.children_max == 0),
        Check(["scrapes in the window", str(quiet.scrapes), str(scraped.scrapes), ""]),
    ]
    section.notes = [f"Each window is {seconds:g} s, starting {SETTLE_SECONDS:g} s after /-/ready turned 200;"
                     f" RSS and children sampled every {IDLE_SAMPLE_SECONDS:g} s, CPU from the process's"
                     " user+system time over the whole window (a 10 ms tick resolution)."]
    return section


# --- 3. per-core agreement with node_exporter --------------------------------------------

_CPU_LINE = re.compile(r'^node_cpu_seconds_total\{cpu="(\d+)",mode="(\w+)"\} (\S+)$', re.MULTILINE)


@dataclass(frozen=True)
class NodeSample:
    sent: float
    received: float
    counters: dict[tuple[int, str], float]

    @property
    def at(self) -> float:
        """When node_exporter read /proc/stat, as well as we know: mid-way through the scrape."""
        return (self.sent + self.received) / 2


class NodeSampler(threading.Thread):
    """Scrapes node_exporter's per-CPU counters every ``NODE_SAMPLE_SECONDS``, stamped with perf_counter."""

    def __init__(self, node: Service) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.samples: list[NodeSample] = []
        self.errors = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.node.port, timeout=REQUEST_TIMEOUT_SECONDS)
        next_at = time.perf_counter()
        try:
            while not self.stopping.is_set():
                sent = time.perf_counter()
                try:
                    conn.request("GET", "/metrics")
                    body = conn.getresponse().read().decode()
                    received = time.perf_counter()
                    counters = {(int(c), m): float(v) for c, m, v in _CPU_LINE.findall(body)}
                    if counters:
                        self.samples.append(NodeSample(sent, received, counters))
                    else:
                        self.errors += 1
                except (OSError, http.client.HTTPException):
                    self.errors += 1
                    conn.close()
                next_at = max(next_at + NODE_SAMPLE_SECONDS, time.perf_counter())
                self.stopping.wait(next_at - time.perf_counter())
        finally:
            conn.close()

    def counters_at(self, t: float) -> Optional[dict[tuple[int, str], float]]:
        """Cumulative counters interpolated linearly to ``t``; None outside the sampled span."""
        for before, after in zip(self.samples, self.samples[1:]):
            if before.at <= t <= after.at:
                share = (t - before.at) / (after.at - before.at) if after.at > before.at else 0.0
                return {k: v + share * (after.counters.get(k, v) - v) for k, v in before.counters.items()}
        return None

    def busy(self, start: float, end: float) -> Optional[list[float]]:
        """node_exporter's busy fraction of each CPU: 1 - (idle+iowait)/all modes."""
        first, last = self.counters_at(start), self.counters_at(end)
        if first is None or last is None:
            return None
        fractions = []
        for cpu in sorted({c for c, _ in first}):
            delta = {m: last[(c, m)] - first[(c, m)] for c, m in first if c == cpu}
            total = sum(delta.values())
            idle = delta.get("idle", 0.0) + delta.get("iowait", 0.0)
            fractions.append(1 - idle / total if total > 0 else 0.0)
        return fractions


def per_core_agreement(node: Service, unit: float, repeats: int) -> Section:
    interpreter = probe.Interpreter(settings.default_interpreter_name(), sys.executable)
    workers = cpus.host_cpus().default_workers
    spec = probe.ProbeSpec("pure_python", PER_CORE_MODES, (workers,), unit, repeats, 60.0, "forkserver")
    sampler = NodeSampler(node)
    sampler.start()
    try:
        time.sleep(5 * NODE_SAMPLE_SECONDS)  # samples before the first window
        report = probe.run_workload(interpreter, spec, lambda m: progress(f"per-core: {m}"))
        time.sleep(5 * NODE_SAMPLE_SECONDS)  # and after the last
    finally:
        sampler.stopping.set()
        sampler.join()
        probe.kill_all_runners()
    section = Section("3. Per-core busy fraction: exporter vs node_exporter",
                      ["mode × workers", "cpu", "exporter", "node_exporter", "difference", "worst window",
                       "target", "result"])
    for step in report.steps:
        label = f"{step.mode} × {step.workers}"
        if not step.success or step.summary is None:
            section.checks.append(Check([label, "", "failed", "", "", step.message, "", ""], False))
            continue
        node_windows = [sampler.busy(min(w.starts), max(w.ends)) for w in step.windows]
        if any(n is None for n in node_windows):
            section.checks.append(Check([label, "", "", "window not bracketed by samples", "", "", "", ""], False))
            continue
        for cpu, ours in enumerate(step.summary.core_utilisation):
            theirs = statistics.median(n[cpu] for n in node_windows if n)
            worst = max(abs(w.core_utilisation[cpu] - n[cpu]) for w, n in zip(step.windows, node_windows) if n)
            diff = 100 * (ours - theirs)
            section.checks.append(Check([label, str(cpu), f"{100 * ours:.1f} %", f"{100 * theirs:.1f} %",
                                         f"{diff:+.1f} pp", f"{100 * worst:.1f} pp", f"within {PER_CORE_TARGET_PP:g} pp"],
                                        abs(diff) <= PER_CORE_TARGET_PP))
    gaps = [b.at - a.at for a, b in zip(sampler.samples, sampler.samples[1:])]
    scrape = [s.received - s.sent for s in sampler.samples]
    section.notes = [
        f"pure_python, unit {unit:g} s, {repeats} repeats, run in-process with exporter.probe.run.run_workload;"
        " exporter = the exported figure (median of the step's windows), node_exporter = the median of its"
        " busy fraction over the same windows, each bracketed by the workers' own perf_counter stamps.",
        f"{len(sampler.samples)} node_exporter samples ({sampler.errors} failed), median gap"
        f" {ms(statistics.median(gaps) if gaps else math.nan)}, max gap {ms(max(gaps, default=math.nan))};"
        f" scrape duration median {ms(statistics.median(scrape) if scrape else math.nan)},"
        f" max {ms(max(scrape, default=math.nan))} (the uncertainty of each sample's time).",
        "Busy = 1 − (idle + iowait) / (sum of all node_cpu_seconds_total modes), steal counted as busy,"
        " as the exporter counts it; guest time is not in node_cpu_seconds_total, and the exporter leaves it out.",
    ]
    return section


# --- output ------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)]


def render(machine: list[tuple[str, str]], sections: list[Section], command: str) -> str:
    lines = ["# parallelism-exporter daemon benchmark", "", f"`{command}`", ""]
    lines += table(["machine", ""], [list(m) for m in machine])
    for section in sections:
        lines += ["", f"## {section.title}", ""]
        lines += table(section.header, [c.row() for c in section.checks])
        lines += [""] + [f"- {note}" for note in section.notes]
    missed = [s.title for s in sections if any(c.ok is False for c in s.checks)]
    lines += ["", "Overall: " + ("every target met" if not missed else "MISS in " + "; ".join(missed))]
    return "\n".join(lines) + "\n"


# --- entry point -------------------------------------------------------------------------


SECTIONS = ("load", "idle", "percore")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a short trial: 1000 scrapes per target, 10 s idle windows, 1 s units, 2 repeats")
    parser.add_argument("--markdown", metavar="OUT.md", help="also write the results table here")
    parser.add_argument("--requests", type=int, help="scrapes per target (default 10000; --quick 1000)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent scrapes (default 50)")
    parser.add_argument("--idle-seconds", type=float, help="length of each idle window (default 30; --quick 10)")
    parser.add_argument("--unit", type=float, help="per-core probe unit in seconds (default 2; --quick 1)")
    parser.add_argument("--repeats", type=int, help="per-core probe repeats (default 3; --quick 2)")
    parser.add_argument("--node-collectors", choices=sorted(NODE_COLLECTORS), default="minimal",
                        help="minimal: cpu, meminfo, loadavg only (default); default: node_exporter's defaults")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    args = parser.parse_args(argv)
    args.requests = args.requests or (1000 if args.quick else 10000)
    args.idle_seconds = args.idle_seconds or (10.0 if args.quick else 30.0)
    args.unit = args.unit or (1.0 if args.quick else 2.0)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))} (known: {', '.join(SECTIONS)})")
    if min(args.requests, args.concurrency) < 1 or args.idle_seconds <= 0 or args.unit <= 0 or args.repeats < 1:
        parser.error("--requests, --concurrency, --idle-seconds, --unit and --repeats must be positive")
    return args


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not os.access(NODE_EXPORTER, os.X_OK):
        print(f"{NODE_EXPORTER} is not installed", file=sys.stderr)
        return 2
    # SIGTERM and SIGHUP unwind like Ctrl-C, so every process started here is stopped; a
    # signal the caller chose to ignore (nohup) stays ignored.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _interrupt)
    command = "python benchmarks/daemon.py " + " ".join(sys.argv[1:] if argv is None else argv)
    machine = describe_machine()
    results: dict[str, Section] = {}
    try:
        # The stack (every process) unwinds before the directory holding their logs goes.
        with tempfile.TemporaryDirectory(prefix="pyparallel-daemon-bench-") as tmp, ExitStack() as stack:
            workdir = Path(tmp)
            node = start_node_exporter(stack, workdir, args.node_collectors)
            # Quietest first: idle, then per-core, then the load test that heats everything up.
            if "idle" in args.sections:
                results["idle"] = idle_cost(stack, workdir, args.idle_seconds)
            if "percore" in args.sections:
                results["percore"] = per_core_agreement(node, args.unit, args.repeats)
            if "load" in args.sections:
                progress(f"load: node_exporter with {args.node_collectors} collectors")
                results["load"] = scrape_latency(stack, workdir, node, args.requests, args.concurrency)
    except KeyboardInterrupt:
        print("interrupted; every process started here has been stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sections = [results[name] for name in SECTIONS if name in results]
    if "load" in results:
        results["load"].notes.append(f"node_exporter collectors: {args.node_collectors}"
                                     f" ({' '.join(NODE_COLLECTORS[args.node_collectors]) or 'its defaults'});"
                                     " --web.max-requests=0.")
    text = render(machine, sections, command.strip())
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0 if all(c.ok is not False for s in sections for c in s.checks) else 1


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
