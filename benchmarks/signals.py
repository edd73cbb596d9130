"""SIGINT and SIGTERM in the first tenth of a second of ``probe``, ``compare`` and ``serve``.

``python benchmarks/signals.py [--tries 20] [--delays 0.005,0.01,0.03,0.05,0.1] [--markdown OUT.md]``

Each try starts the console script, waits the delay after ``Popen`` returned (the process
exists and has exec'd), sends the signal and reads what the command says. A try is clean when
it exits 128 + the signal's number (``serve`` may also exit 0 on SIGTERM, its ordinary stop),
prints no traceback, and its last line on stderr says it was interrupted (or, for ``serve``
once it runs, that it shuts down); ``probe`` and ``compare`` print that one line and nothing
else. Every cell is tried ``--tries`` times; the table shows the clean tries and what the
others did. ``tests/test_signals.py`` samples this matrix; this script runs all of it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.machine import publish, this_run  # noqa: E402

SCRIPT = Path(sys.executable).parent / "parallelism-exporter"
COMMANDS = {
    "probe": ["probe", "--workload", "sleep", "--repeats", "1"],
    "compare": ["compare", "baseline.json", "candidate.json"],
    "serve": ["serve", "--web.listen-address=127.0.0.1:0"],
}
SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEFAULT_DELAYS = (0.005, 0.01, 0.03, 0.05, 0.1)


def allowed_codes(command: str, sig: signal.Signals) -> set[int]:
    return {128 + sig, 0} if command == "serve" and sig == signal.SIGTERM else {128 + sig}


def verdict(command: str, sig: signal.Signals, code: int, stderr: str) -> str:
    """"clean", or what the try did instead (exit code and the telling line)."""
    lines = stderr.strip().splitlines()
    last = lines[-1] if lines else ""
    said = f"interrupted by {sig.name}" in last or (command == "serve" and "shutting down" in last)
    alone = command == "serve" or len(lines) == 1
    if code in allowed_codes(command, sig) and said and alone and "Traceback" not in stderr:
        return "clean"
    telling = next((line for line in lines if "Error" in line or "Interrupt" in line), last)
    return f"rc {code}: {telling.strip()[:80] or '(nothing on stderr)'}"


def one_try(command: str, sig: signal.Signals, delay: float, workdir: str,
            env: Optional[dict[str, str]] = None) -> tuple[str, float]:
    """The verdict, and how late the signal was sent against the delay asked for (ms)."""
    child = subprocess.Popen([str(SCRIPT), *COMMANDS[command]], cwd=workdir, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, **(env or {})})
    started = time.monotonic()
    try:
        time.sleep(max(0.0, started + delay - time.monotonic()))
        late = (time.monotonic() - started - delay) * 1000
        child.send_signal(sig)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
        child.wait()
    return verdict(command, sig, child.returncode, stderr), late


def run(tries: int, delays: list[float], commands: list[str], env: dict[str, str]) -> list[str]:
    workdir = tempfile.mkdtemp(prefix="pyparallel-signals-")
    rows = ["| command | signal | " + " | ".join(f"{d * 1000:g} ms" for d in delays) + " |",
            "|---|---|" + "---|" * len(delays)]
    others: list[str] = []
    lateness: list[float] = []
    for command in commands:
        for sig in SIGNALS:
            cells = []
            for delay in delays:
                outcomes: Counter[str] = Counter()
                for _ in range(tries):
                    outcome, late = one_try(command, sig, delay, workdir, env)
                    outcomes[outcome] += 1
                    lateness.append(late)
                cells.append(f"{outcomes['clean']}/{tries}")
                others += [f"- {command} {sig.name} at {delay * 1000:g} ms, {n}×: {what}"
                           for what, n in sorted(outcomes.items()) if what != "clean"]
                print(f"{command} {sig.name} {delay}: {dict(outcomes)}", file=sys.stderr)
            rows.append(f"| {command} | {sig.name} | " + " | ".join(cells) + " |")
    lateness.sort()
    return [*rows, "", f"Signals sent late by {lateness[len(lateness) // 2]:.2f} ms (median), "
            f"{lateness[int(0.99 * (len(lateness) - 1))]:.2f} ms (99th percentile).", "",
            *(others or ["Every try was clean."])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--delays", default=",".join(f"{d:g}" for d in DEFAULT_DELAYS))
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="set in the commands' environment (GLIBC_TUNABLES=glibc.malloc.tcache_count=0: serve "
                             "without its restart)")
    parser.add_argument("--markdown", type=Path, help="append the results to this file")
    args = parser.parse_args()
    # Children inherit an ignored SIGINT (a background job of a shell ignores it): the
    # commands must start with the disposition a terminal gives them.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    delays = [float(d) for d in args.delays.split(",")]
    env = dict(item.split("=", 1) for item in args.env)
    flags = "".join(f" --env {item}" for item in args.env) + (f" --commands {args.commands}"
                                                               if args.commands != ",".join(COMMANDS) else "")
    head = [f"## `python benchmarks/signals.py --tries {args.tries} --delays {args.delays}{flags}`", "",
            f"{this_run()} at the start.", ""]
    publish("\n".join([*head, *run(args.tries, delays, args.commands.split(","), env), ""]) + "\n", args.markdown)
    return 0

if __name__ == "__main__":
    sys.exit(main())
