"""HTTP(S) server for /metrics, /-/healthy, /-/ready and /-/reload, secured by a web config."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import io
import ipaddress
import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import bcrypt
from prometheus_client import CollectorRegistry, make_wsgi_app

from exporter import __version__
from exporter.errors import ConfigError
from exporter.logs import log_kv
from exporter.webconfig import WebConfig

log = logging.getLogger(__name__)

# A client gets this long to start and finish the TLS handshake, and then this long per read
# or write, so a stalled client ties up only its own thread, and only for a while.
HANDSHAKE_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 60.0
# How often serve_forever checks for shutdown(); bounds how long shutdown() takes.
_POLL_INTERVAL_SECONDS = 0.1

# bcrypt hash (cost 10) of a password nobody has. An unknown user is checked against it so a
# request for a missing user takes as long as one for a real user with a wrong password, and
# response times do not reveal which user names exist (exporter-toolkit does the same).
_DUMMY_HASH = b"$2b$10$/n8kOoHhFCQYLWSHA71Ed./199V1i7ZV5eX8cnQEmTXsq6hl66/lu"

_TLS_HANDSHAKE_RECORD = b"\x16"
# What Go's net/http answers to plain HTTP on a TLS port; clearer than a reset connection.
_PLAIN_HTTP_ON_TLS_PORT = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class WebServer:
    """A running server; ``shutdown()`` stops it and closes its socket."""

    def __init__(self, server: _Server, thread: threading.Thread, url: str) -> None:
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
    routes: Mapping[str, WSGIApp] | None = None,
) -> WebServer:
    """Bind ``listen_address`` (``:9860``, ``127.0.0.1:0``, ``[::1]:9860``) and serve in a
    daemon thread. ``metrics`` is a registry, or a WSGI app of its own for the telemetry
    path; ``routes`` maps more paths to WSGI apps (the status pages), served behind the same
    TLS and auth and before the built-in landing page. Raises ConfigError for a bad address,
    telemetry path or TLS setup."""
    if not telemetry_path.startswith("/"):
        raise ConfigError(f"--web.telemetry-path: must start with '/', got {telemetry_path!r}")
    host, port = parse_listen_address(listen_address)
    family, sockaddr, dualstack = _resolve(host, port, listen_address)
    web_config = web_config or WebConfig()
    ssl_context = web_config.ssl_context()
    app = _App(metrics, telemetry_path, web_config, is_ready, reload, routes)
    try:
        server = _Server(sockaddr, family, dualstack, ssl_context, app)
    except OSError as exc:
        raise ConfigError(f"--web.listen-address: cannot listen on {listen_address}: "
                          f"{exc.strerror or exc}") from exc
    scheme = "https" if ssl_context is not None else "http"
    url = f"{scheme}://{_url_host(host, family, dualstack)}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever,
                              kwargs={"poll_interval": _POLL_INTERVAL_SECONDS},
                              name=f"web-server-{server.server_address[1]}", daemon=True)
    thread.start()
    log_kv(log, logging.INFO, "listening", address=listen_address, url=url,
           tls=ssl_context is not None, basic_auth=bool(web_config.basic_auth_users))
    return WebServer(server, thread, url)


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
    """Request handler that stays quiet and routes its errors to logging."""

    timeout = REQUEST_TIMEOUT_SECONDS
    server_version = f"parallelism-exporter/{__version__}"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: one stderr line per scrape is noise (prometheus_client does the same)."""

    def get_stderr(self) -> _ErrorLog:
        return _ErrorLog()


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


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """Thread-per-request WSGI server; TLS handshakes happen in the request's thread."""

    daemon_threads = True
    # Never SO_REUSEPORT: a second exporter on the same port must fail, not share the traffic.
    allow_reuse_port = False
    # socketserver's default backlog of 5 could refuse connections during a burst of scrapes.
    request_queue_size = 64

    def __init__(self, sockaddr: Any, family: socket.AddressFamily, dualstack: bool,
                 ssl_context: ssl.SSLContext | None, app: Callable[..., Any]) -> None:
        self.address_family = family
        self.ssl_context = ssl_context
        super().__init__(sockaddr, _Handler, bind_and_activate=False)
        try:
            if dualstack:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise
        self.set_app(app)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall
        # start-up for seconds on a badly configured host; WSGI only needs a SERVER_NAME.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        tls = self._handshake(request, client_address)
        if tls is None:
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            self.shutdown_request(tls)

    def _handshake(self, sock: socket.socket, client_address: Any) -> ssl.SSLSocket | None:
        """Wrap an accepted socket in TLS, in the request thread, so a slow, silent or
        plaintext client never holds up the thread that accepts connections."""
        assert self.ssl_context is not None
        sock.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
        try:
            first = sock.recv(1, socket.MSG_PEEK)
            if first and first != _TLS_HANDSHAKE_RECORD:
                _answer_plain_http(sock)
                return None
            if not first:
                return None
            tls = self.ssl_context.wrap_socket(sock, server_side=True,
                                               do_handshake_on_connect=False)
        except OSError as exc:
            log_kv(log, logging.DEBUG, "connection failed before TLS handshake",
                   client=_client(client_address), err=str(exc))
            return None
        try:
            tls.do_handshake()
        except (OSError, ValueError) as exc:
            log_kv(log, logging.DEBUG, "TLS handshake failed",
                   client=_client(client_address), err=str(exc))
            tls.close()
            return None
        return tls

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print a traceback to stderr for every dropped connection.
        log.debug("error handling connection from %s", _client(client_address), exc_info=True)


def _answer_plain_http(sock: socket.socket) -> None:
    try:
        sock.sendall(_PLAIN_HTTP_ON_TLS_PORT)
        sock.shutdown(socket.SHUT_WR)
        # Read what the client sent before closing: closing with unread data sends a reset,
        # which can destroy the 400 before the client reads it.
        sock.settimeout(1.0)
        for _ in range(64):
            if not sock.recv(4096):
                break
    except OSError:
        pass


def _client(client_address: Any) -> str:
    try:
        return f"{client_address[0]}:{client_address[1]}"
    except (TypeError, IndexError):
        return str(client_address)


class _BasicAuth:
    """HTTP Basic auth against bcrypt hashes, remembering passwords already verified.

    bcrypt at cost 10 takes ~0.1 s of CPU; without the cache every scrape would pay it, and on
    a 2-core host that would skew the very parallelism figures this exporter measures.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        # user -> digest of the last (user, password, hash) that bcrypt accepted.
        self._verified: dict[str, bytes] = {}
        # One bcrypt at a time, as in exporter-toolkit: a flood of bad logins then costs at
        # most one core.
        self._bcrypt_lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        credentials = _parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        digest = _digest(user, password, hashed or _DUMMY_HASH)
        cached = self._verified.get(user)
        # Constant-time comparison: the cached digest derives from the real password.
        if hashed is not None and cached is not None and hmac.compare_digest(cached, digest):
            return True
        with self._bcrypt_lock:
            try:
                ok = bcrypt.checkpw(password, hashed or _DUMMY_HASH)
            except ValueError:  # e.g. passwords over bcrypt's 72-byte limit
                ok = False
        if ok and hashed is not None:
            self._verified[user] = digest
            return True
        return False


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


class _App:
    """The WSGI application: auth, extra headers, then one of a handful of routes."""

    def __init__(self, metrics: CollectorRegistry | WSGIApp, telemetry_path: str, web_config: WebConfig,
                 is_ready: Callable[[], bool],
                 reload: Callable[[], tuple[bool, str]] | None,
                 apps: Mapping[str, WSGIApp] | None = None) -> None:
        # prometheus_client's app negotiates gzip and OpenMetrics for a plain registry.
        self._metrics = make_wsgi_app(metrics) if isinstance(metrics, CollectorRegistry) else metrics
        self._telemetry_path = telemetry_path
        self._extra_headers = list(web_config.headers.items())
        users = web_config.basic_auth_users
        self._auth = _BasicAuth(users) if users else None
        self._is_ready = is_ready
        self._reload = reload
        # Two reloads at once (SIGHUP and POST, or two POSTs) would interleave; run them in turn.
        self._reload_lock = threading.Lock()
        self._routes: dict[str, Callable[[str, StartResponse], Iterable[bytes]]] = {
            "/": self._landing,
            "/-/healthy": self._healthy,
            "/-/ready": self._ready,
        }
        if reload is not None:
            self._routes["/-/reload"] = self._do_reload
        self._landing_page = _landing_page(telemetry_path, reload is not None).encode()
        self._apps = dict(apps or {})

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, list(headers) + self._extra_headers, exc_info)

        if self._auth is not None and not self._auth.check(environ.get("HTTP_AUTHORIZATION")):
            return _text(start, "401 Unauthorized", "Unauthorized\n",
                         [("WWW-Authenticate", "Basic")])
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == self._telemetry_path:
            return self._serve_metrics(environ, start)
        if path in self._apps:
            return self._apps[path](environ, start)
        route = self._routes.get(path)
        if route is None:
            return _text(start, "404 Not Found", "Not Found\n")
        return route(method, start)

    def _serve_metrics(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        try:
            return self._metrics(environ, start)  # type: ignore[no-any-return]
        except Exception as exc:
            # A collector that raises should cost one scrape, not print a traceback to stderr.
            log.error("error gathering metrics", exc_info=True)
            return _text(start, "500 Internal Server Error",
                         f"An error has occurred while serving metrics:\n\n{exc}\n")

    def _landing(self, method: str, start: StartResponse) -> Iterable[bytes]:
        if method not in ("GET", "HEAD"):
            return _not_allowed(start, "GET, HEAD")
        return _body(start, "200 OK", self._landing_page, "text/html; charset=utf-8", method)

    def _healthy(self, method: str, start: StartResponse) -> Iterable[bytes]:
        if method not in ("GET", "HEAD"):
            return _not_allowed(start, "GET, HEAD")
        return _text(start, "200 OK", "Healthy", method=method)

    def _ready(self, method: str, start: StartResponse) -> Iterable[bytes]:
        if method not in ("GET", "HEAD"):
            return _not_allowed(start, "GET, HEAD")
        try:
            ready = bool(self._is_ready())
        except Exception:
            log.error("readiness check failed", exc_info=True)
            ready = False
        if ready:
            return _text(start, "200 OK", "Ready", method=method)
        return _text(start, "503 Service Unavailable", "Not ready", method=method)

    def _do_reload(self, method: str, start: StartResponse) -> Iterable[bytes]:
        if method not in ("POST", "PUT"):
            return _not_allowed(start, "POST, PUT", "This endpoint requires a POST or PUT request.\n")
        assert self._reload is not None
        with self._reload_lock:
            try:
                ok, message = self._reload()
            except Exception as exc:
                log.error("reload failed", exc_info=True)
                ok, message = False, f"reload failed: {exc}"
        if ok:
            return _text(start, "200 OK", message)
        return _text(start, "500 Internal Server Error", message)


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


def _landing_page(telemetry_path: str, has_reload: bool) -> str:
    path = html.escape(telemetry_path, quote=True)
    reload_item = ("<li><code>POST /-/reload</code> reloads the configuration</li>\n"
                   if has_reload else "")
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
