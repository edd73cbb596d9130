"""A round's bookkeeping without a real probe: the lane must survive what a probe raises."""

from __future__ import annotations

import pytest

from exporter.config.loader import config_from_mapping
from exporter.model.results import ImportCheck, Interpreter, ProbeSpec, StepResult, WorkloadReport
from exporter.probe import run
from exporter.serve.daemon import Daemon


def test_an_import_check_whose_runner_cannot_start_for_any_reason_fails_that_check_only(monkeypatch):
    def refuse(*args, **kwargs):
        raise ValueError("embedded null byte")  # what subprocess raises for some paths: not an OSError

    monkeypatch.setattr(run, "RunnerProcess", refuse)
    check = run.check_import(Interpreter("ft", "/opt/python3.13t"), "json", 5.0)
    assert check == ImportCheck("ft", "json", None, "cannot start /opt/python3.13t: embedded null byte")


@pytest.fixture
def daemon(monkeypatch) -> Daemon:
    config = config_from_mapping({"import_check": {"modules": ["json"]},
                                  "probe": {"workloads": ["sleep"], "modes": ["threads"], "workers": [2]}})

    def free_threaded_report(interpreter: Interpreter, spec: ProbeSpec, earlier: object = None) -> WorkloadReport:
        from exporter.model.results import Identity

        identity = Identity("3.13.5", "cpython", interpreter.path, True, False, ("forkserver",), None)
        return WorkloadReport(interpreter, spec, identity, steps=[StepResult(spec.workload, "threads", 2,
                                                                             reason="error", message="boom")])

    monkeypatch.setattr(run, "run_workload", free_threaded_report)
    return Daemon(config, None)


def test_a_round_whose_import_check_raises_still_ends_and_sets_ready(daemon, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the import check")

    monkeypatch.setattr(run, "check_import", broken)
    daemon.run_round()
    assert daemon.ready.is_set(), "/-/ready must not wait forever for a round that ended with an error"
    assert daemon.round_idle.is_set() and daemon.round_started_at is None
    assert any(record.exc_info for record in caplog.records)


def test_a_round_with_a_failing_import_check_publishes_the_rest(daemon, monkeypatch):
    monkeypatch.setattr(run, "RunnerProcess", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad path")))
    daemon.run_round()
    assert daemon.ready.is_set()
    (check,) = daemon.snapshot().import_checks.values()
    assert check.gil_enabled is None and "bad path" in check.error
    assert daemon.snapshot().reports
