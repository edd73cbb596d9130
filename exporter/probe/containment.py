"""A boundary around every process one probe starts, so all of them can be killed at once.

A workload may fork, double-fork, call ``setsid`` and close its stdio: such descendants
leave the runner's session and process group and are re-parented to init, so neither
``killpg`` nor a walk of the runner's children finds them. Two boundaries they cannot leave:

- a **cgroup** per probe (cgroup v2 ``cgroup.kill`` where a writable v2 hierarchy is
  mounted, else a cgroup v1 ``pids`` hierarchy, killed member by member until empty);
- otherwise an **environment token**: every process of the probe inherits
  ``PYPARALLEL_PROBE_TOKEN`` and a sweep of ``/proc`` kills every process carrying it (a
  process that execs with a cleared environment escapes this fallback; the cgroup does not).

Cgroups are named ``pyparallel-<owner pid>-<token>``; one whose owner died (an exporter
killed with SIGKILL) is emptied and removed the next time a probe starts.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
import uuid
from pathlib import Path
from typing import Optional

from exporter.host import procfs
from exporter.logs import log_kv

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


def cgroup_parent() -> tuple[Optional[Path], str]:
    """Where probe cgroups can be made, and their kind (``cgroup2``, ``cgroup1`` or ``none``).

    The parent is the exporter's own cgroup, so a service manager that delegates a
    subtree (systemd ``Delegate=yes``) keeps the probes inside the service's accounting.
    """
    mounts = _mounts()
    v2_path = _own_cgroup("")
    if v2_path is not None and _kernel_has_cgroup_kill():
        for point, fstype, _ in mounts:
            directory = Path(point + v2_path.rstrip("/"))
            if fstype == "cgroup2" and _writable(directory) and (directory / "cgroup.procs").exists():
                return directory, "cgroup2"
    pids = v1_directory("pids", mounts)
    if pids is not None:
        return pids, "cgroup1"
    return None, "none"


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


_PARENT: Optional[tuple[Optional[Path], str]] = None


def _cached_parent() -> tuple[Optional[Path], str]:
    global _PARENT
    if _PARENT is None:
        _PARENT = cgroup_parent()
        log_kv(log, logging.INFO, "probe containment", boundary=_PARENT[1] if _PARENT[0] else "environment token",
               cgroup_parent=str(_PARENT[0] or ""))
    return _PARENT


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
        parent, kind = _cached_parent()
        self.kind = kind
        self.cgroup: Optional[Path] = None
        if parent is not None:
            remove_stale_cgroups(parent, kind)
            directory = parent / f"{CGROUP_PREFIX}{os.getpid()}-{self.token}"
            try:
                directory.mkdir()
                self.cgroup = directory
            except OSError as exc:
                log_kv(log, logging.DEBUG, "cannot create a probe cgroup", parent=str(parent), error=str(exc))
            else:
                _limit_processes(directory)
        if self.cgroup is None:
            self.kind = "none"

    def environment(self) -> dict[str, str]:
        """Variables every process of the probe inherits (the sweep's mark)."""
        return {TOKEN_VARIABLE: self.token}

    def adopt(self, pid: int) -> None:
        """Move the runner into the cgroup before it starts any work (its children follow)."""
        if self.cgroup is None:
            return
        try:
            (self.cgroup / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            log_kv(log, logging.DEBUG, "cannot move a probe process into its cgroup; falling back to the token sweep",
                   pid=pid, cgroup=str(self.cgroup), error=str(exc))
            self._remove()
            self.kind = "none"

    def members(self) -> list[int]:
        """Pids of the probe's live processes (zombies are not members)."""
        if self.closed:
            return []
        cgroup = self.cgroup
        if cgroup is not None:
            return _read_pids(cgroup)
        return _pids_with_token(self.token)

    def kill(self, wait: float = KILL_WAIT_SECONDS) -> int:
        """SIGKILL every member and wait until none is left; returns how many were seen."""
        seen: set[int] = set()
        if self.kind == "cgroup2" and self.cgroup is not None:
            seen.update(self.members())
            if seen:
                try:
                    (self.cgroup / "cgroup.kill").write_text("1")
                except OSError as exc:
                    log_kv(log, logging.WARNING, "cgroup.kill failed", cgroup=str(self.cgroup), error=str(exc))
        deadline = time.monotonic() + wait
        while True:
            # A fork storm races a member-by-member kill; new members keep appearing until
            # every parent is dead, so loop until the boundary is empty.
            members = self.members()
            if not members:
                return len(seen)
            seen.update(members)
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if time.monotonic() > deadline:
                log_kv(log, logging.WARNING, "probe processes still alive", after_seconds=round(wait),
                       pids=",".join(map(str, sorted(members)[:20])))
                return len(seen)
            time.sleep(_POLL_SECONDS)

    def close(self) -> None:
        """Kill what is left and remove the cgroup; the boundary is empty from then on."""
        if not self.closed:
            self.kill()
            self._remove()
            self.closed = True

    def _remove(self) -> None:
        if self.cgroup is None:
            return
        remove_cgroup(self.cgroup)
        self.cgroup = None


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
        stale = Containment.__new__(Containment)
        stale.token, stale.kind, stale.cgroup, stale.closed = "", kind, child, False
        killed = stale.kill(wait=1.0)
        stale._remove()
        log_kv(log, logging.WARNING, "removed a probe cgroup left by a dead exporter", cgroup=child.name,
               exporter_pid=owner, processes_killed=killed)
