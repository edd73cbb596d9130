"""The workload registry and every built-in workload."""

from __future__ import annotations

import asyncio

import pytest

from exporter.runner import workloads


def test_registry_holds_the_documented_catalogue():
    assert set(workloads.ALL_WORKLOADS) == {"pure_python", "objects", "sha256", "zlib", "json", "sleep"}


@pytest.mark.parametrize("name", sorted(workloads.ALL_WORKLOADS))
def test_every_workload_runs_and_is_registered_under_its_name(name):
    workload = workloads.resolve(name)
    assert workload.name == name
    workload.operation()
    assert workload.description


def test_sleep_has_an_awaitable_form_for_the_asyncio_mode():
    assert workloads.resolve("sleep").async_operation is not None
    asyncio.run(workloads.resolve("sleep").async_operation())
    assert workloads.resolve("pure_python").async_operation is None


def test_user_workload_is_imported_from_package_module_function():
    workload = workloads.resolve("json:dumps")
    assert workload.name == "json:dumps"
    assert workload.operation is __import__("json").dumps


def test_unknown_workload_names_the_known_ones():
    with pytest.raises(KeyError, match="pure_python"):
        workloads.resolve("nope")


def test_the_runner_has_an_execution_environment_for_every_mode_of_the_table():
    """exporter.runner.modes is the one mode table; the runner's pools are keyed by its names."""
    from exporter.runner import modes
    from exporter.runner import pools

    assert tuple(pools.POOLS) == modes.MODES
