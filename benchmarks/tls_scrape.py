#!/usr/bin/env python3
"""Scrape latency over TLS: a kept-alive connection against a new connection per scrape.

Three servers behind the same self-signed certificate and web config file: this tree's
exporter (HTTP/1.1 keep-alive), the exporter at ``--baseline`` (default ``main`` before the
keep-alive change: it closes every connection, so each scrape pays a TCP and TLS handshake),
and node_exporter (Go's net/http, keep-alive). Each is scraped one request at a time in two
ways: over one kept-alive connection (what Prometheus does) and with a new connection per
scrape. No probe runs while it measures: the exporters finish their start-up round first.

Run by hand on an idle machine, never by the test suite:
``python benchmarks/tls_scrape.py [--baseline REV] [--requests 2000] [--markdown FILE]``.
Everything listens on 127.0.0.1, and every process started here is stopped on the way out.
"""

from __future__ import annotations

import argparse
import http.client
import io
import math
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from daemon import (NODE_COLLECTORS, NODE_EXPORTER, Check, Section, Service, cpu_seconds, describe_machine,
                    free_port, ms, percentile, render, Target, wait_for)

from exporter.web.httpserver import DEFAULT_MAX_REQUESTS_PER_CONNECTION

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from conftest import key_pem, self_signed_pem  # noqa: E402  (the tests' certificate helpers)

# Start `python -m exporter` from a given source tree, ahead of whatever is installed.
BOOT = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = 'exporter'; "
        "runpy.run_module('exporter', run_name='__main__')")
# One quick start-up round, then an hour of quiet: probing is not what is measured here.
EXPORTER_CONFIG = {"interval": "1h", "jitter": "0s",
                   "probe": {"workloads": ["sha256"], "modes": ["sequential", "threads"], "unit_seconds": 0.05,
                             "repeats": 1, "max_repeats": 1, "timeout": "30s"}}
MODES = ("kept alive", "new connection per scrape")
BLOCK = 250  # scrapes per block; blocks rotate over targets and modes, so drift hits all alike
TIMEOUT_SECONDS = 10.0
P99_FACTOR_TARGET = 1.0  # kept-alive p99 no worse than node_exporter's


@dataclass
class Series:
    seconds: list[float] = field(default_factory=list)
    errors: int = 0
    connections: int = 0
    server_cpu_seconds: float = 0.0


def tls_files(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and an exporter-toolkit web config using it."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert, key_file = workdir / "cert.pem", workdir / "key.pem"
    cert.write_bytes(self_signed_pem(key, "127.0.0.1"))
    key_file.write_bytes(key_pem(key))
    web = workdir / "web.yml"
    web.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": str(cert), "key_file": str(key_file)}}))
    return cert, web


def source_tree(revision: str, workdir: Path) -> Path:
    """The exporter package at ``revision``, extracted from git into ``workdir``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", revision, "exporter"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(workdir, filter="data")
    return workdir


def revision_name(revision: str) -> str:
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", revision], capture_output=True, text=True)
    return f"{revision} @ {sha.stdout.strip()}" if sha.returncode == 0 else revision


def context_for(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def status(port: int, context: ssl.SSLContext, path: str) -> int:
    """The status of one GET over TLS; 0 for an answer that is not HTTP."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=TIMEOUT_SECONDS)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except http.client.HTTPException:
        return 0
    finally:
        conn.close()


def start_exporter(stack: ExitStack, name: str, tree: Path, workdir: Path, web: Path,
                   context: ssl.SSLContext) -> Service:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "exporter.yml"
    config.write_text(yaml.safe_dump(EXPORTER_CONFIG))
    port = free_port()
    service = Service(name, [sys.executable, "-c", BOOT, str(tree), "serve", f"--config.file={config}",
                             f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={web}"], workdir, port)
    stack.callback(service.stop)
    wait_for(lambda: status(port, context, "/-/ready") == 200, 120, service)  # the start-up round is over
    return service


def start_node_exporter(stack: ExitStack, workdir: Path, web: Path, context: ssl.SSLContext) -> Service:
    port = free_port()
    service = Service("node_exporter", [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
                                        f"--web.config.file={web}", "--web.max-requests=0",
                                        *NODE_COLLECTORS["minimal"]], workdir, port)
    stack.callback(service.stop)
    wait_for(lambda: status(port, context, "/metrics") == 200, 30, service)
    return service


class Scraper:
    """One client, one request at a time, as one Prometheus scrape loop per target is."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.kept: dict[str, http.client.HTTPSConnection] = {}

    def connection(self, target: Target, mode: str) -> http.client.HTTPSConnection:
        if mode == "kept alive":
            if target.name not in self.kept:
                self.kept[target.name] = http.client.HTTPSConnection(
                    "127.0.0.1", target.service.port, context=self.context, timeout=TIMEOUT_SECONDS)
            return self.kept[target.name]
        return http.client.HTTPSConnection("127.0.0.1", target.service.port, context=self.context,
                                           timeout=TIMEOUT_SECONDS)

    def block(self, target: Target, mode: str, count: int, series: Series) -> None:
        before = cpu_seconds(target.service.ps)
        for _ in range(count):
            conn = self.connection(target, mode)
            # http.client reconnects a kept connection the server closed: that is a new one too.
            series.connections += conn.sock is None
            started = time.perf_counter()
            try:
                conn.request("GET", "/metrics")
                response = conn.getresponse()
                body = response.read()
                elapsed = time.perf_counter() - started
                if response.status == 200 and target.marker in body:
                    series.seconds.append(elapsed)
                else:
                    series.errors += 1
            except (OSError, http.client.HTTPException):
                series.errors += 1
                conn.close()
            if mode != "kept alive":
                conn.close()
        series.server_cpu_seconds += cpu_seconds(target.service.ps) - before

    def close(self) -> None:
        for conn in self.kept.values():
            conn.close()


def measure(targets: list[Target], scraper: Scraper, requests: int) -> dict[tuple[str, str], Series]:
    results = {(t.name, mode): Series() for t in targets for mode in MODES}
    for target in targets:  # warm-up: imports, first handshakes, caches
        for mode in MODES:
            scraper.block(target, mode, 20, Series())
    for index in range(math.ceil(requests / BLOCK)):
        count = min(BLOCK, requests - index * BLOCK)
        for target in targets:
            for mode in MODES:
                print(f"  … {target.name}, {mode}: scrapes {index * BLOCK + 1}-{index * BLOCK + count} of {requests}",
                      file=sys.stderr, flush=True)
                scraper.block(target, mode, count, results[(target.name, mode)])
    return results


def latency_section(targets: list[Target], results: dict[tuple[str, str], Series], requests: int) -> Section:
    section = Section("Scrape latency over TLS, one scrape at a time",
                      ["target", "connection", "p50", "p90", "p99", "max", "new connections", "server CPU per scrape",
                       "errors", "target", "result"])
    node_p99 = percentile(results[(targets[-1].name, "kept alive")].seconds, 99)
    for target in targets:
        for mode in MODES:
            series = results[(target.name, mode)]
            p99 = percentile(series.seconds, 99)
            goal: Optional[bool] = None
            goal_text = ""
            if target is targets[0] and mode == "kept alive":
                goal_text = "p99 ≤ node_exporter's, 0 errors"
                goal = p99 <= P99_FACTOR_TARGET * node_p99 and series.errors == 0
            section.checks.append(Check([
                target.name, mode, ms(percentile(series.seconds, 50)), ms(percentile(series.seconds, 90)), ms(p99),
                ms(max(series.seconds, default=math.nan)), str(series.connections),
                ms(series.server_cpu_seconds / max(1, len(series.seconds) + series.errors)), str(series.errors),
                goal_text], goal))
    ours, before = (results[(targets[0].name, "kept alive")], results[(targets[1].name, "kept alive")])
    section.notes = [
        f"{requests} scrapes of /metrics per target and way, in blocks of {BLOCK} rotating over targets and ways,"
        " after 20 warm-up scrapes each; latency from sending the request to the last byte of the body,"
        " connection set-up (TCP and TLS handshake) included when there is one.",
        "TLS 1.3 with an ECDSA P-256 certificate, no session resumption (Python's http.client, like Prometheus'"
        " default HTTP client, resumes none): every new connection is a full handshake.",
        f"Kept alive, this tree's median scrape takes {statistics.median(ours.seconds) / statistics.median(before.seconds):.0%}"
        f" of the baseline's, which opens {before.connections} connections for {len(before.seconds) + before.errors}"
        " scrapes." if ours.seconds and before.seconds else "No successful scrape to compare.",
        "The exporters have finished their start-up probe round; no probe runs while they are scraped."
        " node_exporter runs with collectors: " + " ".join(NODE_COLLECTORS["minimal"]) + ".",
        "Client and servers share the machine's cores; the client is a single Python thread.",
        f"This tree's exporter closes a kept-alive connection after {DEFAULT_MAX_REQUESTS_PER_CONNECTION} requests"
        " (`DEFAULT_MAX_REQUESTS_PER_CONNECTION`): its new connections when kept alive.",
        "Load average at the end of the run: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())
        + " (other work during the run would show here).",
    ]
    return section


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="git revision of the exporter before keep-alive")
    parser.add_argument("--requests", type=int, default=2000, help="scrapes per target and way")
    parser.add_argument("--markdown", help="also write the results to this file")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so every process started here is stopped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="tls-scrape-") as scratch, ExitStack() as stack:
        workdir = Path(scratch)
        cert, web = tls_files(workdir)
        context = context_for(cert)
        baseline = source_tree(args.baseline, workdir / "baseline")
        targets = [
            Target("parallelism-exporter (this tree)",
                   start_exporter(stack, "exporter", REPO, workdir / "ours", web, context), b"pyparallel_"),
            Target(f"parallelism-exporter ({revision_name(args.baseline)})",
                   start_exporter(stack, "exporter-baseline", baseline, workdir / "baseline-run", web, context),
                   b"pyparallel_"),
            Target("node_exporter", start_node_exporter(stack, workdir, web, context), b"node_"),
        ]
        scraper = Scraper(context)
        stack.callback(scraper.close)
        results = measure(targets, scraper, args.requests)
        section = latency_section(targets, results, args.requests)
    text = render(machine, [section], "python benchmarks/tls_scrape.py " + " ".join(sys.argv[1:]))
    text = text.replace("# parallelism-exporter daemon benchmark", "# Scrape latency over TLS: keep-alive", 1)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
