"""The results document is one typed model: built from probe results, written, read back by
``compare``, and described by the JSON Schema published in docs/results.schema.json."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from exporter.model import document
from exporter.host.cpus import HostCpus
from exporter.stats.measurement import Summary
from exporter.model.results import Identity, Interpreter, ProbeSpec, StepResult, WorkloadReport

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs/results.schema.json"
HOST = HostCpus(logical=2, physical=2, affinity=2, quota=None)


def summary(speedup: float, **fields) -> Summary:
    values = dict(wall_seconds=0.3, speedup=speedup, speedup_spread=0.02, efficiency=speedup / 2,
                  serial_fraction=0.05, throughput_units_per_second=6.0, throughput_ops_per_second=600.0,
                  cores_used=1.95, core_utilisation=[0.98, 0.97], startup_seconds=0.05, speedup_ci=(1.85, 1.97),
                  pair_speedups=[1.9, 1.92, 1.91], cpu_rate_ratio=0.99, interference_cores=0.02, steal_ratio=0.0,
                  pairs=3, rate_ci=(0.98, 1.0), pair_rates=[0.99, 0.99, 0.98], free_cores=1.98)
    values.update(fields)
    return Summary(**values)


def reports() -> list[WorkloadReport]:
    identity = Identity("3.13.5", "cpython", "/opt/py/bin/python3.13t", True, False, ("fork", "forkserver"), None)
    spec = ProbeSpec("pure_python", ("sequential", "threads", "processes"), (2,))
    steps = [StepResult("pure_python", "sequential", 1, success=True, summary=summary(1.0, speedup_ci=None, pair_speedups=[], pair_rates=[])),
             StepResult("pure_python", "threads", 2, success=True,
                        summary=summary(1.02, inconclusive_reason="other processes used 1.0 cores")),
             StepResult("pure_python", "processes", 2, success=False, reason="crash", message="exit -11", log=["boom"])]
    missing = WorkloadReport(Interpreter("gone", "/nowhere"), spec,
                             steps=[StepResult("pure_python", "sequential", 1, reason="interpreter", message="no such file")])
    return [WorkloadReport(Interpreter("ft", "/opt/py/bin/python3.13t"), spec, identity, 100, 0.003, steps), missing]


def test_the_published_schema_is_the_one_the_classes_give():
    assert json.loads(SCHEMA_FILE.read_text()) == document.json_schema(), (
        "docs/results.schema.json is stale: python -m exporter.model.document > docs/results.schema.json")


def test_every_document_the_product_writes_validates_against_the_schema():
    written = document.to_json(document.build(reports(), HOST))
    jsonschema.validate(json.loads(json.dumps(written)), document.json_schema())
    assert written["version"] == document.VERSION
    threads = written["results"][1]
    assert threads["speedup"] is None and threads["conclusive"] is False  # withheld: cannot tell


def test_a_document_reads_back_into_the_same_model():
    built = document.build(reports(), HOST)
    assert document.parse(json.loads(json.dumps(document.to_json(built)))) == built


def test_a_version_1_document_reads_with_the_new_fields_at_their_defaults():
    old = {"interpreter": {"name": "a", "path": "/p"}, "interpreters": [{"name": "a", "path": "/p"}],
           "host": {"logical_cpus": 2, "physical_cpus": 2, "affinity_cpus": 2, "cgroup_quota_cpus": None,
                    "usable_cpus": 2.0},
           "results": [{"interpreter": "a", "workload": "w", "mode": "threads", "workers": 2, "success": True,
                        "speedup": 1.9, "speedup_ci": [1.8, 2.0], "pair_speedups": [1.9, 1.9]}]}
    parsed = document.parse(old)
    assert parsed.version == 1 and parsed.results[0].conclusive is None and parsed.results[0].pairs == 0


@pytest.mark.parametrize("damage, field", [
    ({"results": "x"}, "results: must be a list"),
    ({"host": {"usable_cpus": 2}}, "host.logical_cpus: missing"),
    ({"results": [{"interpreter": "a", "workload": "w", "mode": "m", "workers": True, "success": True}]},
     "results[0].workers: must be a whole number, got True"),
    ({"results": [{"interpreter": "a", "workload": "w", "mode": "m", "workers": 2, "success": True,
                   "speedup": float("nan")}]}, "results[0].speedup: must be a finite number"),
])
def test_a_damaged_document_names_its_first_bad_field(damage, field):
    good = document.to_json(document.build(reports(), HOST))
    with pytest.raises(document.DocumentError) as error:
        document.parse({**good, **damage})
    assert str(error.value).startswith(field) and "\n" not in str(error.value)


# --- issue 27: the schema is enforced, not only described --------------------------------


def with_step(**fields) -> dict:
    """The product's document with its first step's fields replaced."""
    written = json.loads(json.dumps(document.to_json(document.build(reports(), HOST))))
    written["results"][0].update(fields)
    return written


def refusal(data: dict) -> str:
    with pytest.raises(document.DocumentError) as error:
        document.parse(data)
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.parametrize("version", [99, -1, 0, document.VERSION + 1, "2", 2.0, True, None])
def test_a_version_this_exporter_does_not_read_is_refused_first(version) -> None:
    """99 and -1 compared as "no regression" (exit 0); a newer writer's fields may mean something else."""
    damaged = with_step(workers="fields of a version 99 need not read as ours")
    damaged["version"] = version
    assert refusal(damaged) == (f"version: this exporter reads versions 1 to {document.VERSION}, "
                                f"got {version!r}")


@pytest.mark.parametrize("version", range(document.FIRST_VERSION, document.VERSION + 1))
def test_every_version_from_the_first_to_the_current_one_is_read(version) -> None:
    assert document.parse(dict(with_step(), version=version)).version == version


@pytest.mark.parametrize("fields, message", [
    ({"workers": 0}, "results[0].workers: must be a number from 1 to 256, got 0"),
    ({"workers": 10 ** 39}, "results[0].workers: must be a number from 1 to 256, got 1000000000000000000000000000000000000000"),
    ({"cores_used": -1.0}, "results[0].cores_used: must be a number >= 0, got -1.0"),
    ({"efficiency": -0.5}, "results[0].efficiency: must be a number >= 0, got -0.5"),
    ({"cpu_rate_ratio": -1}, "results[0].cpu_rate_ratio: must be a number >= 0, got -1"),
    ({"throughput_ops_per_second": -3}, "results[0].throughput_ops_per_second: must be a number >= 0, got -3"),
    ({"core_utilisation": [0.5, 1.5]}, "results[0].core_utilisation[1]: must be a number from 0 to 1, got 1.5"),
    ({"speedup": 0}, "results[0].speedup: must be a number > 0, got 0"),
    ({"speedup_ci": [2.0, 1.0]}, "results[0].speedup_ci: must be [low, high] with low <= high, got [2.0, 1.0]"),
    ({"speedup_ci": [1.0, 1.5, 2.0]}, "results[0].speedup_ci: must be [low, high] with low <= high, got [1.0, 1.5, 2.0]"),
    ({"speedup_ci": [-1.0, 2.0]}, "results[0].speedup_ci[0]: must be a number > 0, got -1.0"),
    ({"cpu_rate_ci": [1.1, 0.9]}, "results[0].cpu_rate_ci: must be [low, high] with low <= high, got [1.1, 0.9]"),
    ({"runnable_workers_ci": [2.0, 1.0]}, "results[0].runnable_workers_ci: must be [low, high] with low <= high"),
    ({"pair_speedups": [-1.0, -1.0, -1.0]}, "results[0].pair_speedups[0]: must be a number > 0, got -1.0"),
    ({"pair_speedups": [0, 0, 0]}, "results[0].pair_speedups[0]: must be a number > 0, got 0"),
    ({"pair_speedups": [1.0, 1.01, 0.99], "speedup": 1.9},
     "results[0].speedup: 1.9 is not what pair_speedups say: their geometric mean is 1"),
    ({"pair_speedups": [1.9, 1.9], "speedup": 1.0}, "results[0].speedup: 1 is not what pair_speedups say"),
    ({"pair_cpu_rates": [0.5, 0.5], "cpu_rate_ratio": 0.99}, "results[0].cpu_rate_ratio: 0.99 is not what pair_cpu_rates say"),
    ({"pair_idle_speedups": [1.0, 1.0], "idle_speedup": 1.9}, "results[0].idle_speedup: 1.9 is not what pair_idle_speedups say"),
])
def test_a_figure_no_probe_can_write_is_refused_naming_the_field(fields, message) -> None:
    """Each was compared as if measured: pairs all -1 gave "no regression", workers 0 or 10³⁹ passed."""
    assert refusal(with_step(**fields)).startswith(message)


@pytest.mark.parametrize("fields", [
    {"pair_speedups": [1.8, 1.9, 2.0], "speedup": 1.9},  # their geometric mean is 1.896
    {"pair_speedups": [2.1, 2.1], "speedup": 2.0},  # within 5 %: a tool may round
    {"pair_idle_speedups": [2.6, 2.6], "idle_speedup": 2.0},  # the idle-host estimate is capped at the cores
    {"serial_fraction": -0.2, "steal_ratio": -0.01},  # above linear speedup; the kernel's counter stepped back
    {"runnable_workers_ci": [-0.3, 1.2]},  # a mean's interval may dip below 0
    {"pair_speedups": [], "speedup": None, "speedup_ci": None},
])
def test_figures_a_probe_can_write_are_read(fields) -> None:
    document.parse(with_step(**fields))


def test_the_schema_says_the_bounds_the_reader_enforces() -> None:
    step = document.json_schema()["$defs"]["Step"]["properties"]
    assert step["workers"] == {"type": "integer", "minimum": 1, "maximum": 256}
    assert step["speedup"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0}
    assert step["speedup_ci"]["anyOf"][0] == {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0},
                                              "minItems": 2, "maxItems": 2, "description": "[low, high], low <= high"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(with_step(workers=0), document.json_schema())


def steps_document(steps: int) -> dict:
    """A document of ``steps`` steps, as the product writes each."""
    written = json.loads(json.dumps(document.to_json(document.build(reports(), HOST))))
    written["results"] = [dict(written["results"][1], workers=1 + i % 256, workload=f"w{i // 256}") for i in range(steps)]
    return written


def test_reading_reads_each_class_once_not_each_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """The type hints were read for every object: ~1 ms a step, 100 000 steps took minutes."""
    import typing

    calls: list[object] = []
    real = typing.get_type_hints
    monkeypatch.setattr(typing, "get_type_hints", lambda cls, *a, **k: calls.append(cls) or real(cls, *a, **k))
    monkeypatch.setattr(document, "TYPES", document.typedjson.Types(document.FIELD_BOUNDS))
    assert len(document.parse(steps_document(1000)).results) == 1000
    assert len(calls) == len(set(calls)) == 4  # Results, Host, InterpreterInfo, Step


def test_reading_takes_time_linear_in_the_steps() -> None:
    from scaling import assert_linear

    assert_linear(document.parse, steps_document, 300)
