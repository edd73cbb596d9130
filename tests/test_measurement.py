"""The measurement formulas, on constructed numbers."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

import pytest

from exporter.stats import measurement


def test_speedup_is_weak_scaling_t1_times_n_over_tn():
    # Two workers each did the unit one worker did in 1.0 s, and finished together in 1.0 s.
    assert measurement.speedup(1.0, 1.0, 2) == 2.0
    # Under the GIL two units take twice as long: no speedup.
    assert measurement.speedup(1.0, 2.0, 2) == 1.0


def test_efficiency_is_speedup_per_worker():
    assert measurement.efficiency(1.5, 2) == 0.75


def test_karp_flatt_serial_fraction():
    assert measurement.serial_fraction(2.0, 2) == pytest.approx(0.0)
    assert measurement.serial_fraction(1.0, 2) == pytest.approx(1.0)
    # S = 3 on 4 workers: e = (1/3 - 1/4) / (3/4) = 1/9
    assert measurement.serial_fraction(3.0, 4) == pytest.approx(1 / 9)


def test_serial_fraction_undefined_for_one_worker():
    assert measurement.serial_fraction(1.0, 1) is None


def test_relative_spread_is_range_over_median():
    assert measurement.relative_spread([1.8, 2.0, 1.9]) == pytest.approx(0.2 / 1.9)
    assert measurement.relative_spread([1.0]) == 0.0


def test_busy_fractions_exclude_idle_iowait_and_double_counted_guest_time():
    before = [{"user": 10, "system": 5, "idle": 80, "iowait": 5, "guest": 0}]
    after = [{"user": 16, "system": 6, "idle": 82, "iowait": 6, "guest": 3}]
    # total delta = 6 + 1 + 2 + 1 (guest excluded) = 10; idle = 3 -> busy 0.7
    assert measurement.busy_fractions(before, after) == [pytest.approx(0.7)]


def test_busy_fractions_of_an_unchanged_cpu_is_zero():
    reading = [{"user": 1.0, "idle": 1.0}]
    assert measurement.busy_fractions(reading, reading) == [0.0]


def test_window_wall_time_spans_first_start_to_last_end():
    window = measurement.Window(starts=[10.0, 10.1], ends=[11.0, 11.5], cpu_seconds=[1.0, 1.4],
                                startup_seconds=0.2)
    assert window.wall_seconds == pytest.approx(1.5)
    assert window.cores_used == pytest.approx(2.4 / 1.5)


def window(wall: float, pair: int = 0, cpu: float | None = None, workers: int = 1, role: str = "",
           **fields) -> measurement.Window:
    """A window of ``workers`` workers that all ran from 0 to ``wall`` using ``cpu`` seconds each
    (one worker: a baseline window; more: a parallel one)."""
    cpu = wall if cpu is None else cpu
    role = role or ("baseline" if workers == 1 else "parallel")
    return measurement.Window([0.0] * workers, [wall] * workers, [cpu] * workers, 0.1, role=role, pair=pair, **fields)


def pairs_of(*walls: tuple[float, float], workers: int = 2, **fields) -> list[measurement.Window]:
    """Windows of pairs given as (baseline wall, parallel wall)."""
    windows = []
    for k, (alone, together) in enumerate(walls):
        windows += [window(alone, k, **fields), window(together, k, workers=workers, **fields)]
    return windows


def test_summarise_takes_its_pairs_and_medians_of_the_parallel_windows():
    windows = pairs_of((0.5, 0.5), (0.5, 0.6), (0.5, 0.55))
    windows[1] = replace(windows[1], core_utilisation=[0.9, 1.0])
    windows[3] = replace(windows[3], core_utilisation=[0.8, 1.0])
    windows[5] = replace(windows[5], core_utilisation=[1.0, 1.0])
    summary = measurement.summarise(windows, workers=2, ops_per_unit=100)
    assert summary.wall_seconds == 0.55
    assert list(summary.pair_speedups) == pytest.approx([2.0, 0.5 * 2 / 0.6, 0.5 * 2 / 0.55])
    assert summary.speedup == pytest.approx(math.prod(summary.pair_speedups) ** (1 / 3))
    assert summary.pairs == 3
    assert summary.speedup_spread == pytest.approx((2.0 - 0.5 * 2 / 0.6) / (0.5 * 2 / 0.55))
    assert summary.efficiency == pytest.approx(summary.speedup / 2)
    assert summary.throughput_units_per_second == pytest.approx(2 / 0.55)
    assert summary.throughput_ops_per_second == pytest.approx(200 / 0.55)
    assert summary.cores_used == pytest.approx(2.0)
    assert summary.core_utilisation == [0.9, 1.0]
    assert math.isclose(summary.startup_seconds, 0.1)


def test_each_pair_has_its_own_baseline_window_so_no_window_serves_two_pairs():
    windows = pairs_of((1.0, 1.0), (2.0, 1.0), (1.0, 2.0))
    pairs = measurement.pair_windows(windows)
    assert [p.speedup(2) for p in pairs] == [2.0, 4.0, 1.0]
    assert len({id(p.baseline) for p in pairs} | {id(p.window) for p in pairs}) == 6


def test_a_parallel_window_without_its_baseline_window_is_no_pair():
    windows = pairs_of((1.0, 1.0)) + [window(1.0, 1, workers=2)]  # the runner died mid-pair
    assert len(measurement.pair_windows(windows)) == 1


def test_only_the_last_attempt_counts_after_a_step_was_measured_again():
    first = pairs_of((1.3, 1.0), (1.3, 1.0), attempt=0)
    second = pairs_of((1.0, 1.0), (1.0, 1.0), attempt=1)
    summary = measurement.summarise(first + second, workers=2, ops_per_unit=1, usable_cpus=2)
    assert summary.speedup == pytest.approx(2.0) and summary.pairs == 2


def test_sequential_step_is_speedup_one_without_an_interval():
    summary = measurement.summarise_sequential([window(0.5, 0, role="sequential"),
                                                window(0.6, 1, role="sequential")], ops_per_unit=10)
    assert (summary.speedup, summary.speedup_ci, list(summary.pair_speedups)) == (1.0, None, [])
    assert summary.cpu_rate_ratio == 1.0 and summary.wall_seconds == pytest.approx(0.55)


def test_the_interval_adds_the_variance_between_probes_to_the_pairs_own():
    values = [1.9, 2.0, 2.1, 1.95]
    estimate, interval = measurement.ratio_estimate(values, between_probe_sd=0.0)
    logs = [math.log(v) for v in values]
    half = 3.182 * statistics.stdev(logs) / 2
    assert estimate == pytest.approx(math.exp(statistics.fmean(logs)))
    assert interval == pytest.approx((math.exp(statistics.fmean(logs) - half), math.exp(statistics.fmean(logs) + half)))
    assert interval[0] < min(values) < max(values) < interval[1]  # 4 values: t widens the range
    _, widened = measurement.ratio_estimate(values, between_probe_sd=0.02)
    wider = math.hypot(half, 1.96 * 0.02)
    assert widened == pytest.approx((estimate * math.exp(-wider), estimate * math.exp(wider)), rel=1e-4)


def test_identical_pairs_still_have_an_interval_as_wide_as_the_variance_between_probes():
    assert measurement.ratio_estimate([1.5]) == (pytest.approx(1.5), None)
    _, interval = measurement.ratio_estimate([2.0, 2.0, 2.0])
    spread = math.exp(1.96 * measurement.BETWEEN_PROBE_SD)
    assert interval == pytest.approx((2.0 / spread, 2.0 * spread))
    assert measurement.ratio_estimate([2.0, 2.0], between_probe_sd=0.0)[1] == pytest.approx((2.0, 2.0))
    assert measurement.relative_half_width(1.5, None) == math.inf


def test_t_quantiles_fall_towards_the_normal_one():
    assert measurement.t_quantile(1) == 12.706 and measurement.t_quantile(9) == 2.262
    assert 1.96 < measurement.t_quantile(100) < measurement.t_quantile(30)


def test_assessment_half_width_is_what_the_runner_stops_on():
    steady = measurement.pair_windows(pairs_of((1.0, 1.0), (1.0, 1.0), (1.0, 1.0)))
    verdict = measurement.assess(steady, 2, 2.0)
    assert verdict.half_width == pytest.approx(math.exp(1.96 * measurement.BETWEEN_PROBE_SD) - 1, rel=0.02)
    noisy = measurement.pair_windows(pairs_of((1.0, 1.0), (1.0, 1.25)))
    assert measurement.assess(noisy, 2, 2.0).half_width > 0.05
    assert measurement.assess(noisy[:1], 2, 2.0).half_width == math.inf


def test_host_load_is_host_busy_time_minus_the_probe_tree_over_wall_time():
    before = [{"user": 0.0, "system": 0.0, "idle": 0.0, "iowait": 0.0, "steal": 0.0, "guest": 0.0}] * 2
    # Over 1 s: cpu0 fully busy (the probe's 1.0 s), cpu1 busy 0.6 s of which 0.1 s stolen.
    after = [{"user": 0.9, "system": 0.1, "idle": 0.0, "iowait": 0.0, "steal": 0.0, "guest": 0.5},
             {"user": 0.4, "system": 0.1, "idle": 0.3, "iowait": 0.1, "steal": 0.1, "guest": 0.0}]
    load = measurement.host_load(before, after, wall_seconds=1.0, probe_cpu_seconds=1.0)
    assert load.interference_cores == pytest.approx(0.5)  # cpu1's 0.5 s of user+system
    assert load.steal_ratio == pytest.approx(0.1 / 2.0)


def test_host_load_reads_tick_noise_as_zero_and_no_steal_field_as_unknown():
    before = [{"user": 0.0, "idle": 0.0}]
    after = [{"user": 0.99, "idle": 0.01}]
    load = measurement.host_load(before, after, wall_seconds=1.0, probe_cpu_seconds=1.0)
    assert load.interference_cores == 0.0
    assert load.steal_ratio is None


def test_cpu_rate_ratio_is_work_per_cpu_second_relative_to_one_worker_of_the_same_pool():
    # Two workers busy the whole window but each 25 % slower: 1.25 CPU s per unit.
    summary = measurement.summarise(pairs_of((1.0, 1.25), (1.0, 1.25)), workers=2, ops_per_unit=1)
    assert summary.cpu_rate_ratio == pytest.approx(0.8)
    assert summary.cores_used == pytest.approx(2.0)
    # With the baseline on a full core, speedup = cores used × rate.
    assert summary.speedup == pytest.approx(summary.cores_used * summary.cpu_rate_ratio)


def test_gil_threads_use_one_core_at_full_rate():
    gil = [window(1.0, 0), measurement.Window([0.0, 0.0], [2.0, 2.0], [1.0, 1.0], 0.0, role="parallel", pair=0)]
    summary = measurement.summarise(gil, workers=2, ops_per_unit=1)
    assert (summary.cores_used, summary.cpu_rate_ratio, summary.speedup) == pytest.approx((1.0, 1.0, 1.0))


def test_cpu_rate_ratio_is_unknown_for_workers_that_used_no_cpu():
    assert measurement.summarise(pairs_of((1.0, 1.0), cpu=0.0), 2, 1).cpu_rate_ratio is None


def test_step_interference_and_steal_are_medians_of_the_windows():
    windows = [window(1.0, k, workers=n, interference_cores=c, steal_ratio=s)
               for k, (c, s) in enumerate(((0.1, None), (0.8, 0.02), (0.3, 0.04))) for n in (1, 2)]
    summary = measurement.summarise(windows, 2, 1)
    assert summary.interference_cores == pytest.approx(0.3)
    assert summary.steal_ratio == pytest.approx(0.03)


def test_a_speedup_above_the_cores_cpu_bound_work_can_use_is_never_a_result():
    # Slow baseline windows: ×2.6 on 2 cores. Withheld, whatever the interval.
    summary = measurement.summarise(pairs_of((1.3, 1.0), (1.3, 1.0), (1.3, 1.0)), 2, 1, usable_cpus=2)
    assert summary.speedup == pytest.approx(2.6)
    assert summary.unsteady and "exceeds the 2 cores" in (summary.unsteady_reason or "")
    # Above the ceiling with an interval reaching far below it: still no result.
    wide = measurement.summarise(pairs_of((1.0, 0.7), (1.0, 1.3), (1.0, 0.75)), 2, 1, usable_cpus=2)
    assert wide.speedup > 2 and wide.speedup_ci is not None and wide.speedup_ci[0] < 2
    assert wide.unsteady and not wide.shown
    # Sleeping workers (no CPU) may overlap beyond the cores.
    sleeping = measurement.summarise(pairs_of((1.0, 0.5), (1.0, 0.5), workers=4, cpu=0.001), 4, 1, usable_cpus=2)
    assert not sleeping.cpu_bound and not sleeping.unsteady


def test_a_shown_interval_never_reaches_above_the_ceiling():
    summary = measurement.summarise(pairs_of((1.0, 1.02), (1.0, 0.99), (1.0, 1.01)), 2, 1, usable_cpus=2)
    assert summary.shown and summary.speedup < 2
    assert summary.speedup_ci is not None and summary.speedup_ci[1] == 2.0


def test_a_baseline_slower_per_cpu_second_than_the_workers_makes_the_step_unsteady():
    # The workers did 8 % more work per CPU-second together than one alone: not physics for
    # CPU-bound code, so the baseline windows were not comparable.
    windows = pairs_of((1.08, 1.5), (1.08, 1.5), (1.08, 1.5))
    windows = [replace(w, cpu_seconds=[1.0] * len(w.cpu_seconds)) if w.role == "parallel" else
               replace(w, cpu_seconds=[1.08]) for w in windows]
    summary = measurement.summarise(windows, 2, 1, usable_cpus=4)
    assert summary.cpu_rate_ratio == pytest.approx(1.08)
    assert summary.unsteady and "more work per CPU-second" in (summary.unsteady_reason or "")


def test_cpu_bound_is_cpu_per_unit_against_the_baseline_wall_and_survives_preemption():
    preempted = [window(2.0, 0, cpu=1.0), window(4.0, 0, cpu=1.0, workers=2)]  # both got half a core or less
    summary = measurement.summarise(preempted, 2, 1)
    assert summary.cores_used == pytest.approx(0.5) and summary.cpu_bound
    sleeping = measurement.summarise(pairs_of((1.0, 1.0), cpu=0.001), 2, 1)
    assert not sleeping.cpu_bound


def test_a_window_needs_the_cores_its_workers_could_use():
    busy = window(1.0, 0, workers=2, interference_cores=0.9)
    assert not measurement.window_free_cores(busy, 2.0).enough  # two computing workers, 1.1 cores free
    assert measurement.window_free_cores(window(1.0, 0, interference_cores=0.9), 2.0).enough  # one worker alone
    assert measurement.window_free_cores(busy, 2.0, max_cores=1.0).enough  # one event loop needs one core
    sleeping = window(1.0, 0, workers=2, cpu=0.001, interference_cores=1.9)
    assert measurement.window_free_cores(sleeping, 2.0).enough  # waiting workers need no core
    quiet = window(1.0, 0, workers=2, interference_cores=0.12, steal_ratio=0.0)
    assert measurement.window_free_cores(quiet, 2.0).enough  # counter tick noise is not load


def test_pairs_spoiled_by_other_load_are_left_out_and_too_few_clean_ones_cannot_tell():
    clean = pairs_of((1.0, 1.0), (1.0, 1.0), (1.0, 1.0), interference_cores=0.0)
    spoiled = [replace(w, pair=w.pair + 3, clean=False, interference_cores=1.0) for w in
               pairs_of((1.0, 2.0), (1.0, 2.0))]
    summary = measurement.summarise(clean + spoiled, 2, 1, usable_cpus=2, min_pairs=3)
    assert summary.conclusive and summary.pairs == 3 and summary.speedup == pytest.approx(2.0)
    busy = measurement.summarise(clean[:2] + spoiled, 2, 1, usable_cpus=2, min_pairs=3)
    assert not busy.conclusive and not busy.shown and busy.pairs == 1
    assert "other processes used 1.0 cores" in (busy.inconclusive_reason or "")
    assert "2 of 3 pairs" in (busy.inconclusive_reason or "")


def test_a_steps_own_history_widens_its_interval_where_probes_disagree():
    """Contended code settles into different regimes from probe to probe (×1.2, ×0.63): the
    spread of a step's earlier figures becomes the allowance between probes."""
    steady = [1.95, 1.96, 1.94, 1.95, 1.96]
    regimes = [1.2, 0.63, 1.19, 0.64, 1.21, 0.62]
    assert measurement.between_probe_sd(steady[:4]) == measurement.BETWEEN_PROBE_SD  # too few to learn from
    assert measurement.between_probe_sd(steady) == measurement.BETWEEN_PROBE_SD  # steadier than the floor
    learned = measurement.between_probe_sd(regimes)
    assert learned > 0.3
    values = [0.64, 0.65, 0.63, 0.64]
    narrow = measurement.ratio_estimate(values)[1]
    wide = measurement.ratio_estimate(values, learned)[1]
    assert narrow is not None and wide is not None
    assert narrow[1] < 1.0 < wide[1], (narrow, wide)  # the next probe's ×1.2 regime is inside the wide one
