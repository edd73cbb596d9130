"""The ``--plot`` chart: per-core utilisation by mode, and speedup by mode, per workload."""

from __future__ import annotations

from typing import Sequence

from exporter.errors import ConfigError
from exporter.measurement import Summary
from exporter.results import StepResult, WorkloadReport


def write_chart(reports: Sequence[WorkloadReport], path: str) -> None:
    """Draw one row per workload (left: per-core bars by mode, right: speedup bars)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed; must precede pyplot
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot: matplotlib is not installed; install it with scripts/install plot "
                          "(in a clone) or pip install 'python-parallelism-exporter[plot]'") from None
    workloads = list(dict.fromkeys(r.spec.workload for r in reports))
    figure, axes = plt.subplots(len(workloads), 2, figsize=(12, 3.2 * len(workloads)),
                                squeeze=False)
    for row, workload in enumerate(workloads):
        mine = [r for r in reports if r.spec.workload == workload]
        draw_cores(axes[row][0], mine)
        draw_speedups(axes[row][1], mine)
        axes[row][0].set_title(f"{workload}: per-core utilisation during the timed window")
        axes[row][1].set_title(f"{workload}: speedup T1·N/TN (dashed: ideal)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


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


def draw_cores(axis, reports: Sequence[WorkloadReport]) -> None:
    bars = _bars(reports)
    if not bars:
        axis.text(0.5, 0.5, "no successful step", ha="center", transform=axis.transAxes)
        return
    cpus = len(bars[0][2].core_utilisation)
    width = 0.8 / max(1, cpus)
    for cpu in range(cpus):
        values = [summary.core_utilisation[cpu] * 100 for _, _, summary in bars]
        axis.bar([i + cpu * width for i in range(len(bars))], values, width, label=f"cpu{cpu}")
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(bars))], [label for label, _, _ in bars],
                    fontsize=8)
    axis.set_ylabel("busy %")
    axis.set_ylim(0, 105)
    if cpus <= 16:
        axis.legend(fontsize=7, ncols=min(cpus, 8))


def draw_speedups(axis, reports: Sequence[WorkloadReport]) -> None:
    bars = _bars(reports)
    positions = range(len(bars))
    axis.bar(positions, [summary.speedup for _, _, summary in bars], color="tab:blue")
    for i, (_, step, summary) in enumerate(bars):
        axis.hlines(step.workers, i - 0.4, i + 0.4, colors="black", linestyles="dashed")  # ideal
        axis.text(i, summary.speedup, f"{summary.speedup:.2f}", ha="center", va="bottom", fontsize=8)
    axis.set_xticks(list(positions), [label for label, _, _ in bars], fontsize=8)
    axis.set_ylabel("speedup ×")
