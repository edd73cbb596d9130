"""The exporter's configuration: validated dataclasses built in one place.

Only this module reads a config file. Unknown keys are rejected and every problem is one
line naming the file, the field and what is wrong, e.g.
``error parsing config file: exporter.yml: probe.repeats: must be an integer >= 1, got 0``.
Defaults live next to the fields. The ``probe`` command's flags are checked by the same
field validators, so a flag and a config key can never disagree about what is valid.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

from exporter.host import cpus
from exporter.runner import workloads
from exporter.config import yamlfile
from exporter.errors import ConfigError
from exporter.model.results import MODES, SCHED_IDLE, Interpreter, Nice, ProbeSpec
from exporter.config.yamlfile import field_name, show

T = TypeVar("T")
START_METHODS = ("fork", "forkserver", "spawn")
PER_CORE_SERIES_MAX_CPUS = 64  # above this, per-CPU series would dominate a scrape
# Prometheus' duration grammar (prometheus/common model/time.go ParseDuration): integers,
# units from largest to smallest, each at most once: 1w, 1h30m, 500ms; not 5s5m or 1.5m.
DURATION_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
# ASCII digits only: \d would take any Unicode digit ("٥m"), and int() would read it.
_DURATION = re.compile("".join(rf"(?:([0-9]+){unit})?" for unit in DURATION_UNITS), re.ASCII)
_LABEL_VALUE = re.compile(r"[A-Za-z0-9_.:+-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# probe.memory_limit: bytes, or a size with a binary unit. KB, MB, GB and TB are read as
# KiB, MiB, GiB and TiB, as Prometheus reads them (--storage.tsdb.retention.size).
SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
              "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_SIZE = re.compile(r"([0-9]+)(" + "|".join(SIZE_UNITS) + ")?", re.ASCII)

# Upper bounds: a value beyond these is a typo or an attack, never a probe anyone wants.
MAX_WORKERS_ABSOLUTE = 256
WORKERS_PER_CPU = 4  # oversubscription a probe may ask for, relative to the host's CPUs
MAX_REPEATS = 1000
MAX_LIST_ITEMS = 64  # workloads, modes, interpreters...: each item is a probe or a label value
MAX_UNIT_SECONDS = 60.0
MAX_TIMEOUT_SECONDS = 3600.0
MAX_DEADLINE_SECONDS = 86400.0
MIN_INTERVAL_SECONDS = 1.0
MAX_INTERVAL_SECONDS = 7 * 86400.0
MIN_MEMORY_LIMIT_BYTES = 64 << 20  # an interpreter with a few worker processes needs more than this
DEFAULT_MEMORY_LIMIT_SHARE = 0.5  # of the host's memory (or the exporter's own memory limit)
MIN_DEFAULT_MEMORY_LIMIT_BYTES = 256 << 20


def max_workers() -> int:
    """The largest worker count a config may ask for on this host."""
    return min(MAX_WORKERS_ABSOLUTE, WORKERS_PER_CPU * (os.cpu_count() or 1))


def default_memory_limit() -> int:
    """``probe.memory_limit`` when none is configured: half of what this host (or the
    exporter's own cgroup) can give, so a runaway workload fails before the host does."""
    memory = cpus.memory_bytes()
    share = int(memory * DEFAULT_MEMORY_LIMIT_SHARE) >> 20 << 20  # whole MiB, as messages show it
    return min(memory, max(MIN_DEFAULT_MEMORY_LIMIT_BYTES, share))


def default_interpreter_name() -> str:
    """The label of the running Python when none is configured: a stable role name.

    It carries no version, so an upgrade (3.13 -> 3.14) keeps the same series and its
    history; the version is in ``pyparallel_python_info``.
    """
    return "default"


@dataclass(frozen=True)
class ProbeConfig:
    workloads: tuple[str, ...] = ("pure_python", "sha256")
    modes: tuple[str, ...] = ("sequential", "threads", "processes")
    workers: tuple[int, ...] = ()  # empty: the usable core count, found at run time
    unit_seconds: float = 0.3  # units under ~0.3 s are dominated by noise on small VMs
    repeats: int = 3
    timeout_seconds: float = 60.0  # the longest wait for the runner's next event
    # The whole probe's wall-clock limit; None: timeout x (steps + 1) (ProbeSpec.deadline_seconds).
    deadline_seconds: Optional[float] = None
    # Directories (absolute) where package.module:function workloads are imported from.
    workload_path: tuple[str, ...] = ()
    start_method: str = "forkserver"  # CPython 3.14's default on Linux; fork is unsafe with threads
    per_core_series: Optional[bool] = None  # None: on up to PER_CORE_SERIES_MAX_CPUS CPUs
    # Precision: ``repeats`` is the fewest pairs; a step runs more until its speedup's 95 %
    # interval is within ``precision`` (relative half-width), ``max_repeats`` clean pairs or
    # its ``step_budget`` (pairs spoiled by other load are replaced within the budget). On an
    # idle 2-core host three 0.3 s pairs reach ±5 % and the default round (2 workloads, 3
    # modes) takes about 15 s, 5 % of the 5-minute interval; the daemon stretches the
    # interval when a round takes longer, so the duty cycle holds (docs/measurement.md).
    precision: float = 0.05
    max_repeats: int = 10
    step_budget_seconds: float = 5.0
    nice: Nice = 0  # 0..19, or "idle" (SCHED_IDLE): run the probe's process tree niced
    # Before each parallel step, wait up to this long for enough free cores (0: do not wait;
    # the daemon retries an inconclusive step later in its interval instead).
    wait_quiet_seconds: float = 0.0
    # The whole probe tree's memory; None: default_memory_limit(), found at run time.
    memory_limit_bytes: Optional[int] = None

    def memory_limit(self) -> int:
        """The configured memory limit, or the host's default."""
        return self.memory_limit_bytes or default_memory_limit()


@dataclass(frozen=True)
class ServiceGroup:
    """One matcher of ``services.groups`` (process-exporter's ``process_names`` entry).

    Every criterion given must hold: comm one of ``comm``, the executable (full path or base
    name) one of ``exe``, every ``cmdline`` regex found in the command line, the cgroup path
    matching ``cgroup``, the systemd unit equal to ``systemd_unit``.
    """

    name: str  # a template: {comm}, {exe_base}, {unit} and the regexes' named groups
    comm: tuple[str, ...] = ()
    exe: tuple[str, ...] = ()
    cmdline: tuple[re.Pattern[str], ...] = ()
    cgroup: Optional[re.Pattern[str]] = None
    systemd_unit: Optional[str] = None


@dataclass(frozen=True)
class ServicesConfig:
    """The passive collector of running Python services; no groups: off (the default)."""

    groups: tuple[ServiceGroup, ...] = ()
    interval_seconds: float = 5.0  # one window: the sampler reads /proc this often
    # A thread is busy above this share of a core in a window. N threads behind one GIL get
    # 1/N of a core each, so up to 1/share of them are seen busy while serialised.
    busy_thread_share: float = 0.1
    # Serialised: at least two busy threads, two usable cores and min_free_cores idle on the
    # host, yet the process used at most serial_cores cores (a GIL keeps it at ~1.0).
    serial_cores: float = 1.25
    min_free_cores: float = 0.5

    @property
    def enabled(self) -> bool:
        return bool(self.groups)


@dataclass(frozen=True)
class Config:
    interval_seconds: float = 300.0
    jitter_seconds: float = 15.0
    duty_cycle: float = 0.05  # probe work may take at most this share of wall time
    interpreters: tuple[Interpreter, ...] = ()  # empty: the running Python only
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    import_check_modules: tuple[str, ...] = ()
    services: ServicesConfig = field(default_factory=ServicesConfig)

    def interpreter_list(self) -> tuple[Interpreter, ...]:
        """The configured interpreters, or the running Python."""
        return self.interpreters or (Interpreter(default_interpreter_name(), sys.executable),)

    def probe_specs(self, default_workers: int) -> list[ProbeSpec]:
        """One probe per workload; no configured worker counts means the usable cores."""
        p = self.probe
        workers = p.workers or (default_workers,)
        return [ProbeSpec(w, p.modes, workers, p.unit_seconds, p.repeats, p.timeout_seconds,
                          p.start_method, precision=p.precision, max_repeats=p.max_repeats,
                          step_budget_seconds=p.step_budget_seconds, nice=p.nice,
                          workload_path=p.workload_path, deadline=p.deadline_seconds,
                          wait_quiet_seconds=p.wait_quiet_seconds,
                          memory_limit_bytes=p.memory_limit())
                for w in p.workloads]


# --- field validators: each returns the clean value or raises ValueError(problem) --------


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
            raise ValueError(f"must be at most {format_seconds(high)}, got {show(value)}")
        if not low <= seconds <= high:
            raise ValueError(f"must be between {format_seconds(low)} and {format_seconds(high)}, got {show(value)}")
        return seconds

    return validate


def format_seconds(seconds: float) -> str:
    """``3600`` -> ``1h``: bounds in messages in the grammar the user writes."""
    for unit, factor in DURATION_UNITS.items():
        if unit != "y" and seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    return f"{seconds:g}s"


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


def worker_count(value: Any) -> int:
    number = positive_int(value)
    if number > MAX_WORKERS_ABSOLUTE:
        raise ValueError(f"must be at most {MAX_WORKERS_ABSOLUTE}, got {show(value)}")
    if number > max_workers():
        raise ValueError(f"must be at most {max_workers()} ({WORKERS_PER_CPU} per CPU on this host), got {show(value)}")
    return number


def positive_float(value: Any) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value <= 0):
        raise ValueError(f"must be a number > 0, got {show(value)}")
    return float(value)


def unit_seconds(value: Any) -> float:
    number = positive_float(value)
    if number > MAX_UNIT_SECONDS:
        raise ValueError(f"must be at most {MAX_UNIT_SECONDS:g}, got {show(value)}")
    return number


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


def nice_value(value: Any) -> Nice:
    """A nice value 0..19 (lower priority only) or ``idle`` for the SCHED_IDLE policy."""
    if value == SCHED_IDLE:
        return SCHED_IDLE
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 19:
        raise ValueError(f"must be an integer 0..19 or idle, got {value!r}")
    return value


def ratio(value: Any) -> float:
    try:
        number = positive_float(value)
    except ValueError:
        number = 2.0  # report the range, not just "> 0"
    if number > 1:
        raise ValueError(f"must be a number in (0, 1], got {show(value)}")
    return number


def directory(value: Any, base: str = "") -> str:
    """An existing directory, made absolute (a relative one is relative to ``base``)."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(f"must be a directory, got {show(value)}")
    path = os.path.abspath(os.path.join(base, value))
    if not os.path.isdir(path):
        raise ValueError(f"not a directory: {path}")
    return path


def workload_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a workload name, got {show(value)}")
    if workloads.is_user_workload(value):
        module, _, function = value.partition(":")
        if not _is_module_name(module) or not function.isidentifier():
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
    if not _is_module_name(value):
        raise ValueError(f"must be a dotted module name, got {show(value)}")
    return value


def _is_module_name(value: Any) -> bool:
    return isinstance(value, str) and all(p.isidentifier() for p in value.split("."))


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


def optional_bool(value: Any) -> Optional[bool]:
    if value is None or value == "auto":
        return None
    if not isinstance(value, bool):
        raise ValueError(f"must be true, false or auto, got {show(value)}")
    return value


# --- building the dataclasses -----------------------------------------------------------

# key in the file -> (dataclass field, validator)
def jitter_duration(value: Any) -> float:
    if not isinstance(value, bool) and value in (0, "0", "0s"):
        return 0.0
    return interval_duration(value)


def wait_duration(value: Any) -> float:
    """0 (do not wait) or a duration up to an hour."""
    if not isinstance(value, bool) and value in (0, "0", "0s"):
        return 0.0
    return timeout_duration(value)


repeats_count = bounded_int(lambda: MAX_REPEATS)
timeout_duration = bounded_duration(0, MAX_TIMEOUT_SECONDS)
deadline_duration = bounded_duration(0, MAX_DEADLINE_SECONDS)
interval_duration = bounded_duration(MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS)

# key in the file -> (dataclass field, validator)
PROBE_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "workloads": ("workloads", list_of(workload_name)),
    "modes": ("modes", list_of(mode_name)),
    "workers": ("workers", list_of(worker_count)),
    "unit_seconds": ("unit_seconds", unit_seconds),
    "repeats": ("repeats", repeats_count),
    "timeout": ("timeout_seconds", timeout_duration),
    "deadline": ("deadline_seconds", deadline_duration),
    "workload_path": ("workload_path", list_of(directory)),  # replaced per file: relative to it
    "start_method": ("start_method", start_method),
    "per_core_series": ("per_core_series", optional_bool),
    "precision": ("precision", ratio),
    "max_repeats": ("max_repeats", repeats_count),
    "step_budget": ("step_budget_seconds", timeout_duration),
    "nice": ("nice", nice_value),
    "wait_quiet": ("wait_quiet_seconds", wait_duration),
    "memory_limit": ("memory_limit_bytes", memory_size),
}
TOP_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "interval": ("interval_seconds", interval_duration),
    "jitter": ("jitter_seconds", jitter_duration),
    "duty_cycle": ("duty_cycle", ratio),
}


class _Located(Exception):
    """A problem with a field path, before the source (file or flag) is known."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Located(where, f"must be a mapping, got {type(value).__name__}")
    return value


def _build(raw: Mapping[str, Any], fields: dict, allowed_extra: Sequence[str], where: str) -> dict:
    """Validate the scalar keys of one mapping into dataclass keyword arguments."""
    values = {}
    for key, value in raw.items():
        path = f"{where}{field_name(key)}"
        if key not in fields and key not in allowed_extra:
            known = ", ".join(sorted([*fields, *allowed_extra]))
            raise _Located(path, f"unknown field (known: {known})")
        if key in fields:
            name, validate = fields[key]
            try:
                values[name] = validate(value)
            except ValueError as exc:
                raise _Located(path, str(exc)) from None
    return values


def _mappings(items: Any, where: str, build: Callable[[Any, str], T]) -> tuple[T, ...]:
    """A non-empty list of at most MAX_LIST_ITEMS mappings, each built by ``build(item, where[i])``."""
    if not isinstance(items, list) or not items:
        raise _Located(where, f"must be a non-empty list, got {show(items)}")
    if len(items) > MAX_LIST_ITEMS:
        raise _Located(where, f"must have at most {MAX_LIST_ITEMS} items, got {len(items)}")
    return tuple(build(item, f"{where}[{i}]") for i, item in enumerate(items))


def _interpreter(raw: Any, where: str) -> Interpreter:
    raw = _mapping(raw, where)
    values = _build(raw, {"name": ("name", label_value), "path": ("path", path_value)}, ["env"], f"{where}.")
    for required in ("name", "path"):
        if required not in values:
            raise _Located(f"{where}.{required}", "is required")
    env = _mapping(raw.get("env"), f"{where}.env")
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise _Located(f"{where}.env", f"variable names are letters, digits and _, got {show(key)}")
        if not isinstance(value, str) or "\0" in value:
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            quote = f' (quote it: "{value}")' if number else ""
            raise _Located(f"{where}.env.{key}", f"must be a string{quote}, got {show(value)}")
    return Interpreter(values["name"], values["path"], dict(env))


def path_value(value: Any) -> str:
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(f"must be a path, got {show(value)}")
    return value


def config_from_mapping(raw: Any, base: str = "") -> Config:
    """Validate a parsed YAML document; raises _Located on the first problem.

    ``base`` is the config file's directory: relative ``workload_path`` entries are
    relative to it, as Prometheus resolves ``rule_files``.
    """
    raw = _mapping(raw, "(top level)")
    top = _build(raw, TOP_FIELDS, ["probe", "interpreters", "import_check", "services"], "")
    raw_probe = _mapping(raw.get("probe"), "probe")
    probe_fields = dict(PROBE_FIELDS, workload_path=(
        "workload_path", list_of(lambda v: directory(v, base))))
    probe = ProbeConfig(**_build(raw_probe, probe_fields, [], "probe."))
    check_probe_bounds(probe, max_repeats_given="max_repeats" in raw_probe,
                       step_budget_given="step_budget" in raw_probe)
    interpreters: tuple[Interpreter, ...] = ()
    if "interpreters" in raw:
        interpreters = _mappings(raw["interpreters"], "interpreters", _interpreter)
        names = [i.name for i in interpreters]
        if len(set(names)) != len(names):
            raise _Located("interpreters", f"names must be unique, got {show(names)}")
    import_check = _build(_mapping(raw.get("import_check"), "import_check"),
                          {"modules": ("modules", list_of(module_name))}, [], "import_check.")
    config = Config(**top, probe=probe, interpreters=interpreters,
                    import_check_modules=import_check.get("modules", ()),
                    services=services_config(raw.get("services")))
    if config.jitter_seconds >= config.interval_seconds:
        raise _Located("jitter", "must be shorter than interval")
    return config


# --- services: the passive collector (exporter/services/watcher.py) ------------------------------

MAX_SERVICE_GROUPS = MAX_LIST_ITEMS  # group names, rendered from the templates, at run time too
MAX_SERVICE_INTERVAL_SECONDS = 300.0
_TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")
TEMPLATE_BUILTINS = ("comm", "exe_base", "unit")


def regex(value: Any) -> re.Pattern[str]:
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(f"must be a regular expression, got {show(value)}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {show(value)}: {exc}") from None


def plain_name(value: Any) -> str:
    if not isinstance(value, str) or not value or "\0" in value or len(value) > 255:
        raise ValueError(f"must be a non-empty name, got {show(value)}")
    return value


def cores_value(value: Any) -> float:
    number = positive_float(value)
    if number > MAX_WORKERS_ABSOLUTE:
        raise ValueError(f"must be at most {MAX_WORKERS_ABSOLUTE}, got {show(value)}")
    return number


SERVICE_GROUP_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "name": ("name", plain_name),
    "comm": ("comm", list_of(plain_name)),
    "exe": ("exe", list_of(plain_name)),
    "cmdline": ("cmdline", list_of(regex, unique=False)),
    "cgroup": ("cgroup", regex),
    "systemd_unit": ("systemd_unit", plain_name),
}
SERVICES_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "interval": ("interval_seconds", bounded_duration(MIN_INTERVAL_SECONDS, MAX_SERVICE_INTERVAL_SECONDS)),
    "busy_thread_share": ("busy_thread_share", ratio),
    "serial_cores": ("serial_cores", cores_value),
    "min_free_cores": ("min_free_cores", cores_value),
}


def _service_group(raw: Any, where: str) -> ServiceGroup:
    values = _build(_mapping(raw, where), SERVICE_GROUP_FIELDS, [], f"{where}.")
    if "name" not in values:
        raise _Located(f"{where}.name", "is required")
    if len(values) == 1:
        raise _Located(where, "needs at least one of comm, exe, cmdline, cgroup, systemd_unit")
    patterns = [*values.get("cmdline", ()), *([values["cgroup"]] if "cgroup" in values else [])]
    known = set(TEMPLATE_BUILTINS) | {name for p in patterns for name in p.groupindex}
    for placeholder in _TEMPLATE_FIELD.findall(values["name"]):
        if placeholder not in known:
            raise _Located(f"{where}.name", f"unknown placeholder {{{placeholder}}} (known: "
                           f"{', '.join(sorted(known))})")
    return ServiceGroup(**values)


def services_config(raw: Any) -> ServicesConfig:
    """The ``services`` section; absent or without groups: the collector stays off."""
    raw = _mapping(raw, "services")
    values = _build(raw, SERVICES_FIELDS, ["groups"], "services.")
    groups = _mappings(raw["groups"], "services.groups", _service_group) if "groups" in raw else ()
    return ServicesConfig(groups=groups, **values)


def check_probe_bounds(probe: ProbeConfig, max_repeats_given: bool = True, step_budget_given: bool = True) -> None:
    """Fields that bound each other: the step budget and the timeout, the repeats.

    Only values set explicitly are held against each other: a short ``timeout`` alone (the
    longest wait for the runner's next event) stays valid with the default budget.
    """
    if step_budget_given and probe.step_budget_seconds >= probe.timeout_seconds:
        raise _Located("probe.step_budget", f"must be shorter than probe.timeout "
                       f"({probe.timeout_seconds:g}s), got {probe.step_budget_seconds:g}s")
    if max_repeats_given and probe.max_repeats < probe.repeats:
        raise _Located("probe.max_repeats", f"must be >= probe.repeats ({probe.repeats}), "
                       f"got {probe.max_repeats}")


def check_probe_flags(probe: ProbeConfig, step_budget_given: bool) -> None:
    """The same bounds for a probe built from flags on top of a config file."""
    try:
        check_probe_bounds(probe, max_repeats_given=False, step_budget_given=step_budget_given)
    except _Located as exc:
        raise ConfigError(str(exc)) from None


def load_config(path: Optional[str]) -> Config:
    """Read and validate a config file; no path means the defaults.

    ``serve``, ``--config.check`` and every reload call exactly this, so a file that
    passes the check is a file the daemon runs. Any bytes give a Config or a ConfigError.
    """
    if path is None:
        return Config()
    prefix = f"error parsing config file: {path}"
    try:
        raw = yamlfile.read(path)
    except OSError as exc:
        raise ConfigError(f"{prefix}: {exc.strerror or exc}") from None
    except yamlfile.YAMLFileError as exc:
        raise ConfigError(f"{prefix}: {exc}") from None
    try:
        return config_from_mapping(raw, os.path.dirname(os.path.abspath(path)))
    except _Located as exc:
        raise ConfigError(f"{prefix}: {exc}") from None
    except RecursionError:  # a self-referencing alias walked by a validator
        raise ConfigError(f"{prefix}: nested too deeply") from None


def check_flag(flag: str, validate: Callable[[Any], Any], value: Any) -> Any:
    """Validate one command-line value with a config validator; errors name the flag."""
    try:
        return validate(value)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None
