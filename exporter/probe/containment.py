"""A boundary around every process one probe starts, so all of them can be killed at once.

A workload may fork, double-fork, call ``setsid`` and close its stdio: such descendants
leave the runner's session and process group and are re-parented to init, so neither
``killpg`` nor a walk of the runner's children finds them. What they cannot leave:

- **cgroups**, one per probe in every writable hierarchy that serves it (``Layout``): the v2
  hierarchy, whose ``cgroup.kill`` takes the whole tree at once; the v1 ``pids`` hierarchy,
  as the boundary where v2 cannot kill and for its ``pids.max`` where v2 has no pids
  controller; and the cgroup of the probe's memory limit (``exporter.probe.memorylimit``).
  On a hybrid host (v2 mounted with only some controllers, v1 controllers writable beside
  it) a probe gets one of each, and the exporter logs which it uses when it first probes;
- an **environment token**: every process of the probe inherits ``PYPARALLEL_PROBE_TOKEN``.
  Where no cgroup can be made it is the only boundary, and the last kill of a probe sweeps
  ``/proc`` for it anyway: a root workload can move itself out of a cgroup, not out of all
  of them and its environment at once (a process that also execs with a cleared
  environment and leaves every cgroup escapes; only root can).

``kill()`` takes the union of them. Cgroups are named ``pyparallel-<owner pid>-<token>``. A
probe is registered with a sentinel process (``exporter.probe.sentinel``) that kills it if the
exporter dies first, SIGKILL included; one left anyway is emptied and removed the next time a
probe starts.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from exporter.host import procfs
from exporter.logs import log_kv
from exporter.probe import sentinel

log = logging.getLogger(__name__)

TOKEN_VARIABLE = "PYPARALLEL_PROBE_TOKEN"
CGROUP_PREFIX = "pyparallel-"
KILL_WAIT_SECONDS = 5.0
# pids.max of a probe's cgroup where the pids controller is there (a cgroup v1 pids hierarchy,
# or v2 with pids enabled): room for 256 workers and their helpers, not for a fork bomb.
MAX_PROBE_PROCESSES = 4096
_POLL_SECONDS = 0.02


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, file system type, super options) of every mount, from mountinfo."""
    mounts = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) >= 5 and len(tail) >= 3:
            mounts.append((fields[4].replace("\\040", " "), tail[0], set(tail[2].split(","))))
    return mounts


def _own_cgroup(controller: str) -> Optional[str]:
    """Our path in one hierarchy: ``""`` is the v2 hierarchy, else a v1 controller name."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if (controller == "" and controllers == "") or controller in controllers.split(","):
            return path
    return None


def _writable(directory: Path) -> bool:
    return directory.is_dir() and os.access(directory, os.W_OK)


def _kernel_has_cgroup_kill() -> bool:
    """``cgroup.kill`` arrived in Linux 5.14 (the root cgroup has none to look at)."""
    match = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return match is not None and (int(match.group(1)), int(match.group(2))) >= (5, 14)


@dataclass(frozen=True)
class Hierarchy:
    """Where one kind of probe cgroup is made: our own cgroup in a writable hierarchy."""

    parent: Path
    kind: str  # "cgroup2" or "cgroup1"

    def __str__(self) -> str:
        return f"{self.kind}:{self.parent}"


@dataclass(frozen=True)
class Layout:
    """Which writable cgroups the probes use on this host; None: that one is not available."""

    boundary: Optional[Hierarchy]  # kills the tree: v2 with cgroup.kill, else the v1 pids hierarchy
    pids: Optional[Hierarchy]  # where pids.max holds: v2 if it delegates pids, else v1 pids
    memory: Optional[Hierarchy]  # where the memory limit holds: v2 if it delegates memory, else v1 memory

    def describe(self) -> dict[str, str]:
        """The log line's fields: each part, and where."""
        return {"boundary": str(self.boundary or "environment token"), "pids_limit": str(self.pids or "none"),
                "memory_limit": str(self.memory or "RLIMIT_AS")}


def find_layout() -> Layout:
    """The cgroups a probe can use here, in our own cgroup of each hierarchy (so a service
    manager that delegates a subtree, systemd ``Delegate=yes``, keeps the probes inside the
    service's accounting)."""
    mounts = _mounts()
    v2 = _v2_directory(mounts)
    v1_pids, v1_memory = v1_directory("pids", mounts), v1_directory("memory", mounts)
    delegated = _delegated_controllers(v2) if v2 is not None else set()

    def pick(controller: str, v1: Optional[Path]) -> Optional[Hierarchy]:
        if v2 is not None and controller in delegated:
            return Hierarchy(v2, "cgroup2")
        return Hierarchy(v1, "cgroup1") if v1 is not None else None

    if v2 is not None and _kernel_has_cgroup_kill():
        boundary: Optional[Hierarchy] = Hierarchy(v2, "cgroup2")
    else:
        boundary = Hierarchy(v1_pids, "cgroup1") if v1_pids is not None else None
    return Layout(boundary, pick("pids", v1_pids), pick("memory", v1_memory))


def cgroup_parent() -> tuple[Optional[Path], str]:
    """Where probe boundaries are made, and their kind (``cgroup2``, ``cgroup1`` or ``none``)."""
    boundary = find_layout().boundary
    return (boundary.parent, boundary.kind) if boundary is not None else (None, "none")


def _v2_directory(mounts: list[tuple[str, str, set[str]]]) -> Optional[Path]:
    """Our own cgroup in a writable cgroup v2 hierarchy, if there is one."""
    v2_path = _own_cgroup("")
    if v2_path is None:
        return None
    for point, fstype, _ in mounts:
        directory = Path(point + v2_path.rstrip("/"))
        if fstype == "cgroup2" and _writable(directory) and (directory / "cgroup.procs").exists():
            return directory
    return None


def _delegated_controllers(directory: Path) -> set[str]:
    """The v2 controllers a child of ``directory`` gets (its ``cgroup.subtree_control``)."""
    try:
        return set((directory / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()


def v1_directory(controller: str, mounts: Optional[list[tuple[str, str, set[str]]]] = None) -> Optional[Path]:
    """Our own cgroup in the writable cgroup v1 hierarchy of ``controller``, if there is one."""
    own_path = _own_cgroup(controller)
    if own_path is None:
        return None
    for point, fstype, options in _mounts() if mounts is None else mounts:
        directory = Path(point + own_path.rstrip("/"))
        if fstype == "cgroup" and controller in options and _writable(directory):
            return directory
    return None


_LAYOUT: Optional[Layout] = None


def layout() -> Layout:
    """The layout, found and logged once per process."""
    global _LAYOUT
    if _LAYOUT is None:
        _LAYOUT = find_layout()
        parts = _LAYOUT.describe()
        log_kv(log, logging.INFO, "probe containment", boundary=parts["boundary"], pids_limit=parts["pids_limit"],
               memory_limit=parts["memory_limit"])
    return _LAYOUT


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Containment:
    """One probe's boundary: adopt the runner, then ``kill()`` takes every descendant."""

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self.closed = False
        self.kind = "none"  # of the boundary: "cgroup2" (cgroup.kill), "cgroup1" or "none" (the token)
        self.cgroup: Optional[Path] = None  # the boundary's cgroup
        self.cgroups: list[Path] = []  # every cgroup of the probe: the boundary's first
        found = layout()
        if found.boundary is not None:
            self.cgroup = self._make(found.boundary)
            self.kind = found.boundary.kind if self.cgroup is not None else "none"
        limit = self._make(found.pids) if found.pids is not None and found.pids != found.boundary else self.cgroup
        if limit is not None:
            _limit_processes(limit)
        sentinel.watch(self.token, self.cgroups)

    def _make(self, hierarchy: Hierarchy) -> Optional[Path]:
        remove_stale_cgroups(hierarchy.parent, hierarchy.kind)
        directory = hierarchy.parent / f"{CGROUP_PREFIX}{os.getpid()}-{self.token}"
        try:
            directory.mkdir()
        except OSError as exc:
            log_kv(log, logging.DEBUG, "cannot create a probe cgroup", parent=str(hierarchy.parent), error=str(exc))
            return None
        self.cgroups.append(directory)
        return directory

    def include(self, cgroup: Path) -> None:
        """Count one more cgroup of the probe's in its boundary (the memory limit's)."""
        self.cgroups.append(cgroup)
        sentinel.watch(self.token, self.cgroups)

    def environment(self) -> dict[str, str]:
        """Variables every process of the probe inherits (the sweep's mark)."""
        return {TOKEN_VARIABLE: self.token}

    def adopt(self, pid: int) -> None:
        """Move the runner into the probe's cgroups before it starts any work (its children follow)."""
        for cgroup in list(self.cgroups):
            try:
                (cgroup / "cgroup.procs").write_text(str(pid))
            except OSError as exc:
                log_kv(log, logging.DEBUG, "cannot move a probe process into its cgroup", pid=pid, cgroup=str(cgroup),
                       error=str(exc))
                self.cgroups.remove(cgroup)
                remove_cgroup(cgroup)
                if cgroup == self.cgroup:  # the token sweep is the boundary now
                    self.cgroup, self.kind = None, "none"

    def members(self) -> list[int]:
        """Pids of the probe's live processes (zombies are not members)."""
        if self.closed:
            return []
        if not self.cgroups:
            return _pids_with_token(self.token)
        return sorted({pid for cgroup in self.cgroups for pid in _read_pids(cgroup)})

    def kill(self, wait: float = KILL_WAIT_SECONDS, sweep: bool = False) -> int:
        """SIGKILL every member and wait until none is left; returns how many were seen.
        ``sweep``: also every process carrying the token, wherever it moved itself."""
        return kill_probe(self.token, self.cgroups if not self.closed else [], self.kind, wait, sweep)

    def close(self) -> None:
        """Kill what is left (the token swept too) and remove the cgroups; the boundary is
        empty from then on."""
        if not self.closed:
            self.kill(sweep=True)
            for cgroup in self.cgroups:
                remove_cgroup(cgroup)
            self.closed = True
            sentinel.forget(self.token)


def kill_probe(token: str, cgroups: list[Path], kind: str, wait: float = KILL_WAIT_SECONDS,
               sweep: bool = False) -> int:
    """SIGKILL every process in ``cgroups`` (the first of kind ``kind``) and, with ``sweep``
    or without a cgroup, every process carrying ``token``, until none is left; returns how
    many were seen."""
    seen: set[int] = set()

    def members() -> set[int]:
        found = {pid for cgroup in cgroups for pid in _read_pids(cgroup)}
        if found or (cgroups and not sweep) or not token:
            return found
        return set(_pids_with_token(token))

    if kind == "cgroup2" and cgroups and _read_pids(cgroups[0]):
        try:
            (cgroups[0] / "cgroup.kill").write_text("1")
        except OSError as exc:
            log_kv(log, logging.WARNING, "cgroup.kill failed", cgroup=str(cgroups[0]), error=str(exc))
    deadline = time.monotonic() + wait
    while True:
        # A fork storm races a member-by-member kill; new members keep appearing until every
        # parent is dead, so loop until the boundary is empty.
        current = members() - {os.getpid()}
        if not current:
            return len(seen)
        seen |= current
        for pid in current:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if time.monotonic() > deadline:
            log_kv(log, logging.WARNING, "probe processes still alive", after_seconds=round(wait),
                   pids=",".join(map(str, sorted(current)[:20])))
            return len(seen)
        time.sleep(_POLL_SECONDS)


def remove_cgroup(directory: Path) -> None:
    """Remove an emptied cgroup, waiting briefly for the kernel to finish with its last member."""
    for _ in range(50):
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(_POLL_SECONDS)


def _limit_processes(cgroup: Path) -> None:
    limit = cgroup / "pids.max"
    if limit.exists():
        try:
            limit.write_text(str(MAX_PROBE_PROCESSES))
        except OSError as exc:
            log_kv(log, logging.DEBUG, "cannot limit the processes of a cgroup", cgroup=str(cgroup), error=str(exc))


def _read_pids(cgroup: Path) -> list[int]:
    try:
        text = (cgroup / "cgroup.procs").read_text()
    except OSError:
        return []
    return [int(line) for line in text.split() if line.isdigit()]


def _pids_with_token(token: str) -> list[int]:
    found = []
    me = os.getpid()
    for pid in procfs.pids():
        if pid == me:
            continue
        try:
            if procfs.environ(pid).get(TOKEN_VARIABLE) == token:
                found.append(pid)
        except (procfs.Vanished, OSError):
            continue
    return found


def remove_stale_cgroups(parent: Path, kind: str) -> None:
    """Empty and remove probe cgroups whose exporter died without cleaning up."""
    try:
        children = [c for c in parent.iterdir() if c.name.startswith(CGROUP_PREFIX) and c.is_dir()]
    except OSError:
        return
    for child in children:
        owner = child.name[len(CGROUP_PREFIX):].split("-", 1)[0]
        if not owner.isdigit() or _pid_alive(int(owner)):
            continue
        killed = kill_probe("", [child], kind, wait=1.0)
        remove_cgroup(child)
        log_kv(log, logging.WARNING, "removed a probe cgroup left by a dead exporter", cgroup=child.name,
               exporter_pid=owner, processes_killed=killed)
