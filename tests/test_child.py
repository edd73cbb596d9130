"""The runner's output, read with bounds: any bytes on its pipes, any event it sends.

Property-based: whatever a runner (or an interpreter pretending to be one) writes, the
parent gets events, a ProtocolError or the end of output — never an exception in the
reader, never unbounded memory — and a malformed event is a ProtocolError, never a crash.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.probe import run
from exporter.probe.child import MAX_EVENT_BYTES, STDERR_LINE_CHARS, STDERR_LINES, OutputCapture, ProtocolError
from exporter.model.results import FAILURE_REASONS, ProbeSpec, StepResult, WorkloadReport

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def capture(stdout_chunks: list[bytes], stderr_chunks: list[bytes]) -> tuple[list[Any], list[str]]:
    """Write the chunks into real pipes and collect what OutputCapture makes of them."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    reader = OutputCapture(os.fdopen(out_r, "rb"), os.fdopen(err_r, "rb"))  # it closes them
    for out_chunk, err_chunk in zip(stdout_chunks + [b""] * len(stderr_chunks), stderr_chunks + [b""] * len(stdout_chunks)):
        os.write(out_w, out_chunk)
        os.write(err_w, err_chunk)
    os.close(out_w)
    os.close(err_w)
    items = []
    while (item := reader.events.get(timeout=10)) is not None:
        items.append(item)
    reader.finish(5)
    return items, list(reader.stderr_tail)


LINE_PIECES = st.sampled_from([b"\n", b"{", b"}", b'"event"', b":", b'"step"', b"[1]", b"\xff", b"\xc3", b"null",
                               b'{"event": "done"}\n', b'{"no": 1}\n', b"x" * 1000, b'"\\ud800"', b'"\\udc00x"',
                               b'{"event": "step_failed", "message": "\\ud83d"}\n'])
CHUNKS = st.lists(st.binary(max_size=300) | st.lists(LINE_PIECES, max_size=20).map(b"".join), max_size=8)


@FUZZ
@given(CHUNKS, CHUNKS)
def test_any_bytes_from_a_runner_become_events_protocol_errors_or_stderr_lines(stdout_chunks, stderr_chunks):
    items, tail = capture(stdout_chunks, stderr_chunks)
    for item in items:
        assert isinstance(item, ProtocolError) or (isinstance(item, dict) and isinstance(item["event"], str))
        if isinstance(item, dict):  # valid Unicode: printable, storable, servable
            json.dumps(item, ensure_ascii=False).encode("utf-8")
    assert len(tail) <= STDERR_LINES
    assert all(len(line) <= STDERR_LINE_CHARS + len(" [truncated]") for line in tail)


def test_ten_megabytes_without_a_newline_keep_only_a_truncated_line():
    items, tail = capture([], [b"x" * (1 << 20)] * 10 + [b"\nlast line\n"])
    assert items == []
    assert tail == ["x" * STDERR_LINE_CHARS + " [truncated]", "last line"]


def test_an_event_line_over_the_limit_is_a_protocol_error_and_the_next_one_still_counts():
    items, _ = capture([b'{"event": "' + b"x" * MAX_EVENT_BYTES + b'"}\n', b'{"event": "done"}\n'], [])
    assert isinstance(items[0], ProtocolError) and items[1] == {"event": "done"}


def test_invalid_utf8_is_replaced_not_fatal():
    items, tail = capture([b'{"event": "x\xff"}\n'], [b"caf\xc3\n"])
    assert items == [{"event": "x\ufffd"}]
    assert tail == ["caf\ufffd"]


def test_a_lone_surrogate_from_a_workload_is_replaced_so_it_can_be_printed_and_served():
    """A JSON escape writes half a surrogate pair alone; UTF-8 output of it raised (issue 27)."""
    items, _ = capture([b'{"event": "step_failed", "message": "ValueError: \\ud800", "log": ["\\udfff"],'
                        b' "\\udc00": 1, "pair": "\\ud83d\\ude00"}\n'], [])
    assert items == [{"event": "step_failed", "message": "ValueError: \ufffd", "log": ["\ufffd"], "\ufffd": 1,
                      "pair": "\U0001f600"}]


class QuietRunner:
    """Stands in for the runner's stdin: the conversation only sends it 'go'."""

    def send(self, message: dict) -> None:
        pass


VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
                      | st.sampled_from(["sequential", "threads", "cpython", "3.11.0", "error", "x" * 2000]),
                      lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children,
                                                                                         max_size=3), max_leaves=8)
KINDS = ["identity", "calibrated", "step", "ready", "window", "step_failed", "unavailable", "failed", "done", "new"]
KEYS = ["mode", "workers", "reason", "message", "starts", "ends", "cpu_seconds", "startup_seconds", "ops_per_unit",
        "op_seconds", "version", "implementation", "executable", "free_threaded_build", "gil_enabled",
        "start_methods", "subinterpreters_unavailable"]
EVENTS = st.builds(lambda kind, fields: dict(fields, event=kind), st.sampled_from(KINDS),
                   st.dictionaries(st.sampled_from(KEYS), VALUES | st.sampled_from([1, 2, [0.0, 1.0], [1.0]]), max_size=8))


@FUZZ
@given(st.lists(EVENTS, max_size=6))
def test_any_event_is_folded_in_or_a_protocol_error(events):
    spec = ProbeSpec("sleep", ("threads",), (2,))
    report = WorkloadReport(run.Interpreter("t", "python"), spec,
                            steps=[StepResult("sleep", m, n) for m, n in spec.steps()])
    conversation = run.Conversation(report, QuietRunner(), lambda _: None)  # type: ignore[arg-type]
    for event in events:
        try:
            conversation.handle(event)
        except ProtocolError:
            break
    run.summarise_steps(report)
    assert all(step.reason in (None, *FAILURE_REASONS) for step in report.steps)
    assert all(len(step.message) <= run.MAX_MESSAGE_CHARS + 1 for step in report.steps)


def test_a_runner_flooding_valid_events_waits_on_its_pipe_not_in_our_memory():
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    reader = OutputCapture(os.fdopen(out_r, "rb"), os.fdopen(err_r, "rb"))
    os.set_blocking(out_w, False)

    def fill_pipe() -> bool:
        """Write events until the pipe is full; True if it filled up."""
        for _ in range(100_000):  # 1.5 MB of events
            try:
                os.write(out_w, b'{"event": "x"}\n')
            except BlockingIOError:
                return True
        return False

    try:
        assert fill_pipe()
        # The reader takes events until its queue is full, then stops reading: the pipe
        # stays full however long we wait, and nothing piles up in our memory.
        deadline = time.monotonic() + 10
        while reader.events.qsize() < reader.events.maxsize and time.monotonic() < deadline:
            fill_pipe()
            time.sleep(0.01)
        assert reader.events.qsize() == reader.events.maxsize > 0
        time.sleep(0.3)
        assert fill_pipe()
    finally:
        reader.finish(0.5)
        os.close(out_w)
        os.close(err_w)
