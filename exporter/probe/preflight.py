"""Before a one-shot probe: can each interpreter run the runner at all?

A probe takes a minute; a mistyped ``--python`` should cost none of it, and its reason
belongs on stderr with exit code 2, not inside a JSON document of failed steps. So the
command line asks here first: the path names an executable file, and that file runs as a
Python the runner supports (``MIN_PYTHON``). The daemon does not ask: an interpreter that
disappears while it runs is a failed step on its status page, where an operator looks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Optional

from exporter.model.results import Interpreter
from exporter.probe.child import MIN_PYTHON

ANSWER_SECONDS = 30.0  # a cold interpreter on a loaded host starts in well under a second
VERSION_PROGRAM = "import sys; print(*sys.version_info[:2])"


def why_not_runnable(interpreter: Interpreter, timeout: float = ANSWER_SECONDS) -> Optional[str]:
    """None when ``interpreter`` runs as a Python of at least ``MIN_PYTHON``; otherwise one
    line saying why not, naming the path."""
    path = interpreter.path
    found = path if os.sep in path else shutil.which(path)
    if found is None or not os.path.exists(found):
        return f"{path}: no such file" if os.sep in path else f"{path}: not found on PATH"
    if os.path.isdir(found):
        return f"{path}: is a directory, not a Python interpreter"
    if not os.access(found, os.X_OK):
        return f"{path}: is not executable"
    return version_problem(path, found, interpreter, timeout)


def version_problem(path: str, found: str, interpreter: Interpreter, timeout: float) -> Optional[str]:
    """Run the file once, in ``/`` as the runner will, and read its version."""
    try:
        answer = subprocess.run([found, "-c", VERSION_PROGRAM], stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, errors="replace", timeout=timeout, cwd="/",
                                env=dict(os.environ, **interpreter.env))
    except subprocess.TimeoutExpired:
        return f"{path}: did not answer within {timeout:g}s when asked for its version"
    except OSError as exc:  # ENOEXEC: a text file, or a binary for another machine
        return f"{path}: cannot run: {exc.strerror or exc}"
    words = answer.stdout.split()
    if answer.returncode != 0 or len(words) != 2 or not all(w.isascii() and w.isdigit() for w in words):
        last = (answer.stderr.strip().splitlines() or [f"exit code {answer.returncode}"])[-1][:200]
        return f"{path}: does not run as Python ({last})"
    version = (int(words[0]), int(words[1]))
    if version < MIN_PYTHON:
        oldest = ".".join(map(str, MIN_PYTHON))
        return f"{path}: Python {version[0]}.{version[1]} is too old: the probe needs {oldest} or newer"
    return None
