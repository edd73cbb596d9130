"""The real daemon's lifecycle and connection limits: the lifecycle API is off by default,
SIGHUP with any broken config leaves it running and reporting the failure, and thousands of
idle connections do not turn into threads."""

from __future__ import annotations

import resource
import signal
import socket
import time
import urllib.request

import pytest
from test_daemon import QUICK, sample, scrape

import support

pytestmark = pytest.mark.integration

# Probing is not what these tests look at: one quick round, then an hour of quiet.
QUIET = dict(QUICK, interval="1h")


@pytest.fixture
def exporter_factory(tmp_path):
    started: list[support.Service] = []

    def start(*extra: str) -> support.Service:
        service = support.start_exporter(tmp_path / f"exporter{len(started)}", QUIET, *extra)
        started.append(service)
        support.wait_ready(service, timeout=60)
        return service

    yield start
    for service in started:
        service.stop(signal.SIGKILL)


def post(url: str) -> tuple[int, str]:
    return support.http_get(urllib.request.Request(url, method="POST"))  # type: ignore[arg-type]


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_lifecycle_api_is_off_by_default(exporter_factory):
    exporter = exporter_factory()
    assert post(exporter.url + "/-/reload") == (403, "Lifecycle API is not enabled.")
    assert post(exporter.url + "/-/quit") == (403, "Lifecycle API is not enabled.")
    assert exporter.alive()
    assert sample(scrape(exporter), "pyparallel_config_last_reload_success_timestamp_seconds") is not None


def test_quit_with_lifecycle_enabled_stops_the_daemon_cleanly(exporter_factory):
    exporter = exporter_factory("--web.enable-lifecycle")
    assert post(exporter.url + "/-/quit")[0] == 200
    assert exporter.process.wait(15) == 0


@pytest.mark.parametrize("content", [
    b"interval: 1h\nprobe:\n  workloads: [sle\xffep]\n",
    b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    bytes(range(256)) * 16,
], ids=["non-utf8", "deeply-nested", "binary"])
def test_sighup_with_a_broken_config_keeps_the_daemon_and_reports_0(exporter_factory, content):
    exporter = exporter_factory()
    config_path = exporter.workdir / "exporter.yml"
    good = config_path.read_bytes()
    config_path.write_bytes(content)
    for _ in range(3):  # a SIGHUP storm, too
        exporter.process.send_signal(signal.SIGHUP)
    support.wait_for(lambda: sample(scrape(exporter), "pyparallel_config_last_reload_successful") == 0,
                     10, "the failed reload to be reported")
    time.sleep(0.5)
    assert exporter.alive(), exporter.log_text()
    assert sample(scrape(exporter), "pyparallel_probe_interval_seconds") == 3600  # old config kept
    assert "config reload failed" in exporter.log_text()
    config_path.write_bytes(good)
    exporter.process.send_signal(signal.SIGHUP)
    support.wait_for(lambda: sample(scrape(exporter), "pyparallel_config_last_reload_successful") == 1,
                     10, "the good reload")


def test_2000_idle_connections_do_not_add_threads_and_metrics_still_answer(exporter_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2200:
        pytest.skip(f"open-file limit {hard} is too low for 2000 client sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    exporter = exporter_factory()
    pid = exporter.process.pid
    scrape(exporter)  # start the worker that serves scrapes
    before = threads_of(pid)
    host, port = exporter.url.split("//")[1].split(":")
    idle: list[socket.socket] = []
    try:
        for i in range(2000):
            sock = socket.create_connection((host, int(port)), timeout=10)
            if i % 2:
                sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # half a request, never finished
            idle.append(sock)
        time.sleep(1)
        during = threads_of(pid)
        # One I/O thread reads every connection; only whole requests reach the worker pool.
        assert during <= before + 2, (before, during)
        assert sample(scrape(exporter), "pyparallel_config_last_reload_successful") == 1
    finally:
        for sock in idle:
            sock.close()
    assert exporter.alive()
    support.wait_for(lambda: threads_of(pid) <= before + 2, 10, "threads to stay bounded")
