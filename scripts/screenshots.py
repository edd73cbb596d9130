"""Make the pictures in docs/images from the product itself.

    .venv/bin/python scripts/screenshots.py [--before PYTHON] [--after PYTHON] [--out docs/images]

- ``status-page.png`` (1280 px) and ``status-page-phone.png`` (400 px): a real ``serve`` probes
  an interpreter named ``app`` for a few rounds, is restarted with ``app`` pointing at another
  interpreter (``--history.file`` keeps the rounds: the upgrade shows on the page's history),
  and its ``/api/v1/results`` document is rendered by the status page's own code with one
  step marked as a busy host leaves it (``mark_busy``: "cannot tell", not a failure), then
  photographed in Debian's headless Chromium (selenium and ``/usr/bin/chromedriver``).
- ``probe-plot.png``: ``parallelism-exporter probe --plot`` of the second interpreter.

Defaults: the 3.13 and free-threaded 3.13t that ``scripts/build-python`` puts in ~/.cache.
Needs the test extra (``scripts/install test``): selenium and matplotlib.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the checkout's exporter, as the console script runs it

from exporter.pages import statuspage  # noqa: E402

CACHE = Path.home() / ".cache"
BEFORE, AFTER = CACHE / "python3.13/bin/python3.13", CACHE / "python3.13t/bin/python3.13t"
WIDTHS = {"status-page.png": 1280, "status-page-phone.png": 400}
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# A duty cycle of one half: after each round the daemon waits as long as the round took, and
# the document is read in that pause (the page shows no round running).
CONFIG = {"interval": "5s", "jitter": "0s", "duty_cycle": 0.5,
          "probe": {"workloads": ["pure_python", "sha256"], "modes": ["sequential", "threads", "processes"],
                    "workers": [2], "unit_seconds": 0.3, "wait_quiet": "10s"}}
BUSY_REASON = "other processes used 1.3 cores, leaving 0.7 of 2 cores where the workers needed 2"
ROUND_SECONDS = 600.0  # the longest wait for one round on a loaded 2-core host


def mark_busy(document: dict[str, Any], interpreter: str, workload: str, mode: str) -> dict[str, Any]:
    """The document as it reads when the host left this step too few free cores and no
    accounting could stand in: no speedup, 'cannot tell' with the reason, what was measured
    kept; its latest history point a round without a figure. The workload's line is rebuilt
    from its steps' verdicts."""
    document = copy.deepcopy(document)
    step = next(r for r in document["results"]
                if (r["interpreter"], r["workload"], r["mode"]) == (interpreter, workload, mode))
    step.update(speedup=None, speedup_ci=None, efficiency=None, serial_fraction=None, conclusive=False,
                inconclusive_reason=BUSY_REASON, interference_cores=1.3, idle_speedup=None, idle_speedup_ci=None,
                runnable_workers=None, parallelism=None,
                verdict=f"{mode}: cannot tell — {BUSY_REASON}; {step['cores_used']:.2f} cores busy")
    said = [r["verdict"] for r in document["results"]
            if (r["interpreter"], r["workload"]) == (interpreter, workload) and r["verdict"]]
    for line in document["workload_verdicts"]:
        if (line["interpreter"], line["workload"]) == (interpreter, workload):
            line["verdict"] = f"{workload}: " + "; ".join(said)
    for series in document["history"]["steps"]:
        if (series["interpreter"], series["workload"], series["mode"]) == (interpreter, workload, mode):
            series["points"][-1][1] = None
            series["outcomes"][-1] = "busy"
    return document


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except OSError as exc:
        return getattr(exc, "code", 0), ""


def serve_rounds(python: Path, rounds: int, workdir: Path) -> dict[str, Any]:
    """Run ``serve`` probing ``python`` as ``app`` until it has ``rounds`` more rounds in its
    history file; its last /api/v1/results document."""
    config = dict(CONFIG, interpreters=[{"name": "app", "path": str(python)}])
    config_path = workdir / "exporter.yml"
    config_path.write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    history = workdir / "history.json"
    before = points(history)
    log = open(workdir / "serve.log", "a")
    process = subprocess.Popen([sys.executable, "-m", "exporter", "serve", f"--config.file={config_path}",
                                f"--web.listen-address={url.removeprefix('http://')}",
                                f"--history.file={history}"], cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        until = time.monotonic() + ROUND_SECONDS * rounds
        while points(history) < before + rounds:
            if process.poll() is not None or time.monotonic() > until:
                raise SystemExit(f"screenshots: serve did not finish {rounds} rounds; see {log.name}")
            time.sleep(0.2)
        status, text = get(url + "/api/v1/results")
        if status != 200:
            raise SystemExit(f"screenshots: /api/v1/results answered {status}")
        return json.loads(text)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        log.close()


def points(history: Path) -> int:
    """Whole rounds recorded: the fewest points of any step (each workload's steps get their
    point as that workload finishes)."""
    try:
        return min(len(step["points"]) for step in json.loads(history.read_text())["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def photograph(driver: Any, page: Path, width: int, target: Path) -> None:
    """The whole page at ``width`` CSS pixels: the window is made as tall as the document."""
    driver.set_window_size(width, 900)
    driver.get(page.as_uri())
    inner = driver.execute_script("return window.innerWidth")
    driver.set_window_size(width + (width - inner), 900)  # the window's frame is not page
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width + (width - inner), height + (900 - driver.execute_script(
        "return window.innerHeight")))
    driver.save_screenshot(str(target))


def status_pages(before: Path, after: Path, out: Path, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="screenshots-") as scratch:
        workdir = Path(scratch)
        serve_rounds(before, rounds, workdir)
        document = mark_busy(serve_rounds(after, rounds, workdir), "app", "sha256", "threads")
        page = workdir / "status.html"
        page.write_text(statuspage.render_page(document, "/metrics"))
        driver = browser()
        try:
            for name, width in WIDTHS.items():
                photograph(driver, page, width, out / name)
                print(f"wrote {out / name}")
        finally:
            driver.quit()


def plot(python: Path, out: Path) -> None:
    target = out / "probe-plot.png"
    subprocess.run([sys.executable, "-m", "exporter", "probe", "--python", f"app={python}", "--workload",
                    "pure_python,sha256", "--mode", "sequential,threads,processes", "--plot", str(target)],
                   check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(REPO)))
    print(f"wrote {target}")


def arguments(argv: Iterator[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, default=BEFORE, help=f"the interpreter before (default {BEFORE})")
    parser.add_argument("--after", type=Path, default=AFTER, help=f"the interpreter after (default {AFTER})")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each (default 2)")
    parser.add_argument("--out", type=Path, default=REPO / "docs/images", help="where the PNGs go")
    return parser.parse_args(None if argv is None else list(argv))


def main() -> None:
    args = arguments()
    for python in (args.before, args.after):
        if not os.access(python, os.X_OK):
            raise SystemExit(f"screenshots: {python}: not an executable (scripts/build-python builds it)")
    args.out.mkdir(parents=True, exist_ok=True)
    status_pages(args.before, args.after, args.out, args.rounds)
    plot(args.after, args.out)


if __name__ == "__main__":
    main()
