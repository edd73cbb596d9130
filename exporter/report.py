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
from exporter.results import StepResult, WorkloadReport

BAR_WIDTH = 20
MAX_CPUS_WITH_BARS = 16  # more CPUs than this get a one-line summary instead of bars
SCALES_FRACTION = 0.8  # a speedup within 80 % of the possible one "scales"
NO_SPEEDUP = 1.2  # below this a parallel mode gave no useful speedup


def interpreter_label(report: WorkloadReport) -> str:
    identity = report.identity
    if identity is None:
        return f"{report.interpreter.name} ({report.interpreter.path})"
    build = "free-threaded" if identity.free_threaded_build else "GIL build"
    gil = "GIL enabled" if identity.gil_enabled else "GIL disabled"
    return f"{report.interpreter.name}: {identity.implementation} {identity.version}, {build}, {gil}"


def step_row(step: StepResult) -> list[str]:
    mode = step.mode
    if not step.available:
        return [f"[dim]{mode}[/dim]", str(step.workers)] + ["[dim]n/a[/dim]"] * 7
    if not step.success or step.summary is None:
        return [f"[red]{mode}[/red]", str(step.workers)] + ["[red]fail[/red]"] * 7
    s = step.summary
    return [mode, str(step.workers), f"{s.wall_seconds:.2f}s", f"{s.throughput_units_per_second:.2f}",
            f"{s.speedup:.2f}×", f"{s.speedup_spread * 50:.0f}%", f"{s.efficiency * 100:.0f}%",
            f"{s.cores_used:.2f}", f"{s.startup_seconds * 1000:.0f}ms"]


def results_table(report: WorkloadReport) -> Table:
    identity = report.identity
    title = f"{report.spec.workload} — {interpreter_label(report)}"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("mode", "N", "time", "unit/s", "speedup", "±", "eff", "cores", "start"):
        table.add_column(column, justify="left" if column == "mode" else "right", no_wrap=True)
    for step in report.steps:
        table.add_row(*step_row(step))
    if identity is not None and report.ops_per_unit:
        table.caption = (f"N workers, one unit each ({report.ops_per_unit} operations ≈ "
                         f"{report.spec.unit_seconds:g} s); speedup = T1·N/TN, median of "
                         f"{report.spec.repeats} ± half the spread; cores = CPU s / wall s; "
                         f"processes start with {report.spec.start_method}")
    return table


def step_notes(report: WorkloadReport) -> list[Text]:
    """Why each failed or unavailable step did not give figures."""
    return [Text(f"  {s.mode} ×{s.workers}: " + (f"failed ({s.reason}): " if s.available else "unavailable: ")
                 + s.message, style="red" if s.available else "dim")
            for s in report.steps if not s.success]


def bar(fraction: float, width: int = BAR_WIDTH) -> Text:
    filled = round(fraction * width)
    colour = "green" if fraction >= 0.75 else "yellow" if fraction >= 0.25 else "dim"
    return Text("█" * filled, style=colour) + Text("░" * (width - filled), style="dim")


def core_bars(report: WorkloadReport, width: int) -> Group:
    """Per-core busy fraction during each mode's timed window, fitted to ``width`` columns."""
    cpus = max((len(s.summary.core_utilisation) for s in report.steps if s.summary), default=1)
    bar_width = max(4, min(BAR_WIDTH, (width - 22) // max(1, cpus) - 12))
    lines = [Text("per-core utilisation during the timed window", style="bold")]
    for step in report.steps:
        if step.summary is None:
            continue
        cores = step.summary.core_utilisation
        label = Text(f"  {step.mode:<15} ×{step.workers:<2}")
        if len(cores) > MAX_CPUS_WITH_BARS:
            busy = sorted(cores, reverse=True)
            label += Text(f"{len(cores)} CPUs: busiest {busy[0]:.0%}, mean {sum(cores) / len(cores):.0%}")
            lines.append(label)
            continue
        for cpu, fraction in enumerate(cores):
            label += Text(f" cpu{cpu} ") + bar(fraction, bar_width) + Text(f" {fraction:4.0%}")
        lines.append(label)
    return Group(*lines)


def mode_verdict(step: StepResult, report: WorkloadReport, usable: float) -> str:
    if not step.available:
        return f"{step.mode}: unavailable"
    if step.summary is None:
        return f"{step.mode}: failed ({step.reason})"
    speedup = step.summary.speedup
    # CPU-bound work cannot beat the usable cores; waiting (sleep) can overlap up to N.
    ceiling = min(step.workers, usable) if step.summary.cores_used > 0.5 else step.workers
    if speedup < NO_SPEEDUP and step.workers > 1:
        gil_bound = step.mode == "threads" and report.identity is not None and report.identity.gil_enabled
        why = " — GIL enabled" if gil_bound else " — one event loop" if step.mode == "asyncio" else ""
        return f"{step.mode}: no parallel speedup (×{speedup:.2f}){why}"
    if speedup >= SCALES_FRACTION * ceiling:
        return f"{step.mode}: scales ×{speedup:.2f} (ideal ×{step.workers})"
    return f"{step.mode}: partial speedup ×{speedup:.2f} of ×{ceiling:g} possible"


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
            else:
                cells.append(f"{step.summary.speedup:.2f}× ({step.summary.cores_used:.2f})")
        table.add_row(workload, mode, str(workers), *cells)
    return table


def render(reports: Sequence[WorkloadReport], host: HostCpus, console: Console) -> None:
    console.print(f"[bold]Host[/bold]: {host.logical} logical CPUs, {host.physical or '?'} physical, "
                  f"{host.usable:g} usable (affinity {host.affinity}"
                  + (f", cgroup quota {host.quota:g}" if host.quota else ", no cgroup quota") + ")")
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


def step_document(step: StepResult, report: WorkloadReport) -> dict[str, Any]:
    summary = step.summary
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
        "speedup": summary.speedup if summary else None,
        "speedup_spread": summary.speedup_spread if summary else None,
        "throughput_units_per_second": summary.throughput_units_per_second if summary else None,
        "throughput_ops_per_second": summary.throughput_ops_per_second if summary else None,
        "efficiency": summary.efficiency if summary else None,
        "serial_fraction": summary.serial_fraction if summary else None,
        "cores_used": summary.cores_used if summary else None,
        "core_utilisation": summary.core_utilisation if summary else [],
        "startup_seconds": summary.startup_seconds if summary else None,
        "repeats": [w.wall_seconds for w in step.windows],
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
        "results": [step_document(s, r) for r in reports for s in r.steps],
        "verdicts": [verdict(r, host.usable) for r in reports],
    }
