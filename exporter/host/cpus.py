"""How many CPUs this host offers the probes: logical, physical and actually usable.

"Usable" takes the CPU affinity mask and a cgroup CPU quota into account, because a
container limit is a common reason processes stop scaling.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from exporter.host import procfs

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_TOPOLOGY = Path("/sys/devices/system/cpu")


@dataclass(frozen=True)
class HostCpus:
    logical: int
    physical: Optional[int]
    affinity: int
    quota: Optional[float]  # CPUs allowed by a cgroup quota, None when unlimited

    @property
    def usable(self) -> float:
        return min(float(self.affinity), self.quota) if self.quota else float(self.affinity)

    @property
    def default_workers(self) -> int:
        """Usable cores rounded up: a fractional quota then shows as lost speedup."""
        return max(1, math.ceil(self.usable - 1e-9))


def _cgroup_paths(proc_cgroup: str) -> dict[str, str]:
    """Map of controller ("" for cgroup v2) to this process's cgroup path."""
    paths = {}
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def cgroup_path(proc_cgroup: str) -> str:
    """The cgroup v2 path in a ``/proc/<pid>/cgroup`` text, else the v1 cpu controller's."""
    paths = _cgroup_paths(proc_cgroup)
    return paths.get("", paths.get("cpu", ""))


def _tightest_v2(directory: Path, read: Callable[[Path], Optional[float]]) -> Optional[float]:
    """The smallest limit ``read`` finds from this cgroup up to the root (None: none set)."""
    limits = []
    for level in [directory, *directory.parents]:
        if not str(level).startswith(str(CGROUP_ROOT)):
            break
        try:
            limit = read(level)
        except (OSError, ValueError):
            continue
        if limit is not None:
            limits.append(limit)
    return min(limits, default=None)


def _cpu_max(level: Path) -> Optional[float]:
    quota, period = (level / "cpu.max").read_text().split()
    return None if quota == "max" else int(quota) / int(period)


def _memory_max(level: Path) -> Optional[float]:
    text = (level / "memory.max").read_text().strip()
    return int(text) if text.isascii() and text.isdigit() else None  # "max": unlimited


def _quota_v1(directory: Path) -> Optional[float]:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def _memory_limit_v1(directory: Path) -> Optional[float]:
    try:
        limit = int((directory / "memory.limit_in_bytes").read_text())
    except (OSError, ValueError):
        return None
    return limit if limit < (1 << 62) else None  # "unlimited" reads as a page-rounded 2**63 - 1


def _own_limit(proc_cgroup: Optional[str], controller: str, v1: Callable[[Path], Optional[float]],
               v2: Callable[[Path], Optional[float]]) -> Optional[float]:
    """This process's cgroup limit: ``v1`` in the controller's v1 hierarchy, else ``v2``'s
    tightest value up the v2 hierarchy; None if unlimited or unknown."""
    try:
        text = proc_cgroup if proc_cgroup is not None else Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    paths = _cgroup_paths(text)
    if controller in paths:
        return v1(CGROUP_ROOT / controller / paths[controller].lstrip("/"))
    if "" in paths:
        return _tightest_v2(CGROUP_ROOT / paths[""].lstrip("/"), v2)
    return None


def cgroup_cpu_quota(proc_cgroup: Optional[str] = None) -> Optional[float]:
    """The CPU quota of this process's cgroup (v2 ``cpu.max`` or v1 CFS), None if unlimited."""
    return _own_limit(proc_cgroup, "cpu", _quota_v1, _cpu_max)


def cgroup_memory_limit(proc_cgroup: Optional[str] = None) -> Optional[int]:
    """The memory limit of this process's cgroup (v1 ``memory.limit_in_bytes`` or v2
    ``memory.max``), None if unlimited or unknown."""
    limit = _own_limit(proc_cgroup, "memory", _memory_limit_v1, _memory_max)
    return None if limit is None else int(limit)


def memory_bytes() -> int:
    """The memory this host gives us: physical memory, or our cgroup's limit when lower."""
    total = procfs.memory_total_bytes()
    limit = cgroup_memory_limit()
    return min(total, limit) if limit else total


def physical_cores(topology: Path = CPU_TOPOLOGY) -> Optional[int]:
    """Distinct (package, core) pairs of the online CPUs' topology; None where the kernel
    does not say (some VMs and containers hide /sys)."""
    cores = set()
    for cpu in topology.glob("cpu[0-9]*/topology"):
        try:
            cores.add(((cpu / "physical_package_id").read_text().strip(), (cpu / "core_id").read_text().strip()))
        except OSError:
            continue
    return len(cores) or None


def host_cpus() -> HostCpus:
    logical = os.cpu_count() or 1
    return HostCpus(logical=logical, physical=physical_cores(),
                    affinity=len(os.sched_getaffinity(0)), quota=cgroup_cpu_quota())
