"""The measurement formulas, on constructed numbers."""

from __future__ import annotations

import math

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


def test_summarise_takes_medians_against_the_baseline():
    windows = [measurement.Window([0.0, 0.0], [t, t], [t, t], 0.1, core_utilisation=[u, 1.0])
               for t, u in ((0.5, 0.9), (0.6, 0.8), (0.55, 1.0))]
    summary = measurement.summarise(windows, sequential_seconds=0.5, workers=2, ops_per_unit=100)
    assert summary.wall_seconds == 0.55
    assert summary.speedup == pytest.approx(0.5 * 2 / 0.55)
    assert summary.speedup_spread == pytest.approx((2.0 - 0.5 * 2 / 0.6) / (0.5 * 2 / 0.55))
    assert summary.efficiency == pytest.approx(summary.speedup / 2)
    assert summary.throughput_units_per_second == pytest.approx(2 / 0.55)
    assert summary.throughput_ops_per_second == pytest.approx(200 / 0.55)
    assert summary.cores_used == pytest.approx(2.0)
    assert summary.core_utilisation == [0.9, 1.0]
    assert math.isclose(summary.startup_seconds, 0.1)
