"""The public surface stays put: every command's flags, the metric names and their labels,
and the keys of ``probe --json``, against tests/testdata/public-surface.json.

A change to the surface is a decision, not a side effect of moving code: when one is meant,
regenerate the file (``python tests/test_public_surface.py > tests/testdata/public-surface.json``)
and say so in the change.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "tests/testdata/public-surface.json"
# A short probe of every mode the daemon and the report use: enough for every key and family.
PROBE = ["probe", "--json", "--workload", "pure_python,sleep", "--mode", "threads,processes,asyncio",
         "--seconds", "0.05", "--repeats", "2", "--max-repeats", "2"]


def key_paths(value: Any, prefix: str = "") -> set[str]:
    """``results[].speedup``-style paths of every key in a JSON value."""
    paths = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            paths |= {path} | key_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            paths |= key_paths(item, f"{prefix}[]")
    return paths


def surface() -> dict[str, Any]:
    """The surface of the code in this checkout, read by running it."""
    command = [sys.executable, "-m", "exporter"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    flags = {}
    for sub in ("probe", "serve", "compare"):
        text = subprocess.run(command + [sub, "--help"], capture_output=True, text=True, env=env, check=True).stdout
        flags[sub] = sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9.-]*)", text)))
    with tempfile.TemporaryDirectory() as scratch:
        textfile = os.path.join(scratch, "probe.prom")
        out = subprocess.run(command + PROBE + ["--textfile", textfile], capture_output=True, text=True, env=env,
                             timeout=300).stdout
        metrics: dict[str, list[str]] = {}
        for line in Path(textfile).read_text().splitlines():
            if line and not line.startswith("#"):
                match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?", line)
                assert match is not None, line
                labels = set(re.findall(r'([a-zA-Z_]\w*)="', match.group(3) or ""))
                metrics[match.group(1)] = sorted(set(metrics.get(match.group(1), [])) | labels)
    return {"flags": flags, "json_keys": sorted(key_paths(json.loads(out))), "metrics": metrics}


@pytest.mark.integration  # runs the command line and a short probe in child processes
def test_flags_metrics_and_json_keys_are_the_recorded_ones():
    recorded, now = json.loads(RECORDED.read_text()), surface()
    for part in ("flags", "json_keys", "metrics"):
        assert now[part] == recorded[part], f"the public {part} changed: regenerate {RECORDED.name} if meant"


if __name__ == "__main__":
    json.dump(surface(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
