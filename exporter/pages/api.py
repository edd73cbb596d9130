"""The documents the HTTP API serves: ``/api/v1/results`` and ``/config``.

``/api/v1/results`` is ``probe --json``'s document for the last round plus a verdict per
step, the schedule and the history; the status page is rendered from that very document, so
the page and the API cannot disagree. ``/config`` is the configuration in force in the
config file's own keys. Nothing here renders HTML or speaks HTTP.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping, Optional

import yaml

from exporter import __version__
from exporter.model import document
from exporter.model.schedule import Schedule
from exporter.model.snapshot import Snapshot
from exporter.config.fields import PROBE_FIELDS, TOP_FIELDS, document_of
from exporter.config.settings import Config
from exporter.pages.history import History
from exporter.services.status import services_config_document
from exporter.config.webconfig import WebConfig


def results_document(snapshot: Snapshot, schedule: Schedule, history: History,
                     services: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """``/api/v1/results``: ``probe --json``'s document for the last round, plus a verdict per
    step and per workload, the schedule, the history and the watched services (typed:
    exporter/model/document.py ``ServedResults``)."""
    reports = list(snapshot.reports.values())
    return document.to_json(document.build_served(reports, snapshot.host, __version__, schedule, history.document(),
                                                  services))


def config_document(config: Config, web_config: Optional[WebConfig]) -> dict[str, Any]:
    """The configuration in force, in the config file's own keys (it loads back as is);
    the web config's password hashes are never shown."""
    top = document_of(config, TOP_FIELDS)
    probe = document_of(config.probe, PROBE_FIELDS)
    shown: dict[str, Any] = dict(top)
    shown["probe"] = {k: v for k, v in probe.items() if v is not None and v != ()}
    shown["interpreters"] = [{"name": i.name, "path": i.path, "env": dict(i.env)}
                                for i in config.interpreter_list()]
    if config.import_check_modules:
        shown["import_check"] = {"modules": list(config.import_check_modules)}
    if config.services.enabled:
        shown["services"] = services_config_document(config.services)
    if web_config is not None:
        web: dict[str, Any] = {"file": web_config.path}
        if web_config.tls is not None:
            web["tls_server_config"] = {k: v for k, v in asdict(web_config.tls).items() if v is not None}
        if web_config.headers:
            web["http_server_config"] = {"headers": dict(web_config.headers)}
        if web_config.basic_auth_users:
            web["basic_auth_users"] = {user: "<secret>" for user in web_config.basic_auth_users}
        shown["web_config"] = web
    return plain(shown)


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
