"""The report's verdicts, bars and JSON on constructed results: causes named from the
measured parts, leading words kept, unsteady figures withheld."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Optional

from rich.console import Console

from exporter import report
from exporter.model import document as results_document
from exporter.model import verdicts
from exporter.host.cpus import HostCpus
from exporter.stats.measurement import Summary
from exporter.model.results import Identity, Interpreter, ProbeSpec, StepResult, WorkloadReport

TWO_CORES = HostCpus(logical=2, physical=2, affinity=2, quota=None)


def identity(gil: bool = True) -> Identity:
    return Identity("3.13.0", "cpython", "/usr/bin/python3", not gil, gil, ("fork",), None)


def summary(speedup: float, ci: Optional[tuple[float, float]], cores: float, rate: Optional[float] = 1.0,
            other: float = 0.0, workers: int = 2, unsteady: Optional[str] = None, **fields) -> Summary:
    values = dict(wall_seconds=1.0, speedup=speedup, speedup_spread=0.05, efficiency=speedup / workers,
                  serial_fraction=None, throughput_units_per_second=2.0, throughput_ops_per_second=200.0,
                  cores_used=cores, core_utilisation=[1.0, 1.0], startup_seconds=0.05, speedup_ci=ci,
                  pair_speedups=[speedup] * 3, cpu_rate_ratio=rate, interference_cores=other,
                  steal_ratio=0.0, unsteady_reason=unsteady, cpu_bound=cores > 0.1)
    values.update(fields)
    return Summary(**values)


def step(mode: str, s: Summary, workers: int = 2) -> StepResult:
    return StepResult("pure_python", mode, workers, success=True, summary=s)


def workload_report(*steps: StepResult, gil: bool = True, nice: object = 0) -> WorkloadReport:
    baseline = step("sequential", summary(1.0, None, 1.0, workers=1), workers=1)
    spec = ProbeSpec("pure_python", ("sequential", "threads", "processes"), (2,), nice=nice)  # type: ignore[arg-type]
    return WorkloadReport(Interpreter("test", "/usr/bin/python3"), spec, identity(gil), 100, 0.005,
                          [baseline, *steps])


def verdict_of(s: StepResult, gil: bool = True, host: HostCpus = TWO_CORES) -> str:
    return verdicts.mode_verdict(s, workload_report(s, gil=gil), host.usable)


def test_gil_threads_get_no_parallel_speedup_from_cpu_time_even_when_the_wall_clock_says_more():
    # A slow baseline window made the wall-clock ratio read 1.45; the CPU time says one core.
    text = verdict_of(step("threads", summary(1.45, (1.1, 1.9), cores=1.02)))
    assert text.startswith("threads: no parallel speedup ×1.45 (1.10–1.90) — GIL enabled")


def test_a_speedup_interval_below_the_threshold_is_no_parallel_speedup():
    assert verdict_of(step("asyncio", summary(1.0, (0.95, 1.05), cores=0.2))).startswith(
        "asyncio: no parallel speedup ×1.00 (0.95–1.05) — one event loop")


def test_free_threaded_threads_on_one_core_with_idle_cores_are_serialised():
    text = verdict_of(step("threads", summary(1.0, (0.9, 1.1), cores=1.0)), gil=False)
    assert text.startswith("threads: no parallel speedup") and "the threads took turns" in text
    assert "contention" not in text


def test_free_threaded_threads_on_busy_cores_without_speedup_are_contention_not_serialisation():
    # ftscalingbench's mult_constant on 3.13t: both cores busy, each at 40 % of one thread's speed.
    text = verdict_of(step("threads", summary(0.8, (0.75, 0.85), cores=1.98, rate=0.4)), gil=False)
    assert text.startswith("threads: no parallel speedup ×0.80 (0.75–0.85) — contention")
    assert "each at 40 % of one worker's speed" in text and "shared objects" in text
    assert "took turns" not in text and "one at a time" not in text


def test_no_speedup_on_a_host_full_of_other_work_blames_the_other_work():
    text = verdict_of(step("processes", summary(1.05, (0.9, 1.2), cores=1.05, other=1.0)))
    assert "other processes used 1.0 cores during the run" in text and "one at a time" not in text


def test_partial_speedup_names_busy_cores_their_rate_and_the_other_load():
    text = verdict_of(step("processes", summary(1.41, (1.35, 1.47), cores=1.95, rate=0.72, other=0.8)))
    assert text == ("processes: partial speedup ×1.41 (1.35–1.47) of ×2 possible — 1.95 cores busy, "
                    "each at 72 % of one worker's speed; contention: the workers slowed each other down "
                    "(usually shared caches, memory bandwidth, SMT siblings or the CPU's frequency); "
                    "other processes used 0.8 cores during the run")


def test_partial_speedup_with_idle_cores_is_serialisation():
    text = verdict_of(step("threads", summary(1.4, (1.3, 1.5), cores=1.4)), gil=False)
    assert text.startswith("threads: partial speedup") and "serialised: the threads took turns" in text


def test_a_cpu_quota_below_the_workers_is_named():
    quota = HostCpus(logical=4, physical=4, affinity=4, quota=1.5)
    s = step("processes", summary(1.15, (1.12, 1.25), cores=1.45, rate=0.79), workers=2)
    text = verdict_of(s, host=quota)
    assert text.startswith("processes: uncertain ×1.15 (1.12–1.25) of ×1.5 possible")
    assert "only 1.5 usable cores" in text
    one_core = HostCpus(logical=4, physical=4, affinity=1, quota=None)
    s = step("processes", summary(1.0, (0.95, 1.05), cores=0.98), workers=2)
    assert verdict_of(s, host=one_core).startswith(
        "processes: no parallel speedup ×1.00 (0.95–1.05) — only 1 usable cores (CPU affinity or quota)")


def test_start_up_cost_is_named_when_it_rivals_the_work():
    text = verdict_of(step("processes", summary(1.3, (1.2, 1.4), cores=1.5, startup_seconds=0.6)))
    assert "start-up 0.60 s per pool" in text


def test_the_leading_word_follows_the_interval_and_says_uncertain_where_it_spans_a_threshold():
    assert verdict_of(step("processes", summary(1.9, (1.85, 1.95), cores=1.96))).startswith(
        "processes: scales ×1.90 (1.85–1.95) (ideal ×2)")
    assert verdict_of(step("processes", summary(1.45, (1.35, 1.55), cores=1.9))).startswith(
        "processes: partial speedup ×1.45 (1.35–1.55) of ×2 possible")
    # Near-identical figures on either side of a threshold get the same word, not two.
    for estimate in (1.57, 1.60):
        text = verdict_of(step("processes", summary(estimate, (estimate - 0.15, estimate + 0.15), cores=1.9)))
        assert text.startswith(f"processes: uncertain ×{estimate:.2f}"), text
    # A wide interval is uncertain whatever the estimate; the CPU time stays in the causes.
    assert verdict_of(step("threads", summary(1.7, (1.2, 2.4), cores=1.3)), gil=False).startswith(
        "threads: uncertain ×1.70 (1.20–2.40)")


def test_an_estimate_below_one_is_never_called_a_speedup():
    text = verdict_of(step("threads", summary(0.89, (0.60, 1.32), cores=1.9, rate=0.47)), gil=False)
    assert text.startswith("threads: uncertain ×0.89 (0.60–1.32)") and "partial speedup" not in text
    assert verdict_of(step("threads", summary(0.89, (0.60, 1.20), cores=1.9, rate=0.47)), gil=False).startswith(
        "threads: no parallel speedup ×0.89")


def test_unsteady_step_shows_no_figure_in_verdict_table_or_json():
    reason = "speedup ×2.30 (2.20–2.40) exceeds the 2 cores CPU-bound work can use"
    s = step("processes", summary(2.3, (2.2, 2.4), cores=1.9, unsteady=reason))
    assert verdict_of(s) == f"processes: unsteady — {reason}"
    assert "unsteady" in report.step_row(s)[report.COLUMNS.index("speedup")] and "2.30" not in report.step_row(s)[report.COLUMNS.index("speedup")]
    document = results_document.to_json(results_document.build([workload_report(s)], TWO_CORES))
    result = document["results"][1]
    assert result["unsteady"] is True and result["unsteady_reason"] == reason
    assert result["speedup"] is None and result["speedup_ci"] is None and result["efficiency"] is None
    assert result["pair_speedups"] == [2.3, 2.3, 2.3] and result["cores_used"] == 1.9


def test_json_carries_interval_pairs_rate_interference_steal_and_nice():
    s = step("processes", summary(1.91, (1.86, 1.95), cores=1.96, rate=0.97, other=0.12, steal_ratio=None))
    document = json.loads(json.dumps(results_document.to_json(results_document.build([workload_report(s, nice="idle")], TWO_CORES))))
    result = document["results"][1]
    assert result["speedup_ci"] == [1.86, 1.95] and result["pair_speedups"] == [1.91] * 3
    assert result["cpu_rate_ratio"] == 0.97 and result["interference_cores"] == 0.12
    assert result["steal_ratio"] is None and result["unsteady"] is False and result["unsteady_reason"] is None
    assert result["conclusive"] is True and result["pairs"] == 0 and result["remeasured_reason"] is None
    assert document["nice"] == "idle"
    assert document["results"][0]["speedup_ci"] is None  # the baseline has no interval


def test_inconclusive_step_says_cannot_tell_and_shows_no_figure():
    reason = "other processes used 1.0 cores, leaving 1.0 of 2 cores where the workers needed 2"
    s = step("processes", summary(1.02, (0.95, 1.1), cores=1.0, other=1.0, inconclusive_reason=reason))
    assert verdict_of(s) == f"processes: cannot tell — {reason}; 1.00 cores busy"
    assert "cannot tell" in report.step_row(s)[report.COLUMNS.index("speedup")] and "1.02" not in report.step_row(s)[report.COLUMNS.index("speedup")]
    result = results_document.to_json(results_document.build([workload_report(s)], TWO_CORES))["results"][1]
    assert result["conclusive"] is False and result["inconclusive_reason"] == reason
    assert result["speedup"] is None and result["efficiency"] is None and result["pair_speedups"] == [1.02] * 3


def test_speedup_cell_shows_the_interval():
    s = step("processes", summary(1.91, (1.86, 1.95), cores=1.96))
    assert report.step_row(s)[report.COLUMNS.index("speedup")] == "×1.91 (1.86–1.95)"


def test_core_bars_shade_the_other_processes_share():
    quiet = step("processes", summary(1.9, (1.85, 1.95), cores=1.96, other=0.0))
    busy = step("processes", summary(1.2, (1.1, 1.3), cores=1.0, other=1.0))
    console = Console(width=120, record=True)
    console.print(report.core_bars(workload_report(quiet), 120))
    assert "▓" not in console.export_text().split("\n", 1)[1]
    console = Console(width=120, record=True)
    console.print(report.core_bars(workload_report(busy), 120))
    processes_line = [line for line in console.export_text().splitlines() if "processes" in line][0]
    # Both CPUs fully busy, half of it other processes: half of each bar is shaded.
    assert processes_line.count("▓") == processes_line.count("█")


def test_report_states_the_probe_priority():
    console = Console(width=200, record=True)
    report.render([workload_report(nice=10)], TWO_CORES, console)
    text = console.export_text()
    assert "nice 10" in text and "what the host leaves over" in text
    console = Console(width=200, record=True)
    report.render([replace(workload_report(), spec=ProbeSpec("pure_python", ("sequential",), (2,)))],
                  TWO_CORES, console)
    assert "Probe priority: nice 0" in console.export_text()


# --- a busy host: the kernel's accounting answers where the wall clock cannot -----------------


def busy(runnable: float, ci: tuple[float, float], rate: float, idle: float, on_cpu: float = 0.7) -> Summary:
    """A step the host left too few free cores for, with the kernel's accounting of it."""
    from exporter.stats.measurement import Accounting

    accounting = Accounting(runnable, ci, on_cpu, idle, (idle * 0.95, idle * 1.05), [idle] * 3)
    return summary(idle, None, cores=on_cpu, rate=rate, other=1.3, rate_ci=(rate * 0.97, rate * 1.03),
                   inconclusive_reason="other processes used 1.3 cores, leaving 0.7 of 2 cores",
                   accounting=accounting)


def test_a_busy_host_still_says_what_the_runtime_did():
    serial = step("threads", busy(1.02, (0.99, 1.05), rate=0.98, idle=1.0))
    assert verdict_of(serial) == ("threads: serialised — GIL enabled; 1.0 (1.0–1.1) worker ran at a time while "
                                  "other processes used 1.3 cores; on an idle host ×1.00 (0.95–1.05)")
    both = step("processes", busy(1.99, (1.97, 2.00), rate=0.99, idle=1.97))
    assert verdict_of(both).startswith("processes: parallel — 2.0 (2.0–2.0) workers at once; the host gave them "
                                       "0.7 cores while other processes used 1.3 cores; on an idle host ×1.97")
    contended = step("threads", busy(1.96, (1.90, 1.99), rate=0.45, idle=0.88))
    assert verdict_of(contended, gil=False).startswith("threads: contention — 2.0 (1.9–2.0) workers at once, "
                                                       "each at 45 % of one worker's speed")


def test_parallelism_is_classified_from_the_accounting_and_says_uncertain_on_a_threshold():
    report = workload_report(step("threads", busy(1.02, (0.99, 1.05), rate=0.98, idle=1.0)))
    cases = {(1.02, (0.99, 1.05), 0.98): "serialised", (1.99, (1.97, 2.00), 0.99): "parallel",
             (1.95, (1.90, 1.99), 0.45): "contention", (1.45, (1.35, 1.55), 0.95): "contention",
             (1.25, (1.10, 1.40), 0.95): "uncertain"}
    for (runnable, ci, rate), expected in cases.items():
        s = step("threads", busy(runnable, ci, rate=rate, idle=runnable * rate))
        assert verdicts.parallelism(s, report, 2.0) == expected, (runnable, ci, rate)
    asyncio = step("asyncio", busy(1.0, (0.99, 1.0), rate=1.0, idle=1.0))
    assert verdicts.parallelism(asyncio, report, 2.0) == "serialised"


def test_under_a_one_cpu_quota_processes_read_parallel_with_the_quota_named_not_unsteady():
    one_cpu = HostCpus(logical=2, physical=2, affinity=2, quota=1.0)
    from exporter.stats.measurement import Accounting

    accounting = Accounting(1.99, (1.97, 2.0), 1.0, 1.0, (0.97, 1.0), [1.0] * 4)
    for summary_ in (summary(1.06, (1.02, 1.10), cores=1.0, unsteady="speedup ×1.06 exceeds the 1 cores",
                             accounting=accounting),
                     summary(1.0, (0.97, 1.02), cores=1.0, accounting=accounting)):
        text = verdict_of(step("processes", summary_), host=one_cpu)
        assert text.startswith("processes: parallel — 2.0 (2.0–2.0) workers at once; the CPU limit (quota or "
                               "affinity) gave them 1.0 cores; on an idle host ×1.00"), text


def test_the_workload_line_says_the_other_load_once_not_in_every_mode():
    threads = step("threads", busy(1.02, (0.99, 1.05), rate=0.98, idle=1.0))
    processes = step("processes", busy(1.99, (1.97, 2.00), rate=0.99, idle=1.97))
    processes.summary = replace(processes.summary, interference_cores=1.1)
    line = verdicts.verdict(workload_report(threads, processes), TWO_CORES.usable)
    assert line.count("other processes used") == 1, line
    assert line == ("pure_python: threads: serialised — GIL enabled; 1.0 (1.0–1.1) worker ran at a time; on an idle "
                    "host ×1.00 (0.95–1.05); processes: parallel — 2.0 (2.0–2.0) workers at once; the host gave them "
                    "0.7 cores; on an idle host ×1.97 (1.87–2.07) (other processes used 1.1–1.3 cores during these "
                    "steps)")
    # Each step's own verdict (the status page's rows, the JSON) still says it.
    assert "while other processes used 1.3 cores" in verdicts.mode_verdict(threads, workload_report(threads), 2.0)


def test_one_step_keeps_its_other_load_in_the_workload_line():
    processes = step("processes", summary(1.41, (1.35, 1.47), cores=1.95, rate=0.72, other=0.8))
    line = verdicts.verdict(workload_report(processes), TWO_CORES.usable)
    assert "other processes used 0.8 cores during the run" in line and "during these steps" not in line


def test_a_workload_that_waits_overlaps_waiting_it_does_not_scale():
    sleeping = step("threads", summary(2.0, (1.95, 2.05), cores=0.01, rate=None))
    assert not sleeping.summary.cpu_bound
    assert verdict_of(sleeping) == "threads: overlaps waiting ×2.00 (1.95–2.05) (ideal ×2)"


def test_the_legend_under_each_table_is_left_aligned():
    console = Console(width=80, record=True)
    report.render([workload_report(step("threads", summary(1.0, (0.95, 1.05), cores=1.0)))], TWO_CORES, console)
    lines = console.export_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("N workers"))
    end = next(i for i, line in enumerate(lines) if line.startswith("per-core"))
    # Every line of the legend starts at the left edge (centred, the wrapped lines would not).
    assert start < end and all(not line.startswith(" ") for line in lines[start:end]), lines
