"""Ctrl-C and SIGTERM from the first milliseconds of ``probe``, ``compare`` and ``serve`` (issue 17).

Importing the command line takes a few hundred milliseconds; a signal in that time gave a
``KeyboardInterrupt`` traceback (exit -2) or a silent death (exit -15). The handlers are now
installed by the console script's entry point before any of those imports (in ``serve``, again
after it restarts itself without glibc's per-thread caches).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import support

pytestmark = pytest.mark.integration

ENTRY_POINTS = {"console script": [str(Path(sys.executable).parent / "parallelism-exporter")],
                "python -m exporter": [sys.executable, "-m", "exporter"]}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("command", [["probe", "--workload", "sleep"], ["compare", "a.json", "b.json"],
                                     ["serve", "--web.listen-address=127.0.0.1:0"]])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_command_line_is_still_importing_is_one_line_and_128_plus_it(
        tmp_path: Path, entry: str, command: list[str], sig: signal.Signals) -> None:
    # A stand-in for rich that blocks inside its import, so the signal lands exactly where the
    # command line's heavy modules are still loading (rich is the first of them).
    fake = tmp_path / "slow" / "rich"
    fake.mkdir(parents=True)
    importing = tmp_path / "importing"
    (fake / "__init__.py").write_text(f"open({str(importing)!r}, 'w').close()\nimport time\ntime.sleep(60)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "slow"), str(support.REPO)]))
    child = subprocess.Popen([*ENTRY_POINTS[entry], *command], env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        support.wait_for(importing.exists, 30, "the command line's imports to begin", interval=0.01)
        child.send_signal(sig)
        _, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
    assert (child.returncode, stderr) == (128 + sig, f"parallelism-exporter: interrupted by {sig.name}\n")
