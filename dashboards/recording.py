"""Recording rules (`level:metric:operation`) that the alerts and dashboards read.

The speedup rules aggregate by host (``MixinConfig.host_label``) and interpreter role, never
by scrape address: a Kubernetes rollout gives the exporter a new ``instance`` and a Python
upgrade keeps the role name (the version lives in ``pyparallel_python_info``), so both keep
the history a regression is measured against.
"""

from __future__ import annotations

import re
from typing import Any

from dashboards.mixin_config import CONFIG, MixinConfig

RECORDING_GROUP = "pyparallel.rules"
BASELINE_GROUP = "pyparallel.baseline"


def _level(config: MixinConfig) -> str:
    """Level of the per-probe rules: the host label, role and step labels."""
    return f"{config.host_label}_interpreter_workload_mode_workers"


def speedup_by_host(config: MixinConfig = CONFIG) -> str:
    """Speedup of each probe on each host, whatever the exporter's scrape address."""
    return f"{_level(config)}:pyparallel_speedup_ratio:avg"


def speedup_median(config: MixinConfig = CONFIG) -> str:
    """Name of the rule holding the current median speedup of each probe."""
    return f"{_level(config)}:pyparallel_speedup_ratio:median{config.speedup_median_window}"


def speedup_baseline(config: MixinConfig = CONFIG) -> str:
    """Name of the rule holding the baseline median speedup of each probe."""
    return (
        f"{_level(config)}:pyparallel_speedup_ratio:"
        f"median{config.baseline_window}_offset{config.baseline_offset}"
    )


def python_version(config: MixinConfig = CONFIG) -> str:
    """Name of the rule holding the Python version of each interpreter role on each host."""
    return f"{config.host_label}_interpreter_version:pyparallel_python_info:max"


def speedup_median_by_version(config: MixinConfig = CONFIG) -> str:
    """The current median speedup, labelled with the Python version that produced it."""
    return f"{_level(config)}_version:pyparallel_speedup_ratio:median{config.speedup_median_window}"


def speedup_of_version(config: MixinConfig = CONFIG) -> str:
    """What each Python version of a role reached: the median of its hourly medians."""
    return f"{_level(config)}_version:pyparallel_speedup_ratio:median{config.version_memory}"


def interference_median(config: MixinConfig = CONFIG) -> str:
    """Median of the other processes' CPU use (cores) during each probe on each host."""
    return f"{_level(config)}:pyparallel_interference_cores:median{config.interference_window}"


def seconds(duration: str) -> int:
    """Seconds of a Prometheus duration such as `1d`, `5m` or `1h30m`."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|[smhdwy])", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return int(sum(int(n) * units[u] for n, u in parts))


def recording_group(config: MixinConfig = CONFIG) -> dict[str, Any]:
    """The `pyparallel.rules` group (evaluated at Prometheus' global interval)."""
    sel = config.exporter_selector
    return {
        "name": RECORDING_GROUP,
        "rules": [
            {
                # One series per host and role: an old and a new pod of a rollout on the same
                # node are averaged for the seconds they overlap, then the old one ends.
                "record": speedup_by_host(config),
                "expr": f"avg by ({config.probe_by}) (pyparallel_speedup_ratio{{{sel}}})",
            },
            {
                # A probe round updates the gauge every few minutes; the median over the
                # window ignores one noisy round, which a single sample would not.
                "record": speedup_median(config),
                "expr": (
                    f"quantile_over_time(0.5, {speedup_by_host(config)}{{{sel}}}"
                    f"[{config.speedup_median_window}])"
                ),
            },
            {
                "record": python_version(config),
                "expr": f"max by ({config.role_by}, version) (pyparallel_python_info{{{sel}}})",
            },
            {
                # The regression alerts hold back while other load on the host explains a drop.
                "record": interference_median(config),
                "expr": (
                    f"max by ({config.probe_by}) (\n"
                    f"  quantile_over_time(0.5, pyparallel_interference_cores{{{sel}}}[{config.interference_window}])\n"
                    ")"
                ),
            },
        ],
    }


def baseline_group(config: MixinConfig = CONFIG) -> dict[str, Any]:
    """The `pyparallel.baseline` group: long windows, evaluated every few minutes only."""
    sel = config.exporter_selector
    by_host = f"{speedup_by_host(config)}{{{sel}}}"
    step = config.baseline_group_interval
    min_steps = seconds(config.baseline_min_history) // seconds(step)
    return {
        "name": BASELINE_GROUP,
        "interval": step,
        "rules": [
            {
                # What the speedup used to be: the regression alert compares against it. It
                # counts only where the series already had samples baseline_min_history ago.
                "record": speedup_baseline(config),
                "expr": (
                    f"quantile_over_time(0.5, {by_host}[{config.baseline_window}] offset {config.baseline_offset})\n"
                    f"and\n"
                    f"present_over_time({by_host}[{config.baseline_offset}] offset {config.baseline_min_history})"
                ),
            },
            {
                # topk: during the seconds two versions of a role overlap, label with one.
                "record": speedup_median_by_version(config),
                "expr": (
                    f"{speedup_median(config)}{{{sel}}}\n"
                    f"* on({config.role_by}) group_left(version)\n"
                    f"  topk by ({config.role_by}) (1, {python_version(config)}{{{sel}}})"
                ),
            },
            {
                # Per version, so an upgrade is measured against the version before it for
                # version_memory, however long the drop lasts. A version counts once it ran
                # for baseline_min_history (the subquery counts steps of `step` it was seen).
                "record": speedup_of_version(config),
                "expr": (
                    f"quantile_over_time(0.5, {speedup_median_by_version(config)}{{{sel}}}[{config.version_memory}])\n"
                    "and\n"
                    f"count_over_time({speedup_median_by_version(config)}{{{sel}}}[{config.version_memory}:{step}])"
                    f" >= {min_steps}"
                ),
            },
        ],
    }
