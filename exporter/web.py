"""HTTP(S) routes for /metrics, /-/healthy, /-/ready and the lifecycle API, secured by a web config."""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import html
import io
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler

import bcrypt
from prometheus_client import CollectorRegistry, make_wsgi_app

from exporter import __version__
from exporter.errors import ConfigError
from exporter import httpserver
from exporter.httpserver import (DEFAULT_MAX_REQUESTS, DEFAULT_READ_TIMEOUT_SECONDS,
                                 BoundedHTTPServer, somaxconn)
from exporter.logs import log_kv
from exporter.webconfig import WebConfig

log = logging.getLogger(__name__)

# Concurrent bcrypt checks at most, and how many more may wait for one (briefly) before a
# 503: a flood of wrong passwords then costs at most this many cores, and a real first login
# waits behind a handful of checks, not behind the whole flood.
BCRYPT_CONCURRENCY = 2
BCRYPT_WAITERS = 8
BCRYPT_WAIT_SECONDS = 5.0

# What Go's net/http answers to plain HTTP on a TLS port; clearer than a reset connection.
_PLAIN_HTTP_ON_TLS_PORT = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)
LIFECYCLE_DISABLED = "Lifecycle API is not enabled."  # Prometheus' words

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
Route = WSGIApp  # a route's handler is a WSGI app for its path


class WebServer:
    """A running server; ``shutdown()`` stops it and closes its socket."""

    def __init__(self, server: BoundedHTTPServer, thread: threading.Thread, url: str) -> None:
        self._server = server
        self._thread = thread
        self._lock = threading.Lock()
        self._stopped = False
        self.port: int = server.server_address[1]
        self.url = url

    def shutdown(self) -> None:
        """Stop accepting requests and close the listening socket; safe to call twice."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> WebServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def start_web_server(
    listen_address: str,
    metrics: CollectorRegistry | WSGIApp,
    *,
    telemetry_path: str = "/metrics",
    web_config: WebConfig | None = None,
    is_ready: Callable[[], bool] = lambda: True,
    reload: Callable[[], tuple[bool, str]] | None = None,
    quit: Callable[[], None] | None = None,
    enable_lifecycle: bool = False,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
    routes: Mapping[str, WSGIApp] | None = None,
) -> WebServer:
    """Bind ``listen_address`` (``:9860``, ``127.0.0.1:0``, ``[::1]:9860``) and serve in a
    daemon thread. ``metrics`` is a registry, or a WSGI app of its own for the telemetry
    path. ``reload``/``quit`` back ``/-/reload`` and ``/-/quit``, which answer 403 unless
    ``enable_lifecycle``. ``routes`` adds pages (path -> WSGI app) answering GET and HEAD, behind the same
    TLS and auth; one at ``/`` replaces the built-in landing page, other built-ins win.
    At most ``max_requests`` requests run at once (0: no limit); a request must arrive in
    full within ``read_timeout`` seconds. Raises ConfigError for a bad address, telemetry
    path, limit or TLS setup."""
    if not telemetry_path.startswith("/"):
        raise ConfigError(f"--web.telemetry-path: must start with '/', got {telemetry_path!r}")
    if max_requests < 0:
        raise ConfigError(f"--web.max-requests: must be 0 (no limit) or more, got {max_requests}")
    if not 0 < read_timeout < 3600:
        raise ConfigError(f"read timeout: must be between 0 and 3600 seconds, got {read_timeout:g}")
    host, port = parse_listen_address(listen_address)
    family, sockaddr, dualstack = _resolve(host, port, listen_address)
    web_config = web_config or WebConfig()
    ssl_context = web_config.ssl_context()
    app = _App(metrics, telemetry_path, web_config, is_ready,
               _Lifecycle(reload, quit, enable_lifecycle), routes or {})
    try:
        listener = _listen(family, sockaddr, dualstack)
    except OSError as exc:
        raise ConfigError(f"--web.listen-address: cannot listen on {listen_address}: "
                          f"{exc.strerror or exc}") from exc
    server = BoundedHTTPServer(listener, app, _Handler, ssl_context=ssl_context,
                               max_requests=max_requests, read_timeout=read_timeout,
                               plain_http_answer=_PLAIN_HTTP_ON_TLS_PORT)
    scheme = "https" if ssl_context is not None else "http"
    url = f"{scheme}://{_url_host(host, family, dualstack)}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever,
                              name=f"web-server-{server.server_address[1]}", daemon=True)
    thread.start()
    log_kv(log, logging.INFO, "listening", address=listen_address, url=url,
           tls=ssl_context is not None, basic_auth=bool(web_config.basic_auth_users),
           max_requests=max_requests, lifecycle=enable_lifecycle)
    return WebServer(server, thread, url)


def _listen(family: socket.AddressFamily, sockaddr: Any, dualstack: bool) -> socket.socket:
    """A listening socket with a backlog sized for bursts (the kernel's somaxconn, as Go)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR lets a restart bind while old connections sit in TIME_WAIT (Go sets
        # it too). Never SO_REUSEPORT: a second exporter on the port must fail, not share it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dualstack:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        sock.listen(somaxconn())
    except BaseException:
        sock.close()
        raise
    return sock


def parse_listen_address(address: str) -> tuple[str, int]:
    """Split a node_exporter-style ``[host]:port``; host "" means every interface."""

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"--web.listen-address: {problem}, got {address!r}")

    if "://" in address:
        raise bad("must be host:port, not a URL")
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise bad("missing ']' in IPv6 address")
        host, rest = address[1:end], address[end + 1:]
        if not rest.startswith(":"):
            raise bad("missing port after ']' (expected e.g. [::1]:9860)")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"invalid IPv6 address {host!r}") from None
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise bad("missing port (expected [host]:port such as :9860)")
        if ":" in host:
            raise bad("IPv6 addresses need brackets, e.g. [::1]:9860")
        if any(c.isspace() or c in "/[]" for c in host):
            raise bad(f"invalid host {host!r}")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise bad("port must be a number from 0 to 65535")
    return host, int(port_text)


def _resolve(host: str, port: int, address: str) -> tuple[socket.AddressFamily, Any, bool]:
    """Pick the socket family and address to bind; ':port' listens on IPv4 and IPv6 if it can."""
    if host == "":
        # Go's ":9860" accepts both IPv4 and IPv6; a dual-stack "::" socket does the same.
        if socket.has_dualstack_ipv6():
            return socket.AF_INET6, ("::", port), True
        return socket.AF_INET, ("0.0.0.0", port), False
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--web.listen-address: cannot resolve host {host!r} "
                          f"in {address!r}: {exc.strerror}") from exc
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr, False


def _url_host(host: str, family: socket.AddressFamily, dualstack: bool) -> str:
    # A wildcard address is not something a client can connect to; loopback is.
    if host in ("", "0.0.0.0"):
        return "127.0.0.1" if dualstack or family == socket.AF_INET else "[::1]"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class _Handler(WSGIRequestHandler):
    """wsgiref's request handler for one request the server has already read in full."""

    server_version = f"parallelism-exporter/{__version__}"
    sys_version = ""

    def __init__(self, request: socket.socket, client_address: Any, server: Any,
                 data: bytes) -> None:
        self._data = data
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self._data)
        self.wfile = _SocketWriter(self.request)

    def finish(self) -> None:
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: one stderr line per scrape is noise (prometheus_client does the same)."""

    def get_stderr(self) -> _ErrorLog:
        return _ErrorLog()


class _SocketWriter(io.BufferedIOBase):
    """Unbuffered writes with sendall, all of them within one deadline: a client that stops
    reading holds its worker for httpserver.WRITE_TIMEOUT_SECONDS in total, not per write."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._deadline: float | None = None  # set by the first write

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self._deadline is None:
            self._deadline = time.monotonic() + httpserver.WRITE_TIMEOUT_SECONDS
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("answer not written within the write deadline")
        self._sock.settimeout(left)
        self._sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


class _ErrorLog(io.TextIOBase):
    """wsgiref writes unhandled tracebacks to 'stderr'; this turns each into one log record."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[str] = []

    def write(self, text: str) -> int:
        self._parts.append(text)
        return len(text)

    def flush(self) -> None:
        text = "".join(self._parts).strip()
        self._parts.clear()
        if text:
            log_kv(log, logging.ERROR, "error serving request", err=text)


def _client(client_address: Any) -> str:
    try:
        return f"{client_address[0]}:{client_address[1]}"
    except (TypeError, IndexError):
        return str(client_address)


class AuthBusy(Exception):
    """Too many bcrypt checks are running or waiting; the request gets a 503."""


class _BasicAuth:
    """HTTP Basic auth against bcrypt hashes, remembering passwords already verified.

    bcrypt at cost 10 takes ~0.1 s of CPU; without the cache every scrape would pay it, and on
    a 2-core host that would skew the very parallelism figures this exporter measures.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        # user -> digest of the last (user, password, hash) that bcrypt accepted.
        self._verified: dict[str, bytes] = {}
        # An unknown user is checked against a decoy so the answer takes as long as for a real
        # user with a wrong password (exporter-toolkit does the same). With users at several
        # costs one decoy cost would tell names apart (an unknown name at cost 12 answers in
        # 0.28 s, a cost-10 user in 0.07 s), so each name gets the cost of a configured
        # user, drawn by a keyed hash: always the same for one name, at random across names.
        self._decoy_costs = sorted(bcrypt_cost(h) for h in self._users.values())
        self._decoys = {cost: _decoy_hash(cost) for cost in self._decoy_costs}
        self._decoy_key = os.urandom(16)
        self._slots = threading.BoundedSemaphore(BCRYPT_CONCURRENCY)
        self._waiting = 0
        self._waiting_lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        """True for valid credentials; raises AuthBusy when bcrypt is saturated."""
        credentials = _parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        digest = _digest(user, password, hashed or self.decoy_hash(user))
        cached = self._verified.get(user)
        # Constant-time comparison: the cached digest derives from the real password.
        if hashed is not None and cached is not None and hmac.compare_digest(cached, digest):
            return True
        with self._bcrypt_slot():
            try:
                ok = bcrypt.checkpw(password, hashed or self.decoy_hash(user))
            except ValueError:  # e.g. passwords over bcrypt's 72-byte limit
                ok = False
        if ok and hashed is not None:
            self._verified[user] = digest
            return True
        return False

    def decoy_hash(self, user: str) -> bytes:
        """The decoy an unknown ``user`` is checked against, at a configured user's cost."""
        draw = hmac.new(self._decoy_key, user.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        return self._decoys[self._decoy_costs[int.from_bytes(draw[:8], "big") % len(self._decoy_costs)]]

    @contextlib.contextmanager
    def _bcrypt_slot(self) -> Iterator[None]:
        """One of BCRYPT_CONCURRENCY slots; a short, bounded wait, then AuthBusy."""
        if not self._slots.acquire(blocking=False):
            with self._waiting_lock:
                if self._waiting >= BCRYPT_WAITERS:
                    raise AuthBusy
                self._waiting += 1
            try:
                acquired = self._slots.acquire(timeout=BCRYPT_WAIT_SECONDS)
            finally:
                with self._waiting_lock:
                    self._waiting -= 1
            if not acquired:
                raise AuthBusy
        try:
            yield
        finally:
            self._slots.release()


def bcrypt_cost(hashed: bytes) -> int:
    """The cost (log2 rounds) of a ``$2b$NN$...`` hash (webconfig has checked the form)."""
    return int(hashed.split(b"$")[2])


_BCRYPT_ALPHABET = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _decoy_hash(cost: int) -> bytes:
    """A bcrypt hash at ``cost`` that no password matches, made without hashing.

    ``checkpw`` spends the cost's time on the salt alone and then compares; random hash
    characters make a match as unlikely as guessing a real hash, and start-up (or a reload)
    never waits seconds for a decoy at a high cost.
    """
    return bcrypt.gensalt(cost) + bytes(_BCRYPT_ALPHABET[b % 64] for b in os.urandom(31))


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def _digest(user: str, password: bytes, hashed: bytes) -> bytes:
    h = hashlib.sha256()
    for part in (user.encode("utf-8"), password, hashed):
        # Length prefixes keep ("ab", "c") and ("a", "bc") from hashing alike.
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


class _Lifecycle:
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
                log.error("reload failed", exc_info=True)
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


# Methods each kind of route answers; any other gets 405 with an Allow header.
READ_ONLY = ("GET", "HEAD")
CONTROL = ("POST", "PUT")


class _App:
    """The WSGI application: auth, extra headers, then one route of the table."""

    def __init__(self, metrics: CollectorRegistry | WSGIApp, telemetry_path: str, web_config: WebConfig,
                 is_ready: Callable[[], bool], lifecycle: _Lifecycle,
                 extra_routes: Mapping[str, WSGIApp]) -> None:
        # prometheus_client's app negotiates gzip and OpenMetrics for a plain registry.
        self._metrics = make_wsgi_app(metrics) if isinstance(metrics, CollectorRegistry) else metrics
        self._extra_headers = list(web_config.headers.items())
        users = web_config.basic_auth_users
        self._auth = _BasicAuth(users) if users else None
        self._is_ready = is_ready
        self._landing_page = _landing_page(telemetry_path, lifecycle.enabled).encode()
        # path -> (methods, handler); a new page is one line here.
        self._routes: dict[str, tuple[tuple[str, ...], Route]] = {
            telemetry_path: (READ_ONLY, self._serve_metrics),
            "/": (READ_ONLY, self._landing),
            "/-/healthy": (READ_ONLY, self._healthy),
            "/-/ready": (READ_ONLY, self._ready),
            "/-/reload": (CONTROL, lifecycle.do_reload),
            "/-/quit": (CONTROL, lifecycle.do_quit),
        }
        for path, page in extra_routes.items():
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
            log.error("error gathering metrics", exc_info=True)
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
            log.error("readiness check failed", exc_info=True)
            ready = False
        if ready:
            return _text(start, "200 OK", "Ready", method=method)
        return _text(start, "503 Service Unavailable", "Not ready", method=method)


def _head_as_get(app: WSGIApp, environ: Environ, start: StartResponse) -> Iterable[bytes]:
    """Run ``app``; a HEAD runs as a GET whose body is dropped, as Go's net/http does
    (prometheus_client's app refuses HEAD, and wsgiref would send a HEAD's body)."""
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


def _landing_page(telemetry_path: str, lifecycle: bool) -> str:
    path = html.escape(telemetry_path, quote=True)
    reload_item = ("<li><code>POST /-/reload</code> reloads the configuration</li>\n"
                   if lifecycle else "")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Python Parallelism Exporter</title>
</head>
<body>
<h1>Python Parallelism Exporter</h1>
<p>Measures how well this Python runs CPU-bound work in parallel.</p>
<ul>
<li><a href="{path}">Metrics</a></li>
<li><a href="/-/healthy">Health</a> (<code>/-/healthy</code>)</li>
<li><a href="/-/ready">Readiness</a> (<code>/-/ready</code>)</li>
{reload_item}</ul>
<p>Version {html.escape(__version__)}</p>
</body>
</html>
"""
