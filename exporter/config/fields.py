"""The field tables: each setting's key in the config file, its dataclass attribute, its
validator and, for the probe's settings, the ``probe`` command's flag and help.

The loader reads a file through these tables and the command line makes its flags from
them, so a key and its flag are checked by one validator and their help names one default.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from exporter.config import inputs, validators as v
from exporter.config.settings import ProbeConfig
from exporter.errors import ConfigError


def read_number(text: str) -> object:
    """A number written in ASCII (float() would read "٠.٥" too), or the text for the error."""
    number = inputs.ascii_number(text)
    return text if number is None else number


def read_integer(text: str) -> object:
    """An integer written in ASCII decimal digits, or the text for the error."""
    number = inputs.ascii_int(text)
    return text if number is None else number


def read_worker_count(text: str) -> object:
    return v.USABLE if text == v.USABLE else read_integer(text)


@dataclass(frozen=True)
class Field:
    """One setting of a config section."""

    key: str  # in the config file
    attr: str  # of the section's dataclass
    validate: Callable[[Any], Any]
    flag: Optional[str] = None  # the probe command's flag; None: config file only
    help: str = ""
    read: Callable[[str], object] = str  # a flag's text -> what the validator takes
    many: bool = False  # a list: the flag repeats and takes comma-separated values
    metavar: Optional[str] = None
    default_text: Optional[str] = None  # the default in words, where the value does not say it
    duration: bool = False  # shown with its unit, as the config file writes it

    def shown_default(self, defaults: Any) -> str:
        """``(default 60s)``: the default of ``defaults``' attribute, as a user writes it."""
        if self.default_text is not None:
            return f"(default: {self.default_text})"
        value = getattr(defaults, self.attr)
        if isinstance(value, tuple):
            return f"(default: {','.join(map(str, value))})"
        if self.duration:
            return f"(default {v.format_duration(value)})"
        return f"(default {value:g})" if isinstance(value, float) else f"(default {value})"


PROBE_FIELDS: tuple[Field, ...] = (
    Field("workloads", "workloads", v.list_of(v.workload_name), "--workload", many=True,
          help="workload name or package.module:function"),
    Field("modes", "modes", v.list_of(v.mode_name), "--mode", many=True, help="mode to compare"),
    Field("workers", "workers", v.list_of(v.worker_count), "--workers", many=True, read=read_worker_count,
          help="worker count(s), or usable: the usable cores"),
    Field("unit_seconds", "unit_seconds", v.unit_seconds, "--seconds", read=read_number,
          help="target duration of one unit of work"),
    Field("repeats", "repeats", v.repeats_count, "--repeats", read=read_integer,
          help="fewest independent (one worker, N workers) pairs per step"),
    Field("timeout", "timeout_seconds", v.timeout_duration, "--timeout", read=read_number, duration=True,
          help="longest wait for the runner's next result"),
    Field("deadline", "deadline_seconds", v.deadline_duration, "--deadline", read=read_number,
          help="wall-clock limit of one workload's whole probe", default_text="timeout x (steps + 1)"),
    Field("workload_path", "workload_path", v.list_of(v.directory), "--workload.path", many=True, metavar="DIR",
          help="directory to import package.module:function workloads from; repeatable "
               "(the working directory is never searched)", default_text="none"),
    Field("start_method", "start_method", v.start_method, "--start-method",
          help="processes start method: fork, forkserver, spawn"),
    Field("per_core_series", "per_core_series", v.optional_bool),
    Field("precision", "precision", v.ratio, "--precision", read=read_number,
          help="target relative half-width of the speedup's 95%% interval"),
    Field("max_repeats", "max_repeats", v.repeats_count, "--max-repeats", read=read_integer,
          help="most clean pairs a step runs to reach the precision"),
    Field("step_budget", "step_budget_seconds", v.timeout_duration, "--step-budget", read=read_number, duration=True,
          help="time one step may spend reaching the precision"),
    Field("nice", "nice", v.nice_value, "--nice", read=read_integer,
          help="run the probe at a lower priority: 0..19 or idle (SCHED_IDLE)"),
    Field("wait_quiet", "wait_quiet_seconds", v.wait_duration, "--wait-quiet", read=read_number, metavar="SECONDS",
          help="before each parallel step, wait up to this long for enough free cores (0: measure at once; where "
               "the host stays busy the kernel's accounting still answers)",
          default_text="0; serve: 30s, at most a tenth of the interval"),
    Field("memory_limit", "memory_limit_bytes", v.memory_size, "--memory-limit", read=read_integer,
          help="memory of the whole probe process tree, e.g. 2GiB", default_text="half the host's memory"),
)
TOP_FIELDS: tuple[Field, ...] = (
    Field("interval", "interval_seconds", v.interval_duration),
    Field("jitter", "jitter_seconds", v.jitter_duration),
    Field("duty_cycle", "duty_cycle", v.ratio),
)
INTERPRETER_FIELDS: tuple[Field, ...] = (
    Field("name", "name", v.label_value),
    Field("path", "path", v.path_value),
)
SERVICE_GROUP_FIELDS: tuple[Field, ...] = (
    Field("name", "name", v.plain_name),
    Field("comm", "comm", v.list_of(v.plain_name)),
    Field("exe", "exe", v.list_of(v.plain_name)),
    Field("cmdline", "cmdline", v.list_of(v.regex, unique=False)),
    Field("cgroup", "cgroup", v.regex),
    Field("systemd_unit", "systemd_unit", v.plain_name),
)
SERVICES_FIELDS: tuple[Field, ...] = (
    Field("interval", "interval_seconds", v.service_interval_duration),
    Field("busy_thread_share", "busy_thread_share", v.ratio),
    Field("serial_cores", "serial_cores", v.cores_value),
    Field("min_free_cores", "min_free_cores", v.cores_value),
)
IMPORT_CHECK_FIELDS: tuple[Field, ...] = (
    Field("modules", "modules", v.list_of(v.module_name)),
)


def by_key(fields: Sequence[Field]) -> dict[str, Field]:
    return {f.key: f for f in fields}


def document_of(section: Any, fields: Sequence[Field]) -> dict[str, Any]:
    """A section's values under its config file keys (``/config`` shows the config this way)."""
    return {f.key: getattr(section, f.attr) for f in fields}


# --- the probe command's flags --------------------------------------------------------------


def add_probe_flags(parser: argparse.ArgumentParser, defaults: ProbeConfig) -> None:
    """One flag per probe setting that has one, its help naming ``defaults``' value."""
    for f in PROBE_FIELDS:
        if f.flag is not None:
            parser.add_argument(f.flag, dest=f.attr, action="append" if f.many else "store", metavar=f.metavar,
                                help=f"{f.help} {f.shown_default(defaults)}")


def comma_list(values: Optional[Sequence[str]]) -> list[str]:
    """Flags may repeat and may hold comma-separated values: --mode threads,processes."""
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]


def check_flag(flag: str, validate: Callable[[Any], Any], value: Any) -> Any:
    """Validate one command-line value with a config validator; errors name the flag."""
    try:
        return validate(value)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def probe_flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The probe settings given as flags, validated: attribute -> value."""
    values = {}
    for f in PROBE_FIELDS:
        given = getattr(args, f.attr, None) if f.flag is not None else None
        if given is None:
            continue
        raw = [f.read(item) for item in comma_list(given)] if f.many else f.read(given)
        values[f.attr] = check_flag(f.flag or f.key, f.validate, raw)
    return values


def explicitly_set(probe: ProbeConfig) -> set[str]:
    """The probe attributes whose value is not the default (set in a file or by a flag)."""
    default = ProbeConfig()
    return {f.name for f in dataclasses.fields(ProbeConfig) if getattr(probe, f.name) != getattr(default, f.name)}
