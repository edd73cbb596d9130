"""The watched services on the status page and at ``/api/v1/services``: one plain document.

The document is built from the sampler's last snapshot and is what the API serves; the page's
section (``statuspage.services_section`` and ``templates/sections/services.html``) is
rendered from that document only, so the page and the API cannot disagree.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from exporter.config.fields import SERVICE_GROUP_FIELDS, SERVICES_FIELDS, document_of
from exporter.config.settings import ServicesConfig
from exporter.services.window import Cohort, ServicesSnapshot

# What each state means, in the words the page shows.
STATE_TEXT = {
    "parallel": "busy threads run in parallel",
    "serial": "serialised: busy threads share about one core while cores are free "
              "(a GIL build's GIL, or a lock or an extension that re-enabled the GIL)",
    "host_busy": "cannot tell: the host had no idle core in the window",
    "one_usable_core": "cannot tell: its processes may use only one core (affinity or CPU quota)",
    "one_busy_thread": "cannot tell: no process had two busy threads",
    "idle": "no busy thread in the window",
    "no_process": "no process matches",
}


def serial_text(c: Cohort) -> str:
    """Name the likely cause of a serialised cohort from its build."""
    causes: dict[Optional[bool], str] = {True: "on a free-threaded build: a lock, or an extension that re-enabled the GIL",
                                         False: "the GIL of a GIL build", None: "the GIL or a lock"}
    cause = causes[c.identity.free_threaded_build]
    return f"serialised: busy threads share about one core while cores are free — {cause}"


def identity_text(identity: Mapping[str, Any]) -> str:
    if identity["implementation"] == "none":
        return "not Python"
    if identity["implementation"] == "unknown":
        return "unreadable (no permission to read its maps, or a file it maps refused as untrusted)"
    build = {True: "free-threaded build", False: "GIL build", None: "build unknown"}[identity["free_threaded_build"]]
    return f"{identity['implementation']} {identity['version'] or '(version unknown)'}, {build}"


def cohort_document(c: Cohort) -> dict[str, Any]:
    return {
        "implementation": c.identity.implementation, "version": c.identity.version,
        "free_threaded_build": c.identity.free_threaded_build, "processes": c.processes, "threads": c.threads,
        "cores_used": c.cores_used, "busy_threads": c.busy_threads, "usable_cores": c.usable_cores,
        "parallelism_ratio": c.parallelism, "serialised_ratio": c.serialised_ratio,
        "process_parallelism": list(c.process_parallelism),
        "voluntary_context_switches_per_busy_thread": c.switches_per_busy_thread,
    }


def services_document(snapshot: ServicesSnapshot) -> dict[str, Any]:
    """The ``/api/v1/services`` document: every group with its state and its interpreters."""
    groups: dict[str, dict[str, Any]] = {}
    for name in sorted(set(snapshot.states) | set(snapshot.configured) | {c.group for c in snapshot.cohorts}):
        state = snapshot.states.get(name)
        groups[name] = {"state": state, "state_text": STATE_TEXT.get(state or "", "first window not finished"),
                        "interpreters": []}
    for c in snapshot.cohorts:
        groups[c.group]["interpreters"].append(cohort_document(c))
        if groups[c.group]["state"] == "serial" and (c.serialised_ratio or 0) >= 0.5:
            groups[c.group]["state_text"] = serial_text(c)
    return {
        "enabled": snapshot.enabled, "interval_seconds": snapshot.interval_seconds,
        "window_seconds": snapshot.window_seconds, "sampled_at": snapshot.sampled_at,
        "scan_seconds": snapshot.scan_seconds, "scanned_processes": snapshot.scanned_processes,
        "host_idle_cores": snapshot.host_idle_cores, "errors": dict(snapshot.errors),
        "groups": [{"group": name, **body} for name, body in groups.items()],
    }


def services_config_document(config: ServicesConfig) -> dict[str, Any]:
    """The ``services`` section in force, in the config file's own keys (it loads back as is)."""
    document: dict[str, Any] = document_of(config, SERVICES_FIELDS)
    groups = []
    for group in config.groups:
        entry = {}
        for key, value in document_of(group, SERVICE_GROUP_FIELDS).items():
            if isinstance(value, tuple):
                value = [getattr(v, "pattern", v) for v in value]
            if value not in (None, []):
                entry[key] = getattr(value, "pattern", value)
        groups.append(entry)
    document["groups"] = groups
    return document
