"""The status page, /api/v1/results and /config: rendering, escaping, the bounded history,
and the routes behind the web app's basic auth (in-process: no socket is needed)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import bcrypt
import pytest
import yaml
from markupsafe import escape
from prometheus_client import CollectorRegistry

from exporter.pages import api
from exporter.stats import measurement
from exporter.pages import statuspage
from exporter.export.collector import empty_snapshot
from exporter.model.schedule import Schedule
from exporter.model.snapshot import Snapshot
from exporter.config.settings import Config, ProbeConfig
from exporter.config.loader import config_from_mapping
from exporter.pages.history import History
from exporter.host.cpus import HostCpus
from exporter.model.results import Identity, Interpreter, ProbeSpec, StepResult, WorkloadReport
from exporter.pages.handlers import StatusPages
from exporter.web.app import WebApp
from exporter.config.webconfig import load_web_config
from wsgiclient import Response, call

HOST = HostCpus(logical=4, physical=2, affinity=4, quota=2.5)
MARKUP = '<script>alert("x")</script> & <b>'


def summary(speedup: float, cores: list[float], spread: float = 0.04) -> measurement.Summary:
    return measurement.Summary(wall_seconds=0.5, speedup=speedup, speedup_spread=spread, efficiency=speedup / 2,
                               serial_fraction=None, throughput_units_per_second=4.0, throughput_ops_per_second=400.0,
                               cores_used=sum(cores), core_utilisation=cores, startup_seconds=0.01)


def workload_report(name: str = "cpython-3.13t", workload: str = "pure_python", *, fail_threads: bool = False,
                    threads_speedup: float = 1.9, started_at: float = 1_700_000_000.0) -> WorkloadReport:
    identity = Identity(version="3.13.5", implementation="cpython", executable="/opt/py", free_threaded_build=True,
                        gil_enabled=False, start_methods=("fork",), subinterpreters_unavailable=None)
    spec = ProbeSpec(workload, ("sequential", "threads"), (2,))
    sequential = StepResult(workload, "sequential", 1, success=True, summary=summary(1.0, [0.98, 0.05, 0.02, 0.01]))
    threads = StepResult(workload, "threads", 2, success=True, summary=summary(threads_speedup, [0.97, 0.96, 0.03, 0.0]))
    if fail_threads:
        threads = StepResult(workload, "threads", 2, reason="crash", message=f"interpreter died {MARKUP}",
                             log=["Traceback (most recent call last):", f"  {MARKUP}"])
    return WorkloadReport(Interpreter(name, "/opt/py"), spec, identity, steps=[sequential, threads],
                          started_at=started_at, duration_seconds=3.0)


def schedule(**changes: Any) -> Schedule:
    values: dict[str, Any] = dict(exporter_started_at=1_700_000_000.0, round_running_since=None,
                                  last_round_started_at=1_700_000_000.0, last_round_finished_at=1_700_000_004.0,
                                  next_round_at=1_700_000_300.0, interval_seconds=300.0,
                                  configured_interval_seconds=300.0, duty_cycle_ratio=0.013, duty_cycle_budget=0.05)
    values.update(changes)
    return Schedule(**values)


@dataclass
class FakeDaemon:
    """What the pages read, filled by hand: StatusSource without the probe lane."""

    config: Config = field(default_factory=Config)
    history: History = field(default_factory=History)
    reports: list[WorkloadReport] = field(default_factory=list)
    when: Schedule = field(default_factory=schedule)
    services: None = None  # no watcher: /api/v1/services answers null

    def snapshot(self) -> Snapshot:
        snapshot = empty_snapshot(self.config, HOST)
        return snapshot.with_round(self.reports)

    def schedule(self) -> Schedule:
        return self.when


def page_for(daemon: FakeDaemon, now: float = 1_700_000_010.0) -> str:
    document = api.results_document(daemon.snapshot(), daemon.schedule(), daemon.history)
    return statuspage.render_page(document, "/metrics", now=now)


# --- the document and the page ----------------------------------------------------------


def test_document_is_the_probe_json_shape_plus_verdicts_schedule_and_history() -> None:
    daemon = FakeDaemon(reports=[workload_report()])
    daemon.history.record(daemon.reports)
    document = api.results_document(daemon.snapshot(), daemon.schedule(), daemon.history)
    assert {"interpreter", "interpreters", "host", "results", "verdicts"} <= set(document)
    threads = document["results"][1]
    assert (threads["mode"], threads["speedup"], threads["verdict"]) == ("threads", 1.9, "threads: scales ×1.90 (ideal ×2)")
    assert document["results"][0]["verdict"] is None  # the sequential baseline
    assert document["schedule"]["next_round_at"] == 1_700_000_300.0
    assert document["history"]["steps"][1]["points"] == [[1_700_000_003.0, 1.9]]
    json.dumps(document)  # serialisable as is


def test_page_shows_host_cpus_and_why_schedule_and_version() -> None:
    text = page_for(FakeDaemon(reports=[workload_report()]))
    assert "4 logical, 2 physical, <strong>2.5 usable</strong>" in text
    assert "the CPU affinity mask allows all 4; a cgroup CPU quota allows 2.5" in text
    assert "a round every 5m; probing takes 1.3% of the time (budget 5%)" in text
    assert "2023-11-14 22:13:20 UTC (10s ago), took 4s" in text
    assert "2023-11-14 22:18:20 UTC (5m from now)" in text
    assert "version 0.1.0" in text or re.search(r"version \d", text)


def test_page_shows_identity_speedup_interval_and_a_bar_per_cpu() -> None:
    text = page_for(FakeDaemon(reports=[workload_report()]))
    assert "cpython 3.13.5, free-threaded, GIL disabled (at run time)" in text
    row = re.search(r'<tr class="ok"[^>]*data-mode="threads".*?</tr>', text, re.S)
    assert row is not None
    assert '<span class="speedup">1.90×</span>' in row.group(0)
    assert "1.86–1.94" in row.group(0)  # 1.9 ± half of the 4 % spread
    assert row.group(0).count('class="cpu-bar"') == 4  # one per logical CPU
    assert 'data-busy="0.960"' in row.group(0)
    assert 'class="sparkline"' not in row.group(0)  # no history recorded yet


def test_page_escapes_messages_and_logs_from_workloads() -> None:
    daemon = FakeDaemon(reports=[workload_report(fail_threads=True)])
    daemon.history.record(daemon.reports)
    text = page_for(daemon)
    assert "<script>" not in text and "<b>" not in text
    assert "interpreter died &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;" in text
    assert '<code class="reason">crash</code>' in text
    assert "Traceback (most recent call last):\n  &lt;script&gt;" in text


def test_page_before_the_first_round_says_it_is_running_and_since_when() -> None:
    daemon = FakeDaemon(when=schedule(round_running_since=1_700_000_001.0, last_round_started_at=None,
                                      last_round_finished_at=None, duty_cycle_ratio=None))
    text = page_for(daemon)
    assert "The first round is running, started at 2023-11-14 22:13:21 UTC (9s ago)" in text


def test_page_links_metrics_api_config_health_and_readiness() -> None:
    text = page_for(FakeDaemon())
    for path in ("/metrics", "/api/v1/results", "/config", "/-/healthy", "/-/ready"):
        assert f'href="{path}"' in text


def test_sparkline_marks_failed_rounds_and_keeps_successful_points() -> None:
    daemon = FakeDaemon()
    for i in range(5):
        daemon.history.record([workload_report(fail_threads=i == 2, started_at=1_700_000_000.0 + i * 300)])
    daemon.reports = [workload_report(threads_speedup=1.0)]
    text = page_for(daemon)
    row = re.search(r'<tr class="ok"[^>]*data-mode="threads".*?</tr>', text, re.S)
    assert row is not None
    assert row.group(0).count('class="failed-round"') == 1
    assert "5 rounds; last 1.90; min 1.90, max 1.90; 1 failed" in row.group(0)


# --- the history ------------------------------------------------------------------------


def test_history_keeps_the_last_limit_points_per_step_and_failures() -> None:
    history = History(limit=10)
    for i in range(25):
        history.record([workload_report(fail_threads=i % 2 == 0, started_at=float(i))])
    series = history.series()
    assert len(series) == 2 and all(len(points) == 10 for points in series.values())
    assert series[("cpython-3.13t", "pure_python", "threads", 2)][-1].speedup is None  # round 24 failed
    failures = history.failures()
    assert len(failures) == 10
    assert failures[0].timestamp == 24 + 3.0  # newest first
    assert failures[0].log[0] == "Traceback (most recent call last):"


def test_history_prune_drops_unconfigured_interpreters() -> None:
    history = History(limit=5)
    history.record([workload_report("a", fail_threads=True), workload_report("b", fail_threads=True)])
    history.prune(lambda interpreter, workload: interpreter == "b")
    assert {key[0] for key in history.series()} == {"b"}
    assert {f.interpreter for f in history.failures()} == {"b"}


def test_history_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        History(limit=0)


# --- /config ----------------------------------------------------------------------------


def test_config_view_loads_back_as_the_same_config() -> None:
    config = Config(interval_seconds=60.0, jitter_seconds=5.0, duty_cycle=0.5,
                    interpreters=(Interpreter("ft", "/opt/py", {"PYTHON_GIL": "0"}),),
                    probe=ProbeConfig(workloads=("sha256",), workers=(2, 4), repeats=5, per_core_series=True),
                    import_check_modules=("json",))
    text = api.config_text(config, None, "/etc/exporter.yml")
    assert text.startswith("# configuration in force, loaded from /etc/exporter.yml\n")
    assert config_from_mapping(yaml.safe_load(text)) == config


def test_config_view_never_shows_password_hashes(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: {hashed}\nhttp_server_config:\n  headers:\n"
                    f"    X-Frame-Options: deny\n")
    text = api.config_text(Config(), load_web_config(str(path)), None)
    assert hashed not in text and hashed[:7] not in text
    web = yaml.safe_load(text)["web_config"]
    assert web["basic_auth_users"] == {"alice": "<secret>"}
    assert web["http_server_config"] == {"headers": {"X-Frame-Options": "deny"}}


# --- behind the web app's auth, in-process ---------------------------------------------


@pytest.fixture
def auth_app(tmp_path: Path) -> WebApp:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: {hashed}\n")
    web_config = load_web_config(str(path))
    pages = StatusPages(FakeDaemon(reports=[workload_report()]), web_config=web_config)
    return WebApp(CollectorRegistry(), web_config=web_config, routes=pages.routes())


def get(app: WebApp, path: str, auth: Optional[tuple[str, str]] = None, method: str = "GET") -> Response:
    return call(app, path, method=method, auth=auth)


@pytest.mark.parametrize("path", ["/", "/api/v1/results", "/config"])
def test_pages_need_the_same_basic_auth_as_metrics(auth_app: WebApp, path: str) -> None:
    assert get(auth_app, path).status == 401
    assert get(auth_app, path, ("alice", "wrong")).status == 401
    response = get(auth_app, path, ("alice", "s3cret"))
    assert response.status == 200 and response.headers["Cache-Control"] == "no-store"


def test_page_is_sent_with_a_strict_content_security_policy(auth_app: WebApp) -> None:
    response = get(auth_app, "/", ("alice", "s3cret"))
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'; style-src 'unsafe-inline'")
    assert "<script" not in response.text
    assert "http://" not in response.text.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_api_serves_the_document_as_json(auth_app: WebApp) -> None:
    response = get(auth_app, "/api/v1/results", ("alice", "s3cret"))
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.text)["results"][1]["speedup"] == 1.9


@pytest.mark.parametrize("path", ["/", "/api/v1/results", "/config"])
def test_pages_allow_only_get_and_head(auth_app: WebApp, path: str) -> None:
    response = get(auth_app, path, ("alice", "s3cret"), method="POST")
    assert response.status == 405 and response.headers["Allow"] == "GET, HEAD"
    response = get(auth_app, path, ("alice", "s3cret"), method="HEAD")
    assert response.status == 200 and response.body == b""


def test_a_page_that_fails_to_render_is_a_500_and_the_app_keeps_serving() -> None:
    class Broken(FakeDaemon):
        def snapshot(self) -> Snapshot:
            raise RuntimeError("bug")

    app = WebApp(CollectorRegistry(), routes=StatusPages(Broken()).routes())
    assert get(app, "/").status == 500
    assert get(app, "/config").status == 200


def test_schedule_times_render_in_utc() -> None:
    assert statuspage.when(0.0, 60.0) == "1970-01-01 00:00:00 UTC (60s ago)"
    assert statuspage.when(None, time.time()) == "—"


# --- --history.limit and --history.file -------------------------------------------------


def test_history_file_round_trip_keeps_points_failures_and_the_limit(tmp_path: Path) -> None:
    history = History(limit=10)
    for i in range(12):
        history.record([workload_report(fail_threads=i == 11, started_at=float(i))])
    path = str(tmp_path / "history.json")
    history.save(path)
    restored = History(limit=4)
    assert restored.restore(path) == 8  # two steps, the last 4 points each
    assert restored.series()[("cpython-3.13t", "pure_python", "threads", 2)] == history.series()[
        ("cpython-3.13t", "pure_python", "threads", 2)][-4:]
    assert restored.failures() == history.failures()


def test_a_history_file_holding_a_lone_surrogate_restores_it_replaced_and_the_page_serves(tmp_path: Path) -> None:
    """An older version stored a workload's "\\ud800" as is; the page then answered 500 (issue 27)."""
    history = History()
    history.record([workload_report(fail_threads=True)])
    saved = history.to_json()
    saved["failures"][0]["message"] = "ValueError: \ud800"
    saved["failures"][0]["log"] = ["\udfff \ud83d\ude00"]
    path = tmp_path / "history.json"
    path.write_text(json.dumps(saved))  # the escapes \ud800 and \udfff, as json.dump wrote them
    restored = History()
    restored.restore(str(path))
    (failure,) = restored.failures()
    assert (failure.message, failure.log) == ("ValueError: \ufffd", ["\ufffd \U0001f600"])
    app = WebApp(CollectorRegistry(), routes=StatusPages(FakeDaemon(reports=[workload_report()], history=restored)).routes())
    page, api = get(app, "/"), get(app, "/api/v1/results")
    assert page.status == 200 and "ValueError: \ufffd" in page.body.decode("utf-8")
    assert api.status == 200 and json.loads(api.body)["history"]["failures"][0]["message"] == "ValueError: \ufffd"


@pytest.mark.parametrize("content", ["{", "[]", '{"version": 2}', '{"version": 1, "steps": [{"points": 3}]}'])
def test_damaged_history_file_is_refused_with_value_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "history.json"
    path.write_text(content)
    with pytest.raises(ValueError):
        History().restore(str(path))


def test_daemon_restores_its_history_and_starts_empty_from_a_damaged_file(tmp_path: Path) -> None:
    from exporter.serve.daemon import Daemon

    config = Config(interpreters=(Interpreter("cpython-3.13t", "/opt/py"),))
    history = History()
    history.record([workload_report()])
    path = tmp_path / "history.json"
    history.save(str(path))
    assert Daemon(config, None, 100, str(path)).history.series() == history.series()
    path.write_text("not json")
    assert Daemon(config, None, 100, str(path)).history.series() == {}
    # Interpreters no longer configured are not brought back.
    history.save(str(path))
    assert Daemon(Config(), None, 100, str(path)).history.series() == {}


@pytest.mark.parametrize("flags, message", [
    (["--history.limit", "0"], "--history.limit: must be an integer from 1 to 100000, got '0'"),
    (["--history.limit", "lots"], "--history.limit: must be an integer from 1 to 100000, got 'lots'"),
    (["--history.file", "/nonexistent-dir/history.json"],
     "--history.file: directory of '/nonexistent-dir/history.json' does not exist"),
])
def test_bad_history_flags_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], flags: list[str],
                                                   message: str) -> None:
    from exporter import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.run(["serve", *flags, "--config.check"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_huge_workload_output_is_clipped_on_the_page_and_in_the_history() -> None:
    report = workload_report(fail_threads=True)
    threads = report.step("threads", 2)
    threads.message = "m" * 100_000
    threads.log = ["x" * 100_000] * 50
    daemon = FakeDaemon(reports=[report])
    daemon.history.record([report])
    failure = daemon.history.failures()[0]
    assert len(failure.message) == 4000 and len(failure.log) == 20 and len(failure.log[0]) == 1000
    text = page_for(daemon)
    assert len(text) < 200_000
    assert "… (96000 more characters)" in text


def test_page_splits_probe_and_other_load_when_the_probe_measured_it() -> None:
    document = api.results_document(FakeDaemon(reports=[workload_report()]).snapshot(), schedule(), History())
    assert 'class="load-split"' not in statuspage.render_page(document)  # not measured: no split is drawn
    document["results"][1]["interference_cores"] = 0.5
    split = re.search(r'<svg class="load-split".*?</svg>', statuspage.render_page(document), re.S)
    assert split is not None
    assert "probe 1.96 cores, other load 0.50 cores of 4 CPUs" in split.group(0)
    assert 'width="58.8"' in split.group(0) and 'width="15.0"' in split.group(0)  # 1.96 and 0.5 of 4 CPUs in 120 px


def test_interpreter_that_did_not_start_is_shown_with_its_path_and_reason() -> None:
    report = workload_report("broken")
    report.identity = None
    for step in report.steps:
        step.success, step.summary = False, None
        step.fail("interpreter", "cannot start /opt/nope: No such file or directory")
    text = page_for(FakeDaemon(reports=[report]))
    assert "/opt/py (did not report its identity)" in text
    assert "failed (interpreter)" in text and "cannot start /opt/nope" in text


def test_steps_failing_alike_are_one_entry_naming_every_step() -> None:
    report = workload_report()
    for step in report.steps:
        step.success, step.summary = False, None
        step.fail("crash", "interpreter killed by SIGABRT")
        step.log = ["workload: about to abort"]
    text = page_for(FakeDaemon(reports=[report]))
    assert text.count('class="failure failure-now"') == 1
    assert "cpython-3.13t · pure_python · sequential ×1, threads ×2</strong>" in text


def test_page_counts_succeeded_and_failed_steps_with_a_link_to_the_failures() -> None:
    text = page_for(FakeDaemon(reports=[workload_report(), workload_report(workload="sha256", fail_threads=True)]))
    assert '<dt>Steps</dt><dd>3 of 4 succeeded, <a href="#failures">1 failed</a></dd>' in text


def test_any_workload_output_is_escaped_on_the_page() -> None:
    """Property: whatever a workload writes, the page holds it only as escaped text."""
    hypothesis = pytest.importorskip("hypothesis")
    strategies = hypothesis.strategies

    @hypothesis.settings(max_examples=200, deadline=None)
    @hypothesis.given(message=strategies.text(max_size=60), line=strategies.text(max_size=60))
    def check(message: str, line: str) -> None:
        report = workload_report(fail_threads=True)
        report.step("threads", 2).message = message
        report.step("threads", 2).log = [line]
        text = page_for(FakeDaemon(reports=[report]))
        assert f'<span class="message">{escape(message)}</span>' in text
        assert str(escape(line)) in text
        if any(c in message for c in '<>&"'):
            assert f'<span class="message">{message}</span>' not in text  # never raw

    check()


# --- the page's sections and templates ----------------------------------------------------


def test_a_section_is_a_template_and_one_data_function_and_its_data_is_escaped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    banner = statuspage.Section("sections/first_round.html", lambda document, now: {"started": MARKUP})
    monkeypatch.setattr(statuspage, "SECTIONS", statuspage.SECTIONS + (banner,))
    text = page_for(FakeDaemon(reports=[workload_report()]))  # results: the built-in banner is left out
    assert text.count('id="first-round"') == 1
    assert f"started at {escape(MARKUP)}." in text and MARKUP not in text


def test_a_name_a_template_uses_but_is_not_given_is_an_error_not_an_empty_string(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import jinja2

    monkeypatch.setattr(statuspage, "SECTIONS", (statuspage.Section("sections/host.html", lambda document, now: {}),))
    with pytest.raises(jinja2.UndefinedError):
        page_for(FakeDaemon())


def test_every_template_is_in_the_package_data_so_an_installed_exporter_finds_it() -> None:
    import glob
    import tomllib

    root = Path(__file__).resolve().parent.parent
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    templates, packaged = set(), set()
    for package in ("exporter.web", "exporter.pages"):
        folder = root / package.replace(".", "/")
        packaged |= {f"{package}/{f}" for pattern in package_data[package]  # as setuptools globs
                     for f in glob.glob(pattern, root_dir=folder)}
        templates |= {f"{package}/{p.relative_to(folder).as_posix()}" for p in (folder / "templates").rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts}
    assert templates and templates <= packaged, templates - packaged
    used = {s.template for s in statuspage.SECTIONS} | {"status.html", "status.css", "svg.html"}
    assert {f"exporter.pages/templates/{name}" for name in used} | {"exporter.web/templates/landing.html"} <= templates


def test_a_view_key_named_like_a_dict_method_renders_as_the_key() -> None:
    from exporter.web import templating

    template = templating.environment("exporter.pages").from_string("{{ view.items }} {{ view.values }} {{ view.missing is undefined }}")
    assert template.render(view={"items": "<3 rows>", "values": 2}) == "&lt;3 rows&gt; 2 True"


def test_a_step_the_host_was_too_busy_for_shows_its_idle_host_estimate_and_what_was_measured() -> None:
    """Not a failure: the kernel's accounting stands in for the wall clock (~), and cores used
    and the per-core bars stay on the page; without the accounting it reads 'cannot tell'."""
    from exporter.stats.measurement import Accounting

    busy = dict(interference_cores=1.3, inconclusive_reason="other processes used 1.3 cores")
    with_accounting = workload_report()
    threads = with_accounting.steps[1]
    assert threads.summary is not None
    threads.summary = replace(threads.summary, accounting=Accounting(1.98, (1.95, 2.0), 0.7, 1.96, (1.9, 2.0), [1.96] * 3),
                              **busy)
    without = workload_report(workload="sha256")
    plain = without.steps[1]
    assert plain.summary is not None
    plain.summary = replace(plain.summary, **busy)
    text = page_for(FakeDaemon(reports=[with_accounting, without]))
    estimated = re.search(r'<tr class="estimated" data-workload="pure_python" data-mode="threads".*?</tr>', text, re.S)
    assert estimated is not None, text
    row = estimated.group(0)
    assert '<span class="speedup">~1.96×</span>' in row and "1.90–2.00" in row
    assert "idle-host estimate" in row and "<span class=\"cores-used\">1.96</span>" in row
    assert row.count('class="cpu-bar"') == 4 and "parallel — 2.0" in row
    busy_row = re.search(r'<tr class="busy" data-workload="sha256" data-mode="threads".*?</tr>', text, re.S)
    assert busy_row is not None
    assert '<span class="speedup">cannot tell</span>' in busy_row.group(0)
    assert "<span class=\"cores-used\">1.96</span>" in busy_row.group(0)


# --- what a new user reads: busy rounds, the legend, upgrades on the page's own history ---------


def busy_report(started_at: float, version: str = "3.13.5") -> WorkloadReport:
    """Threads the host was too busy for, with no accounting: 'cannot tell', not a failure."""
    report = workload_report(started_at=started_at)
    threads = report.steps[1]
    assert threads.summary is not None
    threads.summary = replace(threads.summary, interference_cores=1.3,
                              inconclusive_reason="other processes used 1.3 cores")
    assert report.identity is not None
    report.identity = replace(report.identity, version=version)
    return report


def test_a_round_the_host_was_too_busy_for_is_an_amber_tick_not_a_failure() -> None:
    daemon = FakeDaemon()
    daemon.history.record([workload_report(started_at=1_700_000_000.0)])
    daemon.history.record([busy_report(1_700_000_300.0)])
    daemon.reports = [busy_report(1_700_000_300.0)]
    text = page_for(daemon)
    row = re.search(r'<tr class="busy"[^>]*data-mode="threads".*?</tr>', text, re.S)
    assert row is not None, text
    assert 'class="failed-round"' not in row.group(0) and row.group(0).count('class="busy-round"') == 1
    assert "2 rounds; last —; min 1.90, max 1.90; 0 failed; 1 without a figure (host too busy)" in row.group(0)
    assert "2 of 2 succeeded" in text and "failed</a>" not in text  # the host section agrees


def test_an_unsteady_figure_is_not_a_failure_either() -> None:
    report = workload_report()
    threads = report.steps[1]
    assert threads.summary is not None
    threads.summary = replace(threads.summary, unsteady_reason="speedup ×2.40 exceeds the 2 usable cores")
    text = page_for(FakeDaemon(reports=[report]))
    row = re.search(r'<tr class="busy"[^>]*data-mode="threads".*?</tr>', text, re.S)
    assert row is not None and '<span class="speedup">unsteady</span>' in row.group(0)
    assert "exceeds the 2 usable cores" in row.group(0)


def test_an_interpreter_change_is_marked_on_the_history_and_listed() -> None:
    daemon = FakeDaemon()
    for i, version in enumerate(["3.13.5", "3.13.5", "3.14.0", "3.14.0"]):
        report = workload_report(started_at=1_700_000_000.0 + i * 300)
        assert report.identity is not None
        report.identity = replace(report.identity, version=version)
        daemon.history.record([report])
    daemon.reports = [report]
    text = page_for(daemon, now=1_700_001_210.0)
    row = re.search(r'<tr class="ok"[^>]*data-mode="threads".*?</tr>', text, re.S)
    assert row is not None
    marks = re.findall(r'<g class="identity-change"><title>(.*?)</title><line x1="([\d.]+)"', row.group(0))
    # Halfway between the second round (x = 1 × 140/3) and the third (x = 2 × 140/3).
    assert marks == [("interpreter changed: cpython 3.13.5, free-threaded, GIL disabled → cpython 3.14.0, "
                      "free-threaded, GIL disabled", "70.0")]
    changes = re.search(r'<ul class="identity-changes">(.*?)</ul>', text, re.S)
    assert changes is not None
    assert "since 2023-11-14 22:13:23 UTC (20m ago): cpython 3.13.5" in changes.group(1)
    assert "since 2023-11-14 22:23:23 UTC (10m ago): cpython 3.14.0" in changes.group(1)


def test_history_file_keeps_outcomes_and_identities_and_reads_older_files(tmp_path: Path) -> None:
    history = History()
    history.record([workload_report(started_at=1.0)])
    history.record([busy_report(2.0, version="3.14.0")])
    path = tmp_path / "history.json"
    history.save(str(path))
    restored = History()
    restored.restore(str(path))
    assert restored.document() == history.document()
    threads = next(s for s in restored.document().steps if s.mode == "threads")
    assert threads.outcomes == ["ok", "busy"]
    assert [i.identity.split(",")[0] for i in restored.document().identities] == ["cpython 3.13.5", "cpython 3.14.0"]
    # A file written before outcomes existed: a point without a speedup was a failure.
    older = json.loads(path.read_text())
    for step in older["steps"]:
        del step["outcomes"]
    del older["identities"]
    path.write_text(json.dumps(older))
    restored.restore(str(path))
    assert next(s for s in restored.document().steps if s.mode == "threads").outcomes == ["ok", "failed"]


def test_the_page_has_a_legend_and_says_what_t1_is() -> None:
    daemon = FakeDaemon(reports=[workload_report()])
    daemon.history.record(daemon.reports)
    text = page_for(daemon)
    legend = re.search(r'<p class="legend">(.*?)</p>', text, re.S)
    assert legend is not None
    plain = re.sub(r"<[^>]+>", "", legend.group(1))
    for key in ("cores the probe used", "cores other processes used", "round failed", "host too busy to tell",
                "interpreter changed"):
        assert key in plain, key
    assert "against the sequential baseline" not in text
    assert "one worker of the same pool did alone in T1" in text


def test_an_idle_host_estimate_is_a_hollow_point_of_the_history_not_a_measured_figure() -> None:
    from exporter.stats.measurement import Accounting

    daemon = FakeDaemon()
    daemon.history.record([workload_report(started_at=1_700_000_000.0)])
    estimated = busy_report(1_700_000_300.0)
    threads = estimated.steps[1]
    assert threads.summary is not None
    threads.summary = replace(threads.summary, accounting=Accounting(1.98, (1.95, 2.0), 0.7, 1.96, (1.9, 2.0),
                                                                     [1.96] * 3))
    daemon.history.record([estimated])
    daemon.reports = [estimated]
    series = next(s for s in daemon.history.document().steps if s.mode == "threads")
    assert (series.points[-1][1], series.outcomes[-1]) == (1.96, "estimated")
    # The interval learns the variance between probes from measured figures only.
    assert daemon.history.figures("cpython-3.13t", "pure_python")[("threads", 2)] == [1.9]
    row = re.search(r'<tr class="estimated"[^>]*data-mode="threads".*?</tr>', page_for(daemon), re.S)
    assert row is not None
    assert row.group(0).count('class="estimated-round"') == 1 and 'class="busy-round"' not in row.group(0)
    assert "2 rounds; last ~1.96; min 1.90, max 1.96; 0 failed; 1 idle-host estimate" in row.group(0)
