"""The --plot chart: its title says which interpreter, host and date it shows; its per-core bars
split the probe from other processes as the terminal does; the speedup is named as the docs name it."""

from __future__ import annotations

import datetime
import socket
from pathlib import Path

from exporter.host.cpus import HostCpus
from exporter.plot import chart_title
from exporter.model.results import Identity, Interpreter, ProbeSpec, WorkloadReport


def test_title_names_interpreter_host_cpus_and_date() -> None:
    identity = Identity("3.13.5", "cpython", "/opt/python3.13t", True, False, ("forkserver",), None)
    report = WorkloadReport(Interpreter("cpython-3.13t", "/opt/python3.13t"), ProbeSpec("pure_python", ("threads",), (2,)),
                            identity=identity)
    when = datetime.datetime(2026, 11, 25, 21, 5, tzinfo=datetime.timezone.utc)
    title = chart_title([report, report], HostCpus(logical=4, physical=2, affinity=4, quota=2.0), when)
    assert title.splitlines() == [
        "cpython-3.13t: cpython 3.13.5, free-threaded, GIL disabled",
        f"host {socket.gethostname()}: 4 logical CPUs, 2 usable · 2026-11-25 21:05 UTC",
    ]


def busy_report() -> WorkloadReport:
    """Processes on both CPUs while other processes used 0.5 of the 2.0 busy cores."""
    from exporter.model.results import StepResult
    from exporter.stats.measurement import Summary

    values = dict(wall_seconds=1.0, speedup=1.9, speedup_spread=0.05, efficiency=0.95, serial_fraction=None,
                  throughput_units_per_second=2.0, throughput_ops_per_second=200.0, cores_used=1.5,
                  core_utilisation=[1.0, 1.0], startup_seconds=0.05, speedup_ci=(1.85, 1.95), pair_speedups=[1.9] * 3,
                  cpu_rate_ratio=1.0, interference_cores=0.5, steal_ratio=0.0, unsteady_reason=None, cpu_bound=True)
    step = StepResult("pure_python", "processes", 2, success=True, summary=Summary(**values))
    return WorkloadReport(Interpreter("default", "/usr/bin/python3"), ProbeSpec("pure_python", ("processes",), (2,)),
                          steps=[step])


def test_per_core_bars_split_the_probe_from_other_processes_as_the_terminal_does() -> None:
    from exporter import report as terminal
    from exporter.plot import core_parts

    summary = busy_report().steps[0].summary
    assert summary is not None
    assert core_parts(summary) == [(75.0, 25.0), (75.0, 25.0)]
    # The terminal's bar of the same step: 15 of 20 cells █ (the probe), 5 ▓ (other processes).
    cells = terminal.bar(1.0, 20, 1.0 * 0.25).plain
    assert (cells.count("█"), cells.count("▓")) == (15, 5)


def test_the_chart_draws_the_split_and_says_how_the_speedup_is_averaged() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from exporter import plot

    figure, (cores, speedups) = plt.subplots(1, 2)
    plot.draw_cores(cores, [busy_report()])
    heights = sorted(round(patch.get_height()) for patch in cores.patches if patch.get_height() > 0)
    assert heights == [25, 25, 75, 75]  # per CPU: the probe's part and the other processes' on top
    assert "other processes" in [text.get_text() for text in cores.get_legend().get_texts()]
    plt.close(figure)
    assert "geometric mean of the pairs" in plot.SPEEDUP_TITLE
    readme = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    assert "geometric mean of 3–10 independent (T1, TN) **pairs**" in readme  # the docs say the same
