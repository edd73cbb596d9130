"""The catalogue of probe workloads: small no-argument operations, registered by name.

Like CPython's ``Tools/ftscalingbench``, a decorator fills one registry keyed by the
function's name. Each function is one *operation* (roughly a millisecond); the runner
calibrates how many operations make one *unit* of work of the configured duration, so the
same catalogue works on fast and slow interpreters. Standard library only: this module is
imported by the runner inside any interpreter under test.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json as _json
import time
import zlib as _zlib
from dataclasses import dataclass
from typing import Awaitable, Callable, Dict, Optional


@dataclass(frozen=True)
class Workload:
    """One registered operation, and optionally an awaitable form for the asyncio mode."""

    name: str
    operation: Callable[[], object]
    description: str
    # An I/O-bound workload awaits instead of blocking; CPU workloads have no async form.
    async_operation: Optional[Callable[[], Awaitable[object]]] = None


ALL_WORKLOADS: Dict[str, Workload] = {}


def register(description: str) -> Callable[[Callable[[], object]], Callable[[], object]]:
    """Register the decorated no-argument function under its own name."""

    def decorate(func: Callable[[], object]) -> Callable[[], object]:
        ALL_WORKLOADS[func.__name__] = Workload(func.__name__, func, description)
        return func

    return decorate


@register("integer arithmetic loop in pure Python: the classic GIL-bound case")
def pure_python() -> object:
    total = 0
    for i in range(20_000):
        total += i * i % 7
    return total


@register("allocate and drop small dicts and lists: reference counting and the allocator")
def objects() -> object:
    kept = []
    for i in range(2_000):
        item = {"i": i, "items": [i, i + 1, i + 2]}
        kept.append(item)
        if len(kept) > 64:
            kept.clear()
    return len(kept)


_SHA_BUFFER = bytes(range(256)) * 4096  # 1 MiB


@register("hashlib.sha256 over a 1 MiB buffer: releases the GIL, so threads scale anyway")
def sha256() -> object:
    return hashlib.sha256(_SHA_BUFFER).digest()


_ZLIB_BUFFER = (b"python parallelism exporter " * 4096)[:100_000]


@register("zlib.compress of a 100 kB buffer: C code that releases the GIL")
def zlib() -> object:
    return len(_zlib.compress(_ZLIB_BUFFER, 6))


_JSON_DOCUMENT = {"items": [{"id": i, "name": f"item-{i}", "tags": ["a", "b"]} for i in range(200)]}


@register("json.dumps/json.loads round trip of a small document")
def json() -> object:
    return len(_json.loads(_json.dumps(_JSON_DOCUMENT))["items"])


SLEEP_SECONDS = 0.005


@register("time.sleep: the I/O-bound control, which overlaps even under the GIL")
def sleep() -> object:
    time.sleep(SLEEP_SECONDS)
    return None


async def _sleep_async() -> object:
    await asyncio.sleep(SLEEP_SECONDS)
    return None


ALL_WORKLOADS["sleep"] = Workload(
    "sleep", sleep, ALL_WORKLOADS["sleep"].description, async_operation=_sleep_async
)


def is_user_workload(name: str) -> bool:
    """A user workload is named ``module:function`` (or ``package.module:function``)."""
    return ":" in name


def resolve(name: str) -> Workload:
    """Return the registered workload, or import a user's ``package.module:function``.

    Raises ``KeyError`` for an unknown built-in name and ``ImportError``/``AttributeError``
    when a user workload cannot be loaded.
    """
    if not is_user_workload(name):
        if name not in ALL_WORKLOADS:
            raise KeyError(f"unknown workload {name!r}; known: {', '.join(sorted(ALL_WORKLOADS))}")
        return ALL_WORKLOADS[name]
    module_name, _, attribute = name.partition(":")
    operation = getattr(importlib.import_module(module_name), attribute)
    if not callable(operation):
        raise AttributeError(f"{name} is not callable")
    return Workload(name, operation, f"user workload {name}")
