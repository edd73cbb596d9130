"""What watching services costs, and how exact it is: 10, 100 and 1 000 matched processes.

``python benchmarks/services.py [--counts 10,100,1000] [--windows 6] [--interval 5] [--markdown OUT.md]``

For each count, one launcher forks that many Python children (two of them busy, each with two
threads at about half a core; the rest asleep) and the real ``Sampler`` watches the group:

- **CPU per second of sampling**: the sampler thread's own CPU time (``time.thread_time``) per
  scan, divided by the interval: the share of one core the collector keeps busy. The first
  scan (every process matched and identified) is shown apart from the steady ones.
- **scrape latency**: rendering ``/metrics`` (``generate_latest``) with the services families
  registered, median and 99th percentile of 200 renders, while no scan runs and while scans
  run back to back on another thread (they share the daemon's GIL).
- **accuracy**: the group's cores used against psutil's CPU times of the same processes over
  the same window (relative error of the group total).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.machine import cpu_model  # noqa: E402
from exporter.config.loader import config_from_mapping  # noqa: E402
from exporter.host.cpus import host_cpus  # noqa: E402
from exporter.services.collector import ServiceCollector  # noqa: E402
from exporter.services.watcher import Sampler  # noqa: E402
from exporter.services.window import ServicesSnapshot  # noqa: E402

LAUNCHER = r"""
import os, sys, threading, time
count, busy = int(sys.argv[1]), int(sys.argv[2])
def half_core():
    while True:
        end = time.monotonic() + 0.01
        while time.monotonic() < end:
            pass
        time.sleep(0.01)
parent = os.getpid()
for i in range(count):
    pid = os.fork()
    if pid == 0:
        if i < busy:
            for _ in range(2):
                threading.Thread(target=half_core, daemon=True).start()
        while os.getppid() == parent:  # never outlive the benchmark
            time.sleep(1)
        os._exit(0)
print("ready", flush=True)
sys.stdin.read()
"""
RENDERS = 200


def render_times(registry: CollectorRegistry, renders: int = RENDERS) -> tuple[float, float]:
    """Median and 99th percentile of rendering the registry, in milliseconds."""
    times = []
    for _ in range(renders):
        start = time.perf_counter()
        generate_latest(registry)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


def psutil_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def measure(count: int, windows: int, interval: float) -> dict[str, float]:
    tag = f"svcbench{count}"
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(count), "2", tag], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout is not None and launcher.stdout.readline().strip() == "ready"
        children = [p.pid for p in psutil.Process(launcher.pid).children()]
        config = config_from_mapping({"services": {"interval": interval, "groups": [
            {"name": "bench", "cmdline": [f" {tag}$"]}]}}).services
        sampler = Sampler(config, own_pid=0)
        usable = host_cpus().usable
        snapshot: list[ServicesSnapshot] = [ServicesSnapshot()]
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        registry.register(ServiceCollector(lambda: snapshot[0]))

        start = time.thread_time()
        snapshot[0] = sampler.sample(usable)
        first_cpu = time.thread_time() - start
        steady = []
        for _ in range(windows):
            time.sleep(interval)
            started = time.thread_time()
            snapshot[0] = sampler.sample(usable)
            steady.append(time.thread_time() - started)
        # Accuracy: one more window, psutil read right before each of the two scans.
        reference_before = psutil_cpu(children)
        host_before = psutil.cpu_times()
        t0 = time.monotonic()
        sampler.sample(usable)
        time.sleep(interval)
        reference_after = psutil_cpu(children)
        host_after = psutil.cpu_times()
        t1 = time.monotonic()
        snapshot[0] = sampler.sample(usable)
        ours = sum(c.cores_used for c in snapshot[0].cohorts if c.group == "bench")
        theirs = (reference_after - reference_before) / (t1 - t0)
        idle = sum(getattr(host_after, f) - getattr(host_before, f) for f in ("idle", "iowait", "steal")
                   if hasattr(host_after, f))
        busy = psutil.cpu_count() - idle / (t1 - t0)
        others = max(0.0, busy - theirs)  # the sampler's own share is in it too (see the CPU column)
        idle_render = render_times(registry)
        stop = threading.Event()

        def scan_forever() -> None:
            while not stop.is_set():
                snapshot[0] = sampler.sample(usable)

        scanner = threading.Thread(target=scan_forever, daemon=True)
        scanner.start()
        busy_render = render_times(registry)
        stop.set()
        scanner.join()
        processes = sum(c.processes for c in snapshot[0].cohorts if c.group == "bench")
        return {"matched": processes, "first_scan_cpu": first_cpu, "steady_scan_cpu": statistics.median(steady),
                "scan_wall": snapshot[0].scan_seconds or 0.0, "cpu_share": statistics.median(steady) / interval,
                "ours": ours, "psutil": theirs, "render_idle": idle_render[0], "render_idle_p99": idle_render[1],
                "render_busy": busy_render[0], "render_busy_p99": busy_render[1],
                "scanned": snapshot[0].scanned_processes, "others": others}
    finally:
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        time.sleep(1)  # the children notice their parent is gone within a second


def header(interval: float) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"Machine: {cpu_model()}, {psutil.cpu_count()} CPUs, Linux {platform.release()}, CPython "
            f"{platform.python_version()}. Interval {interval:g} s. Load average at the start: {load}.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="10,100,1000")
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    lines = ["# Services collector: cost and accuracy", "",
             f"`python benchmarks/services.py --counts {args.counts} --windows {args.windows} "
             f"--interval {args.interval:g}`", "", header(args.interval), "",
             "| matched | scanned | first scan CPU | steady scan CPU | scan wall | CPU per second of sampling | "
             "cores: ours | cores: psutil | error | other load | scrape idle p50/p99 | scrape during scans p50/p99 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for count in (int(c) for c in args.counts.split(",")):
        print(f"measuring {count} processes...", file=sys.stderr)
        r = measure(count, args.windows, args.interval)
        error = abs(r["ours"] - r["psutil"]) / r["psutil"] if r["psutil"] else float("nan")
        lines.append(
            f"| {r['matched']:.0f} | {r['scanned']:.0f} | {r['first_scan_cpu'] * 1000:.0f} ms | "
            f"{r['steady_scan_cpu'] * 1000:.1f} ms | {r['scan_wall'] * 1000:.1f} ms | {r['cpu_share']:.2%} | "
            f"{r['ours']:.3f} | {r['psutil']:.3f} | {error:.2%} | {r['others']:.2f} | "
            f"{r['render_idle']:.2f}/{r['render_idle_p99']:.2f} ms | "
            f"{r['render_busy']:.2f}/{r['render_busy_p99']:.2f} ms |")
    lines.append("")
    lines.append("Other load: the host's busy cores in the accuracy window minus the group's own (psutil). "
                 "Scrape during scans: scans run back to back on another thread (the worst case; at the default "
                 "interval a scan overlaps a scrape a few per cent of the time).")
    lines.append(f"Load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
