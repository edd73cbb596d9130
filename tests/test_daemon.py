"""The exporter daemon as a user runs it, with a real Prometheus scraping it over HTTP(S)."""

from __future__ import annotations

import base64
import signal
import ssl
import subprocess
import warnings
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import bcrypt
import psutil
import pytest
from conftest import key_pem, require_binary, self_signed_pem
from test_config import INVALID, TESTDATA

import support

pytestmark = pytest.mark.integration

QUICK = {"interval": "60s", "jitter": "1s", "duty_cycle": 1,
         "probe": {"workloads": ["sleep"], "modes": ["sequential", "threads"], "workers": [2],
                   "unit_seconds": 0.1, "repeats": 1, "max_repeats": 1, "timeout": "10s"}}


def scrape(service: support.Service, **kwargs) -> str:
    status, body = support.http_get(service.url + "/metrics", **kwargs)
    assert status == 200, body
    return body


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a text exposition, or None."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


@pytest.fixture
def exporter_factory(tmp_path):
    started: list[support.Service] = []

    def start(config: dict, *extra: str, **kwargs) -> support.Service:
        service = support.start_exporter(tmp_path / f"exporter{len(started)}", config, *extra, **kwargs)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop(signal.SIGKILL)


# --- the shared live stack: exporter -> prometheus ------------------------------------------


def test_prometheus_scrapes_processes_speedup_from_the_shipped_config(live_stack):
    selector = 'interpreter="cpython-system",workload="pure_python",mode="processes"'
    cores = live_stack.query(f"pyparallel_cpu_cores_used{{{selector}}}")
    assert len(cores) == 1 and cores[0]["metric"]["job"] == "pyparallel"
    if support.stack_could_tell(live_stack, selector, "pure_python processes in the live stack"):
        result = live_stack.query(f"pyparallel_speedup_ratio{{{selector}}}")
        assert len(result) == 1
        assert float(result[0]["value"][1]) > 1.1  # two processes beat one (see test_probe for why so loose)
        assert float(cores[0]["value"][1]) > 1.6


def test_per_core_series_exist_for_every_cpu(live_stack):
    result = live_stack.query('pyparallel_core_utilisation_ratio{interpreter="cpython-system",'
                              'workload="pure_python",mode="processes"}')
    assert sorted(int(s["metric"]["cpu"]) for s in result) == list(range(psutil.cpu_count()))


def test_probe_success_is_1_for_healthy_workloads_and_0_for_a_raising_one(live_stack):
    ok = support.values(live_stack.query('pyparallel_probe_success{workload!~"faulty.*"}'), "mode")
    assert ok and set(ok.values()) == {1.0}
    failed = live_stack.query('pyparallel_probe_success{workload="faulty_workloads:raises"}')
    assert failed and {float(s["value"][1]) for s in failed} == {0.0}
    errors = live_stack.query('pyparallel_probe_failures_total{workload="faulty_workloads:raises",reason="error"}')
    assert errors and min(float(s["value"][1]) for s in errors) >= 1


def test_identity_and_host_metrics_reach_prometheus(live_stack):
    info = live_stack.query('pyparallel_python_info{interpreter="cpython-system"}')
    assert info[0]["metric"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert info[0]["metric"]["free_threaded_build"] == "false"
    assert support.values(live_stack.query("pyparallel_gil_enabled"), "interpreter")["cpython-system"] == 1
    host = support.values(live_stack.query("pyparallel_host_cpus"), "kind")
    assert host["logical"] == psutil.cpu_count()
    assert support.values(live_stack.query("up"), "job")["pyparallel"] == 1


def test_a_real_scrape_passes_promtool_check_metrics(live_stack):
    promtool = require_binary("promtool")
    checked = subprocess.run([promtool, "check", "metrics"], input=scrape(live_stack.exporter),
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_pyparallel_metric_has_help_text(live_stack):
    text = scrape(live_stack.exporter)
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE pyparallel_")}
    helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP pyparallel_")}
    assert names and names == helped


def test_metrics_are_served_quickly_while_a_probe_runs(exporter_factory):
    """Probes run in child processes, so a scrape never waits for one (the latency figures
    are in benchmarks/; this only checks that a scrape is not blocked for a probe's length)."""
    token = uuid.uuid4().hex
    config = dict(QUICK, probe=dict(QUICK["probe"], workloads=["pure_python"], modes=["sequential", "processes"],
                                    unit_seconds=1.0, repeats=3, max_repeats=3))
    exporter = exporter_factory(config, env={"PYPARALLEL_TEST_TOKEN": token})
    support.wait_for(lambda: len(support.processes_with_token(token)) > 1, 30, "the probe to start")
    slowest = 0.0
    for _ in range(20):
        started = time.monotonic()
        scrape(exporter)
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    assert len(support.processes_with_token(token)) > 1, "the probe ended before the scrapes did"
    assert slowest < 1.0


# --- faults --------------------------------------------------------------------------------


def test_raising_aborting_and_hanging_workloads_are_counted_and_the_daemon_keeps_serving(exporter_factory):
    token = uuid.uuid4().hex
    config = dict(QUICK, probe=dict(QUICK["probe"], timeout="2s", workloads=[
        "faulty_workloads:raises", "faulty_workloads:aborts", "faulty_workloads:hangs", "sleep"]))
    exporter = exporter_factory(config, env={"PYPARALLEL_TEST_TOKEN": token})
    support.wait_ready(exporter, timeout=60)
    text = scrape(exporter)
    for workload, reason in (("raises", "error"), ("aborts", "crash"), ("hangs", "timeout")):
        labels = {"workload": f"faulty_workloads:{workload}", "mode": "threads"}
        assert sample(text, "pyparallel_probe_success", **labels) == 0
        assert sample(text, "pyparallel_probe_failures_total", reason=reason, **labels) == 1
    assert sample(text, "pyparallel_probe_success", workload="sleep", mode="threads") == 1
    assert support.http_get(exporter.url + "/-/healthy")[0] == 200
    assert exporter.alive()
    exporter_pid = exporter.process.pid
    assert support.probe_leftovers(token, exporter_pid) == []


def test_sigterm_during_a_probe_exits_0_within_5_seconds_and_kills_the_probe(exporter_factory):
    token = uuid.uuid4().hex
    config = dict(QUICK, probe=dict(QUICK["probe"], workloads=["faulty_workloads:hangs"], timeout="60s"))
    exporter = exporter_factory(config, env={"PYPARALLEL_TEST_TOKEN": token})
    support.wait_for(lambda: len(support.processes_with_token(token)) > 1, 30, "the probe to start")
    started = time.monotonic()
    exporter.process.send_signal(signal.SIGTERM)
    assert exporter.process.wait(timeout=5) == 0
    assert time.monotonic() - started < 5
    support.wait_for(lambda: not support.processes_with_token(token), 5, "the probe tree to be gone")


def test_missing_interpreter_is_a_failed_probe_not_a_crash(exporter_factory):
    config = dict(QUICK, interpreters=[{"name": "ghost", "path": "/nonexistent/python3"}])
    exporter = exporter_factory(config)
    support.wait_ready(exporter, timeout=60)
    text = scrape(exporter)
    assert sample(text, "pyparallel_probe_success", interpreter="ghost", mode="threads") == 0
    assert sample(text, "pyparallel_probe_failures_total", interpreter="ghost", mode="threads",
                  reason="interpreter") == 1


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(INVALID))
def test_serve_with_an_invalid_config_exits_2_with_one_line(name):
    path = TESTDATA / name
    result = subprocess.run([sys.executable, "-m", "exporter", "serve", f"--config.file={path}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == f"parallelism-exporter: error parsing config file: {path}: {INVALID[name]}"


def test_config_check_validates_and_exits_0():
    result = subprocess.run([sys.executable, "-m", "exporter", "serve", "--config.check",
                             f"--config.file={TESTDATA / 'valid-full.yml'}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "config OK" in result.stdout


def test_bad_reload_keeps_the_old_config_and_a_good_one_applies(exporter_factory):
    exporter = exporter_factory(QUICK, "--web.enable-lifecycle")
    support.wait_ready(exporter, timeout=60)
    config_path = exporter.workdir / "exporter.yml"
    original = config_path.read_text()
    config_path.write_text("probe:\n  repeats: 0\n")
    exporter.process.send_signal(signal.SIGHUP)
    support.wait_for(lambda: sample(scrape(exporter), "pyparallel_config_last_reload_successful") == 0,
                     10, "the failed reload to be reported")
    assert exporter.alive()
    assert sample(scrape(exporter), "pyparallel_probe_interval_seconds") == 60  # old config kept
    config_path.write_text(original.replace("interval: 60s", "interval: 45s"))
    request = urllib.request.Request(exporter.url + "/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    text = scrape(exporter)
    assert sample(text, "pyparallel_config_last_reload_successful") == 1
    assert sample(text, "pyparallel_probe_interval_seconds") == 45


# --- TLS and basic auth ---------------------------------------------------------------------


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(self_signed_pem(key, "127.0.0.1"))
    key_path.write_bytes(key_pem(key))
    return cert_path, key_path


def test_tls_and_basic_auth_and_prometheus_scrapes_through_them(exporter_factory, tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    password_hash = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=10)).decode()
    web_config = tmp_path / "web.yml"
    web_config.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
                          f"basic_auth_users:\n  prom: '{password_hash}'\n")
    exporter = exporter_factory(QUICK, f"--web.config.file={web_config}", scheme="https")
    context = ssl.create_default_context(cafile=str(cert))

    def get(user: str | None, password: str | None) -> int:
        request = urllib.request.Request(exporter.url + "/metrics")
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        return support.http_get(request, context=context)[0]  # type: ignore[arg-type]

    support.wait_for(lambda: get("prom", "s3cret") == 200, 30, "the TLS exporter")
    assert get(None, None) == 401
    assert get("prom", "wrong") == 401
    assert get("prom", "s3cret") == 200

    scrape_config = {"scheme": "https", "tls_config": {"ca_file": str(cert)},
                     "basic_auth": {"username": "prom", "password": "s3cret"}}
    prometheus = support.start_prometheus(
        tmp_path, support.prometheus_config(exporter.url.split("//")[1], scrape=scrape_config))
    try:
        support.wait_for(lambda: support.values(support.query(prometheus, "up"), "job").get("pyparallel") == 1,
                         30, "prometheus to scrape over TLS with basic auth")
    finally:
        prometheus.stop()


# --- textfile -------------------------------------------------------------------------------


def test_probe_textfile_is_written_atomically_and_passes_promtool(tmp_path):
    promtool = require_binary("promtool")
    target = tmp_path / "pyparallel.prom"
    result = subprocess.run([sys.executable, "-m", "exporter", "probe", "--workload", "sleep",
                             "--mode", "threads", "--workers", "2", "--seconds", "0.1", "--repeats", "1",
                             "--textfile", str(target)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = target.read_text()
    assert sample(text, "pyparallel_speedup_ratio", mode="threads", workload="sleep") > 1.5
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_scrape_during_reload_and_probe_never_errors(exporter_factory):
    """Concurrent scrapes while the lane probes: every one answers 200."""
    exporter = exporter_factory(dict(QUICK, probe=dict(QUICK["probe"], unit_seconds=0.5)))
    support.wait_for(lambda: support.http_get(exporter.url + "/-/healthy")[0] == 200, 30, "the exporter")
    assert support.scrape_statuses(exporter.url + "/metrics", clients=4, each=30) == [200] * 120


def test_duty_cycle_budget_spaces_round_starts(exporter_factory):
    """With rounds longer than duty_cycle × interval, round starts are stretched to
    round duration / duty_cycle apart, and the exported duty cycle stays within budget."""
    config = dict(QUICK, interval="1s", jitter="0s", duty_cycle=0.5,
                  probe=dict(QUICK["probe"], unit_seconds=0.3))
    exporter = exporter_factory(config)
    support.wait_ready(exporter, timeout=60)
    stamps: list[float] = []

    def next_round() -> bool:
        stamp = sample(scrape(exporter), "pyparallel_probe_last_success_timestamp_seconds", mode="threads")
        if stamp is not None and (not stamps or stamp != stamps[-1]):
            stamps.append(stamp)
        return len(stamps) >= 3

    support.wait_for(next_round, 60, "three rounds", interval=0.05)
    text = scrape(exporter)
    duration = sample(text, "pyparallel_round_duration_seconds")
    assert 0 < sample(text, "pyparallel_duty_cycle_ratio") <= 0.5 + 1e-9
    gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    assert min(gaps) > 1.5 * duration  # about duration / 0.5 apart, not back to back


# --- cannot tell, then tell: retries of inconclusive steps ----------------------------------


def test_an_inconclusive_step_is_retried_later_in_the_interval_when_the_host_is_quiet(tmp_path):
    """A busy neighbour spoils the first round: the step exports "cannot tell" (no speedup),
    and a quarter of the interval later, the neighbour gone, the daemon measures it again."""
    processes = {"mode": "processes", "workload": "pure_python"}
    config = {"interval": "40s", "jitter": "0s", "duty_cycle": 1,
              "probe": {"workloads": ["pure_python"], "modes": ["sequential", "processes"], "workers": [2],
                        "unit_seconds": 0.2, "repeats": 3, "step_budget": "2s"}}
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    exporter = support.start_exporter(tmp_path, config)
    try:
        try:
            support.wait_ready(exporter)
            text = support.http_get(exporter.url + "/metrics")[1]
        finally:
            burner.kill()
            burner.wait()
        assert sample(text, "pyparallel_step_conclusive", **processes) == 0
        assert sample(text, "pyparallel_speedup_ratio", **processes) is None  # never a low figure
        assert sample(text, "pyparallel_interference_cores", **processes) > 0.3

        def retried() -> bool:
            return sample(support.http_get(exporter.url + "/metrics")[1], "pyparallel_step_conclusive",
                          **processes) == 1

        try:
            support.wait_for(retried, 40, "the retry of the inconclusive step")
        except AssertionError:
            # Other work kept the host busy through every retry: the daemon must have said so.
            assert "host still busy; inconclusive steps not retried yet" in exporter.log_text()
            warnings.warn(support.HostTooBusy("the host stayed busy through the daemon's retries"), stacklevel=1)
            return
        assert "inconclusive step retried" in exporter.log_text()
        assert sample(support.http_get(exporter.url + "/metrics")[1], "pyparallel_speedup_ratio", **processes) > 1.0
    finally:
        exporter.stop()
