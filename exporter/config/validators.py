"""Field validators: each takes a raw value (from YAML or a flag) and returns the clean value
or raises ValueError with the problem in words (the loader adds the file and field).

A config key and the ``probe`` command's flag for the same setting are checked by the same
validator (exporter/config/fields.py), so they can never disagree about what is valid.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Callable, Optional, Sequence, Union

from exporter.config.yamlfile import show
from exporter.host import cpus
from exporter.model.results import MAX_WORKERS, SCHED_IDLE, Nice
from exporter.runner import workloads
from exporter.runner.modes import MODES
from exporter.stats.measurement import finite_number

START_METHODS = ("fork", "forkserver", "spawn")
# Prometheus' duration grammar (prometheus/common model/time.go ParseDuration): integers,
# units from largest to smallest, each at most once: 1w, 1h30m, 500ms; not 5s5m or 1.5m.
DURATION_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
# ASCII digits only: \d would take any Unicode digit ("٥m"), and int() would read it.
_DURATION = re.compile("".join(rf"(?:([0-9]+){unit})?" for unit in DURATION_UNITS), re.ASCII)
_LABEL_VALUE = re.compile(r"[A-Za-z0-9_.:+-]+")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# probe.memory_limit: bytes, or a size with a binary unit. KB, MB, GB and TB are read as
# KiB, MiB, GiB and TiB, as Prometheus reads them (--storage.tsdb.retention.size).
SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
              "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_SIZE = re.compile(r"([0-9]+)(" + "|".join(SIZE_UNITS) + ")?", re.ASCII)

# Upper bounds: a value beyond these is a typo or an attack, never a probe anyone wants.
WORKERS_PER_CPU = 4  # oversubscription a probe may ask for, relative to the host's CPUs
MAX_REPEATS = 1000
MAX_LIST_ITEMS = 64  # workloads, modes, interpreters...: each item is a probe or a label value
MAX_UNIT_SECONDS = 60.0
MAX_TIMEOUT_SECONDS = 3600.0
MAX_DEADLINE_SECONDS = 86400.0
MIN_INTERVAL_SECONDS = 1.0
MAX_INTERVAL_SECONDS = 7 * 86400.0
MIN_MEMORY_LIMIT_BYTES = 64 << 20  # an interpreter with a few worker processes needs more than this
MAX_NAME_CHARS = 255
MAX_SERVICE_INTERVAL_SECONDS = 300.0
USABLE = "usable"  # a worker count: the usable cores, found at run time
YAML_1_1_BOOLEANS = {"yes", "no", "on", "off", "y", "n"}  # strings in YAML 1.2, which the config file is


def max_workers() -> int:
    """The largest worker count a config may ask for on this host."""
    return min(MAX_WORKERS, WORKERS_PER_CPU * (os.cpu_count() or 1))


# --- durations and sizes -----------------------------------------------------------------


def parse_duration(value: Any) -> float:
    """Seconds from a number or a Prometheus duration such as ``5m`` or ``1h30m``."""
    if isinstance(value, bool):
        raise ValueError(f"must be a duration like 30s or 5m, got {show(value)}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value and (match := _DURATION.fullmatch(value)):
        seconds = sum(int(n) * factor for n, factor in zip(match.groups(), DURATION_UNITS.values()) if n)
    else:
        raise ValueError(f"must be a duration like 30s or 5m, got {show(value)}")
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration, got {show(value)}")
    if seconds <= 0:
        raise ValueError(f"must be a positive duration, got {show(value)}")
    return seconds


def bounded_duration(low: float, high: float) -> Callable[[Any], float]:
    """A duration validator for ``low <= seconds <= high``."""

    def validate(value: Any) -> float:
        seconds = parse_duration(value)
        if seconds > high and low == 0:
            raise ValueError(f"must be at most {format_duration(high)}, got {show(value)}")
        if not low <= seconds <= high:
            raise ValueError(f"must be between {format_duration(low)} and {format_duration(high)}, got {show(value)}")
        return seconds

    return validate


def zero_or(duration: Callable[[Any], float]) -> Callable[[Any], float]:
    """0 (off) or what ``duration`` accepts."""

    def validate(value: Any) -> float:
        if not isinstance(value, bool) and value in (0, "0", "0s"):
            return 0.0
        return duration(value)

    return validate


def format_duration(seconds: float) -> str:
    """``660`` -> ``11m``, ``5400`` -> ``1h30m``: a duration in the grammar ``parse_duration``
    reads (bounds in messages, defaults in help, and the mixin's generated rules)."""
    millis, text = round(seconds * 1000), ""
    for unit, factor in DURATION_UNITS.items():
        if unit != "y":  # a year is 365 days to Prometheus, to people sometimes not
            count, millis = divmod(millis, round(factor * 1000))
            text += f"{count}{unit}" if count else ""
    return text or "0s"


def memory_size(value: Any) -> int:
    """Bytes from an integer or a size such as ``512MiB`` or ``2GiB``."""
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is not None:
        size = int(match.group(1)) * SIZE_UNITS[match.group(2) or "B"]
    elif isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        raise ValueError(f"must be a size like 512MiB or 2GiB, got {show(value)}")
    if size < MIN_MEMORY_LIMIT_BYTES:
        raise ValueError(f"must be at least {format_size(MIN_MEMORY_LIMIT_BYTES)}, got {show(value)}")
    if size > cpus.memory_bytes():
        raise ValueError(f"must be at most {format_size(cpus.memory_bytes())} (this host's memory), "
                         f"got {show(value)}")
    return size


def format_size(size: int) -> str:
    """``536870912`` -> ``512MiB``: sizes in messages in the grammar the user writes."""
    for unit in ("TiB", "GiB", "MiB"):
        if size >= SIZE_UNITS[unit] and size % SIZE_UNITS[unit] == 0:
            return f"{size // SIZE_UNITS[unit]}{unit}"
    return f"{size >> 20}MiB" if size >= SIZE_UNITS["MiB"] else f"{size}B"  # rounded down: still within a bound


repeats_count: Callable[[Any], int]  # defined below, with bounded_int
timeout_duration = bounded_duration(0, MAX_TIMEOUT_SECONDS)
deadline_duration = bounded_duration(0, MAX_DEADLINE_SECONDS)
interval_duration = bounded_duration(MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS)
jitter_duration = zero_or(bounded_duration(0, MAX_INTERVAL_SECONDS))
wait_duration = zero_or(timeout_duration)  # 0: do not wait
service_interval_duration = bounded_duration(MIN_INTERVAL_SECONDS, MAX_SERVICE_INTERVAL_SECONDS)


# --- numbers ------------------------------------------------------------------------------


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be an integer >= 1, got {show(value)}")
    return value


def bounded_int(high: Callable[[], int]) -> Callable[[Any], int]:
    """An integer validator for ``1 <= n <= high()`` (a callable: some bounds depend on the host)."""

    def validate(value: Any) -> int:
        number = positive_int(value)
        if number > high():
            raise ValueError(f"must be at most {high()}, got {show(value)}")
        return number

    return validate


repeats_count = bounded_int(lambda: MAX_REPEATS)


def worker_count(value: Any) -> Union[int, str]:
    """A worker count, or ``usable``: the usable core count at run time."""
    if value == USABLE:
        return USABLE
    number = positive_int(value)
    if number > MAX_WORKERS:
        raise ValueError(f"must be at most {MAX_WORKERS}, got {show(value)}")
    if number > max_workers():
        raise ValueError(f"must be at most {max_workers()} ({WORKERS_PER_CPU} per CPU on this host), got {show(value)}")
    return number


def positive_float(value: Any) -> float:
    if not finite_number(value) or value <= 0:
        raise ValueError(f"must be a number > 0, got {show(value)}")
    return float(value)


def unit_seconds(value: Any) -> float:
    number = positive_float(value)
    if number > MAX_UNIT_SECONDS:
        raise ValueError(f"must be at most {MAX_UNIT_SECONDS:g}, got {show(value)}")
    return number


def ratio(value: Any) -> float:
    try:
        number = positive_float(value)
    except ValueError:
        number = 2.0  # report the range, not just "> 0"
    if number > 1:
        raise ValueError(f"must be a number in (0, 1], got {show(value)}")
    return number


def cores_value(value: Any) -> float:
    number = positive_float(value)
    if number > MAX_WORKERS:
        raise ValueError(f"must be at most {MAX_WORKERS}, got {show(value)}")
    return number


def nice_value(value: Any) -> Nice:
    """A nice value 0..19 (lower priority only) or ``idle`` for the SCHED_IDLE policy."""
    if value == SCHED_IDLE:
        return SCHED_IDLE
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 19:
        raise ValueError(f"must be an integer 0..19 or idle, got {show(value)}")
    return value


def optional_bool(value: Any) -> Optional[bool]:
    if value is None or value == "auto":
        return None
    if not isinstance(value, bool):
        raise ValueError(f"must be true, false or auto, got {show(value)}{yaml_1_1_hint(value)}")
    return value


def yaml_1_1_hint(value: Any) -> str:
    """Why ``yes`` is not a boolean here: the config file is YAML 1.2 (exporter.config.yamlfile)."""
    if isinstance(value, str) and value.lower() in YAML_1_1_BOOLEANS:
        return " (the file is YAML 1.2: write true or false; yes, no, on, off, y and n are strings)"
    return ""


# --- names, paths and lists ----------------------------------------------------------------


def directory(value: Any, base: str = "") -> str:
    """An existing directory, made absolute (a relative one is relative to ``base``)."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(f"must be a directory, got {show(value)}")
    path = os.path.abspath(os.path.join(base, value))
    if not os.path.isdir(path):
        raise ValueError(f"not a directory: {path if len(path) <= MAX_NAME_CHARS else path[:MAX_NAME_CHARS] + '…'}")
    return path


def path_value(value: Any) -> str:
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(f"must be a path, got {show(value)}")
    return value


def workload_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a workload name, got {show(value)}")
    if workloads.is_user_workload(value):
        module, _, function = value.partition(":")
        if not is_module_name(module) or not function.isidentifier():
            raise ValueError(f"user workloads are written package.module:function, got {show(value)}")
        return value
    if value not in workloads.ALL_WORKLOADS:
        known = ", ".join(sorted(workloads.ALL_WORKLOADS))
        raise ValueError(f"unknown workload {show(value)} (known: {known}, or package.module:function)")
    return value


def mode_name(value: Any) -> str:
    if not isinstance(value, str) or value not in MODES:
        raise ValueError(f"unknown mode {show(value)} (known: {', '.join(MODES)})")
    return value


def start_method(value: Any) -> str:
    if not isinstance(value, str) or value not in START_METHODS:
        raise ValueError(f"must be one of {', '.join(START_METHODS)}, got {show(value)}")
    return value


def label_value(value: Any) -> str:
    if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
        raise ValueError(f"must be a short name of letters, digits and _.:+-, got {show(value)}")
    return value


def module_name(value: Any) -> str:
    if not is_module_name(value):
        raise ValueError(f"must be a dotted module name, got {show(value)}")
    return value


def is_module_name(value: Any) -> bool:
    return isinstance(value, str) and all(p.isidentifier() for p in value.split("."))


def plain_name(value: Any) -> str:
    if not isinstance(value, str) or not value or "\0" in value or len(value) > MAX_NAME_CHARS:
        raise ValueError(f"must be a non-empty name, got {show(value)}")
    return value


def regex(value: Any) -> re.Pattern[str]:
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(f"must be a regular expression, got {show(value)}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {show(value)}: {exc}") from None


def list_of(item: Callable[[Any], Any], *, unique: bool = True) -> Callable[[Any], tuple]:
    """A validator for a non-empty list whose items pass ``item``."""

    def validate(value: Any) -> tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
            raise ValueError(f"must be a non-empty list, got {show(value)}")
        if len(value) > MAX_LIST_ITEMS:
            raise ValueError(f"must have at most {MAX_LIST_ITEMS} items, got {len(value)}")
        items = tuple(item(v) for v in value)
        if unique and len(set(items)) != len(items):
            raise ValueError(f"has duplicates: {show(list(value))}")
        return items

    return validate
