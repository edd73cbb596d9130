"""CPU-bound functions to probe: no arguments, pure Python, a few milliseconds each.

``parallelism-exporter probe --workload myapp.bench:score_batch --workload.path examples``
runs ``score_batch`` sequentially, in threads and in processes, and reports how well it runs
in parallel on this interpreter. Your own workload looks the same: a function that does one
small, representative piece of your CPU-bound work and takes no arguments.
"""

from __future__ import annotations

import math

RECORDS = [(i, f"user-{i}", (i * 7919) % 1000 / 10.0) for i in range(2000)]


def score(record: tuple[int, str, float]) -> float:
    """One record's score: string work, arithmetic and a dict, as request handling does."""
    ident, name, value = record
    features = {"length": len(name), "digits": sum(c.isdigit() for c in name), "value": value}
    return math.sqrt(features["length"] * features["value"] + ident % 17) / (1 + features["digits"])


def score_batch() -> float:
    """Score every record once: the unit of work the probe times."""
    return sum(score(record) for record in RECORDS)
