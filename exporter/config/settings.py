"""The exporter's configuration as validated, frozen dataclasses, with their defaults.

Built in one place (exporter/config/loader.py reads a file; the ``probe`` command's flags
come from the same field table, exporter/config/fields.py). A setting a probe's
``ProbeSpec`` has takes the spec's default, and the services' thresholds are the probes'
own (exporter/model/verdicts.py), so each default is written once.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Optional, Union

from exporter.config.validators import MAX_LIST_ITEMS, USABLE
from exporter.host import cpus
from exporter.model.results import Interpreter, Nice, ProbeSpec
from exporter.model.verdicts import FREE_CORES, NOT_PARALLEL
from exporter.runner.modes import PROCESSES, SEQUENTIAL, THREADS

PER_CORE_SERIES_MAX_CPUS = 64  # above this, per-CPU series would dominate a scrape
DEFAULT_MEMORY_LIMIT_SHARE = 0.5  # of the host's memory (or the exporter's own memory limit)
MIN_DEFAULT_MEMORY_LIMIT_BYTES = 256 << 20
# serve's wait for free cores before each parallel step, within its interval: a busy moment
# often passes in seconds, and the round is placed in the quieter one rather than measured in
# it. At most a tenth of the interval, so the steps of a round still fit in it.
SERVE_WAIT_QUIET_SECONDS = 30.0
SERVE_WAIT_QUIET_SHARE = 0.1


def serve_wait_quiet(interval_seconds: float) -> float:
    """How long ``serve`` waits for free cores before a step, where the config sets no wait."""
    return min(SERVE_WAIT_QUIET_SECONDS, SERVE_WAIT_QUIET_SHARE * interval_seconds)
MAX_SERVICE_GROUPS = MAX_LIST_ITEMS  # group names, rendered from the templates, at run time too
TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")  # a placeholder in a group's name template


def default_memory_limit() -> int:
    """``probe.memory_limit`` when none is configured: half of what this host (or the
    exporter's own cgroup) can give, so a runaway workload fails before the host does."""
    memory = cpus.memory_bytes()
    share = int(memory * DEFAULT_MEMORY_LIMIT_SHARE) >> 20 << 20  # whole MiB, as messages show it
    return min(memory, max(MIN_DEFAULT_MEMORY_LIMIT_BYTES, share))


def default_interpreter_name() -> str:
    """The label of the running Python when none is configured: a stable role name.

    It carries no version, so an upgrade (3.13 -> 3.14) keeps the same series and its
    history; the version is in ``pyparallel_python_info``.
    """
    return "default"


@dataclass(frozen=True)
class ProbeConfig:
    """The ``probe`` section: what every probe measures. A setting a probe's ``ProbeSpec`` has
    takes the spec's default, so the two cannot disagree."""

    workloads: tuple[str, ...] = ("pure_python", "sha256")
    modes: tuple[str, ...] = (SEQUENTIAL, THREADS, PROCESSES)
    # Two workers need two free cores: they answer on a busy or a large host alike (a step
    # needs as many free cores as workers for its wall-clock figure). "usable": the usable
    # core count, found at run time (every core of the host or the container's quota).
    workers: tuple[Union[int, str], ...] = (2,)
    unit_seconds: float = ProbeSpec.unit_seconds
    repeats: int = ProbeSpec.repeats
    timeout_seconds: float = ProbeSpec.timeout_seconds
    # The whole probe's wall-clock limit; None: timeout x (steps + 1) (ProbeSpec.deadline_seconds).
    deadline_seconds: Optional[float] = None
    # Directories (absolute) where package.module:function workloads are imported from.
    workload_path: tuple[str, ...] = ()
    start_method: str = "forkserver"  # CPython 3.14's default on Linux; fork is unsafe with threads
    per_core_series: Optional[bool] = None  # None: on up to PER_CORE_SERIES_MAX_CPUS CPUs
    # Precision: ``repeats`` is the fewest pairs; a step runs more until its speedup's 95 %
    # interval is within ``precision`` (relative half-width), ``max_repeats`` clean pairs or
    # its ``step_budget`` (pairs spoiled by other load are replaced within the budget). On an
    # idle 2-core host three 0.3 s pairs reach ±5 % and the default round (2 workloads, 3
    # modes) takes about 15 s, 5 % of the 5-minute interval; the daemon stretches the
    # interval when a round takes longer, so the duty cycle holds (docs/measurement.md).
    precision: float = ProbeSpec.precision
    max_repeats: int = ProbeSpec.max_repeats
    step_budget_seconds: float = ProbeSpec.step_budget_seconds
    nice: Nice = ProbeSpec.nice  # 0..19, or "idle" (SCHED_IDLE): run the probe's process tree niced
    # Before each parallel step, wait up to this long for enough free cores (0: do not wait).
    # None: serve waits up to SERVE_WAIT_QUIET_SECONDS (the wait is not probe time: the duty
    # cycle does not count it), the one-shot probe not at all.
    wait_quiet_seconds: Optional[float] = None
    # The whole probe tree's memory; None: default_memory_limit(), found at run time.
    memory_limit_bytes: Optional[int] = None

    def memory_limit(self) -> int:
        """The configured memory limit, or the host's default."""
        return self.memory_limit_bytes or default_memory_limit()


@dataclass(frozen=True)
class ServiceGroup:
    """One matcher of ``services.groups`` (process-exporter's ``process_names`` entry).

    Every criterion given must hold: comm one of ``comm``, the executable (full path or base
    name) one of ``exe``, every ``cmdline`` regex found in the command line, the cgroup path
    matching ``cgroup``, the systemd unit equal to ``systemd_unit``.
    """

    name: str  # a template: {comm}, {exe_base}, {unit} and the regexes' named groups
    comm: tuple[str, ...] = ()
    exe: tuple[str, ...] = ()
    cmdline: tuple[re.Pattern[str], ...] = ()
    cgroup: Optional[re.Pattern[str]] = None
    systemd_unit: Optional[str] = None

    @staticmethod
    def placeholders(template: str) -> list[str]:
        """The ``{name}`` placeholders of a name template."""
        return TEMPLATE_FIELD.findall(template)


@dataclass(frozen=True)
class ServicesConfig:
    """The passive collector of running Python services; no groups: off (the default)."""

    groups: tuple[ServiceGroup, ...] = ()
    interval_seconds: float = 5.0  # one window: the sampler reads /proc this often
    # A thread is busy above this share of a core in a window. N threads behind one GIL get
    # 1/N of a core each, so up to 1/share of them are seen busy while serialised.
    busy_thread_share: float = 0.1
    # Serialised: at least two busy threads, two usable cores and min_free_cores idle on the
    # host, yet the process used at most serial_cores cores (a GIL keeps it at ~1.0): the
    # probes' own thresholds, so a service and a probe are judged alike.
    serial_cores: float = NOT_PARALLEL
    min_free_cores: float = FREE_CORES

    @property
    def enabled(self) -> bool:
        return bool(self.groups)


@dataclass(frozen=True)
class Config:
    interval_seconds: float = 300.0
    jitter_seconds: float = 15.0
    duty_cycle: float = 0.05  # probe work may take at most this share of wall time
    interpreters: tuple[Interpreter, ...] = ()  # empty: the running Python only
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    import_check_modules: tuple[str, ...] = ()
    services: ServicesConfig = field(default_factory=ServicesConfig)

    def configures(self, interpreter: str, workload: str) -> bool:
        """Whether this config still probes ``workload`` on ``interpreter`` (a reload may drop it)."""
        return interpreter in {i.name for i in self.interpreter_list()} and workload in self.probe.workloads

    def per_core_series_for(self, logical_cpus: int) -> bool:
        """Per-CPU series: as configured, else only on hosts of up to PER_CORE_SERIES_MAX_CPUS."""
        configured = self.probe.per_core_series
        return logical_cpus <= PER_CORE_SERIES_MAX_CPUS if configured is None else configured

    def interpreter_list(self) -> tuple[Interpreter, ...]:
        """The configured interpreters, or the running Python."""
        return self.interpreters or (Interpreter(default_interpreter_name(), sys.executable),)

    def probe_specs(self, default_workers: int, wait_quiet: float = ProbeSpec.wait_quiet_seconds) -> list[ProbeSpec]:
        """One probe per workload; ``usable`` workers are ``default_workers``, the usable cores;
        ``wait_quiet`` is the wait for free cores where the config sets none."""
        p = self.probe
        workers = tuple(dict.fromkeys(default_workers if n == USABLE else int(n) for n in p.workers))
        return [ProbeSpec(w, p.modes, workers, p.unit_seconds, p.repeats, p.timeout_seconds,
                          p.start_method, precision=p.precision, max_repeats=p.max_repeats,
                          step_budget_seconds=p.step_budget_seconds, nice=p.nice,
                          workload_path=p.workload_path, deadline=p.deadline_seconds,
                          wait_quiet_seconds=wait_quiet if p.wait_quiet_seconds is None else p.wait_quiet_seconds,
                          memory_limit_bytes=p.memory_limit())
                for w in p.workloads]
