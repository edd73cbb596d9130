"""Large and hostile inputs, before and after (issue 27): ``compare`` of documents of many
steps, and the JSON loaders on an unterminated string of escaped quotes.

Each case runs in a fresh process of this checkout and of an earlier commit (extracted with
``git archive``), one after the other in one run, so the two figures share the machine's
state. Wall and CPU seconds (user + system of the child) per case; a case over
``--timeout`` is cut and reported as such. Run by hand; progress on stderr::

    python benchmarks/big_inputs.py --before 92ee6a5 --markdown benchmarks/results-inputs.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
IDENTITY = {"name": "cpython-3.11", "path": "/usr/bin/python3", "version": "3.11.2", "implementation": "cpython",
            "free_threaded_build": False, "gil_enabled": True}
HOST = {"logical_cpus": 2, "physical_cpus": 2, "affinity_cpus": 2, "cgroup_quota_cpus": None, "usable_cpus": 2.0}
RESTORE = "import sys; from exporter.pages.history import History\ntry: History().restore(sys.argv[1])\nexcept ValueError: pass"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def steps_document(steps: int) -> dict[str, Any]:
    """``steps`` steps as compare reads them: a speedup, its interval and three pairs each
    (about 170 bytes a step), under distinct (workload, workers) keys."""
    results = [{"interpreter": "cpython-3.11", "workload": f"w{i // 256}", "mode": "threads", "workers": 1 + i % 256,
                "success": True, "speedup": 1.9, "speedup_ci": [1.8, 2.0], "pair_speedups": [1.85, 1.9, 1.95]}
               for i in range(steps)]
    return {"version": 2, "interpreters": [IDENTITY], "interpreter": IDENTITY, "host": HOST, "results": results}


@dataclass(frozen=True)
class Case:
    name: str
    command: list[str]  # after "python"; {file} is the input


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float
    code: Optional[int]  # None: cut at the timeout


def timed(command: Sequence[str], source: Path, timeout: float) -> Timing:
    """One fresh process of the exporter in ``source``: wall and CPU seconds, exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    env = dict(os.environ, PYTHONPATH=str(source))
    child = subprocess.Popen([sys.executable, *command], cwd=source, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        code: Optional[int] = child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        code = None
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall, cpu, code)


def extract(commit: str, into: Path) -> Path:
    """The package as it was at ``commit``."""
    archive = subprocess.run(["git", "archive", commit, "exporter"], cwd=REPO, capture_output=True, check=True).stdout
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def cases(scratch: Path, sizes: Sequence[int], quotes: int) -> list[tuple[str, list[str]]]:
    """(description, command) of each case, with its input written to ``scratch``."""
    found = []
    for steps in sizes:
        path = scratch / f"steps-{steps}.json"
        path.write_text(json.dumps(steps_document(steps)))
        size = f"{path.stat().st_size / 1e6:.1f} MB"
        found.append((f"`compare --json`, two documents of {steps:,} steps ({size} each)",
                      ["-m", "exporter", "compare", str(path), str(path), "--json"]))
        found.append((f"`compare` (the table), two documents of {steps:,} steps",
                      ["-m", "exporter", "compare", str(path), str(path)]))
    hostile = scratch / "escaped-quotes.json"
    hostile.write_text('"' + '\\"' * quotes)
    size = f"{hostile.stat().st_size / 1e3:.0f} KB"
    found.append((f"`compare`, an unterminated string of escaped quotes ({size})",
                  ["-m", "exporter", "compare", str(hostile), str(hostile)]))
    found.append((f"`--history.file` restore, the same file ({size})", ["-c", RESTORE, str(hostile)]))
    return found


def machine() -> str:
    load = os.getloadavg()
    return (f"{cpu_model()}, {os.cpu_count()} logical CPUs, Linux {platform.release()}, Python "
            f"{platform.python_version()}; load average {load[0]:.2f} at the start")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="92ee6a5", help="the earlier commit (default 92ee6a5)")
    parser.add_argument("--sizes", default="10000,100000", help="steps per document, comma-separated")
    parser.add_argument("--quotes", type=int, default=40_000, help="escaped quotes in the hostile file (80 KB)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds a case may take before it is cut")
    parser.add_argument("--markdown", help="also write the table here")
    args = parser.parse_args(argv)
    header = f"Machine: {machine()}; {datetime.date.today().isoformat()}."
    log(header)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pyparallel-big-inputs-") as scratch:
        before = extract(args.before, Path(scratch) / "before")
        for description, command in cases(Path(scratch), [int(s) for s in args.sizes.split(",")], args.quotes):
            figures = []
            for label, source in ((args.before, before), ("this checkout", REPO)):
                log(f"{description}: {label}…")
                timing = timed(command, source, args.timeout)
                figures.append(timing)
                log(f"  {timing}")
            rows.append((description, figures))
    lines = [header, "", f"| case | before ({args.before}): wall, CPU, exit | after: wall, CPU, exit |", "|---|---|---|"]
    for description, (old, new) in rows:
        lines.append(f"| {description} | {cell(old, args.timeout)} | {cell(new, args.timeout)} |")
    lines.append("")
    lines.append(f"Load average at the end: {os.getloadavg()[0]:.2f}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


def cell(timing: Timing, timeout: float) -> str:
    if timing.code is None:
        return f"> {timeout:.0f} s (cut), CPU {timing.cpu:.1f} s"
    return f"{timing.wall:.1f} s, {timing.cpu:.1f} s, exit {timing.code}"


if __name__ == "__main__":
    sys.exit(main())
