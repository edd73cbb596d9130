"""``serve`` keeps its request threads in one glibc malloc arena while the GIL is on, and
leaves free-threaded builds alone. Arenas are counted from outside, in /proc/PID/maps."""

from __future__ import annotations

import platform
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_free_threaded_python
from test_lifecycle import QUIET

import support

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc arenas only")]

REPO = Path(__file__).resolve().parent.parent
HEAP_ALIGNMENT = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit: a thread arena's heap starts on it

# Threads that each allocate blocks malloc serves (over pymalloc's 512 bytes) and then wait
# for one another, so every thread is running (and has picked its arena) at the same time.
THREADS_THAT_ALLOCATE = """
import sys, threading
sys.path.insert(0, {repo!r})
from exporter.mallocarena import use_one_malloc_arena
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
