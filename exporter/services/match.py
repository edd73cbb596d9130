"""Which group a process belongs to: process-exporter's matching, decided once per process.

The groups are tried in order and the first that matches wins; a process no group matches
follows its parent (children of a service count with it) unless it matches a group of its
own. The exporter and the probes it starts are never watched. A decision is kept for the
life of the process, ``(pid, start time)``, and taken again only when the process execs
(its ``comm`` changes), so reading ``cmdline``, ``exe`` and ``cgroup`` costs once per process.
Regexes see the command line's first ``procfs.MAX_CMDLINE_BYTES``: a pattern's cost grows with
the text it searches, and the command line is the process owner's to make as long as they like.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from exporter.host import cpus, procfs
from exporter.config.settings import MAX_SERVICE_GROUPS, TEMPLATE_FIELD, ServiceGroup
from exporter.host.procfs import ProcKey

_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.:+-]")
MAX_RENDERED_NAME = 64
SELF = "\0self"  # the decision for the exporter's own process tree: never watched


@dataclass(frozen=True)
class Facts:
    """What the matchers read of one process; ``None`` where it could not be read."""

    comm: str
    exe: Optional[str]
    cmdline: Optional[str]
    cgroup: Optional[str]


def systemd_unit(cgroup_path: str) -> str:
    """The innermost ``*.service`` (or ``.scope``) component of a cgroup path, or ``""``."""
    for part in reversed(cgroup_path.split("/")):
        if part.endswith((".service", ".scope")):
            return part
    return ""


def render_name(template: str, values: Mapping[str, str]) -> str:
    """The group name from its template; values become label-safe and short."""
    def field(match: re.Match[str]) -> str:
        return _LABEL_UNSAFE.sub("_", values.get(match.group(1)) or "")

    return TEMPLATE_FIELD.sub(field, template)[:MAX_RENDERED_NAME] or "_"


def match_group(group: ServiceGroup, facts: Facts) -> Optional[str]:
    """The rendered group name when every criterion of ``group`` holds, else None."""
    values = {"comm": facts.comm}
    if group.comm and facts.comm not in group.comm:
        return None
    if group.exe:
        if facts.exe is None:
            return None
        exe = facts.exe.removesuffix(" (deleted)")
        if exe not in group.exe and os.path.basename(exe) not in group.exe:
            return None
    if facts.exe:
        values["exe_base"] = os.path.basename(facts.exe.removesuffix(" (deleted)"))
    for pattern in group.cmdline:
        found = pattern.search(facts.cmdline) if facts.cmdline is not None else None
        if found is None:
            return None
        values.update({k: v for k, v in found.groupdict().items() if v is not None})
    path = cpus.cgroup_path(facts.cgroup) if facts.cgroup else ""
    values["unit"] = systemd_unit(path)
    if group.cgroup is not None:
        found = group.cgroup.search(path) if facts.cgroup is not None else None
        if found is None:
            return None
        values.update({k: v for k, v in found.groupdict().items() if v is not None})
    if group.systemd_unit is not None and values["unit"] != group.systemd_unit:
        return None
    return render_name(group.name, values)


class Matcher:
    """Decides and remembers each live process's group."""

    def __init__(self, groups: tuple[ServiceGroup, ...], own_pid: Optional[int] = None,
                 proc: str = procfs.PROC) -> None:
        self.groups = groups
        self.proc = proc
        self.own_pid = os.getpid() if own_pid is None else own_pid
        self.needs_exe = any(g.exe or "{exe_base}" in g.name for g in groups)
        self.needs_cmdline = any(g.cmdline for g in groups)
        self.needs_cgroup = True  # the {unit} placeholder and cgroup/systemd_unit matchers
        self._decisions: dict[ProcKey, tuple[str, Optional[str]]] = {}  # key -> (comm, group)
        self.names: set[str] = set()  # rendered group names seen, bounded by MAX_SERVICE_GROUPS

    def decide(self, stats: Mapping[int, procfs.Stat], count: Callable[[str], None],
               deadline: procfs.Deadline = procfs.UNBOUNDED, complete: bool = True) -> dict[ProcKey, str]:
        """The group of every process in this scan that belongs to one.

        Parents are decided before their children (by start time), so a child finds its
        parent's decision. ``count(reason)`` is told of every process that could not be read.
        Past the deadline, new processes wait for the next scan (their children, younger,
        too). ``complete``: ``stats`` holds every process, so decisions of the others can go.
        """
        decided: dict[ProcKey, str] = {}
        live: set[ProcKey] = set()
        for pid, stat in sorted(stats.items(), key=lambda item: (item[1].start_ticks, item[0])):
            key = (pid, stat.start_ticks)
            live.add(key)
            known = self._decisions.get(key)
            if known is None or known[0] != stat.comm:  # new, or it exec'd another program
                if deadline.passed():
                    continue
                known = (stat.comm, self._decide_one(pid, stat, stats, count))
                self._decisions[key] = known
            if known[1] is not None and known[1] != SELF:
                decided[key] = known[1]
        if complete:
            for gone in self._decisions.keys() - live:
                del self._decisions[gone]
        self.names = {group for _, group in self._decisions.values() if group and group != SELF}
        return decided

    def _decide_one(self, pid: int, stat: procfs.Stat, stats: Mapping[int, procfs.Stat],
                    count: Callable[[str], None]) -> Optional[str]:
        if pid == self.own_pid:
            return SELF
        parent = stats.get(stat.ppid)
        parent_decision = self._decisions.get((stat.ppid, parent.start_ticks)) if parent is not None else None
        inherited = parent_decision[1] if parent_decision is not None else None
        if inherited == SELF:
            return SELF
        if stat.ppid == 2 or pid == 2:
            return None  # kernel threads
        facts = self._facts(pid, stat, count)
        if facts is not None:
            for group in self.groups:
                name = match_group(group, facts)
                if name is not None:
                    return self._admit(name, count)
        return inherited

    def _admit(self, name: str, count: Callable[[str], None]) -> Optional[str]:
        """Keep the number of group names bounded whatever the templates render."""
        if name not in self.names and len(self.names) >= MAX_SERVICE_GROUPS:
            count("too_many_groups")
            return None
        self.names.add(name)
        return name

    def _facts(self, pid: int, stat: procfs.Stat, count: Callable[[str], None]) -> Optional[Facts]:
        exe = cmdline = cgroup = None
        try:
            if self.needs_cmdline:
                cmdline = procfs.cmdline(pid, self.proc)
            if self.needs_cgroup:
                cgroup = procfs.cgroup(pid, self.proc)
            if self.needs_exe:
                try:
                    exe = procfs.exe(pid, self.proc)
                except PermissionError:
                    count("permission")  # another user's process: exe matchers cannot see it
        except PermissionError:
            count("permission")
        except procfs.Refused:
            count("refused")
        except procfs.Vanished:
            count("vanished")
            return None
        return Facts(stat.comm, exe, cmdline, cgroup)
