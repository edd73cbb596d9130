"""The one-shot report: a rich table, per-core bars and a verdict per workload, or JSON.

This is what a person at a terminal reads to see the whole product's point: threads on one
core under the GIL, processes (or free-threaded threads) on every core.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Optional, Sequence

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from exporter.hostinfo import HostCpus
from exporter.measurement import Summary
from exporter.results import SCHED_IDLE, Nice, StepResult, WorkloadReport

BAR_WIDTH = 20
MAX_CPUS_WITH_BARS = 16  # more CPUs than this get a one-line summary instead of bars
SCALES_FRACTION = 0.8  # a speedup within 80 % of the possible one "scales"
NO_SPEEDUP = 1.2  # below this a parallel mode gave no useful speedup (or used no more cores)
SERIALISED_SHORTFALL = 0.5  # cores below the possible ones that mean the workers took turns
CONTENTION_RATE = 0.9  # work per CPU-second below this share of one worker's: the workers slow each other
FREE_CORES = 0.5  # idle capacity left by probe and neighbours that the runtime could have used
NOTABLE_INTERFERENCE = 0.1  # cores of other load worth naming in a verdict
NOTABLE_STEAL = 0.05
NOTABLE_STARTUP = 0.25  # start-up over the timed window's wall time


def interpreter_label(report: WorkloadReport) -> str:
    identity = report.identity
    if identity is None:
        return f"{report.interpreter.name} ({report.interpreter.path})"
    build = "free-threaded" if identity.free_threaded_build else "GIL build"
    gil = "GIL enabled" if identity.gil_enabled else "GIL disabled"
    return f"{report.interpreter.name}: {identity.implementation} {identity.version}, {build}, {gil}"


COLUMNS = ("mode", "N", "time", "unit/s", "speedup", "eff", "cores", "rate", "other", "pairs")


def speedup_text(summary: Summary) -> str:
    """``×1.91 (1.86–1.95)``: the estimate and its 95 % interval, when there is one."""
    text = f"×{summary.speedup:.2f}"
    if summary.speedup_ci is not None:
        text += f" ({summary.speedup_ci[0]:.2f}–{summary.speedup_ci[1]:.2f})"
    return text


def optional(value: Optional[float], fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def step_row(step: StepResult) -> list[str]:
    mode = step.mode
    blank = len(COLUMNS) - 2
    if not step.available:
        return [f"[dim]{mode}[/dim]", str(step.workers)] + ["[dim]n/a[/dim]"] * blank
    if not step.success or step.summary is None:
        return [f"[red]{mode}[/red]", str(step.workers)] + ["[red]fail[/red]"] * blank
    s = step.summary
    shown = (speedup_text(s) if s.shown else "[yellow]unsteady[/yellow]" if s.unsteady
             else "[yellow]cannot tell[/yellow]")
    efficiency = f"{s.efficiency * 100:.0f}%" if s.shown else "–"
    pairs = str(s.pairs) + ("[yellow]*[/yellow]" if s.remeasured_reason else "")
    return [mode, str(step.workers), f"{s.wall_seconds:.2f}s", f"{s.throughput_units_per_second:.2f}",
            shown, efficiency, f"{s.cores_used:.2f}", optional(s.cpu_rate_ratio, ".2f"),
            optional(s.interference_cores, ".2f"), pairs]


def results_table(report: WorkloadReport) -> Table:
    identity = report.identity
    title = f"{report.spec.workload} — {interpreter_label(report)}"
    # One space between columns (not two), so the interval fits an 80-column terminal.
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  padding=(0, 1, 0, 0), collapse_padding=True, show_edge=False)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "mode" else "right", no_wrap=True)
    for step in report.steps:
        table.add_row(*step_row(step))
    if identity is not None and report.ops_per_unit:
        table.caption = (f"N workers, one unit each ({report.ops_per_unit} operations ≈ "
                         f"{report.spec.unit_seconds:g} s); speedup = T1·N/TN (95 % interval), T1 = one worker "
                         f"of the same pool alone; pairs = independent (T1, TN) pairs, {report.spec.repeats}+ "
                         f"until ±{report.spec.precision:.0%}, {report.spec.max_repeats} or "
                         f"{report.spec.step_budget_seconds:g} s (* measured again); cores = CPU s / wall s; "
                         f"rate = work per CPU s vs one worker alone; other = cores used by other processes; "
                         f"processes start with {report.spec.start_method}")
    return table


def step_notes(report: WorkloadReport) -> list[Text]:
    """Why each failed, unavailable or unsteady step did not give figures; hypervisor steal."""
    notes = [Text(f"  {s.mode} ×{s.workers}: unsteady: {s.summary.unsteady_reason}", style="yellow")
             for s in report.steps if s.summary is not None and s.summary.unsteady]
    notes += [Text(f"  {s.mode} ×{s.workers}: measured again: {s.remeasured_reason}", style="yellow")
              for s in report.steps if s.summary is not None and s.remeasured_reason and not s.summary.unsteady]
    notes += [Text(f"  {s.mode} ×{s.workers}: waited {s.waited_seconds:.0f} s for a quiet host", style="dim")
              for s in report.steps if s.waited_seconds >= 1]
    notes += [Text(f"  {s.mode} ×{s.workers}: the hypervisor stole {s.summary.steal_ratio:.0%} of the CPU time",
                   style="yellow")
              for s in report.steps if s.summary is not None and (s.summary.steal_ratio or 0.0) >= NOTABLE_STEAL]
    return notes + [Text(f"  {s.mode} ×{s.workers}: " + (f"failed ({s.reason}): " if s.available else "unavailable: ")
                 + s.message, style="red" if s.available else "dim")
            for s in report.steps if not s.success]


def bar(fraction: float, width: int = BAR_WIDTH, other: float = 0.0) -> Text:
    """Busy share of one CPU: the probe's part solid, other processes' part shaded."""
    filled = round(fraction * width)
    theirs = min(filled, round(other * width))
    colour = "green" if fraction >= 0.75 else "yellow" if fraction >= 0.25 else "dim"
    return (Text("█" * (filled - theirs), style=colour) + Text("▓" * theirs, style="magenta")
            + Text("░" * (width - filled), style="dim"))


def other_share(summary: Summary) -> float:
    """Share of the busy CPU time that other processes used (host-wide, not per CPU)."""
    busy = sum(summary.core_utilisation)
    if not summary.interference_cores or busy <= 0:
        return 0.0
    return min(1.0, summary.interference_cores / busy)


def core_bars(report: WorkloadReport, width: int) -> Group:
    """Per-core busy fraction during each mode's timed window, fitted to ``width`` columns.

    The kernel tells busy time per CPU but not whose it was, so the other processes' share
    (interference over all busy time) is drawn as the same part of every CPU's bar.
    """
    cpus = max((len(s.summary.core_utilisation) for s in report.steps if s.summary), default=1)
    bar_width = max(4, min(BAR_WIDTH, (width - 22) // max(1, cpus) - 12))
    lines = [Text("per-core utilisation in the timed windows: ", style="bold")
             + Text("█ probe ", style="green") + Text("▓ other processes ", style="magenta")
             + Text("░ idle", style="dim")]
    for step in report.steps:
        if step.summary is None:
            continue
        cores = step.summary.core_utilisation
        share = other_share(step.summary)
        label = Text(f"  {step.mode:<15} ×{step.workers:<2}")
        if len(cores) > MAX_CPUS_WITH_BARS:
            busy = sorted(cores, reverse=True)
            label += Text(f"{len(cores)} CPUs: busiest {busy[0]:.0%}, mean {sum(cores) / len(cores):.0%}, "
                          f"other processes {share:.0%} of the busy time")
            lines.append(label)
            continue
        for cpu, fraction in enumerate(cores):
            label += Text(f" cpu{cpu} ") + bar(fraction, bar_width, fraction * share) + Text(f" {fraction:4.0%}")
        lines.append(label)
    return Group(*lines)


def serialisation_cause(step: StepResult, report: WorkloadReport) -> str:
    """Why workers that left cores idle took turns, by mode and build."""
    identity = report.identity
    if step.mode == "threads" and identity is not None and identity.gil_enabled:
        return "GIL enabled"
    if step.mode == "asyncio":
        return "one event loop"
    if step.mode == "threads":
        return "the threads took turns (a lock, or C code that holds one) while the GIL was off"
    if step.mode == "subinterpreters":
        return "the subinterpreters took turns (a lock they share, or a shared GIL)"
    return "the workers took turns (a lock or another resource they share)"


def contention_cause(step: StepResult, report: WorkloadReport) -> str:
    """Why workers that kept the cores busy still did less: they slowed each other down."""
    s = step.summary
    assert s is not None
    rate = f", each at {s.cpu_rate_ratio * 100:.0f} % of one worker's speed" if s.cpu_rate_ratio else ""
    free_threaded = report.identity is not None and not report.identity.gil_enabled
    if step.mode == "threads" and free_threaded:
        usual = ("on a free-threaded build usually shared objects: reference counts, per-object locks, "
                 "writes to shared dicts, lists or globals")
    else:
        usual = "usually shared caches, memory bandwidth, SMT siblings or the CPU's frequency"
    return f"contention: the workers slowed each other down{rate} ({usual})"


def free_cores(summary: Summary, usable: float) -> float:
    """Capacity neither the probe nor other processes used."""
    return usable - summary.cores_used - (summary.interference_cores or 0.0)


def cores_idle(summary: Summary, possible: float) -> bool:
    """The workers kept clearly fewer cores busy than they could have: they took turns."""
    return summary.cores_used < possible - SERIALISED_SHORTFALL


def shortfall_causes(step: StepResult, report: WorkloadReport, usable: float, possible: float) -> list[str]:
    """Where the speedup went, from the measured parts: cores busy, rate, other load, limits."""
    s = step.summary
    assert s is not None
    causes = [f"{s.cores_used:.2f} cores busy"
              + (f", each at {s.cpu_rate_ratio * 100:.0f} % of one worker's speed" if s.cpu_rate_ratio else "")]
    if s.cpu_bound and cores_idle(s, possible) and free_cores(s, usable) >= FREE_CORES:
        causes.append(f"serialised: {serialisation_cause(step, report)} while "
                      f"{free_cores(s, usable):.1f} cores stood idle")
    elif s.cpu_bound and s.cpu_rate_ratio is not None and s.cpu_rate_ratio < CONTENTION_RATE:
        usual = contention_cause(step, report).split(" (", 1)[1].rstrip(")")
        causes.append(f"contention: the workers slowed each other down ({usual})")
    if (s.interference_cores or 0.0) >= NOTABLE_INTERFERENCE:
        causes.append(f"other processes used {s.interference_cores:.1f} cores during the run")
    if (s.steal_ratio or 0.0) >= NOTABLE_STEAL:
        causes.append(f"the hypervisor stole {s.steal_ratio:.0%} of the CPU time")
    if possible < step.workers:
        causes.append(f"only {usable:g} usable cores (CPU affinity or quota)")
    if s.wall_seconds > 0 and s.startup_seconds >= NOTABLE_STARTUP * s.wall_seconds:
        causes.append(f"start-up {s.startup_seconds:.2f} s per pool on top of {s.wall_seconds:.2f} s of work")
    return causes


def mode_verdict(step: StepResult, report: WorkloadReport, usable: float) -> str:
    """Leading words scripts read: ``no parallel speedup``, ``scales``, ``partial speedup``,
    ``cannot tell`` (too few free cores) or ``unsteady`` (withheld), then evidence and cause."""
    if not step.available:
        return f"{step.mode}: unavailable"
    if step.summary is None:
        return f"{step.mode}: failed ({step.reason})"
    s = step.summary
    if s.unsteady:
        return f"{step.mode}: unsteady — {s.unsteady_reason}"
    if not s.conclusive:
        return f"{step.mode}: cannot tell — {s.inconclusive_reason}; {s.cores_used:.2f} cores busy"
    # CPU-bound work cannot beat the usable cores; waiting (sleep) can overlap up to N.
    cpu_bound = s.cpu_bound
    possible = min(step.workers, usable) if cpu_bound else step.workers
    low, high = s.speedup_ci or (s.speedup, s.speedup)
    shown = speedup_text(s)
    # The CPU-time evidence decides first: workers that never kept more than ~one core busy
    # did not run in parallel, whatever a noisy wall-clock ratio says; workers that kept the
    # cores busy and still gained nothing slowed each other down.
    if step.workers > 1 and (high < NO_SPEEDUP or (cpu_bound and s.cores_used < NO_SPEEDUP)):
        if cpu_bound and not cores_idle(s, possible) and s.cores_used >= NO_SPEEDUP:
            cause = contention_cause(step, report)
        elif free_cores(s, usable) < FREE_CORES and (s.interference_cores or 0.0) >= NOTABLE_INTERFERENCE:
            # No core stood idle: the host, not the runtime, kept the workers from running.
            cause = f"other processes used {s.interference_cores:.1f} cores during the run"
        elif possible < step.workers and possible < NO_SPEEDUP:
            cause = f"only {usable:g} usable cores (CPU affinity or quota)"
        else:
            cause = serialisation_cause(step, report)
        return f"{step.mode}: no parallel speedup {shown} — {cause}; {s.cores_used:.2f} cores busy"
    good = SCALES_FRACTION * possible
    if low >= good or (s.speedup >= good and (not cpu_bound or s.cores_used >= good)):
        return f"{step.mode}: scales {shown} (ideal ×{step.workers})"
    causes = shortfall_causes(step, report, usable, possible)
    return f"{step.mode}: partial speedup {shown} of ×{possible:g} possible — " + "; ".join(causes)


def verdict(report: WorkloadReport, usable: float) -> str:
    """One line per workload: how each parallel mode did against what the host allows."""
    parts = [mode_verdict(s, report, usable) for s in report.steps if s.mode != "sequential"]
    if not report.step("sequential", 1).success:
        return f"{report.spec.workload}: failed — {report.step('sequential', 1).message}"
    return f"{report.spec.workload}: " + "; ".join(parts)


def comparison_table(reports: Sequence[WorkloadReport]) -> Optional[Table]:
    """Interpreters side by side: speedup and cores used of every (workload, mode, workers)."""
    names = list(dict.fromkeys(r.interpreter.name for r in reports))
    if len(names) < 2:
        return None
    table = Table(title="interpreters side by side: speedup (cores used)", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("workload")
    table.add_column("mode")
    table.add_column("N", justify="right")
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)
    by_key = {(r.interpreter.name, s.workload, s.mode, s.workers): s for r in reports for s in r.steps}
    rows = dict.fromkeys((s.workload, s.mode, s.workers) for r in reports for s in r.steps)
    for workload, mode, workers in rows:
        cells = []
        for name in names:
            step = by_key.get((name, workload, mode, workers))
            if step is None or not step.available:
                cells.append("[dim]n/a[/dim]")
            elif step.summary is None:
                cells.append(f"[red]failed ({step.reason})[/red]")
            elif step.summary.unsteady:
                cells.append(f"[yellow]unsteady[/yellow] ({step.summary.cores_used:.2f})")
            elif not step.summary.conclusive:
                cells.append(f"[yellow]cannot tell[/yellow] ({step.summary.cores_used:.2f})")
            else:
                cells.append(f"{step.summary.speedup:.2f}× ({step.summary.cores_used:.2f})")
        table.add_row(workload, mode, str(workers), *cells)
    return table


def nice_text(nice: Nice) -> str:
    if nice == SCHED_IDLE:
        return "SCHED_IDLE (runs only on CPU time nothing else wants)"
    return f"nice {nice}" + ("" if nice == 0 else " (lower priority than the host's other work)")


def render(reports: Sequence[WorkloadReport], host: HostCpus, console: Console) -> None:
    console.print(f"[bold]Host[/bold]: {host.logical} logical CPUs, {host.physical or '?'} physical, "
                  f"{host.usable:g} usable (affinity {host.affinity}"
                  + (f", cgroup quota {host.quota:g}" if host.quota else ", no cgroup quota") + ")")
    nice = probe_nice(reports)
    line = f"[bold]Probe priority[/bold]: {nice_text(nice)}"
    if nice != 0:
        line += " — figures show what the host leaves over, not what Python can do"
    console.print(line)
    for report in reports:
        console.print()
        console.print(results_table(report))
        for note in step_notes(report):
            console.print(note)
        console.print(core_bars(report, console.width))
        console.print(Text(verdict(report, host.usable), style="bold"))
    comparison = comparison_table(reports)
    if comparison is not None:
        console.print()
        console.print(comparison)


def probe_nice(reports: Sequence[WorkloadReport]) -> Nice:
    return reports[0].spec.nice if reports else 0


def step_document(step: StepResult, report: WorkloadReport) -> dict[str, Any]:
    summary = step.summary
    # An unsteady or inconclusive step's speedup is withheld: its pairs and CPU-time figures stay.
    shown = summary if summary is not None and summary.shown else None
    return {
        "interpreter": report.interpreter.name,
        "workload": step.workload,
        "mode": step.mode,
        "workers": step.workers,
        "start_method": report.spec.start_method if step.mode == "processes" else None,
        "success": step.success,
        "available": step.available,
        "reason": step.reason,
        "message": step.message,
        "log": list(step.log),  # the runner's last stderr lines, on failed steps
        "duration_seconds": step.duration_seconds,
        "wall_seconds": summary.wall_seconds if summary else None,
        "speedup": shown.speedup if shown else None,
        "speedup_ci": list(shown.speedup_ci) if shown and shown.speedup_ci else None,
        "pair_speedups": list(summary.pair_speedups) if summary else [],
        "speedup_spread": summary.speedup_spread if summary else None,
        "throughput_units_per_second": summary.throughput_units_per_second if summary else None,
        "throughput_ops_per_second": summary.throughput_ops_per_second if summary else None,
        "efficiency": shown.efficiency if shown else None,
        "serial_fraction": shown.serial_fraction if shown else None,
        "cores_used": summary.cores_used if summary else None,
        "cpu_rate_ratio": summary.cpu_rate_ratio if summary else None,
        "interference_cores": summary.interference_cores if summary else None,
        "steal_ratio": summary.steal_ratio if summary else None,
        "cpu_rate_ci": list(summary.rate_ci) if summary and summary.rate_ci else None,
        "pair_cpu_rates": list(summary.pair_rates) if summary else [],
        "pairs": summary.pairs if summary else 0,
        "unsteady": summary.unsteady if summary else False,
        "unsteady_reason": summary.unsteady_reason if summary else None,
        "conclusive": summary.conclusive if summary else None,
        "inconclusive_reason": summary.inconclusive_reason if summary else None,
        "free_cores": summary.free_cores if summary else None,
        "remeasured_reason": step.remeasured_reason,
        "waited_seconds": step.waited_seconds,
        "warmup_seconds": step.warmup[1] - step.warmup[0] if step.warmup else None,
        "core_utilisation": summary.core_utilisation if summary else [],
        "startup_seconds": summary.startup_seconds if summary else None,
        "repeats": [w.wall_seconds for w in step.windows if w.role != "baseline"],
    }


def interpreter_document(report: WorkloadReport) -> dict[str, Any]:
    document = {"name": report.interpreter.name, "path": report.interpreter.path}
    if report.identity is not None:
        document.update(asdict(report.identity))
    return document


def json_document(reports: Sequence[WorkloadReport], host: HostCpus) -> dict[str, Any]:
    """One machine-readable document: interpreters, host and a flat list of results."""
    interpreters: dict[str, dict[str, Any]] = {}
    for report in reports:
        if report.identity is not None or report.interpreter.name not in interpreters:
            interpreters[report.interpreter.name] = interpreter_document(report)
    return {
        "interpreter": next(iter(interpreters.values()), None),
        "interpreters": list(interpreters.values()),
        "host": {"logical_cpus": host.logical, "physical_cpus": host.physical,
                 "affinity_cpus": host.affinity, "cgroup_quota_cpus": host.quota,
                 "usable_cpus": host.usable},
        "nice": probe_nice(reports),
        "results": [step_document(s, r) for r in reports for s in r.steps],
        "verdicts": [verdict(r, host.usable) for r in reports],
    }
