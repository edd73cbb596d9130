"""The ``--plot`` chart: per-core utilisation by mode, and speedup by mode, per workload.

One row per workload: on the left each CPU's busy share during the timed windows, on the
right the speedup against the ideal (N workers: N×). The title names the interpreter(s),
the host and the date, so a PNG passed around later still says where it came from.
"""

from __future__ import annotations

import datetime
import socket
from typing import Optional, Sequence

from exporter.errors import ConfigError
from exporter.host.cpus import HostCpus
from exporter.stats.measurement import Summary
from exporter.model.results import StepResult, WorkloadReport, other_share

# As the report states it: the figure is the geometric mean of the (T1, TN) pairs.
SPEEDUP_TITLE = "speedup T1·N/TN (geometric mean of the pairs, 95 % interval)"
OTHER_HATCH = "////"  # other processes' part of a CPU's bar, as ▓ in the terminal's bars
LEGEND_MAX_CPUS = 16  # beyond this a per-CPU legend is a wall of colours: the axis says "cpu0…"
# Workloads that wait rather than compute: their rows show idle cores, which is the point.
IO_CONTROLS = {"sleep": ("I/O control: sleep keeps the cores idle on purpose (busy bars are other load)",
                         "I/O control: waits overlap in every mode, even under the GIL")}


def write_chart(reports: Sequence[WorkloadReport], path: str, host: Optional[HostCpus] = None) -> None:
    """Draw one row per workload (left: per-core bars by mode, right: speedup bars) into ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed; must precede pyplot
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot: matplotlib is not installed; install it with scripts/install plot "
                          "(in a clone), or pip install matplotlib into this Python's environment") from None
    workloads = list(dict.fromkeys(r.spec.workload for r in reports))
    figure, axes = plt.subplots(len(workloads), 2, figsize=(14, 3.6 * len(workloads) + 0.8),
                                squeeze=False)
    for row, workload in enumerate(workloads):
        mine = [r for r in reports if r.spec.workload == workload]
        cores_note, speedup_note = (f"\n{note}" for note in IO_CONTROLS.get(workload, ("", "")))
        draw_cores(axes[row][0], mine)
        draw_speedups(axes[row][1], mine)
        axes[row][0].set_title(f"{workload}: per-core utilisation during the timed windows{cores_note}".strip(),
                               fontsize=10)
        axes[row][1].set_title(f"{workload}: {SPEEDUP_TITLE}{speedup_note}".strip(), fontsize=10)
    figure.suptitle(chart_title(reports, host), fontsize=11)
    figure.tight_layout()
    # bbox_inches="tight" keeps the legends placed beside the axes inside the image.
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def chart_title(reports: Sequence[WorkloadReport], host: Optional[HostCpus],
                when: Optional[datetime.datetime] = None) -> str:
    """'<interpreters>' over 'host <name>: <CPUs> · <UTC date and time>'."""
    interpreters = []
    for report in reports:
        label = report.label
        if label not in interpreters:
            interpreters.append(label)
    cpus = f": {host.logical} logical CPUs, {host.usable:g} usable" if host is not None else ""
    moment = (when or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    return f"{'; '.join(interpreters)}\nhost {socket.gethostname()}{cpus} · {moment}"


def _bars(reports: Sequence[WorkloadReport]) -> list[tuple[str, StepResult, Summary]]:
    """(label, step, summary) of every successful step; labels name the interpreter when several."""
    several = len({r.interpreter.name for r in reports}) > 1
    bars = []
    for report in reports:
        for step in report.steps:
            if step.summary is not None:
                prefix = f"{report.interpreter.name}\n" if several else ""
                bars.append((f"{prefix}{step.mode}×{step.workers}", step, step.summary))
    return bars


def core_parts(summary: Summary) -> list[tuple[float, float]]:
    """(probe, other processes) busy % of each CPU during the step's timed windows: the
    terminal's █ and ▓ (``other_share``: the other load's part of all busy time)."""
    share = other_share(summary)
    return [(fraction * (1 - share) * 100, fraction * share * 100) for fraction in summary.core_utilisation]


def draw_cores(axis, reports: Sequence[WorkloadReport]) -> None:
    bars = _bars(reports)
    if not bars:
        axis.text(0.5, 0.5, "no successful step", ha="center", transform=axis.transAxes)
        return
    cpus = len(bars[0][2].core_utilisation)
    width = 0.8 / max(1, cpus)
    parts = [core_parts(summary) for _, _, summary in bars]
    for cpu in range(cpus):
        x = [i + cpu * width for i in range(len(bars))]
        probe = [p[cpu][0] if cpu < len(p) else 0.0 for p in parts]
        other = [p[cpu][1] if cpu < len(p) else 0.0 for p in parts]
        drawn = axis.bar(x, probe, width, label=f"cpu{cpu}")
        axis.bar(x, other, width, bottom=probe, color=drawn.patches[0].get_facecolor(), alpha=0.35,
                 hatch=OTHER_HATCH, edgecolor="dimgray", linewidth=0)
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(bars))], [label for label, _, _ in bars],
                    fontsize=8)
    axis.set_xlabel("mode × workers (one bar per CPU, left to right cpu0, cpu1, …)")
    axis.set_ylabel("busy % of the CPU")
    axis.set_ylim(0, 105)
    from matplotlib.patches import Patch

    # Solid: the probe; hatched: other processes, for every CPU (the terminal's █ and ▓).
    handles, labels = axis.get_legend_handles_labels() if cpus <= LEGEND_MAX_CPUS else ([], [])
    handles.append(Patch(facecolor="lightgray", hatch=OTHER_HATCH, edgecolor="dimgray"))
    labels.append("other processes")
    # Beside the axes, never over the bars.
    axis.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.3)


def draw_speedups(axis, reports: Sequence[WorkloadReport]) -> None:
    bars = _bars(reports)
    if not bars:
        axis.text(0.5, 0.5, "no successful step", ha="center", transform=axis.transAxes)
        return
    positions = range(len(bars))
    # A withheld speedup (implausible, or too few free cores to tell): no bar, a label instead;
    # where the host was too busy, the idle-host estimate from the kernel's accounting, hatched.
    heights = [summary.speedup if summary.shown else 0.0 for _, _, summary in bars]
    estimates = [idle_estimate(summary) or 0.0 for _, _, summary in bars]
    # The 95 % interval as whiskers, so a figure is never drawn surer than it is.
    whiskers = [[h - s.speedup_ci[0] if s.shown and s.speedup_ci else 0.0 for h, (_, _, s) in zip(heights, bars)],
                [s.speedup_ci[1] - h if s.shown and s.speedup_ci else 0.0 for h, (_, _, s) in zip(heights, bars)]]
    axis.bar(positions, heights, color="tab:blue", label="measured (95 % interval)", yerr=whiskers, capsize=3)
    if any(estimates):
        axis.bar(positions, estimates, color="tab:blue", alpha=0.35, hatch=OTHER_HATCH, edgecolor="dimgray",
                 linewidth=0, label="~ idle-host estimate (host too busy)")
    top = max(max(height, estimate, step.workers) for height, estimate, (_, step, _) in zip(heights, estimates, bars))
    for i, (height, estimate, (_, step, summary)) in enumerate(zip(heights, estimates, bars)):
        axis.hlines(step.workers, i - 0.4, i + 0.4, colors="black", linestyles="dashed",
                    label="ideal (N×)" if i == 0 else None)
        # Above both the bar and the ideal line, so the line never strikes through the figure.
        label = (f"{summary.speedup:.2f}×" if summary.shown else "unsteady" if summary.unsteady
                 else f"~{estimate:.2f}×" if estimate else "cannot tell")
        axis.text(i, max(height, estimate, step.workers) + 0.03 * top, label, ha="center", va="bottom", fontsize=8)
    axis.set_xticks(list(positions), [label for label, _, _ in bars], fontsize=8)
    axis.set_xlabel("mode × workers")
    axis.set_ylabel("speedup × (ideal = N)")
    axis.set_ylim(0, top * 1.2)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.3)


def idle_estimate(summary: Summary) -> Optional[float]:
    """The idle-host speedup where the wall clock's figure was withheld for a busy host."""
    if summary.shown or summary.unsteady or summary.accounting is None:
        return None
    return summary.accounting.idle_speedup
