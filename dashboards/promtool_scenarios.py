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
from functools import partial
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
from dashboards.recording import STATE_GROUP, reference, reference_identity

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


# --- the timelines (shared with timings.py, which writes the runbook's table from them) -----


def fixed_drop(c: MixinConfig) -> tuple[Timeline, int, int]:
    """1.9 for a day and two hours, 1.0 for 6 h, 1.9 again: (timeline, drop round, fix round)."""
    before = _history(c)
    fixed_at = before + 6 * ROUNDS_PER_HOUR
    return (Timeline(c, cycle(1.9, before) + cycle(1.0, fixed_at - before) + cycle(1.9, 4 * ROUNDS_PER_HOUR)),
            before, fixed_at)


def version_bump(c: MixinConfig, after: Identity = NEW) -> tuple[Timeline, int]:
    """3.13t at 1.9, then `after` at 1.0 under the same role: (timeline, upgrade round)."""
    before = _history(c)
    rounds = 4 * ROUNDS_PER_HOUR
    return Timeline(c, cycle(1.9, before) + cycle(1.0, rounds), [OLD] * before + [after] * rounds), before


def pod_rollout(c: MixinConfig, speedup_after: float = 1.0) -> tuple[Timeline, int]:
    """A new pod (new instance, same node) with Python 3.14 from the upgrade round on."""
    before = _history(c)
    rounds = 4 * ROUNDS_PER_HOUR
    pod_a = Target(c, instance="10.42.0.17:9860", host="node-1")
    pod_b = Target(c, instance="10.42.0.31:9860", host="node-1")
    return Timeline(c, cycle(1.9, before) + cycle(speedup_after, rounds), [OLD] * before + [NEW] * rounds,
                    pods=[Pod(pod_a, 0, before), Pod(pod_b, before)]), before


def hidden_drop(c: MixinConfig) -> tuple[Timeline, int]:
    """1.9, then 16 h in which every round is inconclusive, then 1.0: (timeline, quiet round)."""
    before = _history(c)
    busy = 16 * ROUNDS_PER_HOUR
    return Timeline(c, cycle(1.9, before) + [None] * busy + cycle(1.0, 3 * ROUNDS_PER_HOUR)), before + busy


def early_upgrade(c: MixinConfig) -> tuple[Timeline, int]:
    """An upgrade that halves the speedup after only 20 h of history."""
    young = DAY * 20 // 24
    rounds = 8 * ROUNDS_PER_HOUR
    return Timeline(c, cycle(1.9, young) + cycle(1.0, rounds), [OLD] * young + [NEW] * rounds), young


def blind_host(c: MixinConfig) -> tuple[Timeline, int]:
    """Every round inconclusive from the start: (timeline, when detection went blind)."""
    return Timeline(c, [None] * (DAY + 3 * ROUNDS_PER_HOUR)), seconds(c.state_interval)


def blind_fires_at(c: MixinConfig, since: int) -> int:
    step = seconds(c.state_interval)
    return (since + seconds(c.blind_after)) // step * step + step + -(-seconds(c.rounds_for) // step) * step


def recovered_at(timeline: Timeline, fix_round: int, reference_level: float) -> int:
    """The first evaluation after the fix whose level is back above recover x reference."""
    return next(t for t in timeline.evaluations() if t > fix_round * ROUND
                and (lv := timeline.level(t)) is not None and lv >= timeline.config.recover * reference_level)


# --- the scenarios -----------------------------------------------------------------------


def persistent_regression(c: MixinConfig) -> list[dict[str, Any]]:
    """A drop that is fixed clears, a steady noisy speedup fires nothing (evaluated at the
    state group's interval: the timings the runbook quotes)."""
    step = seconds(c.state_interval)
    fixed, before, fixed_at = fixed_drop(c)
    fire = fixed.fires_at(before, 1.9)
    recovered = recovered_at(fixed, fixed_at, 1.9)
    tests = [case(
        f"A drop from 1.9 to 1.0 (±25 %) fires {duration_text(fire - before * ROUND)} after it; fixed 6 h later, "
        f"it clears {duration_text(recovered - fixed_at * ROUND)} after the fix",
        fixed.inputs(),
        [*quiet(fire - step),
         regressed(c, fire, fixed, 1.9),
         silent("PyParallelHostLabelMissing", at(fire)),
         regressed(c, recovered - step, fixed, 1.9),
         *quiet(recovered)],
    )]
    steady = Timeline(c, jitter(1.9, before + DAY, 41))
    tests.append(case(
        "A steady speedup with ±25 % noise fires nothing over two days",
        steady.inputs(),
        [check for t in range(before * ROUND, (before + DAY) * ROUND, 3 * 3600) for check in quiet(t)],
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

        expect = (partial(regressed, c, timeline=timeline, old=1.9) if identities is None
                  else partial(upgraded, c, timeline=timeline, old=1.9))
        late = [fire + hours * 3600 for hours in (13, 6 * 24, 7 * 24, 13 * 24)]
        tests.append(case(
            f"A drop from 1.9 to 1.0{kind} that nobody fixes keeps firing at 13 h, 6 d, 7 d and 13 d and until "
            f"{c.regression_memory} after it began; then the new level is the reference and it ends",
            timeline.inputs(),
            [expect(t=fire), *(expect(t=t) for t in late), expect(t=released - coarse),
             *quiet(released), *quiet(released + 6 * 3600)],
        ))
    return tests


def busy_host(c: MixinConfig) -> list[dict[str, Any]]:
    """Other load holds an alert back only while the exporter cannot tell (too few free
    cores for the workers); when that lasts, a routed warning says so; a drop that happened
    meanwhile fires once the host is quiet."""
    before = _history(c)
    step = seconds(c.state_interval)
    tests = []
    # 0.8 cores of other load on 4 usable cores leave 3.2 free for 2 workers: conclusive. The
    # old fixed 0.5-core hold-back suppressed this upgrade drop forever.
    roomy = Timeline(c, cycle(1.9, before + 2 * ROUNDS_PER_HOUR) + cycle(1.0, 3 * ROUNDS_PER_HOUR),
                     [OLD] * (before + 2 * ROUNDS_PER_HOUR) + [NEW] * 3 * ROUNDS_PER_HOUR)
    load = series("pyparallel_interference_cores", roomy.pods[0].target.step(*STEP), const(0.8, len(roomy.speedup)))
    usable = series("pyparallel_host_cpus", {**roomy.pods[0].target.labels, "kind": "usable"},
                    const(4, len(roomy.speedup)))
    fire = roomy.fires_at(before + 2 * ROUNDS_PER_HOUR, 1.9)
    tests.append(case(
        "Constant 0.8 cores of other load on 4 usable cores (conclusive rounds), then an upgrade that halves the "
        "threads speedup: the upgrade alert fires (a warning)",
        [*roomy.inputs(), load, usable],
        [silent("PyParallelSpeedupDroppedAfterPythonUpgrade", at(fire - step)),
         upgraded(c, fire, roomy, 1.9),
         silent("PyParallelRegressionDetectionBlind", at(fire))],
    ))
    # 0.8 cores on 2 usable cores leave 1.2 free for 2 workers: every round "cannot tell".
    cramped, blind_from = blind_host(c)
    blind_fire = blind_fires_at(c, blind_from)
    labels = cramped.node_labels()
    tests.append(case(
        "Constant 0.8 cores of other load on 2 usable cores: no round is conclusive, so no speedup is exported and "
        f"no regression can be seen; after {c.blind_after} a routed warning says detection is blind since then",
        [*cramped.inputs(),
         series("pyparallel_interference_cores", cramped.pods[0].target.step(*STEP), const(0.8, len(cramped.speedup)))],
        [silent("PyParallelRegressionDetectionBlind", at(blind_fire - step)),
         _fires([alerts_group(c)], "PyParallelRegressionDetectionBlind", at(blind_fire), labels, blind_from),
         *quiet(blind_fire)],
    ))
    # A drop during 16 h in which the host was too busy to tell, then a quiet host.
    hidden, quiet_from = hidden_drop(c)
    fire = hidden.fires_at(quiet_from, 1.9)
    tests.append(case(
        "A regression during 16 h of other load (every round inconclusive), then a quiet host: nothing fires while "
        f"the host is busy (blind for less than {c.blind_after}); the regression fires "
        f"{duration_text(fire - quiet_from * ROUND)} after the host is quiet",
        hidden.inputs(),
        [*quiet(quiet_from * ROUND),
         silent("PyParallelRegressionDetectionBlind", at(quiet_from * ROUND)),
         *quiet(fire - step),
         regressed(c, fire, hidden, 1.9)],
    ))
    return tests


def host_identity(c: MixinConfig) -> list[dict[str, Any]]:
    """Any scrape config: without the host label, the fallback label names the host."""
    before = _history(c)
    targets = [Target(c, instance=f"10.0.0.{i}:9860", host=None) for i in range(1, 5)]
    timelines = [Timeline(c, cycle(1.9, before) + cycle(1.0 if i == 2 else 1.9, 3 * ROUNDS_PER_HOUR),
                          pods=[Pod(target)]) for i, target in enumerate(targets)]
    fire = timelines[2].fires_at(before, 1.9)
    inputs = [item for timeline in timelines for item in timeline.inputs()]
    missing = [_fires([alerts_group(c)], "PyParallelHostLabelMissing", at(fire), t.alert_labels, 1)["exp_alerts"][0]
               for t in targets]
    return [case(
        f"A scrape config without a {c.host_label} label, 4 hosts at 1.9, one drops to 1.0: the alert names that "
        f"host by its {c.host_fallback_label} (hosts are not averaged together), and each exporter gets a warning "
        "that its host identity is unstable",
        inputs,
        [regressed(c, fire, timelines[2], 1.9),
         {"alertname": "PyParallelHostLabelMissing", "eval_time": at(fire), "exp_alerts": missing}],
    )]


def identity_changes(c: MixinConfig) -> list[dict[str, Any]]:
    """An upgrade is a change of version, implementation or build, under the same role."""
    before = _history(c)
    step = seconds(c.state_interval)
    after = 4 * ROUNDS_PER_HOUR
    tests = []
    for changed, what in ((Identity("3.13.5", free_threaded=False),
                           "3.13t replaced by the 3.13 GIL build (the same version string)"),
                          (NEW, "A 3.13 -> 3.14 bump under the default role")):
        bump, before = version_bump(c, changed)
        fire = bump.fires_at(before, 1.9)
        tests.append(case(
            f"{what} that halves the threads speedup fires the upgrade alert from {OLD.text()} to {changed.text()} "
            f"{duration_text(fire - before * ROUND)} after it, naming both Pythons and both speedups",
            bump.inputs(),
            [silent("PyParallelSpeedupDroppedAfterPythonUpgrade", at(fire - step)),
             upgraded(c, fire, bump, 1.9, OLD, changed),
             silent("PyParallelSpeedupRegressed", at(fire))],
        ))
    same = Timeline(c, jitter(1.9, before, 51) + jitter(1.9, after, 52), [OLD] * before + [NEW] * after)
    settled = (before + after) * ROUND
    tests.append(case(
        "A 3.13 -> 3.14 bump that keeps the speedup (±25 % noise) fires nothing, and the reference moves on to 3.14 "
        f"once it ran healthy for {c.identity_settle}",
        same.inputs(),
        [check for t in range(before * ROUND, settled, 3600) for check in quiet(t)],
        [{"expr": f"count by (version) ({reference_identity(c)})", "eval_time": at(settled),
          "exp_samples": [{"labels": '{version="3.14.0"}', "value": 1}]}],
    ))
    early, young = early_upgrade(c)
    fire = early.fires_at(young, 1.9)
    tests.append(case(
        f"An upgrade after only 20 h of history that halves the speedup fires the upgrade alert once the probe has "
        f"{c.baseline_min_history} of history",
        early.inputs(),
        [*quiet(fire - step), upgraded(c, fire, early, 1.9)],
    ))
    rollout, before = pod_rollout(c)
    fire = rollout.fires_at(before, 1.9)
    tests.append(case(
        "A Kubernetes rollout to an image with Python 3.14 (new pod, new instance, same node) that halves the "
        "speedup fires the upgrade alert on the node",
        rollout.inputs(),
        [*quiet(fire - step), upgraded(c, fire, rollout, 1.9)],
    ))
    moved = Timeline(c, jitter(1.9, before, 53) + jitter(1.9, after, 54), pods=rollout.pods)
    tests.append(case(
        "A Kubernetes rollout that keeps Python and the speedup (±25 % noise) fires nothing",
        moved.inputs(),
        [check for t in range(before * ROUND, (before + after) * ROUND, 3600) for check in quiet(t)],
    ))
    return tests


def absent_exporter(c: MixinConfig) -> list[dict[str, Any]]:
    """An exporter that disappears (no `up` series left to be 0) is reported, then forgotten."""
    step = seconds(c.state_interval)
    rounds = 2 * ROUNDS_PER_HOUR
    gone = Timeline(c, cycle(1.9, rounds + seconds(c.forget_after) // ROUND + ROUNDS_PER_HOUR), gone_from=rounds)
    last = rounds * ROUND  # the last evaluation that saw its series (round rounds - 1)
    fire = (last + seconds(c.absent_after)) // step * step + step
    host = {k: v for k, v in gone.pods[0].target.alert_labels.items() if k != "instance"}
    # The host's last-seen series is written until forget_after has passed; the alert reads
    # it over the fresh window, so it ends at the first evaluation past that window.
    last_written = (last + seconds(c.forget_after) - 1) // step * step
    forgotten = (last_written + seconds(c.fresh_window)) // step * step + step
    return [case(
        f"An exporter whose series all end (its pod deleted) is reported absent after {c.absent_after} and forgotten "
        f"after {c.forget_after}",
        gone.inputs(),
        [silent("PyParallelExporterAbsent", at(fire - step)),
         _fires([alerts_group(c)], "PyParallelExporterAbsent", at(fire), host, fire - last),
         silent("PyParallelExporterAbsent", at(forgotten))],
    )]


def recording(c: MixinConfig) -> list[dict[str, Any]]:
    """Every recording rule's value, over a day and a half with a rollout to 3.14 that keeps
    the speedup, a free-threaded role, a busy hour and a second exporter without a host label."""
    from dashboards import recording as r

    before = _history(c)
    after = 5 * ROUNDS_PER_HOUR
    pod_a = Target(c, instance="10.42.0.17:9860", host="node-1")
    pod_b = Target(c, instance="10.42.0.31:9860", host="node-1")
    busy = before + 2 * ROUNDS_PER_HOUR  # a busy hour two hours after the rollout
    speedup = const(1.9, busy) + [None] * ROUNDS_PER_HOUR + const(1.9, before + after - busy - ROUNDS_PER_HOUR)
    timeline = Timeline(c, speedup, [OLD] * before + [NEW] * after, pods=[Pod(pod_a, 0, before), Pod(pod_b, before)])
    unnamed = Target(c, instance="10.0.0.9:9860", host=None)
    rounds = len(speedup)
    inputs = [*timeline.inputs(),
              series("pyparallel_efficiency_ratio", pod_b.step(*STEP), [None] * before + const(0.95, after)),
              series("pyparallel_gil_enabled", {**pod_b.labels, "interpreter": "default"},
                     [None] * before + const(0, after)),
              series("pyparallel_probe_last_success_timestamp_seconds", pod_b.step(*STEP),
                     [None] * before + [float(k * ROUND) for k in range(before, rounds)]),
              series("pyparallel_exporter_build_info", {**unnamed.labels, "version": "0.1.0"}, const(1, rounds))]
    node = timeline.node_labels()
    role = {k: v for k, v in node.items() if k not in ("workload", "mode", "workers")}
    site = {k: v for k, v in role.items() if k != "interpreter"}
    step = seconds(c.state_interval)
    busy_from = (busy + 1) * ROUND  # the first evaluation that sees the busy hour's first round
    end = rounds * ROUND
    held_out = before * ROUND - step

    def sample(record: str, t: int, labels: dict[str, str], value: float,
               *more: tuple[dict[str, str], float]) -> dict[str, Any]:
        def text(labels: dict[str, str]) -> str:
            return "{" + ", ".join(f'{k}="{v}"' for k, v in {"__name__": record, **labels}.items()) + "}"

        return {"expr": f"{record}{{{c.exporter_selector}}}", "eval_time": at(t),
                "exp_samples": [{"labels": text(labels), "value": value}]
                + [{"labels": text(other), "value": number} for other, number in more]}

    first = timeline.first_level()
    exprs = [
        sample(r.speedup_median(c), held_out, node, 1.9),
        sample(r.efficiency_last(c), end, node, 0.95),
        sample(r.reference(c), end, node, 1.9),
        sample(r.reference_identity(c), held_out, {**node, **OLD.labels()}, held_out),
        sample(r.held_since(c), end, node, 0),
        sample(r.first_seen(c), end, node, first),
        sample(r.blind_since(c), busy_from + 30 * 60, node, busy_from),
        sample(r.blind_since(c), end, node, 0),
        sample(r.probe_last_seen(c), end, node, end),
        sample(r.probe_success(c), end, node, 1),
        sample(r.last_success(c), end, node, (rounds - 1) * ROUND),
        sample(r.host_targets(c), end, {**site, "instance": pod_b.instance}, 1, (unnamed.alert_labels, 1)),
        sample(r.host_last_seen(c), end, site, end,
               ({k: v for k, v in unnamed.alert_labels.items() if k != "instance"}, end)),
        sample(r.identity_since(c), end, {**role, **NEW.labels()}, (before + 1) * ROUND),
        sample(r.gil_enabled(c), end, role, 0),
        sample(r.without_host_label(c), end, unnamed.alert_labels, 1),
        sample(r.conclusive(c), busy_from + 30 * 60, node, 0),
        sample(r.conclusive(c), end, node, 1),
        *fleet_samples(c, end, node),
    ]
    return [case("Recording rules: per host across a rollout, the identity, a busy hour, a host without its label",
                 inputs, [], exprs)]


def probe_health(c: MixinConfig) -> list[dict[str, Any]]:
    """The share of failed rounds, from the recorded success (one sample per state evaluation)."""
    t = Target(c)
    step_labels = t.step(*STEP)
    window = seconds(c.failure_ratio_window)
    rounds = window // ROUND + 12
    evaluation = seconds(c.state_interval)

    def share(success: list[Value], at_: int) -> float:
        # The state group records each evaluation's last round; avg_over_time spans [at - window, at].
        recorded = [success[e // ROUND - 1] for e in range(evaluation, at_ + 1, evaluation)
                    if at_ - window <= e and e // ROUND - 1 >= 0]
        return 1 - sum(float(v) for v in recorded if isinstance(v, float)) / len(recorded)

    flaky: list[Value] = [float(i % 2 == 0) for i in range(rounds)]
    check = (rounds - 2) * ROUND
    rare = const(1.0, rounds)
    rare[rounds // 2] = 0.0
    return [case(
        f"PyParallelProbeFailureRatioHigh fires when every other round fails for {c.failure_ratio_window}",
        [series("pyparallel_probe_success", step_labels, flaky)],
        [silent("PyParallelProbeFailureRatioHigh", at(6 * ROUND)),
         _fires([alerts_group(c)], "PyParallelProbeFailureRatioHigh", at(check), t.node_step(*STEP),
                share(flaky, check))],
    ), case(
        "PyParallelProbeFailureRatioHigh stays silent for one failed round in the window",
        [series("pyparallel_probe_success", step_labels, rare)],
        [silent("PyParallelProbeFailureRatioHigh", at(check))],
    )]


def fleet_samples(c: MixinConfig, t: int, node: dict[str, str]) -> list[dict[str, Any]]:
    """The fleet aggregates of one healthy probe at its reference."""
    from dashboards import fleet_rules as f

    fleet = {k: v for k, v in node.items() if k in (*c.selector_labels, "workload", "mode")}

    def text(record: str, labels: dict[str, str]) -> str:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in {"__name__": record, **labels}.items()) + "}"

    quantiles = [{"labels": text(f.ratio_quantiles(c), {**fleet, "quantile": f"{q:g}"}), "value": 1}
                 for q in f.QUANTILES]
    return [{"expr": f"{f.ratio_quantiles(c)}{{{c.exporter_selector}}}", "eval_time": at(t), "exp_samples": quantiles},
            {"expr": f"{f.reference_ratio(c)}{{{c.exporter_selector}}}", "eval_time": at(t),
             "exp_samples": [{"labels": text(f.reference_ratio(c), node), "value": 1}]},
            *({"expr": f"{record}{{{c.exporter_selector}}}", "eval_time": at(t),
               "exp_samples": [{"labels": text(record, fleet), "value": 0}]}
              for record in (f.held_probes(c), f.blind_probes(c)))]


def scenario_test_files(c: MixinConfig) -> dict[str, dict[str, Any]]:
    """File name (in deploy/prometheus/tests) -> promtool test document."""
    def document(tests: list[dict[str, Any]], evaluation: int = 0) -> dict[str, Any]:
        doc = unit_test_file(RULE_FILES, tests, duration_text(evaluation) if evaluation else c.state_interval)
        doc["group_eval_order"] = [STATE_GROUP, "pyparallel.alerts"]
        return doc

    return {
        "regression_test.yml": document(persistent_regression(c)),
        "memory_test.yml": document(regression_memory(c), 6 * seconds(c.state_interval)),
        "busy_host_test.yml": document(busy_host(c)),
        "host_identity_test.yml": document(host_identity(c)),
        "upgrade_test.yml": document(identity_changes(c)),
        "absent_test.yml": document(absent_exporter(c)),
        "recording_test.yml": document(recording(c)),
        "probe_health_test.yml": document(probe_health(c)),
    }
