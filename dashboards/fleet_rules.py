"""Fleet-wide aggregates of the recorded series, for the fleet dashboard.

Drawing the quantiles of thousands of probes' ratios over 7 days from the per-probe series
reads every probe at every step (seconds per panel at 1 000 hosts); these rules record a
handful of series per workload and mode instead. They read only recorded series, over the
fresh window, so they run next to `pyparallel.alerts` — on the Prometheus that records, or on
a central one that receives the recorded series.
"""

from __future__ import annotations

from typing import Any

from dashboards.mixin_config import CONFIG, MixinConfig
from dashboards.recording import blind_since, held_since, reference, speedup_median

FLEET_GROUP = "pyparallel.fleet"
QUANTILES = (0.05, 0.5, 0.95)


def _level(config: MixinConfig) -> str:
    return "_".join([*config.selector_labels, "workload", "mode"])


def _by(config: MixinConfig) -> str:
    return ", ".join([*config.selector_labels, "workload", "mode"])


def reference_ratio(config: MixinConfig = CONFIG) -> str:
    """Each probe's current level divided by its reference (1 = as before)."""
    return f"{config.host_label}_interpreter_workload_mode_workers:pyparallel_speedup_ratio:reference_ratio"


def ratio_quantiles(config: MixinConfig = CONFIG) -> str:
    """Quantiles (label `quantile`) across the fleet of each probe's level / its reference."""
    return f"{_level(config)}:pyparallel_speedup_ratio:reference_ratio_quantile"


def held_probes(config: MixinConfig = CONFIG) -> str:
    """How many probes are held below their reference."""
    return f"{_level(config)}:pyparallel_speedup_ratio:held_probes"


def blind_probes(config: MixinConfig = CONFIG) -> str:
    """How many probes had only inconclusive rounds lately."""
    return f"{_level(config)}:pyparallel_step_conclusive:blind_probes"


def fleet_group(config: MixinConfig = CONFIG) -> dict[str, Any]:
    c = config
    sel, window, by = c.exporter_selector, c.fresh_window, c.probe_by

    def fresh(record: str) -> str:
        return f"last_over_time({record}{{{sel}, {c.regression_mode_selector}}}[{window}])"

    ratio = f"{reference_ratio(c)}{{{sel}}}"  # recorded first in this group, read at this evaluation
    quantiles = "\nor\n".join(
        f'label_replace(quantile by ({_by(c)}) ({q:g}, {ratio}), "quantile", "{q:g}", "", "")' for q in QUANTILES)

    def count(record: str) -> str:
        # 0 rather than nothing when no probe is counted, so the graph shows the zero.
        return f"count by ({_by(c)}) ({fresh(record)} > 0)\nor\ncount by ({_by(c)}) ({fresh(record)}) * 0"

    return {
        "name": FLEET_GROUP,
        "interval": c.state_interval,
        "rules": [
            {"record": reference_ratio(c), "expr": f"{fresh(speedup_median(c))} / on({by}) {fresh(reference(c))}"},
            {"record": ratio_quantiles(c), "expr": quantiles},
            {"record": held_probes(c), "expr": count(held_since(c))},
            {"record": blind_probes(c), "expr": count(blind_since(c))},
        ],
    }
