"""Daemon.reload: never moves the schedule, and any failure keeps the old config, reported.

These drive a real Daemon with its real APScheduler; the probe job is added an hour out, as
start() would after its first round, so no probe runs during the test.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from prometheus_client import CollectorRegistry

from exporter.collector import ParallelismCollector
from exporter.config import load_config
from exporter.daemon import JOB_ID, Daemon

BASE = {"interval": "1h", "jitter": "0s", "probe": {"workloads": ["sleep"], "modes": ["threads"],
                                                    "workers": [2], "unit_seconds": 0.1}}


def write(path: Path, config: dict) -> None:
    path.write_text(yaml.safe_dump(config))


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    path = tmp_path / "config.yml"
    write(path, BASE)
    daemon = Daemon(load_config(str(path)), str(path))
    daemon.scheduler.start()
    first = datetime.now(timezone.utc) + timedelta(hours=1)
    daemon.scheduler.add_job(daemon.run_round, daemon.trigger(daemon.interval_in_force), id=JOB_ID,
                             next_run_time=first)
    yield daemon
    daemon.scheduler.shutdown(wait=False)


def reload_ok(daemon: Daemon) -> float | None:
    """What the daemon exports as pyparallel_config_last_reload_successful."""
    registry = CollectorRegistry()
    registry.register(ParallelismCollector(daemon.snapshot))
    return registry.get_sample_value("pyparallel_config_last_reload_successful")


def test_reload_with_the_same_schedule_keeps_the_next_run_time(daemon: Daemon) -> None:
    before = daemon.next_run_time()
    for _ in range(5):  # a reload storm must not push the round out
        assert daemon.reload() == (True, "config reloaded")
    assert daemon.next_run_time() == before


def test_reload_with_a_longer_interval_keeps_the_next_run_and_spaces_later_ones(
        daemon: Daemon, tmp_path: Path) -> None:
    before = daemon.next_run_time()
    assert before is not None
    write(tmp_path / "config.yml", dict(BASE, interval="2h"))
    assert daemon.reload()[0]
    assert daemon.next_run_time() == before
    job = daemon.scheduler.get_job(JOB_ID)
    following = job.trigger.get_next_fire_time(before, before)
    assert following == before + timedelta(hours=2)
    assert daemon.snapshot().interval_seconds == 7200


def test_reload_with_a_shorter_interval_brings_the_next_run_forward_from_the_last_start(
        daemon: Daemon, tmp_path: Path) -> None:
    daemon.last_round_started = datetime.now(timezone.utc) - timedelta(minutes=10)
    write(tmp_path / "config.yml", dict(BASE, interval="30m"))
    assert daemon.reload()[0]
    due = daemon.next_run_time()
    assert due is not None
    expected = daemon.last_round_started + timedelta(minutes=30)
    assert abs((due - expected).total_seconds()) < 1


def test_shorter_interval_whose_time_has_passed_runs_now_not_in_the_past(
        daemon: Daemon, tmp_path: Path) -> None:
    daemon.last_round_started = datetime.now(timezone.utc) - timedelta(minutes=50)
    write(tmp_path / "config.yml", dict(BASE, interval="5m"))
    before_reload = datetime.now(timezone.utc)
    assert daemon.reload()[0]
    due = daemon.next_run_time()
    assert due is not None and before_reload <= due <= datetime.now(timezone.utc) + timedelta(seconds=1)


@pytest.mark.parametrize("content", [
    b"interval: 1h\nprobe:\n  workloads: [sle\xffep]\n",  # not UTF-8
    b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",  # nesting deep enough for a RecursionError
    bytes(range(256)) * 4,  # binary garbage
    b"probe:\n  repeats: 0\n",  # a plain validation error
])
def test_any_reload_failure_keeps_the_old_config_and_schedule_and_reports_0(
        daemon: Daemon, tmp_path: Path, content: bytes) -> None:
    old, before = daemon.config, daemon.next_run_time()
    (tmp_path / "config.yml").write_bytes(content)
    ok, message = daemon.reload()
    assert not ok
    assert message.startswith(("error parsing config file:", "error reloading config file:"))
    assert "\n" not in message
    assert daemon.config is old
    assert daemon.next_run_time() == before
    assert reload_ok(daemon) == 0


def test_reload_of_a_missing_file_fails_and_a_good_one_recovers(daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.unlink()
    assert not daemon.reload()[0]
    assert reload_ok(daemon) == 0
    write(path, BASE)
    assert daemon.reload()[0]
    assert reload_ok(daemon) == 1
