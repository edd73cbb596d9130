"""glibc's malloc, set up for the serving process while the GIL is on: one arena, and no
per-thread caches.

``serve`` runs up to ``--web.max-requests`` request threads. By default glibc gives each new
thread a malloc arena of its own (up to eight per core), and each thread a cache of freed
blocks (tcache: up to 7 blocks in each of 64 size classes). Under a steady scrape load both
kept RSS creeping up while the memory Python held stayed flat (benchmarks/results-soak.md):
each arena keeps its own high-water mark of free space, and each busy thread's cache fills
with blocks no other thread can reuse. With the GIL only one thread runs Python at a time,
so neither saves lock contention worth having: with one arena and no caches RSS stayed flat
over 30-minute soaks and as many scrapes were served (1 % fewer in 15-minute runs side by
side).

The arena count can be set at run time (``mallopt``); the caches only from the environment
glibc reads at start-up (``GLIBC_TUNABLES``). So the console script re-executes itself once
for ``serve``, before anything else runs (same PID, same command line), with the caches
turned off, and the new process puts the user's ``GLIBC_TUNABLES`` back at once so that probe
children start with the user's allocator. A user who sets ``glibc.malloc.tcache_count``
themselves keeps their setting. The variable that carries the user's value across the
restart names the process's PID (which ``execve`` keeps), so the same variable found in the
environment of any other process is dropped, neither believed nor passed on.

Free-threaded builds are left alone: their threads do run at once, and their Python objects
live in mimalloc's heaps, not in glibc's arenas. So are C libraries other than glibc.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, Optional

from exporter.runner.gilstate import gil_enabled

M_ARENA_MAX = -8  # glibc's malloc.h
TUNABLES = "GLIBC_TUNABLES"
THREAD_CACHES_OFF = "glibc.malloc.tcache_count=0"
# Set only across our own re-exec: "<pid> set:<the user's GLIBC_TUNABLES>" or "<pid> unset".
USER_TUNABLES = "PYPARALLEL_USER_GLIBC_TUNABLES"
_WAS_SET = "set:"
_WAS_UNSET = "unset"
# Also across it: "<pid> <signal numbers>", the signals the console script held for the
# restarted process to release (exporter.entry).
HELD_SIGNALS = "PYPARALLEL_HELD_SIGNALS"
# What glibc read at start-up: restore_user_environment puts the user's value back later.
_TUNABLES_AT_START = os.environ.get(TUNABLES, "")


def on_glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):  # not a glibc system
        return False


def use_one_malloc_arena() -> bool:
    """Limit glibc to one malloc arena; True when it took effect. Call it before any thread
    starts (threads already running keep the arena they have)."""
    if not (on_glibc() and gil_enabled()):
        return False
    import ctypes  # here, so that the console script's first lines stay light

    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(1)))
    except (OSError, AttributeError):  # a libc without mallopt: nothing to tune
        return False


def restart_serve_once_without_thread_caches(argv: list[str], carry: Optional[Mapping[str, str]] = None) -> None:
    """The console script's first step: ``serve`` re-executes itself once with the caches off,
    and the restarted process (like every other command) gets the user's GLIBC_TUNABLES.
    ``carry``: more variables for the restarted process alone."""
    # A script read from stdin ("-") could not be read again by the restarted process.
    if not restore_user_environment() and argv[1:2] == ["serve"] and argv[0] not in ("", "-"):
        restart_without_thread_caches(carry or {})


def restore_user_environment() -> bool:
    """After our re-exec, give GLIBC_TUNABLES back the user's value (probe children inherit
    it); True if this process is that re-exec. The marker is removed in any case."""
    pid, _, user = os.environ.pop(USER_TUNABLES, "").partition(" ")
    if pid != str(os.getpid()) or not (user.startswith(_WAS_SET) or user == _WAS_UNSET):
        return False  # not set by our own restart of this very process
    if user.startswith(_WAS_SET):
        os.environ[TUNABLES] = user[len(_WAS_SET):]
    else:
        os.environ.pop(TUNABLES, None)
    return True


def restart_without_thread_caches(carry: Mapping[str, str]) -> None:
    """Re-execute this command with glibc's per-thread caches off. Returns, changing nothing,
    where that does not apply or cannot be done; otherwise does not return."""
    user = os.environ.get(TUNABLES)
    command = list(getattr(sys, "orig_argv", []))
    if not (on_glibc() and gil_enabled()) or "tcache_count" in (user or "") or not sys.executable or not command:
        return
    marker = _WAS_SET + user if user is not None else _WAS_UNSET
    env = dict(os.environ, **carry, **{TUNABLES: f"{user}:{THREAD_CACHES_OFF}" if user else THREAD_CACHES_OFF,
                                       USER_TUNABLES: f"{os.getpid()} {marker}"})
    try:
        os.execve(sys.executable, command, env)
    except OSError:  # e.g. the interpreter's file is gone: run on with glibc's defaults
        return


def thread_caches_off() -> bool:
    """Whether this process started with glibc's per-thread caches turned off (by us or by
    the user's own GLIBC_TUNABLES)."""
    return on_glibc() and THREAD_CACHES_OFF in _TUNABLES_AT_START.split(":")
