"""One glibc malloc arena for the serving process, while the GIL is on.

glibc gives each new thread its own malloc arena, up to eight per core. ``serve`` runs up to
``--web.max-requests`` request threads, so under a steady scrape load the allocations of
each request are spread over 16 arenas on a 2-core host, and each arena keeps its own
high-water mark of free space: the 30-minute soak (benchmarks/results-soak.md) saw RSS creep
up in those arenas while the memory in use stayed flat. With the GIL only one thread runs
Python at a time, so separate arenas save no lock contention: one arena gives the same
throughput, about 3 MB less RSS on that host, and in most runs less creep.

Free-threaded builds are left alone: their threads do run at once, and their Python objects
live in mimalloc's heaps, not in glibc's arenas. Probes are unaffected either way: they run
in child processes that start a fresh allocator.
"""

from __future__ import annotations

import ctypes
import platform

from exporter.gilstate import gil_enabled

M_ARENA_MAX = -8  # glibc's malloc.h


def use_one_malloc_arena() -> bool:
    """Limit glibc to one malloc arena; True when it took effect. Call it before any thread
    starts (threads already running keep the arena they have)."""
    if platform.libc_ver()[0] != "glibc" or not gil_enabled():
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(1)))
    except (OSError, AttributeError):  # a libc without mallopt: nothing to tune
        return False
