"""Right the first time, or "cannot tell": the benchmark of issue 19.

Part 1, an idle host: ``--probes`` default probes (the daemon's workloads and modes, default
precision) of each interpreter, each a fresh ``parallelism-exporter probe --json`` as a user
runs it. Per (interpreter, workload, mode) cell it reports the shown speedups and how many
were withheld or inconclusive, the median half-width of the interval, its coverage of the
median of each block of 10 probes, the first-pair bias (mean first pair against the mean of
the others), the processes' rate, and the probes' wall time; then ``compare`` of each probe
against the next (A/A: the same interpreter twice should not regress).

Part 2, one other process using one core (a busy loop started here): ``--tries`` times
each, ``compare`` of 3.11 against 3.11 (must never exit 1) and of 3.13t against 3.13t with
``PYTHON_GIL=1`` (must never exit 0).

Also the variance between probes that one probe's pairs cannot see (the figure behind
``measurement.BETWEEN_PROBE_SD``): per cell, the variance of the probes' log speedups less
the mean variance of their means. Run by hand on a quiet host; progress on stderr::

    python benchmarks/gate.py --markdown benchmarks/results-gate.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXPORTER = [sys.executable, "-m", "exporter"]
DEFAULT_FT_PYTHON = os.path.expanduser("~/.cache/python3.13t/bin/python3.13t")
WORKLOADS, MODES = "pure_python,sha256", "sequential,threads,processes"
BURNER = "while True:\n    pass\n"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def probe(python: str, env: Optional[dict[str, str]] = None, workloads: str = WORKLOADS,
          modes: str = MODES) -> tuple[dict[str, Any], float]:
    """One ``probe --json`` in a fresh process; (document, wall seconds)."""
    started = time.monotonic()
    result = subprocess.run(EXPORTER + ["probe", "--python", python, "--workload", workloads, "--mode", modes,
                                        "--json"], capture_output=True, text=True, cwd=REPO, timeout=600,
                            env=dict(os.environ, **(env or {})))
    if result.returncode not in (0, 1):
        raise SystemExit(f"probe failed ({result.returncode}): {result.stderr[-2000:]}")
    return json.loads(result.stdout), time.monotonic() - started


def compare(baseline: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        paths = []
        for name, document in (("base.json", baseline), ("cand.json", candidate)):
            path = Path(scratch) / name
            path.write_text(json.dumps(document))
            paths.append(str(path))
        result = subprocess.run(EXPORTER + ["compare", *paths, "--json"], capture_output=True, text=True, cwd=REPO)
    if result.returncode == 2:
        raise SystemExit(f"compare refused its input: {result.stderr}")
    return json.loads(result.stdout)


@dataclass
class Cell:
    """Every probe's figures for one (interpreter, workload, mode)."""

    shown: list[float] = field(default_factory=list)
    intervals: list[Optional[list[float]]] = field(default_factory=list)
    estimates: list[Optional[float]] = field(default_factory=list)  # shown or not
    half_widths: list[float] = field(default_factory=list)
    withheld: int = 0
    inconclusive: int = 0
    remeasured: int = 0
    first_pairs: list[float] = field(default_factory=list)
    other_pairs: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    pairs: list[int] = field(default_factory=list)
    within_variances: list[float] = field(default_factory=list)  # of the mean log speedup

    def add(self, result: dict[str, Any]) -> None:
        pairs = result["pair_speedups"]
        self.pairs.append(result["pairs"])
        if result["remeasured_reason"]:
            self.remeasured += 1
        if result["conclusive"] is False:
            self.inconclusive += 1
        elif result["unsteady"]:
            self.withheld += 1
        speedup = result["speedup"]
        self.estimates.append(math.exp(statistics.fmean(math.log(p) for p in pairs)) if pairs else None)
        self.intervals.append(result["speedup_ci"] if speedup is not None else None)
        if speedup is not None:
            self.shown.append(speedup)
            if result["speedup_ci"]:
                low, high = result["speedup_ci"]
                self.half_widths.append((high - low) / 2 / speedup)
        if len(pairs) >= 2 and result["conclusive"] is not False:
            self.first_pairs.append(pairs[0])
            self.other_pairs.extend(pairs[1:])
            logs = [math.log(p) for p in pairs]
            self.within_variances.append(statistics.variance(logs) / len(logs))
        if result["cpu_rate_ratio"] is not None:
            self.rates.append(result["cpu_rate_ratio"])

    def coverage(self, block: int = 10) -> tuple[int, int]:
        """Probes whose interval holds the median of their block of ``block`` probes."""
        held = total = 0
        for start in range(0, len(self.estimates) - block + 1, block):
            estimates = [e for e in self.estimates[start:start + block] if e is not None]
            if not estimates:
                continue
            median = statistics.median(estimates)
            for interval in self.intervals[start:start + block]:
                total += 1
                held += interval is not None and interval[0] <= median <= interval[1]
        return held, total

    def between_probe_sd(self) -> Optional[float]:
        logs = [math.log(e) for e in self.estimates if e is not None]
        if len(logs) < 3 or not self.within_variances:
            return None
        excess = statistics.variance(logs) - statistics.fmean(self.within_variances)
        return math.sqrt(max(0.0, excess))

    def first_pair_bias(self) -> Optional[float]:
        if not self.first_pairs or not self.other_pairs:
            return None
        return statistics.fmean(self.first_pairs) / statistics.fmean(self.other_pairs) - 1


def idle_part(pythons: dict[str, str], count: int) -> tuple[dict[tuple[str, str, str], Cell], dict[str, list[float]],
                                                               dict[str, list[int]]]:
    cells: dict[tuple[str, str, str], Cell] = {}
    walls: dict[str, list[float]] = {}
    exits: dict[str, list[int]] = {}
    for name, python in pythons.items():
        documents = []
        for i in range(count):
            document, wall = probe(python)
            documents.append(document)
            walls.setdefault(name, []).append(wall)
            for result in document["results"]:
                if result["mode"] != "sequential":
                    cells.setdefault((name, result["workload"], result["mode"]), Cell()).add(result)
            load = os.getloadavg()[0]
            log(f"{name} probe {i + 1}/{count}: {wall:.1f} s, load {load:.2f}")
        exits[name] = [compare(a, b)["exit_code"] for a, b in zip(documents, documents[1:])]
    return cells, walls, exits


def busy_part(python311: str, ft_python: Optional[str], tries: int) -> dict[str, list[int]]:
    burner = subprocess.Popen([sys.executable, "-c", BURNER])
    outcomes: dict[str, list[int]] = {"3.11 A/A": [], "3.13t → 3.13t PYTHON_GIL=1": []}
    try:
        time.sleep(1)
        for i in range(tries):
            first, _ = probe(python311, workloads="pure_python")
            second, _ = probe(python311, workloads="pure_python")
            outcomes["3.11 A/A"].append(compare(first, second)["exit_code"])
            if ft_python:
                free, _ = probe(ft_python, workloads="pure_python")
                gil, _ = probe(ft_python, env={"PYTHON_GIL": "1"}, workloads="pure_python")
                outcomes["3.13t → 3.13t PYTHON_GIL=1"].append(compare(free, gil)["exit_code"])
            log(f"busy try {i + 1}/{tries}: {outcomes}")
    finally:
        burner.kill()
        burner.wait()
    return outcomes


def fmt(value: Optional[float], spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def markdown(cells: dict[tuple[str, str, str], Cell], walls: dict[str, list[float]], aa: dict[str, list[int]],
             busy: dict[str, list[int]], pythons: dict[str, str], count: int) -> str:
    lines = ["# Right the first time, or cannot tell (benchmarks/gate.py, issue 19)", "",
             f"Machine: {cpu_model()}, {psutil.cpu_count()} logical CPUs, Linux {platform.release()}; "
             f"{time.strftime('%Y-%m-%d')}. Interpreters: "
             + ", ".join(f"{name} ({path})" for name, path in pythons.items())
             + f". {count} default probes each (workloads {WORKLOADS}, modes {MODES}, default precision), "
               "each a fresh `probe --json`.", "",
             "| interpreter | workload | mode | shown min–max | withheld | cannot tell | measured again | "
             "median ± | coverage (10-probe median) | first-pair bias | rate (mean) | pairs (median) | "
             "between-probe sd |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, workload, mode), cell in sorted(cells.items()):
        held, total = cell.coverage()
        shown = f"{min(cell.shown):.2f}–{max(cell.shown):.2f}" if cell.shown else "–"
        lines.append(
            f"| {name} | {workload} | {mode} | {shown} | {cell.withheld} | {cell.inconclusive} | {cell.remeasured} | "
            f"{fmt(statistics.median(cell.half_widths) if cell.half_widths else None, '.1%')} | {held}/{total} | "
            f"{fmt(cell.first_pair_bias(), '+.1%')} | {fmt(statistics.fmean(cell.rates) if cell.rates else None)} | "
            f"{statistics.median(cell.pairs):g} | {fmt(cell.between_probe_sd(), '.4f')} |")
    lines += ["", "| interpreter | probe wall time (s): median, max | A/A compare exits (consecutive probes) |",
              "|---|---|---|"]
    for name, values in walls.items():
        codes = aa.get(name, [])
        lines.append(f"| {name} | {statistics.median(values):.1f}, {max(values):.1f} | "
                     f"{sum(c == 1 for c in codes)}× 1, {sum(c == 3 for c in codes)}× 3, "
                     f"{sum(c == 0 for c in codes)}× 0 of {len(codes)} |")
    if busy:
        lines += ["", "One other process using one core (a busy loop):", "",
                  "| comparison | exit codes |", "|---|---|"]
        for what, codes in busy.items():
            lines.append(f"| {what} | {', '.join(map(str, codes)) or '–'} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--tries", type=int, default=10, help="busy-host comparisons of each kind (0: skip)")
    parser.add_argument("--ft-python", default=os.environ.get("PYPARALLEL_FT_PYTHON", DEFAULT_FT_PYTHON))
    parser.add_argument("--markdown", help="also write the report here")
    args = parser.parse_args(argv)
    pythons = {"3.11": sys.executable}
    if os.path.exists(args.ft_python):
        pythons["3.13t"] = args.ft_python
    cells, walls, aa = idle_part(pythons, args.probes)
    busy = busy_part(sys.executable, pythons.get("3.13t"), args.tries) if args.tries else {}
    text = markdown(cells, walls, aa, busy, pythons, args.probes)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
