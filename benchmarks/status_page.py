#!/usr/bin/env python3
"""What the status page costs: render time and size of ``/`` and ``/api/v1/results``, and the
memory the bounded history holds, for small and large configurations.

Run by hand, never by the test suite: ``python benchmarks/status_page.py [--markdown FILE]``.
The results fed to the page are constructed (the figures' values do not change the cost, only
how many steps, history points and failure logs there are); the timings are measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import cpu_model  # noqa: E402
from exporter.pages import api  # noqa: E402
from exporter.stats import measurement
from exporter.pages import statuspage
from exporter.export.collector import empty_snapshot  # noqa: E402
from exporter.model.schedule import Schedule  # noqa: E402
from exporter.config.settings import Config  # noqa: E402
from exporter.pages.history import History  # noqa: E402
from exporter.host.cpus import host_cpus  # noqa: E402
from exporter.model.results import Identity, Interpreter, ProbeSpec, StepResult, WorkloadReport  # noqa: E402

MODES = ("sequential", "threads", "processes", "asyncio", "subinterpreters")
SIZES = {"small (1 interpreter × 2 workloads × 3 modes)": (1, 2, 3),
         "large (3 interpreters × 5 workloads × 5 modes)": (3, 5, 5)}


def reports(interpreters: int, workloads: int, modes: int, cpus: int, round_no: int, failing: bool) -> list[WorkloadReport]:
    """One round's results of this shape; every step of the last workload fails when ``failing``."""
    identity = Identity("3.13.5", "cpython", "/opt/py", True, False, ("fork",), None)
    out = []
    for i in range(interpreters):
        for w in range(workloads):
            spec = ProbeSpec(f"pkg.bench:work_{w}", MODES[:modes], (cpus,))
            steps = []
            for mode, workers in spec.steps():
                step = StepResult(spec.workload, mode, workers)
                if failing and w == workloads - 1:
                    # Distinct strings, as real output is: shared ones would hide the memory cost.
                    step.fail("crash", f"interpreter killed by SIGABRT in round {round_no}: " + "x" * 200)
                    step.log = [f"stderr line {k:02d} of round {round_no:04d} " + "y" * 182 for k in range(20)]
                else:
                    step.success = True
                    step.summary = measurement.Summary(0.5, 1.0 + 0.9 * (mode != "sequential"), 0.05, 0.9, None,
                                                       4.0, 400.0, float(workers), [0.9] * cpus, 0.01)
                steps.append(step)
            out.append(WorkloadReport(Interpreter(f"python-{i}", "/opt/py"), spec, identity, steps=steps,
                                      started_at=1_700_000_000.0 + round_no * 300, duration_seconds=3.0))
    return out


def measure(shape: tuple[int, int, int], cpus: int, rounds: int) -> dict[str, float]:
    history = History(limit=rounds)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for round_no in range(rounds):
        history.record(reports(*shape, cpus, round_no, failing=True))
    history_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    config = Config()
    host = replace(host_cpus(), logical=cpus)
    last = reports(*shape, cpus, rounds, failing=True)
    snapshot = empty_snapshot(config, host)
    snapshot = snapshot.with_round(last)
    schedule = Schedule(1.7e9, None, 1.7e9, 1.7e9 + 3, 1.7e9 + 300, 300.0, 300.0, 0.01, 0.05)
    page_times, api_times = [], []
    for _ in range(15):
        started = time.perf_counter()
        page = statuspage.render_page(api.results_document(snapshot, schedule, history))
        page_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        api_text = json.dumps(api.results_document(snapshot, schedule, history), indent=1)
        api_times.append(time.perf_counter() - started)
    return {"steps": sum(len(r.steps) for r in last), "page_ms": statistics.median(page_times) * 1000,
            "page_kib": len(page.encode()) / 1024, "api_ms": statistics.median(api_times) * 1000,
            "api_kib": len(api_text.encode()) / 1024, "history_kib": history_bytes / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", help="also write the results to this file")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs per core picture")
    parser.add_argument("--rounds", type=int, default=100, help="history limit, filled completely")
    args = parser.parse_args()
    lines = ["# Status page cost", "", f"`python benchmarks/status_page.py --cpus {args.cpus} --rounds {args.rounds}`", "",
             f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
             f"CPython {platform.python_version()}. Median of 15 renders; history filled to its limit of "
             f"{args.rounds} rounds, one workload per interpreter failing every round (20 distinct stderr lines of "
             "212 characters each, the runner's tail). Load average at the start: "
             + ", ".join(f"{v:.2f}" for v in os.getloadavg()) + " (other work on the host slows the renders).", "",
             "| configuration | steps | `/` render | `/` size | `/api/v1/results` | API size | history memory |",
             "|---|---|---|---|---|---|---|"]
    for label, shape in SIZES.items():
        r = measure(shape, args.cpus, args.rounds)
        lines.append(f"| {label} | {r['steps']:.0f} | {r['page_ms']:.1f} ms | {r['page_kib']:.0f} KiB | "
                     f"{r['api_ms']:.1f} ms | {r['api_kib']:.0f} KiB | {r['history_kib']:.0f} KiB |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
