"""What machine a benchmark ran on: shared by the benchmark scripts' headers."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path
from typing import Optional


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def this_run() -> str:
    """Machine, interpreter, time and load of this run, for a results file's line."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}; CPython "
            f"{platform.python_version()} ({sys.executable}); "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load average {load}")


def publish(text: str, markdown: Optional[Path]) -> None:
    """Print a run's section, and append it to ``markdown`` (results files keep every run)."""
    print(text)
    if markdown:
        with markdown.open("a") as handle:
            handle.write(text)
