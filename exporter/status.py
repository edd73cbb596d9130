"""The status page at ``/``, ``/api/v1/results`` and ``/config``: the last round without Grafana.

blackbox_exporter's landing page shows recent probes with their debug logs; this page shows
the last round's figures, the per-core picture, each step's recent history and what failed
and why. The page is rendered from the very document ``/api/v1/results`` serves, so the two
cannot disagree. Server-rendered HTML with inline SVG and inline CSS only: no script, no
external resource, so it works offline and under the strict Content-Security-Policy it sends.
Everything that comes from configuration or workload output is escaped.
"""

from __future__ import annotations

import html
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, Sequence

import yaml

from exporter import __version__, report
from exporter.collector import Snapshot
from exporter.config import PROBE_FIELDS, TOP_FIELDS, Config
from exporter.history import MAX_LOG_LINE_CHARS, MAX_LOG_LINES, MAX_MESSAGE_CHARS, History
from exporter.webconfig import WebConfig

log = logging.getLogger(__name__)
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# No script, no frames, no requests: inline styles and data: images (the favicon) only.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SPARKLINE_WIDTH, SPARKLINE_HEIGHT = 140, 28
CORE_BAR_WIDTH, CORE_BAR_GAP, CORE_BAR_HEIGHT = 12, 3, 32
LABELLED_CPUS = 16  # up to this many bars get their CPU number underneath
LABEL_HEIGHT = 10
MAX_CORE_BARS = 128  # wider hosts get one strip of thinner bars rather than a huge picture
RECENT_FAILURES_SHOWN = 20


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


class StatusSource(Protocol):
    """What the pages read from the daemon."""

    config: Config
    history: History

    def snapshot(self) -> Snapshot: ...

    def schedule(self) -> Schedule: ...


# --- the document -----------------------------------------------------------------------


def results_document(snapshot: Snapshot, schedule: Schedule, history: History) -> dict[str, Any]:
    """``probe --json``'s document for the last round, plus a verdict per step, the
    schedule and the history under keys of their own."""
    reports = list(snapshot.reports.values())
    document = report.json_document(reports, snapshot.host)
    steps = [(s, r) for r in reports for s in r.steps]
    for result, (step, owner) in zip(document["results"], steps):
        result["verdict"] = (None if step.mode == "sequential"
                             else report.mode_verdict(step, owner, snapshot.host.usable))
    document["workload_verdicts"] = [
        {"interpreter": r.interpreter.name, "workload": r.spec.workload, "verdict": verdict}
        for r, verdict in zip(reports, document["verdicts"])]
    document["exporter"] = {"version": __version__}
    document["schedule"] = asdict(schedule)
    document["history"] = history.to_json()
    return document


def config_document(config: Config, web_config: Optional[WebConfig]) -> dict[str, Any]:
    """The configuration in force, in the config file's own keys (it loads back as is);
    the web config's password hashes are never shown."""
    top = {key: getattr(config, name) for key, (name, _) in TOP_FIELDS.items()}
    probe = {key: getattr(config.probe, name) for key, (name, _) in PROBE_FIELDS.items()}
    document: dict[str, Any] = dict(top)
    document["probe"] = {k: v for k, v in probe.items() if v is not None and v != ()}
    document["interpreters"] = [{"name": i.name, "path": i.path, "env": dict(i.env)}
                                for i in config.interpreter_list()]
    if config.import_check_modules:
        document["import_check"] = {"modules": list(config.import_check_modules)}
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
    header = (f"# configuration in force, loaded from {config_path}\n" if config_path
              else "# configuration in force: built-in defaults (no --config.file)\n")
    return header + yaml.safe_dump(config_document(config, web_config), sort_keys=False, allow_unicode=True)


# --- formatting helpers -----------------------------------------------------------------


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


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


def speedup_interval(result: Mapping[str, Any]) -> tuple[Optional[list[float]], str]:
    """The step's interval and what it is: the precision work's confidence interval, or else
    the median ± half the repeats' relative spread (what ``probe`` prints as ±)."""
    ci = result.get("speedup_ci")
    if ci:
        return [float(ci[0]), float(ci[1])], "confidence interval"
    speedup, spread = result.get("speedup"), result.get("speedup_spread")
    if speedup is None or spread is None:
        return None, ""
    return [speedup * (1 - spread / 2), speedup * (1 + spread / 2)], "repeats' spread"


# --- SVG pictures -----------------------------------------------------------------------


def busy_colour(fraction: float) -> str:
    return "#2e7d32" if fraction >= 0.75 else "#f9a825" if fraction >= 0.25 else "#90a4ae"


def core_bars_svg(result: Mapping[str, Any]) -> str:
    """One bar per logical CPU: its busy fraction during the step's timed windows, whoever
    kept it busy (the kernel's per-CPU counters cannot tell the probe from other load)."""
    cores = list(result.get("core_utilisation") or [])
    if not cores:
        return ""
    step = CORE_BAR_WIDTH + CORE_BAR_GAP if len(cores) <= MAX_CORE_BARS else max(1, 480 // len(cores))
    bar_width = CORE_BAR_WIDTH if len(cores) <= MAX_CORE_BARS else step
    width = step * len(cores)
    labelled = len(cores) <= LABELLED_CPUS
    height = CORE_BAR_HEIGHT + (LABEL_HEIGHT if labelled else 0)
    parts = [f'<svg class="cores" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{esc(describe_load(result))}</title>"]
    for cpu, fraction in enumerate(cores):
        x, filled = cpu * step, max(0.0, min(1.0, float(fraction))) * CORE_BAR_HEIGHT
        parts.append(f'<g class="cpu-bar" data-cpu="{cpu}" data-busy="{fraction:.3f}">'
                     f"<title>cpu{cpu}: {fraction:.0%} busy</title>"
                     f'<rect x="{x}" y="0" width="{bar_width}" height="{CORE_BAR_HEIGHT}" fill="#eceff1"/>'
                     f'<rect x="{x}" y="{CORE_BAR_HEIGHT - filled:.1f}" width="{bar_width}" '
                     f'height="{filled:.1f}" fill="{busy_colour(fraction)}"/>'
                     + (f'<text x="{x + bar_width / 2}" y="{height - 1}" font-size="8" text-anchor="middle" '
                        f'fill="#78909c">{cpu}</text>' if labelled else "") + "</g>")
    parts.append("</svg>")
    return "".join(parts)


def describe_load(result: Mapping[str, Any]) -> str:
    cores = result.get("core_utilisation") or []
    text = f"{len(cores)} CPUs, {sum(cores):.2f} cores busy in all"
    if result.get("cores_used") is not None:
        text += f"; the probe's workers used {result['cores_used']:.2f} cores"
    if isinstance(result.get("interference_cores"), (int, float)):
        text += f"; other load {result['interference_cores']:.2f} cores"
    return text


def load_split_svg(result: Mapping[str, Any]) -> str:
    """Probe load against other load, as one bar scaled to the host's CPUs (only when the
    probe measured the other load: the per-CPU counters alone cannot tell them apart)."""
    cpus, probe, other = len(result.get("core_utilisation") or []), result.get("cores_used"), result.get("interference_cores")
    if not cpus or not isinstance(probe, (int, float)) or not isinstance(other, (int, float)):
        return ""
    width, height = 120, 8
    probe_w = min(width, width * probe / cpus)
    other_w = min(width - probe_w, width * max(0.0, other) / cpus)
    return (f'<svg class="load-split" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'xmlns="http://www.w3.org/2000/svg"><title>probe {probe:.2f} cores, other load {other:.2f} cores '
            f'of {cpus} CPUs</title><rect width="{width}" height="{height}" fill="#eceff1"/>'
            f'<rect width="{probe_w:.1f}" height="{height}" fill="#1565c0"/>'
            f'<rect x="{probe_w:.1f}" width="{other_w:.1f}" height="{height}" fill="#ef6c00"/></svg>')


def sparkline_svg(points: Sequence[Sequence[Any]], workers: int) -> str:
    """The step's speedup over the last rounds; failed rounds are red ticks at the bottom."""
    if not points:
        return ""
    values = [p[1] for p in points]
    top = max([float(workers)] + [v for v in values if v is not None])
    w, h = SPARKLINE_WIDTH, SPARKLINE_HEIGHT
    dx = w / max(1, len(points) - 1)

    def y(value: float) -> float:
        return h - 2 - (h - 4) * value / top

    known = [(i * dx, y(v)) for i, v in enumerate(values) if v is not None]
    ok = [v for v in values if v is not None]
    summary = (f"{len(points)} rounds; last {number(values[-1])}; "
               + (f"min {min(ok):.2f}, max {max(ok):.2f}" if ok else "no successful round")
               + f"; {values.count(None)} failed")
    parts = [f'<svg class="sparkline" role="img" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{esc(summary)}</title>',
             f'<line x1="0" x2="{w}" y1="{y(workers):.1f}" y2="{y(workers):.1f}" stroke="#cfd8dc" '
             f'stroke-dasharray="2 2"/>']
    if len(known) > 1:
        coords = " ".join(f"{x:.1f},{yy:.1f}" for x, yy in known)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="#1565c0" stroke-width="1.5"/>')
    if known:
        parts.append(f'<circle cx="{known[-1][0]:.1f}" cy="{known[-1][1]:.1f}" r="2" fill="#1565c0"/>')
    for i, value in enumerate(values):
        if value is None:
            parts.append(f'<rect class="failed-round" x="{max(0.0, i * dx - 1):.1f}" y="{h - 4}" width="2" '
                         f'height="4" fill="#c62828"/>')
    parts.append("</svg>")
    return "".join(parts)


# --- the page ---------------------------------------------------------------------------

STYLE = """
:root { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #212121; }
body { margin: 0 auto; padding: 0 16px 32px; max-width: 1200px; line-height: 1.4; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 16px;
         border-bottom: 1px solid #cfd8dc; padding: 12px 0 8px; }
header h1 { font-size: 1.3rem; margin: 0; }
nav a { margin-right: 12px; white-space: nowrap; }
h2 { font-size: 1.1rem; margin: 24px 0 4px; }
h3 { font-size: 1rem; margin: 16px 0 4px; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 8px 0; }
.facts dt { font-weight: 600; } .facts dd { margin: 0; overflow-wrap: anywhere; }
.banner { background: #e3f2fd; border-left: 4px solid #1565c0; padding: 8px 12px; margin: 12px 0; }
.identity { color: #455a64; overflow-wrap: anywhere; }
.verdict { font-weight: 600; margin: 4px 0 8px; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: right; padding: 4px 8px; border-bottom: 1px solid #eceff1; vertical-align: middle; }
th:first-child, td:first-child, th.pictures, td.pictures, th.verdict-cell, td.verdict-cell { text-align: left; }
td { white-space: nowrap; } td.verdict-cell { white-space: normal; overflow-wrap: anywhere; }
.pictures-row { display: flex; flex-wrap: wrap; align-items: flex-end; gap: 4px 10px; }
td.failed { color: #c62828; }
td.unavailable { color: #78909c; }
.muted { color: #78909c; }
svg { display: block; }
.failure { border-left: 4px solid #c62828; padding: 4px 12px; margin: 8px 0; background: #fff8f8; }
.failure p { margin: 2px 0; overflow-wrap: anywhere; }
pre { background: #263238; color: #eceff1; padding: 8px; overflow-x: auto; white-space: pre-wrap;
      overflow-wrap: anywhere; font-size: 0.85rem; margin: 4px 0; }
footer { margin-top: 32px; color: #78909c; font-size: 0.85rem; }
/* Narrow screens: each row becomes a card, each cell labelled by its column. */
@media (max-width: 720px) {
  table, tbody, tr, td { display: block; width: auto; }
  thead { display: none; }
  tr { border: 1px solid #cfd8dc; margin: 8px 0; padding: 4px 0; }
  td { text-align: left; border: none; padding: 2px 8px; }
  td::before { content: attr(data-label) ": "; font-weight: 600; }
  td.pictures::before, td.verdict-cell::before { display: block; }
  td:empty { display: none; }
}
"""

COLUMNS = ("mode", "workers", "speedup", "interval", "efficiency", "cores used", "per-core load · history", "verdict")


def render_page(document: Mapping[str, Any], telemetry_path: str = "/metrics", now: Optional[float] = None) -> str:
    """The whole status page from a ``results_document``."""
    now = time.time() if now is None else now
    body = [header_html(document, telemetry_path), host_html(document, now)]
    if not document["results"]:
        body.append(first_round_html(document["schedule"], now))
    history = {(s["interpreter"], s["workload"], s["mode"], s["workers"]): s["points"]
               for s in document.get("history", {}).get("steps", [])}
    for interpreter in document["interpreters"]:
        body.append(interpreter_html(document, interpreter, history))
    body.append(failures_html(document, now))
    body.append(footer_html(document, telemetry_path))
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<link rel="icon" href="data:,">\n'
            "<title>Python Parallelism Exporter</title>\n"
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def links_html(telemetry_path: str) -> str:
    links = [(telemetry_path, "Metrics"), ("/api/v1/results", "Results (JSON)"), ("/config", "Configuration"),
             ("/-/healthy", "Health"), ("/-/ready", "Readiness")]
    return "<nav>" + " ".join(f'<a href="{esc(path)}">{esc(label)}</a>' for path, label in links) + "</nav>"


def header_html(document: Mapping[str, Any], telemetry_path: str) -> str:
    return (f'<header><h1>Python Parallelism Exporter</h1><span class="muted">version '
            f'{esc(document["exporter"]["version"])}</span>{links_html(telemetry_path)}</header>')


def cpu_reason(host: Mapping[str, Any]) -> str:
    """Why the usable count is what it is."""
    logical, affinity, quota = host["logical_cpus"], host["affinity_cpus"], host["cgroup_quota_cpus"]
    reasons = [f"the CPU affinity mask allows {affinity} of {logical}" if affinity < logical
               else f"the CPU affinity mask allows all {logical}"]
    reasons.append(f"a cgroup CPU quota allows {quota:g}" if quota else "no cgroup CPU quota")
    return "; ".join(reasons)


def host_html(document: Mapping[str, Any], now: float) -> str:
    host, schedule = document["host"], document["schedule"]
    physical = host["physical_cpus"] if host["physical_cpus"] else "unknown"
    interval = f"every {duration(schedule['interval_seconds'])}"
    if schedule["interval_seconds"] > schedule["configured_interval_seconds"] + 1e-6:
        interval += (f" (configured {duration(schedule['configured_interval_seconds'])}, stretched to keep "
                     f"within the duty-cycle budget)")
    duty = (f"{schedule['duty_cycle_ratio']:.1%}" if schedule["duty_cycle_ratio"] is not None else "—")
    last = "—"
    if schedule["last_round_started_at"] is not None:
        took = schedule["last_round_finished_at"] - schedule["last_round_started_at"]
        last = f"{when(schedule['last_round_started_at'], now)}, took {duration(took)}"
    running = (f"<dt>Running now</dt><dd>a round started {esc(when(schedule['round_running_since'], now))}</dd>"
               if schedule["round_running_since"] is not None and document["results"] else "")
    results = [r for r in document["results"] if r["available"]]
    failed = sum(1 for r in results if not r["success"])
    outcome = (f"<dt>Steps</dt><dd>{len(results) - failed} of {len(results)} succeeded"
               + (f', <a href="#failures">{failed} failed</a>' if failed else "") + "</dd>") if results else ""
    return (f'<section id="host"><h2>Host</h2><dl class="facts">'
            f"<dt>CPUs</dt><dd>{host['logical_cpus']} logical, {esc(physical)} physical, "
            f"<strong>{host['usable_cpus']:g} usable</strong>: {esc(cpu_reason(host))}</dd>"
            f"<dt>Schedule</dt><dd>a round {esc(interval)}; probing takes {duty} of the time "
            f"(budget {schedule['duty_cycle_budget']:.0%})</dd>"
            f"<dt>Last round</dt><dd>{esc(last)}</dd>{outcome}{running}"
            f"<dt>Next round</dt><dd>{esc(when(schedule['next_round_at'], now))}</dd>"
            f"</dl></section>")


def first_round_html(schedule: Mapping[str, Any], now: float) -> str:
    started = schedule["round_running_since"] or schedule["exporter_started_at"]
    return (f'<p class="banner" id="first-round">The first round is running, started at '
            f"{esc(when(started, now))}. Results appear here as each workload finishes.</p>")


def identity_text(interpreter: Mapping[str, Any]) -> str:
    if "version" not in interpreter:
        return f"{interpreter['path']} (did not report its identity)"
    build = "free-threaded build" if interpreter["free_threaded_build"] else "GIL build"
    gil = "GIL disabled at run time" if not interpreter["gil_enabled"] else "GIL enabled at run time"
    return f"{interpreter['implementation']} {interpreter['version']}, {build}, {gil} — {interpreter['path']}"


def interpreter_html(document: Mapping[str, Any], interpreter: Mapping[str, Any],
                     history: Mapping[tuple, Sequence]) -> str:
    name = interpreter["name"]
    results = [r for r in document["results"] if r["interpreter"] == name]
    workloads = list(dict.fromkeys(r["workload"] for r in results))
    verdicts = {v["workload"]: v["verdict"] for v in document.get("workload_verdicts", []) if v["interpreter"] == name}
    parts = [f'<section class="interpreter" data-interpreter="{esc(name)}"><h2>{esc(name)}</h2>'
             f'<p class="identity">{esc(identity_text(interpreter))}</p>']
    for workload in workloads:
        rows = [r for r in results if r["workload"] == workload]
        parts.append(f'<h3>{esc(workload)}</h3>')
        verdict = verdicts.get(workload)
        if verdict is not None:
            parts.append(f'<p class="verdict">{esc(verdict)}</p>')
        parts.append(steps_table(rows, history))
    parts.append("</section>")
    return "".join(parts)


def steps_table(rows: Sequence[Mapping[str, Any]], history: Mapping[tuple, Sequence]) -> str:
    css = {"per-core load · history": ' class="pictures"', "verdict": ' class="verdict-cell"'}
    head = "".join(f"<th{css.get(c, '')}>{esc(c)}</th>" for c in COLUMNS)
    body = []
    for r in rows:
        key = (r["interpreter"], r["workload"], r["mode"], r["workers"])
        body.append(step_row(r, history.get(key, [])))
    return f'<table class="steps"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def cell(label: str, content: str, css: str = "") -> str:
    return f'<td data-label="{esc(label)}"' + (f' class="{css}"' if css else "") + f">{content}</td>"


def step_row(r: Mapping[str, Any], points: Sequence) -> str:
    attrs = (f' data-workload="{esc(r["workload"])}" data-mode="{esc(r["mode"])}" data-workers="{r["workers"]}"')
    first = [cell("mode", esc(r["mode"])), cell("workers", str(r["workers"]))]
    spark = sparkline_svg(points, r["workers"])
    if not r["available"]:
        rest = [cell("speedup", "unavailable", "unavailable"), cell("interval", ""), cell("efficiency", ""),
                cell("cores used", ""), cell("per-core load · history", spark, "pictures"),
                cell("verdict", esc(clip(r["message"], 300)), "verdict-cell unavailable")]
        return f'<tr class="unavailable"{attrs}>' + "".join(first + rest) + "</tr>"
    if not r["success"] or r["speedup"] is None:
        why = (f"failed ({r['reason']})" if not r["success"] else "cannot tell" if r.get("conclusive") is False
               else "no figure")
        detail = r["message"] or r.get("unsteady_reason") or r.get("inconclusive_reason") or ""
        rest = [cell("speedup", esc(why), "failed"), cell("interval", ""), cell("efficiency", ""),
                cell("cores used", ""), cell("per-core load · history", spark, "pictures"),
                cell("verdict", esc(clip(detail, 300)), "verdict-cell failed")]
        return f'<tr class="failed"{attrs}>' + "".join(first + rest) + "</tr>"
    interval, kind = speedup_interval(r)
    interval_text = f"{interval[0]:.2f}–{interval[1]:.2f}" if interval else "—"
    title = f' title="{esc(kind)}"' if kind else ""
    pictures = f'<div class="pictures-row">{core_bars_svg(r) + load_split_svg(r) + spark}</div>'
    rest = [cell("speedup", f'<span class="speedup">{r["speedup"]:.2f}×</span>'),
            cell("interval", f'<span class="interval"{title}>{interval_text}</span>'),
            cell("efficiency", f'<span class="efficiency">{number(r["efficiency"], "{:.0%}")}</span>'),
            cell("cores used", f'<span class="cores-used">{number(r["cores_used"])}</span>'),
            cell("per-core load · history", pictures, "pictures"),
            cell("verdict", esc(r.get("verdict") or "baseline (T1)"), "verdict-cell")]
    return f'<tr class="ok"{attrs}>' + "".join(first + rest) + "</tr>"


def failures_html(document: Mapping[str, Any], now: float) -> str:
    failing = [r for r in document["results"] if r["available"] and not r["success"]]
    recent = document.get("history", {}).get("failures", [])
    parts = ['<section id="failures"><h2>Failures</h2>']
    if not failing:
        parts.append('<p class="muted">No step failed in the last round.</p>')
    for (interpreter, workload, reason, message, log, _), steps in grouped(failing).items():
        parts.append(failure_html(interpreter, workload, steps_text(steps), reason, message, log, "failure-now"))
    if recent:
        shown = recent[:RECENT_FAILURES_SHOWN]
        parts.append(f"<details><summary>Recent failures ({len(recent)} kept, newest first"
                     + (f", {len(shown)} shown; all in /api/v1/results" if len(shown) < len(recent) else "")
                     + ")</summary>")
        for (interpreter, workload, reason, message, log, timestamp), steps in grouped(shown).items():
            parts.append(failure_html(interpreter, workload, steps_text(steps), reason, message, log,
                                      "failure-past", when(timestamp, now)))
        parts.append("</details>")
    parts.append("</section>")
    return "".join(parts)


def grouped(failures: Sequence[Mapping[str, Any]]) -> dict[tuple, list[Mapping[str, Any]]]:
    """A workload that dies usually fails every step alike: one entry per distinct failure."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for f in failures:
        key = (f["interpreter"], f["workload"], f["reason"], f["message"], tuple(f.get("log") or ()), f.get("timestamp"))
        groups.setdefault(key, []).append(f)
    return groups


def steps_text(steps: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{s['mode']} ×{s['workers']}" for s in steps)


def clip(text: str, limit: int) -> str:
    """Workload output can be huge; the page shows a bounded part of it."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


def failure_html(interpreter: str, workload: str, steps: str, reason: Optional[str], message: str,
                 log: Sequence[str], css: str, at: str = "") -> str:
    message = clip(message, MAX_MESSAGE_CHARS)
    log = [clip(line, MAX_LOG_LINE_CHARS) for line in log[-MAX_LOG_LINES:]]
    log_html = (f"<pre>{esc(chr(10).join(log))}</pre>" if log
                else '<p class="muted">The runner wrote nothing to stderr.</p>')
    return (f'<div class="failure {css}"><p><strong>{esc(interpreter)} · {esc(workload)} · {esc(steps)}'
            f'</strong>{" · " + esc(at) if at else ""}</p>'
            f'<p>reason: <code class="reason">{esc(reason or "error")}</code></p>'
            f'<p>message: <span class="message">{esc(message)}</span></p>{log_html}</div>')


def footer_html(document: Mapping[str, Any], telemetry_path: str) -> str:
    limit = document.get("history", {}).get("limit")
    return (f"<footer>Speedup = T1·N/TN against the sequential baseline; interval = confidence interval "
            f"where the probe computed one, else the median ± half the repeats' spread. History: the last "
            f"{esc(limit)} rounds per step (--history.limit). {links_html(telemetry_path)}</footer>")


# --- WSGI -------------------------------------------------------------------------------


def _respond(start: StartResponse, environ: Mapping[str, Any], body: bytes, content_type: str,
             extra: Sequence[tuple[str, str]] = ()) -> list[bytes]:
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "HEAD"):
        text = b"Method Not Allowed\n"
        start("405 Method Not Allowed", [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(text))), ("Allow", "GET, HEAD")])
        return [text]
    start("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body))),
                     ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"), *extra])
    return [b""] if method == "HEAD" else [body]


class StatusPages:
    """The WSGI apps of ``/``, ``/api/v1/results`` and ``/config`` for the web server's routes."""

    def __init__(self, source: StatusSource, *, telemetry_path: str = "/metrics",
                 web_config: Optional[WebConfig] = None, config_path: Optional[str] = None) -> None:
        self.source, self.telemetry_path = source, telemetry_path
        self.web_config, self.config_path = web_config, config_path

    def document(self) -> dict[str, Any]:
        return results_document(self.source.snapshot(), self.source.schedule(), self.source.history)

    def page(self, environ: dict[str, Any], start: StartResponse) -> list[bytes]:
        body = render_page(self.document(), self.telemetry_path).encode()
        return _respond(start, environ, body, "text/html; charset=utf-8",
                        [("Content-Security-Policy", CONTENT_SECURITY_POLICY), ("Referrer-Policy", "no-referrer")])

    def results(self, environ: dict[str, Any], start: StartResponse) -> list[bytes]:
        body = (json.dumps(self.document(), indent=1) + "\n").encode()
        return _respond(start, environ, body, "application/json")

    def config(self, environ: dict[str, Any], start: StartResponse) -> list[bytes]:
        body = config_text(self.source.config, self.web_config, self.config_path).encode()
        return _respond(start, environ, body, "text/plain; charset=utf-8")

    def routes(self) -> dict[str, WSGIApp]:
        return {path: self._guarded(app) for path, app in
                (("/", self.page), ("/api/v1/results", self.results), ("/config", self.config))}

    @staticmethod
    def _guarded(app: WSGIApp) -> WSGIApp:
        """A bug in a page costs that request a 500 and one log line, never the server."""
        def guarded(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
            try:
                return app(environ, start)
            except Exception:
                log.error("error rendering %s", environ.get("PATH_INFO"), exc_info=True)
                text = b"An error has occurred while rendering this page; see the exporter's log.\n"
                start("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8"),
                                                    ("Content-Length", str(len(text)))])
                return [text]
        return guarded
