"""Noise benchmark: does the probe say truthfully what a noisy neighbour did to its figures?

The benchmark starts its own neighbour — processes burning CPU at a set duty cycle — in
four scenarios: none (quiet), one pinned to the first CPU at 50 % and at 100 %, and one per
usable CPU at 30 %. In each, for every interpreter, it runs ``--probes`` probes of
``pure_python`` and ``sha256`` (sequential, threads, processes; the exporter's default
precision settings) and checks the targets of issue 8:

- interference rises over the quiet-host figure by the neighbour's own measured CPU use
  (psutil, user + system of the burner processes over each probe), within 0.1 core;
- GIL-build pure-Python threads never "scale"; free-threaded threads and processes never
  get "no parallel speedup" on a quiet host;
- quiet host: pure-Python speedup CV over the probes <= 5 %; every scenario: the 95 %
  interval covers the median of all probes in at least 9 of 10;
- no shown CPU-bound speedup exceeds the usable cores by more than its interval;
- the default round (both workloads, default interpreter) fits 5 % of a 5-minute interval.

Run by hand; progress goes to stderr, the report to stdout and ``--markdown``::

    python benchmarks/noise.py --markdown benchmarks/results-noise.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import cpu_model  # noqa: E402
from exporter import report  # noqa: E402
from exporter.config.settings import Config, ProbeConfig  # noqa: E402
from exporter.host.cpus import host_cpus  # noqa: E402
from exporter.probe.run import run_workload  # noqa: E402
from exporter.model.results import Interpreter, ProbeSpec, WorkloadReport  # noqa: E402

WORKLOADS = ("pure_python", "sha256")
MODES = ("sequential", "threads", "processes")
PARALLEL = ("threads", "processes")
DEFAULT_FT_PYTHON = "/root/.cache/python3.13t/bin/python3.13t"
INTERFERENCE_TOLERANCE = 0.1  # cores
CV_TARGET = 0.05
COVERAGE_TARGET = 0.9
IDLE_PAIR_CORES = 0.25  # a step whose windows saw less other load than this ran on an idle core pair
ROUND_BUDGET_SECONDS = 0.05 * 300

# A burner: busy for duty × 20 ms, asleep for the rest, forever (killed by the benchmark).
BURNER = """
import sys, time
duty, period = float(sys.argv[1]), 0.02
while True:
    start = time.perf_counter()
    while time.perf_counter() < start + duty * period:
        pass
    rest = start + period - time.perf_counter()
    if rest > 0:
        time.sleep(rest)
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    duty: float
    cpus: tuple[int, ...]  # one burner per CPU listed, pinned to it

    def start(self) -> list[subprocess.Popen]:
        burners = []
        for cpu in self.cpus:
            burner = subprocess.Popen([sys.executable, "-c", BURNER, str(self.duty)])
            os.sched_setaffinity(burner.pid, {cpu})
            burners.append(burner)
        return burners


def scenarios() -> list[Scenario]:
    cpus = sorted(os.sched_getaffinity(0))
    return [Scenario("quiet", 0.0, ()), Scenario("pinned 50 %", 0.5, (cpus[0],)),
            Scenario("pinned 100 %", 1.0, (cpus[0],)), Scenario("spread 30 %", 0.3, tuple(cpus))]


def burner_cpu_seconds(burners: Sequence[subprocess.Popen]) -> float:
    total = 0.0
    for burner in burners:
        times = psutil.Process(burner.pid).cpu_times()
        total += times.user + times.system
    return total


@dataclass
class StepRecord:
    mode: str
    verdict: str
    speedup: Optional[float]
    ci: Optional[list[float]]
    unsteady: bool
    cores_used: float
    cpu_rate_ratio: Optional[float]
    interference_cores: Optional[float]
    pairs: int
    cpu_bound: bool


@dataclass
class ProbeRecord:
    scenario: str
    interpreter: str
    workload: str
    duration_seconds: float
    neighbour_cores: float
    interference_cores: Optional[float]  # median over every window of the probe
    steal_ratio: Optional[float]
    steps: list[StepRecord] = field(default_factory=list)


def leading_words(verdict: str) -> str:
    after = verdict.split(": ", 1)[1]
    for words in ("no parallel speedup", "scales", "partial speedup", "unsteady"):
        if after.startswith(words):
            return words
    return after.split(" ")[0]


def record(scenario: Scenario, result: WorkloadReport, neighbour_cores: float, usable: float) -> ProbeRecord:
    windows = [w for s in result.steps for w in s.windows]
    interference = [w.interference_cores for w in windows if w.interference_cores is not None]
    steal = [w.steal_ratio for w in windows if w.steal_ratio is not None]
    probe = ProbeRecord(scenario.name, result.interpreter.name, result.spec.workload, result.duration_seconds,
                        neighbour_cores, statistics.median(interference) if interference else None,
                        statistics.median(steal) if steal else None)
    for step in result.steps:
        if step.mode == "sequential" or step.summary is None:
            if step.mode != "sequential":
                probe.steps.append(StepRecord(step.mode, f"{step.mode}: failed", None, None, False, 0.0,
                                              None, None, 0, False))
            continue
        s = step.summary
        probe.steps.append(StepRecord(
            step.mode, leading_words(report.mode_verdict(step, result, usable)),
            None if s.unsteady else s.speedup, list(s.speedup_ci) if s.speedup_ci and not s.unsteady else None,
            s.unsteady, s.cores_used, s.cpu_rate_ratio, s.interference_cores, len(s.pair_speedups), s.cpu_bound))
    return probe


def run_scenario(scenario: Scenario, interpreters: Sequence[Interpreter], probes: int, unit: float,
                 usable: float, workers: int) -> list[ProbeRecord]:
    defaults = ProbeConfig()
    burners = scenario.start()
    records = []
    try:
        time.sleep(1.0)  # let the burners settle into their duty cycle
        for index in range(probes):
            for interpreter in interpreters:
                for workload in WORKLOADS:
                    spec = ProbeSpec(workload, MODES, (workers,), unit, defaults.repeats, defaults.timeout_seconds,
                                     defaults.start_method, precision=defaults.precision,
                                     max_repeats=defaults.max_repeats,
                                     step_budget_seconds=defaults.step_budget_seconds)
                    cpu_before, started = burner_cpu_seconds(burners), time.monotonic()
                    result = run_workload(interpreter, spec)
                    neighbour = (burner_cpu_seconds(burners) - cpu_before) / (time.monotonic() - started)
                    records.append(record(scenario, result, neighbour, usable))
                    print(f"  {scenario.name} {index + 1}/{probes} {interpreter.name} {workload}: "
                          f"{result.duration_seconds:.1f}s neighbour {neighbour:.2f} other "
                          f"{records[-1].interference_cores if records[-1].interference_cores is not None else float('nan'):.2f} "
                          + " ".join(f"{s.mode}={s.speedup if s.speedup is None else round(s.speedup, 2)}"
                                     f"[{s.verdict}]" for s in records[-1].steps),
                          file=sys.stderr, flush=True)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    return records


# --- the checks ---------------------------------------------------------------------------


def median_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def fmt(value: Optional[float], spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(row) + " |" for row in rows])


def interference_rows(records: list[ProbeRecord], interpreters: Sequence[str]) -> tuple[list[list[str]], bool]:
    rows, met = [], True
    for name in interpreters:
        quiet = median_or_none([r.interference_cores for r in records if r.interpreter == name and r.scenario == "quiet"])
        for scenario in dict.fromkeys(r.scenario for r in records):
            mine = [r for r in records if r.interpreter == name and r.scenario == scenario]
            if not mine:
                continue
            neighbour = statistics.median(r.neighbour_cores for r in mine)
            other = median_or_none([r.interference_cores for r in mine])
            # Per probe: what the figure holds beyond the neighbour (the host's own other load).
            residual = median_or_none([r.interference_cores - r.neighbour_cores for r in mine
                                       if r.interference_cores is not None])
            rise = None if other is None or quiet is None else other - quiet
            ok = scenario == "quiet" or (rise is not None and abs(rise - neighbour) <= INTERFERENCE_TOLERANCE)
            met = met and ok
            rows.append([scenario, name, fmt(neighbour), fmt(other), fmt(rise), fmt(residual),
                         "" if scenario == "quiet" else ("met" if ok else "NOT met")])
    return rows, met


def verdict_rows(records: list[ProbeRecord]) -> tuple[list[list[str]], list[str]]:
    rows, problems = [], []
    keys = dict.fromkeys((r.scenario, r.interpreter, r.workload, s.mode) for r in records for s in r.steps)
    free_threaded = {r.interpreter for r in records if r.interpreter.endswith("t")}
    for scenario, name, workload, mode in keys:
        verdicts = [s.verdict for r in records for s in r.steps
                    if (r.scenario, r.interpreter, r.workload, s.mode) == (scenario, name, workload, mode)]
        counts = {w: verdicts.count(w) for w in ("scales", "partial speedup", "no parallel speedup", "unsteady")}
        rule = ""
        if mode == "threads" and workload == "pure_python" and name not in free_threaded:
            rule = f"never scales: {len(verdicts) - counts['scales']}/{len(verdicts)}"
            if counts["scales"]:
                problems.append(f"{scenario} {name} {workload} threads scaled {counts['scales']}×")
        elif scenario == "quiet" and name in free_threaded:
            # "On an idle core pair": only probes whose step saw little other load count.
            idle = [s.verdict for r in records for s in r.steps
                    if (r.scenario, r.interpreter, r.workload, s.mode) == (scenario, name, workload, mode)
                    and s.interference_cores is not None and s.interference_cores < IDLE_PAIR_CORES]
            wrong = idle.count("no parallel speedup")
            rule = f"never no speedup on an idle pair: {len(idle) - wrong}/{len(idle)} idle probes"
            if wrong:
                problems.append(f"{scenario} {name} {workload} {mode}: no speedup {wrong}× on an idle pair")
        rows.append([scenario, name, workload, mode, *(str(counts[w]) for w in counts), rule])
    return rows, problems


def precision_rows(records: list[ProbeRecord], usable: float) -> tuple[list[list[str]], dict[str, bool]]:
    rows = []
    cv_met, coverage_met, bound_met = True, True, True
    keys = dict.fromkeys((r.scenario, r.interpreter, r.workload, s.mode) for r in records for s in r.steps)
    for scenario, name, workload, mode in keys:
        steps = [s for r in records for s in r.steps
                 if (r.scenario, r.interpreter, r.workload, s.mode) == (scenario, name, workload, mode)]
        shown = [s.speedup for s in steps if s.speedup is not None]
        if len(shown) < 2:
            rows.append([scenario, name, workload, mode, "–", "–", "–", "–", "–", str(sum(s.unsteady for s in steps)), ""])
            continue
        median = statistics.median(shown)
        cv = statistics.stdev(shown) / statistics.fmean(shown)
        intervals = [(s.ci[0], s.ci[1], s.speedup, s.cpu_bound) for s in steps if s.ci is not None and s.speedup]
        covered = sum(1 for low, high, _, _ in intervals if low <= median <= high)
        coverage_ok = covered >= COVERAGE_TARGET * len(steps)
        half_widths = [(high - low) / 2 / estimate for low, high, estimate, _ in intervals]
        over = sum(1 for low, _, _, cpu_bound in intervals if cpu_bound and low > usable)
        bound_met = bound_met and over == 0
        coverage_met = coverage_met and coverage_ok
        notes = []
        if scenario == "quiet" and workload == "pure_python":
            ok = cv <= CV_TARGET
            cv_met = cv_met and ok
            notes.append(f"CV {'met' if ok else 'NOT met'}")
        notes.append(f"coverage {'met' if coverage_ok else 'NOT met'}")
        rows.append([scenario, name, workload, mode, f"{median:.2f}", f"{cv:.1%}", f"{covered}/{len(steps)}",
                     f"{statistics.median(half_widths):.1%}" if half_widths else "–",
                     f"{statistics.median(s.pairs for s in steps):g}", str(sum(s.unsteady for s in steps)),
                     ", ".join(notes)])
    return rows, {"cv": cv_met, "coverage": coverage_met, "bound": bound_met}


def default_rounds(count: int, interpreter: Interpreter, workers: int) -> list[float]:
    """Wall seconds of ``count`` default daemon rounds: every default workload, default settings."""
    cfg = Config(interpreters=(interpreter,))
    rounds = []
    for _ in range(count):
        started = time.monotonic()
        for spec in cfg.probe_specs(workers):
            run_workload(interpreter, spec)
        rounds.append(time.monotonic() - started)
        print(f"  default round: {rounds[-1]:.1f}s", file=sys.stderr, flush=True)
    return rounds


def round_rows(rounds: Sequence[float]) -> tuple[list[list[str]], bool]:
    if not rounds:
        return [], False
    met = max(rounds) <= ROUND_BUDGET_SECONDS
    return [[f"{len(rounds)}", f"{statistics.median(rounds):.1f} s", f"{max(rounds):.1f} s",
             f"{ROUND_BUDGET_SECONDS:g} s", "met" if met else "NOT met"]], met


def interpreter_version(path: str) -> str:
    code = ("import sys, sysconfig; print(sys.version.split()[0], "
            "'free-threaded' if sysconfig.get_config_var('Py_GIL_DISABLED') else 'GIL build')")
    return subprocess.run([path, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def markdown(records: list[ProbeRecord], rounds: Sequence[float], interpreters: Sequence[Interpreter],
             args: argparse.Namespace, load_before: Sequence[float], load_after: Sequence[float],
             elapsed: float) -> str:
    host = host_cpus()
    defaults = ProbeConfig()
    names = [i.name for i in interpreters]
    lines = ["# Noise benchmark: interference, verdicts and precision under a noisy neighbour", "",
             f"`python benchmarks/noise.py --probes {args.probes} --unit {args.unit:g} --rounds {args.rounds}"
             f" --markdown benchmarks/results-noise.md` — {elapsed / 60:.1f} min", "",
             *table(["machine", ""], [
                 ["CPU", cpu_model()],
                 ["cores", f"{host.logical} logical (nproc {os.cpu_count()}), {host.physical} physical, {host.usable:g} usable"],
                 ["kernel", f"{platform.system()} {platform.release()}"],
                 *[[f"interpreter {i.name}", f"CPython {interpreter_version(i.path)} ({i.path})"] for i in interpreters],
                 ["load average before", ", ".join(f"{v:.2f}" for v in load_before)],
                 ["load average after", ", ".join(f"{v:.2f}" for v in load_after)],
             ]), "",
             "Other work may have run on this host during the benchmark (other sessions share the VM): the "
             "'quiet' scenario is quiet only of *our* neighbour, and its interference figure shows how much "
             f"else ran. Settings: the exporter's defaults ({defaults.repeats}–{defaults.max_repeats} pairs per step, "
             f"precision ±{defaults.precision:.0%}, step budget {defaults.step_budget_seconds:g} s), unit "
             f"{args.unit:g} s, {args.probes} probes per scenario, interpreter and workload.", ""]
    rows, interference_met = interference_rows(records, names)
    lines += ["## 1. Interference vs the neighbour's own CPU", "",
              "neighbour = the burner processes' user+system CPU over each probe (psutil), in cores; interference = "
              "the probe's figure (median over every window of a probe), median over the probes; rise = over the quiet "
              "scenario; beyond = interference − neighbour per probe (the rest of the host's other load). Target: "
              f"|rise − neighbour| ≤ {INTERFERENCE_TOLERANCE} core.", "",
              *table(["scenario", "interpreter", "neighbour", "interference", "rise", "beyond", "target"], rows), ""]
    rows, problems = verdict_rows(records)
    lines += ["## 2. Verdicts", "",
              "Counts of each verdict's leading words. sha256 releases the GIL inside hashlib, so GIL-build "
              "sha256 threads may rightly scale; the GIL rule applies to pure_python.", "",
              *table(["scenario", "interpreter", "workload", "mode", "scales", "partial", "no speedup", "unsteady",
                      "rule"], rows), ""]
    rows, precision = precision_rows(records, host.usable)
    lines += ["## 3. Precision and coverage", "",
              "median = of the probes' shown speedups; CV = their standard deviation over mean; coverage = probes "
              "whose 95 % interval holds that median; half-width = median relative half-width of the intervals; "
              "pairs = median pairs per step; unsteady = probes whose figure was withheld.", "",
              *table(["scenario", "interpreter", "workload", "mode", "median", "CV", "coverage", "half-width",
                      "pairs", "unsteady", "target"], rows), ""]
    rows, round_met = round_rows(rounds)
    lines += ["## 4. Default round vs the duty cycle", "",
              f"Whole default daemon rounds of {names[0]} with no neighbour: the default config (pure_python and "
              f"sha256; sequential, threads, processes; {host.default_workers} workers; unit "
              f"{defaults.unit_seconds:g} s and every other default), timed from the first probe's start to the "
              "last one's end.", "",
              *table(["rounds", "median round", "longest round", "5 % of 5 min", "target"], rows), ""]
    summary = [("interference rises by the neighbour's CPU within 0.1 core", interference_met),
               ("GIL / scales verdicts right in every probe", not problems),
               ("quiet host pure_python speedup CV ≤ 5 %", precision["cv"]),
               ("95 % interval covers the median in ≥ 9 of 10 probes, every scenario", precision["coverage"]),
               ("no shown CPU-bound speedup above the usable cores beyond its interval", precision["bound"]),
               ("default round fits 5 % of a 5-minute interval", round_met)]
    lines += ["## Targets", "", *table(["target", "result"], [[t, "met" if ok else "NOT met"] for t, ok in summary]), ""]
    if problems:
        lines += ["Verdict problems: " + "; ".join(problems), ""]
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=10, help="probes per scenario, interpreter and workload")
    parser.add_argument("--unit", type=float, default=ProbeConfig().unit_seconds, help="seconds of work per unit")
    parser.add_argument("--python", action="append", metavar="NAME=PATH",
                        help="interpreters (default: this one and the free-threaded 3.13t if present)")
    parser.add_argument("--scenarios", help="comma-separated subset of: quiet, pinned 50 %%, ... (by prefix)")
    parser.add_argument("--rounds", type=int, default=3, help="default daemon rounds timed on the quiet host")
    parser.add_argument("--markdown", metavar="OUT.md")
    parser.add_argument("--json", metavar="OUT.json", help="also keep every probe's record")
    return parser.parse_args(argv)


def interpreters_from(args: argparse.Namespace) -> list[Interpreter]:
    if args.python:
        return [Interpreter(*value.split("=", 1)) for value in args.python]
    found = [Interpreter(Config().interpreter_list()[0].name, sys.executable)]
    ft = os.environ.get("PYPARALLEL_FT_PYTHON", DEFAULT_FT_PYTHON)
    if Path(ft).exists():
        found.append(Interpreter("cpython-3.13t", ft))
    return found


def main() -> int:
    args = parse_args()
    interpreters = interpreters_from(args)
    host = host_cpus()
    chosen = scenarios()
    if args.scenarios:
        wanted = [w.strip() for w in args.scenarios.split(",")]
        chosen = [s for s in chosen if any(s.name.startswith(w) for w in wanted)]
    load_before, started = os.getloadavg(), time.monotonic()
    print("default rounds:", file=sys.stderr, flush=True)
    rounds = default_rounds(args.rounds, interpreters[0], host.default_workers)
    records: list[ProbeRecord] = []
    for scenario in chosen:
        print(f"{scenario.name}:", file=sys.stderr, flush=True)
        records += run_scenario(scenario, interpreters, args.probes, args.unit, host.usable, host.default_workers)
        if args.json:
            Path(args.json).write_text(json.dumps([asdict(r) for r in records], indent=1))
    text = markdown(records, rounds, interpreters, args, load_before, os.getloadavg(), time.monotonic() - started)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
