"""Reading a config file into a validated ``Config``: the only place that does.

Unknown keys are rejected and every problem is one line naming the file, the field and
what is wrong, e.g.
``error parsing config file: exporter.yml: probe.repeats: must be an integer >= 1, got 0``.
Each section is read through its field table (exporter/config/fields.py).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Collection, Mapping, Optional, Sequence, TypeVar

from exporter.config import validators as v, yamlfile
from exporter.config.fields import (IMPORT_CHECK_FIELDS, INTERPRETER_FIELDS, PROBE_FIELDS, SERVICE_GROUP_FIELDS,
                                    SERVICES_FIELDS, TOP_FIELDS, Field, by_key)
from exporter.config.settings import Config, ProbeConfig, ServiceGroup, ServicesConfig
from exporter.config.yamlfile import field_name, show
from exporter.errors import ConfigError
from exporter.model.results import Interpreter

T = TypeVar("T")
TEMPLATE_BUILTINS = ("comm", "exe_base", "unit")  # placeholders every group name may use


class Located(Exception):
    """A problem with a field path, before the source (file or flag) is known."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise Located(where, f"must be a mapping, got {type(value).__name__}")
    return value


def _build(raw: Mapping[str, Any], fields: Sequence[Field], allowed_extra: Sequence[str], where: str) -> dict:
    """Validate the scalar keys of one mapping into dataclass keyword arguments."""
    table = by_key(fields)
    values = {}
    for key, value in raw.items():
        path = f"{where}{field_name(key)}"
        if key not in table and key not in allowed_extra:
            known = ", ".join(sorted([*table, *allowed_extra]))
            raise Located(path, f"unknown field (known: {known})")
        if key in table:
            try:
                values[table[key].attr] = table[key].validate(value)
            except ValueError as exc:
                raise Located(path, str(exc)) from None
    return values


def _mappings(items: Any, where: str, build: Callable[[Any, str], T]) -> tuple[T, ...]:
    """A non-empty list of at most MAX_LIST_ITEMS mappings, each built by ``build(item, where[i])``."""
    if not isinstance(items, list) or not items:
        raise Located(where, f"must be a non-empty list, got {show(items)}")
    if len(items) > v.MAX_LIST_ITEMS:
        raise Located(where, f"must have at most {v.MAX_LIST_ITEMS} items, got {len(items)}")
    return tuple(build(item, f"{where}[{i}]") for i, item in enumerate(items))


def _interpreter(raw: Any, where: str) -> Interpreter:
    raw = _mapping(raw, where)
    values = _build(raw, INTERPRETER_FIELDS, ["env"], f"{where}.")
    for required in ("name", "path"):
        if required not in values:
            raise Located(f"{where}.{required}", "is required")
    env = _mapping(raw.get("env"), f"{where}.env")
    for key, value in env.items():
        if not isinstance(key, str) or not v.ENV_NAME.fullmatch(key):
            raise Located(f"{where}.env", f"variable names are letters, digits and _, got {show(key)}")
        if not isinstance(value, str) or "\0" in value:
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            quote = f' (quote it: "{value}")' if number else ""
            raise Located(f"{where}.env.{key}", f"must be a string{quote}, got {show(value)}")
    return Interpreter(values["name"], values["path"], dict(env))


def _probe(raw: Mapping[str, Any], base: str) -> ProbeConfig:
    """The probe section; relative ``workload_path`` entries are relative to the file's folder."""
    in_file = Field("workload_path", "workload_path", v.list_of(lambda value: v.directory(value, base)))
    fields = [in_file if f.key == "workload_path" else f for f in PROBE_FIELDS]
    probe = ProbeConfig(**_build(raw, fields, [], "probe."))
    check_probe_bounds(probe, {by_key(PROBE_FIELDS)[key].attr for key in raw if key in by_key(PROBE_FIELDS)})
    return probe


def _service_group(raw: Any, where: str) -> ServiceGroup:
    values = _build(_mapping(raw, where), SERVICE_GROUP_FIELDS, [], f"{where}.")
    if "name" not in values:
        raise Located(f"{where}.name", "is required")
    if len(values) == 1:
        raise Located(where, "needs at least one of comm, exe, cmdline, cgroup, systemd_unit")
    patterns = [*values.get("cmdline", ()), *([values["cgroup"]] if "cgroup" in values else [])]
    known = set(TEMPLATE_BUILTINS) | {name for p in patterns for name in p.groupindex}
    for placeholder in ServiceGroup.placeholders(values["name"]):
        if placeholder not in known:
            raise Located(f"{where}.name", f"unknown placeholder {{{placeholder}}} (known: "
                          f"{', '.join(sorted(known))})")
    return ServiceGroup(**values)


def services_config(raw: Any) -> ServicesConfig:
    """The ``services`` section; absent or without groups: the collector stays off."""
    raw = _mapping(raw, "services")
    values = _build(raw, SERVICES_FIELDS, ["groups"], "services.")
    groups = _mappings(raw["groups"], "services.groups", _service_group) if "groups" in raw else ()
    return ServicesConfig(groups=groups, **values)


def config_from_mapping(raw: Any, base: str = "") -> Config:
    """Validate a parsed YAML document; raises Located on the first problem.

    ``base`` is the config file's directory: relative ``workload_path`` entries are
    relative to it, as Prometheus resolves ``rule_files``.
    """
    raw = _mapping(raw, "(top level)")
    top = _build(raw, TOP_FIELDS, ["probe", "interpreters", "import_check", "services"], "")
    probe = _probe(_mapping(raw.get("probe"), "probe"), base)
    interpreters: tuple[Interpreter, ...] = ()
    if "interpreters" in raw:
        interpreters = _mappings(raw["interpreters"], "interpreters", _interpreter)
        names = [i.name for i in interpreters]
        if len(set(names)) != len(names):
            raise Located("interpreters", f"names must be unique, got {show(names)}")
    import_check = _build(_mapping(raw.get("import_check"), "import_check"), IMPORT_CHECK_FIELDS, [], "import_check.")
    config = Config(**top, probe=probe, interpreters=interpreters,
                    import_check_modules=import_check.get("modules", ()),
                    services=services_config(raw.get("services")))
    if config.jitter_seconds >= config.interval_seconds:
        raise Located("jitter", "must be shorter than interval")
    return config


def check_probe_bounds(probe: ProbeConfig, given: Collection[str]) -> None:
    """Settings that bound each other: the step budget and the timeout, the repeats.

    Only values set explicitly (``given``: attributes set in a file or by a flag) are held
    against each other: a short ``timeout`` alone (the longest wait for the runner's next
    event) stays valid with the default budget, and a ``repeats`` above the default
    ``max_repeats`` raises the most to it.
    """
    if "step_budget_seconds" in given and probe.step_budget_seconds >= probe.timeout_seconds:
        raise Located("probe.step_budget", f"must be shorter than probe.timeout "
                      f"({probe.timeout_seconds:g}s), got {probe.step_budget_seconds:g}s")
    if "max_repeats" in given and probe.max_repeats < probe.repeats:
        raise Located("probe.max_repeats", f"must be >= probe.repeats ({probe.repeats}), "
                      f"got {probe.max_repeats}")


def check_probe_flags(probe: ProbeConfig, given: Collection[str]) -> None:
    """The same bounds for a probe built from flags on top of a config file."""
    try:
        check_probe_bounds(probe, given)
    except Located as exc:
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
    except Located as exc:
        raise ConfigError(f"{prefix}: {exc}") from None
    except RecursionError:  # a self-referencing alias walked by a validator
        raise ConfigError(f"{prefix}: nested too deeply") from None
