"""promtool unit tests of the exporter alerts (`pyparallel-exporter-alerts.yml`), generated from
the same MixinConfig as the rules.

Every label the selector fixes, every threshold, every hold time and every expected
annotation comes from the config, so `python -m dashboards.generate --selector 'job="python"'`
renders rules and tests that agree. The regression, blind-spot and fleet scenarios are in
`promtool_scenarios.py`; the inputs' shape is described in `promtool_inputs.py`.
"""

from __future__ import annotations

import random
from typing import Any

from dashboards.exporter_alerts import exporter_alerts_group
from dashboards.mixin_config import CONFIG, MixinConfig, seconds
from dashboards.promtool_inputs import (
    ROUND,
    ROUND_OFFSET,
    Target,
    Value,
    case,
    const,
    cycle,
    duration_text,
    jitter,
    round_at,
    series,
    silent,
    unit_test_file,
    when,
)
from dashboards.promtool_inputs import fires as _fires

RULE_FILES = ["../rules/pyparallel-exporter-alerts.yml"]


def fires(c: MixinConfig, name: str, at: str, labels: dict[str, str], value: float) -> dict[str, Any]:
    return _fires([exporter_alerts_group(c)], name, at, labels, value)


def number(value: Value) -> float:
    """A round's value where the test knows it is a number."""
    assert isinstance(value, float), value
    return value


def fire_time(start_round: int, hold: str, evaluation: int = 60) -> str:
    """When an alert whose condition holds from round `start_round` on fires: its first
    evaluation on that round's data plus the hold time, at the evaluation interval."""
    first = -(-(start_round * ROUND + ROUND_OFFSET) // evaluation) * evaluation
    return duration_text(-(-(first + seconds(hold)) // evaluation) * evaluation)


# --- probe health ----------------------------------------------------------------------


def _timestamps(start_round: int, rounds: int) -> list[Value]:
    """A last-success timestamp that advances with every round."""
    return [float((start_round + i) * ROUND) for i in range(rounds)]


def probe_tests(c: MixinConfig) -> list[dict[str, Any]]:
    t = Target(c)
    step = t.step("default", "pure_python", "threads", 2)
    h = c.probe_failing_rounds
    tests = []

    tests.append(case(
        "PyParallelExporterDown fires after the scrape fails for its hold time, not before",
        [series("up", t.labels, const(1, 2) + const(0, 10))],
        [silent("PyParallelExporterDown", when(1)),
         fires(c, "PyParallelExporterDown", when(10), t.labels, 0)],
    ))
    unnamed = Target(c, host=None)
    tests.append(case(
        f"PyParallelExporterDown without a {c.host_label} label in the scrape config names the host by its "
        f"{c.host_fallback_label} (it used to carry neither)",
        [series("up", unnamed.labels, const(1, 2) + const(0, 10))],
        [fires(c, "PyParallelExporterDown", when(10), unnamed.alert_labels, 0)],
    ))
    tests.append(case(
        "PyParallelExporterDown stays silent while the exporter is scraped",
        [series("up", t.labels, const(1, 12))],
        [silent("PyParallelExporterDown", when(11))],
    ))

    # Succeeds for 6 rounds (0..5), then fails from round 6 on.
    ok, failing = 6, 6
    failing_inputs = [
        series("pyparallel_probe_success", step, const(1, ok) + const(0, failing)),
        series("pyparallel_probe_last_success_timestamp_seconds", step,
               _timestamps(0, ok) + const(float((ok - 1) * ROUND), failing)),
        series("pyparallel_probe_interval_seconds", t.labels, const(ROUND, ok + failing)),
    ]
    tests.append(case(
        f"PyParallelProbeFailing fires at the {h}th failed round in a row, not at the first",
        failing_inputs,
        [silent("PyParallelProbeFailing", when(ok)),
         fires(c, "PyParallelProbeFailing", when(ok - 1 + h), step, 0),
         # Stale fires later too; Alertmanager inhibits it (tests/test_dashboards_live.py).
         silent("PyParallelProbeResultsStale", when(ok - 1 + h))],
    ))
    fast = 60
    tests.append(case(
        "PyParallelProbeFailing counts rounds of the probe interval in force: 1-minute rounds fire within minutes",
        [series("pyparallel_probe_success", step, const(1, 2) + const(0, 4)),
         series("pyparallel_probe_last_success_timestamp_seconds", step, _timestamps(0, 2) + const(float(ROUND), 4)),
         series("pyparallel_probe_interval_seconds", t.labels, const(fast, 6))],
        # 5m interval samples, but the exporter says 60 s: two minutes without success are
        # more than (rounds - 0.25) intervals.
        [fires(c, "PyParallelProbeFailing", when(2), step, 0)],
    ))
    tests.append(case(
        "PyParallelProbeFailing stays silent when every other round fails (noisy), and after one failure",
        [series("pyparallel_probe_success", step, [float(i % 2 == 0) for i in range(12)]),
         series("pyparallel_probe_last_success_timestamp_seconds", step,
                [float((i - i % 2) * ROUND) for i in range(12)]),
         series("pyparallel_probe_interval_seconds", t.labels, const(ROUND, 12))],
        [silent("PyParallelProbeFailing", when(i)) for i in range(1, 12, 2)],
    ))
    never = t.step("default", "faulty_workloads:raises", "threads", 2)
    tests.append(case(
        f"PyParallelProbeFailing fires for a probe that never succeeded once it failed {h} times",
        [series("pyparallel_probe_success", never, const(0, 6)),
         series("pyparallel_probe_failures_total", {**never, "reason": "error"}, [float(i + 1) for i in range(6)]),
         series("pyparallel_probe_failures_total", {**never, "reason": "timeout"}, const(0, 6)),
         series("pyparallel_probe_interval_seconds", t.labels, const(ROUND, 6))],
        [silent("PyParallelProbeFailing", when(h - 2)),
         fires(c, "PyParallelProbeFailing", when(h - 1), never, 0)],
    ))

    # Rounds stop after round 5: success stays 1, the timestamp stops.
    stopped = [
        series("pyparallel_probe_success", step, const(1, 20)),
        series("pyparallel_probe_last_success_timestamp_seconds", step, _timestamps(0, 6) + const(5.0 * ROUND, 14)),
        series("pyparallel_probe_interval_seconds", t.labels, const(ROUND, 20)),
    ]
    hold = seconds(c.stale_for) // ROUND
    stale_at = 5 + c.stale_intervals + hold + 1
    tests.append(case(
        "PyParallelProbeResultsStale fires when the rounds stop although the last one succeeded",
        stopped,
        [silent("PyParallelProbeResultsStale", when(5 + c.stale_intervals)),
         silent("PyParallelProbeFailing", when(stale_at)),
         fires(c, "PyParallelProbeResultsStale", when(stale_at), step,
               (stale_at - 5) * ROUND + 120)],
    ))
    tests.append(case(
        "PyParallelProbeResultsStale stays silent while rounds come with ±25 % jitter in their timing",
        [series("pyparallel_probe_last_success_timestamp_seconds", step,
                [float(i * ROUND + random.Random(i).randint(-ROUND // 4, ROUND // 4)) for i in range(20)]),
         series("pyparallel_probe_interval_seconds", t.labels, const(ROUND, 20))],
        [silent("PyParallelProbeResultsStale", when(i)) for i in (5, 10, 19)],
    ))

    tests.append(case(
        "PyParallelRoundLongerThanInterval fires when rounds run back to back",
        [series("pyparallel_round_duration_seconds", t.labels, const(20, 2) + const(ROUND, 10)),
         series("pyparallel_probe_interval_seconds", t.labels, const(ROUND, 12))],
        [silent("PyParallelRoundLongerThanInterval", when(2)),
         fires(c, "PyParallelRoundLongerThanInterval", fire_time(2, c.rounds_for), t.labels, ROUND)],
    ))
    tests.append(case(
        "PyParallelRoundLongerThanInterval stays silent for short rounds of noisy length",
        [series("pyparallel_round_duration_seconds", t.labels, jitter(15, 12, 3)),
         series("pyparallel_probe_interval_seconds", t.labels, const(ROUND, 12))],
        [silent("PyParallelRoundLongerThanInterval", when(11))],
    ))

    reload_hold = seconds(c.config_reload_for) // ROUND
    tests.append(case(
        "PyParallelConfigReloadFailed fires after a rejected reload and clears after a good one",
        [series("pyparallel_config_last_reload_successful", t.labels, const(1, 2) + const(0, 4) + const(1, 4))],
        [silent("PyParallelConfigReloadFailed", when(2)),
         fires(c, "PyParallelConfigReloadFailed", when(2 + reload_hold), t.labels, 0),
         silent("PyParallelConfigReloadFailed", when(8))],
    ))
    return tests


# --- speedup ---------------------------------------------------------------------------


def capacity_tests(c: MixinConfig) -> list[dict[str, Any]]:
    t = Target(c)
    n = 12
    hold = seconds(c.processes_far_below_for) // ROUND
    low = t.step("default", "pure_python", "processes", 4)
    tests = [case(
        "PyParallelProcessesSpeedupFarBelowUsableCores fires when 4 workers on 4 usable cores reach 1.2 (±25 %)",
        [series("pyparallel_host_cpus", {**t.labels, "kind": "usable"}, const(4, n)),
         series("pyparallel_speedup_ratio", low, cycle(1.2, n)),
         series("pyparallel_efficiency_ratio", low, cycle(0.3, n))],
        [silent("PyParallelProcessesSpeedupFarBelowUsableCores", when(1)),
         fires(c, "PyParallelProcessesSpeedupFarBelowUsableCores", when(hold + 2), low, 1.2)],
    )]
    good = t.step("default", "pure_python", "processes", 4)
    one = t.step("default", "pure_python", "processes", 1)
    sleep = t.step("default", "sleep", "processes", 4)
    threads = t.step("default", "pure_python", "threads", 4)
    dip = jitter(3.6, n, 11)
    dip[6] = 1.0  # one bad round among good ones
    tests.append(case(
        "PyParallelProcessesSpeedupFarBelowUsableCores stays silent for noisy good scaling with one bad round, "
        "one worker, sleep and threads",
        [series("pyparallel_host_cpus", {**t.labels, "kind": "usable"}, const(4, n)),
         series("pyparallel_speedup_ratio", good, dip),
         series("pyparallel_efficiency_ratio", good, [v / 4 if isinstance(v, float) else v for v in dip]),
         series("pyparallel_speedup_ratio", one, jitter(0.95, n, 12)),
         series("pyparallel_efficiency_ratio", one, jitter(0.95, n, 12)),
         series("pyparallel_speedup_ratio", sleep, const(1, n)),
         series("pyparallel_efficiency_ratio", sleep, const(0.25, n)),
         series("pyparallel_speedup_ratio", threads, const(1, n)),
         series("pyparallel_efficiency_ratio", threads, const(0.25, n))],
        [silent("PyParallelProcessesSpeedupFarBelowUsableCores", when(i)) for i in (4, 7, 11)],
    ))
    return tests


def _identity(t: Target, interpreter: str, version: str, free_threaded: bool, gil: int, requested: int,
              rounds: int) -> list[dict[str, str]]:
    role = {**t.labels, "interpreter": interpreter}
    info = {**role, "version": version, "implementation": "cpython", "free_threaded_build": str(free_threaded).lower()}
    return [series("pyparallel_python_info", info, const(1, rounds)),
            series("pyparallel_gil_enabled", role, const(gil, rounds)),
            series("pyparallel_gil_requested", role, const(requested, rounds))]


def free_threading_tests(c: MixinConfig) -> list[dict[str, Any]]:
    t = Target(c)
    n = 12
    usable = series("pyparallel_host_cpus", {**t.labels, "kind": "usable"}, const(2, n))
    ft = "free-threaded"
    threads, processes = t.step(ft, "pure_python", "threads", 2), t.step(ft, "pure_python", "processes", 2)
    slow = cycle(0.5, n)
    fire = fire_time(0, c.rounds_for)
    tests = [case(
        "PyParallelFreeThreadedThreadsFarBelowProcesses fires when threads reach 0.5 and processes 1.9 in the same "
        "rounds (both ±25 % in step), after more than two rounds",
        [usable, *_identity(t, ft, "3.13.5", True, 0, 0, n),
         series("pyparallel_speedup_ratio", threads, slow),
         series("pyparallel_speedup_ratio", processes, cycle(1.9, n))],
        [silent("PyParallelFreeThreadedThreadsFarBelowProcesses", when(1)),
         fires(c, "PyParallelFreeThreadedThreadsFarBelowProcesses", fire, threads, number(slow[round_at(seconds(fire))]))],
    )]
    gil = "default"
    gil_threads, gil_processes = t.step(gil, "pure_python", "threads", 2), t.step(gil, "pure_python", "processes", 2)
    control = "free-threaded-gil"
    tests.append(case(
        "PyParallelFreeThreadedThreadsFarBelowProcesses stays silent for scaling threads with independent ±25 % "
        "noise, a GIL build and a free-threaded build run with PYTHON_GIL=1",
        [usable, *_identity(t, ft, "3.13.5", True, 0, 0, n), *_identity(t, gil, "3.13.5", False, 1, 0, n),
         *_identity(t, control, "3.13.5", True, 1, 1, n),
         series("pyparallel_speedup_ratio", threads, jitter(1.8, n, 21)),
         series("pyparallel_speedup_ratio", processes, jitter(1.9, n, 22)),
         series("pyparallel_speedup_ratio", gil_threads, jitter(1.0, n, 23)),
         series("pyparallel_speedup_ratio", gil_processes, jitter(1.9, n, 24)),
         series("pyparallel_speedup_ratio", t.step(control, "pure_python", "threads", 2), jitter(1.0, n, 25)),
         series("pyparallel_speedup_ratio", t.step(control, "pure_python", "processes", 2), jitter(1.9, n, 26))],
        [silent("PyParallelFreeThreadedThreadsFarBelowProcesses", when(i)) for i in (3, 7, 11)],
    ))

    # Parallel for 6 rounds, then one core's worth from round 6 on.
    conclusive = series("pyparallel_step_conclusive", threads, const(1, n))
    serial_rounds = -(-seconds(c.rounds_for) // ROUND)
    tests.append(case(
        f"PyParallelFreeThreadedThreadsNotParallel fires once threads kept one core busy for {c.rounds_for} "
        f"({serial_rounds} rounds in a row), not after one round or {serial_rounds - 1}",
        [usable, conclusive, *_identity(t, ft, "3.13.5", True, 0, 0, n),
         series("pyparallel_cpu_cores_used", threads, jitter(1.9, 6, 31) + const(1.0, 6))],
        [silent("PyParallelFreeThreadedThreadsNotParallel", when(5)),
         silent("PyParallelFreeThreadedThreadsNotParallel", when(6 + serial_rounds - 1, 0)),
         fires(c, "PyParallelFreeThreadedThreadsNotParallel", fire_time(6, c.rounds_for), threads, 1.0)],
    ))
    # One serial round among parallel ones, then the same round again, on 3.13t: each alone
    # is a coincidence (a round that met a lock), and flapping at +5 m was the defect.
    blips = jitter(1.9, n, 36)
    blips[3] = 1.0
    blips[7] = blips[8] = 1.0
    tests.append(case(
        f"PyParallelFreeThreadedThreadsNotParallel stays silent for one serial round and for {serial_rounds - 1} "
        "in a row on 3.13t",
        [usable, conclusive, *_identity(t, ft, "3.13.5", True, 0, 0, n),
         series("pyparallel_cpu_cores_used", threads, blips)],
        [silent("PyParallelFreeThreadedThreadsNotParallel", duration_text(i * 60)) for i in range(5, 60, 1)],
    ))
    one = t.step(ft, "pure_python", "threads", 1)
    busy_threads = t.step(ft, "sha256", "threads", 2)
    tests.append(case(
        "PyParallelFreeThreadedThreadsNotParallel stays silent for noisy parallel threads, a GIL build, "
        "one worker, PYTHON_GIL=1 and a host busy with other work",
        [usable, *_identity(t, ft, "3.13.5", True, 0, 0, n), *_identity(t, gil, "3.13.5", False, 1, 0, n),
         *_identity(t, control, "3.13.5", True, 1, 1, n),
         series("pyparallel_cpu_cores_used", threads, jitter(1.9, n, 32)),
         series("pyparallel_cpu_cores_used", one, jitter(1.0, n, 33)),
         series("pyparallel_cpu_cores_used", gil_threads, jitter(1.0, n, 34)),
         series("pyparallel_cpu_cores_used", t.step(control, "pure_python", "threads", 2), jitter(1.0, n, 35)),
         *(series("pyparallel_step_conclusive", step, const(1, n)) for step in (
             threads, one, gil_threads, t.step(control, "pure_python", "threads", 2))),
         # A host busy with other work: the exporter could not tell (step_conclusive 0).
         series("pyparallel_cpu_cores_used", busy_threads, const(1.0, n)),
         series("pyparallel_step_conclusive", busy_threads, const(0, n)),
         series("pyparallel_interference_cores", busy_threads, const(1.0, n))],
        [silent("PyParallelFreeThreadedThreadsNotParallel", when(i)) for i in (2, 6, 11)],
    ))
    return tests


def gil_tests(c: MixinConfig) -> list[dict[str, Any]]:
    t = Target(c)
    n = 6
    role = {**t.labels, "interpreter": "free-threaded"}
    tests = [case(
        "PyParallelGILEnabledOnFreeThreadedBuild fires when the GIL came back on without being asked for",
        _identity(t, "free-threaded", "3.13.5", True, 1, 0, n),
        [silent("PyParallelGILEnabledOnFreeThreadedBuild", when(1)),
         fires(c, "PyParallelGILEnabledOnFreeThreadedBuild", fire_time(0, c.rounds_for), role, 1)],
    ), case(
        "PyParallelGILEnabledOnFreeThreadedBuild stays silent for PYTHON_GIL=1 on purpose, a GIL build and GIL off",
        [*_identity(t, "free-threaded-gil", "3.13.5", True, 1, 1, n),
         *_identity(t, "default", "3.11.7", False, 1, 0, n),
         *_identity(t, "free-threaded", "3.13.5", True, 0, 0, n)],
        [silent("PyParallelGILEnabledOnFreeThreadedBuild", when(n - 1))],
    )]
    module = {**role, "module": "legacy_ext"}
    info = {**role, "version": "3.13.5", "implementation": "cpython", "free_threaded_build": "true"}
    gil_build = {**t.labels, "interpreter": "default"}
    tests += [case(
        "PyParallelModuleReenablesGIL fires when importing a module re-enables the GIL",
        [series("pyparallel_python_info", info, const(1, n)),
         series("pyparallel_import_gil_enabled", module, const(1, n)),
         series("pyparallel_import_gil_enabled", {**role, "module": "json"}, const(0, n))],
        [fires(c, "PyParallelModuleReenablesGIL", fire_time(0, c.rounds_for), module, 1)],
    ), case(
        "PyParallelModuleReenablesGIL stays silent on a GIL build and for modules that keep the GIL off",
        [series("pyparallel_python_info", {**gil_build, "version": "3.11.7", "implementation": "cpython",
                                           "free_threaded_build": "false"}, const(1, n)),
         series("pyparallel_import_gil_enabled", {**gil_build, "module": "legacy_ext"}, const(1, n)),
         series("pyparallel_python_info", info, const(1, n)),
         series("pyparallel_import_gil_enabled", {**role, "module": "json"}, const(0, n))],
        [silent("PyParallelModuleReenablesGIL", when(n - 1))],
    )]
    return tests


def promtool_test_files(config: MixinConfig = CONFIG) -> dict[str, dict[str, Any]]:
    """File name (in deploy/prometheus/tests) -> promtool test document."""
    from dashboards.promtool_scenarios import scenario_test_files

    return {
        "probes_test.yml": unit_test_file(RULE_FILES, probe_tests(config), "1m"),
        "speedup_test.yml": unit_test_file(RULE_FILES, capacity_tests(config) + free_threading_tests(config), "1m"),
        "gil_test.yml": unit_test_file(RULE_FILES, gil_tests(config), "1m"),
        **scenario_test_files(config),
    }
