"""exporter/model/metrics.py is the one list of metric families: the collector exports only what it
declares, and docs/metrics.md documents exactly that."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from exporter.model import metrics
from exporter.export.collector import ParallelismCollector, empty_snapshot
from exporter.config.settings import Config
from exporter.host.cpus import HostCpus

DOC = Path(__file__).resolve().parent.parent / "docs/metrics.md"


def exposed_by_the_collector() -> set[str]:
    registry = CollectorRegistry(support_collectors_without_names=True)
    snapshot = empty_snapshot(Config(), HostCpus(2, 2, 2, None))
    registry.register(ParallelismCollector(lambda: snapshot))
    return {family.name for family in registry.collect()}


def test_every_family_the_collector_yields_is_declared_with_its_help_and_labels():
    declared = {f"{metrics.PREFIX}_{spec.name}": spec for spec in metrics.METRICS.values()}
    for name in exposed_by_the_collector():
        assert name in declared, f"{name} is exported but not declared in exporter/model/metrics.py"


def test_declared_names_follow_the_conventions():
    for spec in metrics.METRICS.values():
        assert spec.help.endswith(".") and len(spec.help) > 20, spec.name
        assert not spec.name.endswith("_total"), "counters get _total from the client library"
        assert spec.kind in ("gauge", "counter", "stateset")
        assert spec.scope in ("step", "interpreter", "host", "daemon", "service")
        if spec.name.endswith("_info"):
            assert spec.help.rstrip(".").endswith("always 1")


def test_docs_metrics_table_lists_exactly_the_declared_metrics():
    table = DOC.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(pyparallel_[a-z0-9_]+)`", table))
    declared = metrics.exposed_names("step", "interpreter", "host", "daemon")
    assert documented == declared, (f"undocumented: {sorted(declared - documented)}; "
                                    f"documented but not exported: {sorted(documented - declared)}")


def test_docs_services_lists_every_service_metric():
    text = (DOC.parent / "services.md").read_text()
    for name in metrics.exposed_names("service"):
        suffix = name.removeprefix("pyparallel_service")
        assert f"`{name}`" in text or f"`{suffix}`" in text, f"{name} is not in docs/services.md"
