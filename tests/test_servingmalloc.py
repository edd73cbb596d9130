"""``serve`` keeps its request threads in one glibc malloc arena and without per-thread
malloc caches while the GIL is on, gives its probes the user's allocator settings, and leaves
free-threaded builds alone. Arenas are counted from outside, in /proc/PID/maps; the caches
are seen by what they do (a block one thread frees is not reused by another)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import require_free_threaded_python
from test_lifecycle import QUIET

import support
from exporter.serve import malloc

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not malloc.on_glibc(), reason="glibc's malloc only")]

REPO = Path(__file__).resolve().parent.parent
HEAP_ALIGNMENT = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit: a thread arena's heap starts on it

# Threads that each allocate blocks malloc serves (over pymalloc's 512 bytes) and then wait
# for one another, so every thread is running (and has picked its arena) at the same time.
THREADS_THAT_ALLOCATE = """
import sys, threading
sys.path.insert(0, {repo!r})
from exporter.serve.malloc import use_one_malloc_arena
took = use_one_malloc_arena() if {one!r} else None
barrier = threading.Barrier(7)
def allocate():
    kept = [bytes(2000 + i) for i in range(200)]
    barrier.wait()
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(6)]
for thread in threads:
    thread.start()
barrier.wait()
print(took, flush=True)
sys.stdin.readline()  # the test reads /proc/PID/maps now
barrier.wait()
"""


def thread_arenas(pid: int) -> int:
    """Anonymous read-write mappings that start on the heap alignment: glibc's thread arenas."""
    count = 0
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        start = int(fields[0].split("-")[0], 16)
        if fields[1] == "rw-p" and len(fields) == 5 and start % HEAP_ALIGNMENT == 0:
            count += 1
    return count


def arenas_of_threads_that_allocate(python: str, one: bool) -> tuple[str, int]:
    """What ``use_one_malloc_arena`` answered in ``python``, and the thread arenas after."""
    script = THREADS_THAT_ALLOCATE.format(repo=str(REPO), one=one)
    with subprocess.Popen([python, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as child:
        try:
            took = child.stdout.readline().strip()
            arenas = thread_arenas(child.pid)
            child.communicate("\n", timeout=30)
        finally:
            child.kill()
    return took, arenas


def test_threads_share_one_arena_once_limited_and_get_their_own_otherwise():
    assert arenas_of_threads_that_allocate(sys.executable, one=False) == ("None", 6)
    assert arenas_of_threads_that_allocate(sys.executable, one=True) == ("True", 0)


@pytest.mark.freethreaded
def test_free_threaded_builds_keep_glibc_default():
    took, arenas = arenas_of_threads_that_allocate(require_free_threaded_python(), one=True)
    # Each of the six threads keeps an arena of its own, as by default. Threads that really
    # run at once sometimes find their arena locked and make one more, so 6 or 7.
    assert took == "False" and arenas >= 6


def test_serve_answers_many_concurrent_scrapes_from_one_arena(tmp_path):
    service = support.start_exporter(tmp_path, QUIET)
    try:
        support.wait_ready(service, timeout=60)

        assert support.scrape_statuses(service.url + "/metrics", clients=12, each=10) == [200] * 120
        assert thread_arenas(service.process.pid) == 0
        assert "malloc_arenas=1" in service.log_text()
    finally:
        service.stop(signal.SIGKILL)


# The console script's first step, then a look at glibc's caches: with one arena, a block one
# thread frees is reused by another thread's next malloc only if it did not stay in the first
# thread's cache (the first thread is still alive: a thread's exit empties its cache).
RESTART_THEN_LOOK = """
import ctypes, json, os, sys, threading
sys.path.insert(0, {repo!r})
from exporter.serve import malloc
malloc.restart_serve_once_without_thread_caches(sys.argv)
malloc.use_one_malloc_arena()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
blocks, freed, taken = {{}}, threading.Event(), threading.Event()
def free_one():
    blocks["freed"] = libc.malloc(72)
    libc.free(blocks["freed"])
    freed.set()
    taken.wait()
thread = threading.Thread(target=free_one)
thread.start()
freed.wait()
blocks["taken"] = libc.malloc(72)
taken.set()
thread.join()
print(json.dumps({{"pid": os.getpid(), "caches_off": malloc.thread_caches_off(),
                  "reused": blocks["freed"] == blocks["taken"], "tunables": os.environ.get("GLIBC_TUNABLES"),
                  "marker": malloc.USER_TUNABLES in os.environ}}))
"""


def restart_then_look(python: str, command: str, tunables: str | None = None, marker: str | None = None) -> dict:
    """Run the console script's first step as ``command`` would, then look at the caches;
    ``marker``: a PYPARALLEL_USER_GLIBC_TUNABLES already in the user's environment."""
    env = {key: value for key, value in os.environ.items() if key not in ("GLIBC_TUNABLES", malloc.USER_TUNABLES)}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    if marker is not None:
        env[malloc.USER_TUNABLES] = marker
    child = subprocess.run([python, "-c", RESTART_THEN_LOOK.format(repo=str(REPO)), command], env=env,
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout)


def test_serve_restarts_in_place_without_thread_caches_and_gives_back_the_users_settings():
    for tunables in (None, "glibc.malloc.perturb=0"):
        seen = restart_then_look(sys.executable, "serve", tunables)
        assert seen["caches_off"] and seen["reused"]
        assert (seen["tunables"], seen["marker"]) == (tunables, False)


@pytest.mark.parametrize("marker", ["set:glibc.malloc.perturb=1", "unset", "1 set:glibc.malloc.perturb=1"])
def test_a_preset_marker_neither_skips_the_restart_nor_reaches_the_probes(marker):
    """Only our own restart of this very process (its PID) sets the marker: one found in the
    user's environment is dropped, so serve still restarts and probes see the user's settings."""
    for tunables in (None, "glibc.malloc.perturb=0"):
        seen = restart_then_look(sys.executable, "serve", tunables, marker)
        assert seen["caches_off"] and seen["reused"]
        assert (seen["tunables"], seen["marker"]) == (tunables, False)
    seen = restart_then_look(sys.executable, "probe", None, marker)
    assert (seen["caches_off"], seen["tunables"], seen["marker"]) == (False, None, False)


def test_other_commands_keep_glibc_caches():
    seen = restart_then_look(sys.executable, "probe")
    assert (seen["caches_off"], seen["reused"], seen["tunables"], seen["marker"]) == (False, False, None, False)


def test_a_users_own_cache_setting_is_kept():
    for count, off in (("7", False), ("0", True)):
        seen = restart_then_look(sys.executable, "serve", f"glibc.malloc.tcache_count={count}")
        assert (seen["caches_off"], seen["reused"], seen["tunables"]) == (off, off, f"glibc.malloc.tcache_count={count}")


@pytest.mark.freethreaded
def test_free_threaded_serve_is_not_restarted():
    seen = restart_then_look(require_free_threaded_python(), "serve")
    assert (seen["caches_off"], seen["tunables"], seen["marker"]) == (False, None, False)


HANGING_PROBE = dict(QUIET, probe=dict(QUIET["probe"], workloads=["faulty_workloads:hangs"], modes=["sequential"],
                                        timeout="10m"))


def test_real_serve_runs_without_caches_and_its_probes_with_the_users_settings(tmp_path):
    token = uuid.uuid4().hex
    service = support.start_exporter(tmp_path, HANGING_PROBE,
                                     env={"PYPARALLEL_TEST_TOKEN": token, "GLIBC_TUNABLES": "glibc.malloc.perturb=0"})
    try:
        support.wait_for(lambda: len(support.processes_with_token(token)) >= 2, 60, "the probe's runner to start")
        by_pid = {process.pid: process.environ() for process in support.processes_with_token(token)}
        served = by_pid.pop(service.process.pid)  # restarted in place: the PID we started
        assert malloc.USER_TUNABLES in served  # what it was restarted with
        assert all(env.get("GLIBC_TUNABLES") == "glibc.malloc.perturb=0" for env in by_pid.values())
        assert not any(malloc.USER_TUNABLES in env or malloc.HELD_SIGNALS in env for env in by_pid.values())
        support.wait_for(lambda: "msg=starting" in service.log_text(), 30, "the starting line")
        assert "malloc_thread_caches=off" in service.log_text()
    finally:
        service.stop(signal.SIGKILL)
    support.wait_for(lambda: not support.processes_with_token(token), 5, "the probe's runner to die", interval=0.1)
