"""promtool unit tests of the rules, generated from the same MixinConfig as the rules.

Every label the selector fixes, every threshold and every expected annotation comes from the
config, so `python -m dashboards.generate --selector 'job="python"'` renders rules and tests
that agree. Inputs are probe rounds every 5 minutes; "noisy" inputs vary ±25 % per round:
either a seeded random draw (silent cases: no expected value to compute) or the repeating
pattern ×1, ×1.25, ×0.75, whose median over any window of three or more rounds is the level
itself, so a firing case's `$value` is known exactly.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from dashboards import alerts
from dashboards.mixin_config import CONFIG, MixinConfig, parse_selector
from dashboards.recording import (
    interference_median,
    python_version,
    seconds,
    speedup_baseline,
    speedup_by_host,
    speedup_median,
    speedup_median_by_version,
    speedup_of_version,
)

ROUND = 300  # seconds between probe rounds in every test: the default interval
ROUNDS_PER_HOUR = 3600 // ROUND
DAY = 24 * ROUNDS_PER_HOUR
# Evaluation times are 2 minutes past a round, so no raw sample sits on a window boundary.
PAST_ROUND = 120

Value = Union[float, str, None]  # a number, "stale", or None for a missed scrape


# --- inputs ------------------------------------------------------------------------------


def cycle(level: float, rounds: int) -> list[Value]:
    """±25 % per round, median over any three or more rounds exactly `level`."""
    return [round(level * (1.0, 1.25, 0.75)[i % 3], 6) for i in range(rounds)]


def jitter(level: float, rounds: int, seed: int) -> list[Value]:
    """±25 % per round, drawn uniformly with a fixed seed."""
    draw = random.Random(seed)
    return [round(level * (1 + draw.uniform(-0.25, 0.25)), 4) for _ in range(rounds)]


def const(level: float, rounds: int) -> list[Value]:
    return [level] * rounds


def gap(rounds: int) -> list[Value]:
    return [None] * rounds


def values_text(values: Sequence[Value]) -> str:
    """promtool's notation; runs of one number as `axN` (N+1 values)."""
    tokens: list[str] = []
    i = 0
    while i < len(values):
        value = values[i]
        if value is None:
            tokens.append("_")
            i += 1
            continue
        if isinstance(value, str):
            tokens.append(value)
            i += 1
            continue
        run = 1
        while i + run < len(values) and values[i + run] == value:
            run += 1
        text = f"{value:g}"
        tokens.append(f"{text}x{run - 1}" if run > 1 else text)
        i += run
    return " ".join(tokens)


def labels_text(metric: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{inner}}}"


def when(rounds: int, past: int = PAST_ROUND) -> str:
    """The evaluation time `past` seconds after the given number of rounds from the start."""
    minutes, secs = divmod(rounds * ROUND + past, 60)
    hours, minutes = divmod(minutes, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or "0s"


@dataclass
class Target:
    """One scrape target of the exporter: the selector's labels, an address, a host."""

    config: MixinConfig
    instance: str = "host-a:9860"
    host: str = "host-a"

    @property
    def labels(self) -> dict[str, str]:
        return {**selector_labels(self.config), "instance": self.instance, self.config.host_label: self.host}

    def step(self, interpreter: str, workload: str, mode: str, workers: int) -> dict[str, str]:
        return {**self.labels, "interpreter": interpreter, "workload": workload, "mode": mode,
                "workers": str(workers)}

    def node_step(self, interpreter: str, workload: str, mode: str, workers: int) -> dict[str, str]:
        """The labels of a host-level (recorded) series of this step."""
        labels = self.step(interpreter, workload, mode, workers)
        del labels["instance"]
        return labels


def selector_labels(config: MixinConfig) -> dict[str, str]:
    """Label values the test series carry so that the selector picks them."""
    labels: dict[str, str] = {}
    for name, (operator, value) in parse_selector(config.exporter_selector).items():
        if operator != "=":
            raise ValueError(f"promtool tests need `=` matchers in the selector; {name}{operator}{value!r} is not one")
        labels[name] = value
    labels.setdefault("job", "pyparallel")
    return labels


def series(metric: str, labels: dict[str, str], values: Sequence[Value]) -> dict[str, str]:
    return {"series": labels_text(metric, labels), "values": values_text(values)}


# --- expectations ----------------------------------------------------------------------


def render(text: str, labels: dict[str, str], value: float) -> str:
    """The subset of Prometheus' alert templating the descriptions use."""
    out = text
    for name, label in labels.items():
        out = out.replace(f"{{{{ $labels.{name} }}}}", label)
    out = out.replace('{{ printf "%.2f" $value }}', f"{value:.2f}")
    out = out.replace("{{ $value | humanizePercentage }}", f"{value * 100:.4g}%")
    out = out.replace("{{ $value | humanizeDuration }}", humanize_duration(value))
    assert "{{" not in out, f"template construct not rendered by the test generator: {out}"
    return out


def humanize_duration(value: float) -> str:
    """Prometheus' humanizeDuration for whole seconds of a minute or more."""
    whole = int(value)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m {secs}s"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{value:.4g}s"


def _rule(config: MixinConfig, name: str) -> dict[str, Any]:
    return next(r for r in alerts.alerts_group(config)["rules"] if r["alert"] == name)


def fires(config: MixinConfig, name: str, at: str, labels: dict[str, str], value: float) -> dict[str, Any]:
    """An alert_rule_test case: `name` fires once, with these labels and this `$value`."""
    rule = _rule(config, name)
    annotations = {key: render(text, labels, value) for key, text in rule["annotations"].items()}
    return {"alertname": name, "eval_time": at, "exp_alerts": [
        {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}]}


def silent(name: str, at: str) -> dict[str, Any]:
    return {"alertname": name, "eval_time": at, "exp_alerts": []}


def case(name: str, inputs: Iterable[dict[str, str]], checks: list[dict[str, Any]],
         exprs: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    test: dict[str, Any] = {"name": name, "interval": "5m", "input_series": list(inputs)}
    if checks:
        test["alert_rule_test"] = checks
    if exprs:
        test["promql_expr_test"] = exprs
    return test


def unit_test_file(tests: list[dict[str, Any]], evaluation_interval: str = "1m") -> dict[str, Any]:
    return {
        "rule_files": ["../rules/pyparallel-recording.yml", "../rules/pyparallel-alerts.yml"],
        "evaluation_interval": evaluation_interval,
        "tests": tests,
    }


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

    window_rounds = seconds(c.failure_ratio_window) // ROUND
    flaky = [float(i % 2 == 0) for i in range(window_rounds + 12)]
    tests.append(case(
        f"PyParallelProbeFailureRatioHigh fires when every other round fails for {c.failure_ratio_window}",
        [series("pyparallel_probe_success", step, flaky)],
        [silent("PyParallelProbeFailureRatioHigh", when(6)),
         fires(c, "PyParallelProbeFailureRatioHigh", when(window_rounds + 10), step, 0.5)],
    ))
    rare = const(1.0, window_rounds + 12)
    rare[window_rounds] = 0.0
    tests.append(case(
        "PyParallelProbeFailureRatioHigh stays silent for one failed round in the window",
        [series("pyparallel_probe_success", step, rare)],
        [silent("PyParallelProbeFailureRatioHigh", when(window_rounds + 5))],
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

    overrun = seconds(c.round_overrun_for) // ROUND
    tests.append(case(
        "PyParallelRoundLongerThanInterval fires when rounds run back to back",
        [series("pyparallel_round_duration_seconds", t.labels, const(20, 2) + const(ROUND, 10)),
         series("pyparallel_probe_interval_seconds", t.labels, const(ROUND, 12))],
        [silent("PyParallelRoundLongerThanInterval", when(2)),
         fires(c, "PyParallelRoundLongerThanInterval", when(2 + overrun), t.labels, ROUND)],
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
    hold = seconds(c.threads_below_processes_for) // ROUND
    tests = [case(
        "PyParallelFreeThreadedThreadsFarBelowProcesses fires when threads reach 0.5 and processes 1.9 in the same "
        "rounds (both ±25 % in step)",
        [usable, *_identity(t, ft, "3.13.5", True, 0, 0, n),
         series("pyparallel_speedup_ratio", threads, cycle(0.5, n)),
         series("pyparallel_speedup_ratio", processes, cycle(1.9, n))],
        [silent("PyParallelFreeThreadedThreadsFarBelowProcesses", when(hold - 1)),
         fires(c, "PyParallelFreeThreadedThreadsFarBelowProcesses", when(hold + 1), threads, 0.5)],
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
    hold = seconds(c.threads_not_parallel_for) // ROUND
    tests.append(case(
        "PyParallelFreeThreadedThreadsNotParallel fires at the second round in which threads keep one core busy",
        [usable, *_identity(t, ft, "3.13.5", True, 0, 0, n),
         series("pyparallel_cpu_cores_used", threads, jitter(1.9, 6, 31) + const(1.0, 6))],
        [silent("PyParallelFreeThreadedThreadsNotParallel", when(5)),
         silent("PyParallelFreeThreadedThreadsNotParallel", when(6)),
         fires(c, "PyParallelFreeThreadedThreadsNotParallel", when(6 + hold), threads, 1.0)],
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
         series("pyparallel_cpu_cores_used", busy_threads, const(1.0, n)),
         series("pyparallel_interference_cores", busy_threads, const(1.0, n))],
        [silent("PyParallelFreeThreadedThreadsNotParallel", when(i)) for i in (2, 6, 11)],
    ))
    return tests


def gil_tests(c: MixinConfig) -> list[dict[str, Any]]:
    t = Target(c)
    n = 6
    hold = seconds(c.gil_enabled_for) // ROUND
    role = {**t.labels, "interpreter": "free-threaded"}
    tests = [case(
        "PyParallelGILEnabledOnFreeThreadedBuild fires when the GIL came back on without being asked for",
        _identity(t, "free-threaded", "3.13.5", True, 1, 0, n),
        [fires(c, "PyParallelGILEnabledOnFreeThreadedBuild", when(hold + 1), role, 1)],
    ), case(
        "PyParallelGILEnabledOnFreeThreadedBuild stays silent for PYTHON_GIL=1 on purpose, a GIL build and GIL off",
        [*_identity(t, "free-threaded-gil", "3.13.5", True, 1, 1, n),
         *_identity(t, "default", "3.11.7", False, 1, 0, n),
         *_identity(t, "free-threaded", "3.13.5", True, 0, 0, n)],
        [silent("PyParallelGILEnabledOnFreeThreadedBuild", when(hold + 1))],
    )]
    module = {**role, "module": "legacy_ext"}
    info = {**role, "version": "3.13.5", "implementation": "cpython", "free_threaded_build": "true"}
    gil_build = {**t.labels, "interpreter": "default"}
    hold = seconds(c.import_gil_for) // ROUND
    tests += [case(
        "PyParallelModuleReenablesGIL fires when importing a module re-enables the GIL",
        [series("pyparallel_python_info", info, const(1, n)),
         series("pyparallel_import_gil_enabled", module, const(1, n)),
         series("pyparallel_import_gil_enabled", {**role, "module": "json"}, const(0, n))],
        [fires(c, "PyParallelModuleReenablesGIL", when(hold + 1), module, 1)],
    ), case(
        "PyParallelModuleReenablesGIL stays silent on a GIL build and for modules that keep the GIL off",
        [series("pyparallel_python_info", {**gil_build, "version": "3.11.7", "implementation": "cpython",
                                           "free_threaded_build": "false"}, const(1, n)),
         series("pyparallel_import_gil_enabled", {**gil_build, "module": "legacy_ext"}, const(1, n)),
         series("pyparallel_python_info", info, const(1, n)),
         series("pyparallel_import_gil_enabled", {**role, "module": "json"}, const(0, n))],
        [silent("PyParallelModuleReenablesGIL", when(hold + 1))],
    )]
    return tests


# --- regression and upgrades -----------------------------------------------------------


@dataclass
class History:
    """A probe's speedup over days, with the Python version of its role and optional other load."""

    config: MixinConfig
    before: list[Value]
    after: list[Value]
    old_version: str = "3.13.5"
    new_version: Optional[str] = None  # None: no upgrade
    old_target: Optional[Target] = None
    new_target: Optional[Target] = None  # another instance on the same host: a rollout
    interference: Optional[list[Value]] = None

    def inputs(self) -> list[dict[str, str]]:
        old = self.old_target or Target(self.config)
        new = self.new_target or old
        step = ("default", "pure_python", "threads", 2)
        before, after = len(self.before), len(self.after)
        out = []
        info = {"implementation": "cpython", "free_threaded_build": "true"}
        role_old = {**old.labels, "interpreter": "default"}
        role_new = {**new.labels, "interpreter": "default"}
        new_version = self.new_version or self.old_version
        if new is old:
            out.append(series("pyparallel_speedup_ratio", old.step(*step), self.before + self.after))
            if new_version == self.old_version:
                out.append(series("pyparallel_python_info", {**role_old, "version": self.old_version, **info},
                                  const(1, before + after)))
            else:
                out.append(series("pyparallel_python_info", {**role_old, "version": self.old_version, **info},
                                  const(1, before) + ["stale"]))
                out.append(series("pyparallel_python_info", {**role_old, "version": new_version, **info},
                                  gap(before) + const(1, after)))
        else:
            # The old pod's series end with the pod; the new pod's begin on the same node.
            out.append(series("pyparallel_speedup_ratio", old.step(*step), self.before + ["stale"]))
            out.append(series("pyparallel_speedup_ratio", new.step(*step), gap(before) + self.after))
            out.append(series("pyparallel_python_info", {**role_old, "version": self.old_version, **info},
                              const(1, before) + ["stale"]))
            out.append(series("pyparallel_python_info", {**role_new, "version": new_version, **info},
                              gap(before) + const(1, after)))
        if self.interference is not None:
            out.append(series("pyparallel_interference_cores", new.step(*step), gap(before) + self.interference))
        return out

    def node_labels(self) -> dict[str, str]:
        return (self.new_target or self.old_target or Target(self.config)).node_step(
            "default", "pure_python", "threads", 2)


def regression_tests(c: MixinConfig) -> list[dict[str, Any]]:
    history_rounds = seconds(c.baseline_min_history) // ROUND + 2 * ROUNDS_PER_HOUR
    median_rounds = seconds(c.speedup_median_window) // ROUND
    hold = seconds(c.regression_for) // ROUND
    # Evaluated once the current median covers only the drop and the hold time has passed.
    at = history_rounds + median_rounds + hold + 2
    after = at - history_rounds + 1
    regressed = History(c, cycle(1.9, history_rounds), cycle(1.0, after))
    steady = History(c, jitter(1.9, history_rounds, 41), jitter(1.9, after, 42))
    labels = regressed.node_labels()
    tests = [case(
        f"PyParallelSpeedupRegressed fires when the {c.speedup_median_window} median falls from 1.9 to 1.0 "
        "(both ±25 %) and no upgrade explains it",
        regressed.inputs(),
        [silent("PyParallelSpeedupRegressed", when(history_rounds)),
         fires(c, "PyParallelSpeedupRegressed", when(at), labels, 1.0),
         silent("PyParallelSpeedupDroppedAfterPythonUpgrade", when(at))],
    ), case(
        "PyParallelSpeedupRegressed stays silent for a steady speedup with ±25 % noise",
        steady.inputs(),
        [silent("PyParallelSpeedupRegressed", when(at))],
    )]
    short = seconds(c.baseline_min_history) // ROUND - 3 * ROUNDS_PER_HOUR
    young = History(c, cycle(1.9, short), cycle(1.0, after))
    young_at = short + median_rounds + hold + 2
    tests.append(case(
        f"PyParallelSpeedupRegressed stays silent before the series has {c.baseline_min_history} of history",
        young.inputs(),
        [silent("PyParallelSpeedupRegressed", when(young_at))],
    ))
    busy = History(c, cycle(1.9, history_rounds), cycle(1.0, after), interference=const(1.0, after))
    busy_at = history_rounds + median_rounds + seconds(c.host_busy_for) // ROUND + 1
    tests.append(case(
        "PyParallelSpeedupRegressed stays silent while other load on the host explains the drop, "
        "and PyParallelHostTooBusyToMeasure says so",
        busy.inputs(),
        [silent("PyParallelSpeedupRegressed", when(at)),
         silent("PyParallelSpeedupDroppedAfterPythonUpgrade", when(at)),
         fires(c, "PyParallelHostTooBusyToMeasure", when(busy_at),
               {k: v for k, v in busy.node_labels().items()
                if k not in ("interpreter", "workload", "mode", "workers")}, 1.0)],
    ))
    quiet = History(c, cycle(1.9, history_rounds), cycle(1.9, after), interference=jitter(0.1, after, 43))
    tests.append(case(
        "PyParallelHostTooBusyToMeasure stays silent for a little other load (noisy)",
        quiet.inputs(),
        [silent("PyParallelHostTooBusyToMeasure", when(at))],
    ))
    return tests


def upgrade_tests(c: MixinConfig) -> list[dict[str, Any]]:
    history_rounds = seconds(c.baseline_min_history) // ROUND + 2 * ROUNDS_PER_HOUR
    median_rounds = seconds(c.speedup_median_window) // ROUND
    hold = max(seconds(c.regression_for), seconds(c.upgrade_drop_for)) // ROUND
    at = history_rounds + median_rounds + hold + 2
    # Long after the rolling baseline has forgotten the old version: the upgrade alert stays.
    late = history_rounds + seconds(c.baseline_window) // ROUND + seconds(c.baseline_offset) // ROUND + 2
    after = late - history_rounds + 1
    tests = []
    bump = History(c, cycle(1.9, history_rounds), cycle(1.0, after), "3.13.5", "3.14.0")
    labels = bump.node_labels()
    tests.append(case(
        "A minor version bump 3.13 -> 3.14 under the default role name that halves the threads speedup fires "
        "both regression alerts (Alertmanager keeps the upgrade one), and the upgrade one stays after the "
        "rolling baseline has caught up",
        bump.inputs(),
        [silent("PyParallelSpeedupDroppedAfterPythonUpgrade", when(history_rounds)),
         fires(c, "PyParallelSpeedupDroppedAfterPythonUpgrade", when(at), labels, 1.0),
         fires(c, "PyParallelSpeedupRegressed", when(at), labels, 1.0),
         silent("PyParallelSpeedupRegressed", when(late)),
         fires(c, "PyParallelSpeedupDroppedAfterPythonUpgrade", when(late), labels, 1.0)],
    ))
    same = History(c, jitter(1.9, history_rounds, 51), jitter(1.9, after, 52), "3.13.5", "3.14.0")
    tests.append(case(
        "A minor version bump 3.13 -> 3.14 that keeps the speedup (±25 % noise) fires nothing",
        same.inputs(),
        [silent("PyParallelSpeedupDroppedAfterPythonUpgrade", when(at)),
         silent("PyParallelSpeedupRegressed", when(at)),
         silent("PyParallelSpeedupDroppedAfterPythonUpgrade", when(late))],
    ))
    busy = History(c, cycle(1.9, history_rounds), cycle(1.0, after), "3.13.5", "3.14.0",
                   interference=const(1.0, after))
    tests.append(case(
        "A minor version bump whose drop comes with other load on the host fires no regression alert",
        busy.inputs(),
        [silent("PyParallelSpeedupDroppedAfterPythonUpgrade", when(at)),
         silent("PyParallelSpeedupRegressed", when(at))],
    ))
    pod_a = Target(c, instance="10.42.0.17:9860", host="node-1")
    pod_b = Target(c, instance="10.42.0.31:9860", host="node-1")
    rollout = History(c, cycle(1.9, history_rounds), cycle(1.0, after), "3.13.5", "3.14.0", pod_a, pod_b)
    tests.append(case(
        "A Kubernetes rollout to an image with Python 3.14 (new pod, new instance, same node) that halves the "
        "speedup fires the regression alerts on the node's series",
        rollout.inputs(),
        [fires(c, "PyParallelSpeedupDroppedAfterPythonUpgrade", when(at), rollout.node_labels(), 1.0),
         fires(c, "PyParallelSpeedupRegressed", when(at), rollout.node_labels(), 1.0)],
    ))
    moved = History(c, jitter(1.9, history_rounds, 53), jitter(1.9, after, 54), "3.13.5", None, pod_a, pod_b)
    tests.append(case(
        "A Kubernetes rollout that keeps Python and the speedup (±25 % noise) fires nothing",
        moved.inputs(),
        [silent("PyParallelSpeedupRegressed", when(at)),
         silent("PyParallelSpeedupDroppedAfterPythonUpgrade", when(at))],
    ))
    return tests


# --- recording rules -------------------------------------------------------------------


def recording_tests(c: MixinConfig) -> list[dict[str, Any]]:
    sel = c.exporter_selector
    pod_a = Target(c, instance="10.42.0.17:9860", host="node-1")
    pod_b = Target(c, instance="10.42.0.31:9860", host="node-1")
    step = ("default", "pure_python", "threads", 2)
    node = pod_a.node_step(*step)
    history = seconds(c.baseline_min_history) // ROUND + 2 * ROUNDS_PER_HOUR
    role = {k: v for k, v in node.items() if k not in ("workload", "mode", "workers")}
    inputs = [
        series("pyparallel_speedup_ratio", pod_a.step(*step), const(1.9, history) + ["stale"]),
        series("pyparallel_speedup_ratio", pod_b.step(*step), gap(history) + const(1.0, 2 * ROUNDS_PER_HOUR)),
        series("pyparallel_python_info", {**pod_a.labels, "interpreter": "default", "version": "3.13.5",
                                          "implementation": "cpython", "free_threaded_build": "true"},
               const(1, history) + ["stale"]),
        series("pyparallel_python_info", {**pod_b.labels, "interpreter": "default", "version": "3.14.0",
                                          "implementation": "cpython", "free_threaded_build": "true"},
               gap(history) + const(1, 2 * ROUNDS_PER_HOUR)),
        series("pyparallel_interference_cores", pod_a.step(*step), const(0.25, history)),
    ]
    end = history + 2 * ROUNDS_PER_HOUR - 1
    young = seconds(c.baseline_min_history) // ROUND - ROUNDS_PER_HOUR

    def sample(expr: str, at: str, labels: dict[str, str], value: float) -> dict[str, Any]:
        name = expr.split("{", 1)[0]
        inner = ", ".join(f'{k}="{v}"' for k, v in {"__name__": name, **labels}.items())
        return {"expr": expr, "eval_time": at, "exp_samples": [{"labels": f"{{{inner}}}", "value": value}]}

    exprs = [
        sample(f"{speedup_by_host(c)}{{{sel}}}", when(end), node, 1.0),
        sample(f"{speedup_median(c)}{{{sel}}}", when(history - 1), node, 1.9),
        sample(f"{speedup_median(c)}{{{sel}}}", when(end), node, 1.0),
        sample(f"{python_version(c)}{{{sel}}}", when(end), {**role, "version": "3.14.0"}, 1),
        sample(f"{interference_median(c)}{{{sel}}}", when(history - 1), node, 0.25),
        # No baseline before baseline_min_history, one after; it is still 1.9 an hour after the drop.
        {"expr": f"{speedup_baseline(c)}{{{sel}}}", "eval_time": when(young), "exp_samples": []},
        sample(f"{speedup_baseline(c)}{{{sel}}}", when(history + ROUNDS_PER_HOUR), node, 1.9),
        sample(f"{speedup_median_by_version(c)}{{{sel}}}", when(history - 1), {**node, "version": "3.13.5"}, 1.9),
        sample(f"{speedup_of_version(c)}{{{sel}}}", when(end), {**node, "version": "3.13.5"}, 1.9),
    ]
    return [case("Recording rules: per host across a rollout, per version, baseline after enough history",
                 inputs, [], exprs)]


def promtool_test_files(config: MixinConfig = CONFIG) -> dict[str, dict[str, Any]]:
    """File name (in deploy/prometheus/tests) -> promtool test document."""
    return {
        "probes_test.yml": unit_test_file(probe_tests(config)),
        "speedup_test.yml": unit_test_file(capacity_tests(config) + free_threading_tests(config)),
        "gil_test.yml": unit_test_file(gil_tests(config)),
        "regression_test.yml": unit_test_file(regression_tests(config), evaluation_interval="5m"),
        "upgrade_test.yml": unit_test_file(upgrade_tests(config),
                                      evaluation_interval="5m"),
        "recording_test.yml": unit_test_file(recording_tests(config)),
    }
