"""Real processes for the integration tests: the exporter daemon, Prometheus, Alertmanager.

Each runs on a free loopback port in a temporary directory and is stopped by the test that
started it. Nothing here fakes a component: the tests talk to them over HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import yaml

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0, **kwargs: Any) -> tuple[int, str]:
    """(status, body) of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, **kwargs) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape_statuses(url: str, clients: int, each: int) -> list[int]:
    """The status of every GET of ``url`` by ``clients`` threads, ``each`` times each, at once
    (collected here: an assert in a client thread would not fail the test)."""
    statuses: list[int] = []

    def client() -> None:
        for _ in range(each):
            statuses.append(http_get(url)[0])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def wait_for(check: Callable[[], Optional[T]], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError, KeyError) as error:
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last error: {last_error})")


class Service:
    """A started server process with its log file."""

    def __init__(self, name: str, args: list[str], workdir: Path, url: str,
                 cwd: Optional[Path] = None, env: Optional[dict[str, str]] = None) -> None:
        self.name, self.url, self.workdir = name, url, workdir
        self.log_path = workdir / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                        cwd=cwd or workdir, env=dict(os.environ, **(env or {})))

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.alive():
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


def start_exporter(workdir: Path, config: dict, *extra: str, scheme: str = "http",
                   env: Optional[dict[str, str]] = None) -> Service:
    """Run ``parallelism-exporter serve`` with this config (see ``wait_ready``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "exporter.yml"
    # Workloads are imported only from configured directories: tests/ holds faulty_workloads.
    probe = dict(config.get("probe") or {})
    probe.setdefault("workload_path", [str(TESTS)])
    config_path.write_text(yaml.safe_dump(dict(config, probe=probe)))
    port = free_port()
    args = [sys.executable, "-m", "exporter", "serve", f"--config.file={config_path}",
            f"--web.listen-address=127.0.0.1:{port}", *extra]
    return Service("exporter", args, workdir, f"{scheme}://127.0.0.1:{port}", cwd=TESTS, env=env)


def wait_ready(service: Service, timeout: float = 120.0, **kwargs: Any) -> None:
    def ready() -> bool:
        assert service.alive(), f"{service.name} exited:\n{service.log_text()}"
        return http_get(service.url + "/-/ready", **kwargs)[0] == 200

    wait_for(ready, timeout, f"{service.name} to be ready")


def prometheus_config(exporter_target: str, alertmanager: Optional[str] = None,
                      scrape: Optional[dict] = None) -> dict:
    """The shipped deploy/prometheus/prometheus.yml, pointed at loopback and made fast."""
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    job = config["scrape_configs"][0]
    job["static_configs"][0]["targets"] = [exporter_target]
    job.update(scrape or {})
    if alertmanager:
        config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager]
    else:
        config.pop("alerting", None)
    return config


def start_prometheus(workdir: Path, config: dict, rules_for: Optional[str] = None, mixin: Any = None) -> Service:
    """Start the real ``prometheus`` with a copy of deploy/prometheus (rules included).

    ``rules_for`` replaces every alert's ``for`` duration, so a test can see an alert fire
    without waiting the production hold time; the expressions stay as shipped. ``mixin`` (a
    dashboards.mixin_config.MixinConfig) renders the rules for other settings instead.
    """
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed"
    home = workdir / "prometheus"
    shutil.copytree(REPO / "deploy/prometheus", home, dirs_exist_ok=True)
    if mixin is not None:
        from dashboards.generate import rule_files, to_yaml

        for relative, groups in rule_files(mixin).items():
            (home / "rules" / relative.name).write_text(to_yaml({"groups": groups}))
    if rules_for is not None:
        for rule_file in (home / "rules").glob("*.yml"):
            rules = yaml.safe_load(rule_file.read_text())
            for group in rules["groups"]:
                for rule in group["rules"]:
                    if "alert" in rule:
                        rule["for"] = rules_for
            rule_file.write_text(yaml.safe_dump(rules))
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    args = [binary, f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    service = Service("prometheus", args, workdir, f"http://127.0.0.1:{port}")
    wait_for(lambda: http_get(service.url + "/-/ready")[0] == 200, 60, "prometheus to be ready")
    return service


def start_alertmanager(workdir: Path) -> Service:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "prometheus-alertmanager is not installed"
    home = workdir / "alertmanager"
    home.mkdir(parents=True, exist_ok=True)
    port, cluster = free_port(), free_port()
    args = [binary, f"--config.file={REPO / 'deploy/alertmanager/alertmanager.yml'}",
            f"--storage.path={home}", f"--web.listen-address=127.0.0.1:{port}",
            f"--cluster.listen-address=127.0.0.1:{cluster}"]
    service = Service("alertmanager", args, workdir, f"http://127.0.0.1:{port}")
    wait_for(lambda: http_get(service.url + "/-/ready")[0] == 200, 60, "alertmanager to be ready")
    return service


def query(prometheus: Service, expr: str, at: Optional[float] = None) -> list[dict]:
    """Run an instant PromQL query; returns the result vector (raises on a query error)."""
    params = {"query": expr}
    if at is not None:
        params["time"] = str(at)
    status, body = http_get(f"{prometheus.url}/api/v1/query?{urllib.parse.urlencode(params)}")
    document = json.loads(body)
    if status != 200 or document.get("status") != "success":
        raise AssertionError(f"query {expr!r} failed: {document.get('error', body)}")
    return document["data"]["result"]


def values(result: list[dict], label: str) -> dict[str, float]:
    return {series["metric"].get(label, ""): float(series["value"][1]) for series in result}


def probe_leftovers(token: str, exporter_pid: int) -> list:
    """Processes carrying the test's token besides the exporter and its sentinel (the small
    process that outlives the exporter only to kill its probes, exporter/probe/sentinel.py)."""
    import psutil

    def sentinel(process: psutil.Process) -> bool:
        try:
            return process.ppid() == exporter_pid and "exporter.probe.sentinel" in " ".join(process.cmdline())
        except psutil.Error:
            return False

    return [p for p in processes_with_token(token) if p.pid != exporter_pid and not sentinel(p)]


def processes_with_token(token: str) -> list:
    """Live processes whose environment carries PYPARALLEL_TEST_TOKEN=token."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("PYPARALLEL_TEST_TOKEN") == token:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


# --- a quiet host for the tests that need physical speed -----------------------------------

# How long the whole session may wait, in total, for a host quiet enough to show a speedup:
# a loaded machine costs at most this much time, then the tests check "cannot tell" instead.
QUIET_WAIT_BUDGET = [float(os.environ.get("PYPARALLEL_TEST_QUIET_SECONDS", "120"))]


class HostTooBusy(UserWarning):
    """A test that needs free cores found the host busy: it checked the product's "cannot tell"."""


def wait_for_quiet_host(needed: float = 2.0) -> bool:
    """Wait (bounded by what is left of the session's budget) until ``needed`` cores are free."""
    from exporter.host import cpus
    from exporter.probe import quiet

    usable = cpus.host_cpus().usable
    result = quiet.wait_for_free_cores(usable, min(needed, usable), QUIET_WAIT_BUDGET[0])
    QUIET_WAIT_BUDGET[0] = max(0.0, QUIET_WAIT_BUDGET[0] - result.waited_seconds)
    return result.quiet


def could_tell(summary: Any, what: str = "") -> bool:
    """True when a step's figures can show its parallelism: the caller asserts them.

    Otherwise the product said "cannot tell"; that answer is checked here (it must name the
    other load, and the load it measured must really leave too few cores), a warning names
    the figures, and the caller asserts nothing about speed — a busy host neither fails
    the test nor passes it silently.
    """
    if isinstance(summary, dict):  # a --json result
        from types import SimpleNamespace

        summary = SimpleNamespace(**summary)
    if summary.conclusive:
        return True
    reason = summary.inconclusive_reason or ""
    assert "other processes used" in reason or "stole" in reason, f"{what}: cannot tell, but why? {reason!r}"
    assert summary.interference_cores is not None and summary.free_cores is not None
    import warnings

    warnings.warn(HostTooBusy(f"{what}: the host was too busy to show the speedup; the product said: {reason}"),
                  stacklevel=2)
    return False


def stack_could_tell(stack: Any, selector: str, what: str) -> bool:
    """``could_tell`` for a step scraped into Prometheus: ``pyparallel_step_conclusive``
    decides, and "cannot tell" must come with real other load and no speedup series."""
    conclusive = stack.query(f"pyparallel_step_conclusive{{{selector}}}")
    assert len(conclusive) == 1, (selector, conclusive)
    if float(conclusive[0]["value"][1]) == 1:
        return True
    other = stack.query(f"pyparallel_interference_cores{{{selector}}}")
    assert other and float(other[0]["value"][1]) > 0.1, (selector, other)
    assert not stack.query(f"pyparallel_speedup_ratio{{{selector}}}"), "a step that cannot tell exported a speedup"
    import warnings

    warnings.warn(HostTooBusy(f"{what}: the host was too busy during the stack's round; it exported "
                              f"pyparallel_step_conclusive 0 with {float(other[0]['value'][1]):.2f} cores of other load"),
                  stacklevel=2)
    return False


def promptly(call: Callable[[], Any], errors: tuple[type[BaseException], ...], seconds: float,
             what: str) -> tuple[str, Any]:
    """("ok", what ``call`` returned) or ("error", the message of one of ``errors``), from a
    thread that must return within ``seconds`` (a reader blocked on a FIFO never does); any
    other exception fails the test."""
    result: list[tuple[str, Any]] = []

    def run() -> None:
        try:
            result.append(("ok", call()))
        except errors as exc:
            result.append(("error", str(exc)))
        except BaseException as exc:  # noqa: BLE001 - reported below as the test's failure
            result.append(("crash", f"{type(exc).__name__}: {exc}"[:500]))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{what} did not return within {seconds:g}s"
    kind, value = result[0]
    assert kind != "crash", f"{what} raised {value}"
    return kind, value
