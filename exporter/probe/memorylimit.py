"""The memory limit of one probe's process tree, and how to tell that it was hit.

Without a limit, a workload that allocates without end takes the host's memory before the
probe's timeout ends it. With ``probe.memory_limit`` the kernel stops it at the limit:

- **cgroup v2**: ``memory.max`` of the probe's own cgroup (``exporter.probe.containment``), where
  the memory controller is enabled for it; ``memory.oom.group`` makes the kernel kill the
  whole tree at once, and ``memory.events`` counts the kills;
- **cgroup v1**: a cgroup of the same name in the ``memory`` hierarchy, with
  ``memory.limit_in_bytes``; ``memory.oom_control`` counts the kills;
- otherwise **RLIMIT_AS** on the runner, inherited by every process it starts: a backstop,
  not the same limit. It bounds each process's address space, not the tree's sum; it is at
  least ``MIN_ADDRESS_SPACE_BYTES``, because interpreters reserve far more address space
  than they use (a free-threaded 3.13t build ~1.2 GiB, each thread's stack 8 MiB) and would
  not start under less; and an allocation over it fails with ``MemoryError`` instead of a
  kill (``exporter.probe.child`` reports that as ``memory`` too).

Either way the probe fails with the reason ``memory``; ``exporter.probe.child`` polls
``oom_kills()`` while it waits for the runner, so that happens within a second.
"""

from __future__ import annotations

import logging
import os
import resource
from pathlib import Path
from typing import Optional

from exporter.probe import containment
from exporter.probe.containment import CGROUP_PREFIX, Containment
from exporter.config.inputs import format_bytes
from exporter.logs import log_kv

log = logging.getLogger(__name__)

MIN_ADDRESS_SPACE_BYTES = 2 << 30  # RLIMIT_AS below this stops 3.13t starting (ImportError: failed to map segment)


class MemoryLimitHit(Exception):
    """The probe's processes reached their memory limit (the kernel killed one of them)."""


class MemoryLimit:
    """``limit_bytes`` for every process of one probe; ``kind`` says how it is enforced."""

    def __init__(self, limit_bytes: Optional[int], boundary: Containment) -> None:
        self.limit_bytes = limit_bytes
        self.kind = "none"
        self.cgroup: Optional[Path] = None  # a v1 memory cgroup of our own, removed by close()
        self._events: Optional[Path] = None  # where the kernel counts OOM kills
        if limit_bytes is None:
            return
        where = containment.layout().memory
        if where is not None and where.kind == "cgroup2":
            if boundary.kind == "cgroup2" and boundary.cgroup is not None and self._limit_v2(boundary.cgroup):
                self.kind = "cgroup2"
                return
            where = containment.Hierarchy(parent, "cgroup1") if (parent := containment.v1_directory("memory")) else None
        if where is not None:
            containment.remove_stale_cgroups(where.parent, "cgroup1")
            self._make_v1(where.parent / f"{CGROUP_PREFIX}{os.getpid()}-{boundary.token}")
            if self.cgroup is not None:
                boundary.include(self.cgroup)  # its members are the probe's too, wherever else they went

    def describe(self) -> str:
        """The limit as a message names it."""
        if self.limit_bytes is None:
            return "no memory limit"
        if self.kind == "rlimit":
            return (f"probe.memory_limit {format_bytes(self.limit_bytes)}, enforced as RLIMIT_AS "
                    f"{format_bytes(self.address_space())} per process (no cgroup could be written)")
        return f"probe.memory_limit {format_bytes(self.limit_bytes)}"

    def address_space(self) -> int:
        """RLIMIT_AS of each process where no cgroup can be written."""
        return max(self.limit_bytes or 0, MIN_ADDRESS_SPACE_BYTES)

    def adopt(self, pid: int) -> None:
        """Put the runner under the limit before it starts any work (its children follow)."""
        if self.limit_bytes is None or self.kind == "cgroup2":
            return
        if self.cgroup is not None:
            try:
                (self.cgroup / "cgroup.procs").write_text(str(pid))
                self.kind = "cgroup1"
                return
            except OSError as exc:
                log_kv(log, logging.DEBUG, "cannot move a probe process into its memory cgroup; limiting it with RLIMIT_AS",
                       pid=pid, cgroup=str(self.cgroup), error=str(exc))
                self.close()
        try:
            resource.prlimit(pid, resource.RLIMIT_AS, (self.address_space(), self.address_space()))
            self.kind = "rlimit"
        except (OSError, ValueError) as exc:
            log_kv(log, logging.WARNING, "cannot limit the memory of a probe process", pid=pid, error=str(exc))

    def oom_kills(self) -> int:
        """Processes of this probe the kernel killed at the limit so far."""
        if self._events is None:
            return 0
        try:
            lines = self._events.read_text().splitlines()
        except OSError:
            return 0
        for line in lines:
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.isascii() and value.isdigit():
                return int(value)
        return 0

    def check(self) -> None:
        """Raise MemoryLimitHit once the kernel has killed a process of the probe at the limit."""
        kills = self.oom_kills()
        if kills:
            raise MemoryLimitHit(f"the probe's processes reached {self.describe()}: the kernel killed "
                                 f"{kills} of them")

    def close(self) -> None:
        """Remove our v1 memory cgroup (the tree is dead by now: containment killed it)."""
        if self.cgroup is not None:
            containment.remove_cgroup(self.cgroup)
            self.cgroup = None
            self._events = None

    def _limit_v2(self, cgroup: Path) -> bool:
        if not (cgroup / "memory.max").exists():
            return False  # the parent does not delegate the memory controller
        try:
            (cgroup / "memory.max").write_text(str(self.limit_bytes))
        except OSError as exc:
            log_kv(log, logging.DEBUG, "cannot set memory.max", cgroup=str(cgroup), error=str(exc))
            return False
        for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
            try:
                (cgroup / name).write_text(value)
            except OSError:
                pass  # no swap controller, or an older kernel: the limit itself holds
        self._events = cgroup / "memory.events"
        return True

    def _make_v1(self, directory: Path) -> None:
        try:
            directory.mkdir()
        except OSError as exc:
            log_kv(log, logging.DEBUG, "cannot create a memory cgroup", parent=str(directory.parent), error=str(exc))
            return
        try:
            (directory / "memory.limit_in_bytes").write_text(str(self.limit_bytes))
        except OSError as exc:
            log_kv(log, logging.DEBUG, "cannot set memory.limit_in_bytes", cgroup=str(directory), error=str(exc))
            containment.remove_cgroup(directory)
            return
        try:  # memory and swap together, where swap is accounted: swapping is no way round the limit
            (directory / "memory.memsw.limit_in_bytes").write_text(str(self.limit_bytes))
        except OSError:
            pass
        self.cgroup, self._events = directory, directory / "memory.oom_control"
