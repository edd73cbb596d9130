"""Tests for exporter.logs: --log.level/--log.format and the logfmt/JSON line format."""

from __future__ import annotations

import calendar
import json
import logging
import re
from collections.abc import Iterator

import pytest

from exporter.errors import ConfigError
from exporter.logs import LogfmtFormatter, log_kv, setup_logging

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """setup_logging configures the root logger; put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_logfmt_line_has_ts_level_logger_quoted_msg_and_extra_fields(
        capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "logfmt")
    logging.getLogger("exporter.serve.daemon").info(
        "probe round finished", extra={"kv": {"duration_seconds": 3.2, "workers": 2}})
    [line] = _lines(capsys)
    assert re.fullmatch(
        rf'ts={TS} level=info logger=exporter\.serve\.daemon msg="probe round finished" '
        r"duration_seconds=3\.2 workers=2", line), line


def test_log_kv_helper_adds_fields_and_reports_its_caller(
        capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("debug", "logfmt")
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("exporter.test")
    collect = Collect()
    logger.addHandler(collect)
    try:
        log_kv(logger, logging.DEBUG, "started", ok=True, none=None, mode="threads")
    finally:
        logger.removeHandler(collect)
    [line] = _lines(capsys)
    assert line.endswith(" level=debug logger=exporter.test msg=started ok=true none=null "
                         "mode=threads")
    assert records[0].funcName == "test_log_kv_helper_adds_fields_and_reports_its_caller"


def test_logfmt_quotes_and_escapes_values_that_need_it(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "logfmt")
    log_kv(logging.getLogger("t"), logging.INFO, 'say "hi"',
           path="/a b", eq="a=b", nl="two\nlines", empty="", **{"bad key": 1})
    [line] = _lines(capsys)
    assert line.split(" level=", 1)[1] == (
        r'info logger=t msg="say \"hi\"" path="/a b" eq="a=b" nl="two\nlines" empty="" '
        "bad_key=1")


def test_json_format_writes_one_object_per_line_with_the_same_keys(
        capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    log_kv(logging.getLogger("exporter.serve.daemon"), logging.WARNING, "slow round",
           duration_seconds=3.2, speedup=float("nan"))
    logging.getLogger("other").info("plain %s", "args")
    first, second = (json.loads(line) for line in _lines(capsys))
    assert list(first) == ["ts", "level", "logger", "msg", "duration_seconds", "speedup"]
    assert re.fullmatch(TS, first["ts"])
    assert first["level"] == "warn"
    assert first["logger"] == "exporter.serve.daemon"
    assert first["msg"] == "slow round"
    assert first["duration_seconds"] == 3.2
    assert first["speedup"] == "nan"  # NaN is not JSON; it must not break the line
    assert second["msg"] == "plain args"


def test_level_filters_lower_levels(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("warn", "logfmt")
    logger = logging.getLogger("exporter.test")
    logger.info("hidden")
    logger.warning("shown")
    logger.error("also shown")
    lines = _lines(capsys)
    assert [re.search(r"level=(\w+)", line).group(1) for line in lines] == ["warn", "error"]  # type: ignore[union-attr]


def test_exception_is_kept_on_the_same_line(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "logfmt")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("t").exception("failed")
    [line] = _lines(capsys)
    assert 'msg=failed exc="Traceback' in line
    assert r"RuntimeError: boom\"" not in line and r"RuntimeError: boom" in line


def test_extra_field_named_like_a_fixed_key_does_not_replace_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    log_kv(logging.getLogger("t"), logging.INFO, "real", msg="extra", level="x")
    [obj] = [json.loads(line) for line in _lines(capsys)]
    assert obj["msg"] == "real" and obj["msg_"] == "extra"
    assert obj["level"] == "info" and obj["level_"] == "x"


def test_setting_up_twice_replaces_the_handler(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    setup_logging("info", "logfmt")
    logging.getLogger("t").info("once")
    [line] = _lines(capsys)
    assert line.startswith("ts=")


def test_timestamp_is_utc_rfc3339_with_milliseconds() -> None:
    created = calendar.timegm((2026, 11, 25, 16, 0, 0)) + 0.123
    record = logging.LogRecord("exporter.serve.daemon", logging.INFO, __file__, 1, "hi", None, None)
    record.created, record.msecs = created, 123.0
    assert LogfmtFormatter().format(record).startswith(
        "ts=2026-11-25T16:00:00.123Z level=info ")


@pytest.mark.parametrize(("level", "fmt", "message"), [
    ("x", "logfmt", "--log.level: must be one of debug, info, warn, error, got 'x'"),
    ("warning", "logfmt", "--log.level: must be one of debug, info, warn, error, got 'warning'"),
    ("info", "text", "--log.format: must be one of logfmt, json, got 'text'"),
])
def test_invalid_level_or_format_is_a_config_error(level: str, fmt: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        setup_logging(level, fmt)
    assert str(info.value) == message
