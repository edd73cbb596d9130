"""``probe --push URL``: send a one-shot run's metrics to a Prometheus Pushgateway.

A CI job is gone before Prometheus could scrape it; pushed, its figures land in the same
series as the daemon's, so pre-deploy results show on the same dashboards. Each
interpreter's families go to the group {job, instance, interpreter}; the host's families,
which have no interpreter label, go once to {job, instance}, so rules that join on
``on(job, instance)`` (e.g. with ``pyparallel_host_cpus``) still find one series. The
daemon's own families (interval, reloads, duty cycle) mean nothing for a one-shot run and
are not pushed. Each push replaces its group (HTTP PUT), so a rerun never leaves stale
steps behind.
"""

from __future__ import annotations

import argparse
import socket
import urllib.parse
from typing import Callable, Iterator, Optional, Sequence

from prometheus_client import CollectorRegistry, push_to_gateway
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter.export.collector import ParallelismCollector, empty_snapshot
from exporter.config.settings import Config
from exporter.host.cpus import HostCpus
from exporter.model.metrics import exposed_names
from exporter.model.results import WorkloadReport

HOST_FAMILIES = exposed_names("host")
DAEMON_FAMILIES = exposed_names("daemon")
PUSH_TIMEOUT_SECONDS = 30.0


def add_push_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--push", metavar="URL", type=gateway_url,
                        help="also push the metrics to this Prometheus Pushgateway (http[s]://host:port)")
    parser.add_argument("--push.job", dest="push_job", default="pyparallel",
                        help="job label of the pushed metrics (default pyparallel, the job the rules select)")
    parser.add_argument("--push.instance", dest="push_instance",
                        help="instance label of the pushed metrics (default: this host's name)")


def gateway_url(text: str) -> str:
    """``--push``: checked before probing, so a typo costs no probe run (exit 2, one line)."""
    url = text if "://" in text else f"http://{text}"  # prometheus_client's default scheme
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"must be a Pushgateway URL such as http://pushgateway:9091, got {text!r}")
    return url


class PushError(Exception):
    """The Pushgateway could not be reached or refused the push: one line for the user."""


class _Filtered(Collector):
    """The families of ``inner`` whose names ``keep`` accepts."""

    def __init__(self, inner: Collector, keep: Callable[[str], bool]) -> None:
        self.inner, self.keep = inner, keep

    def collect(self) -> Iterator[Metric]:
        return (family for family in self.inner.collect() if self.keep(family.name))


def registries(reports: Sequence[WorkloadReport], host: HostCpus, cfg: Config) -> dict[Optional[str], CollectorRegistry]:
    """One registry per interpreter name, and the host's under None."""
    def registry_for(chosen: Sequence[WorkloadReport], keep: Callable[[str], bool]) -> CollectorRegistry:
        snapshot = empty_snapshot(cfg, host).with_round(list(chosen))
        registry = CollectorRegistry()
        registry.register(_Filtered(ParallelismCollector(lambda: snapshot), keep))
        return registry

    result: dict[Optional[str], CollectorRegistry] = {None: registry_for([], lambda name: name in HOST_FAMILIES)}
    for name in dict.fromkeys(r.interpreter.name for r in reports):
        result[name] = registry_for([r for r in reports if r.interpreter.name == name],
                                    lambda family: family not in HOST_FAMILIES | DAEMON_FAMILIES)
    return result


def push_reports(url: str, reports: Sequence[WorkloadReport], host: HostCpus, cfg: Config, *,
                 job: str = "pyparallel", instance: Optional[str] = None) -> None:
    """Push every group; raises PushError naming the gateway and the problem."""
    instance = instance or socket.gethostname()
    for interpreter, registry in registries(reports, host, cfg).items():
        grouping = {"instance": instance} | ({"interpreter": interpreter} if interpreter else {})
        try:
            push_to_gateway(url, job=job, registry=registry, grouping_key=grouping, timeout=PUSH_TIMEOUT_SECONDS)
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            raise PushError(f"--push: cannot push to {url}: {exc}") from None
