"""HTTP/1.1 for the bounded server, on h11: requests in, WSGI answers out, no sockets.

h11 (python-hyper's sans-I/O HTTP/1.1) parses request heads, frames bodies and answers, and
keeps track of whether a connection can carry another request. On top of it sit the rules
node_exporter's Go server applies, which h11 leaves to its user:

- HTTP/0.9 (``GET /path`` with no version), versions other than 1.0 and 1.1, malformed request
  lines and request targets that are not visible ASCII with valid %-escapes are refused as
  soon as the request line is in, without waiting for the rest of the head;
- heads over ``MAX_HEAD_BYTES`` or with more than ``MAX_HEADERS`` fields, bodies over
  ``MAX_BODY_BYTES`` and chunked bodies are refused;
- a request that expects ``100 Continue`` is answered at once, without its body (no route
  takes one), and its connection is closed after the answer;
- an absolute-form target (``GET http://host/metrics``) is served like ``GET /metrics``.

exporter/web/httpserver.py does the I/O: it feeds what it reads to a ``RequestReader`` and sends
what ``respond`` writes.
"""

from __future__ import annotations

import email.utils
import io
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Union

import h11

from exporter.logs import log_kv

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 32 * 1024  # request line + headers; a scrape sends well under 1 KiB
MAX_BODY_BYTES = 64 * 1024  # no route takes a body; a small one is read and ignored
MAX_HEADERS = 100  # header fields at most (http.client's limit); a scrape sends a handful
_SEND_BYTES = 256 * 1024  # an answer is written in pieces of about this size (a scrape: one piece)
# A body piece this big goes to the socket as it is, after what was gathered before it:
# joining it with the head would copy a whole /metrics body on every scrape, and such
# body-sized copies, made by 40 request threads at once, are what fragments the C heap.
# TCP_NODELAY (httpserver.py) keeps the extra write from waiting on a delayed ACK.
_DIRECT_BYTES = 16 * 1024

# RFC 9110 token characters for a method; a target of visible ASCII with valid %-escapes.
_REQUEST_LINE = re.compile(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) (HTTP/\d\.\d)$")
_TARGET = re.compile(rb"^(?:[!-$&-~]|%[0-9A-Fa-f]{2})+$")

ErrorAnswer = tuple[int, str]  # status, body ("" for the status line's words)
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Closed:
    """The client closed its side before sending another whole request."""


CLOSED = _Closed()


@dataclass(frozen=True)
class Request:
    """A request read in full (or, for ``Expect: 100-continue``, its head alone)."""

    event: h11.Request
    body: bytes
    body_unread: bool = False  # answered without reading the body: close after the answer


Outcome = Union[Request, ErrorAnswer, _Closed, None]


class RequestReader:
    """One connection's h11 state: bytes in, then a request, an error to answer, or CLOSED.

    Used by one thread at a time: the server's I/O thread while a request arrives, then the
    worker that answers it.
    """

    def __init__(self) -> None:
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._eof = False
        self._line_checked = False
        self._request: h11.Request | None = None
        self._body = bytearray()

    def feed(self, data: bytes) -> None:
        """What was read; b"" when the client closed its side."""
        if not data:
            # Kept from h11, which would call a close mid-request a protocol error: such a
            # client is closed unanswered, and a request it completed before closing is served.
            self._eof = True
        elif not self._eof:
            self.h11.receive_data(data)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed (pipelined requests wait here)."""
        return len(self.h11.trailing_data[0])

    def next(self) -> Outcome:
        """A complete request, an error answer (then close), CLOSED, or None: wait for more."""
        while True:
            if not self._line_checked and self.h11.their_state is h11.IDLE:
                problem = self._check_request_line()
                if problem is not None or not self._line_checked:
                    return problem if problem is not None else self._waiting()
            # h11 holds only an *incomplete* head to its limit: a whole head that arrived in one
            # read is parsed at any size, so the size is measured here as the bytes it consumed.
            before = self.buffered if self.h11.their_state is h11.IDLE else 0
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                return exc.error_status_hint, f"{exc.error_status_hint} {_phrase(exc.error_status_hint)}: {exc}\n"
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return self._waiting()
            if isinstance(event, h11.Request):
                if before - self.buffered > MAX_HEAD_BYTES:
                    return 431, ""
                problem = check_request(event)
                if problem is not None:
                    return problem
                self._request = event
                if self.h11.they_are_waiting_for_100_continue:
                    return Request(event, b"", body_unread=True)
            elif isinstance(event, h11.Data):
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert self._request is not None
                return Request(self._request, bytes(self._body))
            elif isinstance(event, h11.ConnectionClosed):
                return CLOSED

    def start_next_cycle(self) -> bool:
        """After an answer: True when the connection can carry another request."""
        if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
            return False
        self.h11.start_next_cycle()
        self._line_checked, self._request, self._body = False, None, bytearray()
        return True

    def _waiting(self) -> Outcome:
        return CLOSED if self._eof else None

    def _check_request_line(self) -> ErrorAnswer | None:
        """Go's net/http rules for the request line, applied as soon as it is in."""
        buffered, _ = self.h11.trailing_data
        line_end = buffered.find(b"\n")
        if line_end < 0:
            return (414, "") if len(buffered) > MAX_HEAD_BYTES else None
        if line_end > MAX_HEAD_BYTES:
            return 414, ""
        problem = check_request_line(buffered[:line_end].rstrip(b"\r"))
        self._line_checked = problem is None
        return problem


def check_request_line(line: bytes) -> ErrorAnswer | None:
    """None, or an error answer by Go's net/http rules: three parts, HTTP/1.x; anything else,
    HTTP/0.9's bare ``GET /path`` included, is a 400."""
    match = _REQUEST_LINE.match(line)
    if match is None:
        return 400, "400 Bad Request: malformed request line\n"
    if match.group(3) not in (b"HTTP/1.0", b"HTTP/1.1"):
        return 505, ""
    if not _TARGET.match(match.group(2)):
        return 400, "400 Bad Request: invalid request target\n"
    return None


def check_request(request: h11.Request) -> ErrorAnswer | None:
    """None, or an error answer for a head h11 accepted but we will not serve."""
    if len(request.headers) > MAX_HEADERS:
        return 431, ""
    lengths = [value for name, value in request.headers if name == b"content-length"]
    if any(name == b"transfer-encoding" for name, _ in request.headers):
        return 411, ""
    if lengths and int(lengths[0]) > MAX_BODY_BYTES:  # h11 has checked it is one number
        return 413, ""
    return None


def error_answer(status: int, body: str = "") -> bytes:
    """A complete answer that closes the connection, for requests that never reach the app."""
    text = (body or f"{status} {_phrase(status)}\n").encode()
    return (f"HTTP/1.1 {status} {_phrase(status)}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(text)}\r\nConnection: close\r\n\r\n").encode() + text


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# --- WSGI -------------------------------------------------------------------------------------


def environ(request: Request, base: dict[str, Any], client: Any, scheme: str) -> dict[str, Any]:
    """The WSGI environ of ``request`` (PEP 3333), as wsgiref builds it."""
    event = request.event
    target = event.target.decode("ascii")  # check_request_line let only ASCII through
    if target.startswith(("http://", "https://")):
        # Absolute form (RFC 9112 3.2.2), as proxies send it: served like the origin form.
        parts = urllib.parse.urlsplit(target)
        path, query = parts.path or "/", parts.query
    else:
        path, _, query = target.partition("?")
    env = dict(base)
    env.update({
        "REQUEST_METHOD": event.method.decode("ascii"),
        "SCRIPT_NAME": "",
        "PATH_INFO": urllib.parse.unquote(path, "iso-8859-1"),
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/" + event.http_version.decode("ascii"),
        "REMOTE_ADDR": str(client[0]) if isinstance(client, tuple) and client else "",
        "CONTENT_LENGTH": "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.errors": _ErrorLog(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    })
    for raw_name, value in event.headers:
        name, text = raw_name.decode("latin-1"), value.decode("latin-1")
        if "_" in name:
            continue  # X_Forwarded_For must not pass for X-Forwarded-For (wsgiref skips them too)
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            env[key] = text
        else:
            env[f"HTTP_{key}"] = f"{env[f'HTTP_{key}']},{text}" if f"HTTP_{key}" in env else text
    return env


class _ErrorLog(io.TextIOBase):
    """``wsgi.errors``: what an app writes there becomes one log record per flush."""

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


class _Answer:
    """One answer through h11, sent in as few writes as it can be: the head goes out with the
    first body bytes, and bytes are gathered up to ``_SEND_BYTES`` (small writes in a row
    would cost a TLS record and a packet each); a body piece of ``_DIRECT_BYTES`` or more is
    written as it is, never copied."""

    def __init__(self, reader: RequestReader, method: str, send: Callable[[bytes], None], server: str,
                 close: bool) -> None:
        self._h11, self._send, self._server, self._close = reader.h11, send, server, close
        self.head_only = method == "HEAD"
        self.status: tuple[int, bytes] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_sent = False  # handed to h11: the status can no longer change
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        if exc_info is not None and self.head_sent:
            raise exc_info[1].with_traceback(exc_info[2])
        code, _, reason = status.partition(" ")
        self.status = int(code), reason.encode("latin-1")
        self.headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
        return self.write

    def write(self, data: bytes) -> None:
        self.send_head()
        if data and not self.head_only:
            # The passthrough gives the body bytes back as they are (framing apart), not copied.
            for piece in self._h11.send_with_data_passthrough(h11.Data(data=data)) or ():
                self._queue(piece)

    def send_head(self, length: int | None = None) -> None:
        if self.head_sent:
            return
        if self.status is None:
            raise RuntimeError("the WSGI app returned without calling start_response")
        names = {name.lower() for name, _ in self.headers}
        headers = list(self.headers)
        if length is not None and b"content-length" not in names:
            headers.append((b"Content-Length", str(length).encode()))
        if b"server" not in names:
            headers.append((b"Server", self._server.encode()))
        if b"date" not in names:
            headers.append((b"Date", email.utils.formatdate(usegmt=True).encode()))
        if self._close:
            headers.append((b"Connection", b"close"))
        code, reason = self.status
        self.head_sent = True
        self._queue(self._h11.send(h11.Response(status_code=code, reason=reason, headers=headers)))

    def end(self) -> None:
        self.send_head()
        self._queue(self._h11.send(h11.EndOfMessage()))
        self._flush()

    def _queue(self, data: bytes | None) -> None:
        if data and len(data) >= _DIRECT_BYTES:
            self._flush()
            self._send(data)
        elif data:
            self._pending.append(data)
            self._pending_bytes += len(data)
            if self._pending_bytes >= _SEND_BYTES:
                self._flush()

    def _flush(self) -> None:
        if self._pending:
            data, self._pending, self._pending_bytes = b"".join(self._pending), [], 0
            self._send(data)


def respond(reader: RequestReader, request: Request, app: WSGIApp, env: dict[str, Any],
            send: Callable[[bytes], None], *, server: str, close: bool = False) -> bool:
    """Run ``app`` for ``request`` and send its answer with ``send``; True when the
    connection can carry another request. ``close`` asks for ``Connection: close``."""
    answer = _Answer(reader, env["REQUEST_METHOD"], send, server, close or request.body_unread)
    try:
        body = app(env, answer.start_response)
        try:
            if isinstance(body, (list, tuple)):
                # A whole body at hand: Content-Length, not chunks (as wsgiref does for one).
                answer.send_head(sum(len(chunk) for chunk in body) if not answer.head_only else None)
            for chunk in body:
                answer.write(chunk)
        finally:
            close_body = getattr(body, "close", None)
            if close_body is not None:
                close_body()
        answer.end()
    except Exception as exc:
        if answer.head_sent or reader.h11.our_state is not h11.SEND_RESPONSE:
            raise  # half an answer is out: the connection is closed
        log_kv(log, logging.ERROR, "error serving request", path=env.get("PATH_INFO"), err=repr(exc))
        answer = _Answer(reader, env["REQUEST_METHOD"], send, server, close=True)
        answer.start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")])
        answer.write(b"An error has occurred while serving this request; see the exporter's log.\n")
        answer.end()
    return reader.start_next_cycle()
