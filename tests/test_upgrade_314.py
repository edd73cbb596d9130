"""A real CPython upgrade, end to end: 3.13 -> 3.14 (Debian forky's build, from
scripts/build-python 3.14) under a running daemon, with a real Prometheus scraping it and the
shipped rules evaluating, time-compressed through the mixin config.

The role keeps its name (`default`), as the runbook asks: the upgrade is annotated on the
dashboard, pyparallel_python_info shows both versions, the reference moves on to 3.14 once
3.14 ran healthy, and no regression alert fires, because nothing regressed (GIL-build threads
keep one core on both). The one-shot report runs on 3.14 too, subinterpreters included
(PEP 734's concurrent.interpreters).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import support
import yaml
from conftest import require_binary, require_gil_313_python, require_py314_python

from dashboards import queries
from dashboards.mixin_config import CONFIG
from dashboards.recording import reference, reference_identity

pytestmark = pytest.mark.integration

# Minutes, not days: rounds every 10 s, the state rules every 2 s, a 30 s median.
COMPRESSED = dataclasses.replace(
    CONFIG, probe_interval="10s", round_margin="5s", state_interval="2s", state_carry="5m",
    speedup_median_window="30s", reference_window="1m", reference_time_constant="2m", baseline_min_history="40s",
    regression_memory="10m", blind_after="5m", absent_after="1m", forget_after="10m", annotation_window="2m",
    gauge_bridge_window="1m",
)
THREADS = 'interpreter="default", workload="pure_python", mode="threads"'
HOST_DASHBOARD = Path(__file__).resolve().parent.parent / "dashboards" / "python-parallelism.json"


def exporter_config(python: str) -> dict:
    return {"interval": "10s", "jitter": "0s", "duty_cycle": 1,
            "interpreters": [{"name": "default", "path": python}],
            "probe": {"workloads": ["pure_python"], "modes": ["sequential", "threads"], "workers": [2],
                      "unit_seconds": 0.1, "timeout": "30s"}}


def query_range(prometheus: support.Service, expr: str, start: float, end: float) -> list[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "2"})
    status, body = support.http_get(f"{prometheus.url}/api/v1/query_range?{params}")
    document = json.loads(body)
    assert status == 200 and document["status"] == "success", document
    return document["data"]["result"]


def versions(prometheus: support.Service, window: str) -> set[str]:
    result = support.query(prometheus, f'count by (version) (count_over_time(pyparallel_python_info{{interpreter="default"}}[{window}]))')
    return {series["metric"]["version"] for series in result}


def test_the_report_runs_every_mode_on_3_14_subinterpreters_included() -> None:
    python = require_py314_python()
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "probe", "--python", f"app={python}", "--workload", "pure_python",
         "--mode", "sequential,threads,processes,subinterpreters", "--workers", "2", "--seconds", "0.1", "--json"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    steps = {step["mode"]: step for step in document["results"]}
    assert set(steps) == {"sequential", "threads", "processes", "subinterpreters"}
    assert all(step["success"] for step in steps.values()), steps
    (identity,) = document["interpreters"]
    assert identity["version"].startswith("3.14.") and identity["free_threaded_build"] is False


def test_a_running_daemon_upgraded_from_3_13_to_3_14_is_annotated_and_fires_nothing(tmp_path: Path) -> None:
    old, new = require_gil_313_python(), require_py314_python()
    require_binary("prometheus")
    config_path = tmp_path / "exporter" / "exporter.yml"
    exporter = support.start_exporter(tmp_path / "exporter", exporter_config(old))
    prometheus = None
    try:
        support.wait_ready(exporter, timeout=120)
        prometheus = support.start_prometheus(tmp_path, support.prometheus_config(exporter.url.split("//")[1]),
                                              mixin=COMPRESSED)
        # 3.13 learns its reference first: the regression rules can judge what follows.
        support.wait_for(lambda: support.query(prometheus, f"{reference(COMPRESSED)}{{{THREADS}}}"), 240,
                         "the threads probe's reference on 3.13")
        assert versions(prometheus, "10m") == {next(iter(versions(prometheus, "10m")))}

        switched = time.time()
        config = yaml.safe_load(config_path.read_text())
        config["interpreters"][0]["path"] = new
        config_path.write_text(yaml.safe_dump(config))
        exporter.process.send_signal(signal.SIGHUP)

        # The reference moves on to 3.14 once 3.14 ran healthy for a whole median window; a
        # drop would have held it at 3.13 and fired the upgrade alert instead.
        def moved_on() -> list[dict]:
            return [s for s in support.query(prometheus, f"{reference_identity(COMPRESSED)}{{{THREADS}}}")
                    if s["metric"]["version"].startswith("3.14.")]

        support.wait_for(moved_on, 300, "the reference to move on to 3.14")
        seen = versions(prometheus, "15m")
        assert {v[:4] for v in seen} == {"3.13", "3.14"}, seen

        dashboard = json.loads(HOST_DASHBOARD.read_text())
        ((_, annotation),) = queries.annotation_queries(dashboard)
        target = exporter.url.split("//")[1]
        expr = queries.substitute(annotation, {"job": "pyparallel", "host": target.rsplit(":", 1)[0],
                                               "instance": target, "interpreter": ".+"})
        marks = query_range(prometheus, expr, switched, time.time())
        assert {s["metric"]["version"][:4] for s in marks} == {"3.14"}, marks

        fired = support.query(prometheus, 'max_over_time(ALERTS{alertname=~"PyParallelSpeedup.*|PyParallelRegression.*"}[15m])')
        assert fired == [], fired
    finally:
        for service in (prometheus, exporter):
            if service is not None:
                service.stop()
