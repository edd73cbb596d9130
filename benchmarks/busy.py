"""The busy host: what the product says while other processes take the cores.

Every probe is ``parallelism-exporter probe --json`` (or ``--compare``) in a fresh process,
as a user runs it, while this script keeps a given *other load* running: burner processes
of a whole core each, a half core (busy and idle by turns), at nice 0 or nice 19.

Parts (``--part``, repeatable; default all):

- ``matrix``: ``--probes`` probes per cell (in two batches, all loads each batch) at other
  loads of 0, 0.5, 1, 1.5 and 2 cores and 2 cores at nice 19; cells: GIL threads, processes
  and asyncio (the Python running this script), 3.13t threads, 3.13t threads with
  ``PYTHON_GIL=1``, 3.13t threads writing one shared dict. Per cell: how often the
  classification (parallel, serialised, contention) is the expected one and how often it is
  "cannot tell"; the workers runnable at once (the host-independent figure) against its
  value with no other load; and with no other load, the idle-host estimate against the
  measured wall-clock speedup.
- ``compare``: at each load, ``--tries`` times 3.13t against 3.13t with ``PYTHON_GIL=1``
  (must exit 1) and 3.13t against itself (must not exit 1, and 3 rarely).
- ``quota``: processes under a 1-CPU cgroup quota.
- ``cost``: CPU time of the kernel-accounting reads at 2 and 64 workers.
- ``contended``: five ftscalingbench workloads on 3.13t, probes in a row as the daemon runs
  them (each learning the variance between probes from the ones before): does each
  interval cover the next probe's figure, and does the leading word hold between probes
  whose intervals mostly overlap?

Run by hand on an otherwise idle machine (root, for the quota part); progress on stderr::

    python benchmarks/busy.py --markdown benchmarks/results-busy.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

from machine import cpu_model  # noqa: E402

from exporter.model.results import Interpreter, ProbeSpec  # noqa: E402
from exporter.model.verdicts import mode_verdict  # noqa: E402
from exporter.probe import run as probe_run  # noqa: E402
from exporter.runner import schedstat  # noqa: E402

EXPORTER = [sys.executable, "-m", "exporter"]
DEFAULT_FT = os.path.expanduser("~/.cache/python3.13t/bin/python3.13t")
LOADS = ("0", "0.5", "1", "1.5", "2", "2@19")  # cores of other load, @nice
# A half core: busy and idle by turns, a few scheduler periods each.
HALF_CORE = ("import time\nwhile True:\n    end = time.perf_counter() + 0.02\n"
             "    while time.perf_counter() < end:\n        pass\n    time.sleep(0.02)\n")
FULL_CORE = "while True:\n    pass\n"
RUNNABLE_TOLERANCE = 0.15
AGREEMENT = 0.1


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- other load ----------------------------------------------------------------------------


@contextmanager
def other_load(spec: str) -> Iterator[None]:
    """Burners for ``spec``: cores (whole and a half), optionally ``@nice``."""
    cores, _, nice = spec.partition("@")
    amount = float(cores)
    programs = [FULL_CORE] * int(amount) + ([HALF_CORE] if amount % 1 else [])
    niceness = int(nice or 0)
    burners = [subprocess.Popen([sys.executable, "-c", program], preexec_fn=lambda: os.nice(niceness))
               for program in programs]
    try:
        time.sleep(0.5 if burners else 0.0)
        yield
    finally:
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait()


# --- one probe ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    name: str
    expected: str  # parallel, serialised or contention
    mode: str


@dataclass(frozen=True)
class Run:
    """One probe command and the cells its document answers."""

    name: str
    args: tuple[str, ...]
    env: dict[str, str]
    cells: tuple[Cell, ...]


def runs(ft: str) -> list[Run]:
    this = [Cell("GIL threads", "serialised", "threads"), Cell("processes", "parallel", "processes"),
            Cell("asyncio", "serialised", "asyncio")]
    return [
        Run("this Python", ("--workload", "pure_python", "--mode", "threads,processes,asyncio"), {}, tuple(this)),
        Run("3.13t", ("--python", ft, "--workload", "pure_python", "--mode", "threads"), {},
            (Cell("3.13t threads", "parallel", "threads"),)),
        Run("3.13t PYTHON_GIL=1", ("--python", ft, "--workload", "pure_python", "--mode", "threads"),
            {"PYTHON_GIL": "1"}, (Cell("3.13t PYTHON_GIL=1 threads", "serialised", "threads"),)),
        Run("3.13t shared dict", ("--python", ft, "--workload", "contended_workloads:shared_dict_writes",
                                  "--workload.path", str(HERE), "--mode", "threads"), {},
            (Cell("3.13t shared-dict threads", "contention", "threads"),)),
    ]


def probe_json(args: Sequence[str], env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(EXPORTER + ["probe", "--json", *args], capture_output=True, text=True, cwd=REPO,
                            env=dict(os.environ, **env), timeout=900)
    if not result.stdout.strip():
        raise RuntimeError(f"probe {' '.join(args)} printed nothing: {result.stderr[-500:]}")
    return json.loads(result.stdout)


@dataclass
class Observation:
    parallelism: Optional[str]
    runnable: Optional[float]
    idle: Optional[float]
    speedup: Optional[float]


def observe(document: dict[str, Any], mode: str) -> Observation:
    step = next(r for r in document["results"] if r["mode"] == mode and r["workers"] == 2)
    return Observation(step.get("parallelism"), step.get("runnable_workers"), step.get("idle_speedup"),
                       step.get("speedup"))


# --- the matrix ---------------------------------------------------------------------------


@dataclass
class CellResult:
    observations: dict[str, list[Observation]] = field(default_factory=dict)  # load -> observations


def matrix(ft: str, probes: int, loads: Sequence[str]) -> dict[str, CellResult]:
    results: dict[str, CellResult] = {}
    batches = [probes // 2, probes - probes // 2]
    for batch, count in enumerate(batches, 1):
        for load in loads:
            with other_load(load):
                for i in range(count):
                    for run in runs(ft):
                        document = probe_json(run.args, run.env)
                        for cell in run.cells:
                            results.setdefault(cell.name, CellResult()).observations.setdefault(load, []).append(
                                observe(document, cell.mode))
                    log(f"matrix batch {batch}, load {load}: {i + 1}/{count}")
    return results


def matrix_tables(results: dict[str, CellResult], loads: Sequence[str], cells: dict[str, Cell]) -> list[str]:
    lines = ["### Classification right / cannot tell, per cell and other load (cores; @19: at nice 19)", "",
             "| cell | expected | " + " | ".join(loads) + " |", "|---|---|" + "---|" * len(loads)]
    for name, result in results.items():
        row = []
        for load in loads:
            seen = result.observations.get(load, [])
            right = sum(o.parallelism == cells[name].expected for o in seen)
            unknown = sum(o.parallelism is None for o in seen)
            row.append(f"{right}/{len(seen)} right, {unknown} cannot tell")
        lines.append(f"| {name} | {cells[name].expected} | " + " | ".join(row) + " |")
    lines += ["", f"### Workers runnable at once: median (min–max); within ±{RUNNABLE_TOLERANCE} of the no-load "
                  "median", "", "| cell | " + " | ".join(loads) + " |", "|---|" + "---|" * len(loads)]
    for name, result in results.items():
        quiet = [o.runnable for o in result.observations.get("0", []) if o.runnable is not None]
        reference = statistics.median(quiet) if quiet else None
        row = []
        for load in loads:
            values = [o.runnable for o in result.observations.get(load, []) if o.runnable is not None]
            if not values or reference is None:
                row.append("–")
                continue
            within = sum(abs(v - reference) <= RUNNABLE_TOLERANCE for v in values)
            row.append(f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f}), "
                       f"{within}/{len(values)} within")
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    lines += ["", f"### No other load: idle-host estimate against the measured speedup (within ±{AGREEMENT})", "",
              "| cell | probes with both | within | largest difference |", "|---|---|---|---|"]
    for name, result in results.items():
        both = [(o.idle, o.speedup) for o in result.observations.get("0", [])
                if o.idle is not None and o.speedup is not None]
        differences = [abs(i - s) for i, s in both]
        lines.append(f"| {name} | {len(both)} | {sum(d <= AGREEMENT for d in differences)} | "
                     f"{max(differences):.3f} |" if differences else f"| {name} | 0 | – | – |")
    return lines


# --- compare ------------------------------------------------------------------------------


def compare_exit(ft: str, env_b: dict[str, str]) -> int:
    """``probe --compare`` of 3.13t against 3.13t (with ``env_b``): the gate's exit code."""
    config = {"probe": {"workloads": ["pure_python"], "modes": ["sequential", "threads"]},
              "interpreters": [{"name": "baseline", "path": ft}, {"name": "candidate", "path": ft, "env": env_b}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as handle:
        yaml.safe_dump(config, handle)
    try:
        return subprocess.run(EXPORTER + ["probe", "--config.file", handle.name, "--compare"], capture_output=True,
                              cwd=REPO, timeout=900).returncode
    finally:
        os.unlink(handle.name)


def compare_part(ft: str, tries: int, loads: Sequence[str]) -> list[str]:
    lines = ["### compare on a busy host: exit codes", "",
             "| other load | 3.13t vs PYTHON_GIL=1: exit 1 | A/A: exit 1 | A/A: exit 3 |", "|---|---|---|---|"]
    for load in loads:
        with other_load(load):
            gil = [compare_exit(ft, {"PYTHON_GIL": "1"}) for _ in range(tries)]
            same = [compare_exit(ft, {}) for _ in range(tries)]
        log(f"compare, load {load}: {gil} {same}")
        lines.append(f"| {load} | {gil.count(1)}/{tries} | {same.count(1)}/{tries} | {same.count(3)}/{tries} |")
    return lines


# --- a CPU quota ----------------------------------------------------------------------------


@contextmanager
def one_cpu_cgroup() -> Iterator[Path]:
    """A cgroup (v1 cpu, else v2) whose processes share one CPU's worth of time."""
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").exists():
        group = v1 / "pyparallel-busy-quota"
        group.mkdir(exist_ok=True)
        period = int((group / "cpu.cfs_period_us").read_text())
        (group / "cpu.cfs_quota_us").write_text(str(period))
    else:
        group = Path("/sys/fs/cgroup/pyparallel-busy-quota")
        group.mkdir(exist_ok=True)
        (group / "cpu.max").write_text("100000 100000")
    try:
        yield group
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
        group.rmdir()


def quota_part(tries: int) -> list[str]:
    lines = ["### Processes under a 1-CPU cgroup quota (2 vCPUs)", "", "| probe | verdict |", "|---|---|"]
    with one_cpu_cgroup() as group:
        for i in range(tries):
            command = (f"echo $$ > {group}/cgroup.procs && exec {' '.join(EXPORTER)} probe --json "
                       f"--workload pure_python --mode processes")
            out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, cwd=REPO, timeout=600).stdout
            document = json.loads(out)
            verdict = next(v for v in document["verdicts"]).split("processes: ", 1)[1]
            lines.append(f"| {i + 1} | processes: {verdict} |")
            log(f"quota {i + 1}/{tries}: {verdict[:80]}")
    return lines


# --- the cost of the accounting -------------------------------------------------------------


def cost_part(reads: int = 2000) -> list[str]:
    lines = ["### The kernel-accounting reads: CPU per read of every worker thread, and per step", "",
             "| workers | CPU µs per read of all | per window (2 reads) | per step of 10 pairs (40 reads) |",
             "|---|---|---|---|"]
    for workers in (2, 64):
        release = threading.Event()
        threads = [threading.Thread(target=release.wait, daemon=True) for _ in range(workers)]
        for thread in threads:
            thread.start()
        ids = [(os.getpid(), t.native_id) for t in threads if t.native_id is not None]
        started = time.process_time()
        for _ in range(reads):
            schedstat.read_all(ids)
        per_read = (time.process_time() - started) / reads
        release.set()
        lines.append(f"| {workers} | {per_read * 1e6:.0f} | {2 * per_read * 1e6:.0f} µs | "
                     f"{40 * per_read * 1e3:.1f} ms |")
    return lines


# --- contended code, probe after probe ------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    estimate: float
    low: float
    high: float
    word: str
    kind: str  # wall clock or idle host


def contended_figure(report: Any, usable: float) -> Optional[Figure]:
    """The probe's figure: its measured speedup, else its idle-host estimate; None: neither."""
    step = report.step("threads", 2)
    s = step.summary
    if s is None:
        return None
    word = mode_verdict(step, report, usable).split(": ", 1)[1].split(" ×")[0].split(" —")[0]
    if s.shown and s.speedup_ci:
        return Figure(s.speedup, *s.speedup_ci, word, "wall clock")
    a = s.accounting
    if a is None or a.idle_speedup is None:
        return None
    low, high = a.idle_speedup_ci or (a.idle_speedup, a.idle_speedup)
    return Figure(a.idle_speedup, low, high, word, "idle host")


def overlap_share(a: Figure, b: Figure) -> float:
    """The overlap of two intervals over the narrower one's width."""
    width = min(a.high - a.low, b.high - b.low)
    overlap = min(a.high, b.high) - max(a.low, b.low)
    return overlap / width if width > 0 else float(overlap >= 0)


def contended_part(ft: str, probes: int) -> list[str]:
    from exporter.host.cpus import host_cpus
    from contended_workloads import FTSCALINGBENCH

    usable = host_cpus().usable
    lines = ["### Contended code on 3.13t, probe after probe (each learning from the ones before)", "",
             "| workload | figures | interval covers the next | word changes where intervals overlap > half |",
             "|---|---|---|---|"]
    for name in FTSCALINGBENCH:
        spec = ProbeSpec(f"contended_workloads:{name}", ("sequential", "threads"), (2,), workload_path=(str(HERE),),
                         start_method="forkserver")
        figures: list[Figure] = []
        earlier: list[float] = []
        for _ in range(probes + 1):
            report = probe_run.run_workload(Interpreter("3.13t", ft), spec, earlier={("threads", 2): list(earlier)})
            figure = contended_figure(report, usable)
            if figure is None:
                log(f"{name}: no figure ({report.step('threads', 2).message or 'no accounting'})")
                continue
            figures.append(figure)
            if figure.kind == "wall clock":
                earlier.append(figure.estimate)
            log(f"{name}: ×{figure.estimate:.2f} ({figure.low:.2f}–{figure.high:.2f}) {figure.word} [{figure.kind}]")
        covers = sum(a.low <= b.estimate <= a.high for a, b in zip(figures, figures[1:]))
        changes = sum(a.word != b.word for a, b in zip(figures, figures[1:]) if overlap_share(a, b) > 0.5)
        shown = ", ".join(f"×{f.estimate:.2f} ({f.low:.2f}–{f.high:.2f}) {f.word}" for f in figures)
        lines.append(f"| {name} | {shown} | {covers}/{len(figures) - 1} | {changes} |")
    return lines


# --- the report -----------------------------------------------------------------------------


def machine_lines(ft: str) -> list[str]:
    version = subprocess.run([ft, "-c", "import platform; print(platform.python_version())"], capture_output=True,
                             text=True).stdout.strip()
    return [f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}; exporter on CPython "
            f"{platform.python_version()}, 3.13t {version} ({ft}); {time.strftime('%Y-%m-%d')}", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", choices=("matrix", "compare", "quota", "cost", "contended"))
    parser.add_argument("--probes", type=int, default=20, help="probes per cell (two batches)")
    parser.add_argument("--tries", type=int, default=10, help="compare runs per load and kind")
    parser.add_argument("--loads", default=",".join(LOADS), help="other loads: cores[@nice], comma-separated")
    parser.add_argument("--ft-python", default=DEFAULT_FT)
    parser.add_argument("--markdown", help="also write the report here")
    args = parser.parse_args()
    parts = args.part or ["cost", "quota", "contended", "matrix", "compare"]
    loads = args.loads.split(",")
    lines = machine_lines(args.ft_python)
    cells = {cell.name: cell for run in runs(args.ft_python) for cell in run.cells}
    for part in parts:
        started = time.monotonic()
        if part == "matrix":
            lines += matrix_tables(matrix(args.ft_python, args.probes, loads), loads, cells)
        elif part == "compare":
            lines += compare_part(args.ft_python, args.tries, [load for load in loads if load != "2@19"])
        elif part == "quota":
            lines += quota_part(5)
        elif part == "cost":
            lines += cost_part()
        else:
            lines += contended_part(args.ft_python, 10)
        lines += ["", f"({part}: {time.monotonic() - started:.0f} s)", ""]
        print("\n".join(lines), flush=True)
        if args.markdown:
            Path(args.markdown).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
