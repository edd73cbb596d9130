#!/usr/bin/env python3
"""Check that the probe's figures deserve trust: repeatability, harness overhead, per-core agreement.

Run by hand on an idle machine, never by the test suite; benchmarks/README.md explains every
section. Quick check: ``python benchmarks/fidelity.py --runs 3 --unit 0.3``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import procstat_sampler
from machine import cpu_model
from exporter.config import settings as config_settings
from exporter.host import cpus
from exporter.runner import workloads
from exporter.model.results import Interpreter
from fidelity_measure import (MODES, PER_CORE_REPEATS, PER_CORE_WORKLOAD, STARTED, Build, CoreAgreement, Key, Run,
                              Settings, all_runs, calibrate, describe_build, median_sequential, mode_spread,
                              overhead_of, per_core, progress)

DEFAULT_WORKLOADS = "pure_python,sha256,objects"
SPEEDUP_WORKLOAD = "pure_python"  # the GIL-bound workload the speedup targets are about

# Targets, stated for a 2-core machine. The process target scales with the worker count
# (0.95 * 2 = 1.9) so the script stays meaningful on a bigger host.
PROCESS_EFFICIENCY_TARGET = 0.95
GIL_THREADS_TARGET = 1.1
CV_TARGET = 0.03
OVERHEAD_TARGET = 0.02  # on |harness/raw - 1|: a harness faster than the raw loop is as suspect
PER_CORE_TARGET_PP = 5.0


# --- checks and tables ------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    figure: str
    shown: str  # the measured value, or why there is none
    target: str
    passed: bool


@dataclass(frozen=True)
class Table:
    title: str
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    note: str = ""


def percent(value: Optional[float], signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:+.2f} %" if signed else f"{100 * value:.2f} %"


def repeatability_table(names: Sequence[str], workload_names: Sequence[str], runs: dict[Key, list[Run]],
                        settings: Settings) -> Table:
    rows = []
    for name in names:
        for workload in workload_names:
            for mode in MODES:
                figure = "ops/s" if mode == "sequential" else f"speedup ×{settings.workers}"
                s = mode_spread(runs[(name, workload)], mode, settings.workers)
                count = f"{s.count if s else 0}/{len(runs[(name, workload)])}"
                cells = ([f"{s.mean:,.4g}", percent(s.cv), f"{s.low:,.4g}", f"{s.high:,.4g}"]
                         if s else ["failed"] + ["n/a"] * 3)
                rows.append([name, workload, mode, figure, count, *cells])
    return Table("Repeatability", ["interpreter", "workload", "mode", "figure", "runs", "mean", "CV",
                                   "min", "max"], rows,
                 "One probe per run (the exporter's own settings); mean, stdev/mean and range of the "
                 "per-run median. Sequential speedup is 1 by definition, so its row shows ops/s.")


def overhead_table(names: Sequence[str], workload_names: Sequence[str], runs: dict[Key, list[Run]]) -> Table:
    rows = []
    for name in names:
        for workload in workload_names:
            o = overhead_of(runs[(name, workload)])
            rows.append([name, workload] + ([f"{o.harness_seconds:.4f}", f"{o.raw_seconds:.4f}",
                                             percent(o.overhead, True),
                                             f"{percent(o.low, True)} … {percent(o.high, True)}",
                                             str(o.pairs)] if o else ["n/a"] * 5))
    return Table("Harness overhead", ["interpreter", "workload", "harness unit s", "raw unit s",
                                      "overhead", "pair range", "pairs"], rows,
                 "Harness: median sequential window of the probe. Raw: median of the same number of "
                 "hand-timed units (same ops) in a fresh child, run alternately before/after each "
                 "probe. Overhead = median over pairs of harness/raw - 1.")


def per_core_table(agreements: dict[str, dict[str, Optional[CoreAgreement]]]) -> Table:
    rows = []
    for name, by_mode in agreements.items():
        for mode, a in by_mode.items():
            if a is None:
                rows.append([name, mode, "all", "n/a", "n/a", "n/a", "n/a", "0"])
                continue
            for cpu, (h, i, d) in enumerate(zip(a.harness, a.independent, a.max_difference_pp)):
                rows.append([name, mode, f"cpu{cpu}", f"{100 * h:.1f} %", f"{100 * i:.1f} %",
                             f"{d:.2f} pp", f"{a.tick_pp:.1f} pp", str(a.windows)])
    return Table("Per-core agreement", ["interpreter", "mode", "CPU", "probe busy", "/proc/stat busy",
                                        "max |diff|", "1 tick", "windows"], rows,
                 f"{PER_CORE_WORKLOAD}, one probe of {PER_CORE_REPEATS} windows per step; /proc/stat "
                 f"sampled every {procstat_sampler.SAMPLE_SECONDS * 1000:g} ms and bracketed by the "
                 "workers' own perf_counter stamps. Busy shares are medians over windows; the "
                 "difference is the worst single window; '1 tick' is one USER_HZ tick as a share "
                 "of the median window, the counters' own resolution.")


def free_threading_table(interpreters: Sequence[Interpreter], builds: dict[str, Build],
                         workload_names: Sequence[str], runs: dict[Key, list[Run]],
                         ops: dict[str, int]) -> Optional[Table]:
    """Single-thread cost of each interpreter against the first default (GIL) build, equal ops."""
    reference = next((i for i in interpreters if not builds[i.name].free_threaded), None)
    if reference is None or len(interpreters) < 2:
        return None
    rows = []
    for interpreter in interpreters:
        if interpreter is reference:
            continue
        for workload in workload_names:
            mine = median_sequential(runs[(interpreter.name, workload)])
            base = median_sequential(runs[(reference.name, workload)])
            ratio = f"{mine / base:.3f}" if mine and base else "n/a"
            per_op = f"{1000 * mine / ops[workload]:.4f}" if mine else "n/a"
            rows.append([interpreter.name, reference.name, workload, str(ops[workload]), per_op, ratio])
    return Table("Single-thread overhead", ["interpreter", "against", "workload", "ops per unit",
                                            "ms per op", "sequential time ratio"], rows,
                 "Median sequential unit time over all runs, the same ops count on every "
                 "interpreter; a ratio of 1.25 means 25 % slower single-threaded.")


def speedup_checks(name: str, build: Build, runs: Sequence[Run], workers: int) -> list[Check]:
    checks = []
    target = PROCESS_EFFICIENCY_TARGET * workers
    s = mode_spread(runs, "processes", workers)
    checks.append(Check(f"{name} {SPEEDUP_WORKLOAD} processes speedup", f"{s.mean:.2f}" if s else "not measured",
                        f">= {target:.2f}", bool(s and s.mean >= target)))
    if build.gil_enabled:
        s = mode_spread(runs, "threads", workers)
        checks.append(Check(f"{name} {SPEEDUP_WORKLOAD} GIL threads speedup",
                            f"{s.mean:.2f}" if s else "not measured", f"<= {GIL_THREADS_TARGET:.2f}",
                            bool(s and s.mean <= GIL_THREADS_TARGET)))
    return checks


def cv_checks(name: str, workload: str, runs: Sequence[Run], workers: int) -> list[Check]:
    checks = []
    for mode in MODES:
        s = mode_spread(runs, mode, workers)
        cv = s.cv if s else None
        checks.append(Check(f"{name} {workload} {mode} CV", percent(cv) if cv is not None else "not measured",
                            f"<= {percent(CV_TARGET)}", cv is not None and cv <= CV_TARGET))
    return checks


def overhead_check(name: str, workload: str, runs: Sequence[Run]) -> Check:
    o = overhead_of(runs)
    return Check(f"{name} {workload} harness overhead", percent(o.overhead, True) if o else "not measured",
                 f"|x| <= {percent(OVERHEAD_TARGET)}", bool(o and abs(o.overhead) <= OVERHEAD_TARGET))


def per_core_checks(name: str, by_mode: dict[str, Optional[CoreAgreement]]) -> list[Check]:
    return [Check(f"{name} per-core agreement, {mode}", f"{a.worst_pp:.2f} pp" if a else "not measured",
                  f"<= {PER_CORE_TARGET_PP:g} pp", bool(a and a.worst_pp <= PER_CORE_TARGET_PP))
            for mode, a in by_mode.items()]


def targets_table(checks: Sequence[Check]) -> Table:
    rows = [[c.figure, c.shown, c.target, "PASS" if c.passed else "MISS"] for c in checks]
    misses = sum(not c.passed for c in checks)
    return Table("Targets", ["figure", "measured", "target", "verdict"], rows,
                 f"{len(checks) - misses} PASS, {misses} MISS. Misses are reported as measured; this "
                 "is a noisy shared VM (see steal time above), so rerun on an idle host before "
                 "reading much into a single MISS.")


def render_text(table: Table) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(table.headers, *table.rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()

    body = [line(table.headers), line(["-" * w for w in widths]), *(line(r) for r in table.rows)]
    return "\n".join([f"== {table.title} ==", *body, *([table.note] if table.note else []), ""])


def render_markdown(table: Table) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    body = [line(table.headers), line(["---"] * len(table.headers)), *(line(r) for r in table.rows)]
    return "\n".join([f"### {table.title}", "", *([table.note, ""] if table.note else []), *body, ""])


# --- the machine ------------------------------------------------------------------------



def steal_share(before: str, after: str) -> float:
    """Share of all CPU time the hypervisor gave to other guests between two /proc/stat reads."""
    first, last = procstat_sampler.cpu_ticks(before), procstat_sampler.cpu_ticks(after)
    deltas = [[end - start for start, end in zip(b, a)] for b, a in zip(first, last)]
    total = sum(sum(d[:procstat_sampler.TOTAL_COLUMNS]) for d in deltas)
    return sum(d[procstat_sampler.STEAL] for d in deltas) / total if total else 0.0


def machine_lines(interpreters: Sequence[Interpreter], builds: dict[str, Build], settings: Settings,
                  workload_names: Sequence[str]) -> list[str]:
    host = cpus.host_cpus()
    lines = [f"CPU: {cpu_model()}",
             f"cores: {host.logical} logical, {host.physical} physical, {host.usable:g} usable "
             f"-> {settings.workers} workers",
             f"kernel: {platform.system()} {platform.release()}",
             "load average at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())]
    for i in interpreters:
        b = builds[i.name]
        kind = "free-threaded build" if b.free_threaded else "default build"
        env = "".join(f" {k}={v}" for k, v in i.env.items())
        lines.append(f"interpreter {i.name}: CPython {b.version}, {kind}, GIL "
                     f"{'enabled' if b.gil_enabled else 'disabled'} ({i.path}{env})")
    lines.append(f"settings: {settings.runs} runs, unit {settings.unit:g} s, {settings.repeats} repeats, "
                 f"start method {settings.start_method}, workloads {', '.join(workload_names)}")
    return lines


# --- entry point ------------------------------------------------------------------------


def parse_interpreter(value: str) -> Interpreter:
    """``[NAME=]PATH[:VAR=VALUE...]``, e.g. ``ft-gil=/opt/bin/python3.13t:PYTHON_GIL=1``."""
    target, *assignments = value.split(":")
    name, _, path = target.rpartition("=")
    env: dict[str, str] = {}
    for assignment in assignments:
        variable, equals, setting = assignment.partition("=")
        if not equals or not variable:
            raise argparse.ArgumentTypeError(f"expected VAR=VALUE after ':', got {assignment!r}")
        env[variable] = setting
    label = name or Path(path).name + "".join(f" {k}={v}" for k, v in env.items())
    return Interpreter(label, path, env)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="probe runs per workload (>= 2; default 10)")
    parser.add_argument("--python", action="append", type=parse_interpreter, metavar="[NAME=]PATH[:VAR=VAL...]",
                        help="interpreter to measure, repeatable (default: this one)")
    parser.add_argument("--workloads", default=DEFAULT_WORKLOADS, help=f"comma list (default {DEFAULT_WORKLOADS})")
    parser.add_argument("--unit", type=float, default=config_settings.ProbeConfig.unit_seconds,
                        help="seconds of work per unit, used to calibrate the ops count (default 0.5)")
    parser.add_argument("--markdown", type=Path, metavar="OUT.md", help="also write the report as Markdown")
    return parser.parse_args(argv)


def problems(args: argparse.Namespace, interpreters: Sequence[Interpreter], names: Sequence[str]) -> list[str]:
    found = []
    if args.runs < 2:
        found.append("--runs must be at least 2: a coefficient of variation needs two runs")
    if args.unit <= 0:
        found.append("--unit must be positive")
    found += [f"unknown workload {w!r}; known: {', '.join(sorted(workloads.ALL_WORKLOADS))}"
              for w in names if w not in workloads.ALL_WORKLOADS]
    if len({i.name for i in interpreters}) < len(interpreters):
        found.append("two --python entries share a name; give them NAME=PATH labels")
    return found


def build_report(interpreters: Sequence[Interpreter], builds: dict[str, Build], names: Sequence[str],
                 runs: dict[Key, list[Run]], cores: dict[str, dict[str, Optional[CoreAgreement]]],
                 ops: dict[str, int], settings: Settings) -> list[Table]:
    labels = [i.name for i in interpreters]
    checks: list[Check] = []
    for i in interpreters:
        if SPEEDUP_WORKLOAD in names:
            checks += speedup_checks(i.name, builds[i.name], runs[(i.name, SPEEDUP_WORKLOAD)], settings.workers)
        for workload in names:
            checks += cv_checks(i.name, workload, runs[(i.name, workload)], settings.workers)
            checks.append(overhead_check(i.name, workload, runs[(i.name, workload)]))
        checks += per_core_checks(i.name, cores[i.name])
    tables = [repeatability_table(labels, names, runs, settings), overhead_table(labels, names, runs),
              per_core_table(cores)]
    free_threading = free_threading_table(interpreters, builds, names, runs, ops)
    return tables + ([free_threading] if free_threading else []) + [targets_table(checks)]


def footer_lines(reference: Interpreter, ops: dict[str, int], stat_before: str) -> list[str]:
    """What the run itself looked like: the ops counts, how noisy the host was, how long it took."""
    steal = steal_share(stat_before, procstat_sampler.PROC_STAT.read_text())
    return [f"ops per unit (calibrated on {reference.name}): " + ", ".join(f"{w} {n}" for w, n in ops.items()),
            f"steal time during the run: {percent(steal)} of CPU time; load average at end: "
            + ", ".join(f"{v:.2f}" for v in os.getloadavg()),
            f"duration: {time.monotonic() - STARTED:.0f} s"]


def run(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    interpreters: list[Interpreter] = args.python or [Interpreter(config_settings.default_interpreter_name(), sys.executable)]
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    found = problems(args, interpreters, names)
    for problem in found:
        print(f"error: {problem}", file=sys.stderr)
    if found:
        return 2
    defaults = config_settings.ProbeConfig()
    settings = Settings(args.runs, args.unit, cpus.host_cpus().default_workers, defaults.repeats,
                        defaults.timeout_seconds, defaults.start_method)
    try:
        builds = {i.name: describe_build(i) for i in interpreters}
        header = machine_lines(interpreters, builds, settings, names)
        print("\n".join(header), end="\n\n", flush=True)
        # Calibrate once, on the first default (GIL) build, and give every run and interpreter
        # that ops count: then unit times compare across runs and across interpreters.
        reference = next((i for i in interpreters if not builds[i.name].free_threaded), interpreters[0])
        stat_before = procstat_sampler.PROC_STAT.read_text()
        ops = {w: calibrate(reference, w, settings) for w in dict.fromkeys([*names, PER_CORE_WORKLOAD])}
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    progress("ops per unit: " + ", ".join(f"{w}={n}" for w, n in ops.items()))
    runs = all_runs(interpreters, {w: ops[w] for w in names}, settings)
    cores = {i.name: per_core(i, ops[PER_CORE_WORKLOAD], settings) for i in interpreters}
    footer = footer_lines(reference, ops, stat_before)
    tables = build_report(interpreters, builds, names, runs, cores, ops, settings)
    print("\n".join(footer), end="\n\n")
    print("\n".join(render_text(t) for t in tables))
    if args.markdown:
        write_markdown(args.markdown, header + footer, tables)
    return 0


def write_markdown(path: Path, facts: Sequence[str], tables: Sequence[Table]) -> None:
    command = "python benchmarks/fidelity.py " + " ".join(sys.argv[1:])
    text = "\n".join(["## Fidelity", "", f"`{command.strip()}`", "", *(f"- {f}" for f in facts), "",
                      *(render_markdown(t) for t in tables)])
    path.write_text(text)
    progress(f"wrote {path}")


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
