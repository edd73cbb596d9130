"""The web layer: routes, basic auth and headers in-process (exporter.web.app), TLS, listen
addresses and shutdown over real sockets (exporter.web.listen)."""

from __future__ import annotations

import base64
import datetime
import gzip
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

import exporter
from exporter.web import auth
from exporter.errors import ConfigError
from exporter.web.listen import WebServer, parse_listen_address, start_web_server
from exporter.web.app import WebApp
from exporter.config.webconfig import load_web_config
from wsgiclient import call

# --- fixtures: a tiny PKI, servers that are always shut down, and an HTTP client ----------


@dataclass(frozen=True)
class PKI:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
           issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
           usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A CA, a server certificate for localhost/127.0.0.1/::1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("test CA", ca_key, _name("test CA"), ca_key, ca=True)
    files: dict[str, Any] = {"ca": ca_cert}
    for role, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH),
                        ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        files[f"{role}_cert"] = _issue(role, key, ca_cert.subject, ca_key, usage=usage)
        files[f"{role}_key"] = key
    paths = {}
    for name, obj in files.items():
        path = d / f"{name}.pem"
        if isinstance(obj, x509.Certificate):
            path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        else:
            path.write_bytes(obj.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        paths[name] = path
    return PKI(**paths)


@pytest.fixture
def web_config_file(tmp_path: Path) -> Callable[[str], Any]:
    def write(text: str) -> Any:
        path = tmp_path / "web.yml"
        path.write_text(text)
        return load_web_config(str(path))
    return write


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def fetch(server: WebServer, path: str, *, method: str = "GET",
          headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None,
          auth: tuple[str, str] | None = None, timeout: float = 5) -> Response:
    host = server.url.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
    conn: http.client.HTTPConnection
    if server.url.startswith("https:"):
        conn = http.client.HTTPSConnection(host, server.port, context=context, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(host, server.port, timeout=timeout)
    headers = dict(headers or {})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def client_context(pki: PKI, *, with_client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if with_client_cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


# --- routes, in-process: the WSGI app needs no socket -----------------------------------


@pytest.fixture
def app(registry: CollectorRegistry) -> Callable[..., WebApp]:
    """``WebApp(registry, **kwargs)``: the app the server runs, called without a server."""
    def make(**kwargs: Any) -> WebApp:
        return WebApp(kwargs.pop("metrics", registry), **kwargs)
    return make


def test_landing_page_links_metrics_health_readiness_and_shows_version(app: Any) -> None:
    resp = call(app(telemetry_path="/probe-metrics"), "/")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<title>Python Parallelism Exporter</title>" in resp.text
    for link in ('href="/probe-metrics"', 'href="/-/healthy"', 'href="/-/ready"'):
        assert link in resp.text
    assert exporter.__version__ in resp.text


def test_landing_page_escapes_the_telemetry_path(app: Any) -> None:
    text = call(app(telemetry_path='/m"><script>x</script>'), "/").text
    assert "<script>" not in text and 'href="/m&#34;&gt;&lt;script&gt;x&lt;/script&gt;"' in text


def test_healthy_answers_200_healthy(app: Any) -> None:
    resp = call(app(), "/-/healthy")
    assert (resp.status, resp.text) == (200, "Healthy")


def test_ready_follows_is_ready_503_then_200(app: Any) -> None:
    state = {"ready": False}
    web = app(is_ready=lambda: state["ready"])
    resp = call(web, "/-/ready")
    assert (resp.status, resp.text) == (503, "Not ready")
    state["ready"] = True
    resp = call(web, "/-/ready")
    assert (resp.status, resp.text) == (200, "Ready")


def test_ready_is_503_when_the_readiness_check_raises(app: Any) -> None:
    def broken() -> bool:
        raise RuntimeError("no")
    assert call(app(is_ready=broken), "/-/ready").status == 503


def test_metrics_serves_the_given_registry(app: Any) -> None:
    resp = call(app(), "/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert "pyparallel_test_gauge 42.0" in resp.text


def test_metrics_negotiates_gzip_and_openmetrics(app: Any) -> None:
    web = app()
    resp = call(web, "/metrics", headers={"Accept-Encoding": "gzip"})
    assert resp.headers["Content-Encoding"] == "gzip"
    assert b"pyparallel_test_gauge 42.0" in gzip.decompress(resp.body)
    resp = call(web, "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert resp.text.endswith("# EOF\n")


def test_custom_telemetry_path_replaces_metrics(app: Any) -> None:
    web = app(telemetry_path="/x/metrics")
    assert "pyparallel_test_gauge" in call(web, "/x/metrics").text
    assert call(web, "/metrics").status == 404


def test_telemetry_path_must_be_absolute(registry: CollectorRegistry) -> None:
    with pytest.raises(ConfigError) as info:
        WebApp(registry, telemetry_path="metrics")
    assert str(info.value) == "--web.telemetry-path: must start with '/', got 'metrics'"


SERVED_PATHS = ["/", "/-/healthy", "/-/ready", "/-/reload", "/-/quit", "/api/v1/results", "/api/v1/services", "/config"]


@pytest.mark.parametrize("path", SERVED_PATHS)
def test_a_telemetry_path_the_server_already_serves_is_refused(registry: CollectorRegistry, path: str) -> None:
    """--web.telemetry-path /-/healthy hid the metrics behind the health check (issue 27)."""
    from exporter.pages.handlers import PAGES

    with pytest.raises(ConfigError) as info:
        WebApp(registry, telemetry_path=path, routes={page: lambda environ, start: [] for page in PAGES})
    assert str(info.value).startswith("--web.telemetry-path: must not be a path the server already serves (")
    assert str(info.value).endswith(f"got {path!r}")


@pytest.mark.parametrize("command", [["--config.check"], []], ids=["--config.check", "serve"])
@pytest.mark.parametrize("flags, message", [
    (["--web.telemetry-path", "/-/healthy"], "--web.telemetry-path: must not be a path the server already serves"),
    (["--web.telemetry-path", "/config"], "--web.telemetry-path: must not be a path the server already serves"),
    (["--web.telemetry-path", "metrics"], "--web.telemetry-path: must start with '/', got 'metrics'"),
    (["--web.telemetry-path", "/a b"], "--web.telemetry-path: must be visible ASCII characters without '?' or '#'"),
    (["--web.telemetry-path", "/metrics?x"], "--web.telemetry-path: must be visible ASCII characters without"),
    (["--web.telemetry-path", "/m\udcff"], "--web.telemetry-path: must be visible ASCII characters without"),  # argv's byte 0xff
    (["--web.listen-address", ":99999"], "--web.listen-address: port must be a number from 0 to 65535, got ':99999'"),
    (["--web.listen-address", "9860"], "--web.listen-address: missing port"),
    (["--web.listen-address", "[::1:9860"], "--web.listen-address: missing ']' in IPv6 address"),
    (["--web.listen-address", "http://localhost:9860"], "--web.listen-address: must be host:port, not a URL"),
])
def test_config_check_refuses_the_web_flags_serve_refuses_before_anything_starts(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: list[str], flags: list[str],
        message: str) -> None:
    """--config.check passed these, then serve refused them (issue 27)."""
    import logging

    from exporter import cli

    root = logging.getLogger()  # serve sends logging to stderr: not for the tests after this one
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    assert cli.run(["serve", *command, *flags]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err, err


def test_failing_collector_gives_500_and_the_app_keeps_serving(app: Any) -> None:
    class Broken(Collector):
        def collect(self) -> Any:
            raise RuntimeError("collector exploded")

    reg = CollectorRegistry()
    web = app(metrics=reg)
    reg.register(Broken())  # registered after start: registration itself calls collect()
    resp = call(web, "/metrics")
    assert resp.status == 500 and "collector exploded" in resp.text
    assert call(web, "/-/healthy").status == 200


def test_unknown_path_is_404(app: Any) -> None:
    assert call(app(), "/nope").status == 404


def test_reload_post_or_put_success_is_200(app: Any) -> None:
    calls = []

    def reload() -> tuple[bool, str]:
        calls.append(1)
        return True, "config reloaded"

    web = app(reload=reload, enable_lifecycle=True)
    for method in ("POST", "PUT"):
        resp = call(web, "/-/reload", method=method)
        assert (resp.status, resp.text) == (200, "config reloaded")
    assert len(calls) == 2


def test_reload_failure_is_500_with_the_message(app: Any) -> None:
    web = app(reload=lambda: (False, "error parsing config file: x.yml: boom"), enable_lifecycle=True)
    resp = call(web, "/-/reload", method="POST")
    assert (resp.status, resp.text) == (500, "error parsing config file: x.yml: boom")


def test_reload_that_raises_is_500(app: Any) -> None:
    def reload() -> tuple[bool, str]:
        raise OSError("disk gone")
    resp = call(app(reload=reload, enable_lifecycle=True), "/-/reload", method="POST")
    assert (resp.status, resp.text) == (500, "reload failed: disk gone")


def test_reload_with_get_is_405(app: Any) -> None:
    resp = call(app(reload=lambda: (True, "")), "/-/reload")
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST, PUT"


def test_reload_without_a_reload_function_is_404(app: Any) -> None:
    assert call(app(enable_lifecycle=True), "/-/reload", method="POST").status == 404


def test_lifecycle_api_is_off_by_default_403_and_never_calls_reload_or_quit(app: Any) -> None:
    calls: list[str] = []

    def reload() -> tuple[bool, str]:
        calls.append("reload")
        return True, "config reloaded"

    web = app(reload=reload, quit=lambda: calls.append("quit"))
    for path in ("/-/reload", "/-/quit"):
        for method in ("POST", "PUT"):
            resp = call(web, path, method=method)
            assert (resp.status, resp.text) == (403, "Lifecycle API is not enabled.")
    assert calls == []
    assert "/-/reload" not in call(web, "/").text


def test_quit_with_lifecycle_enabled_calls_quit(app: Any) -> None:
    calls: list[str] = []
    web = app(quit=lambda: calls.append("quit"), enable_lifecycle=True)
    assert call(web, "/-/quit").status == 405
    resp = call(web, "/-/quit", method="POST")
    assert (resp.status, resp.text) == (200, "Requesting termination... Goodbye!")
    assert calls == ["quit"]


def test_extra_routes_answer_get_and_head_and_refuse_other_methods(app: Any) -> None:
    def page(environ: dict[str, Any], start: Any) -> list[bytes]:
        start("200 OK", [("Content-Type", "text/plain")])
        return [b"extra page"]

    web = app(routes={"/extra": page, "/-/healthy": page})
    assert call(web, "/extra").text == "extra page"
    head = call(web, "/extra", method="HEAD")
    assert (head.status, head.body) == (200, b"")
    assert call(web, "/extra", method="POST").status == 405
    assert call(web, "/-/healthy").text != "extra page"  # built-ins win
    with pytest.raises(ConfigError, match="must not be a path the server already serves"):
        app(routes={"/metrics": page})  # the metrics and the page: one would hide the other


def test_head_on_metrics_has_the_headers_and_no_body(app: Any) -> None:
    resp = call(app(), "/metrics", method="HEAD")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    assert resp.body == b""


@pytest.mark.integration  # a real server on a loopback port
def test_requests_are_not_logged_to_stderr(serve: Any, capfd: pytest.CaptureFixture[str]) -> None:
    server = serve()
    fetch(server, "/metrics")
    fetch(server, "/nope")
    assert capfd.readouterr().err == ""


# --- basic auth and headers, in-process -----------------------------------------------------


@pytest.fixture
def auth_app(app: Any, web_config_file: Any) -> WebApp:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    config = web_config_file(f"""
http_server_config:
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
basic_auth_users:
  alice: {hashed}
""")
    return app(web_config=config, reload=lambda: (True, "ok"), enable_lifecycle=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize("auth", [None, ("alice", "wrong"), ("mallory", "s3cret"),
                                  ("alice", "")])
def test_basic_auth_rejects_missing_or_wrong_credentials_with_401(
        auth_app: WebApp, auth: tuple[str, str] | None) -> None:
    for path in ("/metrics", "/", "/-/healthy"):
        resp = call(auth_app, path, auth=auth)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == "Basic"
        assert "pyparallel_test_gauge" not in resp.text
    assert call(auth_app, "/-/reload", method="POST", auth=auth).status == 401


@pytest.mark.parametrize("header", ["Bearer abc", "Basic !!!notbase64", "Basic YWxpY2U="])
def test_basic_auth_rejects_malformed_authorization_headers(auth_app: WebApp, header: str) -> None:
    assert call(auth_app, "/metrics", headers={"Authorization": header}).status == 401


def test_basic_auth_accepts_the_right_password(auth_app: WebApp) -> None:
    resp = call(auth_app, "/metrics", auth=("alice", "s3cret"))
    assert resp.status == 200
    assert "pyparallel_test_gauge 42.0" in resp.text


@pytest.fixture
def bcrypt_checks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """The (password, hash) pairs bcrypt.checkpw is asked to check, in order."""
    calls: list[tuple[bytes, bytes]] = []
    real_checkpw = bcrypt.checkpw

    def recording_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append((password, hashed))
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", recording_checkpw)
    return calls


def test_basic_auth_verified_credentials_are_cached_not_rehashed(
        auth_app: WebApp, bcrypt_checks: list[tuple[bytes, bytes]]) -> None:
    for _ in range(3):
        assert call(auth_app, "/metrics", auth=("alice", "s3cret")).status == 200
    assert [password for password, _ in bcrypt_checks] == [b"s3cret"]
    # A wrong password is never served from the cache of the right one.
    assert call(auth_app, "/metrics", auth=("alice", "s3cret!")).status == 401
    assert [password for password, _ in bcrypt_checks] == [b"s3cret", b"s3cret!"]


def test_unknown_user_still_costs_a_bcrypt_check(
        auth_app: WebApp, bcrypt_checks: list[tuple[bytes, bytes]]) -> None:
    # Otherwise response time would reveal which user names exist.
    assert call(auth_app, "/metrics", auth=("mallory", "x")).status == 401
    assert [password for password, _ in bcrypt_checks] == [b"x"]


def hash_cost(hashed: bytes) -> int:
    return int(hashed.split(b"$")[2])


def test_each_unknown_user_is_checked_against_a_decoy_at_a_configured_users_cost(
        app: Any, web_config_file: Any, bcrypt_checks: list[tuple[bytes, bytes]]) -> None:
    """Issue 17: with one decoy at the highest cost, an unknown name (0.28 s) was told apart
    from a cost-10 user's wrong password (0.07 s). Each name now gets a configured user's
    cost, the same every time, so timing cannot tell a missing name from a real one."""
    cheap = bcrypt.hashpw(b"a", bcrypt.gensalt(4)).decode()
    dear = bcrypt.hashpw(b"b", bcrypt.gensalt(5)).decode()
    web = app(web_config=web_config_file(f"basic_auth_users:\n  cheap: {cheap}\n  dear: {dear}\n"))
    names = [f"mallory{i}" for i in range(24)]
    for user in names + names[:4]:
        assert call(web, "/metrics", auth=(user, "x")).status == 401
    decoys = [hashed for _, hashed in bcrypt_checks]
    assert decoys[24:] == decoys[:4]  # one name, one decoy: retrying tells nothing either
    assert {hash_cost(h) for h in decoys[:24]} == {4, 5}  # both costs: P(one only) = 2 * 2**-24
    assert not {cheap.encode(), dear.encode()} & set(decoys)


def test_bcrypt_checks_run_two_at_a_time_and_a_full_queue_gets_503(
        app: Any, web_config_file: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    web = app(web_config=web_config_file(f"basic_auth_users:\n  alice: {hashed}\n"))
    release = threading.Event()
    running, most = [0], [0]
    lock = threading.Lock()
    real_checkpw = bcrypt.checkpw

    def held_checkpw(password: bytes, hashed: bytes) -> bool:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(20)  # hold the bcrypt slot until the test has looked
        with lock:
            running[0] -= 1
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", held_checkpw)
    statuses: list[int] = []

    def login(password: str) -> None:
        statuses.append(call(web, "/metrics", auth=("alice", password)).status)

    callers = [threading.Thread(target=login, args=(f"wrong{i}",))
               for i in range(auth.BCRYPT_CONCURRENCY + auth.BCRYPT_WAITERS)]
    try:
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + 10
        while running[0] < auth.BCRYPT_CONCURRENCY and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1)  # the others are queued for a slot by now
        assert most[0] == auth.BCRYPT_CONCURRENCY
        started = time.monotonic()
        busy = call(web, "/metrics", auth=("alice", "s3cret"))
        assert busy.status == 503 and time.monotonic() - started < 2
        assert busy.headers["Retry-After"] == "1"
    finally:
        release.set()
        for caller in callers:
            caller.join(30)
    assert statuses == [401] * len(callers)
    assert most[0] == auth.BCRYPT_CONCURRENCY
    assert call(web, "/metrics", auth=("alice", "s3cret")).status == 200


def test_configured_headers_are_on_every_response(auth_app: WebApp) -> None:
    responses = [
        call(auth_app, "/metrics"),  # 401
        call(auth_app, "/metrics", auth=("alice", "s3cret")),
        call(auth_app, "/nope", auth=("alice", "s3cret")),
        call(auth_app, "/-/reload", auth=("alice", "s3cret")),  # 405
    ]
    assert [r.status for r in responses] == [401, 200, 404, 405]
    for resp in responses:
        assert resp.headers["X-Frame-Options"] == "deny"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


# --- TLS --------------------------------------------------------------------------------


@pytest.fixture
def tls_config(pki: PKI, web_config_file: Any) -> Any:
    return web_config_file(
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n")


@pytest.mark.integration  # a real server on a loopback port
def test_tls_server_serves_https(serve: Any, pki: PKI, tls_config: Any) -> None:
    server = serve(web_config=tls_config)
    assert server.url == f"https://127.0.0.1:{server.port}"
    resp = fetch(server, "/metrics", context=client_context(pki))
    assert resp.status == 200
    assert "pyparallel_test_gauge 42.0" in resp.text


@pytest.mark.integration  # a real server on a loopback port
def test_tls_connection_is_kept_alive_so_scrapes_after_the_first_need_no_handshake(
        serve: Any, pki: PKI, tls_config: Any) -> None:
    server = serve(web_config=tls_config)
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=client_context(pki), timeout=5)
    try:
        conn.request("GET", "/metrics")
        first = conn.getresponse()
        assert first.status == 200 and b"pyparallel_test_gauge 42.0" in first.read()
        handshaken = conn.sock
        for _ in range(5):
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            assert response.status == 200 and not response.will_close
            assert b"pyparallel_test_gauge 42.0" in response.read()
        assert conn.sock is handshaken  # http.client would have reconnected after a close
    finally:
        conn.close()


@pytest.mark.integration  # a real server on a loopback port
def test_plain_http_to_tls_port_fails_without_hanging_the_server(
        serve: Any, pki: PKI, tls_config: Any) -> None:
    server = serve(web_config=tls_config)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.0 400 Bad Request")
    assert b"pyparallel_test_gauge" not in answer
    assert time.monotonic() - started < 3
    assert fetch(server, "/-/healthy", context=client_context(pki)).status == 200


@pytest.mark.integration  # a real server on a loopback port
def test_silent_client_does_not_block_other_tls_clients(
        serve: Any, pki: PKI, tls_config: Any) -> None:
    # The handshake runs in the request thread: a connection that never speaks must not
    # hold up accept() for everyone else.
    server = serve(web_config=tls_config)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        started = time.monotonic()
        resp = fetch(server, "/-/healthy", context=client_context(pki), timeout=3)
        assert resp.status == 200
        assert time.monotonic() - started < 2


@pytest.mark.integration  # a real server on a loopback port
def test_tls_client_that_does_not_trust_the_server_is_refused(
        serve: Any, tls_config: Any, pki: PKI) -> None:
    server = serve(web_config=tls_config)
    with pytest.raises(ssl.SSLCertVerificationError):
        fetch(server, "/metrics", context=ssl.create_default_context())
    assert fetch(server, "/metrics", context=client_context(pki)).status == 200


@pytest.mark.integration  # a real server on a loopback port
def test_client_certificate_required_and_verified(
        serve: Any, pki: PKI, web_config_file: Any) -> None:
    config = web_config_file(f"""
tls_server_config:
  cert_file: {pki.server_cert}
  key_file: {pki.server_key}
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: {pki.ca}
""")
    server = serve(web_config=config)
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        fetch(server, "/metrics", context=client_context(pki))
    resp = fetch(server, "/metrics", context=client_context(pki, with_client_cert=True))
    assert resp.status == 200


@pytest.mark.integration  # a real server on a loopback port
def test_tls_and_basic_auth_together(serve: Any, pki: PKI, web_config_file: Any) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    config = web_config_file(f"""
tls_server_config:
  cert_file: {pki.server_cert}
  key_file: {pki.server_key}
basic_auth_users:
  prometheus: {hashed}
""")
    server = serve(web_config=config)
    ctx = client_context(pki)
    assert fetch(server, "/metrics", context=ctx).status == 401
    assert fetch(server, "/metrics", context=ctx, auth=("prometheus", "pw")).status == 200


# --- listen address and lifecycle -------------------------------------------------------


@pytest.mark.parametrize(("address", "expected"), [
    (":9860", ("", 9860)),
    ("0.0.0.0:9860", ("0.0.0.0", 9860)),
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("[::1]:9860", ("::1", 9860)),
    ("[::]:9860", ("::", 9860)),
    ("localhost:65535", ("localhost", 65535)),
])
def test_listen_address_parses_node_exporter_style(
        address: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize(("address", "problem"), [
    ("9860", "missing port (expected [host]:port such as :9860)"),
    ("", "missing port (expected [host]:port such as :9860)"),
    ("localhost:", "port must be a number from 0 to 65535"),
    ("localhost:http", "port must be a number from 0 to 65535"),
    (":65536", "port must be a number from 0 to 65535"),
    (":-1", "port must be a number from 0 to 65535"),
    ("::1:9860", "IPv6 addresses need brackets, e.g. [::1]:9860"),
    ("[::1:9860", "missing ']' in IPv6 address"),
    ("[::1]", "missing port after ']' (expected e.g. [::1]:9860)"),
    ("[::1]9860", "missing port after ']' (expected e.g. [::1]:9860)"),
    ("[localhost]:9860", "invalid IPv6 address 'localhost'"),
    ("http://localhost:9860", "must be host:port, not a URL"),
    ("local host:9860", "invalid host 'local host'"),
])
def test_malformed_listen_address_is_a_config_error(address: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_listen_address(address)
    assert str(info.value) == f"--web.listen-address: {problem}, got {address!r}"


def test_malformed_listen_address_is_rejected_by_start(registry: CollectorRegistry) -> None:
    with pytest.raises(ConfigError, match=r"^--web\.listen-address: "):
        start_web_server("9860", registry)


@pytest.mark.integration  # a real server on a loopback port
def test_port_zero_picks_a_free_port_and_url_names_it(serve: Any) -> None:
    server = serve("127.0.0.1:0")
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


@pytest.mark.integration  # a real server on a loopback port
def test_wildcard_address_is_reachable_on_loopback(serve: Any) -> None:
    server = serve(":0")
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert fetch(server, "/-/healthy").status == 200


@pytest.mark.integration  # a real server on a loopback port
def test_ipv6_loopback_address(serve: Any) -> None:
    try:
        server = serve("[::1]:0")
    except ConfigError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    assert server.url == f"http://[::1]:{server.port}"
    assert fetch(server, "/-/healthy").status == 200


@pytest.mark.integration  # a real server on a loopback port
def test_port_in_use_is_a_config_error(serve: Any, registry: CollectorRegistry) -> None:
    server = serve()
    with pytest.raises(ConfigError) as info:
        start_web_server(f"127.0.0.1:{server.port}", registry)
    assert str(info.value) == (f"--web.listen-address: cannot listen on "
                               f"127.0.0.1:{server.port}: Address already in use")


@pytest.mark.integration  # a real server on a loopback port
def test_shutdown_closes_the_socket_and_is_idempotent(registry: CollectorRegistry) -> None:
    server = start_web_server("127.0.0.1:0", registry)
    assert fetch(server, "/-/healthy").status == 200
    server.shutdown()
    server.shutdown()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_start_up_never_waits_on_a_decoy_even_at_the_highest_allowed_cost() -> None:
    """Issue 17: the decoy was hashed at start-up at the highest configured cost (31: hours)."""
    from exporter.web import auth as basic_auth
    from exporter.config.webconfig import MAX_BCRYPT_COST

    # A well-formed hash at cost 16 (a real one would take seconds to make here as well).
    dear = (bcrypt.gensalt(MAX_BCRYPT_COST) + b"A" * 31).decode()
    started = time.monotonic()
    auth = basic_auth.BasicAuth({"alice": dear})
    assert time.monotonic() - started < 0.5
    assert hash_cost(auth.decoy_hash("mallory")) == MAX_BCRYPT_COST
