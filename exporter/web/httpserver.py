"""A bounded HTTP/1.x server for a WSGI app: the limits node_exporter's Go server has.

One I/O thread accepts connections, does TLS handshakes and reads each request head (and
small body) without blocking, under a deadline. Only a complete, well-formed request goes to
a fixed pool of worker threads, which run the WSGI app and write the answer. So:

- idle or trickling clients cost a socket and a small buffer, never a thread; a request not
  read in full within ``read_timeout`` seconds is dropped (Go's ReadHeaderTimeout);
- at most ``max_requests`` requests run at once; the next one gets a fast
  ``503 Service Unavailable`` (node_exporter's ``--web.max-requests``) instead of a queue;
- at most ``max_connections`` connections are open; a new one past the cap evicts the
  connection that has waited in the I/O thread longest, so a flood of idle connections
  pushes itself out rather than locking out Prometheus;
- the listen backlog is the kernel's ``somaxconn`` (as Go sets it), for bursts of scrapes;
- HTTP/0.9, malformed request lines, oversized heads and bodies, bad percent-encoding and
  HTTP/1.1 without ``Host`` are refused with a 4xx and a closed connection, as Go does
  (exporter/web/http11.py, on h11, does the parsing);
- connections are kept alive between requests, as Prometheus expects, so a scrape over TLS
  does not pay a handshake each time: a kept-alive connection waits in the I/O thread like
  any other (no thread), for ``idle_timeout`` seconds at most, and carries at most
  ``max_requests_per_connection`` requests before it is closed.
"""

from __future__ import annotations

import errno
import logging
import queue
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exporter.web import http11
from exporter.web.http11 import CLOSED, Request, RequestReader
from exporter.logs import log_kv

log = logging.getLogger(__name__)

# Defaults; the rationale for each is in docs/operations.md.
DEFAULT_MAX_REQUESTS = 40  # node_exporter's --web.max-requests default
DEFAULT_READ_TIMEOUT_SECONDS = 10.0  # from accept to the last byte of the request
WRITE_TIMEOUT_SECONDS = 30.0  # for writing the whole answer, in a worker
MAX_CONNECTIONS = 1024  # open connections at most (lowered to half the fd limit)
# Longer than the usual 15 s-1 m scrape intervals, so Prometheus' kept-alive connection is
# still open for its next scrape; shorter than Prometheus' own 5-minute idle limit.
DEFAULT_IDLE_TIMEOUT_SECONDS = 120.0
DEFAULT_MAX_REQUESTS_PER_CONNECTION = 1000  # then Connection: close (nginx's keepalive_requests)
# Bytes read from one connection per wakeup: a head and a body at most, so what one client
# sends is bounded before the parser has looked at it.
_MAX_READ_PER_EVENT = http11.MAX_HEAD_BYTES + http11.MAX_BODY_BYTES
# Threads that run requests when --web.max-requests is 0 (no limit): requests then queue.
UNLIMITED_WORKERS = 40
_POLL_SECONDS = 0.1  # how often the I/O thread checks deadlines and shutdown()
_LINGER_SECONDS = 1.0  # how long an error answer waits for the client to stop sending
_ACCEPTS_PER_WAKEUP = 64

_TLS_HANDSHAKE_RECORD = b"\x16"


def somaxconn() -> int:
    """The kernel's cap on a listen backlog (Go uses it too); 1024 if unknown."""
    try:
        with open("/proc/sys/net/core/somaxconn") as handle:
            return max(128, min(65535, int(handle.read().strip())))
    except (OSError, ValueError):
        return 1024


@dataclass
class _Conn:
    """A connection: in the I/O thread while a request arrives (or it waits for the next one,
    or drains after an error answer), in a worker while its request is answered."""

    sock: socket.socket
    client: Any
    deadline: float
    # peek (TLS: plain HTTP or a handshake?), handshake, read, idle (kept alive between
    # requests), drain (after an answer that closes the connection)
    state: str = "read"
    reader: RequestReader = field(default_factory=RequestReader)
    served: int = 0  # requests answered on this connection


class BoundedHTTPServer:
    """Serves the WSGI ``app`` on a bound, listening socket until ``shutdown()``."""

    def __init__(self, listener: socket.socket, app: Callable[..., Any], *,
                 server_software: str = "",
                 ssl_context: ssl.SSLContext | None = None,
                 max_requests: int = DEFAULT_MAX_REQUESTS,
                 read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT_SECONDS,
                 max_requests_per_connection: int = DEFAULT_MAX_REQUESTS_PER_CONNECTION,
                 plain_http_answer: bytes = b"") -> None:
        self.socket = listener
        self.server_address = listener.getsockname()
        self.ssl_context = ssl_context
        self.max_requests = max_requests
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.max_requests_per_connection = max_requests_per_connection
        self.max_connections = _connection_cap()
        self._app = app
        self._server_software = server_software
        self._plain_http_answer = plain_http_answer
        host, port = self.server_address[:2]
        # What wsgiref's WSGIServer.setup_environ puts in every request's environ.
        self.base_environ: dict[str, Any] = {
            "SERVER_NAME": str(host), "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PORT": str(port),
            "REMOTE_HOST": "", "SERVER_SOFTWARE": server_software,
        }
        self._scheme = "https" if ssl_context is not None else "http"
        self._selector = selectors.DefaultSelector()
        self._conns: dict[socket.socket, _Conn] = {}  # insertion order = accept (or return) order
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._workers = _WorkerPool(min(max_requests or UNLIMITED_WORKERS, self.max_connections),
                                    self._handle, f"web-worker-{port}")
        # Workers hand kept-alive connections back to the I/O thread through this list, and
        # wake it with a byte on the socket pair rather than wait for its next poll.
        self._returned: list[_Conn] = []
        self._returned_lock = threading.Lock()
        self._closed = False  # set under _returned_lock once the I/O loop has ended
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._stop = threading.Event()
        self._stopped = threading.Event()
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)

    # --- lifecycle ----------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """The I/O loop; returns after ``shutdown()``."""
        next_expiry = 0.0
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(_POLL_SECONDS):
                    if key.fileobj is self.socket:
                        self._accept()
                    elif key.fileobj is self._wake_reader:
                        self._take_returned()
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
            with self._returned_lock:
                self._closed = True
                returned, self._returned = self._returned, []
            for conn in returned:
                _close_socket(conn.sock)
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop the I/O loop and wait for it (at most about one poll interval)."""
        self._stop.set()
        self._stopped.wait(5)

    def server_close(self) -> None:
        self._selector.close()
        self.socket.close()
        self._wake_reader.close()
        self._wake_writer.close()
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
            sock.setblocking(False)
            _no_delay(sock)
            self._watch(_Conn(sock, client, time.monotonic() + self.read_timeout,
                              state="peek" if self.ssl_context is not None else "read"))

    def _watch(self, conn: _Conn) -> None:
        """Let the I/O thread wait for ``conn``'s next bytes, within the connection cap."""
        if len(self._conns) >= self.max_connections:
            self._evict_oldest()
        self._conns[conn.sock] = conn
        self._selector.register(conn.sock, selectors.EVENT_READ)

    def _evict_oldest(self) -> bool:
        """Close the connection that has waited in the I/O thread longest."""
        oldest = next(iter(self._conns.values()), None)
        if oldest is None:
            return False
        log_kv(log, logging.DEBUG, "connection limit reached; dropping the oldest",
               client=_client(oldest.client))
        self._close(oldest)
        return True

    def _expire(self, now: float) -> None:
        # Not just a prefix in accept order: deadlines differ by state.
        for conn in list(self._conns.values()):
            if conn.deadline <= now:
                if conn.state not in ("drain", "idle"):
                    log_kv(log, logging.DEBUG, "request not received in time; closing",
                           client=_client(conn.client), read_timeout=self.read_timeout)
                self._close(conn)

    def _on_event(self, conn: _Conn) -> None:
        try:
            if conn.state == "peek":
                self._peek(conn)
            elif conn.state == "handshake":
                self._handshake(conn)
            elif conn.state in ("read", "idle"):
                self._read(conn)
            else:
                self._drain(conn)
        except (OSError, ValueError) as exc:
            log_kv(log, logging.DEBUG, "connection failed", client=_client(conn.client), err=str(exc))
            self._close(conn)
        except Exception:  # a bug here must cost one connection, never the I/O thread
            log_kv(log, logging.ERROR, "error reading a request", client=_client(conn.client), exc_info=True)
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
        """Read what has arrived into the connection's parser, then act on what it makes of it.

        At most _MAX_READ_PER_EVENT bytes wait in the parser: a client pipelining requests
        faster than they are answered leaves the rest in the kernel's buffer, not in ours."""
        room = _MAX_READ_PER_EVENT - conn.reader.buffered
        while room > 0:
            try:
                chunk = conn.sock.recv(min(16384, room))
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if chunk and conn.state == "idle":
                # The next request has begun: from its first byte it has read_timeout to arrive.
                conn.state, conn.deadline = "read", time.monotonic() + self.read_timeout
            conn.reader.feed(chunk)
            if not chunk:
                break
            room -= len(chunk)
        outcome = conn.reader.next()
        if isinstance(outcome, Request):
            self._dispatch(conn, outcome)
        elif isinstance(outcome, tuple):
            self._answer_raw(conn, http11.error_answer(*outcome))
        elif outcome is CLOSED or room <= 0:
            self._close(conn)  # gone before sending a whole request, or a full buffer and no request in it

    def _dispatch(self, conn: _Conn, request: Request) -> None:
        """Hand a complete request to a worker, or answer 503 when too many are running."""
        with self._in_flight_lock:
            full = 0 < self.max_requests <= self._in_flight
            if not full:
                self._in_flight += 1
        if full:
            # promhttp's wording, as node_exporter answers.
            self._answer_raw(conn, http11.error_answer(
                503, f"Limit of concurrent requests reached ({self.max_requests}), try again later.\n"))
            return
        self._forget(conn)
        self._workers.submit((conn, request))

    def _answer_raw(self, conn: _Conn, answer: bytes) -> None:
        """Send a short answer and close once the client stops sending (or after a second):
        closing with unread data sends a reset, which can destroy the answer in flight."""
        try:
            conn.sock.send(answer)  # a few hundred bytes: fits in an empty send buffer
        except (OSError, ValueError):
            self._close(conn)
            return
        self._linger(conn)

    def _linger(self, conn: _Conn) -> None:
        """Half-close, then drain what the client still sends, for a second at most."""
        try:
            if isinstance(conn.sock, ssl.SSLSocket):
                self._close(conn)  # no half-close in TLS without a blocking unwrap
                return
            conn.sock.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            self._close(conn)
            return
        conn.state = "drain"
        conn.deadline = time.monotonic() + _LINGER_SECONDS

    def _drain(self, conn: _Conn) -> None:
        for _ in range(16):
            try:
                if not conn.sock.recv(16384):
                    break
            except (BlockingIOError, ssl.SSLWantReadError):
                return
        self._close(conn)

    def _take_returned(self) -> None:
        """Watch again the connections workers have answered on and handed back."""
        try:
            while self._wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._returned_lock:
            returned, self._returned = self._returned, []
        now = time.monotonic()
        for conn in returned:
            try:
                conn.sock.setblocking(False)
            except OSError:
                _close_socket(conn.sock)
                continue
            self._watch(conn)
            if conn.state == "drain":
                conn.deadline = now + _LINGER_SECONDS
                continue
            conn.state, conn.deadline = "idle", now + self.idle_timeout
            # A pipelined request may be in the parser already, or in TLS's buffer, where
            # the selector cannot see it.
            self._on_event(conn)

    def _forget(self, conn: _Conn) -> None:
        self._conns.pop(conn.sock, None)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass

    def _close(self, conn: _Conn) -> None:
        self._forget(conn)
        _close_socket(conn.sock)

    # --- the workers ----------------------------------------------------------------------------

    def _handle(self, job: tuple[_Conn, Request]) -> None:
        conn, request = job
        keep_alive = False
        try:
            conn.served += 1
            close = conn.served >= self.max_requests_per_connection or self._stop.is_set()
            env = http11.environ(request, self.base_environ, conn.client, self._scheme)
            keep_alive = http11.respond(conn.reader, request, self._app, env, _DeadlineSender(conn.sock),
                                        server=self._server_software, close=close)
        except Exception as exc:  # a broken client costs its own request, nothing more
            log_kv(log, logging.DEBUG, "error handling request", client=_client(conn.client), err=str(exc))
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
        if keep_alive:
            self._hand_back(conn)
            return
        # Half-close and let the I/O thread drain: closing with unread data (a pipelined
        # request, a body never read) sends a reset that can destroy the answer in flight.
        try:
            if isinstance(conn.sock, ssl.SSLSocket):
                raise OSError("no half-close in TLS")
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            _close_socket(conn.sock)
            return
        conn.state = "drain"
        self._hand_back(conn)

    def _hand_back(self, conn: _Conn) -> None:
        with self._returned_lock:
            if self._closed:
                _close_socket(conn.sock)
                return
            self._returned.append(conn)
        try:
            self._wake_writer.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the I/O thread has wakeups pending already


class _DeadlineSender:
    """Blocking sendall, every write of one answer within one deadline: a client that stops
    reading holds its worker for WRITE_TIMEOUT_SECONDS in total, not per write."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._deadline: float | None = None  # set by the first write

    def __call__(self, data: bytes) -> None:
        if not data:
            return
        if self._deadline is None:
            self._deadline = time.monotonic() + WRITE_TIMEOUT_SECONDS
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("answer not written within the write deadline")
        self._sock.settimeout(left)
        self._sock.sendall(data)


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


def _no_delay(sock: socket.socket) -> None:
    """TCP_NODELAY, as Go sets it on every connection: an answer's last segment goes out at
    once instead of waiting for the client's ACK of the one before."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # not TCP (a Unix socket in a test): nothing to delay


def _close_socket(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
