"""Alerts on the recorded series only (`pyparallel-alerts.yml`): regressions, blind spots and
absent hosts. They answer the same from the Prometheus that records the series as from a
central one that receives them by remote write or federation.

They read the state group's series over ``MixinConfig.fresh_window`` (two of its evaluations
and a margin): a series written every few minutes, read at a fixed lookback by a group with
another phase, would vanish whenever an evaluation came late or a remote write lagged.
"""

from __future__ import annotations

from typing import Any

from dashboards.alerting import STEP_LABELS, VALUE, alert, identity_text, probe_text, query_value
from dashboards.mixin_config import CONFIG, MixinConfig, seconds
from dashboards.recording import (
    blind_since,
    current_identity,
    first_seen,
    held_since,
    host_last_seen,
    identity_since,
    probe_success,
    reference,
    reference_identity,
    speedup_median,
    without_host_label,
)

ALERTS_GROUP = "pyparallel.alerts"


class _Fresh:
    """The state series as the alerts read them."""

    def __init__(self, c: MixinConfig) -> None:
        self.c = c
        sel, window = c.exporter_selector, c.fresh_window
        by = c.probe_by
        self.level = f"last_over_time({speedup_median(c)}{{{sel}, {c.regression_mode_selector}}}[{window}])"
        self.held = f"last_over_time({held_since(c)}{{{sel}}}[{window}]) > 0"
        self.learned = f"last_over_time({first_seen(c)}{{{sel}}}[{window}]) < time() - {seconds(c.baseline_min_history)}"
        self.reference_identity = f"topk by ({by}) (1, last_over_time({reference_identity(c)}{{{sel}}}[{window}]))"
        self.current = current_identity(c, f"last_over_time({identity_since(c)}{{{sel}}}[{window}])")

    def regressed(self) -> str:
        """The current level of every probe held below its reference, once learned."""
        by = self.c.probe_by
        return f"{self.level}\nand on({by}) {self.held}\nand on({by}) {self.learned}"

    def same_identity(self) -> str:
        """References measured with the Python identity that runs now."""
        return f"{self.reference_identity} and on({self.c.role_by}, version, implementation, free_threaded_build) {self.current}"


def _old_and_new(c: MixinConfig) -> tuple[str, str]:
    """Description text of the reference (read back by a template query) and the current speedup."""
    return query_value(c, reference(c), c.fresh_window, (c.host_label, *STEP_LABELS)), VALUE


def _regression_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    f = _Fresh(c)
    by, role = c.probe_by, c.role_by
    old, new = _old_and_new(c)
    drop = round(c.speedup_regression_drop * 100)
    recover = f"{c.recover * 100:g}"
    lasts = (f"It fires until the speedup is back above {recover}% of the reference, or for "
             f"{c.regression_memory}, after which the new level becomes the reference; to accept the "
             "new level sooner, silence this alert until then (see the runbook).")
    changed = f"{f.reference_identity}\n  unless on({by}) (\n    {f.same_identity()}\n  )"
    pair = (f"{identity_text(changed, 'from')}\n"
            f"* on({role}) group_left(to)\n"
            f"{identity_text(f.current, 'to')}")
    return [
        alert(
            c,
            # The reference is held from the moment the level falls below it, so the alert
            # stays until the speedup recovers (or regression_memory passes): a rolling
            # baseline would absorb the drop and resolve it by itself.
            "PyParallelSpeedupRegressed",
            f"(\n{f.regressed()}\n)\n"
            f"* on({by}) group_left(python)\n"
            f"(\n{identity_text(f.same_identity(), 'python')} * 0 + 1\n)",
            c.rounds_for,
            "Parallel speedup of {{ $labels.python }} regressed on {{ $labels.%s }}." % c.host_label,
            f"The speedup of {probe_text(c)} fell from its reference {old} to {new} "
            f"(more than {drop}% lower) with the same Python, {{{{ $labels.python }}}}. {lasts}",
        ),
        alert(
            c,
            # The reference keeps the identity it was measured with until a new identity has
            # run healthy for a whole median window, so a drop that comes with an upgrade is
            # always told against the Python before it.
            "PyParallelSpeedupDroppedAfterPythonUpgrade",
            f"(\n{f.regressed()}\n)\n"
            f"* on({by}) group_left(from, to)\n"
            f"(\n{pair}\n* 0 + 1\n)",
            c.rounds_for,
            "Parallel speedup dropped on {{ $labels.%s }} after {{ $labels.from }} -> {{ $labels.to }}." % c.host_label,
            f"The speedup of {probe_text(c)} was {old} with {{{{ $labels.from }}}} and is {new} with "
            f"{{{{ $labels.to }}}} (more than {drop}% lower). {lasts}",
        ),
    ]


def _coverage_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    sel, window = c.exporter_selector, c.fresh_window
    host = f"{{{{ $labels.{c.host_label} }}}}"
    return [
        alert(
            c,
            # No figure is ever shown as a low speedup on a busy host (the exporter says
            # "cannot tell"); this says when that has lasted so long that a regression could
            # have passed unseen.
            "PyParallelRegressionDetectionBlind",
            f"last_over_time({blind_since(c)}{{{sel}, {c.regression_mode_selector}}}[{window}]) > 0\n"
            f"  < time() - {seconds(c.blind_after)}",
            c.rounds_for,
            f"Regression detection is blind on {host}.",
            f"Every round of {probe_text(c)} since {{{{ $value | humanizeTimestamp }}}} (more than "
            f"{c.blind_after}) was inconclusive: other load left fewer free cores than its workers can use, "
            "so a drop in Python's parallelism would go unseen. It resolves at the first conclusive round; "
            "a regression that happened meanwhile fires then.",
        ),
        alert(
            c,
            # up == 0 covers a target that is still discovered; this covers one that is gone
            # (the pod, the file_sd entry, the whole scraping Prometheus).
            "PyParallelExporterAbsent",
            f"time() - last_over_time({host_last_seen(c)}{{{sel}}}[{window}]) > {seconds(c.absent_after)}",
            "0s",
            f"No parallelism exporter reports from {host}.",
            f"No exporter on {host} (job {{{{ $labels.job }}}}) has been scraped for {{{{ $value | humanizeDuration }}}}, "
            f"so nothing about its Python's parallelism is known. The host is forgotten, and this alert "
            f"ends, {c.forget_after} after it was last seen.",
        ),
        alert(
            c,
            "PyParallelHostLabelMissing",
            f"last_over_time({without_host_label(c)}{{{sel}}}[{window}])",
            c.host_label_missing_for,
            f"The exporter at {{{{ $labels.{c.host_fallback_label} }}}} has no {c.host_label} label.",
            f"The scrape config gives {{{{ $labels.{c.host_fallback_label} }}}} (job {{{{ $labels.job }}}}) no "
            f"`{c.host_label}` label, so the rules name its host by `{c.host_fallback_label}`. That identity "
            "changes with every new scrape address (a pod rollout, a port): each change starts its "
            "speedup history afresh. Set the host label in the scrape config.",
        ),
    ]


def _probe_health_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    sel = c.exporter_selector
    return [
        alert(
            c,
            # Time-weighted share of failed rounds: catches a probe that fails every other
            # round, which never fails twice in a row. Read from the recorded success (one
            # sample per state evaluation): 6 hours of the exporter's own 15-second samples
            # for every probe of a fleet cost seconds per evaluation.
            "PyParallelProbeFailureRatioHigh",
            f"1 - avg_over_time({probe_success(c)}{{{sel}}}[{c.failure_ratio_window}]) > {c.failure_ratio_threshold:g}",
            c.failure_ratio_for,
            "A parallelism probe fails often.",
            f"The probe {probe_text(c)} failed in {{{{ $value | humanizePercentage }}}} of the last "
            f"{c.failure_ratio_window}, more than {c.failure_ratio_threshold:.0%}.",
        ),
    ]


def alerts_group(config: MixinConfig = CONFIG) -> dict[str, Any]:
    """The `pyparallel.alerts` group, in Prometheus rule-file form."""
    return {"name": ALERTS_GROUP,
            "rules": _regression_alerts(config) + _coverage_alerts(config) + _probe_health_alerts(config)}
