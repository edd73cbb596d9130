"""The HTTP server under hostile clients: malformed requests over raw sockets, trickling
clients, request and connection limits, keep-alive. Each case ends in a sane status or a
closed connection, and the server keeps answering /metrics."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.web.listen import WebServer, start_web_server

pytestmark = pytest.mark.integration  # every test runs a real server on a loopback port


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    closes: bool  # the server said it closes the connection after this answer


class Answers:
    """A connection's answers, read one after another from one buffer, as pipelining needs
    (each http.client answer would otherwise read ahead into a buffer of its own)."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")

    def makefile(self, *args: Any) -> Any:
        return self  # what http.client.HTTPResponse reads from

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def close(self) -> None:
        """Kept open for the next answer; the socket's owner closes it."""


def read_answer(sock: socket.socket | Answers, method: str = "GET") -> Optional[Answer]:
    """The next answer on ``sock``, or None when the server closed without answering."""
    response = http.client.HTTPResponse(sock if isinstance(sock, Answers) else Answers(sock),  # type: ignore[arg-type]
                                        method=method)
    try:
        response.begin()
    except (http.client.RemoteDisconnected, ConnectionResetError):
        return None
    return Answer(response.status, response.headers, response.read(), response.will_close)


def exchange(port: int, data: bytes, timeout: float = 5.0) -> Optional[Answer]:
    """Send raw bytes, half-close nothing, and read one answer (None: closed unanswered)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_answer(sock, "HEAD" if data.startswith(b"HEAD ") else "GET")


def status_of(answer: Optional[Answer]) -> Optional[int]:
    return None if answer is None else answer.status


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def metrics_still_served(server: WebServer) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        return response.status == 200 and b"pyparallel_test_gauge 42.0" in response.read()
    finally:
        conn.close()


GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"

# name -> (raw request, expected status; None means the connection is closed unanswered)
CORPUS: dict[str, tuple[bytes, int | None]] = {
    "http/0.9 bare GET": (b"GET /metrics\r\n", 400),
    "http/0.9 bare GET, LF": (b"GET /metrics\n", 400),
    "http/2.0 version": (b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    "version garbage": (b"GET /metrics HTTQ/1.1\r\nHost: x\r\n\r\n", 400),
    "binary garbage": (bytes(range(256)) + b"\r\n\r\n", 400),
    "nul bytes": (b"\x00" * 64 + b"\r\n\r\n", 400),
    "tls hello on plain port": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\n", 400),
    "empty line": (b"\r\n\r\n", 400),
    "double space": (b"GET  /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "missing Host on HTTP/1.1": (b"GET /metrics HTTP/1.1\r\n\r\n", 400),
    "no Host on HTTP/1.0 is fine": (b"GET /metrics HTTP/1.0\r\n\r\n", 200),
    "bare LF line ends": (b"GET /metrics HTTP/1.1\nHost: x\n\n", 200),
    "invalid percent-encoding": (b"GET /metr%zzics HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "truncated percent-encoding": (b"GET /metrics% HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "valid percent-encoding": (b"GET /%6detrics HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    "non-ascii path": ("GET /métrics HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 400),
    "non-ascii header value": (GET + b"X-Name: caf\xc3\xa9 \xff\r\n\r\n", 200),
    "header without colon": (GET + b"not a header\r\n\r\n", 400),  # Go: "malformed MIME header line"
    "huge header": (GET + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n", 431),
    "header over the head limit, whole in one read": (GET + b"X-Big: " + b"a" * 40_000 + b"\r\n\r\n", 431),
    "header under the head limit": (GET + b"X-Big: " + b"a" * 30_000 + b"\r\n\r\n", 200),
    "many headers": (GET + b"".join(b"X-%d: y\r\n" % i for i in range(300)) + b"\r\n", 431),
    "huge uri": (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "absurd Content-Length": (GET + b"Content-Length: 99999999999999999999999\r\n\r\n", 400),  # as Go: not a length
    "Content-Length over the body limit": (GET + b"Content-Length: 70000\r\n\r\n", 413),
    "negative Content-Length": (GET + b"Content-Length: -1\r\n\r\n", 400),
    "conflicting Content-Lengths": (GET + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    "chunked body": (GET + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
    "small body is read and ignored": (GET + b"Content-Length: 5\r\n\r\nhello", 200),
    "POST to metrics": (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
    "DELETE to metrics": (b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "unknown method": (b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "lowercase method": (b"get /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "PUT to healthy": (b"PUT /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "OPTIONS to landing": (b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "GET to reload": (b"GET /-/reload HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "POST to reload, lifecycle off": (b"POST /-/reload HTTP/1.1\r\nHost: x\r\n\r\n", 403),
    "HEAD to metrics": (b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    "absolute-form target": (b"GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    "absolute-form target, unknown path": (b"GET http://x/nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    "absolute-form target, no path": (b"GET http://x HTTP/1.1\r\nHost: x\r\n\r\n", 200),  # the landing page
    "asterisk target": (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    "path traversal": (b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    "closed before the head ends": (b"GET /metrics HTTP/1.1\r\nHost:", None),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_malformed_request_gets_a_sane_status_and_the_server_keeps_serving(
        serve: Any, name: str) -> None:
    request, expected = CORPUS[name]
    server = serve()
    if expected is None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(4096) == b""
    else:
        answer = exchange(server.port, request)
        assert answer is not None and answer.status == expected, answer
        if expected != 200 or request.startswith(b"HEAD"):
            assert b"pyparallel_test_gauge" not in answer.body
        if expected == 405:
            assert answer.headers["Allow"] and set(answer.headers["Allow"]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ, ")
        if expected >= 400 and expected not in (403, 404, 405):  # refused before the app: closed
            assert answer.closes
    assert metrics_still_served(server)


def test_pipelined_requests_are_answered_in_order_until_a_malformed_one(serve: Any) -> None:
    server = serve()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(GET + b"\r\n" + b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /-/ready HTTP/1.1\r\n\r\n")
        stream = Answers(sock)
        answers = [read_answer(stream) for _ in range(3)]
        assert [status_of(a) for a in answers] == [200, 200, 400]  # the third has no Host
        assert answers[0] is not None and b"pyparallel_test_gauge 42.0" in answers[0].body
        assert answers[1] is not None and answers[1].body == b"Healthy"
        assert closed_by_server(sock, 3)
    assert metrics_still_served(server)


def test_trickling_client_is_dropped_at_the_read_deadline(serve: Any) -> None:
    """A client sending one byte at a time never completes a request within the deadline:
    it is disconnected, and meanwhile everyone else is served."""
    server = serve(read_timeout=2.0)
    started = time.monotonic()
    closed_after = None
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for byte in GET:
            try:
                sock.sendall(bytes([byte]))
                sock.settimeout(0.4)
                if sock.recv(4096) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                assert metrics_still_served(server)
            except (ConnectionResetError, BrokenPipeError):
                closed_after = time.monotonic() - started
                break
            if time.monotonic() - started > 10:
                break
    assert closed_after is not None, "the trickling client was never dropped"
    assert 1.5 < closed_after < 5
    assert metrics_still_served(server)


class BlockingCollector(Collector):
    """Collects only once ``release`` is set: scrapes stay in flight while a test looks."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.entered.release()
        self.release.wait(30)
        yield GaugeMetricFamily("pyparallel_slow", "A family that takes a while.", value=1)


@pytest.mark.parametrize("limit", [40, 3])
def test_requests_beyond_max_requests_get_a_fast_503(serve: Any, limit: int) -> None:
    registry = CollectorRegistry()
    blocking = BlockingCollector()
    server = serve(metrics=registry, max_requests=limit)
    registry.register(blocking)
    holders: list[socket.socket] = []
    try:
        for _ in range(limit):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=35)
            sock.sendall(GET + b"\r\n")
            holders.append(sock)
        for _ in range(limit):
            assert blocking.entered.acquire(timeout=10), "requests did not all reach the app"
        started = time.monotonic()
        answer = exchange(server.port, GET + b"\r\n")
        elapsed = time.monotonic() - started
        assert answer is not None and answer.status == 503
        assert f"Limit of concurrent requests reached ({limit})".encode() in answer.body
        assert elapsed < 2  # answered at once, not queued behind the held requests
        workers = [t for t in threading.enumerate() if t.name.startswith(f"web-worker-{server.port}-")]
        assert len(workers) == limit  # one thread per running request, and no more
    finally:
        blocking.release.set()
    for sock in holders:
        with sock:
            held = read_answer(sock)
            assert held is not None and held.status == 200 and b"pyparallel_slow 1.0" in held.body
    assert status_of(exchange(server.port, GET + b"\r\n")) == 200


def test_zero_max_requests_means_no_limit(serve: Any) -> None:
    registry = CollectorRegistry()
    blocking = BlockingCollector()
    server = serve(metrics=registry, max_requests=0)
    registry.register(blocking)
    results: list[int | None] = []

    def scrape() -> None:
        results.append(status_of(exchange(server.port, GET + b"\r\n", timeout=30)))

    threads = [threading.Thread(target=scrape) for _ in range(50)]
    for thread in threads:
        thread.start()
    time.sleep(1)  # let them all arrive; none may be refused
    blocking.release.set()
    for thread in threads:
        thread.join(30)
    assert results == [200] * 50


def test_bad_limits_are_config_errors(registry: CollectorRegistry) -> None:
    from exporter.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^--web\.max-requests: must be 0 \(no limit\) or more, got -1$"):
        start_web_server("127.0.0.1:0", registry, max_requests=-1)


def test_silent_tls_client_is_dropped_at_the_read_deadline(
        serve: Any, tmp_path: Any) -> None:
    """A client that connects to the TLS port and never starts the handshake is closed."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from conftest import key_pem, self_signed_pem

    from exporter.config.webconfig import load_web_config

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cert.pem").write_bytes(self_signed_pem(key, "127.0.0.1"))
    (tmp_path / "key.pem").write_bytes(key_pem(key))
    (tmp_path / "web.yml").write_text(f"tls_server_config:\n  cert_file: {tmp_path / 'cert.pem'}\n"
                                      f"  key_file: {tmp_path / 'key.pem'}\n")
    server = serve(web_config=load_web_config(str(tmp_path / "web.yml")), read_timeout=1.0)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as silent:
        assert silent.recv(1) == b""
    assert 0.8 < time.monotonic() - started < 3


def test_client_that_stops_reading_frees_its_worker_at_the_write_deadline(
        serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from exporter.web import httpserver

    monkeypatch.setattr(httpserver, "WRITE_TIMEOUT_SECONDS", 1.0)
    big = CollectorRegistry()
    gauge = Gauge("pyparallel_big", "Many series, so the answer outgrows socket buffers.", ["i"], registry=big)
    for i in range(60_000):
        gauge.labels(str(i)).set(i)
    server = serve(metrics=big, max_requests=1)
    with socket.socket() as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", server.port))
        stalled.sendall(GET + b"\r\n")  # and never reads the answer
        deadline = time.monotonic() + 15
        statuses = []
        while time.monotonic() < deadline:
            status = status_of(exchange(server.port, b"GET /-/healthy HTTP/1.0\r\n\r\n"))
            statuses.append(status)
            if status == 200:
                break
            time.sleep(0.2)
        assert statuses[-1] == 200, statuses
        assert 503 in statuses  # the stalled client did hold the only request slot for a while


# --- Expect: 100-continue, absolute-form targets, keep-alive -------------------------------


@pytest.mark.parametrize("path, expected", [("/nope", 404), ("/metrics", 405), ("/-/reload", 403)])
def test_expect_100_continue_on_a_refused_path_is_answered_at_once_and_closed(
        serve: Any, path: str, expected: int) -> None:
    """The client waits for 100 Continue before sending its body; the server answers without
    waiting for a body it will not read (not at the 10 s read deadline), then closes."""
    server = serve()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        answer = read_answer(sock)
        assert status_of(answer) == expected
        assert time.monotonic() - started < 2
        assert answer is not None and answer.closes and closed_by_server(sock, 3)
    assert metrics_still_served(server)


def test_absolute_form_target_is_served_like_the_origin_form_with_its_query(serve: Any) -> None:
    server = serve()
    registry_query = "name[]=pyparallel_test_gauge"
    answer = exchange(server.port, f"GET http://127.0.0.1:{server.port}/metrics?{registry_query} HTTP/1.1\r\n"
                                   f"Host: 127.0.0.1\r\n\r\n".encode())
    assert answer is not None and answer.status == 200
    assert answer.body.startswith(b"# HELP pyparallel_test_gauge ")  # the query selected the family


def connection_count(server: WebServer) -> int:
    """Established TCP connections to the server's port, from the kernel's table."""
    local = f"0100007F:{server.port:04X}"
    with open("/proc/net/tcp") as table:
        return sum(1 for line in table if line.split()[1] == local and line.split()[3] == "01")


def test_one_connection_carries_many_requests(serve: Any) -> None:
    server = serve()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for path in ("/metrics", "/-/healthy", "/nope", "/metrics") * 3:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert not response.will_close, path
        assert connection_count(server) == 1
    finally:
        conn.close()


def test_http_1_0_and_connection_close_requests_are_answered_then_closed(serve: Any) -> None:
    server = serve()
    for request in (b"GET /metrics HTTP/1.0\r\n\r\n", GET + b"Connection: close\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(request)
            answer = read_answer(sock)
            assert answer is not None and answer.status == 200 and answer.closes
            assert closed_by_server(sock, 3)


def test_kept_alive_connection_is_closed_after_the_idle_timeout(serve: Any) -> None:
    server = serve(idle_timeout=1.0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(GET + b"\r\n")
        assert status_of(read_answer(sock)) == 200
        started = time.monotonic()
        assert not closed_by_server(sock, 0.5)  # kept alive for now
        assert closed_by_server(sock, 3)
        assert 0.8 < time.monotonic() - started < 3


def test_a_connection_carries_at_most_max_requests_per_connection(serve: Any) -> None:
    server = serve(max_requests_per_connection=3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        stream = Answers(sock)
        closes = []
        for _ in range(3):
            sock.sendall(GET + b"\r\n")
            answer = read_answer(stream)
            assert answer is not None and answer.status == 200
            closes.append(answer.closes)
        assert closes == [False, False, True]
        assert closed_by_server(sock, 3)


def test_next_request_on_a_kept_alive_connection_has_the_read_deadline(serve: Any) -> None:
    """Slowloris after a first request: from the next request's first byte the read deadline
    applies, not the (longer) idle timeout."""
    server = serve(read_timeout=1.5, idle_timeout=60)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(GET + b"\r\n")
        assert status_of(read_answer(sock)) == 200
        started = time.monotonic()
        closed = False
        for byte in GET:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_server(sock, 0.3):
                closed = True
                break
        assert closed, "the trickling request was never dropped"
        assert 1.2 < time.monotonic() - started < 4


def test_idle_kept_alive_connections_add_no_threads(serve: Any) -> None:
    server = serve()
    before = threading.active_count()
    kept: list[socket.socket] = []
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = read_answer(sock)
            assert answer is not None and answer.status == 200 and not answer.closes
            kept.append(sock)
        assert connection_count(server) == 200  # all still open, waiting in the I/O thread
        assert threading.active_count() <= before + 2  # one worker thread served them in turn
        assert metrics_still_served(server)
    finally:
        for sock in kept:
            sock.close()


def test_thousands_of_pipelined_requests_are_all_answered_in_order(serve: Any) -> None:
    """More pipelined bytes than the server buffers per connection: the rest waits in the
    kernel and is read as answers go out, none lost."""
    server = serve(max_requests_per_connection=10_000)
    count = 3000
    requests = [b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-Index: %d\r\n\r\n" % i for i in range(count)]
    assert len(b"".join(requests)) > 96 * 1024
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sender = threading.Thread(target=sock.sendall, args=(b"".join(requests),))
        sender.start()
        stream = Answers(sock)
        statuses = [status_of(read_answer(stream)) for _ in range(count)]
        sender.join(30)
    assert statuses == [200] * count
