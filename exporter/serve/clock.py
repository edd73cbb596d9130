"""When the next probe round is due: the daemon's schedule as plain arithmetic on Unix times.

Rounds start every ``interval`` (plus up to ``jitter``, so a fleet does not probe in step),
counted from round starts, not round ends. A round that takes more than ``duty_cycle`` of
its interval stretches the interval so probing keeps to that share of wall time. A reload
moves the next round only earlier, never later: anyone who can reload (SIGHUP, POST
/-/reload) must not be able to starve probing by reloading more often than the interval.
No thread and no sleeping here: the daemon's lane asks and waits (exporter/serve/daemon.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass
class RoundClock:
    interval: float  # as configured
    jitter: float
    duty_cycle: float
    due: float  # when the next round is due, before its jitter
    offset: float = 0.0  # the next round's jitter
    in_force: float = 0.0  # the interval in force: stretched when rounds exceed the duty cycle
    last_start: Optional[float] = None  # of the round running now or the last one
    draw: Callable[[float, float], float] = random.uniform

    def __post_init__(self) -> None:
        self.in_force = self.in_force or self.interval

    @property
    def next_round_at(self) -> float:
        return self.due + self.offset

    def _set_due(self, due: float) -> None:
        self.due, self.offset = due, self.draw(0.0, self.jitter) if self.jitter else 0.0

    def round_started(self, now: float) -> None:
        """The round due now starts: the next one is an interval after this one was due."""
        self.last_start = now
        self._set_due(self.due + self.in_force)

    def round_finished(self, started: float, duration: float, now: float) -> bool:
        """Stretch (or restore) the interval for this round's duration; True when stretched.

        The next round then starts ``duration / duty_cycle`` after this one *started*, so
        probing takes exactly the budgeted share of wall time; a round that ran past its
        successor's time is followed at once (coalesced), never twice.
        """
        needed = max(self.interval, duration / self.duty_cycle)
        if needed != self.in_force:
            self.in_force = needed
            self._set_due(started + needed)
        if self.due < now:
            self._set_due(now)
        return needed > self.interval

    def reschedule(self, interval: float, jitter: float, duty_cycle: float, now: float) -> None:
        """A reload's new schedule. A changed interval applies to the rounds after the next
        one, unless counted from the last round's start it brings the next one earlier (but
        never into the past)."""
        changed = (interval, jitter) != (self.interval, self.jitter)
        self.interval, self.jitter, self.duty_cycle = interval, jitter, duty_cycle
        if not changed:
            return
        self.in_force = interval
        if self.last_start is not None and self.last_start + interval < self.next_round_at:
            self._set_due(max(self.last_start + interval, now))
