"""Calling a WSGI app in-process, as a server would, for tests that need no socket.

Every call goes through wsgiref's ``validator``, which fails on anything PEP 3333 forbids
(a bad status line, a header a server owns, a body iterable left unclosed), so an app that
passes here behaves under any WSGI server.
"""

from __future__ import annotations

import base64
import io
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional
from wsgiref.headers import Headers
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator


@dataclass
class Response:
    status: int
    headers: Headers  # case-insensitive, like an HTTP client's
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def basic(user: str, password: str) -> str:
    """An ``Authorization: Basic`` header value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def call(app: Callable[..., Any], path: str = "/", *, method: str = "GET", headers: Optional[dict[str, str]] = None,
         auth: Optional[tuple[str, str]] = None, query: str = "") -> Response:
    """One request to ``app``; ``headers`` as an HTTP client sends them (``Accept-Encoding``)."""
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
                               "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr}
    setup_testing_defaults(environ)
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    if auth is not None:
        environ["HTTP_AUTHORIZATION"] = basic(*auth)
    started: list[tuple[str, list[tuple[str, str]]]] = []
    written: list[bytes] = []

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, response_headers))
        return written.append

    result = validator(app)(environ, start_response)
    try:
        body = b"".join(written) + b"".join(result)
    finally:
        result.close()
    status, response_headers = started[-1]
    return Response(int(status.split()[0]), Headers(list(response_headers)), body)
