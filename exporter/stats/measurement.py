"""Measurement arithmetic: speedup and its interval, efficiency, host interference, steal.

Every derived figure the exporter reports is computed here, from the raw timings the runner
stamped inside its workers and the kernel's per-CPU counters, so the formulas live in one
place and are tested on constructed numbers. Standard library only: the runner imports this
module too (it decides from the pairs when a step is precise and plausible enough).

A step's speedup comes from independent *pairs*: each pair is one window of a single worker
of the step's own pool (the baseline, run where the workers run) and one window of all N
workers, and no window belongs to two pairs. docs/measurement.md explains the design.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Tuple, TypeGuard

# Kernel CPU-time fields that are not busy time; guest time is already counted in user/nice.
IDLE_FIELDS = ("idle", "iowait")
DOUBLE_COUNTED_FIELDS = ("guest", "guest_nice")
STEAL_FIELD = "steal"
# A step's work is CPU-bound when its workers want a CPU — on one or waiting for one, the
# kernel's accounting — at least this share of the time (sleeping workers almost never do,
# whatever the host's load). Without the accounting: a unit's CPU seconds over the window's
# wall seconds, which other load lowers, so that proxy holds only down to a quarter of a core
# for each worker. Only CPU-bound work is capped by the usable cores.
CPU_BOUND_SHARE = 0.25
# The variance between probes that one probe's pairs cannot see (the host's state minutes
# apart, a new runner process), as a standard deviation of the log speedup. It is added to
# the pairs' own standard error, so an interval also holds the next probe's figure; measured
# by benchmarks/gate.py on an idle 2-vCPU VM at 0-0.008 per cell; 0.012 is above all of them
# (docs/measurement.md, "How well it works").
BETWEEN_PROBE_SD = 0.012
# Contended code can settle into different regimes from one probe to the next (×1.2 and ×0.63
# for the same free-threaded workload): a constant cannot cover that, a step's own history
# can. With at least this many earlier figures the allowance is their spread (never less
# than BETWEEN_PROBE_SD), from at most LEARNED_FROM of the latest.
MIN_FIGURES_TO_LEARN = 5
LEARNED_FROM = 20
# A step's figure can show the parallelism only when the cores free for it (usable, less
# steal, less other processes' load) are about what its workers can use: other load may take
# this share of the needed cores (at least FREE_CORES_MIN_SLACK cores: counter tick noise).
FREE_CORES_SLACK = 0.1
FREE_CORES_MIN_SLACK = 0.15
# Work per CPU-second cannot be higher with N workers than with one for CPU-bound code
# (shared caches, turbo and memory bandwidth only lower it): a rate above 1 whose interval
# clears this much means the baseline window was not comparable.
RATE_SLACK = 0.01
NORMAL_975 = 1.959964
# Two-sided 95 % quantiles of Student's t by degrees of freedom (beyond 30: the normal 1.96
# plus the usual 2.4/df correction, good to 0.005).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
         16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
         23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042}


def finite_number(value: object) -> TypeGuard[float]:
    """A real number a figure can be: int or float, not a bool, not NaN or infinite. Every
    reader of figures from outside (the runner's events, documents, the history file) asks
    this one question."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def speedup(sequential_seconds: float, parallel_seconds: float, workers: int) -> float:
    """Weak-scaling speedup T1·N/TN: N workers each did the unit one worker did in T1."""
    return sequential_seconds * workers / parallel_seconds


def efficiency(speedup_ratio: float, workers: int) -> float:
    """Parallel efficiency: speedup per worker, 1.0 is perfect scaling."""
    return speedup_ratio / workers


def serial_fraction(speedup_ratio: float, workers: int) -> Optional[float]:
    """Karp–Flatt experimentally determined serial fraction; undefined for one worker."""
    if workers < 2 or speedup_ratio <= 0:
        return None
    return (1 / speedup_ratio - 1 / workers) / (1 - 1 / workers)


def relative_spread(values: Sequence[float]) -> float:
    """(max - min) / median: how far the repeats disagree, as a fraction of the median."""
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else 0.0


def busy_fractions(before: Sequence[Mapping[str, float]],
                   after: Sequence[Mapping[str, float]]) -> list[float]:
    """Busy fraction of each CPU between two readings of its cumulative CPU-time fields."""
    fractions = []
    for start, end in zip(before, after):
        delta = {name: end[name] - start[name] for name in end if name in start}
        total = sum(v for k, v in delta.items() if k not in DOUBLE_COUNTED_FIELDS)
        idle = sum(delta.get(k, 0.0) for k in IDLE_FIELDS)
        fractions.append(min(1.0, max(0.0, (total - idle) / total)) if total > 0 else 0.0)
    return fractions


@dataclass(frozen=True)
class HostLoad:
    """What the whole host did during one timed window, besides the probe."""

    interference_cores: float  # CPU used by other processes, in cores
    steal_ratio: Optional[float]  # share of CPU time the hypervisor gave to others; None: not reported


def host_load(before: Sequence[Mapping[str, float]], after: Sequence[Mapping[str, float]],
              wall_seconds: float, probe_cpu_seconds: float) -> HostLoad:
    """Other processes' CPU and the steal share from two readings of the per-CPU counters.

    Busy time is every field but idle, iowait, steal and the guest fields (already counted
    in user/nice); the probe's own process tree's CPU seconds over the same interval are
    taken off, and the rest, over the window's wall seconds, is the other load in cores.
    Counters tick at 10 ms, so a quiet host reads a few hundredths of a core either way;
    a negative remainder is that tick noise and reads as 0.
    """
    busy = steal = total = 0.0
    reported_steal = False
    for start, end in zip(before, after):
        delta = {name: end[name] - start[name] for name in end if name in start}
        cpu_total = sum(v for k, v in delta.items() if k not in DOUBLE_COUNTED_FIELDS)
        cpu_steal = delta.get(STEAL_FIELD, 0.0)
        reported_steal = reported_steal or STEAL_FIELD in delta
        total += cpu_total
        steal += cpu_steal
        busy += cpu_total - sum(delta.get(k, 0.0) for k in IDLE_FIELDS) - cpu_steal
    other = max(0.0, busy - probe_cpu_seconds) / wall_seconds if wall_seconds > 0 else 0.0
    steal_ratio = (steal / total if total > 0 else 0.0) if reported_steal else None
    return HostLoad(other, steal_ratio)


# A window's role: the sequential step's unit, one worker of a parallel step's pool alone
# (the baseline), or all of its workers.
SEQUENTIAL_ROLE, BASELINE, PARALLEL = ROLES = ("sequential", "baseline", "parallel")


@dataclass(frozen=True)
class Window:
    """One timed window: every worker's own start, end and CPU seconds, and the host's load.

    ``role`` says what the window measured: ``baseline`` (one worker of a parallel step's own
    pool), ``parallel`` (all of its workers) or ``sequential`` (the sequential step's unit);
    ``pair`` joins a baseline window to its parallel window, and ``attempt`` counts how often
    the step was measured from scratch (only the last attempt's windows make its figures).
    """

    starts: Sequence[float]
    ends: Sequence[float]
    cpu_seconds: Sequence[float]
    startup_seconds: float
    core_utilisation: Sequence[float] = ()
    index: int = -1
    interference_cores: Optional[float] = None
    steal_ratio: Optional[float] = None
    role: str = PARALLEL
    pair: int = -1
    attempt: int = 0
    clean: bool = True  # the host left the window the cores it needed (see window_had_free_cores)
    # The kernel's accounting from the release to the first worker's end: workers runnable (on
    # a CPU or waiting for one) and workers on a CPU, on average; None where it keeps none.
    runnable_workers: Optional[float] = None
    on_cpu_workers: Optional[float] = None

    @property
    def wall_seconds(self) -> float:
        """From the first worker's start to the last worker's end."""
        return max(self.ends) - min(self.starts)

    @property
    def cores_used(self) -> float:
        """CPU seconds of all workers over wall seconds: ~1 for GIL threads, ~N for processes."""
        return sum(self.cpu_seconds) / self.wall_seconds

    @property
    def demand_share(self) -> float:
        """The share of the time each worker wanted a CPU: runnable workers per worker from the
        kernel's accounting, else CPU seconds per worker over wall seconds."""
        workers = len(self.cpu_seconds)
        if self.runnable_workers is not None:
            return self.runnable_workers / workers
        return sum(self.cpu_seconds) / (self.wall_seconds * workers) if self.wall_seconds > 0 else 0.0


@dataclass(frozen=True)
class Pair:
    """One baseline window (a single worker) and one parallel window (N workers) of a step."""

    baseline: Window
    window: Window

    def speedup(self, workers: int) -> float:
        return speedup(self.baseline.wall_seconds, self.window.wall_seconds, workers)

    def cpu_share(self, workers: int) -> float:
        """How much of the time the workers wanted a CPU: from the kernel's accounting of the
        parallel window, else its CPU seconds per unit over the baseline's wall seconds per unit."""
        if self.window.runnable_workers is not None:
            return self.window.demand_share
        return sum(self.window.cpu_seconds) / workers / self.baseline.wall_seconds

    def cpu_rate_ratio(self, workers: int) -> Optional[float]:
        """Work per CPU-second in the parallel window over the baseline's (N units against one)."""
        spent, alone = sum(self.window.cpu_seconds), sum(self.baseline.cpu_seconds)
        if spent <= 0 or alone <= 0:
            return None
        return workers * alone / spent

    def idle_speedup(self, workers: int, cores: float) -> Optional[float]:
        """The speedup this pair would show on an idle host: the workers the runtime let run at
        once (at most the ``cores`` they could have) times their work per CPU-second. On an
        idle host runnable workers are the cores used, so this is cores × rate, which is the
        wall-clock speedup; on a busy host neither factor waits for free cores."""
        rate = self.cpu_rate_ratio(workers)
        runnable = self.window.runnable_workers
        if rate is None or runnable is None:
            return None
        return min(runnable, cores) * rate


def last_attempt(windows: Sequence[Window]) -> list[Window]:
    """The windows of the step's last measurement attempt (earlier ones were discarded)."""
    if not windows:
        return []
    attempt = max(w.attempt for w in windows)
    return [w for w in windows if w.attempt == attempt]


def pair_windows(windows: Sequence[Window], clean_only: bool = True) -> list[Pair]:
    """Join each parallel window to the baseline window of its own pair (last attempt only);
    by default only the pairs whose two windows had the cores they needed.

    No window serves two pairs, so the pairs' speedups are independent values.
    """
    current = last_attempt(windows)
    baselines = {w.pair: w for w in current if w.role == BASELINE}
    pairs = [Pair(baselines[w.pair], w) for w in sorted(current, key=lambda w: w.pair)
             if w.role == PARALLEL and w.pair in baselines]
    return [p for p in pairs if p.baseline.clean and p.window.clean] if clean_only else pairs


def between_probe_sd(earlier: Sequence[float]) -> float:
    """The variance between probes a step's own earlier figures show, as a standard deviation
    of the log figure; the constant allowance until there are enough of them."""
    recent = [math.log(v) for v in earlier[-LEARNED_FROM:] if v > 0]
    if len(recent) < MIN_FIGURES_TO_LEARN:
        return BETWEEN_PROBE_SD
    return max(BETWEEN_PROBE_SD, statistics.stdev(recent))


def t_quantile(degrees_of_freedom: int) -> float:
    """The 97.5 % quantile of Student's t (a two-sided 95 % interval)."""
    if degrees_of_freedom in T_975:
        return T_975[degrees_of_freedom]
    return 1.96 + 2.4 / degrees_of_freedom


def ratio_estimate(values: Sequence[float], between_probe_sd: float = BETWEEN_PROBE_SD
                   ) -> Tuple[float, Optional[Tuple[float, float]]]:
    """Geometric mean of positive ratios and its 95 % interval (None below 2 values).

    The interval is taken on the logarithms, so it stays positive and is symmetric in ratio
    terms (×1.05 and ÷1.05 are the same distance). Its standard error adds the variance
    between probes (``between_probe_sd``) to the pairs' own, which one probe cannot observe.
    """
    logs = [math.log(v) for v in values]
    centre = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(centre), None
    # The pairs' part is estimated (Student t); the between-probe part is a known constant (normal).
    within = t_quantile(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    half = math.hypot(within, NORMAL_975 * between_probe_sd)
    return math.exp(centre), (math.exp(centre - half), math.exp(centre + half))


def relative_half_width(estimate: float, interval: Optional[Tuple[float, float]]) -> float:
    """Half the interval's width over the estimate; infinite without an interval."""
    if interval is None or estimate <= 0:
        return math.inf
    return (interval[1] - interval[0]) / 2 / estimate


def speedup_ceiling(workers: int, usable_cpus: Optional[float], cpu_bound: bool) -> float:
    """The highest speedup the step can physically reach: CPU-bound work is capped by the cores."""
    if usable_cpus is None or not cpu_bound:
        return float(workers)
    return min(float(workers), usable_cpus)


@dataclass(frozen=True)
class Assessment:
    """What a step's pairs say so far: the estimates, and whether to trust them yet."""

    workers: int
    pairs: int
    speedup: float
    interval: Optional[Tuple[float, float]]
    rate: Optional[float]
    rate_interval: Optional[Tuple[float, float]]
    cpu_bound: bool
    ceiling: float

    @property
    def half_width(self) -> float:
        return relative_half_width(self.speedup, self.interval)

    def implausible_reason(self) -> Optional[str]:
        """Why the estimate cannot be a result: CPU-bound and above what the cores allow."""
        if not self.cpu_bound or self.speedup <= self.ceiling:
            return None
        return (f"speedup {interval_text(self.speedup, self.interval)} exceeds the {self.ceiling:g} cores "
                f"CPU-bound work can use")

    def clearly_implausible(self) -> bool:
        """Even the interval's lower end is above the ceiling: more pairs will not help."""
        return self.implausible_reason() is not None and (self.interval or (self.speedup,))[0] > self.ceiling

    def baseline_reason(self) -> Optional[str]:
        """Why the baseline is not comparable: more work per CPU-second in parallel than alone."""
        if not self.cpu_bound or self.rate is None or self.rate_interval is None:
            return None
        if self.rate_interval[0] <= 1 + RATE_SLACK:
            return None
        return (f"the workers did more work per CPU-second together than one alone (rate "
                f"{interval_text(self.rate, self.rate_interval)}): the baseline windows ran slower than the "
                f"parallel ones")

    def trouble(self) -> Optional[str]:
        return self.implausible_reason() or self.baseline_reason()


def interval_text(estimate: float, interval: Optional[Tuple[float, float]]) -> str:
    """``×1.91 (1.86–1.95)``."""
    return f"×{estimate:.2f}" + (f" ({interval[0]:.2f}–{interval[1]:.2f})" if interval else "")


def mean_estimate(values: Sequence[float]) -> Tuple[float, Optional[Tuple[float, float]]]:
    """Arithmetic mean and its 95 % interval (Student t; None below 2 values): for figures
    that add up, such as workers runnable at once."""
    centre = statistics.fmean(values)
    if len(values) < 2:
        return centre, None
    half = t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return centre, (centre - half, centre + half)


@dataclass(frozen=True)
class Accounting:
    """What the kernel's per-thread accounting says of a step, whatever the host's load."""

    runnable: float  # workers the runtime let run at once, on average over the parallel windows
    runnable_ci: Optional[Tuple[float, float]]
    on_cpu: float  # workers on a CPU: the cores the host gave them
    idle_speedup: Optional[float]  # what the step would show on an idle host
    idle_speedup_ci: Optional[Tuple[float, float]]
    pair_idle_speedups: Sequence[float]


def account(pairs: Sequence[Pair], workers: int, cores: float,
            between_probe_sd: float = BETWEEN_PROBE_SD) -> Optional[Accounting]:
    """The step's runnable workers and idle-host speedup from every pair, clean or not (the
    host's other load does not enter either); None without the kernel's accounting."""
    counted = [p for p in pairs if p.window.runnable_workers is not None and p.window.on_cpu_workers is not None]
    if not counted:
        return None
    runnable, runnable_ci = mean_estimate([p.window.runnable_workers or 0.0 for p in counted])
    speedups = [e for e in (p.idle_speedup(workers, cores) for p in counted) if e is not None and e > 0]
    idle, idle_ci = ratio_estimate(speedups, between_probe_sd) if speedups else (None, None)
    # What the cores cannot give, the idle host cannot show either (as the wall clock's ceiling).
    return Accounting(runnable, runnable_ci, statistics.median(p.window.on_cpu_workers or 0.0 for p in counted),
                      min(idle, cores) if idle is not None else None, clipped(idle_ci, cores), speedups)


def assess(pairs: Sequence[Pair], workers: int, usable_cpus: Optional[float],
           between_sd: float = BETWEEN_PROBE_SD) -> Assessment:
    """The speedup and rate of a step's pairs, with their intervals and physical ceiling."""
    estimate, interval = ratio_estimate([p.speedup(workers) for p in pairs], between_sd)
    rates = [r for r in (p.cpu_rate_ratio(workers) for p in pairs) if r is not None and r > 0]
    rate, rate_interval = ratio_estimate(rates, between_probe_sd=0.0) if rates else (None, None)
    cpu_bound = statistics.median(p.cpu_share(workers) for p in pairs) >= CPU_BOUND_SHARE
    return Assessment(workers, len(pairs), estimate, interval, rate, rate_interval, cpu_bound,
                      speedup_ceiling(workers, usable_cpus, cpu_bound))


def clipped(interval: Optional[Tuple[float, float]], ceiling: float) -> Optional[Tuple[float, float]]:
    """The interval without the part above the physical ceiling (no value there is possible)."""
    if interval is None:
        return None
    return (min(interval[0], ceiling), min(interval[1], ceiling))


def _median_of(values: Sequence[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


@dataclass(frozen=True)
class FreeCores:
    """The cores the host left a step during its timed windows, and whether they were enough."""

    usable: float
    other: float  # other processes' load, in cores (the busier of the two roles' medians)
    steal: float  # share of CPU time the hypervisor took
    needed: float  # cores the step's workers could use
    logical: Optional[float] = None  # the host's CPUs: other load takes from these, not from a quota

    @property
    def free(self) -> float:
        """What other load and steal left of the host, capped by the cores the probe may use."""
        host = (self.logical or self.usable) * (1 - self.steal) - self.other
        return max(0.0, min(self.usable, host))

    @property
    def enough(self) -> bool:
        return self.free >= self.needed - max(FREE_CORES_MIN_SLACK, FREE_CORES_SLACK * self.needed)

    def reason(self) -> Optional[str]:
        """None when enough cores were free; else why the step cannot tell."""
        return None if self.enough else self.account()

    def account(self) -> str:
        """What other load took and left, in words."""
        taken = f"other processes used {self.other:.1f} cores" + (
            f" and the hypervisor stole {self.steal:.0%}" if self.steal >= 0.01 else "")
        return f"{taken}, leaving {self.free:.1f} of {self.usable:g} cores where the workers needed {self.needed:g}"


def cores_needed(window: Window, usable_cpus: float, max_cores: Optional[float] = None) -> float:
    """The cores a window's workers could use: one each when they compute (even if something
    kept them from it), capped by the usable cores and the mode's own limit; none when they wait."""
    if window.wall_seconds <= 0 or window.demand_share < CPU_BOUND_SHARE:
        return 0.0
    return min(float(len(window.cpu_seconds)), usable_cpus, max_cores if max_cores is not None else usable_cpus)


def window_free_cores(window: Window, usable_cpus: float, max_cores: Optional[float] = None) -> FreeCores:
    """Whether the host left one timed window the cores its workers needed."""
    needed = cores_needed(window, usable_cpus, max_cores)
    return FreeCores(usable_cpus, window.interference_cores or 0.0, window.steal_ratio or 0.0, needed,
                     float(len(window.core_utilisation)) or None)


def free_cores(windows: Sequence[Window], usable_cpus: float, needed: float) -> FreeCores:
    """Free cores from the busier role's median other load (baseline windows need fewer)."""
    others = [_median_of([w.interference_cores for w in windows if w.role == role]) for role in ROLES]
    steals = [_median_of([w.steal_ratio for w in windows if w.role == role]) for role in ROLES]
    logical = max((len(w.core_utilisation) for w in windows), default=0)
    return FreeCores(usable_cpus, max((o for o in others if o is not None), default=0.0),
                     max((s for s in steals if s is not None), default=0.0), needed, float(logical) or None)


@dataclass(frozen=True)
class Summary:
    """The figures of one (mode, workers) step over its windows; medians unless noted."""

    wall_seconds: float
    speedup: float
    speedup_spread: float
    efficiency: float
    serial_fraction: Optional[float]
    throughput_units_per_second: float
    throughput_ops_per_second: float
    cores_used: float
    core_utilisation: list[float]
    startup_seconds: float
    speedup_ci: Optional[Tuple[float, float]] = None  # 95 % interval from the pairs, clipped at the ceiling
    pair_speedups: Sequence[float] = ()
    cpu_rate_ratio: Optional[float] = None
    interference_cores: Optional[float] = None
    steal_ratio: Optional[float] = None
    unsteady_reason: Optional[str] = None
    cpu_bound: bool = True  # the workers compute (capped by the usable cores) rather than wait
    pairs: int = 0
    rate_ci: Optional[Tuple[float, float]] = None
    inconclusive_reason: Optional[str] = None  # "cannot tell": too few free cores
    free_cores: Optional[float] = None
    remeasured_reason: Optional[str] = None  # why the runner measured the step again from scratch
    pair_rates: Sequence[float] = ()
    accounting: Optional[Accounting] = None  # the kernel's per-thread accounting (CPU-bound steps)

    @property
    def unsteady(self) -> bool:
        """The speedup is physically implausible and is not shown or exported as a result."""
        return self.unsteady_reason is not None

    @property
    def conclusive(self) -> bool:
        """The host left the step enough free cores to show the parallelism it measures."""
        return self.inconclusive_reason is None

    @property
    def shown(self) -> bool:
        """The speedup is a result: plausible and measured with enough free cores."""
        return not self.unsteady and self.conclusive


def summarise_sequential(windows: Sequence[Window], ops_per_unit: int) -> Summary:
    """The sequential step: one unit at a time, speedup 1 by definition."""
    current = last_attempt(windows)
    wall = statistics.median(w.wall_seconds for w in current)
    return Summary(
        wall_seconds=wall, speedup=1.0, speedup_spread=0.0, efficiency=1.0, serial_fraction=None,
        throughput_units_per_second=1 / wall, throughput_ops_per_second=ops_per_unit / wall,
        cores_used=statistics.median(w.cores_used for w in current),
        core_utilisation=_per_cpu_medians(current),
        startup_seconds=statistics.median(w.startup_seconds for w in current),
        cpu_rate_ratio=1.0,
        interference_cores=_median_of([w.interference_cores for w in current]),
        steal_ratio=_median_of([w.steal_ratio for w in current]),
        pairs=len(current),
        cpu_bound=statistics.median(w.demand_share for w in current) >= CPU_BOUND_SHARE,
    )


def _per_cpu_medians(windows: Sequence[Window]) -> list[float]:
    per_cpu = [list(cpu) for cpu in zip(*(w.core_utilisation for w in windows))]
    return [statistics.median(cpu) for cpu in per_cpu]


def busy_reason(windows: Sequence[Window], usable_cpus: float, needed: float) -> str:
    """Why a step cannot tell: how much other load its windows met, and how often."""
    current = last_attempt(windows)
    busy = [w for w in current if not w.clean] or current
    space = free_cores(busy, usable_cpus, needed)
    pairs = {w.pair for w in current}
    spoiled = {w.pair for w in current if not w.clean}
    # The median of the spoiled windows may look free enough where some of them were not.
    return f"{space.account()} (in {len(spoiled)} of {len(pairs)} pairs; too few clean pairs to measure)"


def summarise(windows: Sequence[Window], workers: int, ops_per_unit: int,
              usable_cpus: Optional[float] = None, remeasured_reason: Optional[str] = None,
              max_cores: Optional[float] = None, min_pairs: int = 2,
              between_sd: float = BETWEEN_PROBE_SD) -> Summary:
    """A parallel step's figures from its own clean pairs; time, cores and per-CPU are medians
    of their parallel windows. Fewer than ``min_pairs`` clean pairs (the host kept taking the
    cores the step needed): the step cannot tell, and its figures come from every pair.
    ``max_cores`` caps the cores the mode can use by design (one event loop: 1), which is all
    it needs free. Raises ValueError without any complete pair."""
    everything = pair_windows(windows, clean_only=False)
    if not everything:
        raise ValueError("no complete (baseline, parallel) pair")
    clean = pair_windows(windows)
    conclusive = len(clean) >= min_pairs
    pairs = clean if conclusive else (clean or everything)
    parallel = [p.window for p in pairs]
    current = last_attempt(windows)
    verdict = assess(pairs, workers, usable_cpus, between_sd)
    speedups = [p.speedup(workers) for p in pairs]
    median_wall = statistics.median(w.wall_seconds for w in parallel)
    needed = min(verdict.ceiling, max_cores if max_cores is not None else verdict.ceiling) if verdict.cpu_bound else 0.0
    space = free_cores(current, usable_cpus, needed) if usable_cpus is not None else None
    inconclusive = None if conclusive or usable_cpus is None else busy_reason(windows, usable_cpus, needed)
    return Summary(
        wall_seconds=median_wall,
        speedup=verdict.speedup,
        speedup_spread=relative_spread(speedups),
        efficiency=efficiency(verdict.speedup, workers),
        serial_fraction=serial_fraction(verdict.speedup, workers),
        throughput_units_per_second=workers / median_wall,
        throughput_ops_per_second=workers * ops_per_unit / median_wall,
        cores_used=statistics.median(w.cores_used for w in parallel),
        core_utilisation=_per_cpu_medians(parallel),
        startup_seconds=statistics.median(w.startup_seconds for w in parallel),
        speedup_ci=clipped(verdict.interval, verdict.ceiling) if verdict.cpu_bound else verdict.interval,
        pair_speedups=speedups,
        cpu_rate_ratio=verdict.rate,
        interference_cores=_median_of([w.interference_cores for w in current]),
        steal_ratio=_median_of([w.steal_ratio for w in current]),
        unsteady_reason=verdict.trouble() if conclusive else None,
        cpu_bound=verdict.cpu_bound,
        pairs=len(clean),
        rate_ci=verdict.rate_interval,
        inconclusive_reason=inconclusive,
        free_cores=space.free if space is not None else None,
        remeasured_reason=remeasured_reason,
        pair_rates=[r for r in (p.cpu_rate_ratio(workers) for p in pairs) if r is not None],
        accounting=account(everything, workers, min(float(workers), usable_cpus or float(workers),
                                                    max_cores if max_cores is not None else float(workers)),
                           between_sd)
        if verdict.cpu_bound else None,
    )
