"""The documents the HTTP API serves: ``/api/v1/results`` and ``/config``.

``/api/v1/results`` is ``probe --json``'s document for the last round plus a verdict per
step, the schedule and the history; the status page is rendered from that very document, so
the page and the API cannot disagree. ``/config`` is the configuration in force in the
config file's own keys. Nothing here renders HTML or speaks HTTP.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

import yaml

from exporter import __version__, report
from exporter.export.collector import Snapshot
from exporter.config.fields import PROBE_FIELDS, TOP_FIELDS, document_of
from exporter.config.settings import Config
from exporter.pages.history import History
from exporter.services.status import services_config_document
from exporter.model.verdicts import mode_verdict
from exporter.config.webconfig import WebConfig


@dataclass(frozen=True)
class Schedule:
    """When rounds ran and will run; Unix times, None where not known yet."""

    exporter_started_at: float
    round_running_since: Optional[float]
    last_round_started_at: Optional[float]
    last_round_finished_at: Optional[float]
    next_round_at: Optional[float]
    interval_seconds: float  # in force: stretched when rounds exceed the duty-cycle budget
    configured_interval_seconds: float
    duty_cycle_ratio: Optional[float]
    duty_cycle_budget: float


def results_document(snapshot: Snapshot, schedule: Schedule, history: History) -> dict[str, Any]:
    """``probe --json``'s document for the last round, plus a verdict per step, the
    schedule and the history under keys of their own."""
    reports = list(snapshot.reports.values())
    document = report.json_document(reports, snapshot.host)
    steps = [(s, r) for r in reports for s in r.steps]
    for result, (step, owner) in zip(document["results"], steps):
        result["verdict"] = (None if step.mode == "sequential"
                             else mode_verdict(step, owner, snapshot.host.usable))
    document["workload_verdicts"] = [
        {"interpreter": r.interpreter.name, "workload": r.spec.workload, "verdict": verdict}
        for r, verdict in zip(reports, document["verdicts"])]
    document["exporter"] = {"version": __version__}
    document["schedule"] = asdict(schedule)
    document["history"] = history.to_json()
    return document


def speedup_interval(result: Mapping[str, Any]) -> tuple[Optional[list[float]], str]:
    """A result's interval and what it is: the precision work's confidence interval, or else
    the median ± half the repeats' relative spread (what ``probe`` prints as ±)."""
    ci = result.get("speedup_ci")
    if ci:
        return [float(ci[0]), float(ci[1])], "confidence interval"
    speedup, spread = result.get("speedup"), result.get("speedup_spread")
    if speedup is None or spread is None:
        return None, ""
    return [speedup * (1 - spread / 2), speedup * (1 + spread / 2)], "repeats' spread"


def config_document(config: Config, web_config: Optional[WebConfig]) -> dict[str, Any]:
    """The configuration in force, in the config file's own keys (it loads back as is);
    the web config's password hashes are never shown."""
    top = document_of(config, TOP_FIELDS)
    probe = document_of(config.probe, PROBE_FIELDS)
    document: dict[str, Any] = dict(top)
    document["probe"] = {k: v for k, v in probe.items() if v is not None and v != ()}
    document["interpreters"] = [{"name": i.name, "path": i.path, "env": dict(i.env)}
                                for i in config.interpreter_list()]
    if config.import_check_modules:
        document["import_check"] = {"modules": list(config.import_check_modules)}
    if config.services.enabled:
        document["services"] = services_config_document(config.services)
    if web_config is not None:
        web: dict[str, Any] = {"file": web_config.path}
        if web_config.tls is not None:
            web["tls_server_config"] = {k: v for k, v in asdict(web_config.tls).items() if v is not None}
        if web_config.headers:
            web["http_server_config"] = {"headers": dict(web_config.headers)}
        if web_config.basic_auth_users:
            web["basic_auth_users"] = {user: "<secret>" for user in web_config.basic_auth_users}
        document["web_config"] = web
    return plain(document)


def plain(value: Any) -> Any:
    """Only what YAML and JSON can carry: tuples become lists, anything unknown its text."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def config_text(config: Config, web_config: Optional[WebConfig], config_path: Optional[str]) -> str:
    """``/config``: the configuration in force as YAML, headed by where it came from."""
    header = (f"# configuration in force, loaded from {config_path}\n" if config_path
              else "# configuration in force: built-in defaults (no --config.file)\n")
    return header + yaml.safe_dump(config_document(config, web_config), sort_keys=False, allow_unicode=True)
