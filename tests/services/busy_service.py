"""A small worker service for the services tests: N threads spinning pure-Python bytecode.

``python busy_service.py [--threads N] [--import MODULE]``: imports MODULE first (e.g. an
extension that re-enables the GIL on a free-threaded build), starts N CPU-busy threads,
prints ``ready`` and runs until killed (or its parent, the test, goes away).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
import time


def spin(stop: threading.Event) -> None:
    """Pure-Python arithmetic: it holds the GIL wherever there is one."""
    total = 0
    while not stop.is_set():
        for i in range(10_000):
            total += i * i % 7


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--import", dest="module")
    parser.add_argument("--tag", default="", help="ignored: lets a test's group match this one process")
    args = parser.parse_args()
    if args.module:
        importlib.import_module(args.module)
    stop = threading.Event()
    for _ in range(args.threads):
        threading.Thread(target=spin, args=(stop,), daemon=True).start()
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(f"ready gil={int(gil)}", flush=True)
    parent = os.getppid()
    while os.getppid() == parent:  # never outlive the test that started us
        time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
