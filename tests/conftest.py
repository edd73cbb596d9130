"""Shared fixtures: locating the real tools (promtool, prometheus, ...) the tests run, and
the guard that keeps ``-m "not integration"`` free of processes."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Loaded at collection, not first inside a test: hypothesis imports its plugins (trio, which
# selenium brings) and trio runs a subprocess on import, which would trip the process guard.
import hypothesis  # noqa: F401
import pytest
from prometheus_client import CollectorRegistry, Gauge

from exporter.web.listen import WebServer, start_web_server

# In CI every tool is installed by .ci/run, so a missing tool is a failure there, not a skip.
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Console scripts installed with the test extra (kubernetes-validate, check-jsonschema,
# parallelism-exporter) live next to the interpreter running the tests, e.g. .venv/bin:
# find them there even when that environment is not activated.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def require_binary(name: str) -> str:
    """Return the path of an executable, skipping the test (failing it in CI) when absent."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package or the test extra; .ci/run installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def built_python(variable: str, default: str) -> str | None:
    """An interpreter built by scripts/build-python: ``$variable`` or its default path."""
    candidates = [os.environ.get(variable, ""), os.path.expanduser(default)]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def free_threaded_python() -> str | None:
    """A free-threaded CPython 3.13t: PYPARALLEL_FT_PYTHON or scripts/build-python's default path."""
    return built_python("PYPARALLEL_FT_PYTHON", "~/.cache/python3.13t/bin/python3.13t")


def gil_313_python() -> str | None:
    """A CPython 3.13 with the GIL: PYPARALLEL_GIL313_PYTHON or scripts/build-python's default path."""
    return built_python("PYPARALLEL_GIL313_PYTHON", "~/.cache/python3.13/bin/python3.13")


def py314_python() -> str | None:
    """A CPython 3.14: PYPARALLEL_PY314_PYTHON or scripts/build-python 3.14's default path."""
    return built_python("PYPARALLEL_PY314_PYTHON", "~/.cache/python3.14/bin/python3.14")


def _require_built(path: str | None, what: str, build: str, variable: str) -> str:
    if path is None:
        message = f"no {what}: run {build} (or set {variable}); .ci/run builds it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_free_threaded_python() -> str:
    """The free-threaded interpreter, or a skip saying how to get one (a failure in CI)."""
    return _require_built(free_threaded_python(), "free-threaded CPython 3.13t",
                          "scripts/build-python 3.13 --free-threaded", "PYPARALLEL_FT_PYTHON")


def require_gil_313_python() -> str:
    """CPython 3.13 with the GIL, or a skip saying how to get one (a failure in CI)."""
    return _require_built(gil_313_python(), "CPython 3.13 with the GIL",
                          "scripts/build-python 3.13", "PYPARALLEL_GIL313_PYTHON")


def require_py314_python() -> str:
    """CPython 3.14, or a skip saying how to get one (a failure in CI)."""
    return _require_built(py314_python(), "CPython 3.14", "scripts/build-python 3.14", "PYPARALLEL_PY314_PYTHON")


# --- the guard: a test not marked integration must not start a process or a server -------

_PROCESS_EVENTS = {"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.system", "os.spawn",
                   "socket.bind"}
# matplotlib runs fc-list once, to build its font cache on a machine that has none.
_ALLOWED_COMMANDS = {"fc-list"}
_unmarked_test: list[str] = []  # the node id of the running test when it is not integration


def _refuse_processes(event: str, args: tuple) -> None:
    if not _unmarked_test or event not in _PROCESS_EVENTS:
        return
    if event == "subprocess.Popen" and args[1] and os.path.basename(str(list(args[1])[0])) in _ALLOWED_COMMANDS:
        return
    raise RuntimeError(f"{_unmarked_test[0]} starts a process or a server ({event}) but is not marked "
                       "@pytest.mark.integration: -m 'not integration' must start neither")


sys.addaudithook(_refuse_processes)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _guarding(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _guarding(item):
        yield


class _guarding:
    """Arm the guard for one test phase (set-up or call) when the test is not integration."""

    def __init__(self, item) -> None:
        self.armed = item.get_closest_marker("integration") is None
        self.node_id = item.nodeid

    def __enter__(self) -> None:
        if self.armed:
            _unmarked_test[:] = [self.node_id]

    def __exit__(self, *exc) -> None:
        _unmarked_test.clear()


C_EXTENSION_WITHOUT_FREE_THREADING_SLOT = r"""
#include <Python.h>
/* Single-phase init and no Py_mod_gil slot: a free-threaded CPython re-enables the GIL
   when this module is imported, as it does for any extension not declared safe. */
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "legacy_ext", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_legacy_ext(void) { return PyModule_Create(&module); }
"""


def build_legacy_extension(python: str, directory) -> str:
    """Compile ``legacy_ext`` for ``python`` with the machine's C compiler; returns its dir."""
    import subprocess

    compiler = require_binary("gcc")
    paths = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['include']);"
                            "print(sysconfig.get_config_var('EXT_SUFFIX'))"],
                           capture_output=True, text=True, check=True).stdout.split()
    include, suffix = paths[0], paths[1]
    source = directory / "legacy_ext.c"
    source.write_text(C_EXTENSION_WITHOUT_FREE_THREADING_SLOT)
    subprocess.run([compiler, "-shared", "-fPIC", f"-I{include}", str(source), "-o",
                    str(directory / f"legacy_ext{suffix}")], check=True)
    return str(directory)


class Stack:
    """A running exporter, Prometheus (shipped config and rules) and Alertmanager."""

    def __init__(self, exporter, prometheus, alertmanager, interpreters: list[str]) -> None:
        self.exporter, self.prometheus, self.alertmanager = exporter, prometheus, alertmanager
        self.interpreters = interpreters

    def query(self, expr: str) -> list[dict]:
        from support import query

        return query(self.prometheus, expr)

    def delivered_alerts(self, alertname: str, timeout: float = 90) -> list[dict]:
        """Wait until Alertmanager holds alerts of this name; returns them (its API v2 form)."""
        import json

        from support import http_get, wait_for

        def delivered() -> list[dict]:
            _, body = http_get(self.alertmanager.url + "/api/v2/alerts")
            return [a for a in json.loads(body) if a["labels"]["alertname"] == alertname]

        return wait_for(delivered, timeout, f"{alertname} in Alertmanager")


STACK_WORKLOADS = ["pure_python", "sleep", "faulty_workloads:raises"]


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory):
    """One real stack for all integration tests: the exporter probes the system Python and,
    when built, 3.13t and 3.13t with PYTHON_GIL=1; Prometheus scrapes it every second with
    the shipped config and rules (alert hold times set to 0s, a probe failing after one failed
    round) and alerts a real Alertmanager.
    One workload always raises, so a failure alert fires for real. It probes once, at
    start-up, while no other test runs."""
    import sys

    import support

    for tool in ("prometheus", "prometheus-alertmanager"):
        require_binary(tool)
    workdir = tmp_path_factory.mktemp("stack")
    interpreters = [{"name": "cpython-system", "path": sys.executable}]
    modules = ["json"]
    free_threaded = free_threaded_python()
    if free_threaded:
        extension_dir = build_legacy_extension(free_threaded, workdir)
        interpreters += [
            {"name": "cpython-3.13t", "path": free_threaded, "env": {"PYTHONPATH": extension_dir}},
            {"name": "cpython-3.13t-gil", "path": free_threaded,
             "env": {"PYTHON_GIL": "1", "PYTHONPATH": extension_dir}},
        ]
        modules.append("legacy_ext")
    config = {
        # One round per test session: a stack that kept probing would load the 2 cores
        # under every later test, and their probes would disturb its figures.
        "interval": "1h", "jitter": "1s", "duty_cycle": 1,
        "interpreters": interpreters,
        # wait_quiet: each parallel step waits a little for free cores, so a burst of other
        # work costs seconds rather than a "cannot tell" (which the tests accept, with a warning).
        "probe": {"workloads": STACK_WORKLOADS, "workers": [2], "unit_seconds": 0.3, "repeats": 7,
                  "modes": ["sequential", "threads", "processes", "asyncio", "subinterpreters"],
                  "timeout": "30s", "wait_quiet": "5s"},
        "import_check": {"modules": modules},
        # The services dashboard's queries need a watched group: Prometheus itself (not Python).
        "services": {"interval": "2s", "groups": [{"name": "prometheus", "comm": ["prometheus"]}]},
    }
    alertmanager = support.start_alertmanager(workdir)
    support.wait_for_quiet_host(2)
    exporter = support.start_exporter(workdir, config)
    prometheus = None
    try:
        support.wait_ready(exporter, timeout=300)
        target = exporter.url.split("//")[1]
        # The stack probes once, so a failing probe fails one round: count one as failing.
        import dataclasses

        from dashboards.mixin_config import CONFIG

        prometheus = support.start_prometheus(
            workdir, support.prometheus_config(target, alertmanager.url.split("//")[1]), rules_for="0s",
            # The state rules every second (not every 5 minutes), so the recorded series exist at once.
            mixin=dataclasses.replace(CONFIG, probe_failing_rounds=1, state_interval="1s"))
        stack = Stack(exporter, prometheus, alertmanager, [i["name"] for i in interpreters])
        support.wait_for(lambda: len(stack.query("pyparallel_speedup_ratio")) > 0, 60,
                         "prometheus to scrape the first round")
        from dashboards.recording import speedup_median

        support.wait_for(lambda: stack.query(speedup_median(CONFIG)), 60, "the recording rules to be evaluated")
        yield stack
    finally:
        for service in (prometheus, exporter, alertmanager):
            if service is not None:
                service.stop()


def key_pem(key) -> bytes:
    """PEM of an EC private key, unencrypted."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def self_signed_pem(key, host: str = "localhost") -> bytes:
    """A one-day self-signed certificate for ``host`` (a DNS name or an IP address)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    try:
        alt_name = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt_name = x509.DNSName(host)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([alt_name]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


# --- a real web server on a loopback port (tests/test_web.py, test_http_limits.py) ----------


@pytest.fixture
def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Gauge("pyparallel_test_gauge", "A gauge the test registered.", registry=reg).set(42)
    return reg


@pytest.fixture
def serve(registry: CollectorRegistry) -> Iterator[Callable[..., WebServer]]:
    """Start servers on 127.0.0.1:0 by default and shut every one down after the test."""
    servers: list[WebServer] = []

    def start(listen_address: str = "127.0.0.1:0", **kwargs: Any) -> WebServer:
        kwargs.setdefault("metrics", registry)
        server = start_web_server(listen_address, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
