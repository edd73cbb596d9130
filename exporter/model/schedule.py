"""When probe rounds ran and will run: what the status page and ``/api/v1/results`` show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Schedule:
    """When rounds ran and will run; Unix times, None where not known yet."""

    exporter_started_at: float
    round_running_since: Optional[float]
    last_round_started_at: Optional[float]
    last_round_finished_at: Optional[float]
    next_round_at: Optional[float]
    interval_seconds: float  # in force: stretched when rounds exceed the duty-cycle budget
    configured_interval_seconds: float
    duty_cycle_ratio: Optional[float]
    duty_cycle_budget: float
