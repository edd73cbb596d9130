"""Recording rules (`level:metric:operation`) that the alerts and dashboards read."""

from __future__ import annotations

from typing import Any

from dashboards.mixin_config import CONFIG, MixinConfig

# Labels of one probe series besides job: the level of the speedup rules.
PROBE_LEVEL = "instance_interpreter_workload_mode_workers"


def speedup_median(config: MixinConfig = CONFIG) -> str:
    """Name of the rule holding the current median speedup of each probe."""
    return f"{PROBE_LEVEL}:pyparallel_speedup_ratio:median{config.speedup_median_window}"


def speedup_baseline(config: MixinConfig = CONFIG) -> str:
    """Name of the rule holding the baseline median speedup of each probe."""
    return (
        f"{PROBE_LEVEL}:pyparallel_speedup_ratio:"
        f"median{config.baseline_window}_offset{config.baseline_offset}"
    )


def python_versions(config: MixinConfig = CONFIG) -> str:
    """Name of the rule counting the Python versions each interpreter had recently."""
    return f"instance_interpreter:pyparallel_python_versions:count{config.upgrade_window}"


def recording_group(config: MixinConfig = CONFIG) -> dict[str, Any]:
    """The `pyparallel.rules` group, in Prometheus rule-file form."""
    sel = config.exporter_selector
    return {
        "name": "pyparallel.rules",
        "rules": [
            {
                # A probe round updates the gauge every few minutes; the median over the
                # window ignores one noisy round, which a single sample would not.
                "record": speedup_median(config),
                "expr": (
                    f"quantile_over_time(0.5, pyparallel_speedup_ratio{{{sel}}}"
                    f"[{config.speedup_median_window}])"
                ),
            },
            {
                # What the speedup used to be: the regression alerts compare against it.
                "record": speedup_baseline(config),
                "expr": (
                    f"quantile_over_time(0.5, pyparallel_speedup_ratio{{{sel}}}"
                    f"[{config.baseline_window}] offset {config.baseline_offset})"
                ),
            },
            {
                # pyparallel_python_info is always 1, so changes() never sees an upgrade:
                # the new version is a new series. Counting the series seen in the window
                # gives 2 for as long as the old version is still in it.
                "record": python_versions(config),
                "expr": (
                    "count by (job, instance, interpreter) (\n"
                    f"  max_over_time(pyparallel_python_info{{{sel}}}[{config.upgrade_window}])\n"
                    ")"
                ),
            },
        ],
    }
