"""The one-shot report: a rich table, per-core bars and a verdict per workload, or JSON.

This is what a person at a terminal reads to see the whole product's point: threads on one
core under the GIL, processes (or free-threaded threads) on every core.
"""

from __future__ import annotations

from typing import Optional, Sequence

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from exporter.host.cpus import HostCpus
from exporter.stats.measurement import Summary, interval_text
from exporter.model.results import SCHED_IDLE, Nice, StepResult, WorkloadReport, other_share
from exporter.model.verdicts import NOTABLE_STEAL, speedup_text, verdict
from exporter.runner.modes import SEQUENTIAL


BAR_WIDTH = 20
MAX_CPUS_WITH_BARS = 16  # more CPUs than this get a one-line summary instead of bars


# Throughput and wall time are in the JSON and the metrics; the table keeps, within 80
# columns, what a verdict rests on.
COLUMNS = ("mode", "N", "speedup", "eff", "cores", "rate", "at once", "other", "pairs")


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
    efficiency = f"{s.efficiency * 100:.0f}%" if s.shown else "–"
    pairs = str(s.pairs) + ("[yellow]*[/yellow]" if s.remeasured_reason else "")
    at_once = optional(s.accounting.runnable if s.accounting and step.mode != SEQUENTIAL else None, ".2f")
    return [mode, str(step.workers), speedup_cell(s), efficiency, f"{s.cores_used:.2f}",
            optional(s.cpu_rate_ratio, ".2f"), at_once, optional(s.interference_cores, ".2f"), pairs]


def speedup_cell(s: Summary) -> str:
    """The measured speedup; where the host was too busy for it, the idle-host estimate (~)."""
    if s.shown:
        return speedup_text(s)
    if s.unsteady:
        return "[yellow]unsteady[/yellow]"
    a = s.accounting
    if a is not None and a.idle_speedup is not None:
        return f"[yellow]~{interval_text(a.idle_speedup, a.idle_speedup_ci)}[/yellow]"
    return "[yellow]cannot tell[/yellow]"


def results_table(report: WorkloadReport) -> Table:
    identity = report.identity
    title = f"{report.spec.workload} — {report.label}"
    # One space between columns (not two), so the interval fits an 80-column terminal.
    table = Table(title=title, title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
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
                         f"rate = work per CPU s vs one worker alone; at once = workers runnable at once (the "
                         f"kernel's accounting: on a CPU or waiting for one); ~ = the idle-host speedup, at once "
                         f"× rate, where other processes left too few free cores for the wall clock; other = cores "
                         f"used by other processes; processes start with {report.spec.start_method}")
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
    nice = reports[0].spec.nice if reports else 0
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


