"""Stderr logging in the Prometheus exporters' style: logfmt or JSON lines with key/values."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from exporter.errors import ConfigError

# --log.level names, as in prometheus/common's promslog.
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("logfmt", "json")

# Keys every line starts with; an extra field with one of these names gets a "_" suffix
# rather than silently replacing it (JSON) or appearing twice (logfmt).
_RESERVED = ("ts", "level", "logger", "msg")


def setup_logging(level: str, fmt: str) -> None:
    """Send all logging to stderr at ``level`` ("debug".."error") formatted as ``fmt``.

    Calling it again (e.g. in tests) replaces the handler installed by the previous call.
    """
    if level not in LEVELS:
        raise ConfigError(f"--log.level: must be one of {', '.join(LEVELS)}, got {level!r}")
    if fmt not in FORMATS:
        raise ConfigError(f"--log.format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StderrHandler):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root.addHandler(handler)
    root.setLevel(LEVELS[level])


def log_kv(logger: logging.Logger, level: int, msg: str, /, *, exc_info: bool = False, **fields: Any) -> None:
    """Log ``msg`` with key/value fields, e.g. ``log_kv(log, logging.INFO, "done", n=3)``: the
    one way the package logs. ``exc_info=True`` inside an ``except`` adds the traceback as the
    line's ``exc`` field (for bugs; an expected failure names its error in a field instead).

    The first three parameters are positional-only so a field may be called ``msg`` or
    ``level`` too.
    """
    if logger.isEnabledFor(level):
        # stacklevel=2 so funcName/lineno name the caller, not this helper.
        logger.log(level, msg, extra={"kv": fields}, exc_info=exc_info, stacklevel=2)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at emit time (like ``logging.lastResort``).

    A StreamHandler would keep the stream it saw at setup, so output would be lost after
    something (pytest's capture, a daemon's redirect) replaces sys.stderr.
    """

    terminator = "\n"

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = self.stream
            stream.write(line + self.terminator)
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def _level_name(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


def _timestamp(record: logging.LogRecord) -> str:
    # RFC 3339 in UTC with milliseconds, the format promslog writes.
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def record_fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """The ordered key/values of one log line: ts, level, logger, msg, extras, exc."""
    fields: dict[str, Any] = {
        "ts": _timestamp(record),
        "level": _level_name(record.levelno),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    extra = getattr(record, "kv", None)
    if isinstance(extra, Mapping):
        for key, value in extra.items():
            key = str(key)
            fields[key + "_" if key in _RESERVED else key] = value
    if record.exc_info:
        fields["exc"] = formatter.formatException(record.exc_info)
    if record.stack_info:
        fields["stack"] = formatter.formatStack(record.stack_info)
    return fields


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=info logger=x msg="text" key=value`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record, self)
        return " ".join(f"{_logfmt_key(k)}={_logfmt_value(v)}" for k, v in fields.items())


class JSONFormatter(logging.Formatter):
    """One JSON object per line with the same keys as the logfmt output."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: _json_value(v) for k, v in record_fields(record, self).items()}
        return json.dumps(fields, default=str, allow_nan=False)


def _logfmt_key(key: str) -> str:
    # A key cannot be quoted in logfmt, so characters that would end it are replaced.
    cleaned = "".join("_" if c in ' ="' or not c.isprintable() else c for c in key)
    return cleaned or "_"


def _logfmt_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    if text and not any(c in ' ="\\' or not c.isprintable() for c in text):
        return text
    # JSON string quoting is logfmt's quoting too: \" \\ \n and \uXXXX for control characters.
    return json.dumps(text, ensure_ascii=False)


def _json_value(value: Any) -> Any:
    # NaN and infinities are not JSON; a log line must stay parseable.
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
