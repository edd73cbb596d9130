"""Whether this interpreter runs with the GIL (standard library only: the runner uses it too)."""

from __future__ import annotations

import sys


def gil_enabled() -> bool:
    """Whether the GIL is enabled right now (always true before 3.13's free-threaded build)."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())
