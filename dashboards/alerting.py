"""What every alert carries: `for`, a severity, a summary, a description, runbook and dashboard links."""

from __future__ import annotations

from typing import Any

from dashboards.mixin_config import MixinConfig
from dashboards.recording import IDENTITY

# An alert's value with two decimals: `humanize` would print 0.95 cores as "950m".
VALUE = '{{ printf "%.2f" $value }}'
# Labels a probe step adds to its host's: every alert about a probe carries them.
STEP = "interpreter, workload, mode, workers"
STEP_LABELS = ("interpreter", "workload", "mode", "workers")


def probe_text(c: MixinConfig) -> str:
    """How an alert description names the probe it is about, on its host."""
    return (
        "{{ $labels.workload }}/{{ $labels.mode }} with {{ $labels.workers }} workers "
        f"on {{{{ $labels.interpreter }}}} at {{{{ $labels.{c.host_label} }}}}"
    )


def dashboard_url(c: MixinConfig) -> str:
    """The host dashboard of the alert's host and job."""
    return (f"{c.grafana_url.rstrip('/')}/d/{c.host_dashboard_uid}"
            f"?var-job={{{{ $labels.job }}}}&var-host={{{{ $labels.{c.host_label} }}}}")


def alert(c: MixinConfig, name: str, expr: str, for_: str, summary: str, description: str,
          severity: str | None = None) -> dict[str, Any]:
    """One alerting rule in Prometheus' rule-file form."""
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity or c.severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": c.runbook_url_template % name.lower(),
            "dashboard_url": dashboard_url(c),
        },
    }


def query_value(c: MixinConfig, record: str, window: str, labels: tuple[str, ...]) -> str:
    """Template text printing the value of `record` for the alert's own labels, two decimals.

    The selector's matchers are written as they are; the others come from the alert's labels.
    """
    matchers = ", ".join([c.exporter_selector, *(f"{label}=%q" for label in labels)])
    arguments = " ".join(f"$labels.{label}" for label in labels)
    return (f"{{{{ with printf `last_over_time({record}{{{matchers}}}[{window}])` {arguments} | query }}}}"
            '{{ . | first | value | printf "%.2f" }}{{ end }}')


def identity_text(vector: str, label: str) -> str:
    """`vector` with its identity labels written into one `label`: "cpython 3.13.5t".

    A free-threaded build gets the customary "t" after its version. The helper labels and
    the identity labels are dropped, so two identities of one probe cannot be told apart by
    anything but `label`.
    """
    suffix = f'label_replace({vector}, "tmp_build_suffix", "t", "free_threaded_build", "true")'
    spaced = f'label_replace({suffix}, "tmp_space", " ", "", "")'
    joined = (f'label_join({spaced}, "{label}", "", '
              '"implementation", "tmp_space", "version", "tmp_build_suffix")')
    return f"max without ({IDENTITY}, tmp_space, tmp_build_suffix) (\n  {joined}\n)"
