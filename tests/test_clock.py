"""The daemon's schedule as arithmetic: rounds every interval, stretched by the duty cycle,
moved only earlier by a reload (exporter/serve/clock.py)."""

from __future__ import annotations

import pytest

from exporter.serve.clock import RoundClock


def clock(**fields) -> RoundClock:
    values = dict(interval=300.0, jitter=0.0, duty_cycle=0.05, due=1000.0)
    values.update(fields)
    return RoundClock(**values)


def test_rounds_follow_each_other_an_interval_apart_from_their_starts():
    c = clock()
    c.round_started(1000.0)
    c.round_finished(1000.0, 10.0, now=1010.0)
    assert c.next_round_at == 1300.0


def test_a_round_over_the_duty_cycle_stretches_the_interval_from_its_start_and_a_short_one_restores_it():
    c = clock()
    c.round_started(1000.0)
    assert c.round_finished(1000.0, 30.0, now=1030.0)  # 30 s is 10 % of 300 s: 600 s keeps 5 %
    assert (c.in_force, c.next_round_at) == (600.0, 1600.0)
    c.round_started(1600.0)
    assert not c.round_finished(1600.0, 5.0, now=1605.0)
    assert (c.in_force, c.next_round_at) == (300.0, 1900.0)


def test_a_round_that_ran_past_its_successor_is_followed_at_once_not_twice():
    c = clock(duty_cycle=1.0)
    c.round_started(1000.0)
    c.round_finished(1000.0, 290.0, now=1700.0)  # the lane was held up: 1300 has passed
    assert c.next_round_at == 1700.0


def test_jitter_delays_each_round_by_up_to_the_jitter_without_drifting_the_schedule():
    offsets = iter([7.0, 3.0])
    c = clock(jitter=15.0, draw=lambda low, high: next(offsets))
    c.round_started(1000.0)
    assert c.next_round_at == 1307.0
    c.round_started(1307.0)
    assert c.next_round_at == 1603.0  # 1000 + 2 × 300, plus this round's own jitter


def test_a_reload_of_the_same_schedule_changes_nothing():
    c = clock(due=5000.0, last_start=1000.0)
    c.reschedule(300.0, 0.0, 0.05, now=1100.0)
    assert c.next_round_at == 5000.0


@pytest.mark.parametrize("interval, last_start, now, expected", [
    (7200.0, 1000.0, 1100.0, 4600.0),  # longer: the next round keeps its time
    (600.0, 1000.0, 1100.0, 1600.0),  # shorter: counted from the last start, earlier than 4600
    (60.0, 1000.0, 1100.0, 1100.0),  # shorter and already passed: now, never in the past
])
def test_a_reload_moves_the_next_round_only_earlier(interval, last_start, now, expected):
    c = clock(due=4600.0, last_start=last_start)
    c.reschedule(interval, 0.0, 0.05, now=now)
    assert c.next_round_at == expected
    assert c.in_force == interval
