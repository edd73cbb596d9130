"""The upgrade story, for real, with the interpreters scripts/build-python builds: the same
service label ("app") probed on CPython 3.11 (the system Python), then 3.13 with the GIL,
then free-threaded 3.13t — as a host would after two upgrades. 3.11 → 3.13 changes the
version but not the parallelism of threads; 3.13 → 3.13t makes threads scale. Each step is
visible in the report a person reads and, as a version change, in pyparallel_python_info.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require_free_threaded_python, require_gil_313_python
from prometheus_client.parser import text_string_to_metric_families

import support

pytestmark = [pytest.mark.integration, pytest.mark.freethreaded]  # each step runs a probe on a built interpreter


@dataclass
class Step:
    """One interpreter's one-shot report and the metrics it wrote for node_exporter."""

    report: str
    metrics: dict[str, list[tuple[dict[str, str], float]]]

    def value(self, name: str, **labels: str) -> float:
        (found,) = [value for sample_labels, value in self.metrics[name] if labels.items() <= sample_labels.items()]
        return found

    def info(self) -> dict[str, str]:
        ((labels, _),) = self.metrics["pyparallel_python_info"]
        return labels


def probe_as_app(python: str, workdir: Path) -> Step:
    textfile = workdir / f"{Path(python).name}.prom"
    support.wait_for_quiet_host(2)
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "probe", "--python", f"app={python}", "--workload", "pure_python",
         "--mode", "sequential,threads,processes", "--workers", "2", "--seconds", "0.3", "--repeats", "5",
         "--wait-quiet", "10", "--textfile", str(textfile)],
        capture_output=True, text=True, timeout=300, env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    metrics: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(textfile.read_text()):
        for sample in family.samples:
            metrics.setdefault(sample.name, []).append((sample.labels, sample.value))
    return Step(result.stdout, metrics)


@pytest.fixture(scope="module")
def upgrade(tmp_path_factory) -> dict[str, Step]:
    """The same label probed on 3.11, 3.13 and 3.13t, one after the other."""
    interpreters = {"3.11": sys.executable, "3.13": require_gil_313_python(), "3.13t": require_free_threaded_python()}
    if sys.version_info[:2] != (3, 11):
        pytest.skip(f"the upgrade story starts from CPython 3.11 (Debian 12's python3); these tests run on "
                    f"{sys.version.split()[0]}: run them from a .venv made by scripts/install with python3.11")
    workdir = tmp_path_factory.mktemp("upgrade")
    return {version: probe_as_app(python, workdir) for version, python in interpreters.items()}


def speedup(step: Step, mode: str) -> float:
    return step.value("pyparallel_speedup_ratio", interpreter="app", workload="pure_python", mode=mode)


def could_tell(step: Step, mode: str, what: str) -> bool:
    """The step's own word on whether it could show the speedup (a busy host: a warning)."""
    if step.value("pyparallel_step_conclusive", interpreter="app", workload="pure_python", mode=mode) == 1:
        return True
    assert not [v for labels, v in step.metrics.get("pyparallel_speedup_ratio", [])
                if labels.get("mode") == mode], "a step that cannot tell exported a speedup"
    # The wall clock could not tell; the kernel's accounting still says what the runtime did.
    assert step.value("pyparallel_runnable_workers", interpreter="app", workload="pure_python", mode=mode) is not None
    assert f"{mode}: parallel —" in step.report or f"{mode}: serialised —" in step.report \
        or f"{mode}: contention —" in step.report or "cannot tell" in step.report
    warnings.warn(support.HostTooBusy(f"{what} {mode}: the host was too busy to show the speedup"), stacklevel=2)
    return False


def threads_verdict(step: Step) -> str:
    """The report's verdict on threads, which must quote the exported speedup."""
    (line,) = [line for line in step.report.splitlines() if line.startswith("pure_python: ")]
    (verdict,) = [part for part in line.split("; ") if "threads: " in part]
    assert f"×{speedup(step, 'threads'):.2f}" in verdict, (verdict, speedup(step, "threads"))
    return verdict


def test_3_11_to_3_13_changes_the_version_but_threads_stay_on_one_core(upgrade):
    before, after = upgrade["3.11"], upgrade["3.13"]
    assert before.info()["version"].startswith("3.11.") and after.info()["version"].startswith("3.13.")
    assert before.info()["free_threaded_build"] == after.info()["free_threaded_build"] == "false"
    for step in (before, after):
        assert step.value("pyparallel_cpu_cores_used", interpreter="app", mode="threads") < 1.3
        assert step.value("pyparallel_gil_enabled", interpreter="app") == 1
        # One worker at a time, whatever else the host ran: the kernel's accounting.
        assert step.value("pyparallel_runnable_workers", interpreter="app", workload="pure_python",
                          mode="threads") < 1.25
        assert "GIL build, GIL enabled" in step.report
        if could_tell(step, "threads", step.info()["version"]):
            assert speedup(step, "threads") < 1.15
            assert "scales" not in threads_verdict(step)
    assert "cpython 3.11." in before.report and "cpython 3.13." in after.report


def test_3_13_to_3_13t_makes_threads_scale(upgrade):
    before, after = upgrade["3.13"], upgrade["3.13t"]
    assert before.info()["version"] == after.info()["version"]  # same CPython, other build
    assert (before.info()["free_threaded_build"], after.info()["free_threaded_build"]) == ("false", "true")
    assert after.value("pyparallel_gil_enabled", interpreter="app") == 0
    assert "free-threaded, GIL disabled" in after.report
    cores = {mode: after.value("pyparallel_cpu_cores_used", interpreter="app", mode=mode) for mode in ("threads", "processes")}
    # Both workers ran at once on 3.13t and one at a time on 3.13, on any host.
    assert after.value("pyparallel_runnable_workers", interpreter="app", workload="pure_python", mode="threads") > 1.75
    assert before.value("pyparallel_runnable_workers", interpreter="app", workload="pure_python", mode="threads") < 1.25
    if could_tell(after, "threads", "3.13t") and could_tell(after, "processes", "3.13t"):
        # 1.5x and 1.6 cores when the host delivers them; when this VM's two vCPUs sharing one
        # physical core hold processes back, free-threaded threads must keep up with them.
        assert speedup(after, "threads") > min(1.5, 0.8 * speedup(after, "processes")), after.report
        assert cores["threads"] > min(1.6, 0.8 * cores["processes"]), after.report
        threads_verdict(after)  # quotes the free-threaded figure
    if could_tell(before, "threads", "3.13"):
        assert speedup(before, "threads") < 1.15
        assert "scales" not in threads_verdict(before)
