"""Kills the probes of an exporter that died, however it died: a small process of its own.

The exporter starts it once, with the write end of a pipe (its stdin) that only the exporter
holds, and tells it of every probe: ``watch <token> <cgroup>...`` when the probe starts or
gains a cgroup, ``forget <token>`` when it is closed. When the pipe ends (the exporter
exited: returned, crashed or was sent SIGKILL, which nothing in the exporter can catch), the
sentinel kills every probe still watched, its cgroups and its token swept, removes the cgroups
and exits. A workload's processes that left their session (``setsid``, a double fork) are
re-parented to init, out of reach of the runner's ``PR_SET_PDEATHSIG``: this is what ends them.

It runs in a session of its own (a Ctrl-C at the terminal is not for it), with the exporter's
environment (not a probe's token), and imports only ``exporter.probe.containment`` and what
that needs.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Optional

MAX_LINE_BYTES = 64 * 1024  # a watch line: a token and a few cgroup paths

_lock = threading.Lock()
_pipe: Optional[IO[bytes]] = None
_started_in: Optional[int] = None  # the pid that started it: a forked child must not write to it


def watch(token: str, cgroups: list[Path]) -> None:
    """Have the sentinel kill this probe if the exporter dies before ``forget``."""
    _send(" ".join(["watch", token, *(str(c) for c in cgroups)]))


def forget(token: str) -> None:
    _send(f"forget {token}")


def _send(line: str) -> None:
    global _pipe, _started_in
    if "\n" in line:
        return
    with _lock:
        if _started_in != os.getpid():
            _pipe, _started_in = _start(), os.getpid()
        if _pipe is None:
            return
        try:
            _pipe.write(line.encode() + b"\n")
            _pipe.flush()
        except OSError:  # the sentinel died: the next start of a probe cleans up after us
            _pipe = None


def _start() -> Optional[IO[bytes]]:
    from exporter.logs import JSONFormatter, log_kv
    from exporter.probe.child import PACKAGE_PARENT

    json_logs = any(isinstance(h.formatter, JSONFormatter) for h in logging.getLogger().handlers)
    program = (f"import sys; sys.path.insert(0, {PACKAGE_PARENT!r}); from exporter.probe.sentinel import main; "
               f"main({'json' if json_logs else 'logfmt'!r})")
    try:
        process = subprocess.Popen([sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   cwd="/", start_new_session=True)
    except OSError as exc:
        log_kv(logging.getLogger(__name__), logging.WARNING, "cannot start the probe sentinel: probes of an "
               "exporter killed with SIGKILL live on until its next probe", error=str(exc))
        return None
    return process.stdin


def main(log_format: str = "logfmt") -> None:
    """The sentinel's own process: read until the pipe ends, then kill what is still watched."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from exporter.logs import log_kv, setup_logging
    from exporter.probe import containment

    watched: dict[str, list[Path]] = {}
    for raw in iter(lambda: sys.stdin.buffer.readline(MAX_LINE_BYTES), b""):
        words = raw.decode("utf-8", "replace").split()
        if len(words) >= 2 and words[0] == "watch":
            watched[words[1]] = [Path(c) for c in words[2:]]
        elif len(words) >= 2 and words[0] == "forget":
            watched.pop(words[1], None)
    setup_logging("info", log_format)
    for token, cgroups in watched.items():
        kind = "cgroup2" if cgroups and (cgroups[0] / "cgroup.kill").exists() else "cgroup1"
        killed = containment.kill_probe(token, cgroups, kind, sweep=True)
        for cgroup in cgroups:
            containment.remove_cgroup(cgroup)
        if killed:  # a probe stopped while it was being set up had nothing to kill yet
            log_kv(logging.getLogger(__name__), logging.WARNING, "killed the processes of a probe whose exporter died",
                   processes_killed=killed, cgroups=",".join(c.name for c in cgroups))
