"""The measurement formulas, on constructed numbers."""

from __future__ import annotations

import math
import statistics

import pytest

from exporter import measurement


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


def window(wall: float, index: int, cpu: float | None = None, workers: int = 1, **fields) -> measurement.Window:
    """A window of ``workers`` workers that all ran from 0 to ``wall`` using ``cpu`` seconds each."""
    cpu = wall if cpu is None else cpu
    return measurement.Window([0.0] * workers, [wall] * workers, [cpu] * workers, 0.1, index=index, **fields)


def test_summarise_takes_medians_and_pairs_each_window_with_its_neighbours():
    baseline = [window(0.5, 0), window(0.5, 2), window(0.5, 4), window(0.5, 6)]
    windows = [measurement.Window([0.0, 0.0], [t, t], [t, t], 0.1, core_utilisation=[u, 1.0], index=i)
               for t, u, i in ((0.5, 0.9, 1), (0.6, 0.8, 3), (0.55, 1.0, 5))]
    summary = measurement.summarise(windows, baseline, workers=2, ops_per_unit=100)
    assert summary.wall_seconds == 0.55
    assert list(summary.pair_speedups) == pytest.approx([2.0, 0.5 * 2 / 0.6, 0.5 * 2 / 0.55])
    assert summary.speedup == pytest.approx(math.prod(summary.pair_speedups) ** (1 / 3))
    assert summary.speedup_spread == pytest.approx((2.0 - 0.5 * 2 / 0.6) / (0.5 * 2 / 0.55))
    assert summary.efficiency == pytest.approx(summary.speedup / 2)
    assert summary.throughput_units_per_second == pytest.approx(2 / 0.55)
    assert summary.throughput_ops_per_second == pytest.approx(200 / 0.55)
    assert summary.cores_used == pytest.approx(2.0)
    assert summary.core_utilisation == [0.9, 1.0]
    assert math.isclose(summary.startup_seconds, 0.1)


def test_sequential_step_is_speedup_one_without_an_interval():
    baseline = [window(0.5, 0), window(0.6, 2)]
    summary = measurement.summarise(baseline, baseline, workers=1, ops_per_unit=10)
    assert (summary.speedup, summary.speedup_ci, list(summary.pair_speedups)) == (1.0, None, [])
    assert summary.cpu_rate_ratio == 1.0


def test_pairing_cancels_a_steady_drift_of_the_host_speed():
    # The host slows by 10 % per window; a parallel window of 2 workers on 2 free cores takes
    # exactly as long as a sequential one at the same moment: the true speedup is 2.
    walls = [1.0 * 1.1 ** i for i in range(7)]
    baseline = [window(walls[i], i) for i in (0, 2, 4, 6)]
    parallel = [window(walls[i], i, workers=2) for i in (1, 3, 5)]
    pairs = measurement.pair_speedups(parallel, baseline, 2)
    # Interpolating between the neighbours leaves only the curvature: 2·(1 + 1.21)/2/1.1.
    assert pairs == pytest.approx([2 * (1 + 1.21) / 2 / 1.1] * 3)
    assert all(abs(p - 2) < 0.01 for p in pairs)
    # Against the median baseline (the old way) the same windows read 1.66 to 2.43.
    median = statistics.median(w.wall_seconds for w in baseline)
    assert [round(2 * median / w.wall_seconds, 2) for w in parallel] == [2.43, 2.01, 1.66]


def test_a_window_at_the_edge_is_paired_with_its_one_neighbour():
    baseline = [window(1.0, 0)]
    parallel = [window(0.5, 1, workers=2)]
    assert measurement.pair_speedups(parallel, baseline, 2) == [4.0]


def test_windows_without_an_index_are_taken_as_alternating():
    baseline = [measurement.Window([0.0], [w], [w], 0.0) for w in (1.0, 2.0)]
    parallel = [measurement.Window([0.0, 0.0], [1.5, 1.5], [1.5, 1.5], 0.0)]
    assert measurement.pair_speedups(parallel, baseline, 2) == [2.0]


def test_interval_is_student_t_on_the_logs_of_the_pair_speedups():
    values = [1.9, 2.0, 2.1, 1.95]
    estimate, interval = measurement.ratio_estimate(values)
    logs = [math.log(v) for v in values]
    half = 3.182 * statistics.stdev(logs) / 2
    assert estimate == pytest.approx(math.exp(statistics.fmean(logs)))
    assert interval == pytest.approx((math.exp(statistics.fmean(logs) - half), math.exp(statistics.fmean(logs) + half)))
    assert interval[0] < min(values) < max(values) < interval[1]  # 4 values: t widens the range


def test_one_pair_has_no_interval_and_identical_pairs_a_zero_width_one():
    assert measurement.ratio_estimate([1.5]) == (pytest.approx(1.5), None)
    assert measurement.ratio_estimate([2.0, 2.0])[1] == pytest.approx((2.0, 2.0))
    assert measurement.relative_half_width(1.5, None) == math.inf


def test_t_quantiles_fall_towards_the_normal_one():
    assert measurement.t_quantile(1) == 12.706 and measurement.t_quantile(9) == 2.262
    assert 1.96 < measurement.t_quantile(100) < measurement.t_quantile(30)


def test_precision_is_the_relative_half_width_of_the_interval_so_far():
    baseline = [window(1.0, i) for i in (0, 2, 4)]
    assert measurement.speedup_precision([window(0.5, 1, workers=2)], baseline, 2) == math.inf
    steady = [window(1.0, 1, workers=2), window(1.0, 3, workers=2)]
    assert measurement.speedup_precision(steady, baseline, 2) == pytest.approx(0.0)
    noisy = [window(1.0, 1, workers=2), window(1.25, 3, workers=2)]
    assert measurement.speedup_precision(noisy, baseline, 2) > 0.05


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


def test_cpu_rate_ratio_is_work_per_cpu_second_relative_to_the_baseline():
    baseline = [window(1.0, 0), window(1.0, 2)]
    # Two workers busy the whole window but each 25 % slower: 1.25 CPU s per unit.
    parallel = [window(1.25, 1, workers=2)]
    summary = measurement.summarise(parallel, baseline, workers=2, ops_per_unit=1)
    assert summary.cpu_rate_ratio == pytest.approx(0.8)
    assert summary.cores_used == pytest.approx(2.0)
    # With the baseline on a full core, speedup = cores used × rate.
    assert summary.speedup == pytest.approx(summary.cores_used * summary.cpu_rate_ratio)


def test_gil_threads_use_one_core_at_full_rate():
    baseline = [window(1.0, 0), window(1.0, 2)]
    gil = [measurement.Window([0.0, 0.0], [2.0, 2.0], [1.0, 1.0], 0.0, index=1)]
    summary = measurement.summarise(gil, baseline, workers=2, ops_per_unit=1)
    assert (summary.cores_used, summary.cpu_rate_ratio, summary.speedup) == pytest.approx((1.0, 1.0, 1.0))


def test_cpu_rate_ratio_is_unknown_for_workers_that_used_no_cpu():
    baseline = [window(1.0, 0, cpu=0.0)]
    assert measurement.summarise([window(1.0, 1, cpu=0.0, workers=2)], baseline, 2, 1).cpu_rate_ratio is None


def test_step_interference_and_steal_are_medians_of_the_windows():
    baseline = [window(1.0, 0)]
    parallel = [window(0.5, 1, workers=2, interference_cores=c, steal_ratio=s)
                for c, s in ((0.1, None), (0.8, 0.02), (0.3, 0.04))]
    summary = measurement.summarise(parallel, baseline, 2, 1)
    assert summary.interference_cores == pytest.approx(0.3)
    assert summary.steal_ratio == pytest.approx(0.03)


def test_cpu_bound_speedup_above_the_usable_cores_beyond_its_interval_is_unsteady():
    reason = measurement.unsteady_reason(2.12, (2.05, 2.19), cpu_bound=True, workers=2, usable_cpus=2)
    assert reason is not None and "×2.12 (2.05–2.19)" in reason and "2 cores" in reason
    # Within its interval of the ceiling: a figure, not an impossibility.
    assert measurement.unsteady_reason(2.05, (1.95, 2.15), True, 2, 2) is None
    # Without an interval the estimate itself must not exceed the ceiling.
    assert measurement.unsteady_reason(2.01, None, True, 2, 2) is not None
    # Sleeping workers (no CPU) may overlap beyond the cores; 4 workers on 2 cores cap at 2.
    assert measurement.unsteady_reason(3.9, (3.8, 4.0), False, 4, 2) is None
    assert measurement.unsteady_reason(2.5, (2.3, 2.7), True, 4, 2) is not None
    assert measurement.unsteady_reason(2.5, (2.3, 2.7), True, 4, None) is None


def test_cpu_bound_is_cpu_per_unit_against_the_baseline_wall_and_survives_preemption():
    baseline = [window(2.0, 0, cpu=1.0), window(2.0, 2, cpu=1.0)]  # the baseline got half a core
    preempted = measurement.summarise([window(4.0, 1, cpu=1.0, workers=2)], baseline, 2, 1)
    assert preempted.cores_used == pytest.approx(0.5) and preempted.cpu_bound
    sleeping = measurement.summarise([window(1.0, 1, cpu=0.001, workers=2)], [window(1.0, 0, cpu=0.001)], 2, 1)
    assert not sleeping.cpu_bound


def test_summary_of_an_impossible_speedup_is_marked_unsteady():
    baseline = [window(1.3, 0), window(1.3, 2), window(1.3, 4)]  # slow baseline windows
    parallel = [window(1.0, 1, workers=2), window(1.0, 3, workers=2)]
    summary = measurement.summarise(parallel, baseline, 2, 1, usable_cpus=2)
    assert summary.speedup == pytest.approx(2.6)
    assert summary.unsteady and "exceeds" in (summary.unsteady_reason or "")
