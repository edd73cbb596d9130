#!/usr/bin/env python3
"""``parallelism-exporter`` under tracemalloc, for the soak's leak check (``soak.py --tracemalloc DIR``).

Starts tracemalloc in this process only (probe children are not traced: they are started
with their own interpreter and environment), dumps a snapshot into
``$PYPARALLEL_SOAK_SNAPSHOT_DIR`` every ``$PYPARALLEL_SOAK_SNAPSHOT_EVERY`` seconds, then
runs the exporter's own entry point with the arguments it was given.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

FRAMES = 12


def dump_snapshots(directory: Path, every: float) -> None:
    number = 0
    while True:
        time.sleep(every)
        number += 1
        snapshot = tracemalloc.take_snapshot()
        snapshot.dump(str(directory / f"snapshot-{number:03d}.pickle"))


def main() -> None:
    directory = Path(os.environ["PYPARALLEL_SOAK_SNAPSHOT_DIR"])
    every = float(os.environ.get("PYPARALLEL_SOAK_SNAPSHOT_EVERY", "60"))
    tracemalloc.start(FRAMES)
    threading.Thread(target=dump_snapshots, args=(directory, every), daemon=True,
                     name="tracemalloc-snapshots").start()
    sys.argv = ["parallelism-exporter", *sys.argv[1:]]
    from exporter.entry import main as exporter_main
    exporter_main()


if __name__ == "__main__":
    main()
