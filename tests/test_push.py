"""``probe --push``: a real probe pushes to a real Pushgateway, scraped by a real Prometheus
(honor_labels, as a Pushgateway job must be), queried over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_binary

import support

pytestmark = pytest.mark.integration


def start_pushgateway(workdir: Path) -> support.Service:
    binary = require_binary("prometheus-pushgateway")
    port = support.free_port()
    service = support.Service("pushgateway", [binary, f"--web.listen-address=127.0.0.1:{port}"], workdir,
                              f"http://127.0.0.1:{port}")
    support.wait_for(lambda: support.http_get(service.url + "/-/ready")[0] == 200, 30, "the pushgateway")
    return service


def probe(*flags: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "exporter", "probe", "--python", f"cpython-ci={sys.executable}",
            "--workload", "sleep", "--mode", "sequential,threads", "--workers", "2", "--seconds", "0.1",
            "--repeats", "1", *flags]
    return subprocess.run(args, capture_output=True, text=True, cwd=support.TESTS, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(support.REPO)))


def test_pushed_results_reach_prometheus_with_job_instance_and_interpreter(tmp_path: Path) -> None:
    require_binary("prometheus")
    gateway = start_pushgateway(tmp_path)
    prometheus = None
    try:
        completed = probe("--push", gateway.url, "--push.instance", "ci-runner-1", "--json")
        assert completed.returncode == 0, completed.stderr
        assert f"pushed to {gateway.url}" in completed.stderr
        results = json.loads(completed.stdout)
        threads = next(r for r in results["results"] if r["mode"] == "threads")

        config = support.prometheus_config(gateway.url.split("//")[1],
                                           scrape={"job_name": "pushgateway", "honor_labels": True})
        prometheus = support.start_prometheus(tmp_path, config)
        selector = 'job="pyparallel", instance="ci-runner-1", interpreter="cpython-ci"'
        speedup = support.wait_for(lambda: support.query(prometheus, f'pyparallel_speedup_ratio{{{selector}, mode="threads"}}'),
                                   60, "the pushed speedup in prometheus")
        assert float(speedup[0]["value"][1]) == pytest.approx(threads["speedup"])
        assert speedup[0]["metric"]["workload"] == "sleep" and speedup[0]["metric"]["workers"] == "2"
        info = support.query(prometheus, f"pyparallel_python_info{{{selector}}}")
        assert info[0]["metric"]["version"] == results["interpreter"]["version"]
        # Host families: one series per job/instance, without an interpreter label, so the rules'
        # on(job, instance) joins work for pushed results as for scraped ones.
        host = support.query(prometheus, 'pyparallel_host_cpus{job="pyparallel", instance="ci-runner-1", kind="usable"}')
        assert len(host) == 1 and "interpreter" not in host[0]["metric"]
        assert float(host[0]["value"][1]) == results["host"]["usable_cpus"]
        # The daemon's schedule means nothing for a one-shot run and is not pushed.
        assert support.query(prometheus, 'pyparallel_probe_interval_seconds{instance="ci-runner-1"}') == []
    finally:
        for service in (prometheus, gateway):
            if service is not None:
                service.stop()


def test_push_to_an_unreachable_gateway_is_one_line_and_exit_1() -> None:
    url = f"http://127.0.0.1:{support.free_port()}"
    completed = probe("--push", url)
    assert completed.returncode == 1
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"parallelism-exporter: --push: cannot push to {url}: ")
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize("url", ["ftp://gateway:9091", "http://", "http://gateway:port", "http://gw:9091/?x=1", "::"])
def test_a_malformed_push_url_is_exit_2_before_probing(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from exporter import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.run(["probe", "--push", url])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--push: must be a Pushgateway URL such as http://pushgateway:9091" in err


def test_gateway_urls_without_a_scheme_are_http() -> None:
    from exporter.export.push import gateway_url

    assert gateway_url("pushgateway:9091") == "http://pushgateway:9091"
    assert gateway_url("https://gw.example:443/prefix") == "https://gw.example:443/prefix"
