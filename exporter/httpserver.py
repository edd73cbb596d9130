"""A bounded HTTP/1.x server for a WSGI app: the limits node_exporter's Go server has.

One I/O thread accepts connections, does TLS handshakes and reads each request head (and
small body) without blocking, under a deadline. Only a complete, well-formed request goes to
a fixed pool of worker threads, which run the WSGI app and write the answer. So:

- idle or trickling clients cost a socket and a small buffer, never a thread; a request not
  read in full within ``read_timeout`` seconds is dropped (Go's ReadHeaderTimeout);
- at most ``max_requests`` requests run at once; the next one gets a fast
  ``503 Service Unavailable`` (node_exporter's ``--web.max-requests``) instead of a queue;
- at most ``max_connections`` connections are open; a new one past the cap evicts the
  oldest connection that is still sending its request, so a flood of idle connections
  pushes itself out rather than locking out Prometheus;
- the listen backlog is the kernel's ``somaxconn`` (as Go sets it), for bursts of scrapes;
- HTTP/0.9, malformed request lines, oversized heads and bodies, bad percent-encoding and
  HTTP/1.1 without ``Host`` are refused with a 4xx and a closed connection, as Go does.

Each connection carries one request (``Connection: close``, wsgiref's HTTP/1.0 answer).
"""

from __future__ import annotations

import errno
import http.client
import io
import logging
import queue
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler

from exporter.logs import log_kv

log = logging.getLogger(__name__)

# Defaults; the rationale for each is in docs/operations.md.
DEFAULT_MAX_REQUESTS = 40  # node_exporter's --web.max-requests default
DEFAULT_READ_TIMEOUT_SECONDS = 10.0  # from accept to the last byte of the request
WRITE_TIMEOUT_SECONDS = 30.0  # for writing the whole answer, in a worker
MAX_CONNECTIONS = 1024  # open connections at most (lowered to half the fd limit)
MAX_HEAD_BYTES = 32 * 1024  # request line + headers; a scrape sends well under 1 KiB
MAX_BODY_BYTES = 64 * 1024  # no route takes a body; a small one is read and ignored
# Threads that run requests when --web.max-requests is 0 (no limit): requests then queue.
UNLIMITED_WORKERS = 40
_POLL_SECONDS = 0.1  # how often the I/O thread checks deadlines and shutdown()
_LINGER_SECONDS = 1.0  # how long an error answer waits for the client to stop sending
_ACCEPTS_PER_WAKEUP = 64

_TLS_HANDSHAKE_RECORD = b"\x16"
# RFC 9110 token characters for a method; a target of visible ASCII with valid %-escapes.
_REQUEST_LINE = re.compile(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) (HTTP/\d\.\d)$")
_HEAD_END = re.compile(rb"\r?\n\r?\n")  # Go accepts bare LF line ends too
_TARGET = re.compile(rb"^(?:[!-$&-~]|%[0-9A-Fa-f]{2})+$")

ErrorAnswer = tuple[int, str, str]  # status, reason, body


def somaxconn() -> int:
    """The kernel's cap on a listen backlog (Go uses it too); 1024 if unknown."""
    try:
        with open("/proc/sys/net/core/somaxconn") as handle:
            return max(128, min(65535, int(handle.read().strip())))
    except (OSError, ValueError):
        return 1024


@dataclass
class _Conn:
    """A connection the I/O thread is reading from (or draining after an error answer)."""

    sock: socket.socket
    client: Any
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)
    state: str = "read"  # peek (TLS: plain HTTP or a handshake?), handshake, read, drain
    http11: bool = False  # the request line says HTTP/1.1
    head_length: int = 0  # bytes of request line + headers once the head is complete
    needed: int = 0  # head + body bytes once Content-Length is known


class BoundedHTTPServer:
    """Serves ``app`` on a bound, listening socket until ``shutdown()``."""

    def __init__(self, listener: socket.socket, app: Callable[..., Any],
                 handler_class: type[WSGIRequestHandler], *,
                 ssl_context: ssl.SSLContext | None = None,
                 max_requests: int = DEFAULT_MAX_REQUESTS,
                 read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
                 plain_http_answer: bytes = b"") -> None:
        self.socket = listener
        self.server_address = listener.getsockname()
        self.ssl_context = ssl_context
        self.max_requests = max_requests
        self.read_timeout = read_timeout
        self.max_connections = _connection_cap()
        self._app = app
        self._handler_class = handler_class
        self._plain_http_answer = plain_http_answer
        host, port = self.server_address[:2]
        # What wsgiref's WSGIServer.setup_environ puts in every request's environ.
        self.base_environ: dict[str, Any] = {
            "SERVER_NAME": str(host), "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PORT": str(port),
            "REMOTE_HOST": "", "CONTENT_LENGTH": "", "SCRIPT_NAME": "",
        }
        self._selector = selectors.DefaultSelector()
        self._conns: dict[socket.socket, _Conn] = {}  # insertion order = accept order
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._workers = _WorkerPool(min(max_requests or UNLIMITED_WORKERS, self.max_connections),
                                    self._handle, f"web-worker-{port}")
        self._stop = threading.Event()
        self._stopped = threading.Event()
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ)

    # --- what wsgiref's request handler expects of its server --------------------------------

    def get_app(self) -> Callable[..., Any]:
        return self._app

    # --- lifecycle ----------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """The I/O loop; returns after ``shutdown()``."""
        next_expiry = 0.0
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(_POLL_SECONDS):
                    if key.fileobj is self.socket:
                        self._accept()
                    else:
                        conn = self._conns.get(key.fileobj)  # type: ignore[call-overload]
                        if conn is not None:
                            self._on_event(conn)
                now = time.monotonic()
                if now >= next_expiry:  # not on every event: it looks at every connection
                    self._expire(now)
                    next_expiry = now + _POLL_SECONDS
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop the I/O loop and wait for it (at most about one poll interval)."""
        self._stop.set()
        self._stopped.wait(5)

    def server_close(self) -> None:
        self._selector.close()
        self.socket.close()
        self._workers.stop()

    # --- the I/O thread -------------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                sock, client = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: free one, or the backlog keeps us spinning.
                    if not self._evict_oldest():
                        time.sleep(_POLL_SECONDS)
                    log_kv(log, logging.WARNING, "accept failed", err=exc.strerror or str(exc))
                    return
                continue  # e.g. ECONNABORTED: that client gave up
            if len(self._conns) >= self.max_connections:
                self._evict_oldest()
            sock.setblocking(False)
            conn = _Conn(sock, client, time.monotonic() + self.read_timeout,
                         state="peek" if self.ssl_context is not None else "read")
            self._conns[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ)

    def _evict_oldest(self) -> bool:
        """Close the connection that has been sending its request longest."""
        oldest = next(iter(self._conns.values()), None)
        if oldest is None:
            return False
        log_kv(log, logging.DEBUG, "connection limit reached; dropping the oldest",
               client=_client(oldest.client))
        self._close(oldest)
        return True

    def _expire(self, now: float) -> None:
        # Not just a prefix in accept order: a drain's deadline is reset to a short one.
        for conn in list(self._conns.values()):
            if conn.deadline <= now:
                if conn.state != "drain":
                    log_kv(log, logging.DEBUG, "request not received in time; closing",
                           client=_client(conn.client), read_timeout=self.read_timeout)
                self._close(conn)

    def _on_event(self, conn: _Conn) -> None:
        try:
            if conn.state == "peek":
                self._peek(conn)
            elif conn.state == "handshake":
                self._handshake(conn)
            elif conn.state == "read":
                self._read(conn)
            else:
                self._drain(conn)
        except (OSError, ValueError) as exc:
            log_kv(log, logging.DEBUG, "connection failed", client=_client(conn.client), err=str(exc))
            self._close(conn)
        except Exception:  # a bug here must cost one connection, never the I/O thread
            log.exception("error reading a request from %s", _client(conn.client))
            self._close(conn)

    def _peek(self, conn: _Conn) -> None:
        first = conn.sock.recv(1, socket.MSG_PEEK)
        if not first:
            self._close(conn)
        elif first != _TLS_HANDSHAKE_RECORD:
            self._answer_raw(conn, self._plain_http_answer)
        else:
            assert self.ssl_context is not None
            self._forget(conn)  # wrapping detaches the plain socket from its descriptor
            conn.sock = self.ssl_context.wrap_socket(conn.sock, server_side=True,
                                                     do_handshake_on_connect=False)
            self._conns[conn.sock] = conn
            self._selector.register(conn.sock, selectors.EVENT_READ)
            conn.state = "handshake"
            self._handshake(conn)

    def _handshake(self, conn: _Conn) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._selector.modify(sock, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._selector.modify(sock, selectors.EVENT_WRITE)
            return
        except (OSError, ValueError) as exc:
            log_kv(log, logging.DEBUG, "TLS handshake failed", client=_client(conn.client), err=str(exc))
            self._close(conn)
            return
        self._selector.modify(sock, selectors.EVENT_READ)
        conn.state = "read"
        self._read(conn)  # the request may have come with the handshake's last flight

    def _read(self, conn: _Conn) -> None:
        eof = False
        while True:
            try:
                chunk = conn.sock.recv(16384)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not chunk:
                eof = True
                break
            conn.buffer += chunk
            if len(conn.buffer) > MAX_HEAD_BYTES + MAX_BODY_BYTES:
                break
        answer = self._check(conn)
        if answer is not None:
            self._answer_error(conn, *answer)
        elif conn.needed and len(conn.buffer) >= conn.needed:
            self._dispatch(conn)
        elif eof:
            self._close(conn)  # the client went away before sending a whole request

    def _check(self, conn: _Conn) -> ErrorAnswer | None:
        """An error answer for what has arrived so far, or None (complete, or wait for more)."""
        buf = conn.buffer
        if not conn.head_length:
            line_end = buf.find(b"\n")
            if line_end < 0:
                return (414, "URI Too Long", "") if len(buf) > MAX_HEAD_BYTES else None
            if line_end > MAX_HEAD_BYTES:
                return 414, "URI Too Long", ""
            version, problem = _check_request_line(bytes(buf[:line_end]).rstrip(b"\r"))
            if problem is not None:
                return problem
            conn.http11 = version == b"HTTP/1.1"
            head_end = _HEAD_END.search(buf)
            if head_end is None or head_end.end() > MAX_HEAD_BYTES:
                return (431, "Request Header Fields Too Large", "") if len(buf) > MAX_HEAD_BYTES else None
            conn.head_length = head_end.end()
            body, problem = _check_headers(bytes(buf[:conn.head_length]), conn.http11)
            if problem is not None:
                return problem
            conn.needed = conn.head_length + body
        return None

    def _dispatch(self, conn: _Conn) -> None:
        """Hand a complete request to a worker, or answer 503 when too many are running."""
        with self._in_flight_lock:
            full = 0 < self.max_requests <= self._in_flight
            if not full:
                self._in_flight += 1
        if full:
            # promhttp's wording, as node_exporter answers.
            self._answer_error(conn, 503, "Service Unavailable",
                               f"Limit of concurrent requests reached ({self.max_requests}), "
                               f"try again later.\n")
            return
        self._forget(conn)
        self._workers.submit((conn.sock, conn.client, bytes(conn.buffer[:conn.needed])))

    def _answer_error(self, conn: _Conn, status: int, reason: str, body: str) -> None:
        body = body or f"{status} {reason}\n"
        self._answer_raw(conn, (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                f"Content-Length: {len(body.encode())}\r\nConnection: close\r\n\r\n{body}").encode())

    def _answer_raw(self, conn: _Conn, answer: bytes) -> None:
        """Send a short answer and close once the client stops sending (or after a second):
        closing with unread data sends a reset, which can destroy the answer in flight."""
        try:
            conn.sock.send(answer)  # a few hundred bytes: fits in an empty send buffer
            if isinstance(conn.sock, ssl.SSLSocket):
                self._close(conn)  # no half-close in TLS without a blocking unwrap
                return
            conn.sock.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            self._close(conn)
            return
        conn.state, conn.buffer = "drain", bytearray()
        conn.deadline = time.monotonic() + _LINGER_SECONDS

    def _drain(self, conn: _Conn) -> None:
        for _ in range(16):
            try:
                if not conn.sock.recv(16384):
                    break
            except (BlockingIOError, ssl.SSLWantReadError):
                return
        self._close(conn)

    def _forget(self, conn: _Conn) -> None:
        self._conns.pop(conn.sock, None)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass

    def _close(self, conn: _Conn) -> None:
        self._forget(conn)
        try:
            conn.sock.close()
        except OSError:
            pass

    # --- the workers ----------------------------------------------------------------------------

    def _handle(self, job: tuple[socket.socket, Any, bytes]) -> None:
        sock, client, request = job
        try:
            sock.settimeout(WRITE_TIMEOUT_SECONDS)
            self._handler_class(sock, client, self, request)  # type: ignore[call-arg, arg-type]
        except Exception as exc:  # a broken client costs its own request, nothing more
            log_kv(log, logging.DEBUG, "error handling request", client=_client(client), err=str(exc))
        finally:
            try:
                sock.close()
            except OSError:
                pass
            with self._in_flight_lock:
                self._in_flight -= 1


class _WorkerPool:
    """At most ``size`` daemon threads, started as needed, running ``handle`` on jobs in turn.

    Daemon threads, unlike concurrent.futures', so a client stalling a write never delays exit.
    """

    def __init__(self, size: int, handle: Callable[[Any], None], name: str) -> None:
        self._size = size
        self._name = name
        self._handle = handle
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a job
        self._pending = 0  # jobs no thread has taken yet

    def submit(self, job: Any) -> None:
        with self._lock:
            self._pending += 1
            if self._pending > self._idle and len(self._threads) < self._size:
                thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}",
                                          daemon=True)
                self._threads.append(thread)
                self._idle += 1
                thread.start()
        self._jobs.put(job)

    def stop(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                self._idle -= 1
                self._pending -= 1
            try:
                self._handle(job)
            finally:
                with self._lock:
                    self._idle += 1


def _check_request_line(line: bytes) -> tuple[bytes, ErrorAnswer | None]:
    """(HTTP version, None) or (b"", an error answer), by Go's net/http rules: three parts,
    HTTP/1.x; anything else, HTTP/0.9's bare ``GET /path`` included, is a 400."""
    match = _REQUEST_LINE.match(line)
    if match is None:
        return b"", (400, "Bad Request", "400 Bad Request: malformed request line\n")
    version = match.group(3)
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        return b"", (505, "HTTP Version Not Supported", "")
    if not _TARGET.match(match.group(2)):
        return b"", (400, "Bad Request", "400 Bad Request: invalid request target\n")
    return version, None


def _check_headers(head: bytes, http11: bool) -> tuple[int, ErrorAnswer | None]:
    """(body length, None), or (0, an error answer) for headers we will not serve."""
    first_line_end = head.index(b"\n") + 1
    try:
        headers = http.client.parse_headers(io.BytesIO(head[first_line_end:]))
    except (http.client.HTTPException, ValueError):
        return 0, (431, "Request Header Fields Too Large", "")
    if http11 and "Host" not in headers:
        return 0, (400, "Bad Request", "400 Bad Request: missing required Host header\n")
    if "Transfer-Encoding" in headers:
        return 0, (411, "Length Required", "")
    lengths = headers.get_all("Content-Length") or []
    if not lengths:
        return 0, None
    if len(set(lengths)) != 1 or not lengths[0].strip().isdigit() or not lengths[0].isascii():
        return 0, (400, "Bad Request", "400 Bad Request: invalid Content-Length\n")
    length = int(lengths[0])
    if length > MAX_BODY_BYTES:
        return 0, (413, "Content Too Large", "")
    return length, None


def _connection_cap() -> int:
    """MAX_CONNECTIONS, or half the open-file limit if that is lower (probes need fds too)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft // 2))


def _client(client_address: Any) -> str:
    try:
        return f"{client_address[0]}:{client_address[1]}"
    except (TypeError, IndexError):
        return str(client_address)
