"""The runner child process: started isolated, read with bounds, killed with its whole tree.

Everything about the runner as a *process* lives here; ``exporter.probe.run`` only talks to it.

- **Isolation.** The runner is started with ``python -c``, which would put the working
  directory first on ``sys.path``: the bootstrap drops that entry before importing anything,
  ``PYTHONSAFEPATH=1`` does the same for the interpreters multiprocessing starts (3.11+), and
  the runner runs in ``/``. Workload directories come only from ``probe.workload_path``.
- **Dies with us.** The runner asks the kernel for SIGKILL when its parent dies
  (``PR_SET_PDEATHSIG``, see ``exporter.runner.loop.die_with_parent``), and so does every worker
  process, so even a SIGKILLed exporter leaves nothing running.
- **Contained.** Each runner gets its own session and a ``Containment`` (a cgroup, or an
  environment token), and ``kill()`` takes every process in it, re-parented ones included.
- **Memory-limited.** A ``MemoryLimit`` caps the whole tree (``probe.memory_limit``); while
  the probe waits for events it checks, every ``MEMORY_POLL_SECONDS``, whether the kernel
  killed a process at the limit, and raises ``MemoryLimitHit`` — the ``memory`` reason.
- **Bounded output.** One thread reads stdout and stderr as bytes: event lines are capped at
  ``MAX_EVENT_BYTES``, stderr keeps a ring of the last ``STDERR_LINES`` lines of at most
  ``STDERR_LINE_CHARS`` characters; invalid UTF-8 is replaced, never fatal.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import selectors
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Optional, Union

from exporter.config import inputs
from exporter.probe.containment import Containment
from exporter.probe.memorylimit import MemoryLimit
from exporter.model.results import Interpreter
from exporter.logs import log_kv

log = logging.getLogger(__name__)

PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])  # the folder that holds exporter/
MAX_EVENT_BYTES = 1 << 20  # a window event of 256 workers is ~20 KB
EVENT_QUEUE_SIZE = 16
STDERR_LINES = 20
STDERR_LINE_CHARS = 500
_READ_BYTES = 65536
_NOISE_WARNINGS = 5  # non-event lines on stdout logged per runner
MEMORY_POLL_SECONDS = 0.25  # a probe that hits its memory limit fails well within a second
MIN_PYTHON = (3, 10)  # the oldest interpreter the runner runs in


def bootstrap(parent_pid: int) -> str:
    """The ``-c`` program that starts the runner.

    ``python -c`` puts ``''`` (the working directory) first on ``sys.path``; it is removed
    before the first import, so a ``json.py`` there cannot run inside the probe. Appending
    (not prepending) the package's parent keeps the child's own stdlib and site-packages
    first, so a 3.13t child never picks up the parent's compiled modules.
    """
    return (
        "import sys\n"
        "if sys.path and sys.path[0] == '':\n"
        "    del sys.path[0]\n"
        f"if sys.version_info < {MIN_PYTHON!r}:\n"
        f"    sys.exit('python >= {'.'.join(map(str, MIN_PYTHON))} is required, this is ' + sys.version.split()[0])\n"
        f"sys.path.append({PACKAGE_PARENT!r})\n"
        "from exporter.runner import loop\n"
        f"loop.die_with_parent({parent_pid})\n"
        "loop.main()\n"
    )


class ProtocolError(Exception):
    """The runner said something that is not an event of the protocol."""


Item = Union[dict, ProtocolError, None]


class OutputCapture:
    """One thread reading the runner's stdout (events) and stderr (a ring of lines)."""

    def __init__(self, stdout: IO[bytes], stderr: IO[bytes]) -> None:
        # Bounded: a runner that floods valid events waits on its pipe, not in our memory.
        self.events: "queue.Queue[Item]" = queue.Queue(maxsize=EVENT_QUEUE_SIZE)
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        # The thread owns the pipes and closes them when it ends: closed under it, their
        # numbers could be reused by another file while it still reads them.
        self._stdout, self._stderr = stdout, stderr
        self._out_fd, self._err_fd = stdout.fileno(), stderr.fileno()
        self._pending = {self._out_fd: bytearray(), self._err_fd: bytearray()}
        self._overlong = {self._out_fd: False, self._err_fd: False}
        self._noise = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runner-output", daemon=True)
        self._thread.start()

    def finish(self, wait: float = 1.0) -> None:
        """Read to the end of both pipes for up to ``wait`` seconds, then stop reading.

        Once every process of the probe is dead the pipes end at once; a process that
        escaped and still holds them cannot keep us waiting longer than ``wait``.
        """
        self._thread.join(wait)
        self._stop.set()
        self._thread.join(1.0)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        open_fds, stdout_ended = 2, False
        try:
            for fd in (self._out_fd, self._err_fd):
                selector.register(fd, selectors.EVENT_READ)
            while open_fds and not self._stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    fd = key.fd
                    try:
                        data = os.read(fd, _READ_BYTES)
                    except OSError:
                        data = b""
                    if data:
                        self._feed(fd, data)
                        continue
                    selector.unregister(fd)
                    open_fds -= 1
                    self._flush(fd)
                    if fd == self._out_fd:
                        stdout_ended = True
                        self._put(None)
        finally:
            selector.close()
            for stream in (self._stdout, self._stderr):
                try:
                    stream.close()
                except OSError:
                    pass
            if not stdout_ended:
                self._put(None)  # nobody waits on an event that can no longer come

    def _put(self, item: Item) -> None:
        while not self._stop.is_set():
            try:
                self.events.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _feed(self, fd: int, data: bytes) -> None:
        pending = self._pending[fd]
        while data:
            newline = data.find(b"\n")
            chunk, data = (data, b"") if newline < 0 else (data[:newline], data[newline + 1:])
            room = self._limit(fd) - len(pending)
            if len(chunk) > room:
                self._overlong[fd] = True
                chunk = chunk[:max(room, 0)]
            pending += chunk
            if newline >= 0:
                self._line(fd, bytes(pending), self._overlong[fd])
                pending.clear()
                self._overlong[fd] = False

    def _flush(self, fd: int) -> None:
        if self._pending[fd]:
            self._line(fd, bytes(self._pending[fd]), self._overlong[fd])
            self._pending[fd].clear()

    def _limit(self, fd: int) -> int:
        # stderr lines are cut to STDERR_LINE_CHARS anyway; 4 bytes per character at most.
        return MAX_EVENT_BYTES if fd == self._out_fd else 4 * STDERR_LINE_CHARS

    def _line(self, fd: int, raw: bytes, overlong: bool) -> None:
        text = raw.decode("utf-8", errors="replace")
        if fd == self._err_fd:
            line = text.rstrip()
            if overlong or len(line) > STDERR_LINE_CHARS:
                line = line[:STDERR_LINE_CHARS] + " [truncated]"
            self.stderr_tail.append(line)
            return
        if overlong:
            self._put(ProtocolError(f"runner wrote an output line longer than {MAX_EVENT_BYTES} bytes"))
            return
        try:
            event = json.loads(text)
        except (ValueError, RecursionError):
            # Output before the runner took over stdout (e.g. a sitecustomize that prints):
            # not an event, not fatal.
            if self._noise < _NOISE_WARNINGS:
                log_kv(log, logging.WARNING, "runner wrote a line that is not an event", line=text[:200])
            self._noise += 1
            return
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            self._put(ProtocolError(f"runner sent {_short(text)}, not an event object with an 'event' key"))
            return
        # A workload's message may hold a lone surrogate ("\\ud800", a JSON escape here): kept
        # as U+FFFD, it can be printed, stored in the history and served.
        self._put(inputs.replace_lone_surrogates(event))


def _short(text: str, limit: int = 80) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"


# Live runners, so that shutdown (and a signal in the one-shot command) can kill them all.
_live_runners: set["RunnerProcess"] = set()
_live_lock = threading.Lock()


def kill_all_runners() -> None:
    """Kill every runner tree still alive (used on shutdown)."""
    with _live_lock:
        runners = list(_live_runners)
    for runner in runners:
        runner.kill()


class RunnerProcess:
    """A runner child in its own session and containment, spoken to in JSON lines."""

    def __init__(self, interpreter: Interpreter, memory_limit_bytes: Optional[int] = None) -> None:
        self.containment = Containment()
        self.memory = MemoryLimit(None, self.containment)
        process: Optional[subprocess.Popen[bytes]] = None
        try:  # a signal (Ctrl-C) may stop us anywhere here: the boundary is released with what it holds
            self.memory = MemoryLimit(memory_limit_bytes, self.containment)
            process = self._start(interpreter)
            # Before the request is sent the runner only waits on stdin, so nothing it starts
            # can be forked outside the cgroup.
            self.containment.adopt(process.pid)
            self.memory.adopt(process.pid)
        except BaseException:
            if process is not None:
                process.kill()
                process.wait()
            self.containment.close()
            self.memory.close()
            raise
        self.process = process
        assert self.process.stdout is not None and self.process.stderr is not None
        self.output = OutputCapture(self.process.stdout, self.process.stderr)
        self._closed = False
        self._lock = threading.RLock()
        with _live_lock:
            _live_runners.add(self)

    def _start(self, interpreter: Interpreter) -> subprocess.Popen[bytes]:
        env = dict(os.environ, **interpreter.env, **self.containment.environment())
        # -P for every interpreter multiprocessing starts from the runner (3.10 ignores it).
        env.setdefault("PYTHONSAFEPATH", "1")
        # The runner starts in "/": a relative path (./venv/bin/python) means ours, not its.
        path = os.path.abspath(interpreter.path) if os.sep in interpreter.path else interpreter.path
        return subprocess.Popen([path, "-c", bootstrap(os.getpid())], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, cwd="/", start_new_session=True)

    @property
    def stderr_tail(self) -> list[str]:
        return list(self.output.stderr_tail)

    def send(self, message: dict) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def next_event(self, timeout: float) -> Optional[dict]:
        """The next event, None at end of output; raises queue.Empty after ``timeout``,
        ProtocolError for output that is not an event and MemoryLimitHit once the kernel
        killed a process of the probe at its memory limit."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            self.memory.check()
            try:
                item = self.output.events.get(timeout=max(min(MEMORY_POLL_SECONDS, deadline - time.monotonic()), 0.0))
                break
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise
        # The kill is counted before its consequence (a worker's death, the end of output)
        # reaches us, so the reason is memory, not crash.
        self.memory.check()
        if isinstance(item, ProtocolError):
            raise item
        return self._memory_error_as_memory(item)

    def _memory_error_as_memory(self, event: Optional[dict]) -> Optional[dict]:
        """A workload's MemoryError (an allocation over RLIMIT_AS, or one no memory could
        satisfy) is the ``memory`` reason, not a bug in the workload."""
        if (event is not None and event.get("event") in ("step_failed", "failed") and event.get("reason") == "error"
                and str(event.get("message", "")).startswith("MemoryError")):
            return dict(event, reason="memory", message=f"{event['message']} ({self.memory.describe()})")
        return event

    def wait(self, timeout: float) -> Optional[int]:
        """The runner's exit code, or None if it is still running after ``timeout``."""
        try:
            return self.process.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return None

    def leftovers(self) -> list[int]:
        """Processes of this probe still alive besides the runner itself."""
        return [pid for pid in self.containment.members() if pid != self.process.pid]

    def kill(self) -> None:
        """Kill the runner and every process of its probe, wherever they were re-parented."""
        with self._lock:  # shutdown may kill a runner the probe lane is killing too
            self._kill()

    def _kill(self) -> None:
        if self.process.returncode is None:  # once reaped, the pid may belong to someone else
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.process.kill()
            except OSError:
                pass
        self.containment.kill()
        self._close()

    def close(self) -> None:
        """Reap the runner, stop reading, release the containment (idempotent)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        if self.wait(5) is None:
            self.process.kill()
            self.process.wait()
        self.containment.close()
        self.memory.close()
        self.output.finish()  # its thread closes stdout and stderr
        try:
            if self.process.stdin:
                self.process.stdin.close()
        except OSError:
            pass  # a dead child's stdin can fail to flush
        self._closed = True
        with _live_lock:
            _live_runners.discard(self)

    def exit_description(self) -> str:
        code = self.process.returncode
        if code is not None and code < 0:
            try:
                what = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                what = f"killed by signal {-code}"
        else:
            what = f"exited with code {code}"
        tail = next((line for line in reversed(self.stderr_tail) if line.strip()), "")
        return f"interpreter {what}" + (f": {tail}" if tail else "")
