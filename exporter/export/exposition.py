"""The telemetry endpoint: pyparallel_ families rendered once per snapshot, the rest live.

Probe results change once per round, yet rendering a few hundred series with
prometheus_client costs 1.2 ms (text) to 1.6 ms (OpenMetrics) of CPU per scrape — most of
what a scrape costs. So the pyparallel_ families are rendered once per snapshot and format
and reused, while the process_/python_ families, which change all the time, are rendered on
every scrape. Format negotiation and gzip follow prometheus_client's own WSGI app, which
still serves filtered (``name[]``) scrapes.
"""

from __future__ import annotations

import threading
import zlib
from typing import Any, Callable, Iterable, Optional
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector

from exporter.export.collector import ParallelismCollector
from exporter.model.snapshot import Snapshot

OPENMETRICS_EOF = b"# EOF\n"
GZIP_LEVEL = 6  # prometheus_client's
GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream
Encoder = Callable[[CollectorRegistry], bytes]


class TelemetryApp:
    """WSGI app for the telemetry path."""

    def __init__(self, snapshot_source: Callable[[], Snapshot], live: CollectorRegistry) -> None:
        self._source = snapshot_source
        self._live = live
        # A registry is a collector too: the full one is ours plus the live registry.
        self._full = make_wsgi_app(_registry([ParallelismCollector(snapshot_source), live]))
        self._lock = threading.Lock()
        self._cached_snapshot: Optional[Snapshot] = None
        self._cache: dict[str, bytes] = {}  # content type -> rendered pyparallel_ families

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if "name[]" in parse_qs(environ.get("QUERY_STRING", "")):
            return self._full(environ, start_response)  # type: ignore[no-any-return]
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        # Two pieces, not one: the cached families are sent as they are, never copied per scrape.
        body = [self._ours(encoder, content_type), encoder(self._live)]
        headers = [("Content-Type", content_type)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            body = gzipped(body)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return body

    def _ours(self, encoder: Encoder, content_type: str) -> bytes:
        """The pyparallel_ families of the current snapshot in this format, from the cache."""
        snapshot = self._source()
        with self._lock:
            if snapshot is not self._cached_snapshot:
                self._cached_snapshot, self._cache = snapshot, {}
            if content_type not in self._cache:
                rendered = encoder(_registry([ParallelismCollector(lambda: snapshot)]))
                # An OpenMetrics document ends once, after the live families.
                self._cache[content_type] = rendered.removesuffix(OPENMETRICS_EOF)
            return self._cache[content_type]


def gzipped(pieces: list[bytes]) -> list[bytes]:
    """One gzip member of ``pieces`` in order, compressed piece by piece (no joined copy)."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
    return [*(compressor.compress(piece) for piece in pieces), compressor.flush()]


def _registry(collectors: list[Collector]) -> CollectorRegistry:
    # Registering must not run collect(); name[] filters then apply to every collector.
    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    for collector in collectors:
        registry.register(collector)
    return registry
