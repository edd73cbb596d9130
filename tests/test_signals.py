"""Ctrl-C and SIGTERM from the first milliseconds of ``probe``, ``compare`` and ``serve`` (issues 17, 27).

Importing the command line takes a few hundred milliseconds; a signal in that time gave a
``KeyboardInterrupt`` traceback (exit -2) or a silent death (exit -15). The console script's
entry module now blocks both signals from its first statement until ``main`` handles them, and
``serve`` keeps them blocked across its restart without glibc's per-thread caches.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import support
from benchmarks import signals as signals_matrix

pytestmark = pytest.mark.integration

ENTRY_POINTS = {"console script": [str(Path(sys.executable).parent / "parallelism-exporter")],
                "python -m exporter": [sys.executable, "-m", "exporter"]}


# A stand-in for site's last step, run before any code of ours: it holds the first import of
# one module (PYPARALLEL_TEST_HOLD), or the start-up of serve's restarted process, for a
# second, and says when it does.
HOLDING_SITECUSTOMIZE = """
import os, sys, time
flag, hold = os.environ["PYPARALLEL_TEST_FLAG"], os.environ["PYPARALLEL_TEST_HOLD"]
def held():
    open(flag, "w").close()
    time.sleep(1)
if hold == "restart":
    if "PYPARALLEL_USER_GLIBC_TUNABLES" in os.environ:  # serve's restarted process, starting
        held()
else:
    class Hold:
        def find_spec(self, name, path=None, target=None):
            if name == hold and not os.path.exists(flag):
                held()
            return None  # then the real import goes on
    sys.meta_path.insert(0, Hold())
"""
COMMANDS = signals_matrix.COMMANDS
# exporter.serve: the entry module's own imports, before main(); rich: the command line's
# heavy imports (rich is the first of them); restart: serve's restarted process.
HOLDS = [(hold, command) for hold in ("exporter.serve", "rich") for command in COMMANDS] + [("restart", "serve")]


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize(("hold", "command"), HOLDS)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_before_the_handlers_waits_for_them(tmp_path: Path, entry: str, hold: str, command: str,
                                                      sig: signal.Signals) -> None:
    """From the entry module's first statement SIGINT and SIGTERM are blocked until the command
    line is loaded and main() handles them, and serve's restart keeps them blocked across
    execve: a signal during the imports, or while the restarted serve starts, waits instead of
    killing the process silently (-15) or raising where nothing catches it."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(HOLDING_SITECUSTOMIZE)
    flag = tmp_path / "holding"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(support.REPO)]),
               PYPARALLEL_TEST_HOLD=hold, PYPARALLEL_TEST_FLAG=str(flag))
    env.pop("GLIBC_TUNABLES", None)  # a user's tcache setting would skip the restart
    child = subprocess.Popen([*ENTRY_POINTS[entry], *COMMANDS[command]], env=env, cwd=tmp_path,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        support.wait_for(flag.exists, 30, f"the {hold} to be held", interval=0.005)
        child.send_signal(sig)
        _, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
    assert (child.returncode, stderr) == (128 + sig, f"parallelism-exporter: interrupted by {sig.name}\n")


@pytest.mark.parametrize("command", sorted(signals_matrix.COMMANDS))
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_sample_of_the_signal_matrix_is_clean(tmp_path: Path, command: str, sig: signal.Signals) -> None:
    """One try of benchmarks/signals.py's cell at 100 ms (the benchmark runs all 600; in the
    first milliseconds the interpreter has not reached our code yet, which no test can hold)."""
    outcome, _ = signals_matrix.one_try(command, sig, 0.1, str(tmp_path))
    assert outcome == "clean"
