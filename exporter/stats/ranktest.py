"""The one-sided Mann–Whitney U test ``compare`` runs on two steps' pair speedups.

Pure arithmetic, standard library only: the exact distribution of U for small samples
without ties (the Gaussian binomial's coefficients, built without recursion), the normal
approximation with tie and continuity corrections otherwise, and U from midranks in
O((m+n) log(m+n)) — a probe may hold up to 1 000 pairs. Cross-checked against SciPy in CI.
"""

from __future__ import annotations

import collections
import math
import statistics
from functools import lru_cache
from typing import Sequence

EXACT_TEST_MAX_PAIRS = 2500  # m·n up to this: exact U distribution; beyond, the normal approximation

@lru_cache(maxsize=64)
def _u_counts(m: int, n: int) -> tuple[int, ...]:
    """How many orderings of m x's and n y's give U = 0, 1, …, m·n (no ties).

    They are the coefficients of the Gaussian binomial [m+n choose m] in q, built as the
    product of (1 - q^(n+i)) / (1 - q^i) for i = 1..m: each factor multiplies by a
    polynomial and divides exactly, with no recursion (m·n is bounded by the exact test's limit).
    """
    counts = [1] + [0] * (m * n)
    for i in range(1, m + 1):
        for u in range(m * n, n + i - 1, -1):  # times (1 - q^(n+i))
            counts[u] -= counts[u - n - i]
        for u in range(i, m * n + 1):  # divided by (1 - q^i): running sums with stride i
            counts[u] += counts[u - i]
    return tuple(counts)


def _u_statistic(x: Sequence[float], y: Sequence[float]) -> float:
    """Mann–Whitney U of x over y (ties count one half), from midranks: O((m+n) log(m+n))."""
    pooled = sorted([(v, 0) for v in x] + [(v, 1) for v in y])
    rank_sum, i = 0.0, 0
    while i < len(pooled):
        j = i
        while j < len(pooled) and pooled[j][0] == pooled[i][0]:
            j += 1
        midrank = (i + 1 + j) / 2
        rank_sum += midrank * sum(1 for k in range(i, j) if pooled[k][1] == 0)
        i = j
    return rank_sum - len(x) * (len(x) + 1) / 2


def mann_whitney_less(x: Sequence[float], y: Sequence[float]) -> float:
    """One-sided p-value of the Mann–Whitney U test for "x tends to be smaller than y".

    Exact for small samples without ties; otherwise the normal approximation with the tie
    correction and a continuity correction.
    """
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        raise ValueError("both samples need at least one value")
    u = _u_statistic(x, y)
    pooled = list(x) + list(y)
    tie_counts = collections.Counter(pooled).values()
    if len(tie_counts) == m + n and m * n <= EXACT_TEST_MAX_PAIRS:
        counts = _u_counts(m, n)
        return sum(counts[: int(u) + 1]) / math.comb(m + n, m)
    total = m + n
    ties = sum(t ** 3 - t for t in tie_counts)
    variance = m * n / 12 * ((total + 1) - ties / (total * (total - 1)))
    if variance <= 0:
        return 1.0  # every value equal: no evidence of any difference
    z = (u - m * n / 2 + 0.5) / math.sqrt(variance)
    return statistics.NormalDist().cdf(z)
