"""What one scrape shows: the last results and the probes' health, replaced as a whole.

The daemon swaps a new snapshot in when a probe finishes; scrapes, the status page and the
API only read the one at hand, so a scrape never waits for a probe and never sees half a
round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Collection, Mapping, Optional

from exporter.host.cpus import HostCpus
from exporter.model.results import FAILURE_REASONS, Identity, ImportCheck, StepKey, WorkloadReport


@dataclass(frozen=True)
class Snapshot:
    """Everything one scrape shows; replaced as a whole, never mutated."""

    host: HostCpus
    per_core_series: bool
    interval_seconds: float
    start_method: str
    reports: Mapping[tuple[str, str], WorkloadReport] = field(default_factory=dict)  # (interpreter, workload)
    identities: Mapping[str, Identity] = field(default_factory=dict)
    last_success: Mapping[StepKey, float] = field(default_factory=dict)
    failures: Mapping[tuple[StepKey, str], int] = field(default_factory=dict)
    import_checks: Mapping[tuple[str, str], ImportCheck] = field(default_factory=dict)
    round_duration_seconds: Optional[float] = None
    duty_cycle_ratio: Optional[float] = None
    reload_successful: bool = True
    reload_timestamp: float = field(default_factory=time.time)

    def with_round(self, reports: Collection[WorkloadReport]) -> Snapshot:
        """This snapshot with these reports' results, successes and failures counted in."""
        results, identities = dict(self.reports), dict(self.identities)
        last_success, failures = dict(self.last_success), dict(self.failures)
        for report in reports:
            results[(report.interpreter.name, report.spec.workload)] = report
            if report.identity is not None:
                identities[report.interpreter.name] = report.identity
            finished = report.started_at + report.duration_seconds
            for step in report.steps:
                if not step.available:
                    continue
                key = report.key(step)
                for reason in FAILURE_REASONS:  # every reason exists from the start, at 0
                    failures.setdefault((key, reason), 0)
                if step.success:
                    last_success[key] = finished
                elif step.reason:
                    failures[(key, step.reason)] += 1
        return replace(self, reports=results, identities=identities, last_success=last_success, failures=failures)

    def with_report(self, report: WorkloadReport) -> Snapshot:
        """This snapshot showing ``report`` as its workload's last (a retry merged into a round)."""
        return replace(self, reports={**self.reports, (report.interpreter.name, report.spec.workload): report})

    def keeping(self, configured: Callable[[str, str], bool], interpreters: Collection[str],
                modules: Collection[str]) -> Snapshot:
        """Only the series of what is still configured (bounded cardinality after a reload):
        ``configured(interpreter, workload)``, the interpreters' names, the import-checked modules."""
        return replace(
            self,
            reports={k: v for k, v in self.reports.items() if configured(*k)},
            identities={k: v for k, v in self.identities.items() if k in interpreters},
            last_success={k: v for k, v in self.last_success.items() if configured(k.interpreter, k.workload)},
            failures={k: v for k, v in self.failures.items() if configured(k[0].interpreter, k[0].workload)},
            import_checks={k: v for k, v in self.import_checks.items() if k[0] in interpreters and k[1] in modules},
        )
