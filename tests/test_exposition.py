"""The telemetry endpoint's cache: the same exposition as prometheus_client's own app, in
both formats, with pyparallel_ families rendered once per snapshot."""

from __future__ import annotations

import gzip
import sys
import zlib
from dataclasses import replace
from wsgiref.util import setup_testing_defaults

import pytest
from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.export import collector
from exporter.model.snapshot import Snapshot
from exporter.config import settings
from exporter.host import cpus
from exporter.probe import run
from exporter.export.exposition import TelemetryApp

pytestmark = pytest.mark.integration  # the samples come from real probes (runner processes)

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    spec = run.ProbeSpec("sleep", ("threads",), (2,), 0.05, 1, 30.0)
    report = run.run_workload(run.Interpreter("test", sys.executable), spec)
    empty = collector.empty_snapshot(settings.Config(), cpus.host_cpus())
    return empty.with_round([report])


def get(app, accept: str = "", encoding: str = "", query: str = "") -> tuple[dict[str, str], bytes]:
    environ: dict = {"HTTP_ACCEPT": accept, "HTTP_ACCEPT_ENCODING": encoding, "QUERY_STRING": query}
    setup_testing_defaults(environ)
    answer: dict[str, str] = {}

    def start_response(status, headers, exc_info=None):
        assert status == "200 OK"
        answer.update(headers)

    body = b"".join(app(environ, start_response))
    return answer, body


def live_registry() -> CollectorRegistry:
    live = CollectorRegistry()
    ProcessCollector(registry=live)
    return live


def reference_app(snapshot) -> object:
    """prometheus_client's own app over the same collectors, for comparison."""
    registry = CollectorRegistry()
    registry.register(collector.ParallelismCollector(lambda: snapshot))
    ProcessCollector(registry=registry)
    return make_wsgi_app(registry)


def ours(families) -> dict:
    return {f.name: sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in f.samples)
            for f in families if f.name.startswith("pyparallel_")}


def test_text_exposition_matches_prometheus_client(snapshot):
    headers, body = get(TelemetryApp(lambda: snapshot, live_registry()))
    _, expected = get(reference_app(snapshot))
    assert headers["Content-Type"].startswith("text/plain")
    assert ours(parse_text(body.decode())) == ours(parse_text(expected.decode()))
    assert b"process_cpu_seconds_total" in body


def test_openmetrics_exposition_matches_and_ends_once(snapshot):
    headers, body = get(TelemetryApp(lambda: snapshot, live_registry()), accept=OPENMETRICS)
    _, expected = get(reference_app(snapshot), accept=OPENMETRICS)
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.count(b"# EOF") == 1 and body.endswith(b"# EOF\n")
    assert ours(parse_openmetrics(body.decode())) == ours(parse_openmetrics(expected.decode()))


def test_gzip_when_accepted(snapshot):
    headers, body = get(TelemetryApp(lambda: snapshot, live_registry()), encoding="gzip")
    assert headers["Content-Encoding"] == "gzip"
    assert b"pyparallel_speedup_ratio" in gzip.decompress(body)


def test_gzip_of_the_pieces_is_one_member_a_client_decodes(snapshot):
    app = TelemetryApp(lambda: snapshot, live_registry())
    _, plain = get(app)
    _, packed = get(app, encoding="gzip")
    assert ours(parse_text(gzip.decompress(packed).decode())) == ours(parse_text(plain.decode()))
    assert zlib.decompress(packed, 16 + zlib.MAX_WBITS).count(b"# HELP pyparallel_host_cpus ") == 1


def test_the_cached_families_go_out_as_the_same_bytes_on_every_scrape(snapshot):
    """No copy of the cached body per scrape: it is the first piece of every answer."""
    app = TelemetryApp(lambda: snapshot, live_registry())
    environ: dict = {}
    setup_testing_defaults(environ)
    first = app(dict(environ), lambda *args: None)
    second = app(dict(environ), lambda *args: None)
    assert first[0] is second[0] and b"pyparallel_" in first[0]
    assert b"process_cpu_seconds_total" in first[1]


def test_name_filter_is_served_by_prometheus_client(snapshot):
    _, body = get(TelemetryApp(lambda: snapshot, live_registry()), query="name[]=pyparallel_host_cpus")
    names = {f.name for f in parse_text(body.decode())}
    assert names == {"pyparallel_host_cpus"}


def test_families_are_rendered_once_per_snapshot_and_again_after_a_change(snapshot, monkeypatch):
    renders = []
    original = collector.ParallelismCollector.collect

    def counting(self):
        renders.append(1)
        return original(self)

    monkeypatch.setattr(collector.ParallelismCollector, "collect", counting)
    current = {"snapshot": snapshot}
    app = TelemetryApp(lambda: current["snapshot"], live_registry())
    get(app)
    get(app)
    assert len(renders) == 1
    current["snapshot"] = replace(snapshot, reload_successful=False)
    _, body = get(app)
    assert len(renders) == 2
    assert b"pyparallel_config_last_reload_successful 0.0" in body
