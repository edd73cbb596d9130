"""The services watcher against a local user who controls what a watched process maps.

Each test is one of issue 27's breaks, played with real processes: a process maps a file
(``LD_PRELOAD`` of a small real library, or Python's ``mmap``) and then swaps the path for a
FIFO, a 4 GiB sparse file or an ELF whose headers lie; a copy of ``sleep`` named
``python3.13t``; a GIL build mapping a forged free-threaded libpython; command lines of 64 KiB.
The sampler runs in a child process, so a hang is a timeout and not a stuck test run, and its
own CPU time is measured (a machine loaded by other tests slows the wall clock, not that).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

import fake_elf
import support

pytestmark = pytest.mark.integration

SMALL_LIBRARY = "/lib/x86_64-linux-gnu/libutil.so.1"  # glibc's stub: loads anywhere, does nothing
SAMPLER_TIMEOUT = 60.0  # seconds of wall time for two scans; a blocked open never returns
# CPU seconds two scans of the whole host may cost, against the seconds a break took (11 s for
# the sparse file, unbounded for the lying ELF, 10 s for 20 long command lines): scans of a
# few hundred processes cost tens of milliseconds.
SAMPLER_CPU_SECONDS = 3.0

# Two scans by the real Sampler over the real /proc; prints what the second one saw.
SAMPLER = r"""
import json, sys, time
from exporter.config.loader import config_from_mapping
from exporter.services.watcher import Sampler
config = config_from_mapping({"services": {"interval": "5s", "groups": json.loads(sys.argv[1])}}).services
sampler = Sampler(config)
started = time.thread_time()
snapshots = [sampler.sample(2.0) for _ in range(2)]
last = snapshots[-1]
print(json.dumps({
    "cohorts": [[c.group, c.identity.implementation, c.identity.version, c.identity.build, c.processes]
                for c in last.cohorts],
    "errors": dict(last.errors), "cpu_seconds": time.thread_time() - started}))
"""


def sample(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """What the sampler, in a child process, sees of ``groups`` in its second scan."""
    result = subprocess.run([sys.executable, "-c", SAMPLER, json.dumps(groups)], capture_output=True, text=True,
                            timeout=SAMPLER_TIMEOUT, cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["cpu_seconds"] < SAMPLER_CPU_SECONDS, seen
    return seen


def group_for(token: str) -> list[dict[str, Any]]:
    return [{"name": "hostile", "cmdline": [token]}]


def maps_show(pid: int, path: str) -> bool:
    try:
        return path in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@contextmanager
def running(argv: list[str], mapped: Optional[str] = None, env: Optional[dict[str, str]] = None) -> Iterator[int]:
    """A process that runs until the block ends; waits until it maps ``mapped``."""
    process = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL)
    try:
        if mapped is not None:
            support.wait_for(lambda: maps_show(process.pid, mapped), 20, f"the process to map {mapped}")
        yield process.pid
    finally:
        process.kill()
        process.wait()


@contextmanager
def sleep_mapping(path: Path) -> Iterator[str]:
    """``sleep`` with a small real library preloaded from ``path``; yields its cmdline token."""
    if not os.path.exists(SMALL_LIBRARY):
        pytest.skip(f"{SMALL_LIBRARY} is not here")
    shutil.copy(SMALL_LIBRARY, path)
    seconds = f"3000.{uuid.uuid4().int % 10**9}"  # a unique command line
    with running(["sleep", seconds], mapped=str(path), env={"LD_PRELOAD": str(path)}):
        yield seconds.replace(".", r"\.")


def swap(path: Path, make: Any) -> None:
    """Replace the file at ``path`` (the process keeps its mapping of the old one)."""
    path.unlink()
    make(path)


def sparse(path: Path, size: int = 4 << 30) -> None:
    with open(path, "wb") as handle:
        handle.truncate(size)


def lying_elf(path: Path) -> None:
    """36 KiB of ELF whose .dynsym declares 200 million symbols."""
    data = fake_elf.elf_file(fake_elf.interpreter(3, 13, 5, True), symbol_table_bytes=200_000_000 * 24)
    path.write_bytes(data + bytes(36 * 1024 - len(data)))


def test_a_mapped_library_swapped_for_a_fifo_is_refused_not_a_blocked_watcher(tmp_path):
    """Break 1: open() of the FIFO waited for a writer for ever; the last scan froze."""
    library = tmp_path / "libpython3.13t.so"
    with sleep_mapping(library) as token:
        swap(library, os.mkfifo)
        seen = sample(group_for(token))
    assert [c[:2] for c in seen["cohorts"]] == [["hostile", "unknown"]]
    assert seen["errors"]["refused"] >= 1


def test_a_mapped_library_swapped_for_a_4_gib_sparse_file_costs_one_header(tmp_path):
    """Break 2: the banner search read all 4 GiB, holding the GIL (11 s a scan)."""
    library = tmp_path / "libpython3.13t.so"
    with sleep_mapping(library) as token:
        swap(library, sparse)
        seen = sample(group_for(token))
    assert [c[:2] for c in seen["cohorts"]] == [["hostile", "none"]]  # no ELF, no Python in it


def test_a_mapped_library_swapped_for_an_elf_declaring_200_million_symbols_is_refused(tmp_path):
    """Break 3: the ELF library walked every declared symbol, RSS growing without bound."""
    library = tmp_path / "libpython3.13t.so"
    with sleep_mapping(library) as token:
        swap(library, lying_elf)
        seen = sample(group_for(token))
    assert [c[:2] for c in seen["cohorts"]] == [["hostile", "unknown"]]
    assert seen["errors"]["refused"] >= 1


def test_a_copy_of_sleep_named_python3_13t_is_not_python(tmp_path):
    """Break 4: the names said cpython 3.13, free-threaded; the binary has no Python in it."""
    impostor = tmp_path / "python3.13t"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", impostor)
    seconds = f"3000.{uuid.uuid4().int % 10**9}"
    with running([str(impostor), seconds]):
        seen = sample([{"name": "impostor", "comm": ["python3.13t"], "cmdline": [seconds.replace(".", r"\.")]}])
    assert seen["cohorts"] == [["impostor", "none", "", "unknown", 1]]


def test_a_gil_build_mapping_a_forged_free_threaded_libpython_stays_a_gil_build(tmp_path):
    """Break 4: a 3.11 process mapping a libpython3.13t.so with the free-threading banner (and,
    here, every symbol a real one has) was exported as free-threaded."""
    forged = tmp_path / "libpython3.13t.so"
    forged.write_bytes(fake_elf.elf_file(fake_elf.interpreter(3, 13, 5, free_threaded=True),
                                         banner=b"3.13.5 experimental free-threading build (main)\0"))
    token = f"forged-{uuid.uuid4().hex}"
    # A statically linked interpreter, as Debian's (a shared build maps its own libpython too)
    python = next((p for p in ("/usr/bin/python3", sys.executable) if os.path.exists(p)))
    version = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    holder = ("import mmap, sys, time; f = open(sys.argv[1], 'rb'); "
              "m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ); time.sleep(300)")
    with running([python, "-c", holder, str(forged), token], mapped=str(forged)):
        seen = sample(group_for(token))
    assert seen["cohorts"] == [["hostile", "cpython", version, "false", 1]]


def test_long_command_lines_cost_the_regex_only_their_first_4_kib():
    """Break 5: the docs' 'celery .* -Q' over 64 KiB of "celery " took 0.5 s a process."""
    token = f"celery-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-c", "import time; time.sleep(300)", token] + ["celery"] * (64 * 1024 // 7)
    processes = [subprocess.Popen(argv, stdin=subprocess.DEVNULL) for _ in range(20)]
    try:
        support.wait_for(lambda: all(len(Path(f"/proc/{p.pid}/cmdline").read_bytes()) > 60_000 for p in processes),
                         20, "the processes' command lines")
        seen = sample([{"name": "celery-{queue}", "cmdline": [token, r"celery .* -Q (?P<queue>\w+)"]}])
    finally:
        for process in processes:
            process.kill()
            process.wait()
    assert seen["cohorts"] == []  # no "-Q" anywhere: no group, and found out cheaply


def test_a_queue_named_beyond_the_first_4_kib_of_the_command_line_is_not_seen(tmp_path):
    """What a regex sees is the command line's first 4 KiB, whatever follows."""
    token = f"queue-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-c", "import time; time.sleep(300)", token, "x" * 5000, "-Q", "late"]
    with running(argv):
        time.sleep(0.2)
        seen = sample([{"name": "q-{queue}", "cmdline": [token, r"-Q (?P<queue>\w+)"]}])
    assert seen["cohorts"] == []
