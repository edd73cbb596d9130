"""The shipped Alertmanager config, run for real: its inhibit rules suppress what they should."""

from __future__ import annotations

import datetime
import json
import urllib.request

import pytest
import support
from conftest import require_binary

pytestmark = pytest.mark.integration

PROBE = {"job": "pyparallel", "instance": "host-a:9860", "node": "host-a", "interpreter": "default",
         "workload": "pure_python", "mode": "threads", "workers": "2", "severity": "warning"}


def post_alerts(alertmanager: support.Service, *alerts: dict[str, str]) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    body = json.dumps([{"labels": labels, "startsAt": now.isoformat(),
                        "endsAt": (now + datetime.timedelta(hours=1)).isoformat()} for labels in alerts])
    request = urllib.request.Request(alertmanager.url + "/api/v2/alerts", data=body.encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def states(alertmanager: support.Service) -> dict[tuple[str, str], str]:
    """(alertname, workload) -> active / suppressed, as Alertmanager's API reports them."""
    _, body = support.http_get(alertmanager.url + "/api/v2/alerts")
    return {(a["labels"]["alertname"], a["labels"].get("workload", "")): a["status"]["state"] for a in json.loads(body)}


@pytest.fixture
def alertmanager(tmp_path):
    require_binary("prometheus-alertmanager")
    service = support.start_alertmanager(tmp_path)
    yield service
    service.stop()


def test_results_stale_is_inhibited_while_the_same_probe_is_failing(alertmanager):
    other = dict(PROBE, workload="sha256")
    post_alerts(alertmanager,
                dict(PROBE, alertname="PyParallelProbeFailing"),
                dict(PROBE, alertname="PyParallelProbeResultsStale"),
                # Stale without a failing alert: the rounds stopped; it must get through.
                dict(other, alertname="PyParallelProbeResultsStale"))
    expected = {("PyParallelProbeFailing", "pure_python"): "active",
                ("PyParallelProbeResultsStale", "pure_python"): "suppressed",
                ("PyParallelProbeResultsStale", "sha256"): "active"}
    assert support.wait_for(lambda: states(alertmanager) == expected or None, 30, "inhibition") is True


def test_absent_is_inhibited_while_the_same_host_is_down(alertmanager):
    """A target still discovered but not scrapable is "down"; "absent" is for one that is gone."""
    host = {k: v for k, v in PROBE.items() if k in ("job", "node", "severity")}
    post_alerts(alertmanager,
                dict(PROBE, alertname="PyParallelExporterDown", workload=""),
                dict(host, alertname="PyParallelExporterAbsent"),
                dict(host, node="host-b", alertname="PyParallelExporterAbsent", workload="b"))
    expected = {("PyParallelExporterDown", ""): "active",
                ("PyParallelExporterAbsent", ""): "suppressed",
                ("PyParallelExporterAbsent", "b"): "active"}
    assert support.wait_for(lambda: states(alertmanager) == expected or None, 30, "inhibition") is True
