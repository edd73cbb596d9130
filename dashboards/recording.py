"""Recording rules (`level:metric:operation`): the per-host series the alerts and dashboards read.

They run where the exporters are scraped (they read the exporter's raw series) and are all a
central Prometheus, Thanos or Mimir needs: the fleet dashboard and `pyparallel-alerts.yml`
read nothing else (docs/prometheus-and-grafana.md, "Beyond one Prometheus").

Every series is per host (``MixinConfig.host_label``, filled from the fallback label where it
is missing) and interpreter role, never per scrape address, so a pod rollout (new
``instance``) and a Python upgrade (same role, new version) keep their history.

The state rules remember each probe's reference speedup without long windows: each reads its
own last value (`previous`: ``last_over_time(self[state_carry] offset 1s)``, the offset so a
rule later in the group reads the value before this evaluation's) and writes it again,
changed or not. A state series always has a value while its probe is remembered (0 means
"not held", "not blind"), because a series that stops is read back by ``last_over_time`` for
the whole carry window.
"""

from __future__ import annotations

from typing import Any

from dashboards.mixin_config import CONFIG, MixinConfig, seconds

STATE_GROUP = "pyparallel.state"
IDENTITY = "version, implementation, free_threaded_build"


def _level(config: MixinConfig) -> str:
    """Level of the per-probe rules: the host label, role and step labels."""
    return f"{config.host_label}_interpreter_workload_mode_workers"


def speedup_median(config: MixinConfig = CONFIG) -> str:
    """The current level: median speedup of each probe over the median window."""
    return f"{_level(config)}:pyparallel_speedup_ratio:median{config.speedup_median_window}"


def efficiency_last(config: MixinConfig = CONFIG) -> str:
    """Parallel efficiency (speedup / workers) of each probe's last conclusive round."""
    return f"{_level(config)}:pyparallel_efficiency_ratio:avg"


def reference(config: MixinConfig = CONFIG) -> str:
    """The speedup each probe is expected to keep (state)."""
    return f"{_level(config)}:pyparallel_speedup_ratio:reference"


def reference_identity(config: MixinConfig = CONFIG) -> str:
    """The Python identity the reference was measured with; value: when last confirmed (state)."""
    return f"{_level(config)}_identity:pyparallel_speedup_ratio:reference_confirmed"


def held_since(config: MixinConfig = CONFIG) -> str:
    """When the probe fell below its reference and the reference was held; 0 when not held (state)."""
    return f"{_level(config)}:pyparallel_speedup_ratio:held_since"


def first_seen(config: MixinConfig = CONFIG) -> str:
    """When the probe first had a current level (state)."""
    return f"{_level(config)}:pyparallel_speedup_ratio:first_seen"


def blind_since(config: MixinConfig = CONFIG) -> str:
    """Since when every round of the probe was inconclusive (cannot tell); 0 when the last was conclusive (state)."""
    return f"{_level(config)}:pyparallel_step_conclusive:blind_since"


def probe_last_seen(config: MixinConfig = CONFIG) -> str:
    """When the probe was last exported (state; forgotten after forget_after)."""
    return f"{_level(config)}:pyparallel_probe_success:last_seen"


def conclusive(config: MixinConfig = CONFIG) -> str:
    """1 when the probe's last round could show its parallelism (conclusive and steady), else 0."""
    return f"{_level(config)}:pyparallel_step_conclusive:last"


def probe_success(config: MixinConfig = CONFIG) -> str:
    """Whether the last round of each probe succeeded, on any of the host's exporters."""
    return f"{_level(config)}:pyparallel_probe_success:min"


def last_success(config: MixinConfig = CONFIG) -> str:
    """Time of each probe's last success."""
    return f"{_level(config)}:pyparallel_probe_last_success_timestamp_seconds:max"


def host_last_seen(config: MixinConfig = CONFIG) -> str:
    """When an exporter on the host was last scraped (state; forgotten after forget_after)."""
    return f"{config.host_label}:pyparallel_exporter_build_info:last_seen"


def host_targets(config: MixinConfig = CONFIG) -> str:
    """The scrape targets (instance) of each host: the dashboards' host -> instance map."""
    return f"{config.host_label}_instance:pyparallel_exporter_build_info:max"


def identity_since(config: MixinConfig = CONFIG) -> str:
    """Python identity (version, implementation, build) of each role; value: first seen (state)."""
    return f"{config.host_label}_interpreter_identity:pyparallel_python_info:since"


def gil_enabled(config: MixinConfig = CONFIG) -> str:
    """Whether the GIL was on at run time in each role."""
    return f"{config.host_label}_interpreter:pyparallel_gil_enabled:max"


def without_host_label(config: MixinConfig = CONFIG) -> str:
    """Exporters scraped without the host label (the fallback label names them)."""
    return f"{config.host_fallback_label}:pyparallel_exporter_build_info:without_{config.host_label}"


def previous(config: MixinConfig, record: str) -> str:
    """The value `record` had before this evaluation (up to state_carry ago)."""
    return f"last_over_time({record}{{{config.exporter_selector}}}[{config.state_carry}] offset 1s)"


def current_identity(config: MixinConfig, series: str) -> str:
    """The newest identity of each role among `series` (identity_since values): one per role."""
    return f"topk by ({config.role_by}) (1, {series})"


class _State:
    """The PromQL pieces of the state group for one config."""

    def __init__(self, c: MixinConfig) -> None:
        self.c = c
        sel = c.exporter_selector
        self.sel = sel
        self.level = f"{speedup_median(c)}{{{sel}, {c.regression_mode_selector}}}"
        self.previous_reference = previous(c, reference(c))
        self.previous_hold = previous(c, held_since(c))
        self.hold = f"{held_since(c)}{{{sel}}}"
        self.alive = f"{probe_last_seen(c)}{{{sel}}}"
        self.current = current_identity(c, f"{identity_since(c)}{{{sel}}}")

    def released(self) -> str:
        """Probes whose hold ended this evaluation because regression_memory passed (the hold
        rule writes -1 for that one evaluation)."""
        return f"({self.hold} == -1)"

    def new(self) -> str:
        """Probes without a reference whose current level covers a whole median window."""
        window = seconds(self.c.speedup_median_window)
        return (f"({first_seen(self.c)}{{{self.sel}}} < time() - {window}"
                f" unless on({self.c.probe_by}) {self.previous_reference})")

    def healthy(self) -> str:
        """Probes with a current level and no hold."""
        return f"({self.level} unless on({self.c.probe_by}) {self.hold} > 0)"


def _rule(record: str, expr: str) -> dict[str, str]:
    return {"record": record, "expr": expr}


def _last_seen(c: MixinConfig, record: str, present: str) -> str:
    """Now while `present` has the series, else its last value until forget_after has passed."""
    return (f"{present} * 0 + time()\nor\n"
            f"{previous(c, record)} > time() - {seconds(c.forget_after)}")


def identity_rules(c: MixinConfig) -> list[dict[str, str]]:
    sel = c.exporter_selector
    present = f"max by ({c.role_by}, {IDENTITY}) (\n  {c.host_of(f'pyparallel_python_info{{{sel}}}')}\n)"
    return [
        # The identity an upgrade changes: version, implementation and build together, so
        # 3.13t -> 3.13 with the GIL (the same version string) is a change too.
        _rule(identity_since(c),
              f"(\n  {previous(c, identity_since(c))}\n  and\n  {present}\n)\n"
              f"or\n{present} * 0 + time()"),
        _rule(gil_enabled(c),
              f"max by ({c.role_by}) (\n  {c.host_of(f'pyparallel_gil_enabled{{{sel}}}')}\n)"),
    ]


def presence_rules(c: MixinConfig) -> list[dict[str, str]]:
    sel = c.exporter_selector
    # Each of the exporter's series is read once per evaluation; later rules read these.
    return [
        _rule(host_targets(c), f"max by ({c.site_by}, instance) ({c.host_of(f'pyparallel_exporter_build_info{{{sel}}}')})"),
        _rule(host_last_seen(c), _last_seen(c, host_last_seen(c),
                                            f"max by ({c.site_by}) ({host_targets(c)}{{{sel}}})")),
        _rule(without_host_label(c),
              c.host_of(f"max by ({', '.join(dict.fromkeys([*c.selector_labels, c.host_fallback_label]))}) "
                        f'(pyparallel_exporter_build_info{{{sel}, {c.host_label}=""}})')),
        _rule(probe_success(c), f"min by ({c.probe_by}) ({c.host_of(f'pyparallel_probe_success{{{sel}}}')})"),
        _rule(probe_last_seen(c), _last_seen(c, probe_last_seen(c), f"{probe_success(c)}{{{sel}}}")),
        _rule(last_success(c),
              f"max by ({c.probe_by}) ({c.host_of(f'pyparallel_probe_last_success_timestamp_seconds{{{sel}}}')})"),
    ]


def level_rules(c: MixinConfig) -> list[dict[str, str]]:
    sel = c.exporter_selector
    window = c.speedup_median_window

    def median(metric: str) -> str:
        # Only conclusive, steady rounds export a speedup: a busy host is absent, not low.
        inner = f'quantile_over_time(0.5, {metric}{{{sel}, mode!="sequential"}}[{window}])'
        return f"avg by ({c.probe_by}) (\n  {c.host_of(inner)}\n)"

    # The last round's efficiency is enough for the tables: a window of it costs a fleet as
    # much as the median above.
    efficiency = f'pyparallel_efficiency_ratio{{{sel}, mode!="sequential"}}'
    last = f"avg by ({c.probe_by}) ({c.host_of(efficiency)})"
    return [_rule(speedup_median(c), median("pyparallel_speedup_ratio")), _rule(efficiency_last(c), last)]


def blind_rules(c: MixinConfig) -> list[dict[str, str]]:
    sel = c.exporter_selector
    bridge = c.gauge_bridge_window
    # 1 when the last round could show the parallelism it measures (conclusive, not unsteady).
    shown = (f"last_over_time(pyparallel_step_conclusive{{{sel}}}[{bridge}])\n"
             f"    * (1 - last_over_time(pyparallel_speedup_unsteady{{{sel}}}[{bridge}]))")
    now = f"{conclusive(c)}{{{sel}}}"
    return [
        _rule(conclusive(c), f"max by ({c.probe_by}) (\n  {c.host_of(f'({shown})')}\n)"),
        _rule(blind_since(c),
              f"({now} == 1) * 0\n"
              f"or\n"
              f"({previous(c, blind_since(c))} > 0) and on({c.probe_by}) ({now} == 0)\n"
              f"or\n"
              f"({now} == 0) * 0 + time()"),
    ]


def reference_rules(c: MixinConfig) -> list[dict[str, str]]:
    s = _State(c)
    by, role = c.probe_by, c.role_by
    step = c.reference_step
    memory = seconds(c.regression_memory)
    target = f"quantile_over_time(0.5, {s.level}[{c.reference_window}])"
    previous_identity = f"topk by ({by}) (1, {previous(c, reference_identity(c))})"
    with_current = (f"{s.level} * on({role}) group_left({IDENTITY})\n"
                    f"    ({s.current} * 0 + 1)")
    settled = f"{s.current} < time() - {seconds(c.identity_settle)}"
    return [
        _rule(first_seen(c),
              f"{previous(c, first_seen(c))} and on({by}) {s.alive}\n"
              f"or\n"
              f"{s.level} * 0 + time()"),
        # Held from the evaluation the level falls below keep x reference until it is back
        # above recover x reference (hysteresis), or regression_memory has passed and there
        # is a current level to take as the new reference: then -1 for that one evaluation
        # (the rules below take the level as the reference), and 0 from the next on.
        _rule(held_since(c),
              "(\n"
              f"  ({s.previous_hold} > 0 < time() - {memory} and on({by}) {s.level}) * 0 - 1\n"
              f"  or\n"
              f"  {s.previous_hold} > 0 unless on({by}) ({s.level} >= on({by}) {c.recover:g} * {s.previous_reference})\n"
              f"  or\n"
              f"  ({s.level} < on({by}) {c.keep:g} * {s.previous_reference}) * 0 + time()\n"
              f"    unless on({by}) {s.previous_hold} > 0\n"
              f"  or\n"
              f"  {s.previous_reference} * 0\n"
              f") and on({by}) {s.alive}"),
        # Follows the median of the recent levels slowly while healthy (written as a step
        # towards it, so a reference at its target stays exactly there); kept while held or
        # while no conclusive round comes; set to the level when first learned or released.
        _rule(reference(c),
              "(\n"
              f"  {s.level} and on({by}) ({s.released()} or {s.new()})\n"
              f"  or on({by})\n"
              f"  (\n    {s.previous_reference}\n"
              f"    + on({by}) {step:.6f} * ({target} - on({by}) {s.previous_reference})\n"
              f"  ) and on({by}) {s.healthy()}\n"
              f"  or on({by})\n"
              f"  {s.previous_reference}\n"
              f") and on({by}) {s.alive}"),
        # The identity moves on with the reference: when it is first learned or released, or
        # while healthy once the current identity holds the whole median window. A drop that
        # comes with an upgrade therefore keeps the old identity: the upgrade alert. The value
        # is when the identity was last confirmed (the newest wins a brief overlap).
        _rule(reference_identity(c),
              "(\n"
              f"  (\n    {with_current}\n  ) * 0 + time()\n"
              f"    and on({by}) (\n      {s.released()}\n      or {s.new()}\n"
              f"      or {s.healthy()} and on({role}) ({settled})\n    )\n"
              f"  or on({by})\n"
              f"  {previous_identity}\n"
              f") and on({by}) {s.alive}"),
    ]


def state_group(config: MixinConfig = CONFIG) -> dict[str, Any]:
    """The `pyparallel.state` group. Rules run in order, so each reads those above it at the
    same evaluation time and its own (and later rules') previous values."""
    return {
        "name": STATE_GROUP,
        "interval": config.state_interval,
        "rules": [
            *identity_rules(config),
            *presence_rules(config),
            *level_rules(config),
            *blind_rules(config),
            *reference_rules(config),
        ],
    }


def recording_groups(config: MixinConfig = CONFIG) -> list[dict[str, Any]]:
    """Every recording group, in file order."""
    return [state_group(config)]
