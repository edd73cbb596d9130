"""``--history.file`` under the input rule (issue 17): three files used to keep ``serve`` from
ever answering — a deeply nested one (RecursionError, exit 1), /dev/full (an endless read) and
a FIFO (a blocking open). Each is now a logged warning and a daemon that starts empty."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from pathlib import Path

import pytest

from exporter.config.settings import Config
from exporter.pages.history import History
from exporter.model.results import Interpreter

CONFIG = Config(interpreters=(Interpreter("default", "/usr/bin/python3"),))


def start_daemon(path: Path, caplog: pytest.LogCaptureFixture) -> tuple[object, str]:
    """A Daemon built on ``path`` within 10 s (its web server is not started), and the warning it logged."""
    from exporter.serve.daemon import Daemon

    built: list[object] = []
    thread = threading.Thread(target=lambda: built.append(Daemon(CONFIG, None, 100, str(path))), daemon=True)
    with caplog.at_level(logging.WARNING, logger="exporter.serve.daemon"):
        thread.start()
        thread.join(10)
    assert not thread.is_alive(), "the daemon never got past reading its history file"
    assert built, "the daemon could not be built"
    warnings = [f"{r.getMessage()} {getattr(r, 'kv', {})}" for r in caplog.records if r.levelno == logging.WARNING]
    return built[0], " ".join(warnings)


def test_a_deeply_nested_history_file_is_a_warning_not_a_recursion_error(tmp_path, caplog):
    path = tmp_path / "history.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    daemon, warning = start_daemon(path, caplog)
    assert daemon.history.series() == {}
    assert "history file not restored" in warning and "nested more than 32 levels deep" in warning


def test_a_fifo_as_history_file_is_a_warning_not_a_daemon_that_never_listens(tmp_path, caplog):
    fifo = tmp_path / "history.fifo"
    os.mkfifo(fifo)
    daemon, warning = start_daemon(fifo, caplog)
    assert daemon.history.series() == {}
    assert "not a regular file (a FIFO)" in warning


def test_saving_never_replaces_a_device_or_fifo_given_as_history_file(tmp_path):
    """Renaming the saved file over --history.file /dev/full would have removed the device."""
    fifo, device = tmp_path / "history.fifo", tmp_path / "full"
    os.mkfifo(fifo)
    if os.geteuid() == 0:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # /dev/full's numbers, in tmp_path
    for path in (fifo, device) if device.exists() else (fifo,):
        kind = os.lstat(path).st_mode
        with pytest.raises(OSError, match="is not a regular file"):
            History().save(str(path))
        assert os.lstat(path).st_mode == kind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".history-")]  # no temporary left


def test_history_numbers_must_be_numbers_not_strings_that_float_would_read(tmp_path):
    step = {"interpreter": "default", "workload": "pure_python", "mode": "threads", "workers": 2}
    for points in ([["1700000000", 1.5]], [[1.7e9, "\u0661.\u0665"]], [[1.7e9, True]]):
        path = tmp_path / "history.json"
        path.write_text(json.dumps({"version": 1, "steps": [dict(step, points=points)], "failures": []}))
        with pytest.raises(ValueError, match="damaged history file: ValueError: expected a number"):
            History().restore(str(path))


def test_restored_failures_are_clipped_as_recorded_ones_are(tmp_path):
    failure = {"timestamp": 1.7e9, "interpreter": "default", "workload": "pure_python", "mode": "threads",
               "workers": 2, "reason": "error", "message": "m" * 10_000, "log": ["l" * 5000] * 500}
    path = tmp_path / "history.json"
    path.write_text(json.dumps({"version": 1, "steps": [], "failures": [failure]}))
    history = History()
    history.restore(str(path))
    (restored,) = history.failures()
    assert len(restored.message) == 4000 and len(restored.log) == 20 and {len(line) for line in restored.log} == {1000}
