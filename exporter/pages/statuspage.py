"""The status page at ``/``: the last round without Grafana, from Jinja2 templates.

blackbox_exporter's landing page shows recent probes with their debug logs; this page shows
the last round's figures, the per-core picture, each step's recent history and what failed
and why. It is rendered from the very document ``/api/v1/results`` serves (exporter/pages/api.py),
so the two cannot disagree; the functions here are the only code that reads that document
for the page. Server-rendered HTML with inline SVG and inline CSS only: no script, no
external resource, so it works offline and under the strict Content-Security-Policy it is
sent with. The templates (exporter/templates/) are autoescaped, so everything that comes
from configuration or workload output is escaped without being asked.

A section of the page is a template under ``templates/sections/`` plus one function here
that returns its data (or None to leave it out), listed in ``SECTIONS``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from exporter.model import results
from exporter.services import status
from exporter.web import templating
from exporter.model.document import speedup_interval
from exporter.pages.history import BUSY, ESTIMATED, FAILED, MAX_LOG_LINE_CHARS, MAX_LOG_LINES, MAX_MESSAGE_CHARS, OK, outcome

TEMPLATES = "exporter.pages"  # the package whose templates/ folder holds this module's pages

Document = Mapping[str, Any]  # what exporter.pages.api.results_document returns
View = dict[str, Any]  # what a template is given

SPARKLINE_WIDTH, SPARKLINE_HEIGHT = 140, 28
CORE_BAR_WIDTH, CORE_BAR_GAP, CORE_BAR_HEIGHT = 12, 3, 32
LABELLED_CPUS = 16  # up to this many bars get their CPU number underneath
LABEL_HEIGHT = 10
MAX_CORE_BARS = 128  # wider hosts get one strip of thinner bars rather than a huge picture
CORE_STRIP_WIDTH = 480  # the strip's width in pixels beyond MAX_CORE_BARS
LOAD_SPLIT_WIDTH, LOAD_SPLIT_HEIGHT = 120, 8
RECENT_FAILURES_SHOWN = 20
VERDICT_CHARS = 300  # a failed step's message in its table row; the whole one is under Failures


@dataclass(frozen=True)
class Section:
    """One part of the page: its template and the function that gives the template its data."""

    template: str
    data: Callable[[Document, float], Optional[View]]


def render_page(document: Document, telemetry_path: str = "/metrics", now: Optional[float] = None) -> str:
    """The whole status page from a ``results_document``."""
    now = time.time() if now is None else now
    sections = [{"template": s.template, "data": data} for s in SECTIONS
                if (data := s.data(document, now)) is not None]
    return templating.render(TEMPLATES, "status.html", version=document["exporter"]["version"], links=links(telemetry_path),
                             sections=sections, history_limit=document.get("history", {}).get("limit"))


def links(telemetry_path: str) -> list[tuple[str, str]]:
    return [(telemetry_path, "Metrics"), ("/api/v1/results", "Results (JSON)"), ("/config", "Configuration"),
            ("/-/healthy", "Health"), ("/-/ready", "Readiness")]


# --- text -------------------------------------------------------------------------------


def when(timestamp: Optional[float], now: float) -> str:
    """``2026-11-25 20:56:11 UTC (3m ago)``; ``—`` when unknown."""
    if timestamp is None:
        return "—"
    absolute = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
    delta = timestamp - now
    return f"{absolute} ({duration(abs(delta))} {'from now' if delta > 0 else 'ago'})"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def number(value: Optional[float], fmt: str = "{:.2f}") -> str:
    return "—" if value is None else fmt.format(value)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def clip(text: str, limit: int) -> str:
    """Workload output can be huge; the page shows a bounded part of it."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


# --- the host and the schedule ----------------------------------------------------------


def host_section(document: Document, now: float) -> View:
    host, schedule = document["host"], document["schedule"]
    interval = f"every {duration(schedule['interval_seconds'])}"
    if schedule["interval_seconds"] > schedule["configured_interval_seconds"] + 1e-6:
        interval += (f" (configured {duration(schedule['configured_interval_seconds'])}, stretched to keep "
                     f"within the duty-cycle budget)")
    last = "—"
    if schedule["last_round_started_at"] is not None:
        took = schedule["last_round_finished_at"] - schedule["last_round_started_at"]
        last = f"{when(schedule['last_round_started_at'], now)}, took {duration(took)}"
    results = [r for r in document["results"] if r["available"]]
    failed = sum(1 for r in results if not r["success"])
    return {
        "logical": host["logical_cpus"], "physical": host["physical_cpus"] or "unknown",
        "usable": f"{host['usable_cpus']:g}", "why": cpu_reason(host),
        "interval": interval,
        "duty": f"{schedule['duty_cycle_ratio']:.1%}" if schedule["duty_cycle_ratio"] is not None else "—",
        "budget": f"{schedule['duty_cycle_budget']:.0%}",
        "last": last,
        "steps": {"total": len(results), "succeeded": len(results) - failed, "failed": failed} if results else None,
        "running": (when(schedule["round_running_since"], now)
                    if schedule["round_running_since"] is not None and document["results"] else None),
        "next": when(schedule["next_round_at"], now),
    }


def cpu_reason(host: Mapping[str, Any]) -> str:
    """Why the usable count is what it is."""
    logical, affinity, quota = host["logical_cpus"], host["affinity_cpus"], host["cgroup_quota_cpus"]
    reasons = [f"the CPU affinity mask allows {affinity} of {logical}" if affinity < logical
               else f"the CPU affinity mask allows all {logical}"]
    reasons.append(f"a cgroup CPU quota allows {quota:g}" if quota else "no cgroup CPU quota")
    return "; ".join(reasons)


def first_round_section(document: Document, now: float) -> Optional[View]:
    """The banner while the first round runs: nothing else to show yet."""
    if document["results"]:
        return None
    schedule = document["schedule"]
    return {"started": when(schedule["round_running_since"] or schedule["exporter_started_at"], now)}


# --- interpreters, workloads and their steps -----------------------------------------------


def interpreters_section(document: Document, now: float) -> View:
    history = document.get("history", {})
    series = {(s["interpreter"], s["workload"], s["mode"], s["workers"]): s for s in history.get("steps", [])}
    identities = history.get("identities", [])
    return {"interpreters": [interpreter_view(document, interpreter, series, identities, now)
                             for interpreter in document["interpreters"]]}


def interpreter_view(document: Document, interpreter: Mapping[str, Any], series: Mapping[tuple, Mapping[str, Any]],
                     identities: Sequence[Mapping[str, Any]], now: float) -> View:
    name = interpreter["name"]
    results = [r for r in document["results"] if r["interpreter"] == name]
    verdicts = {v["workload"]: v["verdict"] for v in document.get("workload_verdicts", []) if v["interpreter"] == name}
    mine = [i for i in identities if i["interpreter"] == name]
    workloads = []
    for workload in dict.fromkeys(r["workload"] for r in results):
        rows = [step_row(r, series.get((name, r["workload"], r["mode"], r["workers"])), mine)
                for r in results if r["workload"] == workload]
        workloads.append({"name": workload, "verdict": verdicts.get(workload), "rows": rows})
    changes = [{"when": when(i["since"], now), "identity": i["identity"]} for i in mine]
    return {"name": name, "identity": identity_text(interpreter), "workloads": workloads,
            "changes": changes if len(changes) > 1 else []}


def identity_text(interpreter: Mapping[str, Any]) -> str:
    if interpreter.get("version") is None:
        return f"{interpreter['path']} (did not report its identity)"
    return f"{results.identity_text(interpreter)} (at run time) — {interpreter['path']}"


def step_row(r: Mapping[str, Any], series: Optional[Mapping[str, Any]] = None,
             identities: Sequence[Mapping[str, Any]] = ()) -> View:
    """One table row. ``state`` (``history.outcome``): ``ok`` (a measured speedup),
    ``estimated`` (the host was too busy for the wall clock; the idle-host estimate from the
    kernel's accounting stands in), ``busy`` (no figure could tell: a busy host, an unsteady
    figure; what was measured is still shown), ``failed`` or ``unavailable`` (no figures)."""
    row = {"workload": r["workload"], "mode": r["mode"], "workers": r["workers"],
           "sparkline": sparkline(series, r["workers"], identities) if series else None}
    if not r["available"]:
        return row | {"state": "unavailable", "speedup": "unavailable", "verdict": clip(r["message"], VERDICT_CHARS)}
    # An unsteady figure reads "unsteady", not an estimate: as the terminal report shows it.
    state = outcome(r["success"], r["speedup"], None if r.get("unsteady") else r.get("idle_speedup"))
    if state == FAILED:
        return row | {"state": state, "speedup": f"failed ({r['reason']})", "verdict": clip(r["message"], VERDICT_CHARS)}
    measured = {"state": state, "efficiency": number(r["efficiency"], "{:.0%}"), "cores_used": number(r["cores_used"]),
                "cores": core_bars(r), "load_split": load_split(r),
                "verdict": clip(r.get("verdict") or "baseline (T1)", VERDICT_CHARS)}
    if state == OK:
        interval, kind = speedup_interval(r["speedup"], r["speedup_ci"], r["speedup_spread"])
        return row | measured | {"speedup": f"{r['speedup']:.2f}×", "interval": interval_text(interval),
                                 "interval_kind": kind}
    if state == ESTIMATED:
        return row | measured | {"speedup": f"~{r['idle_speedup']:.2f}×",
                                 "interval": interval_text(r.get("idle_speedup_ci")),
                                 "interval_kind": "idle-host estimate: workers runnable at once × their rate, from the "
                                                  "kernel's accounting (the host was too busy for the wall clock)"}
    why = r.get("unsteady_reason") if r.get("unsteady") else r.get("inconclusive_reason")
    return row | measured | {"speedup": "unsteady" if r.get("unsteady") else "cannot tell", "interval": "—",
                             "interval_kind": why or ""}


def interval_text(interval: Optional[Sequence[float]]) -> str:
    return f"{interval[0]:.2f}–{interval[1]:.2f}" if interval else "—"


# --- the SVG pictures' geometry ---------------------------------------------------------------


def busy_colour(fraction: float) -> str:
    return "#2e7d32" if fraction >= 0.75 else "#f9a825" if fraction >= 0.25 else "#90a4ae"


def core_bars(result: Mapping[str, Any]) -> Optional[View]:
    """One bar per logical CPU: its busy fraction during the step's timed windows, whoever
    kept it busy (the kernel's per-CPU counters cannot tell the probe from other load)."""
    cores = list(result.get("core_utilisation") or [])
    if not cores:
        return None
    many = len(cores) > MAX_CORE_BARS
    step = max(1, CORE_STRIP_WIDTH // len(cores)) if many else CORE_BAR_WIDTH + CORE_BAR_GAP
    bar_width = step if many else CORE_BAR_WIDTH
    labelled = len(cores) <= LABELLED_CPUS
    height = CORE_BAR_HEIGHT + (LABEL_HEIGHT if labelled else 0)
    bars = []
    for cpu, fraction in enumerate(cores):
        filled = max(0.0, min(1.0, float(fraction))) * CORE_BAR_HEIGHT
        bars.append({"cpu": cpu, "busy": f"{fraction:.3f}", "title": f"cpu{cpu}: {fraction:.0%} busy",
                     "x": cpu * step, "label_x": cpu * step + bar_width / 2,
                     "filled_y": f"{CORE_BAR_HEIGHT - filled:.1f}", "filled": f"{filled:.1f}",
                     "colour": busy_colour(fraction)})
    return {"width": step * len(cores), "height": height, "bar_width": bar_width, "bar_height": CORE_BAR_HEIGHT,
            "labelled": labelled, "title": describe_load(result), "bars": bars}


def describe_load(result: Mapping[str, Any]) -> str:
    cores = result.get("core_utilisation") or []
    text = f"{len(cores)} CPUs, {sum(cores):.2f} cores busy in all"
    if result.get("cores_used") is not None:
        text += f"; the probe's workers used {result['cores_used']:.2f} cores"
    if isinstance(result.get("interference_cores"), (int, float)):
        text += f"; other load {result['interference_cores']:.2f} cores"
    return text


def load_split(result: Mapping[str, Any]) -> Optional[View]:
    """Probe load against other load, as one bar scaled to the host's CPUs (only when the
    probe measured the other load: the per-CPU counters alone cannot tell them apart)."""
    cpus, probe, other = len(result.get("core_utilisation") or []), result.get("cores_used"), result.get("interference_cores")
    if not cpus or not isinstance(probe, (int, float)) or not isinstance(other, (int, float)):
        return None
    probe_width = min(LOAD_SPLIT_WIDTH, LOAD_SPLIT_WIDTH * probe / cpus)
    other_width = min(LOAD_SPLIT_WIDTH - probe_width, LOAD_SPLIT_WIDTH * max(0.0, other) / cpus)
    return {"width": LOAD_SPLIT_WIDTH, "height": LOAD_SPLIT_HEIGHT,
            "title": f"probe {probe:.2f} cores, other load {other:.2f} cores of {cpus} CPUs",
            "probe_width": f"{probe_width:.1f}", "other_width": f"{other_width:.1f}"}


def sparkline(series: Mapping[str, Any], workers: int, identities: Sequence[Mapping[str, Any]] = ()) -> Optional[View]:
    """The step's speedup over the last rounds: measured figures on the line, idle-host
    estimates as hollow amber dots on it (the host was too busy for the wall clock); rounds
    without a figure are ticks at the bottom, red where the step failed, amber where the host
    was too busy to tell; a dashed line where the interpreter's identity changed."""
    points = series["points"]
    if not points:
        return None
    values = [p[1] for p in points]
    outcomes = series.get("outcomes") or [OK if v is not None else FAILED for v in values]
    known_values = [v for v in values if v is not None]
    top = max([float(workers)] + known_values)
    w, h = SPARKLINE_WIDTH, SPARKLINE_HEIGHT
    dx = w / max(1, len(points) - 1)

    def y(value: float) -> str:
        return f"{h - 2 - (h - 4) * value / top:.1f}"

    def ticks(wanted: str) -> list[str]:
        return [f"{max(0.0, i * dx - 1):.1f}" for i, o in enumerate(outcomes) if o == wanted]

    known = [(f"{i * dx:.1f}", y(v)) for i, v in enumerate(values) if v is not None]
    last = values[-1]
    summary = (f"{len(points)} rounds; last {'~' if outcomes[-1] == ESTIMATED else ''}{number(last)}; "
               + (f"min {min(known_values):.2f}, max {max(known_values):.2f}" if known_values else "no figure")
               + f"; {outcomes.count(FAILED)} failed"
               + (f"; {plural(outcomes.count(ESTIMATED), 'idle-host estimate')}" if ESTIMATED in outcomes else "")
               + (f"; {outcomes.count(BUSY)} without a figure (host too busy)" if BUSY in outcomes else ""))
    return {"width": w, "height": h, "title": summary, "ideal_y": y(workers),
            "line": " ".join(f"{x},{yy}" for x, yy in known) if len(known) > 1 else None,
            "last": known[-1] if known and last is not None and outcomes[-1] == OK else None,
            "estimates": [(f"{i * dx:.1f}", y(v)) for i, (v, o) in enumerate(zip(values, outcomes))
                          if v is not None and o == ESTIMATED],
            "failed_x": ticks(FAILED), "busy_x": ticks(BUSY),
            "changes": identity_changes([p[0] for p in points], identities, dx)}


def identity_changes(times: Sequence[float], identities: Sequence[Mapping[str, Any]], dx: float) -> list[View]:
    """Where, between two of the sparkline's rounds, the interpreter started running as
    something else (an upgrade, PYTHON_GIL, a rebuilt image): x halfway between them."""
    marks = []
    for change in identities[1:]:
        after = next((i for i, t in enumerate(times) if t >= change["since"]), None)
        if after is None or after == 0:
            continue  # after the last round shown, or before the first one
        before = identity_at(identities, times[after - 1])
        marks.append({"x": f"{(after - 0.5) * dx:.1f}",
                      "title": f"interpreter changed: {before or 'unknown'} → {change['identity']}"})
    return marks


def identity_at(identities: Sequence[Mapping[str, Any]], timestamp: float) -> Optional[str]:
    """The identity in force at ``timestamp`` (identities oldest first)."""
    current = None
    for entry in identities:
        if entry["since"] > timestamp:
            break
        current = entry["identity"]
    return current


# --- failures -------------------------------------------------------------------------------


def failures_section(document: Document, now: float) -> View:
    failing = [r for r in document["results"] if r["available"] and not r["success"]]
    recent = document.get("history", {}).get("failures", [])
    shown = recent[:RECENT_FAILURES_SHOWN]
    return {"now": [failure_view(steps) for steps in grouped(failing)],
            "recent": [failure_view(steps, when(steps[0].get("timestamp"), now)) for steps in grouped(shown)],
            "kept": len(recent), "shown": len(shown)}


def grouped(failures: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """A workload that dies usually fails every step alike: one entry per distinct failure."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for f in failures:
        key = (f["interpreter"], f["workload"], f["reason"], f["message"], tuple(f.get("log") or ()), f.get("timestamp"))
        groups.setdefault(key, []).append(f)
    return list(groups.values())


def failure_view(steps: Sequence[Mapping[str, Any]], at: str = "") -> View:
    first = steps[0]
    log = [clip(line, MAX_LOG_LINE_CHARS) for line in (first.get("log") or [])[-MAX_LOG_LINES:]]
    return {"interpreter": first["interpreter"], "workload": first["workload"],
            "steps": ", ".join(f"{s['mode']} ×{s['workers']}" for s in steps), "at": at,
            "reason": first["reason"] or "error", "message": clip(first["message"], MAX_MESSAGE_CHARS),
            "log": "\n".join(log)}


# --- watched services ----------------------------------------------------------------------


def services_section(document: Document, now: float) -> Optional[View]:
    """The watched groups (``document["services"]``, the ``/api/v1/services`` document);
    left out when the collector is off."""
    services = document.get("services")
    if not services or not services.get("enabled"):
        return None
    rows = []
    for group in services["groups"]:
        cohorts = group["interpreters"] or [None]
        for i, c in enumerate(cohorts):
            rows.append({"first": i == 0, "span": len(cohorts), "group": group["group"],
                         "state": group["state"] or "none", "state_text": group["state_text"],
                         "cohort": None if c is None else {
                             "identity": status.identity_text(c), "processes": c["processes"],
                             "cores_used": number(c["cores_used"]), "busy_threads": c["busy_threads"],
                             "parallelism": number(c["parallelism_ratio"], "{:.0%}"),
                             "switches": number(c["voluntary_context_switches_per_busy_thread"], "{:.0f}/s")}})
    return {"window": number(services["window_seconds"], "{:.1f} s"),
            "interval": number(services["interval_seconds"], "{:g} s"),
            "scanned": services["scanned_processes"], "scan": number(services["scan_seconds"], "{:.3f} s"),
            "idle_cores": number(services["host_idle_cores"]),
            "unreadable": ", ".join(f"{k} {v}" for k, v in services["errors"].items() if v) or "none",
            "rows": rows}


SECTIONS: tuple[Section, ...] = (
    Section("sections/host.html", host_section),
    Section("sections/first_round.html", first_round_section),
    Section("sections/interpreters.html", interpreters_section),
    Section("sections/failures.html", failures_section),
    Section("sections/services.html", services_section),
)
