"""Accuracy with confidence intervals, and the paired test between two routers."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import binomtest


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion."""
    if n == 0:
        return (0.0, 0.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict[str, float | int]:
    """Exact McNemar test on paired outcomes (same questions): two-sided p-value.

    Only the discordant pairs carry information: `a_only` questions A got right and B wrong,
    `b_only` the reverse; under H0 each discordant pair is a fair coin."""
    if len(a) != len(b):
        raise ValueError("paired outcomes must have the same length")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(a_only, n, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": p}
