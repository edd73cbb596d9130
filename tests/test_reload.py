"""Daemon.reload: never moves the schedule, and any failure keeps the old config, reported.

These drive a real Daemon whose next round is an hour out, as after its first round; its
probe lane is not started, so no probe runs during the test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from prometheus_client import CollectorRegistry

from exporter.export.collector import ParallelismCollector
from exporter.config.loader import load_config
from exporter.serve.daemon import Daemon

BASE = {"interval": "1h", "jitter": "0s", "probe": {"workloads": ["sleep"], "modes": ["threads"],
                                                    "workers": [2], "unit_seconds": 0.1}}


def write(path: Path, config: dict) -> None:
    path.write_text(yaml.safe_dump(config))


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    path = tmp_path / "config.yml"
    write(path, BASE)
    daemon = Daemon(load_config(str(path)), str(path))
    daemon.clock.due = time.time() + 3600
    yield daemon


def reload_ok(daemon: Daemon) -> float | None:
    """What the daemon exports as pyparallel_config_last_reload_successful."""
    registry = CollectorRegistry()
    registry.register(ParallelismCollector(daemon.snapshot))
    return registry.get_sample_value("pyparallel_config_last_reload_successful")


def test_reload_with_the_same_schedule_keeps_the_next_run_time(daemon: Daemon) -> None:
    before = daemon.clock.next_round_at
    for _ in range(5):  # a reload storm must not push the round out
        assert daemon.reload() == (True, "config reloaded")
    assert daemon.clock.next_round_at == before


def test_reload_with_a_longer_interval_keeps_the_next_run_and_spaces_later_ones(
        daemon: Daemon, tmp_path: Path) -> None:
    before = daemon.clock.next_round_at
    write(tmp_path / "config.yml", dict(BASE, interval="2h"))
    assert daemon.reload()[0]
    assert daemon.clock.next_round_at == before
    daemon.clock.round_started(before)
    assert daemon.clock.next_round_at == before + 7200
    assert daemon.snapshot().interval_seconds == 7200


def test_reload_with_a_shorter_interval_brings_the_next_run_forward_from_the_last_start(
        daemon: Daemon, tmp_path: Path) -> None:
    started = time.time() - 600
    daemon.clock.last_start = started
    write(tmp_path / "config.yml", dict(BASE, interval="30m"))
    assert daemon.reload()[0]
    assert abs(daemon.clock.next_round_at - (started + 1800)) < 1


def test_shorter_interval_whose_time_has_passed_runs_now_not_in_the_past(
        daemon: Daemon, tmp_path: Path) -> None:
    daemon.clock.last_start = time.time() - 3000  # a round started 50 minutes ago, still running
    write(tmp_path / "config.yml", dict(BASE, interval="5m"))
    before_reload = time.time()
    assert daemon.reload()[0]
    assert before_reload <= daemon.clock.next_round_at <= time.time() + 1


@pytest.mark.parametrize("content", [
    b"interval: 1h\nprobe:\n  workloads: [sle\xffep]\n",  # not UTF-8
    b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",  # nesting deep enough for a RecursionError
    bytes(range(256)) * 4,  # binary garbage
    b"probe:\n  repeats: 0\n",  # a plain validation error
])
def test_any_reload_failure_keeps_the_old_config_and_schedule_and_reports_0(
        daemon: Daemon, tmp_path: Path, content: bytes) -> None:
    old, before = daemon.config, daemon.clock.next_round_at
    (tmp_path / "config.yml").write_bytes(content)
    ok, message = daemon.reload()
    assert not ok
    assert message.startswith(("error parsing config file:", "error reloading config file:"))
    assert "\n" not in message
    assert daemon.config is old
    assert daemon.clock.next_round_at == before
    assert reload_ok(daemon) == 0


def test_reload_of_a_missing_file_fails_and_a_good_one_recovers(daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.unlink()
    assert not daemon.reload()[0]
    assert reload_ok(daemon) == 0
    write(path, BASE)
    assert daemon.reload()[0]
    assert reload_ok(daemon) == 1


def failed_report(daemon: Daemon, workload: str):
    """A report of this daemon's interpreter whose threads step failed."""
    from exporter.model.results import Interpreter, ProbeSpec, StepResult, WorkloadReport

    interpreter = daemon.config.interpreter_list()[0]
    return WorkloadReport(Interpreter(interpreter.name, interpreter.path), ProbeSpec(workload, ("threads",), (2,)),
                          steps=[StepResult(workload, "threads", 2, reason="error", message="boom")])


def publish_two_workloads_then_remove_one(daemon: Daemon):
    """Reload to probe sleep and pure_python, publish both, then reload without pure_python;
    the pure_python report shown before the second reload."""
    path = Path(daemon.config_path)
    write(path, {**BASE, "probe": {**BASE["probe"], "workloads": ["sleep", "pure_python"]}})
    assert daemon.reload()[0]
    daemon._publish([failed_report(daemon, "sleep"), failed_report(daemon, "pure_python")])
    shown = daemon.snapshot().reports[(daemon.config.interpreter_list()[0].name, "pure_python")]
    write(path, BASE)
    assert daemon.reload()[0]
    return shown


def test_a_round_finishing_after_a_reload_does_not_bring_back_what_the_reload_removed(daemon, tmp_path):
    """The running round started under the old config; its report for a workload the reload
    removed must not republish the series the reload pruned (bounded cardinality)."""
    publish_two_workloads_then_remove_one(daemon)  # pure_python removed while its report was on its way
    assert {w for _, w in daemon.snapshot().reports} == {"sleep"}
    daemon._publish([failed_report(daemon, "pure_python")])  # the round that started before the reload ends
    assert {w for _, w in daemon.snapshot().reports} == {"sleep"}
    assert all(key[1] != "pure_python" for key, _ in daemon.snapshot().failures)


def test_a_reload_that_fails_on_a_bug_logs_the_traceback(daemon, monkeypatch, caplog):
    def broken(path):
        raise KeyError("a bug, not a bad file")

    monkeypatch.setattr("exporter.serve.daemon.load_config", broken)
    ok, message = daemon.reload()
    assert not ok and "KeyError" in message
    assert any(record.exc_info for record in caplog.records), "a programming error must come with its traceback"


def test_a_retry_finishing_after_a_reload_does_not_bring_back_what_the_reload_removed(daemon, tmp_path):
    """As a round's report, a retry of an inconclusive step that lands after a reload removed
    its workload must not republish the series the reload pruned."""
    old = publish_two_workloads_then_remove_one(daemon)  # pure_python removed while its retry was running
    daemon._publish_retry(old, failed_report(daemon, "pure_python"), [("threads", 2)])
    assert {w for _, w in daemon.snapshot().reports} == {"sleep"}
    assert all(key[0].workload != "pure_python" for key in daemon.snapshot().failures)
    assert all(key.workload != "pure_python" for key in daemon.snapshot().last_success)
