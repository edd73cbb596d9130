"""Verdicts: what a step's figures say, in words scripts can rely on.

The leading words (``no parallel speedup``, ``scales``, ``overlaps waiting`` for a workload
that waits rather than computes, ``partial speedup``, ``cannot tell``, ``unsteady``) stay
stable; the rest names the evidence and where a shortfall went — the cores busy and their
rate (contention) or idle (serialisation: the GIL, one event loop, a lock), other processes,
steal, a CPU quota, start-up. The thresholds are shared with the alert rules
(dashboards/mixin_config.py reads them here), so the report, the status page and the alerts
agree on what "not parallel" means.
"""

from __future__ import annotations

from typing import Optional

from exporter.stats.measurement import Summary, interval_text
from exporter.runner.modes import ALL_MODES, SEQUENTIAL
from exporter.model.results import StepResult, WorkloadReport

SCALES_FRACTION = 0.8  # a speedup within 80 % of the possible one "scales"
# Below this a parallel mode gave no useful speedup, or its CPU-bound workers kept no more
# cores busy than this: they did not run in parallel (GIL threads read 1.0). The alert
# rules' serial_cores_max is this same figure.
NOT_PARALLEL = 1.25
SERIALISED_SHORTFALL = 0.5  # cores below the possible ones that mean the workers took turns
CONTENTION_RATE = 0.9  # work per CPU-second below this share of one worker's: the workers slow each other
FREE_CORES = 0.5  # idle capacity left by probe and neighbours that the runtime could have used
NOTABLE_INTERFERENCE = 0.1  # cores of other load worth naming in a verdict
NOTABLE_STEAL = 0.05
NOTABLE_STARTUP = 0.25  # start-up over the timed window's wall time


def speedup_text(summary: Summary) -> str:
    """``×1.91 (1.86–1.95)``: the estimate and its 95 % interval, when there is one."""
    return interval_text(summary.speedup, summary.speedup_ci)


def serialisation_cause(step: StepResult, report: WorkloadReport) -> str:
    """Why workers that left cores idle took turns, by mode and by whether the GIL was on."""
    gil_enabled = report.identity is not None and report.identity.gil_enabled
    return ALL_MODES[step.mode].serialisation_cause(gil_enabled)


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


def other_load(summary: Summary) -> str:
    """The host's other load during a step, as every verdict words it."""
    return other_cores(f"{(summary.interference_cores or 0.0):.1f}")


def other_cores(cores: str) -> str:
    return f"other processes used {cores} cores"


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
        causes.append(f"{other_load(s)} during the run")
    if (s.steal_ratio or 0.0) >= NOTABLE_STEAL:
        causes.append(f"the hypervisor stole {s.steal_ratio:.0%} of the CPU time")
    if possible < step.workers:
        causes.append(f"only {usable:g} usable cores (CPU affinity or quota)")
    if s.wall_seconds > 0 and s.startup_seconds >= NOTABLE_STARTUP * s.wall_seconds:
        causes.append(f"start-up {s.startup_seconds:.2f} s per pool on top of {s.wall_seconds:.2f} s of work")
    return causes


# --- what the runtime did: from the kernel's accounting, whatever the host's load ----------

PARALLEL, SERIALISED, CONTENTION, UNCERTAIN = "parallel", "serialised", "contention", "uncertain"


def possible_at_once(step: StepResult) -> float:
    """The workers a mode can run at once by design (one event loop: 1)."""
    limit = ALL_MODES[step.mode].max_cores
    return float(step.workers) if limit is None else min(float(step.workers), limit)


def parallelism(step: StepResult, report: WorkloadReport, usable: float) -> Optional[str]:
    """``parallel``, ``serialised``, ``contention`` or ``uncertain`` (the evidence sits on a
    threshold): what the runtime let the workers do; None where nothing can say (a failed
    step, a workload that waits rather than computes, no accounting and no conclusive figure).

    The kernel's accounting decides when there is one: workers runnable at once and their work
    per CPU-second do not depend on free cores. Without it, the conclusive wall-clock figures.
    """
    s = step.summary
    if s is None or step.workers < 2 or not s.cpu_bound:
        return None
    a = s.accounting
    if a is not None:
        low, high = a.runnable_ci or (a.runnable, a.runnable)
        rate_low, rate_high = s.rate_ci or (s.cpu_rate_ratio or 1.0,) * 2
    elif s.conclusive and not s.unsteady:
        low = high = s.cores_used
        rate_low, rate_high = s.rate_ci or (s.cpu_rate_ratio or 1.0,) * 2
    else:
        return None
    together = SCALES_FRACTION * min(possible_at_once(step), float("inf") if a is not None else usable)
    if high < NOT_PARALLEL or possible_at_once(step) < NOT_PARALLEL:
        return SERIALISED
    if low >= together:
        if rate_low >= CONTENTION_RATE:
            return PARALLEL
        return CONTENTION if rate_high < CONTENTION_RATE else UNCERTAIN
    if low >= NOT_PARALLEL and high < together:
        return CONTENTION  # more than one at a time, fewer than all: they waited on each other
    return UNCERTAIN


def interval_words(low: float, high: float, estimate: float, good: float) -> str:
    """The leading words a speedup's interval allows: one word when it lies on one side of
    each threshold, ``uncertain`` when it straddles one (near-identical figures never get
    different words), and never a speedup for an estimate below 1."""
    if high < NOT_PARALLEL:
        return "no parallel speedup"
    if low >= good and estimate >= 1:
        return "scales"
    if low >= NOT_PARALLEL and high < good:
        return "partial speedup"
    return "uncertain"


def accounting_verdict(step: StepResult, report: WorkloadReport, usable: float) -> Optional[str]:
    """A busy host's verdict: what the runtime did, the cores the host gave, the idle-host speedup."""
    s = step.summary
    assert s is not None
    a, kind = s.accounting, parallelism(step, report, usable)
    if a is None or kind is None:
        return None
    at_once = f"{a.runnable:.1f}" + (f" ({a.runnable_ci[0]:.1f}–{a.runnable_ci[1]:.1f})" if a.runnable_ci else "")
    idle = (f"; on an idle host {interval_text(a.idle_speedup, a.idle_speedup_ci)}"
            if a.idle_speedup is not None else "")
    other = other_load(s)
    if kind == SERIALISED:
        return (f"{step.mode}: serialised — {serialisation_cause(step, report)}; {at_once} worker ran at a time "
                f"while {other}{idle}")
    if kind == PARALLEL:
        gave = (f"the CPU limit (quota or affinity) gave them {a.on_cpu:.1f} cores" if usable < step.workers
                else f"the host gave them {a.on_cpu:.1f} cores while {other}")
        return f"{step.mode}: parallel — {at_once} workers at once; {gave}{idle}"
    if kind == CONTENTION:
        rate = f", each at {s.cpu_rate_ratio * 100:.0f} % of one worker's speed" if s.cpu_rate_ratio else ""
        usual = contention_cause(step, report).split(" (", 1)[1].rstrip(")")
        return f"{step.mode}: contention — {at_once} workers at once{rate} ({usual}){idle}"
    return (f"{step.mode}: uncertain — {at_once} workers at once, between serialised and parallel; "
            f"{other}{idle}")


def mode_verdict(step: StepResult, report: WorkloadReport, usable: float) -> str:
    """Leading words scripts read. With a conclusive wall-clock figure: ``no parallel
    speedup``, ``scales``, ``partial speedup`` or ``uncertain`` (its interval straddles a
    threshold); where the host left too few free cores, what the kernel's accounting says:
    ``parallel``, ``serialised``, ``contention`` or ``uncertain``; ``cannot tell`` where
    neither can say, ``unsteady`` (withheld). Then the evidence and the cause."""
    if not step.available:
        return f"{step.mode}: unavailable"
    if step.summary is None:
        return f"{step.mode}: failed ({step.reason})"
    s = step.summary
    # The wall clock cannot show the runtime's parallelism where the host took the cores, or
    # a CPU limit allows fewer than the workers: there the kernel's accounting answers.
    capped = usable < step.workers and parallelism(step, report, usable) == PARALLEL
    if s.unsteady or not s.conclusive or capped:
        said = accounting_verdict(step, report, usable)
        if said is not None:
            return said
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
    if step.workers > 1 and (high < NOT_PARALLEL or (cpu_bound and s.cores_used < NOT_PARALLEL)):
        if cpu_bound and not cores_idle(s, possible) and s.cores_used >= NOT_PARALLEL:
            cause = contention_cause(step, report)
        elif free_cores(s, usable) < FREE_CORES and (s.interference_cores or 0.0) >= NOTABLE_INTERFERENCE:
            # No core stood idle: the host, not the runtime, kept the workers from running.
            cause = f"{other_load(s)} during the run"
        elif possible < step.workers and possible < NOT_PARALLEL:
            cause = f"only {usable:g} usable cores (CPU affinity or quota)"
        else:
            cause = serialisation_cause(step, report)
        return f"{step.mode}: no parallel speedup {shown} — {cause}; {s.cores_used:.2f} cores busy"
    words = interval_words(low, high, s.speedup, SCALES_FRACTION * possible)
    if words == "scales" and not cpu_bound:  # waits that overlap: no core computes in parallel
        return f"{step.mode}: overlaps waiting {shown} (ideal ×{step.workers})"
    if words == "scales":
        return f"{step.mode}: scales {shown} (ideal ×{step.workers})"
    causes = shortfall_causes(step, report, usable, possible)
    if words == "partial speedup":
        return f"{step.mode}: partial speedup {shown} of ×{possible:g} possible — " + "; ".join(causes)
    return f"{step.mode}: uncertain {shown} of ×{possible:g} possible (the interval spans a threshold) — " + \
        "; ".join(causes)


def step_verdicts(report: WorkloadReport, usable: float) -> dict[tuple[str, int], str]:
    """(mode, workers) -> what each parallel step's figures say."""
    return {(s.mode, s.workers): mode_verdict(s, report, usable) for s in report.steps if s.mode != SEQUENTIAL}


def workload_verdict(report: WorkloadReport, said: dict[tuple[str, int], str]) -> str:
    """One line per workload from its steps' verdicts (``step_verdicts``), the host's other
    load said once at the end where several steps name it."""
    sequential = report.sequential
    if not sequential.success:
        return f"{report.spec.workload}: failed — {sequential.message}"
    texts, loads = dict(said), []
    for step in report.steps:
        text = texts.get((step.mode, step.workers))
        if text is not None and step.summary is not None:
            shorter = without_other_load(text, other_load(step.summary))
            if shorter != text:
                texts[(step.mode, step.workers)] = shorter
                loads.append(step.summary.interference_cores or 0.0)
    if len(loads) < 2:
        return f"{report.spec.workload}: " + "; ".join(said.values())
    low, high = f"{min(loads):.1f}", f"{max(loads):.1f}"
    load = other_cores(low if low == high else f"{low}–{high}")
    return f"{report.spec.workload}: " + "; ".join(texts.values()) + f" ({load} during these steps)"


def without_other_load(text: str, load: str) -> str:
    """A step's verdict without its clause on the other load (``other_load``), where that
    clause adds to the verdict rather than being its cause."""
    for clause in (f"; {load} during the run", f" while {load}"):
        text = text.replace(clause, "")
    return text.removesuffix(f"; {load}").replace(f"; {load};", ";")


def verdict(report: WorkloadReport, usable: float) -> str:
    """One line per workload: how each parallel mode did against what the host allows."""
    return workload_verdict(report, step_verdicts(report, usable))
