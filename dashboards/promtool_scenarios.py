"""promtool scenarios of the regression, blind-spot and fleet alerts, generated from the mixin
config: what an SRE who leaves the alerts on for a year meets (issue 15's table and defects).

A scenario is a probe's rounds over days: its speedup (None where the exporter could not tell
and exported none), its Python identity and the pods that reported it. Inputs are shaped as
the exporter sends them (promtool_inputs.py); rules are evaluated at the state group's
interval, the state group before the alerts (as the `for` of an alert counts anyway).

When an alert fires is not guessed: `Timeline.level` replays the current-level rule (the
median of the last hour's samples of each pod, averaged over the host's pods) over the same
samples, and the state machine's documented steps give the rest (held at the first
evaluation below keep x reference, the alert `for` later; released regression_memory after).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from dashboards.alerting import STEP_LABELS, query_value
from dashboards.alerts import alerts_group
from dashboards.mixin_config import MixinConfig, seconds
from dashboards.promtool_inputs import (
    DAY,
    ROUND,
    ROUND_OFFSET,
    ROUNDS_PER_HOUR,
    SCRAPE,
    SCRAPES_PER_ROUND,
    Target,
    Value,
    case,
    const,
    cycle,
    duration_text,
    jitter,
    series,
    silent,
    unit_test_file,
)
from dashboards.promtool_inputs import fires as _fires
from dashboards.recording import STATE_GROUP, reference

RULE_FILES = ["../rules/pyparallel-recording.yml", "../rules/pyparallel-alerts.yml"]
STEP = ("default", "pure_python", "threads", 2)


@dataclass(frozen=True)
class Identity:
    version: str = "3.13.5"
    free_threaded: bool = True
    implementation: str = "cpython"

    def labels(self) -> dict[str, str]:
        return {"version": self.version, "implementation": self.implementation,
                "free_threaded_build": str(self.free_threaded).lower()}

    def text(self) -> str:
        """As the alerts write it: "cpython 3.13.5t"."""
        return f"{self.implementation} {self.version}{'t' if self.free_threaded else ''}"


OLD, NEW = Identity("3.13.5"), Identity("3.14.0")


@dataclass
class Pod:
    """A scrape target that reported the probe in rounds [start, end)."""

    target: Target
    start: int = 0
    end: Optional[int] = None


@dataclass
class Timeline:
    """One probe step on one host, round by round."""

    config: MixinConfig
    speedup: list[Value]
    identities: Optional[list[Identity]] = None  # one per round; default OLD throughout
    pods: list[Pod] = field(default_factory=list)
    step: tuple[str, str, str, int] = STEP
    gone_from: Optional[int] = None  # the exporter stops reporting at this round
    evaluation: int = 0  # seconds between rule evaluations; 0: the state group's interval

    def __post_init__(self) -> None:
        if not self.pods:
            self.pods = [Pod(Target(self.config))]
        if self.identities is None:
            self.identities = [OLD] * len(self.speedup)
        self.evaluation = self.evaluation or seconds(self.config.state_interval)

    @property
    def rounds(self) -> int:
        return len(self.speedup) if self.gone_from is None else self.gone_from

    def _span(self, pod: Pod, values: Sequence[Value]) -> list[Value]:
        end = min(pod.end if pod.end is not None else self.rounds, self.rounds)
        out: list[Value] = [None] * pod.start + list(values[pod.start:end])
        return out + ["stale"] if end < len(self.speedup) else out

    def inputs(self) -> list[dict[str, str]]:
        assert self.identities is not None
        out = []
        for pod in self.pods:
            step = pod.target.step(*self.step)
            conclusive: list[Value] = [0.0 if v is None else 1.0 for v in self.speedup]
            out += [series("pyparallel_speedup_ratio", step, self._span(pod, self.speedup)),
                    series("pyparallel_step_conclusive", step, self._span(pod, conclusive)),
                    series("pyparallel_speedup_unsteady", step, self._span(pod, const(0, len(self.speedup)))),
                    series("pyparallel_probe_success", step, self._span(pod, const(1, len(self.speedup)))),
                    series("pyparallel_exporter_build_info", {**pod.target.labels, "version": "0.1.0"},
                           self._span(pod, const(1, len(self.speedup))))]
            role = {**pod.target.labels, "interpreter": self.step[0]}
            for identity in dict.fromkeys(self.identities):
                current: list[Value] = [1.0 if i == identity else None for i in self.identities]
                ends = [r for r in range(1, len(current)) if current[r - 1] is not None and current[r] is None]
                for r in ends:
                    current[r] = "stale"
                out.append(series("pyparallel_python_info", {**role, **identity.labels()}, self._span(pod, current)))
        return out

    def node_labels(self) -> dict[str, str]:
        return self.pods[-1].target.node_step(*self.step)

    # --- the current level, replayed -----------------------------------------------------

    def _samples(self, pod: Pod, t: int) -> list[float]:
        """The pod's speedup samples in the median window ending at t (inclusive)."""
        window = seconds(self.config.speedup_median_window)
        values = self._span(pod, self.speedup)
        out = []
        for r, value in enumerate(values):
            if not isinstance(value, float):
                continue
            for j in range(SCRAPES_PER_ROUND):
                stamp = r * ROUND + ROUND_OFFSET + j * SCRAPE
                if t - window <= stamp <= t:
                    out.append(value)
        return out

    def level(self, t: int) -> Optional[float]:
        """The recorded current level at evaluation time t (None: no conclusive sample)."""
        medians = [quantile(0.5, s) for s in (self._samples(pod, t) for pod in self.pods) if s]
        return sum(medians) / len(medians) if medians else None

    def evaluations(self) -> range:
        return range(0, len(self.speedup) * ROUND + 1, self.evaluation)

    def first_level(self) -> int:
        """The first evaluation with a current level (the probe's first_seen)."""
        return next(t for t in self.evaluations() if self.level(t) is not None)

    def held_at(self, after_round: int, reference_level: float) -> int:
        """The first evaluation after `after_round` whose level is below keep x reference."""
        keep = self.config.keep
        return next(t for t in self.evaluations()
                    if t > after_round * ROUND and (lv := self.level(t)) is not None and lv < keep * reference_level)

    def learned(self) -> int:
        """The first evaluation at which the probe has baseline_min_history of history."""
        first = self.first_level()
        return (first + seconds(self.config.baseline_min_history)) // self.evaluation * self.evaluation + self.evaluation

    def fires_at(self, after_round: int, reference_level: float) -> int:
        """When a regression alert fires for a drop after `after_round`: held (and learned),
        then the alert's `for`, counted in evaluations."""
        active = max(self.held_at(after_round, reference_level), self.learned())
        return active + -(-seconds(self.config.rounds_for) // self.evaluation) * self.evaluation

    def released_at(self, held: int) -> int:
        """The evaluation at which a hold that began at `held` ends by regression_memory."""
        return (held + seconds(self.config.regression_memory)) // self.evaluation * self.evaluation + self.evaluation


def quantile(q: float, values: Sequence[float]) -> float:
    """PromQL's quantile: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def at(t: int) -> str:
    return duration_text(t)


# --- expectations ------------------------------------------------------------------------


def _fire(c: MixinConfig, name: str, t: int, labels: dict[str, str], value: float,
          old: Optional[float] = None) -> dict[str, Any]:
    queries = {}
    if old is not None:
        queries[query_value(c, reference(c), c.fresh_window, (c.host_label, *STEP_LABELS))] = old
    return _fires([alerts_group(c)], name, at(t), labels, value, queries)


def regressed(c: MixinConfig, t: int, timeline: Timeline, old: float, python: Identity = OLD) -> dict[str, Any]:
    """PyParallelSpeedupRegressed fires at t, from the reference `old` to the level at t."""
    level = timeline.level(t)
    assert level is not None
    return _fire(c, "PyParallelSpeedupRegressed", t, {**timeline.node_labels(), "python": python.text()}, level, old)


def upgraded(c: MixinConfig, t: int, timeline: Timeline, old: float, before: Identity = OLD,
             after: Identity = NEW) -> dict[str, Any]:
    """PyParallelSpeedupDroppedAfterPythonUpgrade fires at t, from `old` with `before` to the level at t."""
    level = timeline.level(t)
    assert level is not None
    labels = {**timeline.node_labels(), "from": before.text(), "to": after.text()}
    return _fire(c, "PyParallelSpeedupDroppedAfterPythonUpgrade", t, labels, level, old)


def quiet(t: int) -> list[dict[str, Any]]:
    """Neither regression alert fires at t."""
    return [silent("PyParallelSpeedupRegressed", at(t)), silent("PyParallelSpeedupDroppedAfterPythonUpgrade", at(t))]


# --- the scenarios -----------------------------------------------------------------------


def _history(c: MixinConfig) -> int:
    """Rounds of history before a drop: the learning time and two hours."""
    return seconds(c.baseline_min_history) // ROUND + 2 * ROUNDS_PER_HOUR


def persistent_regression(c: MixinConfig) -> list[dict[str, Any]]:
    """A drop that is fixed clears, a steady noisy speedup fires nothing (evaluated at the
    state group's interval: the timings the runbook quotes)."""
    before = _history(c)
    step = seconds(c.state_interval)
    fixed_at = before + 6 * ROUNDS_PER_HOUR
    fixed = Timeline(c, cycle(1.9, before) + cycle(1.0, fixed_at - before) + cycle(1.9, 4 * ROUNDS_PER_HOUR))
    fire = fixed.fires_at(before, 1.9)
    recovered = next(t for t in fixed.evaluations() if t > fixed_at * ROUND
                     and (lv := fixed.level(t)) is not None and lv >= c.recover * 1.9)
    tests = [case(
        f"A drop from 1.9 to 1.0 (±25 %) fires {duration_text(fire - before * ROUND)} after it; fixed 6 h later, "
        f"it clears {duration_text(recovered - fixed_at * ROUND)} after the fix",
        fixed.inputs(),
        [*quiet(fire - step),
         regressed(c, fire, fixed, 1.9),
         regressed(c, recovered - step, fixed, 1.9),
         *quiet(recovered)],
    )]
    steady = Timeline(c, jitter(1.9, before + 2 * DAY, 41))
    tests.append(case(
        "A steady speedup with ±25 % noise fires nothing over three days",
        steady.inputs(),
        [check for t in range(before * ROUND, (before + 2 * DAY) * ROUND, 3 * 3600) for check in quiet(t)],
    ))
    return tests


def regression_memory(c: MixinConfig) -> list[dict[str, Any]]:
    """A drop nobody fixes keeps firing until regression_memory has passed (the rolling
    baseline absorbed it in ~13 h; the upgrade alert resolved after ~6 d), then the new level
    is the reference. Evaluated every 30 minutes (the state machine is the same at any
    interval; only the timings are coarser) to keep the 16-day test short."""
    before = _history(c)
    after = seconds(c.regression_memory) // ROUND + 3 * ROUNDS_PER_HOUR
    coarse = 6 * seconds(c.state_interval)
    tests = []
    for kind, identities in (("", None), (" after a 3.13 -> 3.14 upgrade", [OLD] * before + [NEW] * after)):
        timeline = Timeline(c, cycle(1.9, before) + cycle(1.0, after), identities, evaluation=coarse)
        held = timeline.held_at(before, 1.9)
        fire = timeline.fires_at(before, 1.9)
        released = timeline.released_at(held)

        def expect(t: int) -> dict[str, Any]:
            if identities is None:
                return regressed(c, t, timeline, 1.9)
            return upgraded(c, t, timeline, 1.9)

        late = [fire + hours * 3600 for hours in (13, 6 * 24, 7 * 24, 13 * 24)]
        tests.append(case(
            f"A drop from 1.9 to 1.0{kind} that nobody fixes keeps firing at 13 h, 6 d, 7 d and 13 d and until "
            f"{c.regression_memory} after it began; then the new level is the reference and it ends",
            timeline.inputs(),
            [expect(fire), *(expect(t) for t in late), expect(released - coarse),
             *quiet(released), *quiet(released + 6 * 3600)],
        ))
    return tests


def scenario_test_files(c: MixinConfig) -> dict[str, dict[str, Any]]:
    """File name (in deploy/prometheus/tests) -> promtool test document."""
    def document(tests: list[dict[str, Any]], evaluation: int = 0) -> dict[str, Any]:
        doc = unit_test_file(RULE_FILES, tests, duration_text(evaluation) if evaluation else c.state_interval)
        doc["group_eval_order"] = [STATE_GROUP, "pyparallel.alerts"]
        return doc

    return {
        "regression_test.yml": document(persistent_regression(c)),
        "memory_test.yml": document(regression_memory(c), 6 * seconds(c.state_interval)),
    }
