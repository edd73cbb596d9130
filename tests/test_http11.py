"""exporter.web.http11 without sockets: bytes in, a request or an error answer out; WSGI answers
written through h11, kept alive or closed. The real server's behaviour over sockets is in
tests/test_http_limits.py."""

from __future__ import annotations

from typing import Any, Optional

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.web import http11
from exporter.web.http11 import CLOSED, Request, RequestReader

GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


def read(*chunks: bytes) -> http11.Outcome:
    reader = RequestReader()
    outcome: http11.Outcome = None
    for chunk in chunks:
        reader.feed(chunk)
        outcome = reader.next()
    return outcome


def test_a_request_in_pieces_is_complete_only_with_its_last_byte() -> None:
    reader = RequestReader()
    for i in range(len(GET) - 1):
        reader.feed(GET[i:i + 1])
        assert reader.next() is None
    reader.feed(GET[-1:])
    outcome = reader.next()
    assert isinstance(outcome, Request) and outcome.event.target == b"/metrics"


def test_http_0_9_is_refused_as_soon_as_its_line_is_in() -> None:
    # No blank line follows a 0.9 request: waiting for one would hold the connection.
    assert read(b"GET /metrics\r\n") == (400, "400 Bad Request: malformed request line\n")


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /metrics HTTP/2.0\r\n", 505),
    (b"GET /m\xc3\xa9trics HTTP/1.1\r\n", 400),
    (b"GET /" + b"a" * 40_000, 414),
    (GET.replace(b"\r\n\r\n", b"\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(101)) + b"\r\n"), 431),
    (GET.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n"), 411),
    (GET.replace(b"\r\n\r\n", b"\r\nContent-Length: 65537\r\n\r\n"), 413),
    (b"GET /metrics HTTP/1.1\r\n\r\n", 400),  # no Host
])
def test_requests_we_will_not_serve_get_their_status(request_bytes: bytes, status: int) -> None:
    outcome = read(request_bytes)
    assert isinstance(outcome, tuple) and outcome[0] == status


def head_of(size: int) -> bytes:
    """A complete request head of exactly ``size`` bytes, blank line included."""
    head = GET.replace(b"\r\n\r\n", b"\r\nX-Pad: \r\n\r\n")
    return head.replace(b"X-Pad: ", b"X-Pad: " + b"a" * (size - len(head)))


def test_a_head_over_the_limit_gets_431_even_when_it_arrives_in_one_read() -> None:
    """h11 limits only a head still incomplete; a whole one was parsed at any size."""
    assert isinstance(read(head_of(http11.MAX_HEAD_BYTES)), Request)
    assert read(head_of(http11.MAX_HEAD_BYTES + 1)) == (431, "")
    assert read(head_of(3 * http11.MAX_HEAD_BYTES)) == (431, "")


def test_a_client_that_closes_mid_request_is_closed_unanswered() -> None:
    assert read(b"GET /metrics HTTP/1.1\r\nHo", b"") is CLOSED


def test_a_request_sent_before_a_half_close_is_still_served() -> None:
    reader = RequestReader()
    reader.feed(GET)
    reader.feed(b"")
    assert isinstance(reader.next(), Request)


def test_expect_100_continue_yields_the_head_without_waiting_for_the_body() -> None:
    outcome = read(b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
    assert isinstance(outcome, Request) and outcome.body_unread and outcome.body == b""


@pytest.mark.parametrize("target, path, query", [
    (b"/metrics?name[]=a", "/metrics", "name[]=a"),
    (b"http://host:9860/metrics?x=1", "/metrics", "x=1"),
    (b"https://host", "/", ""),
    (b"/%6detrics", "/metrics", ""),
    (b"*", "*", ""),
])
def test_environ_takes_path_and_query_from_origin_and_absolute_form(target: bytes, path: str, query: str) -> None:
    outcome = read(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nX-Two: a\r\nX-Two: b\r\nX_Spoof: 1\r\n\r\n")
    assert isinstance(outcome, Request)
    env = http11.environ(outcome, {"SERVER_NAME": "s"}, ("127.0.0.1", 5000), "https")
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == (path, query)
    assert env["HTTP_X_TWO"] == "a,b" and "HTTP_X_SPOOF" not in env
    assert (env["wsgi.url_scheme"], env["REMOTE_ADDR"], env["SERVER_PROTOCOL"]) == ("https", "127.0.0.1", "HTTP/1.1")


def answer(request_bytes: bytes, app: Any, *, close: bool = False) -> tuple[bool, h11.Response, bytes, RequestReader]:
    """Serve one request with ``app``; what a client reads back, parsed by h11's client side."""
    reader = RequestReader()
    reader.feed(request_bytes)
    request = reader.next()
    assert isinstance(request, Request)
    sent: list[bytes] = []
    env = http11.environ(request, {}, ("127.0.0.1", 1), "http")
    keep = http11.respond(reader, request, app, env, sent.append, server="test/1", close=close)
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=request.event.method, target=request.event.target, headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(b"".join(sent))
    response, body = client.next_event(), b""
    assert isinstance(response, h11.Response)
    while isinstance(event := client.next_event(), h11.Data):
        body += event.data
    assert isinstance(event, h11.EndOfMessage)
    return keep, response, body, reader


def hello(environ: dict[str, Any], start: Any) -> list[bytes]:
    start("200 OK", [("Content-Type", "text/plain")])
    return [b"hello ", b"world"]


def test_an_answer_has_its_length_a_date_and_the_server_and_keeps_the_connection() -> None:
    keep, response, body, reader = answer(GET, hello)
    headers = dict(response.headers)
    assert keep and body == b"hello world"
    assert headers[b"content-length"] == b"11" and b"transfer-encoding" not in headers
    assert headers[b"server"] == b"test/1" and headers[b"date"].endswith(b" GMT")
    assert reader.h11.our_state is h11.IDLE  # ready for the next request


def test_close_asks_for_connection_close_and_the_connection_is_not_reused() -> None:
    keep, response, _, _ = answer(GET, hello, close=True)
    assert not keep and dict(response.headers)[b"connection"] == b"close"


def test_head_sends_the_headers_and_no_body() -> None:
    def page(environ: dict[str, Any], start: Any) -> list[bytes]:
        start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b""]

    keep, response, body, _ = answer(GET.replace(b"GET", b"HEAD"), page)
    assert keep and body == b"" and dict(response.headers)[b"content-length"] == b"5"


def test_an_app_that_raises_before_answering_gets_a_500_and_a_closed_connection() -> None:
    def broken(environ: dict[str, Any], start: Any) -> list[bytes]:
        raise RuntimeError("bug")

    keep, response, body, _ = answer(GET, broken)
    assert not keep and response.status_code == 500 and b"see the exporter's log" in body


def test_a_request_answered_without_its_body_closes_the_connection() -> None:
    keep, response, _, _ = answer(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
                                  hello)
    assert not keep and dict(response.headers)[b"connection"] == b"close"


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=5), eof=st.booleans())
def test_any_bytes_in_any_pieces_give_a_request_an_error_answer_closed_or_wait(
        data: bytes, cuts: list[int], eof: bool) -> None:
    """Property: whatever a client sends, the reader never raises; an error is a 4xx/5xx."""
    reader = RequestReader()
    outcome: Optional[http11.Outcome] = None
    edges = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    for start, end in zip(edges, edges[1:]):
        reader.feed(data[start:end])
        outcome = reader.next()
        if outcome is not None:
            break
    if outcome is None and eof:
        reader.feed(b"")
        outcome = reader.next()
    assert outcome is None or outcome is CLOSED or isinstance(outcome, Request) or (
        isinstance(outcome, tuple) and 400 <= outcome[0] < 600 and http11.error_answer(*outcome).startswith(b"HTTP/1.1 "))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"GET", b"POST /", b" ", b"/metrics", b"HTTP/1.1", b"HTTP/1.0", b"\r\n", b"\n",
                                 b"Host: x", b"Content-Length: 3", b"Expect: 100-continue", b"abc", b":", b"\x00"]),
                max_size=30))
def test_any_arrangement_of_request_parts_gives_an_outcome_not_an_exception(parts: list[bytes]) -> None:
    reader = RequestReader()
    reader.feed(b"".join(parts))
    reader.feed(b"")
    assert reader.next() is not None  # at end of input: a request, an error, or closed


def writes_of(app: Any) -> list[bytes]:
    """The objects ``respond`` hands to the socket, write by write, for one GET."""
    reader = RequestReader()
    reader.feed(GET)
    request = reader.next()
    assert isinstance(request, Request)
    writes: list[bytes] = []
    http11.respond(reader, request, app, http11.environ(request, {}, ("127.0.0.1", 1), "http"), writes.append,
                   server="test/1")
    return writes


def test_a_small_answer_is_one_write_so_no_segment_waits_for_a_delayed_ack() -> None:
    # Head and body in separate writes cost ~40 ms per scrape without TCP_NODELAY (Nagle
    # against delayed ACKs), and a packet and a TLS record more with it.
    writes = writes_of(hello)
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 200 ") and writes[0].endswith(b"hello world")


def test_a_big_body_piece_is_sent_as_it_is_after_the_head_never_copied() -> None:
    # A /metrics body joined with the head would be copied on every scrape; body-sized copies
    # from many request threads fragment the C heap (benchmarks/results-soak.md).
    big = b"x" * (64 * 1024)

    def metrics(environ: dict[str, Any], start: Any) -> list[bytes]:
        start("200 OK", [("Content-Type", "text/plain")])
        return [big, b"tail"]

    writes = writes_of(metrics)
    assert writes[0].startswith(b"HTTP/1.1 200 ") and writes[0].endswith(b"\r\n\r\n")
    assert writes[1] is big and writes[2:] == [b"tail"]
    _, response, body, _ = answer(GET, metrics)
    assert dict(response.headers)[b"content-length"] == str(len(big) + 4).encode() and body == big + b"tail"
