#!/usr/bin/env python3
"""What containment costs and how fast it acts: run by hand, results in results-contain.md.

- the boundary's own cost per probe: a cgroup (create, adopt, kill, remove) and the
  environment-token sweep of /proc used where no cgroup is writable;
- the exporter's memory while a workload prints 10 MB without a newline;
- how long after ``kill -9`` of the exporter its last probe process is gone, per start method;
- the config loader's worst case: parsing a file at the size limit, refusing a 12 MB one.

Every process started here carries a fresh PYPARALLEL_TEST_TOKEN and is killed on the way out.
"""

from __future__ import annotations

import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import yaml

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "tests")]

from machine import cpu_model  # noqa: E402
import support  # noqa: E402
from exporter.config import loader, yamlfile  # noqa: E402
from exporter.errors import ConfigError  # noqa: E402
from exporter.probe import containment, run  # noqa: E402


def median_ms(samples: list[float]) -> str:
    low, high = min(samples) * 1000, max(samples) * 1000
    return f"{statistics.median(samples) * 1000:.1f} ms (min {low:.1f}, max {high:.1f}, n={len(samples)})"


def boundary_cost(rounds: int = 30) -> list[tuple[str, str]]:
    """A process that exits at once, contained and released: the fixed cost per probe."""
    rows = []
    for kind in ("cgroup", "token sweep"):
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            boundary = containment.Containment()
            if kind == "token sweep":
                boundary._remove()
                boundary.kind = "none"
            child = subprocess.Popen(["true"], env=dict(os.environ, **boundary.environment()))
            boundary.adopt(child.pid)
            child.wait()
            boundary.close()
            samples.append(time.perf_counter() - started)
        rows.append((f"{kind} ({containment.cgroup_parent()[1] if kind == 'cgroup' else 'psutil scan'})", median_ms(samples)))
    rows.append(("processes on the machine during the sweep", str(len(psutil.pids()))))
    return rows


def flood_memory() -> list[tuple[str, str]]:
    """Peak RSS of this (parent) process while a workload prints 10 MB without a newline."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    spec = run.ProbeSpec("faulty_workloads:floods_output_without_newline", ("threads",), (2,), 0.05, 1, 30.0,
                           workload_path=(str(HERE.parent / "tests"),))
    report = run.run_workload(run.Interpreter("bench", sys.executable), spec)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return [("probe outcome", "success" if report.success else f"failed: {report.steps[0].message}"),
            ("parent peak RSS before → after (KiB)", f"{before} → {after} (+{after - before})")]


def sigkill_cleanup(start_method: str) -> float:
    """Seconds from SIGKILL of the exporter to the last of its probe processes gone."""
    token = uuid.uuid4().hex
    cfg = {"interval": "1h", "jitter": "0s", "duty_cycle": 1,
           "probe": {"workloads": ["faulty_workloads:hangs_in_worker_process"], "modes": ["processes"],
                     "workers": [2], "unit_seconds": 0.05, "repeats": 1, "timeout": "10m",
                     "start_method": start_method}}
    with tempfile.TemporaryDirectory() as work:
        exporter = support.start_exporter(Path(work), cfg, env={"PYPARALLEL_TEST_TOKEN": token})
        try:
            support.wait_for(lambda: len(support.processes_with_token(token)) >= 4, 60, "workers to hang")
            time.sleep(0.5)
        finally:
            exporter.stop(signal.SIGKILL)
        killed = time.perf_counter()
        while support.processes_with_token(token) and time.perf_counter() - killed < 30:
            time.sleep(0.01)
        elapsed = time.perf_counter() - killed
        for leftover in support.processes_with_token(token):
            leftover.kill()
    return elapsed


def loader_worst_case() -> list[tuple[str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as work:
        at_limit = Path(work) / "at-limit.yml"
        items = ", ".join(["json"] * ((yamlfile.MAX_CONFIG_BYTES - 64) // 6))
        at_limit.write_text(f"import_check:\n  modules: [{items}]\n")
        started = time.perf_counter()
        try:
            loader.load_config(str(at_limit))
            outcome = "loaded"
        except ConfigError as exc:
            outcome = str(exc).split(": ", 2)[-1][:60]
        elapsed = time.perf_counter() - started
        rows.append((f"parse {at_limit.stat().st_size // 1024} KiB flow list", f"{elapsed:.2f} s ({outcome})"))
        huge = Path(work) / "huge.yml"
        huge.write_text("interval: 5m\n" + yaml.safe_dump({"x": ["y" * 100] * 120_000}))
        started = time.perf_counter()
        try:
            loader.load_config(str(huge))
        except ConfigError as exc:
            elapsed_ms = (time.perf_counter() - started) * 1000
            reason = str(exc).split(": ", 2)[-1]
            rows.append((f"refuse {huge.stat().st_size // 2**20} MB file", f"{elapsed_ms:.1f} ms ({reason})"))
    return rows


def main() -> None:
    print(f"# Containment benchmark\n\nMachine: {cpu_model()}, {os.cpu_count()} logical CPUs, "
          f"Linux {platform.release()}, Python {platform.python_version()}; "
          f"load average at start {os.getloadavg()[0]:.2f}.\n")
    sections = [("Boundary cost per probe", boundary_cost()),
                ("10 MB without a newline", flood_memory()),
                ("SIGKILL of the exporter mid-round → last probe process gone",
                 [(method, f"{sigkill_cleanup(method):.2f} s") for method in ("forkserver", "spawn", "fork")]),
                ("Config loader worst case", loader_worst_case())]
    for title, rows in sections:
        print(f"## {title}\n\n| what | result |\n|---|---|")
        for what, result in rows:
            print(f"| {what} | {result} |")
        print()


if __name__ == "__main__":
    main()
