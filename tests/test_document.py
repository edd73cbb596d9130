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
    steps = [StepResult("pure_python", "sequential", 1, success=True, summary=summary(1.0, speedup_ci=None)),
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
