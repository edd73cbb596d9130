"""The services collector without processes: identity from names and binaries, matching on a
/proc-shaped directory, one window's arithmetic, the families and the status document."""

from __future__ import annotations

import html
import os
import stat
import sys
import sysconfig
import threading
import time
from pathlib import Path
from typing import Sequence

import pytest
from prometheus_client import CollectorRegistry

import fake_elf
import support
from conftest import built_python, free_threaded_python, gil_313_python, py314_python

from exporter.host import procfs
from exporter.services import pyidentity
from exporter.pages import statuspage
from exporter.web import templating
from exporter.config.settings import ServicesConfig
from exporter.config.loader import config_from_mapping, load_config
from exporter.services.pyidentity import NOT_PYTHON, UNREADABLE, PythonIdentity, version_from_hex
from exporter.services.collector import METRIC_NAMES, ServiceCollector
from exporter.services.status import services_config_document, services_document
from exporter.services.match import Facts, Matcher, match_group, render_name, systemd_unit
from exporter.services.watcher import Sampler, scan_bound
from exporter.services.window import Cohort, Reading, ServicesSnapshot, cohort, group_state, process_window

TESTDATA = Path(__file__).parent / "testdata"
FT_313 = PythonIdentity("cpython", "3.13.5", True)
GIL_311 = PythonIdentity("cpython", "3.11.7", False)
CONFIG = ServicesConfig()  # busy above 0.1 core; serial at most 1.25 cores; 0.5 idle cores needed


def services(raw: dict) -> ServicesConfig:
    return config_from_mapping({"services": raw}).services


# --- identity --------------------------------------------------------------------------------


def test_py_version_hex_reads_as_cpython_writes_it():
    assert version_from_hex(0x030D05F0) == "3.13.5"
    assert version_from_hex(0x030E00A1) == "3.14.0a1"
    assert version_from_hex(0x030C00C2) == "3.12.0rc2"


def test_the_running_interpreter_is_identified_from_its_own_binary_with_its_exact_version():
    """The test process is a real Python: its executable or libpython holds Py_Version."""
    pid = os.getpid()
    identity = pyidentity.identify(pid, procfs.exe(pid), lambda: procfs.mapped_files(pid), pyidentity.BinaryCache())
    assert identity.implementation == "cpython"
    assert identity.version == "{}.{}.{}".format(*sys.version_info[:3])
    assert identity.free_threaded_build is bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


@pytest.mark.parametrize(("python", "version", "free_threaded"), [
    (gil_313_python, "3.13.", False), (free_threaded_python, "3.13.", True), (py314_python, "3.14.", False),
    (lambda: built_python("PYPARALLEL_PY315_PYTHON", "~/.cache/python3.15/bin/python3.15"), "3.15.", False)])
def test_real_interpreter_binaries_say_their_version_and_build(python, version, free_threaded):
    path = python()
    if path is None:
        pytest.skip("this interpreter is not built here (scripts/build-python)")
    facts = pyidentity.read_binary_facts(os.path.realpath(path))
    assert (facts.implementation, facts.version[:len(version)], facts.free_threaded) == ("cpython", version,
                                                                                       free_threaded)


# (executable name, its symbols and needed libraries, mapped libraries with their symbols) -> identity
IDENTITIES = {
    "a GIL build": (("python3.11", fake_elf.interpreter(3, 11, 7), ()), {}, ("cpython", "3.11.7", False)),
    # a free-threaded build's python3 is a hard link without the t: its symbols say what it is
    "a free-threaded build named python3": (("python3", fake_elf.interpreter(3, 13, 5, True), ()), {},
                                             ("cpython", "3.13.5", True)),
    "a shared build's library": (("uwsgi", {"main": b""}, ("libpython3.12.so.1.0",)),
                                 {"libpython3.12.so.1.0": fake_elf.interpreter(3, 12, 4)}, ("cpython", "3.12.4", False)),
    "PyPy's launcher and library": (("pypy3.10", {"main": b""}, ("libpypy3.10-c.so",)),
                                    {"libpypy3.10-c.so": {"pypy_setup_home": b""}}, ("pypy", "3.10", False)),
    "before Py_Version: the name gives the version": (("python3.9", fake_elf.interpreter(3, 9), ()), {},
                                                       ("cpython", "3.9", False)),
    "a name that claims more than the binary says": (("python3.12", fake_elf.interpreter(3, 9), ()), {},
                                                     ("cpython", "", False)),
    "an embedding program that loaded libpython": (("apache2", {"main": b""}, ()),
                                                    {"libpython3.11.so.1.0": fake_elf.interpreter(3, 11, 2)},
                                                    ("cpython", "3.11.2", False)),
    "two loaded libraries that disagree": (("apache2", {"main": b""}, ()),
                                           {"libpython3.11.so.1.0": fake_elf.interpreter(3, 11, 2),
                                            "libpython3.13t.so.1.0": fake_elf.interpreter(3, 13, 5, True)},
                                           ("unknown", "", None)),
    # the names are hints only: a binary without Python's symbols is not Python
    "a program named like Python": (("python3.13t", {"main": b""}, ()), {}, ("none", "", None)),
    "a library named like Python": (("myapp", {"main": b""}, ()), {"libpython3.13t.so": {"main": b""}},
                                    ("none", "", None)),
    # an interpreter executable decides; a library mapped beside it cannot change what it is
    "a GIL build mapping a forged free-threaded libpython": (
        ("python3.11", fake_elf.interpreter(3, 11, 2), ()),
        {"libpython3.13t.so": fake_elf.interpreter(3, 13, 5, True)}, ("cpython", "3.11.2", False)),
}


@pytest.mark.parametrize("case", sorted(IDENTITIES))
def test_identity_comes_from_the_symbols_of_the_binary_that_runs_the_interpreter(proc, case):
    (exe, symbols, needed), libraries, expected = IDENTITIES[case]
    proc.add(70, exe[:15], exe=proc.binary(exe, fake_elf.elf_file(symbols, needed=needed)),
             mapped=[proc.binary(name, fake_elf.elf_file(library)) for name, library in libraries.items()])
    identity = pyidentity.identify(70, procfs.exe(70, proc.path), lambda: procfs.mapped_files(70, proc.path),
                                   pyidentity.BinaryCache(), proc.path)
    assert (identity.implementation, identity.version, identity.free_threaded_build) == expected


def test_a_process_with_nothing_python_mapped_is_not_python_and_no_binary_is_read(proc):
    proc.add(71, "nginx", exe="/nonexistent/nginx", mapped=["/usr/lib/x86_64-linux-gnu/libc.so.6"])
    assert pyidentity.identify(71, procfs.exe(71, proc.path), lambda: procfs.mapped_files(71, proc.path),
                               pyidentity.BinaryCache(), proc.path) == NOT_PYTHON


def test_a_binary_that_is_not_elf_says_nothing(tmp_path):
    plain = tmp_path / "not-elf"
    plain.write_bytes(b"#!/bin/sh\necho hi\n")
    assert pyidentity.read_binary_facts(str(plain)) == pyidentity.NOTHING


# --- /proc parsing ---------------------------------------------------------------------------


def test_stat_parses_a_comm_with_spaces_and_parentheses():
    line = "42 (my (odd) name) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 5 0 12345 0 0"
    stat = procfs.parse_stat(line)
    assert (stat.comm, stat.ppid, stat.threads, stat.start_ticks) == ("my (odd) name", 7, 5, 12345)
    assert stat.cpu_seconds == pytest.approx(300 / procfs.CLOCK_TICKS)


def test_cpu_lists_count_ranges_and_singles():
    assert procfs.parse_cpu_list("0-3,8,10-11\n") == 7
    assert procfs.parse_cpu_list("0") == 1


# --- matching ---------------------------------------------------------------------------------


def test_systemd_unit_is_the_innermost_service_of_the_cgroup_path():
    assert systemd_unit("/system.slice/app.service") == "app.service"
    assert systemd_unit("/user.slice/user-1000.slice/user@1000.service/app.slice/web.service") == "web.service"
    assert systemd_unit("/kubepods.slice/pod1/cri-containerd-ab.scope") == "cri-containerd-ab.scope"
    assert systemd_unit("/") == ""


def test_every_criterion_given_must_hold_and_the_name_renders_from_the_matches():
    group = services({"groups": [{"name": "{unit}-{role}", "comm": ["python3"], "exe": ["python3.11"],
                                  "cmdline": [r"--role=(?P<role>\w+)"], "systemd_unit": "app.service"}]}).groups[0]
    facts = Facts("python3", "/usr/bin/python3.11", "python3 app.py --role=worker", "0::/system.slice/app.service\n")
    assert match_group(group, facts) == "app.service-worker"
    assert match_group(group, Facts("python3", "/usr/bin/python3.12", facts.cmdline, facts.cgroup)) is None
    assert match_group(group, Facts("python3", facts.exe, "python3 app.py", facts.cgroup)) is None
    assert match_group(group, Facts("python3", facts.exe, facts.cmdline, "0::/system.slice/other.service\n")) is None
    assert match_group(group, Facts("python3", None, facts.cmdline, facts.cgroup)) is None  # exe unreadable


def test_rendered_names_are_label_safe_and_short():
    assert render_name("w-{x}", {"x": 'a b"c\n'}) == "w-a_b_c_"
    assert len(render_name("{x}", {"x": "y" * 500})) == 64


class FakeProc:
    """A directory shaped like /proc: the files procfs reads, for processes we make up.

    Their root is the real one, so a mapped path names a real file (``binary`` makes one)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = str(root)
        self.files = root.parent / f"{root.name}-files"

    def binary(self, name: str, data: bytes) -> str:
        """A file with ``data`` named ``name``, outside the fake /proc: its absolute path."""
        self.files.mkdir(exist_ok=True)
        path = self.files / name
        path.write_bytes(data)
        return str(path)

    def add(self, pid: int, comm: str, ppid: int = 1, cmdline: str = "", start: int = 100, cgroup: str = "/",
            threads: dict[int, int] | None = None, cpus: str = "0-1", exe: str | None = None,
            mapped: Sequence[str] = ()) -> None:
        threads = threads if threads is not None else {pid: 0}
        directory = self.root / str(pid)
        (directory / "task").mkdir(parents=True, exist_ok=True)
        total = sum(threads.values())
        (directory / "stat").write_text(self.stat(pid, comm, ppid, total, len(threads), start))
        (directory / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")
        (directory / "cgroup").write_text(f"0::{cgroup}\n")
        (directory / "status").write_text(f"Name:\t{comm}\nCpus_allowed_list:\t{cpus}\n")
        (directory / "maps").write_text("".join(f"7f0000{i:04x}000-7f0000{i:04x}fff r--p 00000000 08:01 {i} {path}\n"
                                                for i, path in enumerate(mapped)))
        if not (directory / "exe").is_symlink():
            (directory / "exe").symlink_to(exe or f"/nonexistent/bin/{comm}")
        if not (directory / "root").is_symlink():
            (directory / "root").symlink_to("/")
        for tid, ticks in threads.items():
            (directory / "task" / str(tid)).mkdir(exist_ok=True)
            (directory / "task" / str(tid) / "stat").write_text(self.stat(tid, comm, ppid, ticks, 1, start))
            (directory / "task" / str(tid) / "status").write_text("voluntary_ctxt_switches:\t10\n")

    @staticmethod
    def stat(pid: int, comm: str, ppid: int, ticks: int, threads: int, start: int) -> str:
        return f"{pid} ({comm}) S {ppid} 0 0 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 {threads} 0 {start} 0 0\n"

    def remove(self, pid: int) -> None:
        import shutil

        shutil.rmtree(self.root / str(pid))


@pytest.fixture
def proc(tmp_path) -> FakeProc:
    (tmp_path / "proc").mkdir()
    return FakeProc(tmp_path / "proc")


def decide(matcher: Matcher, proc: FakeProc) -> tuple[dict, list[str]]:
    stats = {pid: procfs.read_stat(pid, proc=str(proc.root)) for pid in procfs.pids(str(proc.root))}
    reasons: list[str] = []
    return {pid: group for (pid, _), group in matcher.decide(stats, reasons.append).items()}, reasons


def test_first_match_wins_children_follow_their_parent_unless_they_match_their_own(proc):
    groups = services({"groups": [{"name": "web", "cmdline": ["gunicorn"]}, {"name": "jobs", "cmdline": ["celery"]},
                                  {"name": "any-python", "comm": ["python3"]}]}).groups
    proc.add(10, "gunicorn", cmdline="python3 /usr/bin/gunicorn app:app", start=100)
    proc.add(11, "gunicorn", ppid=10, cmdline="python3 /usr/bin/gunicorn app:app", start=101)
    proc.add(12, "sh", ppid=11, cmdline="sh -c convert", start=102)  # a child of a worker: counts with web
    proc.add(13, "celery", ppid=10, cmdline="python3 -m celery worker", start=103)  # its own group
    proc.add(14, "python3", cmdline="python3 gunicorn-like celery", start=104)  # both patterns: the first wins
    proc.add(15, "nginx", cmdline="nginx: master", start=105)
    matcher = Matcher(groups, own_pid=1, proc=str(proc.root))
    assert decide(matcher, proc)[0] == {10: "web", 11: "web", 12: "web", 13: "jobs", 14: "web"}


def test_the_exporter_and_the_probes_it_starts_are_never_watched(proc):
    groups = services({"groups": [{"name": "py", "comm": ["python3"]}]}).groups
    proc.add(20, "python3", start=100)  # the exporter
    proc.add(21, "python3", ppid=20, start=101)  # a probe runner
    proc.add(22, "python3", start=102)  # a service
    assert decide(Matcher(groups, own_pid=20, proc=str(proc.root)), proc)[0] == {22: "py"}


def test_a_template_cannot_render_more_group_names_than_the_bound(proc):
    groups = services({"groups": [{"name": "{n}", "cmdline": [r"job-(?P<n>\d+)"]}]}).groups
    for i in range(70):
        proc.add(100 + i, "python3", cmdline=f"python3 job-{i}", start=100 + i)
    decided, reasons = decide(Matcher(groups, own_pid=1, proc=str(proc.root)), proc)
    assert len(set(decided.values())) == 64 and reasons.count("too_many_groups") == 6


def test_a_process_is_matched_again_when_it_execs_another_program(proc):
    groups = services({"groups": [{"name": "py", "comm": ["python3"]}]}).groups
    matcher = Matcher(groups, own_pid=1, proc=str(proc.root))
    proc.add(30, "bash", start=100)
    assert decide(matcher, proc)[0] == {}
    proc.add(30, "python3", start=100)  # same pid and start time, new program
    assert decide(matcher, proc)[0] == {30: "py"}


def test_sampler_counts_pid_reuse_and_keeps_going(proc):
    sampler = Sampler(services({"groups": [{"name": "py", "comm": ["python3"]}]}), proc=str(proc.root), own_pid=1)
    proc.add(40, "python3", start=100, threads={40: 10, 41: 10})
    first = sampler.sample(host_usable=2)
    assert first.states == {} and [c.processes for c in first.cohorts] == [1]
    proc.remove(40)
    proc.add(40, "python3", start=900, threads={40: 0})  # another process got the same pid
    second = sampler.sample(host_usable=2)
    assert second.errors["pid_reused"] == 1
    assert second.cohorts[0].cores_used == 0  # no window across two different processes
    assert second.states == {}  # a process seen once has no window yet: no state is claimed
    # its binary cannot be opened: nothing is known of its interpreter
    assert second.cohorts[0].identity == UNREADABLE


# --- one window ------------------------------------------------------------------------------


def reading(at: float, cpu: float, threads: dict[int, float], usable: float = 2.0, identity=GIL_311,
            switches: dict[int, int] | None = None, runnable: dict[int, float] | None = None) -> Reading:
    return Reading("web", identity, at, cpu, threads, switches or {}, usable, runnable or {})


def test_on_a_busy_host_the_kernels_accounting_tells_the_runtimes_turns_from_the_hosts():
    """No idle core: two busy threads got 0.7 cores together. Runnable at once and never
    asleep, the host held them back: not serialised. Going to sleep 120 times a second (a GIL
    waiter asks for the GIL every 5 ms, and under load its wake-ups wait for a CPU, so it reads
    runnable), or blocked for half a thread's worth: the runtime did — serialised. Neither is
    host_busy."""
    before = reading(0.0, 0.0, {1: 0.0, 2: 0.0}, switches={1: 0, 2: 0}, runnable={1: 0.0, 2: 0.0})

    def after(runnable: float, switches: int) -> Reading:
        return reading(5.0, 3.5, {1: 1.75, 2: 1.75}, switches={1: switches, 2: switches},
                       runnable={1: runnable, 2: runnable})

    parallel = process_window(before, after(4.9, 5), CONFIG, host_idle_cores=0.0)
    assert parallel.serialised is False and parallel.runnable_threads == pytest.approx(1.96)
    polling = process_window(before, after(4.9, 600), CONFIG, host_idle_cores=0.0)
    assert polling.serialised is True
    blocked = process_window(before, after(3.5, 5), CONFIG, host_idle_cores=0.0)
    assert blocked.serialised is True and blocked.runnable_threads == pytest.approx(1.4)
    without = process_window(reading(0.0, 0.0, {1: 0.0, 2: 0.0}), reading(5.0, 3.5, {1: 1.75, 2: 1.75}), CONFIG,
                             host_idle_cores=0.0)
    assert without.serialised is None  # no accounting and no idle core: cannot tell


def test_gil_bound_threads_use_one_core_and_show_the_signature():
    before = reading(0.0, 0.0, {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0}, switches={})
    after = reading(5.0, 5.0, {1: 1.25, 2: 1.25, 3: 1.25, 4: 1.25, 5: 0.0})
    window = process_window(before, after, CONFIG, host_idle_cores=1.0)
    assert (window.cores_used, window.busy_threads, window.capacity) == (1.0, 4, 2.0)
    assert window.parallelism == 0.5 and window.serialised is True


def test_free_threaded_threads_use_the_usable_cores_and_show_no_signature():
    before = reading(0.0, 0.0, {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}, identity=FT_313)
    after = reading(5.0, 10.0, {1: 2.5, 2: 2.5, 3: 2.5, 4: 2.5}, identity=FT_313)
    window = process_window(before, after, CONFIG, host_idle_cores=0.0)
    assert window.parallelism == 1.0
    assert window.serialised is False  # two cores used: parallel, though no core was left idle


@pytest.mark.parametrize(("busy", "usable", "idle", "state"), [
    (4, 2.0, 1.0, "serial"), (4, 2.0, 0.1, "host_busy"), (4, 1.0, 1.0, "one_usable_core"),
    (1, 2.0, 1.0, "one_busy_thread"), (0, 2.0, 1.0, "idle"),
])
def test_a_window_that_cannot_judge_says_why(busy, usable, idle, state):
    threads_before = {t: 0.0 for t in range(4)}
    threads_after = {t: (1.0 if t < busy else 0.0) for t in range(4)}
    window = process_window(reading(0.0, 0.0, threads_before), reading(5.0, 5.0 if busy else 0.0, threads_after,
                                                                          usable=usable), CONFIG, idle)
    assert group_state([window], present=True) == state
    assert group_state([], present=False) == "no_process"


def test_voluntary_switches_count_per_busy_thread_per_second():
    before = reading(0.0, 0.0, {1: 0.0, 2: 0.0}, switches={1: 100, 2: 100})
    after = reading(2.0, 2.0, {1: 1.0, 2: 1.0}, switches={1: 500, 2: 900})
    assert process_window(before, after, CONFIG, 1.0).switches_per_busy_thread == pytest.approx(300)


def test_a_cohort_sums_its_processes_and_keeps_their_spread():
    gil = process_window(reading(0, 0, {1: 0, 2: 0}), reading(5, 5, {1: 2.5, 2: 2.5}), CONFIG, 1.0)
    single = process_window(reading(0, 0, {1: 0}), reading(5, 5, {1: 5}), CONFIG, 1.0)
    c = cohort("web", GIL_311, [reading(5, 5, {1: 0, 2: 0}), reading(5, 5, {1: 0})], [gil, single], host_usable=2)
    assert c.cores_used == 2.0 and c.busy_threads == 3
    assert c.parallelism == 1.0  # capacity min(2+1, host 2)
    assert c.process_parallelism == (0.5, 0.75, 1.0)
    assert c.serialised_ratio == 1.0  # only the two-thread process could be judged


# --- exposition and the status document ------------------------------------------------------


def snapshot() -> ServicesSnapshot:
    web = Cohort("web", GIL_311, processes=2, threads=10, cores_used=1.0, busy_threads=4, usable_cores=2,
                 parallelism=0.5, process_parallelism=(0.5, 0.5, 0.5), serialised_ratio=1.0,
                 switches_per_busy_thread=210.0)
    idle = Cohort("<jobs>", FT_313, processes=1, threads=2, cores_used=0.0, busy_threads=0, usable_cores=2,
                  parallelism=None, process_parallelism=(), serialised_ratio=None, switches_per_busy_thread=None)
    return ServicesSnapshot(enabled=True, configured=("web", "<jobs>", "gone"), cohorts=(web, idle),
                            states={"web": "serial", "<jobs>": "idle", "gone": "no_process"},
                            cpu_seconds={("web", GIL_311): 12.5}, window_seconds=5.0, host_idle_cores=1.0,
                            sampled_at=1e9, scan_seconds=0.01, scanned_processes=90)


def test_collector_exports_group_and_identity_labels_only():
    registry = CollectorRegistry()
    registry.register(ServiceCollector(snapshot))
    labels = {"group": "web", "implementation": "cpython", "version": "3.11.7", "free_threaded_build": "false"}
    assert registry.get_sample_value("pyparallel_service_cores_used", labels) == 1.0
    assert registry.get_sample_value("pyparallel_service_serialised_ratio", labels) == 1.0
    assert registry.get_sample_value("pyparallel_service_cpu_seconds_total", labels) == 12.5
    assert registry.get_sample_value("pyparallel_service_state", {"group": "web", "pyparallel_service_state": "serial"}) == 1
    assert registry.get_sample_value("pyparallel_service_state", {"group": "gone", "pyparallel_service_state": "no_process"}) == 1
    idle = {**labels, "group": "<jobs>", "version": "3.13.5", "free_threaded_build": "true"}
    assert registry.get_sample_value("pyparallel_service_busy_threads", idle) == 0
    assert registry.get_sample_value("pyparallel_service_parallelism_ratio", idle) is None  # cannot tell: absent
    for family in registry.collect():
        assert family.documentation, family.name
        for sample in family.samples:
            assert sample.name.startswith("pyparallel_service_")
            assert set(sample.labels) <= {*labels, "stat", "reason", "pyparallel_service_state"}
    names = {f.name for f in registry.collect()}
    assert {n.removesuffix("_total") for n in METRIC_NAMES} == names


def test_collector_of_a_disabled_watch_exports_only_that_it_is_off():
    registry = CollectorRegistry()
    registry.register(ServiceCollector(ServicesSnapshot))
    assert [f.name for f in registry.collect()] == ["pyparallel_service_watch_enabled"]


def test_status_section_escapes_group_names_and_names_the_state():
    document = services_document(snapshot())
    assert [g["group"] for g in document["groups"]] == ["<jobs>", "gone", "web"]
    page = services_section_html(document)
    assert html.escape("<jobs>") in page and "<jobs>" not in page
    assert "the GIL of a GIL build" in page and "no process matches" in page and "cpython 3.11.7, GIL build" in page
    assert statuspage.services_section({"services": services_document(ServicesSnapshot())}, 0) is None  # off: no section


def services_section_html(document: dict) -> str:
    """The status page's watched-services section alone, as the page renders it."""
    return templating.render("exporter.pages", "sections/services.html", data=statuspage.services_section({"services": document}, 0))


def test_services_section_in_the_full_config_loads_and_shows_back_as_written():
    cfg = load_config(str(TESTDATA / "valid-full.yml"))
    assert [g.name for g in cfg.services.groups] == ["web", "jobs-{queue}"]
    assert cfg.services.interval_seconds == 10
    shown = services_config_document(cfg.services)
    assert config_from_mapping({"services": shown}).services == cfg.services


def test_a_process_that_exits_mid_read_is_counted_as_vanished(proc):
    sampler = Sampler(services({"groups": [{"name": "py", "comm": ["python3"]}]}), proc=str(proc.root), own_pid=1)
    proc.add(50, "python3", start=100, threads={50: 0, 51: 0})
    import shutil

    shutil.rmtree(proc.root / "50" / "task")  # its threads are gone; its stat is still there
    snapshot = sampler.sample(host_usable=2)
    assert snapshot.errors["vanished"] == 1 and snapshot.cohorts == ()


def test_a_failing_scan_is_logged_and_counted_never_raised(tmp_path, caplog):
    from exporter.services.watcher import ServiceWatcher

    watcher = ServiceWatcher(services({"groups": [{"name": "py", "comm": ["python3"]}]}),
                             host_usable=lambda: 2.0, proc=str(tmp_path / "no-proc-here"))
    watcher.sample_once()
    watcher.sample_once()
    assert watcher.snapshot().errors["internal"] == 2
    assert "services sample failed" in caplog.text


def test_a_reload_with_other_groups_starts_fresh_windows_and_keeps_the_error_counters(proc):
    from exporter.services.watcher import ServiceWatcher

    proc.add(60, "python3", start=100)
    watcher = ServiceWatcher(services({"groups": [{"name": "py", "comm": ["python3"]}]}), host_usable=lambda: 2.0,
                             proc=str(proc.root))
    watcher.sample_once()
    watcher._sampler.errors["permission"] = 3  # as if three processes had been unreadable
    watcher.configure(services({"groups": [{"name": "other", "comm": ["python3"]}]}))
    assert watcher.snapshot().cohorts == () and watcher.snapshot().configured == ("other",)
    watcher.sample_once()
    assert [c.group for c in watcher.snapshot().cohorts] == ["other"]
    assert watcher.snapshot().errors["permission"] == 3
    watcher.configure(ServicesConfig())  # the section removed: off
    assert watcher.snapshot().enabled is False


# --- another user's files: never blocking, bounded -------------------------------------------


def test_a_fifo_or_a_device_is_refused_without_being_opened(tmp_path):
    """O_PATH opens nothing: a FIFO would otherwise wait for a writer (a device's driver would
    see an open); fstat then shows what it is."""
    fifo = tmp_path / "libpython3.13t.so"
    os.mkfifo(fifo)
    with pytest.raises(procfs.Refused, match="not a regular file"):
        procfs.UntrustedFile(str(fifo), 1024)
    if os.geteuid() == 0:
        device = tmp_path / "null"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        with pytest.raises(procfs.Refused, match="not a regular file"):
            procfs.UntrustedFile(str(device), 1024)


def test_an_untrusted_file_is_read_within_its_byte_budget_and_its_size(tmp_path):
    path = tmp_path / "binary"
    path.write_bytes(bytes(range(256)) * 4)
    with procfs.UntrustedFile(str(path), 600) as file:
        assert file.pread(10, 2) == bytes([10, 11])
        with pytest.raises(procfs.Refused, match="outside the file"):
            file.pread(1000, 100)
        file.pread(0, 500)
        with pytest.raises(procfs.Refused, match="more than the bytes allowed"):
            file.pread(0, 200)


def test_a_read_past_the_scan_deadline_cuts_the_scan(tmp_path):
    path = tmp_path / "binary"
    path.write_bytes(b"x" * 100)
    with pytest.raises(procfs.ScanCut):
        procfs.UntrustedFile(str(path), 100, procfs.Deadline(0.0)).pread(0, 10)


@pytest.mark.parametrize("lie", [{"symbol_table_bytes": 200_000_000 * 24}, {"section_count": 60_000},
                                 {"string_table_bytes": 1 << 40}, {"segment_count": 50_000}])
def test_an_elf_declaring_more_than_the_caps_is_refused_before_reading_it(tmp_path, lie):
    path = tmp_path / "libpython3.13t.so"
    path.write_bytes(fake_elf.elf_file(fake_elf.interpreter(3, 13, 5, True), **lie))
    with pytest.raises(procfs.Refused):
        pyidentity.read_binary_facts(str(path))


def test_big_endian_and_32_bit_interpreters_are_read_too(tmp_path):
    path = tmp_path / "python"
    path.write_bytes(fake_elf.elf_file({**fake_elf.interpreter(3, 13, 1, True),
                                        "Py_Version": fake_elf.py_version(3, 13, 1, ">")}, big_endian=True))
    assert pyidentity.read_binary_facts(str(path)) == pyidentity.BinaryFacts("cpython", "3.13.1", True)
    path.write_bytes(fake_elf.elf_file({**fake_elf.interpreter(3, 12, 3), "Py_Version": (0x030C03F0).to_bytes(4, "little")},
                                       bits=32))
    assert pyidentity.read_binary_facts(str(path)) == pyidentity.BinaryFacts("cpython", "3.12.3", False)


def test_a_process_whose_executable_is_a_fifo_is_unknown_and_counted(proc):
    fifo = proc.files / "python3.13t"
    proc.files.mkdir()
    os.mkfifo(fifo)
    proc.add(72, "python3.13t", exe=str(fifo))
    reasons: list[str] = []
    identity = pyidentity.identify(72, procfs.exe(72, proc.path), lambda: procfs.mapped_files(72, proc.path),
                                   pyidentity.BinaryCache(), proc.path, count=reasons.append)
    assert identity == UNREADABLE and reasons == ["refused"]


def test_the_regexes_see_only_the_first_4_kib_of_a_command_line(proc):
    group = services({"groups": [{"name": "q-{queue}", "cmdline": [r"-Q (?P<queue>\w+)"]}]}).groups
    proc.add(73, "celery", cmdline="celery worker -Q early", start=100)
    proc.add(74, "celery", cmdline="celery worker " + "x" * procfs.MAX_CMDLINE_BYTES + " -Q late", start=101)
    assert decide(Matcher(group, own_pid=1, proc=proc.path), proc)[0] == {73: "q-early"}


# --- a scan's time bound ----------------------------------------------------------------------


def py_sampler(proc: FakeProc, interval: str = "5s") -> Sampler:
    return Sampler(services({"interval": interval, "groups": [{"name": "py", "comm": ["python3"]}]}), proc=proc.path,
                   own_pid=1)


def test_a_scan_over_its_bound_is_cut_counted_and_the_unread_keep_their_window(proc):
    for pid in (80, 81):
        proc.add(pid, "python3", start=pid, threads={pid: 0})
    sampler = py_sampler(proc)
    sampler.sample(host_usable=2)
    sampler.bound_seconds = 0.0  # every scan is cut before it reads a process
    cut = sampler.sample(host_usable=2)
    assert cut.scan_overruns == 1 and cut.cohorts == ()
    sampler.bound_seconds = 5.0
    proc.add(80, "python3", start=80, threads={80: 100})  # a second of CPU since the first scan
    whole = sampler.sample(host_usable=2)
    assert whole.scan_overruns == 1
    assert [c.processes for c in whole.cohorts] == [2]
    assert whole.cohorts[0].cores_used > 0  # its window reaches back over the cut scan to the first


def test_a_cut_scan_reads_the_processes_it_knows_before_new_ones(proc, monkeypatch):
    proc.add(82, "python3", start=82)
    sampler = py_sampler(proc)
    sampler.sample(host_usable=2)
    proc.add(83, "python3", start=83)  # new: an identity to read
    read: list[int] = []
    real = Sampler._read

    class AfterOneRead(procfs.Deadline):
        def passed(self) -> bool:
            return len(read) >= 1

    def read_one(self, key, *args):
        read.append(key[0])
        return real(self, key, *args)

    monkeypatch.setattr(Sampler, "_read", read_one)
    monkeypatch.setattr(procfs.Deadline, "after", classmethod(lambda cls, seconds: AfterOneRead()))
    snapshot = sampler.sample(host_usable=2)
    assert read == [82] and snapshot.scan_overruns == 1


def test_the_scan_bound_is_half_the_interval_and_at_most_ten_seconds():
    assert scan_bound(1.0) == 0.5 and scan_bound(5.0) == 2.5 and scan_bound(300.0) == 10.0


def test_a_stuck_scan_shows_as_running_seconds_and_a_reload_does_not_wait_for_it(proc):
    from exporter.services.watcher import ServiceWatcher

    proc.add(84, "python3", start=84)
    watcher = ServiceWatcher(services({"groups": [{"name": "py", "comm": ["python3"]}]}), host_usable=lambda: 2.0,
                             proc=proc.path)
    release = threading.Event()
    assert watcher._sampler is not None
    watcher._sampler.sample = lambda host_usable: release.wait() and ServicesSnapshot()  # type: ignore[method-assign]
    stuck = threading.Thread(target=watcher.sample_once, daemon=True)
    stuck.start()
    try:
        support.wait_for(lambda: watcher.snapshot().scan_started_at is not None, 5, "the scan to start")
        time.sleep(0.05)
        registry = CollectorRegistry()
        registry.register(ServiceCollector(watcher.snapshot))
        assert registry.get_sample_value("pyparallel_service_scan_running_seconds") >= 0.05
        watcher.configure(services({"groups": [{"name": "other", "comm": ["python3"]}]}))  # returns at once
        assert watcher.snapshot().configured == ("other",)
        assert watcher.snapshot().scan_started_at is not None  # still stuck: still visible
    finally:
        release.set()
        stuck.join(5)
    assert watcher.snapshot().scan_started_at is None
    registry = CollectorRegistry()
    registry.register(ServiceCollector(watcher.snapshot))
    assert registry.get_sample_value("pyparallel_service_scan_running_seconds") == 0

