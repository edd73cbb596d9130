"""Beyond one Prometheus, for real: an edge Prometheus scrapes the exporter and evaluates the
recording rules, and remote-writes only the recorded series to a central Prometheus
(`--web.enable-remote-write-receiver`), where the fleet dashboard's queries and
`pyparallel-alerts.yml` answer. Rules time-compressed through the mixin config.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import support
import yaml
from conftest import require_binary

from dashboards import queries
from dashboards.generate import ALERTING_RULES, EXPORTER_ALERTING_RULES, RECORDING_RULES, rule_files, to_yaml
from dashboards.mixin_config import CONFIG
from dashboards.recording import speedup_median

pytestmark = pytest.mark.integration

COMPRESSED = dataclasses.replace(
    CONFIG, probe_interval="10s", round_margin="2s", state_interval="2s", state_carry="5m",
    absent_after="20s",  # the median window stays 1h: the stock fleet dashboard reads its rule names
    forget_after="10m", host_label_missing_for="5s", gauge_bridge_window="30s",
)
FLEET = Path(__file__).resolve().parent.parent / "dashboards" / "python-parallelism-fleet.json"
# Only recorded series (`level:metric:operation`) travel to the central store.
RECORDED_ONLY = {"source_labels": ["__name__"], "regex": "[a-z_]+:[a-z_]+:[a-z0-9_]+", "action": "keep"}


def start(workdir: Path, config: dict, files: list[Path], *flags: str) -> support.Service:
    """A real prometheus with these rule files (rendered from COMPRESSED)."""
    home = workdir / "home"
    (home / "rules").mkdir(parents=True)
    groups = rule_files(COMPRESSED)
    for path in files:
        (home / "rules" / path.name).write_text(to_yaml({"groups": groups[path]}))
    config["rule_files"] = ["rules/*.yml"]
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = support.free_port()
    service = support.Service(workdir.name, [require_binary("prometheus"), f"--config.file={home / 'prometheus.yml'}",
                                             f"--storage.tsdb.path={home / 'data'}",
                                             f"--web.listen-address=127.0.0.1:{port}", *flags],
                              workdir, f"http://127.0.0.1:{port}")
    support.wait_for(lambda: support.http_get(service.url + "/-/ready")[0] == 200, 60, f"{workdir.name} to be ready")
    return service


def test_the_fleet_dashboard_and_the_alerts_answer_from_a_central_prometheus_fed_by_remote_write(tmp_path: Path) -> None:
    exporter = support.start_exporter(tmp_path / "exporter", {
        "interval": "10s", "jitter": "0s", "duty_cycle": 1,
        "probe": {"workloads": ["pure_python"], "modes": ["sequential", "threads"], "workers": [2],
                  "unit_seconds": 0.1, "timeout": "30s"}})
    services = [exporter]
    try:
        support.wait_ready(exporter, timeout=120)
        central = start(tmp_path / "central", {"global": {"evaluation_interval": "1s"}}, [ALERTING_RULES],
                        "--web.enable-remote-write-receiver")
        services.append(central)
        # The edge scrape config sets no `node`: the rules name the host by its instance, and
        # the central Prometheus warns that this identity is unstable.
        edge_config = support.prometheus_config(exporter.url.split("//")[1], scrape={"relabel_configs": []})
        edge_config["remote_write"] = [{"url": f"{central.url}/api/v1/write", "write_relabel_configs": [RECORDED_ONLY],
                                        "queue_config": {"batch_send_deadline": "1s"}}]
        services.append(start(tmp_path / "edge", edge_config, [RECORDING_RULES, EXPORTER_ALERTING_RULES]))

        host = exporter.url.split("//")[1]
        support.wait_for(lambda: support.query(central, f'{speedup_median(COMPRESSED)}{{node="{host}"}}'), 120,
                         "the recorded level on the central Prometheus")
        assert support.query(central, 'count({__name__=~"pyparallel_.+|up"})') == []  # no raw series travelled

        dashboard = json.loads(FLEET.read_text())
        values = {"job": "pyparallel", "workload": "pure_python", "__interval": "10s"}
        answers: dict[str, list[dict]] = {}
        for title, expr in queries.all_panel_queries(dashboard):  # every query runs (a PromQL error raises)
            answers.setdefault(title, []).extend(support.query(central, queries.substitute(expr, values)))
        assert support.values(answers["Hosts reporting"], "") == {"": 1.0}
        assert {row["metric"]["node"] for row in answers["Interpreters"]} == {host}

        alert = support.wait_for(lambda: [a for a in support.query(central, 'ALERTS{alertstate="firing"}')
                                          if a["metric"]["alertname"] == "PyParallelHostLabelMissing"], 60,
                                 "PyParallelHostLabelMissing on the central Prometheus")
        assert alert[0]["metric"]["node"] == host
        # The exporter goes away: only the central Prometheus can tell, from what stopped arriving.
        exporter.stop()
        absent = support.wait_for(lambda: [a for a in support.query(central, 'ALERTS{alertstate="firing"}')
                                           if a["metric"]["alertname"] == "PyParallelExporterAbsent"], 90,
                                  "PyParallelExporterAbsent on the central Prometheus")
        assert absent[0]["metric"]["node"] == host
        fired = support.query(central, 'ALERTS{alertname=~"PyParallelSpeedup.*"}')
        assert fired == []
    finally:
        for service in reversed(services):
            service.stop()
