"""The exporter's WSGI application: basic auth, configured headers, then one route of a table.

The routes are ``/metrics`` (or ``--web.telemetry-path``), ``/-/healthy``, ``/-/ready``, the
lifecycle API (``/-/reload``, ``/-/quit``) and the pages a caller adds, such as the status
page. No sockets here: exporter/web/listen.py serves this app, and tests call it in-process.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, make_wsgi_app

from exporter import __version__
from exporter.web import templating
from exporter.web.auth import AuthBusy, BasicAuth
from exporter.errors import ConfigError
from exporter.logs import log_kv
from exporter.config.webconfig import WebConfig

TEMPLATES = "exporter.web"  # the package whose templates/ folder holds this module's pages

log = logging.getLogger(__name__)

LIFECYCLE_DISABLED = "Lifecycle API is not enabled."  # Prometheus' words

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
Route = WSGIApp  # a route's handler is a WSGI app for its path

# Methods each kind of route answers; any other gets 405 with an Allow header.
READ_ONLY = ("GET", "HEAD")
CONTROL = ("POST", "PUT")
LANDING, HEALTHY, READY, RELOAD, QUIT = "/", "/-/healthy", "/-/ready", "/-/reload", "/-/quit"
BUILT_IN_PATHS = (LANDING, HEALTHY, READY, RELOAD, QUIT)
# A telemetry path a request can reach: visible ASCII (a WSGI path is bytes read as Latin-1),
# no "?" or "#" (a request's path stops there).
_REACHABLE_PATH = re.compile(r"/[!-~]*", re.ASCII)


class Lifecycle:
    """``/-/reload`` and ``/-/quit``: off unless enabled, as in Prometheus, because anyone who
    can reach the port could otherwise reload or stop the exporter."""

    def __init__(self, reload: Callable[[], tuple[bool, str]] | None,
                 quit: Callable[[], None] | None, enabled: bool) -> None:
        self.reload, self.quit, self.enabled = reload, quit, enabled
        # Two reloads at once (two POSTs) would interleave; run them in turn.
        self._reload_lock = threading.Lock()

    def do_reload(self, environ: Environ, start: StartResponse) -> Iterable[bytes]:
        if not self.enabled:
            return _text(start, "403 Forbidden", LIFECYCLE_DISABLED)
        if self.reload is None:
            return _text(start, "404 Not Found", "Not Found\n")
        with self._reload_lock:
            try:
                ok, message = self.reload()
            except Exception as exc:
                log_kv(log, logging.ERROR, "reload failed", exc_info=True)
                ok, message = False, f"reload failed: {exc}"
        if ok:
            return _text(start, "200 OK", message)
        return _text(start, "500 Internal Server Error", message)

    def do_quit(self, environ: Environ, start: StartResponse) -> Iterable[bytes]:
        if not self.enabled:
            return _text(start, "403 Forbidden", LIFECYCLE_DISABLED)
        if self.quit is None:
            return _text(start, "404 Not Found", "Not Found\n")
        log_kv(log, logging.INFO, "quit requested over HTTP")
        self.quit()
        return _text(start, "200 OK", "Requesting termination... Goodbye!")


def check_telemetry_path(path: str, pages: Iterable[str] = ()) -> None:
    """ConfigError unless ``path`` can serve the metrics: absolute, reachable by a request, and
    not a path the server already serves (a built-in one or one of ``pages``), which it would
    hide or be hidden by (``/-/healthy`` hid the metrics)."""
    if not path.startswith("/"):
        raise ConfigError(f"--web.telemetry-path: must start with '/', got {path!r}")
    if not _REACHABLE_PATH.fullmatch(path) or "?" in path or "#" in path:
        raise ConfigError(f"--web.telemetry-path: must be visible ASCII characters without '?' or '#', got {path!r}")
    if path in BUILT_IN_PATHS or path in pages:
        served = ", ".join(sorted({*BUILT_IN_PATHS, *pages}))
        raise ConfigError(f"--web.telemetry-path: must not be a path the server already serves ({served}), "
                          f"got {path!r}")


class WebApp:
    """The WSGI application: auth, extra headers, then one route of the table.

    ``metrics`` is a registry, or a WSGI app of its own for the telemetry path.
    ``reload``/``quit`` back ``/-/reload`` and ``/-/quit``, which answer 403 unless
    ``enable_lifecycle``. ``routes`` adds pages (path -> WSGI app) answering GET and HEAD,
    behind the same auth; one at ``/`` replaces the built-in landing page, other built-ins win.
    Raises ConfigError for a telemetry path ``check_telemetry_path`` refuses.
    """

    def __init__(self, metrics: CollectorRegistry | WSGIApp, *, telemetry_path: str = "/metrics",
                 web_config: WebConfig | None = None, is_ready: Callable[[], bool] = lambda: True,
                 reload: Callable[[], tuple[bool, str]] | None = None, quit: Callable[[], None] | None = None,
                 enable_lifecycle: bool = False, routes: Mapping[str, WSGIApp] | None = None) -> None:
        check_telemetry_path(telemetry_path, routes or {})
        web_config = web_config or WebConfig()
        # prometheus_client's app negotiates gzip and OpenMetrics for a plain registry.
        self._metrics = make_wsgi_app(metrics) if isinstance(metrics, CollectorRegistry) else metrics
        self._extra_headers = list(web_config.headers.items())
        users = web_config.basic_auth_users
        self._auth = BasicAuth(users) if users else None
        self._is_ready = is_ready
        lifecycle = Lifecycle(reload, quit, enable_lifecycle)
        self._landing_page = templating.render(TEMPLATES, "landing.html", telemetry_path=telemetry_path,
                                               lifecycle=enable_lifecycle, version=__version__).encode()
        # path -> (methods, handler); a new page is one line here.
        self._routes: dict[str, tuple[tuple[str, ...], Route]] = {
            telemetry_path: (READ_ONLY, self._serve_metrics),
            LANDING: (READ_ONLY, self._landing),
            HEALTHY: (READ_ONLY, self._healthy),
            READY: (READ_ONLY, self._ready),
            RELOAD: (CONTROL, lifecycle.do_reload),
            QUIT: (CONTROL, lifecycle.do_quit),
        }
        for path, page in (routes or {}).items():
            # The status page replaces the plain landing page; every other built-in route wins.
            if path == "/" or path not in self._routes:
                self._routes[path] = (READ_ONLY, functools.partial(_head_as_get, page))

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, list(headers) + self._extra_headers, exc_info)

        if self._auth is not None:
            try:
                authorized = self._auth.check(environ.get("HTTP_AUTHORIZATION"))
            except AuthBusy:
                return _text(start, "503 Service Unavailable",
                             "Too many concurrent logins, try again later.\n", [("Retry-After", "1")])
            if not authorized:
                return _text(start, "401 Unauthorized", "Unauthorized\n",
                             [("WWW-Authenticate", "Basic")])
        route = self._routes.get(environ.get("PATH_INFO") or "/")
        if route is None:
            return _text(start, "404 Not Found", "Not Found\n")
        methods, handler = route
        if environ.get("REQUEST_METHOD", "GET") not in methods:
            text = ("This endpoint requires a POST or PUT request.\n" if methods == CONTROL
                    else "Method Not Allowed\n")
            return _not_allowed(start, ", ".join(methods), text)
        return handler(environ, start)

    def _serve_metrics(self, environ: Environ, start: StartResponse) -> Iterable[bytes]:
        try:
            return _head_as_get(self._metrics, environ, start)
        except Exception as exc:
            # A collector that raises should cost one scrape, not print a traceback to stderr.
            log_kv(log, logging.ERROR, "error gathering metrics", exc_info=True)
            return _text(start, "500 Internal Server Error",
                         f"An error has occurred while serving metrics:\n\n{exc}\n")

    def _landing(self, environ: Environ, start: StartResponse) -> Iterable[bytes]:
        return _body(start, "200 OK", self._landing_page, "text/html; charset=utf-8",
                     environ["REQUEST_METHOD"])

    def _healthy(self, environ: Environ, start: StartResponse) -> Iterable[bytes]:
        return _text(start, "200 OK", "Healthy", method=environ["REQUEST_METHOD"])

    def _ready(self, environ: Environ, start: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        try:
            ready = bool(self._is_ready())
        except Exception:
            log_kv(log, logging.ERROR, "readiness check failed", exc_info=True)
            ready = False
        if ready:
            return _text(start, "200 OK", "Ready", method=method)
        return _text(start, "503 Service Unavailable", "Not ready", method=method)


def _head_as_get(app: WSGIApp, environ: Environ, start: StartResponse) -> Iterable[bytes]:
    """Run ``app``; a HEAD runs as a GET whose body is dropped, as Go's net/http does
    (prometheus_client's app refuses HEAD)."""
    if environ["REQUEST_METHOD"] != "HEAD":
        return app(environ, start)
    body = app(dict(environ, REQUEST_METHOD="GET"), start)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return [b""]


def _body(start: StartResponse, status: str, body: bytes, content_type: str,
          method: str = "GET", headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    start(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))]
          + (headers or []))
    return [b""] if method == "HEAD" else [body]


def _text(start: StartResponse, status: str, text: str,
          headers: list[tuple[str, str]] | None = None, method: str = "GET") -> list[bytes]:
    return _body(start, status, text.encode(), "text/plain; charset=utf-8", method, headers)


def _not_allowed(start: StartResponse, allow: str,
                 text: str = "Method Not Allowed\n") -> list[bytes]:
    return _text(start, "405 Method Not Allowed", text, [("Allow", allow)])
