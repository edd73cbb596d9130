"""The last rounds of every step's speedup, and recent failures, bounded in memory.

As blackbox_exporter's result history (``--history.limit``): each step keeps its last
``limit`` points, and failures keep their own list of the last ``limit``, so a failure stays
visible with its debug log after later rounds succeed. Memory is bounded by the configured
steps times ``limit``; steps no longer configured are dropped on reload. With
``--history.file`` the history survives a restart, so the drop after restarting onto a new
interpreter shows next to the rounds before it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Optional

from exporter.config import inputs
from exporter.model.document import HistoryDocument, HistoryFailure, HistoryIdentity, HistorySeries
from exporter.model.results import StepKey, StepResult, WorkloadReport, identity_text
from exporter.stats.measurement import finite_number

DEFAULT_LIMIT = 100
MAX_LIMIT = 100_000
# The file is read at start-up, before the daemon listens: a cap keeps a wrong path
# (/dev/zero, a huge log) from holding it up. 100 steps of 100 points and 100 failures with
# their full logs take under 3 MB.
MAX_FILE_BYTES = 32 << 20
# Kept per failure whatever the runner wrote, so memory stays bounded by limit alone.
MAX_MESSAGE_CHARS, MAX_LOG_LINES, MAX_LOG_LINE_CHARS = 4000, 20, 1000


def add_history_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--history.limit", dest="history_limit", type=limit_flag, default=DEFAULT_LIMIT,
                       help=f"rounds of each step's speedup, and failures, the status page keeps (default {DEFAULT_LIMIT})")
    serve.add_argument("--history.file", dest="history_file", type=file_flag,
                       help="keep the history in this file across restarts (default: in memory only)")


def limit_flag(text: str) -> int:
    """``--history.limit``: argparse turns the error into a one-line usage error, exit 2."""
    value = inputs.ascii_int(text) or 0  # "+5" is 5, "-5" out of range
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {MAX_LIMIT}, got {text!r}")
    return value


def file_flag(text: str) -> str:
    """``--history.file``: its directory must exist and be writable now, not at the first round."""
    directory = os.path.dirname(os.path.abspath(text)) if text else ""
    if not text or not os.path.isdir(directory):
        raise argparse.ArgumentTypeError(f"directory of {text!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise argparse.ArgumentTypeError(f"directory {directory!r} is not writable")
    return text


# A round's outcome for one step, the status page's row states: a measured speedup, the
# idle-host estimate where the host was too busy for the wall clock, no figure that could
# tell (a busy host, an unsteady figure), a failure.
OK, ESTIMATED, BUSY, FAILED = "ok", "estimated", "busy", "failed"
OUTCOMES = (OK, ESTIMATED, BUSY, FAILED)


def outcome(success: bool, speedup: Optional[float], idle_speedup: Optional[float]) -> str:
    """What a step's round came to: the history's outcome and the status page's row state."""
    if not success:
        return FAILED
    if speedup is not None:
        return OK
    return ESTIMATED if idle_speedup is not None else BUSY


def step_point(step: StepResult) -> tuple[str, Optional[float]]:
    """A step's round as the history keeps it: its outcome and its figure — the measured
    speedup, or the idle-host estimate where only that could tell; None otherwise."""
    s = step.summary
    measured = s.speedup if s is not None and s.shown else None
    idle = s.accounting.idle_speedup if s is not None and s.accounting is not None and not s.unsteady else None
    said = outcome(step.success and s is not None, measured, idle)
    return said, measured if said == OK else idle if said == ESTIMATED else None


@dataclass(frozen=True)
class Point:
    """One round's figure of one step: the measured speedup (``ok``), the idle-host estimate
    (``estimated``), or None where the round gave no figure (``busy``, ``failed``)."""

    timestamp: float
    speedup: Optional[float]
    outcome: str = OK


class History:
    """Thread-safe: the probe lane records, web requests read."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"history limit must be >= 1, got {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        self._series: dict[StepKey, deque[Point]] = {}
        self._failures: deque[HistoryFailure] = deque(maxlen=limit)
        # Per interpreter name, the identities it ran as and since when, oldest first.
        self._identities: dict[str, deque[HistoryIdentity]] = {}

    def record(self, reports: Iterable[WorkloadReport]) -> None:
        """Add one point per available step of these reports (and their failures)."""
        with self._lock:
            for report in reports:
                timestamp = report.started_at + report.duration_seconds
                self._record_identity(report, timestamp)
                for step in report.steps:
                    if not step.available:
                        continue
                    key = report.key(step)
                    said, figure = step_point(step)
                    series = self._series.setdefault(key, deque(maxlen=self.limit))
                    series.append(Point(timestamp, figure, said))
                    if not step.success:
                        log = [line[:MAX_LOG_LINE_CHARS] for line in step.log[-MAX_LOG_LINES:]]
                        self._failures.append(HistoryFailure(timestamp, report.interpreter.name, step.workload, step.mode,
                                                      step.workers, step.reason or "error",
                                                      step.message[:MAX_MESSAGE_CHARS], log))

    def _record_identity(self, report: WorkloadReport, timestamp: float) -> None:
        """A new entry where the interpreter runs as something else than in its last round."""
        if report.identity is None:
            return  # it never started: nothing to say about what it is
        identity = identity_text(asdict(report.identity))
        known = self._identities.setdefault(report.interpreter.name, deque(maxlen=self.limit))
        if not known or known[-1].identity != identity:
            known.append(HistoryIdentity(report.interpreter.name, timestamp, identity))

    def figures(self, interpreter: str, workload: str) -> dict[tuple[str, int], list[float]]:
        """(mode, workers) -> this workload's measured speedups, oldest first (estimates and
        gaps left out)."""
        with self._lock:
            return {(key.mode, key.workers): [p.speedup for p in points if p.speedup is not None and p.outcome == OK]
                    for key, points in self._series.items()
                    if key.interpreter == interpreter and key.workload == workload}

    def series(self) -> dict[StepKey, list[Point]]:
        with self._lock:
            return {key: list(points) for key, points in self._series.items()}

    def failures(self) -> list[HistoryFailure]:
        """Recent failures, newest first."""
        with self._lock:
            return list(reversed(self._failures))

    def prune(self, keep: Callable[[str, str], bool]) -> None:
        """Drop the steps (and failures) of (interpreter, workload) pairs ``keep`` rejects."""
        with self._lock:
            self._series = {k: v for k, v in self._series.items() if keep(k[0], k[1])}
            kept = [f for f in self._failures if keep(f.interpreter, f.workload)]
            self._failures = deque(kept, maxlen=self.limit)
            measured = {key.interpreter for key in self._series}
            self._identities = {name: v for name, v in self._identities.items() if name in measured}

    # --- the API's form and persistence (--history.file) ------------------------------------

    def document(self) -> HistoryDocument:
        """Points as [unix time, speedup or null]; failures newest first. The API's
        ``history`` and the ``--history.file`` format."""
        with self._lock:
            identities = [entry for known in self._identities.values() for entry in known]
        return HistoryDocument(
            version=1, limit=self.limit,
            steps=[HistorySeries(k[0], k[1], k[2], k[3], [[p.timestamp, p.speedup] for p in points],
                                 [p.outcome for p in points])
                   for k, points in self.series().items()],
            failures=self.failures(),
            identities=sorted(identities, key=lambda entry: entry.since))

    def to_json(self) -> dict[str, Any]:
        return asdict(self.document())

    def save(self, path: str) -> None:
        """Write atomically (temporary file, then rename): a crash never leaves half a file."""
        directory = os.path.dirname(os.path.abspath(path))
        inputs.refuse_to_replace(path)  # renaming over /dev/full would remove the device
        fd, temporary = tempfile.mkstemp(prefix=".history-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.to_json(), handle)
            os.replace(temporary, path)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise

    def restore(self, path: str) -> int:
        """Load what ``save`` wrote, keeping the last ``limit`` of everything; returns the
        number of points read. Raises OSError or ValueError (one line) for a missing or damaged
        file; it is read under ``exporter.config.inputs``' rule (a FIFO or /dev/zero is an error)."""
        document = inputs.read_json(path, max_bytes=MAX_FILE_BYTES, max_items=MAX_LIMIT, lone_surrogates="replace")
        if not isinstance(document, dict) or document.get("version") != 1:
            raise ValueError("not a history file of this exporter (version 1)")
        series: dict[StepKey, deque[Point]] = {}
        failures: deque[HistoryFailure] = deque(maxlen=self.limit)
        identities: dict[str, deque[HistoryIdentity]] = {}
        try:
            for step in document["steps"]:
                key = StepKey(_text(step["interpreter"]), _text(step["workload"]), _text(step["mode"]),
                       _count(step["workers"]))
                outcomes = _outcomes(step.get("outcomes", []), step["points"])
                series[key] = deque((Point(_number(t), None if v is None else _number(v), o)
                                     for (t, v), o in zip(step["points"], outcomes)), maxlen=self.limit)
            for entry in document.get("identities", []):
                name = _text(entry["interpreter"])
                identities.setdefault(name, deque(maxlen=self.limit)).append(
                    HistoryIdentity(name, _number(entry["since"]), _text(entry["identity"])[:MAX_MESSAGE_CHARS]))
            for f in reversed(document["failures"]):  # newest first in the file
                log = [_text(line)[:MAX_LOG_LINE_CHARS] for line in f["log"]][-MAX_LOG_LINES:]
                failures.append(HistoryFailure(_number(f["timestamp"]), _text(f["interpreter"]), _text(f["workload"]),
                                               _text(f["mode"]), _count(f["workers"]), _text(f["reason"]),
                                               _text(f["message"])[:MAX_MESSAGE_CHARS], log))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"damaged history file: {type(exc).__name__}: {str(exc)[:200]}") from None
        with self._lock:
            self._series, self._failures, self._identities = series, failures, identities
        return sum(len(points) for points in series.values())


def _outcomes(outcomes: object, points: list) -> list[str]:
    """Each point's outcome; a file written before outcomes existed has none, and there a
    point without a speedup was a failure."""
    if outcomes == []:
        return [OK if v is not None else FAILED for _, v in points]
    if not isinstance(outcomes, list) or len(outcomes) != len(points) or not all(o in OUTCOMES for o in outcomes):
        raise ValueError(f"expected one of {', '.join(OUTCOMES)} for each point")
    return outcomes


def _number(value: object) -> float:
    """A finite JSON number (a string such as "٣" or "1e3" is damage, not a number)."""
    if not finite_number(value):
        raise ValueError(f"expected a number, got {value!r:.40}")
    return float(value)


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"expected a worker count, got {value!r:.40}")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r:.40}")
    return value
