"""Real services watched by the real sampler: a GIL build's four busy threads read as one core and
serialised, 3.13t's as the usable cores, 3.13t with an extension that re-enables the GIL as
serialised again; every window agrees with psutil's CPU times of the same process.

The machine is shared (2 cores, other test runs): each test samples window after window until
one is clean enough to judge, within a bounded time, and then fails with every figure it saw."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
import yaml
from conftest import build_legacy_extension, require_binary, require_free_threaded_python

import support
from exporter.config.loader import config_from_mapping
from exporter.host.cpus import host_cpus
from exporter.services.watcher import Sampler
from exporter.services.window import Cohort

pytestmark = pytest.mark.integration

SERVICE = Path(__file__).parent / "services" / "busy_service.py"
THREADS = 4
WINDOW_SECONDS = 3.0
WAIT_SECONDS = 120.0  # the longest wait for a quiet enough window
AGREEMENT = 0.05  # our cores used against psutil's over the same window
QUIET_OTHERS = 0.15  # cores other processes may use for a window to count as quiet


@contextmanager
def service(python: str, tag: str, *args: str, env: Optional[dict] = None,
            prefix: tuple[str, ...] = ()) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start busy_service.py; yields the process and its ready line (``ready gil=0|1``)."""
    process = subprocess.Popen([*prefix, python, str(SERVICE), "--threads", str(THREADS), "--tag", tag, *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline().strip()  # type: ignore[union-attr]
        assert line.startswith("ready"), f"service did not start: {line!r} {process.stderr.read()}"  # type: ignore[union-attr]
        yield process, line
    finally:
        process.kill()
        process.wait(10)


@dataclass
class Window:
    cohort: Cohort
    state: str
    psutil_cores: float
    host_idle: float
    others: float  # cores used by other processes during the window

    def __str__(self) -> str:
        c = self.cohort
        return (f"cores {c.cores_used:.3f} (psutil {self.psutil_cores:.3f}), busy {c.busy_threads}, "
                f"parallelism {c.parallelism}, serialised {c.serialised_ratio}, state {self.state}, "
                f"host idle {self.host_idle:.2f}, others {self.others:.2f}")


def windows(tag: str, pid: int) -> Iterator[Window]:
    """Consecutive windows of the sampler, each with psutil's reading of the same process."""
    config = config_from_mapping({"services": {"groups": [{"name": tag, "cmdline": [f"--tag {tag}( |$)"]}]}}).services
    # The services are this test's children, and a sampler never watches its own process
    # tree (the exporter's probes): here the test process is not the exporter, so exclude none.
    sampler = Sampler(config, own_pid=0)
    usable = host_cpus().usable
    process = psutil.Process(pid)

    def cpu() -> tuple[float, float]:
        times = process.cpu_times()
        return time.monotonic(), times.user + times.system

    before = cpu()
    sampler.sample(usable)
    while True:
        time.sleep(WINDOW_SECONDS)
        after = cpu()
        snapshot = sampler.sample(usable)
        (cohort,) = [c for c in snapshot.cohorts if c.group == tag]
        psutil_cores = (after[1] - before[1]) / (after[0] - before[0])
        idle = snapshot.host_idle_cores or 0.0
        yield Window(cohort, snapshot.states[tag], psutil_cores, idle, max(0.0, usable - idle - cohort.cores_used))
        before = after


def wait_for_window(tag: str, pid: int, wanted, what: str) -> Window:
    """The first window for which ``wanted`` holds; every window must agree with psutil."""
    seen: list[Window] = []
    deadline = time.monotonic() + WAIT_SECONDS
    for window in windows(tag, pid):
        seen.append(window)
        assert window.cohort.cores_used == pytest.approx(window.psutil_cores, rel=AGREEMENT, abs=0.02), str(window)
        if wanted(window):
            return window
        if time.monotonic() > deadline:
            break
    pytest.fail(f"no window showed {what} within {WAIT_SECONDS:.0f}s; windows:\n" + "\n".join(map(str, seen)))


def serial_window(window: Window) -> bool:
    """One core for four busy threads, judged (the host had a core to spare)."""
    assert window.state != "parallel", f"a serialised service read as parallel: {window}"
    return window.state == "serial" and window.cohort.busy_threads == THREADS and 0.85 <= window.cohort.cores_used <= 1.15


def test_gil_build_service_reads_one_core_four_busy_threads_and_the_signature():
    with service(sys.executable, "gil-service") as (process, ready):
        assert ready == "ready gil=1"
        window = wait_for_window("gil-service", process.pid, serial_window, "four busy threads on one core, judged")
    identity = window.cohort.identity
    assert (identity.implementation, identity.version, identity.free_threaded_build) == (
        "cpython", "{}.{}.{}".format(*sys.version_info[:3]), False)
    assert window.cohort.serialised_ratio == 1.0 and window.cohort.parallelism == pytest.approx(0.5, abs=0.08)


def ft_version(python: str) -> str:
    return subprocess.run([python, "-c", "import sys; print('{}.{}.{}'.format(*sys.version_info[:3]))"],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.freethreaded
def test_free_threaded_service_reads_the_usable_cores():
    python = require_free_threaded_python()
    usable = host_cpus().usable
    expected = min(THREADS, usable)

    def parallel(window: Window) -> bool:
        assert window.state != "serial", f"a free-threaded service read as serialised: {window}"
        if window.others > QUIET_OTHERS:  # the host took cores: the kernel's accounting still says parallel
            return window.state == "parallel" and window.cohort.busy_threads == THREADS
        return window.cohort.cores_used >= 0.9 * expected

    with service(python, "ft-service") as (process, ready):
        assert ready == "ready gil=0"
        window = wait_for_window("ft-service", process.pid, parallel,
                                 f"≈{expected:g} cores on a quiet host, or parallel on a busy one")
    assert window.cohort.busy_threads == THREADS and window.state == "parallel"
    identity = window.cohort.identity
    assert (identity.implementation, identity.version, identity.free_threaded_build) == ("cpython", ft_version(python), True)


@pytest.mark.freethreaded
def test_free_threaded_service_importing_a_gil_extension_turns_serial(tmp_path):
    python = require_free_threaded_python()
    env = {**os.environ, "PYTHONPATH": build_legacy_extension(python, tmp_path)}
    with service(python, "ft-legacy", "--import", "legacy_ext", env=env) as (process, ready):
        assert ready == "ready gil=1"  # the import re-enabled the GIL
        window = wait_for_window("ft-legacy", process.pid, serial_window, "four busy threads on one core, judged")
    assert window.cohort.identity.free_threaded_build is True  # the build is free-threaded; the GIL is back
    assert window.cohort.serialised_ratio == 1.0
    assert_shipped_alert_fires_on(window.cohort, tmp_path)


def assert_shipped_alert_fires_on(cohort: Cohort, tmp_path: Path) -> None:
    """promtool runs the shipped rule file on this measured figure, held for the alert's window
    and hold time: PyParallelServiceSerialOnFreeThreadedBuild fires with it."""
    from dashboards import promtool_inputs as pt
    from dashboards import services as mixin
    from dashboards.mixin_config import CONFIG, seconds

    promtool = require_binary("promtool")
    labels = {**pt.Target(CONFIG).labels, "group": cohort.group, "implementation": cohort.identity.implementation,
              "version": cohort.identity.version, "free_threaded_build": cohort.identity.build}
    rounds = (seconds(CONFIG.service_window) + seconds(CONFIG.service_serial_for)) // pt.ROUND + 2
    case = pt.case("the measured 3.13t service with a GIL-enabling extension",
                   [pt.series("pyparallel_service_serialised_ratio", labels, pt.const(cohort.serialised_ratio, rounds))],
                   [mixin.fires(CONFIG, "PyParallelServiceSerialOnFreeThreadedBuild", pt.when(rounds - 1), labels,
                                cohort.serialised_ratio)])
    rules = Path(__file__).resolve().parent.parent / "deploy/prometheus/rules/pyparallel-exporter-alerts.yml"
    document = pt.unit_test_file([str(rules)], [case], "1m")
    (tmp_path / "measured_test.yml").write_text(yaml.safe_dump(document))
    result = subprocess.run([promtool, "test", "rules", str(tmp_path / "measured_test.yml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_another_users_service_is_counted_as_unreadable_not_a_crash(tmp_path):
    """The sampler without capabilities (root's uid, bounding set emptied) cannot read the maps
    of a service running as nobody: it counts the permission errors and still measures its CPU."""
    setpriv = require_binary("setpriv")
    debian_python = shutil.which("python3", path="/usr/bin")
    if debian_python is None:
        pytest.fail("/usr/bin/python3 is needed to run a service as nobody")
    service_copy = tmp_path / "busy_service.py"
    shutil.copy(SERVICE, service_copy)
    tmp_path.chmod(0o755)
    nobody = (setpriv, "--reuid=65534", "--regid=65534", "--clear-groups")
    script = ("import json, time\nfrom exporter.config.loader import config_from_mapping\nfrom exporter.services.watcher import Sampler\n"
              "c = config_from_mapping({'services': {'groups': [{'name': 'theirs', 'cmdline': ['--tag theirs$'], "
              "'exe': ['python3.11', 'python3']}, {'name': 'by-comm', 'comm': ['python3']}]}}).services\n"
              "s = Sampler(c, own_pid=0); s.sample(2.0); time.sleep(1.5); snap = s.sample(2.0)\n"
              "print(json.dumps({'errors': snap.errors, 'states': snap.states, 'cohorts': [[x.group, "
              "x.identity.implementation, x.busy_threads] for x in snap.cohorts]}))\n")
    with service(debian_python, "theirs", prefix=nobody) as _:
        result = subprocess.run([setpriv, "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-c", script],
                                capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["errors"]["permission"] > 0
    assert report["states"]["theirs"] == "no_process"  # its exe could not be read: exe matchers cannot see it
    assert ["by-comm", "unknown", THREADS] in report["cohorts"]  # comm is world-readable; maps are not


def test_daemon_serves_the_groups_figures_on_metrics_the_api_and_the_status_page(tmp_path):
    with service(sys.executable, "served") as (process, _):
        config = {"interval": "1h", "probe": {"workloads": ["sleep"], "modes": ["sequential"], "unit_seconds": 0.1,
                                              "repeats": 1},
                  "services": {"interval": "1s", "groups": [{"name": "served", "cmdline": ["--tag served$"]},
                                                            {"name": "absent", "comm": ["no-such-program"]}]}}
        exporter = support.start_exporter(tmp_path, config)
        try:
            support.wait_ready(exporter)

            def judged() -> Optional[dict]:
                document = json.loads(support.http_get(exporter.url + "/api/v1/services")[1])
                groups = {g["group"]: g for g in document["groups"]}
                return document if groups.get("served", {}).get("state") not in (None, "idle") else None

            document = support.wait_for(judged, 60, "a judged window of the served group")
            metrics = support.http_get(exporter.url + "/metrics")[1]
            page = support.http_get(exporter.url + "/")[1]
            config_text = support.http_get(exporter.url + "/config")[1]
        finally:
            exporter.stop()
    groups = {g["group"]: g for g in document["groups"]}
    assert groups["absent"]["state"] == "no_process"
    assert groups["served"]["interpreters"][0]["free_threaded_build"] is False
    assert 'pyparallel_service_busy_threads{free_threaded_build="false",group="served"' in metrics
    assert 'pyparallel_service_state{group="absent",pyparallel_service_state="no_process"} 1.0' in metrics
    allowed = {"group", "implementation", "version", "free_threaded_build", "stat", "reason",
               "pyparallel_service_state"}
    for family in text_string_to_metric_families(metrics):
        if family.name.startswith("pyparallel_service_"):
            assert all(set(sample.labels) <= allowed for sample in family.samples), family.name
    assert "Watched services" in page and "served" in page
    assert yaml.safe_load(config_text.split("\n", 1)[1])["services"]["groups"][0]["name"] == "served"
