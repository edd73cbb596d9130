"""Deployment files: Prometheus, Alertmanager, compose, Docker, systemd and Kubernetes are valid and consistent."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import require_binary
from dashboards.generate import CONFIG_MAP, PROMETHEUS_RULE

ROOT = Path(__file__).resolve().parent.parent

DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
COMPOSE = ROOT / "docker-compose.yml"
K8S = DEPLOY / "kubernetes"
UNIT = DEPLOY / "systemd" / "parallelism-exporter.service"
CUSTOM_RESOURCES = {"ServiceMonitor", "PrometheusRule"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _k8s_documents() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object in deploy/kubernetes by file name (the kustomization excluded)."""
    return {p.name: _yaml(p) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"}


def _optional_binary(name: str) -> str:
    """A tool .ci/run does not install (kubectl): skip, also in CI, when it is absent."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install kubernetes-client)")
    return path


# --- Prometheus ----------------------------------------------------------------------------


@pytest.mark.integration
def test_prometheus_config_passes_promtool_check() -> None:
    promtool = require_binary("promtool")
    result = subprocess.run([promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
                            check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 rule files found" in result.stdout


def test_prometheus_config_scrapes_the_exporter_and_alerts_alertmanager() -> None:
    config = _yaml(PROMETHEUS_DIR / "prometheus.yml")
    assert config["global"]["scrape_interval"] == "15s"
    (job,) = config["scrape_configs"]
    (static,) = job["static_configs"]
    assert job["job_name"] == "pyparallel" and static["targets"] == ["exporter:9860"]
    (alertmanager,) = config["alerting"]["alertmanagers"]
    assert alertmanager["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    assert all(not Path(pattern).is_absolute() for pattern in config["rule_files"])


@pytest.mark.integration
def test_a_copied_prometheus_dir_with_retargeted_addresses_still_checks(tmp_path: Path) -> None:
    """What the integration test does: copy deploy/prometheus, point it at loopback ports."""
    promtool = require_binary("promtool")
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy)
    config = _yaml(copy / "prometheus.yml")
    config["scrape_configs"][0]["static_configs"][0]["targets"] = ["127.0.0.1:19860"]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = ["127.0.0.1:19093"]
    (copy / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool, "check", "config", str(copy / "prometheus.yml")], check=False, capture_output=True, text=True)
    assert result.returncode == 0 and "3 rule files found" in result.stdout, result.stdout + result.stderr


# --- Alertmanager --------------------------------------------------------------------------


@pytest.mark.integration
def test_alertmanager_config_passes_amtool_check() -> None:
    amtool = require_binary("amtool")
    result = subprocess.run([amtool, "check-config", str(ALERTMANAGER_CONFIG)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_routes_only_to_defined_receivers() -> None:
    config = _yaml(ALERTMANAGER_CONFIG)
    receivers = {r["name"] for r in config["receivers"]}
    assert "default" in receivers and config["route"]["receiver"] == "default"
    assert {route["receiver"] for route in config["route"].get("routes", [])} <= receivers


def test_alertmanager_inhibitions_name_existing_alerts() -> None:
    alerts = {r["alert"] for path in (PROMETHEUS_DIR / "rules").glob("*alerts.yml") for g in _yaml(path)["groups"]
              for r in g["rules"] if "alert" in r}
    for rule in _yaml(ALERTMANAGER_CONFIG)["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            assert re.fullmatch(r'alertname="(\w+)"', matcher).group(1) in alerts  # type: ignore[union-attr]


def test_alertmanager_repeats_within_its_notification_log_retention() -> None:
    """A repeat_interval beyond --data.retention (default 120h) is meaningless: the notification
    log has forgotten the alert was sent, so the repeat comes at an arbitrary time."""
    from dashboards.mixin_config import seconds

    route = _yaml(ALERTMANAGER_CONFIG)["route"]
    for sub in [route, *route.get("routes", [])]:
        assert seconds(sub.get("repeat_interval", route["repeat_interval"])) < 120 * 3600, sub


def test_alertmanager_sends_warnings_about_blind_spots_and_absent_hosts() -> None:
    """Never fail open: a host the rules cannot judge is a routed warning, not a silent info."""
    routes = _yaml(ALERTMANAGER_CONFIG)["route"]["routes"]
    for alert in ("PyParallelRegressionDetectionBlind", "PyParallelExporterAbsent", "PyParallelHostLabelMissing"):
        first = next(r for r in routes if any(alert in m or 'severity=~"warning' in m for m in r["matchers"]))
        assert first["receiver"] == "webhook", alert


# --- docker compose, Dockerfile, Grafana provisioning --------------------------------------


@pytest.mark.integration
def test_compose_file_matches_the_compose_spec() -> None:
    check = require_binary("check-jsonschema")
    result = subprocess.run([check, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_has_the_four_services_and_mounts_only_existing_files() -> None:
    services = _yaml(COMPOSE)["services"]
    assert set(services) == {"exporter", "prometheus", "alertmanager", "grafana"}
    assert (ROOT / services["exporter"]["build"] / "Dockerfile").is_file()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    grafana = _yaml(COMPOSE)["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("."))
    (provider,) = _yaml(DEPLOY / "grafana/provisioning/dashboards/pyparallel.yml")["providers"]
    assert mounts["./dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    (datasource,) = _yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"


def test_dockerfile_installs_the_package_and_runs_it_as_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install --no-cache-dir \.", dockerfile, flags=re.MULTILINE)
    (user,) = re.findall(r"^USER (\S+)", dockerfile, flags=re.MULTILINE)
    assert user.split(":")[0] not in {"root", "0"}
    assert 'CMD ["parallelism-exporter", "serve", "--config.file=/etc/pyparallel/config.yml"]' in dockerfile


def test_dockerignore_keeps_what_the_image_copies() -> None:
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    copied = re.findall(r"^COPY (.+) \S+$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    for source in " ".join(copied).split():
        assert source not in ignored or f"!{source}" in ignored, source
        assert f"!{source}" in ignored or not any(source.startswith(p.rstrip("/") + "/") for p in ignored), source
    assert ".git" in ignored and "tests" in ignored


def test_example_config_is_accepted_by_the_exporter() -> None:
    from exporter.config.loader import load_config

    config = load_config(str(DEPLOY / "config.example.yml"))
    assert config.interval_seconds == 300 and config.probe.workers == (2,)


# --- systemd -------------------------------------------------------------------------------


def test_systemd_unit_is_hardened_and_restarts_on_failure() -> None:
    unit = UNIT.read_text()
    for setting in ("DynamicUser=yes", "ProtectSystem=strict", "ProtectHome=yes", "NoNewPrivileges=yes",
                    "PrivateTmp=yes", "Restart=on-failure", "EnvironmentFile=-/etc/default/parallelism-exporter"):
        assert re.search(rf"^{re.escape(setting)}$", unit, flags=re.MULTILINE), setting
    assert re.search(r"^ExecStart=\S*parallelism-exporter serve --config.file=\S+", unit, flags=re.MULTILINE)
    assert not re.search(r"^(CPUQuota|CPUAffinity|AllowedCPUs)=", unit, flags=re.MULTILINE)


@pytest.mark.integration
def test_systemd_unit_documentation_is_installed_by_the_readme_commands() -> None:
    """Each Documentation= file: is a file of this repository that deploy/systemd/README.md installs there."""
    (line,) = re.findall(r"^Documentation=(.+)$", UNIT.read_text(), flags=re.MULTILINE)
    installs = dict((target, source) for source, target in
                    re.findall(r"install -D -m 0644 (\S+) (/usr/share/doc/\S+)", (UNIT.parent / "README.md").read_text()))
    documents = line.split()
    assert documents and all(uri.startswith("file:/usr/share/doc/parallelism-exporter/") for uri in documents)
    for uri in documents:
        source = installs[uri.removeprefix("file:")]
        assert (ROOT / source).is_file(), source


@pytest.mark.integration
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")  # Debian's systemd package
    # verify also checks that ExecStart exists; the exporter is not installed system-wide here.
    unit = tmp_path / UNIT.name
    unit.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", UNIT.read_text(), flags=re.MULTILINE))
    result = subprocess.run([analyze, "verify", str(unit)], check=False, capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# --- Kubernetes ----------------------------------------------------------------------------


@pytest.mark.integration
def test_kubernetes_core_manifests_validate() -> None:
    validate = require_binary("kubernetes-validate")
    core = [K8S / name for name, doc in _k8s_documents().items() if doc["kind"] not in CUSTOM_RESOURCES]
    assert {_yaml(p)["kind"] for p in core} == {"Namespace", "ConfigMap", "DaemonSet", "Service"}
    result = subprocess.run([validate, "--strict", *map(str, core)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomization_lists_every_manifest() -> None:
    kustomization = _yaml(K8S / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(_k8s_documents())
    namespace = kustomization["namespace"]
    assert all(doc["metadata"].get("namespace", namespace) == namespace for doc in _k8s_documents().values())


@pytest.mark.integration
def test_kustomize_builds_the_manifests() -> None:
    kubectl = _optional_binary("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(result.stdout))
    assert kinds == ["ConfigMap", "DaemonSet", "Namespace", "PrometheusRule", "Service", "ServiceMonitor"]


def test_prometheus_rule_spec_equals_the_rule_files() -> None:
    rule = _yaml(ROOT / PROMETHEUS_RULE)
    groups = [g for name in ("pyparallel-recording.yml", "pyparallel-exporter-alerts.yml", "pyparallel-alerts.yml")
              for g in _yaml(PROMETHEUS_DIR / "rules" / name)["groups"]]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == groups


@pytest.mark.integration
def test_generated_kubernetes_files_equal_a_fresh_generation(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "dashboards.generate", "--output-dir", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True)
    for relative in (PROMETHEUS_RULE, CONFIG_MAP):
        assert (tmp_path / relative).read_text() == (ROOT / relative).read_text(), relative


def test_configmap_carries_the_example_config() -> None:
    config_map = _yaml(ROOT / CONFIG_MAP)
    assert config_map["data"]["config.yml"] == (DEPLOY / "config.example.yml").read_text()


def test_daemonset_exposes_metrics_mounts_the_config_and_sets_cpu_resources() -> None:
    daemonset = _k8s_documents()["daemonset.yaml"]
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"name": "metrics", "containerPort": 9860, "protocol": "TCP"} in container["ports"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "cpu" in container["resources"]["limits"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "--config.file=/etc/pyparallel/config.yml" in container["args"]
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == _k8s_documents()["configmap.yaml"]["metadata"]["name"]
    # The comment explaining the effect of a CPU limit on the measurement stays next to it.
    assert "usable" in (K8S / "daemonset.yaml").read_text()


def test_service_and_servicemonitor_select_the_daemonset_pods() -> None:
    docs = _k8s_documents()
    pod_labels = docs["daemonset.yaml"]["spec"]["template"]["metadata"]["labels"]
    service = docs["service.yaml"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["metadata"]["name"] == "pyparallel"  # the ServiceMonitor's job label, as the rules expect
    monitor = docs["servicemonitor.yaml"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"


# --- the host label the regression rules aggregate by ---------------------------------------


def test_shipped_scrape_configs_set_the_host_label_the_rules_aggregate_by() -> None:
    from dashboards.mixin_config import CONFIG

    (job,) = _yaml(PROMETHEUS_DIR / "prometheus.yml")["scrape_configs"]
    assert [r["target_label"] for r in job["relabel_configs"]] == [CONFIG.host_label]
    monitor = _yaml(K8S / "servicemonitor.yaml")
    (endpoint,) = monitor["spec"]["endpoints"]
    node = next(r for r in endpoint["relabelings"] if r["targetLabel"] == CONFIG.host_label)
    assert node["sourceLabels"] == ["__meta_kubernetes_pod_node_name"]  # not the pod address


def test_the_host_label_is_the_target_host_name() -> None:
    """The relabelling regex keeps the host and drops the port, as Prometheus would apply it."""
    (job,) = _yaml(PROMETHEUS_DIR / "prometheus.yml")["scrape_configs"]
    (rule,) = job["relabel_configs"]
    pattern = re.compile(f"^(?:{rule['regex']})$")  # Prometheus anchors relabel regexes
    match = pattern.match("exporter:9860")
    assert match and match.expand(rule["replacement"].replace("$1", r"\1")) == "exporter"


def test_kubernetes_image_is_the_one_the_dockerfile_builds() -> None:
    container = _yaml(K8S / "daemonset.yaml")["spec"]["template"]["spec"]["containers"][0]
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert version and container["image"] == f"python-parallelism-exporter:{version.group(1)}"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert "docker build -t python-parallelism-exporter:" in (K8S / "daemonset.yaml").read_text()


@pytest.mark.integration  # runs the generator or promtool in a child process
def test_scrape_configs_in_the_docs_pass_promtool_check(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    text = (ROOT / "docs" / "prometheus-and-grafana.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL) if "scrape_configs:" in b]
    assert len(blocks) == 2  # static targets and file-based discovery
    for i, block in enumerate(blocks):
        path = tmp_path / f"prometheus-{i}.yml"
        path.write_text(block)
        result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
