"""The one fit/evaluation split: seeded, by question id.

    fit_ids, eval_ids = split_fit_eval(ids, fit_fraction=0.3, seed=0)

Ids are ordered by SHA-256 of ``"{seed}:{id}"`` and the first ``round(n * fit_fraction)`` are the
fit side, so the same ids always land on the same side, whatever their order in the file, and
the two sides never share an id. Benchmarks, `profile build`, MoT and Router-R1 training use it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def split_fit_eval(ids: Iterable[str], fit_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(fit ids, evaluation ids): a seeded split by question id."""
    if not 0.0 <= fit_fraction <= 1.0:
        raise ValueError(f"fit_fraction must be within [0, 1], got {fit_fraction}")
    order = sorted(dict.fromkeys(ids), key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest())
    n_fit = int(round(len(order) * fit_fraction))
    return set(order[:n_fit]), set(order[n_fit:])
