"""Measurement arithmetic: speedup and its interval, efficiency, host interference, steal.

Every derived figure the exporter reports is computed here, from the raw timings the runner
stamped inside its workers and the kernel's per-CPU counters, so the formulas live in one
place and are tested on constructed numbers. Standard library only: the runner imports this
module too (it decides from the pair speedups when a step is precise enough).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Tuple

# Kernel CPU-time fields that are not busy time; guest time is already counted in user/nice.
IDLE_FIELDS = ("idle", "iowait")
DOUBLE_COUNTED_FIELDS = ("guest", "guest_nice")
STEAL_FIELD = "steal"
# A step's work is CPU-bound when a unit's CPU seconds are at least this share of the
# baseline's wall seconds per unit (sleeping workers use almost none). CPU seconds per unit
# do not grow when other load preempts the workers, so this holds on a busy host down to a
# quarter of a core. Only CPU-bound work is capped by the usable cores.
CPU_BOUND_SHARE = 0.25
# Two-sided 95 % quantiles of Student's t by degrees of freedom (beyond 30: the normal 1.96
# plus the usual 2.4/df correction, good to 0.005).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
         16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
         23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042}


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


@dataclass(frozen=True)
class Window:
    """One timed window: every worker's own start, end and CPU seconds, and the host's load.

    ``index`` is the window's place in the runner's order (sequential and parallel windows
    alternate), which pairs each parallel window with its neighbouring baseline windows.
    """

    starts: Sequence[float]
    ends: Sequence[float]
    cpu_seconds: Sequence[float]
    startup_seconds: float
    core_utilisation: Sequence[float] = ()
    index: int = -1
    interference_cores: Optional[float] = None
    steal_ratio: Optional[float] = None

    @property
    def wall_seconds(self) -> float:
        """From the first worker's start to the last worker's end."""
        return max(self.ends) - min(self.starts)

    @property
    def cores_used(self) -> float:
        """CPU seconds of all workers over wall seconds: ~1 for GIL threads, ~N for processes."""
        return sum(self.cpu_seconds) / self.wall_seconds


@dataclass(frozen=True)
class Pair:
    """A parallel window and the baseline around it: the mean of its neighbouring windows."""

    window: Window
    baseline_wall_seconds: float
    baseline_cpu_seconds: float

    def speedup(self, workers: int) -> float:
        return speedup(self.baseline_wall_seconds, self.window.wall_seconds, workers)

    def cpu_share(self, workers: int) -> float:
        """CPU seconds per unit in the parallel window over the baseline's wall seconds per unit."""
        return sum(self.window.cpu_seconds) / workers / self.baseline_wall_seconds

    def cpu_rate_ratio(self, workers: int) -> Optional[float]:
        """Work per CPU-second in the parallel window over the baseline's (N units each)."""
        spent = sum(self.window.cpu_seconds)
        if spent <= 0 or self.baseline_cpu_seconds <= 0:
            return None
        return workers * self.baseline_cpu_seconds / spent


def _indexed(windows: Sequence[Window], offset: int) -> list[tuple[int, Window]]:
    """Windows with their place in the run; without one (old events, constructed windows)
    the alternation baseline, parallel, baseline, ... is assumed."""
    return [(w.index if w.index >= 0 else 2 * i + offset, w) for i, w in enumerate(windows)]


def pair_windows(parallel: Sequence[Window], baseline: Sequence[Window]) -> list[Pair]:
    """Pair each parallel window with the baseline windows just before and just after it.

    Averaging the two neighbours interpolates the baseline to the parallel window's time,
    so a slow drift of the host's speed cancels in each pair's ratio; at the edges of a
    run (or when the runner stopped) the one neighbour there is used.
    """
    ordered = sorted(_indexed(baseline, 0), key=lambda item: item[0])
    pairs = []
    for index, window in _indexed(parallel, 1):
        before = [w for i, w in ordered if i < index][-1:]
        after = [w for i, w in ordered if i > index][:1]
        neighbours = before + after
        if not neighbours:
            continue
        pairs.append(Pair(window, statistics.fmean(w.wall_seconds for w in neighbours),
                          statistics.fmean(sum(w.cpu_seconds) for w in neighbours)))
    return pairs


def t_quantile(degrees_of_freedom: int) -> float:
    """The 97.5 % quantile of Student's t (a two-sided 95 % interval)."""
    if degrees_of_freedom in T_975:
        return T_975[degrees_of_freedom]
    return 1.96 + 2.4 / degrees_of_freedom


def ratio_estimate(values: Sequence[float]) -> Tuple[float, Optional[Tuple[float, float]]]:
    """Geometric mean of positive ratios and its 95 % Student-t interval (None below 2 values).

    The interval is taken on the logarithms, so it stays positive and is symmetric in
    ratio terms (×1.05 and ÷1.05 are the same distance); a pair spoiled by a burst of other
    load widens the interval rather than silently moving a median.
    """
    logs = [math.log(v) for v in values]
    centre = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(centre), None
    half = t_quantile(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(centre), (math.exp(centre - half), math.exp(centre + half))


def relative_half_width(estimate: float, interval: Optional[Tuple[float, float]]) -> float:
    """Half the interval's width over the estimate; infinite without an interval."""
    if interval is None or estimate <= 0:
        return math.inf
    return (interval[1] - interval[0]) / 2 / estimate


def pair_speedups(parallel: Sequence[Window], baseline: Sequence[Window], workers: int) -> list[float]:
    return [p.speedup(workers) for p in pair_windows(parallel, baseline)]


def speedup_precision(parallel: Sequence[Window], baseline: Sequence[Window], workers: int) -> float:
    """Relative half-width of the speedup's 95 % interval so far (what the runner stops on)."""
    values = [v for v in pair_speedups(parallel, baseline, workers) if v > 0]
    if len(values) < 2:
        return math.inf
    return relative_half_width(*ratio_estimate(values))


def unsteady_reason(speedup_ratio: float, interval: Optional[Tuple[float, float]], cpu_bound: bool,
                    workers: int, usable_cpus: Optional[float]) -> Optional[str]:
    """Why a CPU-bound speedup cannot be physical: above the usable cores beyond its interval."""
    if usable_cpus is None or not cpu_bound:
        return None
    ceiling = min(float(workers), usable_cpus)
    lowest = interval[0] if interval is not None else speedup_ratio
    if lowest <= ceiling:
        return None
    shown = f"×{speedup_ratio:.2f}" + (f" ({interval[0]:.2f}–{interval[1]:.2f})" if interval else "")
    return (f"speedup {shown} exceeds the {ceiling:g} cores CPU-bound work can use: the baseline "
            f"windows ran slower than the parallel ones (the host's load or speed changed)")


def _median_of(values: Sequence[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


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
    speedup_ci: Optional[Tuple[float, float]] = None  # 95 % interval from the pairs
    pair_speedups: Sequence[float] = ()
    cpu_rate_ratio: Optional[float] = None
    interference_cores: Optional[float] = None
    steal_ratio: Optional[float] = None
    unsteady_reason: Optional[str] = None
    cpu_bound: bool = True  # the workers compute (capped by the usable cores) rather than wait

    @property
    def unsteady(self) -> bool:
        """The speedup is physically implausible and is not shown or exported as a result."""
        return self.unsteady_reason is not None


def summarise(windows: Sequence[Window], baseline: Sequence[Window], workers: int,
              ops_per_unit: int, usable_cpus: Optional[float] = None) -> Summary:
    """A step's figures: speedup from its pairs with the baseline, the rest medians of windows.

    For the sequential step itself (``windows is baseline``) speedup and rate are 1.
    """
    walls = [w.wall_seconds for w in windows]
    median_wall = statistics.median(walls)
    rate: Optional[float]
    interval: Optional[Tuple[float, float]]
    if windows is baseline:
        speedups, estimate, interval, rate = [1.0], 1.0, None, 1.0
        cpu_share = statistics.median(w.cores_used for w in windows)
    else:
        pairs = pair_windows(windows, baseline)
        speedups = [p.speedup(workers) for p in pairs]
        estimate, interval = ratio_estimate(speedups)
        rate = _median_of([p.cpu_rate_ratio(workers) for p in pairs])
        cpu_share = statistics.median(p.cpu_share(workers) for p in pairs)
    cpu_bound = cpu_share >= CPU_BOUND_SHARE
    per_cpu = [list(cpu) for cpu in zip(*(w.core_utilisation for w in windows))]
    cores = statistics.median(w.cores_used for w in windows)
    return Summary(
        wall_seconds=median_wall,
        speedup=estimate,
        speedup_spread=relative_spread(speedups),
        efficiency=efficiency(estimate, workers),
        serial_fraction=serial_fraction(estimate, workers),
        throughput_units_per_second=workers / median_wall,
        throughput_ops_per_second=workers * ops_per_unit / median_wall,
        cores_used=cores,
        core_utilisation=[statistics.median(cpu) for cpu in per_cpu],
        startup_seconds=statistics.median(w.startup_seconds for w in windows),
        speedup_ci=interval,
        pair_speedups=speedups if windows is not baseline else [],
        cpu_rate_ratio=rate,
        interference_cores=_median_of([w.interference_cores for w in windows]),
        steal_ratio=_median_of([w.steal_ratio for w in windows]),
        unsteady_reason=unsteady_reason(estimate, interval, cpu_bound, workers, usable_cpus),
        cpu_bound=cpu_bound,
    )
