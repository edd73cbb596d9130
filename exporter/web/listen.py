"""The exporter's web server: bind ``--web.listen-address``, serve the WSGI app over HTTP(S).

The app (routes, auth) is exporter/web/app.py, the server with its limits
exporter/web/httpserver.py; this module parses node_exporter-style listen addresses, opens the
listening socket and runs the server in a thread.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.errors import ConfigError
from exporter.web.httpserver import (DEFAULT_IDLE_TIMEOUT_SECONDS, DEFAULT_MAX_REQUESTS,
                                 DEFAULT_MAX_REQUESTS_PER_CONNECTION, DEFAULT_READ_TIMEOUT_SECONDS,
                                 BoundedHTTPServer, somaxconn)
from exporter.logs import log_kv
from exporter.web.app import WebApp, WSGIApp, check_telemetry_path
from exporter.config.webconfig import WebConfig

log = logging.getLogger(__name__)

# What Go's net/http answers to plain HTTP on a TLS port; clearer than a reset connection.
_PLAIN_HTTP_ON_TLS_PORT = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)
SERVER_SOFTWARE = f"parallelism-exporter/{__version__}"


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
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT_SECONDS,
    max_requests_per_connection: int = DEFAULT_MAX_REQUESTS_PER_CONNECTION,
    routes: Mapping[str, WSGIApp] | None = None,
) -> WebServer:
    """Bind ``listen_address`` (``:9860``, ``127.0.0.1:0``, ``[::1]:9860``) and serve
    ``WebApp(metrics, ...)`` (its arguments are documented there) in a daemon thread.
    At most ``max_requests`` requests run at once (0: no limit); a request must arrive in
    full within ``read_timeout`` seconds; a kept-alive connection waits ``idle_timeout``
    seconds for its next request and carries ``max_requests_per_connection`` at most.
    Raises ConfigError for a bad address, telemetry path, limit or TLS setup."""
    if max_requests < 0:
        raise ConfigError(f"--web.max-requests: must be 0 (no limit) or more, got {max_requests}")
    for name, seconds in (("read timeout", read_timeout), ("idle timeout", idle_timeout)):
        if not 0 < seconds < 3600:
            raise ConfigError(f"{name}: must be between 0 and 3600 seconds, got {seconds:g}")
    if max_requests_per_connection < 1:
        raise ConfigError(f"requests per connection: must be 1 or more, got {max_requests_per_connection}")
    host, family, sockaddr, dualstack = listen_target(listen_address)
    web_config = web_config or WebConfig()
    ssl_context = web_config.ssl_context()
    app = WebApp(metrics, telemetry_path=telemetry_path, web_config=web_config, is_ready=is_ready,
                 reload=reload, quit=quit, enable_lifecycle=enable_lifecycle, routes=routes)
    try:
        listener = _listen(family, sockaddr, dualstack)
    except OSError as exc:
        raise ConfigError(f"--web.listen-address: cannot listen on {listen_address}: "
                          f"{exc.strerror or exc}") from exc
    server = BoundedHTTPServer(listener, app, server_software=SERVER_SOFTWARE, ssl_context=ssl_context,
                               max_requests=max_requests, read_timeout=read_timeout, idle_timeout=idle_timeout,
                               max_requests_per_connection=max_requests_per_connection,
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
def check_web_flags(listen_address: str, telemetry_path: str, pages: Iterable[str] = ()) -> None:
    """ConfigError for a listen address or telemetry path ``start_web_server`` would refuse
    (``pages``: the paths the caller adds), checked as it checks them, without binding:
    ``serve --config.check``."""
    listen_target(listen_address)
    check_telemetry_path(telemetry_path, pages)


def listen_target(address: str) -> tuple[str, socket.AddressFamily, Any, bool]:
    """(host, socket family, address to bind, dual-stack) of a ``--web.listen-address``."""
    host, port = parse_listen_address(address)
    return (host, *_resolve(host, port, address))


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
