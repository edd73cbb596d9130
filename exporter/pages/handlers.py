"""The WSGI handlers of ``/``, ``/api/v1/results``, ``/api/v1/services`` and ``/config``.

The documents come from exporter/pages/api.py and exporter/services/status.py, the page from
exporter/pages/statuspage.py; this module
only answers requests: GET and HEAD, no caching, the page under a strict
Content-Security-Policy, and a bug in a page costing that request a 500, never the server.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, Sequence

from exporter.model.schedule import Schedule
from exporter.pages.api import config_text, results_document
from exporter.model.snapshot import Snapshot
from exporter.config.settings import Config
from exporter.pages.history import History
from exporter.services.status import services_document
from exporter.services.window import ServicesSnapshot
from exporter.pages.statuspage import render_page
from exporter.config.webconfig import WebConfig
from exporter.logs import log_kv

log = logging.getLogger(__name__)
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# No script, no frames, no requests: inline styles and data: images (the favicon) only.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ServicesSource(Protocol):
    def snapshot(self) -> ServicesSnapshot: ...


class StatusSource(Protocol):
    """What the pages read from the daemon."""

    config: Config
    history: History

    @property
    def services(self) -> Optional[ServicesSource]:  # the watcher of running services
        ...

    def snapshot(self) -> Snapshot: ...

    def schedule(self) -> Schedule: ...


def _respond(start: StartResponse, environ: Mapping[str, Any], body: bytes, content_type: str,
             extra: Sequence[tuple[str, str]] = ()) -> list[bytes]:
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "HEAD"):
        text = b"Method Not Allowed\n"
        start("405 Method Not Allowed", [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(text))), ("Allow", "GET, HEAD")])
        return [text]
    start("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body))),
                     ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"), *extra])
    return [b""] if method == "HEAD" else [body]


# path -> the StatusPages method that serves it ("/" replaces the web server's landing page);
# --web.telemetry-path may take none of them.
PAGES = {"/": "page", "/api/v1/results": "results", "/config": "config", "/api/v1/services": "services"}


class StatusPages:
    """The WSGI apps of ``/``, ``/api/v1/results`` and ``/config`` for the web server's routes."""

    def __init__(self, source: StatusSource, *, telemetry_path: str = "/metrics",
                 web_config: Optional[WebConfig] = None, config_path: Optional[str] = None) -> None:
        self.source, self.telemetry_path = source, telemetry_path
        self.web_config, self.config_path = web_config, config_path

    def document(self) -> dict[str, Any]:
        return results_document(self.source.snapshot(), self.source.schedule(), self.source.history,
                                self.services_document())

    def services_document(self) -> Optional[dict[str, Any]]:
        return services_document(self.source.services.snapshot()) if self.source.services is not None else None

    def page(self, environ: dict[str, Any], start: StartResponse) -> list[bytes]:
        body = render_page(self.document(), self.telemetry_path).encode()
        return _respond(start, environ, body, "text/html; charset=utf-8",
                        [("Content-Security-Policy", CONTENT_SECURITY_POLICY), ("Referrer-Policy", "no-referrer")])

    def results(self, environ: dict[str, Any], start: StartResponse) -> list[bytes]:
        body = (json.dumps(self.document(), indent=1) + "\n").encode()
        return _respond(start, environ, body, "application/json")

    def services(self, environ: dict[str, Any], start: StartResponse) -> list[bytes]:
        body = (json.dumps(self.services_document(), indent=1) + "\n").encode()
        return _respond(start, environ, body, "application/json")

    def config(self, environ: dict[str, Any], start: StartResponse) -> list[bytes]:
        body = config_text(self.source.config, self.web_config, self.config_path).encode()
        return _respond(start, environ, body, "text/plain; charset=utf-8")

    def routes(self) -> dict[str, WSGIApp]:
        return {path: self._guarded(getattr(self, handler)) for path, handler in PAGES.items()}

    @staticmethod
    def _guarded(app: WSGIApp) -> WSGIApp:
        """A bug in a page costs that request a 500 and one log line, never the server."""
        def guarded(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
            try:
                return app(environ, start)
            except Exception:
                log_kv(log, logging.ERROR, "error rendering a page", path=str(environ.get("PATH_INFO"))[:200], exc_info=True)
                text = b"An error has occurred while rendering this page; see the exporter's log.\n"
                start("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8"),
                                                    ("Content-Length", str(len(text)))])
                return [text]
        return guarded
