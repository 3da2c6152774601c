"""The category → expert map under a budget, solved exactly (CoE step 2).

    maximise   Σ_c f_c · a[c, e] · x[c, e]
    subject to Σ_e x[c, e] = 1                  for every category c   (one expert per category)
               Σ_c Σ_e f_c · cost_e · x[c, e] ≤ B                     (average cost per query)
               x binary

f_c is the share of queries in category c, a[c, e] the expert's accuracy on c, cost_e its cost
per query (USD, or active parameters as in the paper's budget). scipy's `milp` (HiGHS) solves it
exactly; `brute_force_assignment` checks it in tests.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp


class InfeasibleBudget(ValueError):
    """Raised when even the cheapest expert for every category exceeds the budget."""


@dataclass(frozen=True)
class Assignment:
    mapping: dict[str, str]
    expected_accuracy: float
    expected_cost: float


def solve_assignment(
    accuracy: Mapping[str, Mapping[str, float]],
    frequency: Mapping[str, float],
    cost: Mapping[str, float],
    budget: float | None = None,
) -> Assignment:
    cats = list(accuracy)
    experts = list(cost)
    n_c, n_e = len(cats), len(experts)
    total = sum(frequency[c] for c in cats) or 1.0
    f = np.array([frequency[c] / total for c in cats])
    a = np.array([[accuracy[c].get(e, 0.0) for e in experts] for c in cats])
    k = np.array([cost[e] for e in experts])
    # Variables x[c, e] flattened row-major; milp minimises, so negate the objective.
    obj = -(f[:, None] * a).ravel()
    one_per_cat = np.zeros((n_c, n_c * n_e))
    for i in range(n_c):
        one_per_cat[i, i * n_e : (i + 1) * n_e] = 1.0
    constraints = [LinearConstraint(one_per_cat, 1.0, 1.0)]
    if budget is not None:
        min_cost = float(f @ np.full(n_c, k.min()))
        if min_cost > budget + 1e-12:
            raise InfeasibleBudget(f"budget {budget:g} is below the cheapest possible average cost {min_cost:g}")
        constraints.append(LinearConstraint((f[:, None] * k[None, :]).ravel()[None, :], -np.inf, budget))
    res = milp(obj, constraints=constraints, integrality=np.ones(n_c * n_e), bounds=Bounds(0, 1))
    if not res.success:  # pragma: no cover - feasible by construction
        raise InfeasibleBudget(f"no assignment within budget {budget}: {res.message}")
    x = np.round(res.x).reshape(n_c, n_e)
    mapping = {cats[i]: experts[int(np.argmax(x[i]))] for i in range(n_c)}
    return _evaluate(mapping, f, cats, a, k, experts)


def _evaluate(mapping: dict[str, str], f: np.ndarray, cats: list[str], a: np.ndarray, k: np.ndarray, experts: list[str]) -> Assignment:
    idx = {e: j for j, e in enumerate(experts)}
    acc = float(sum(f[i] * a[i, idx[mapping[c]]] for i, c in enumerate(cats)))
    cst = float(sum(f[i] * k[idx[mapping[c]]] for i, c in enumerate(cats)))
    return Assignment(mapping, acc, cst)


def brute_force_assignment(
    accuracy: Mapping[str, Mapping[str, float]], frequency: Mapping[str, float], cost: Mapping[str, float], budget: float | None = None
) -> Assignment:
    """Every mapping enumerated (small instances only): the reference for tests."""
    cats, experts = list(accuracy), list(cost)
    total = sum(frequency[c] for c in cats) or 1.0
    f = np.array([frequency[c] / total for c in cats])
    a = np.array([[accuracy[c].get(e, 0.0) for e in experts] for c in cats])
    k = np.array([cost[e] for e in experts])
    best: Assignment | None = None
    for combo in itertools.product(experts, repeat=len(cats)):
        cand = _evaluate(dict(zip(cats, combo, strict=True)), f, cats, a, k, experts)
        if budget is not None and cand.expected_cost > budget + 1e-9:
            continue
        if best is None or cand.expected_accuracy > best.expected_accuracy + 1e-12:
            best = cand
    if best is None:
        raise InfeasibleBudget(f"no assignment within budget {budget}")
    return best


def per_category_accuracy(
    correct: Mapping[str, Mapping[str, float]], categories: Mapping[str, str], experts: Sequence[str]
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """(accuracy[category][expert], frequency[category]) from per-question correctness (or partial scores)."""
    by_cat: dict[str, list[str]] = {}
    for qid, cat in categories.items():
        by_cat.setdefault(cat, []).append(qid)
    acc = {
        c: {e: (sum(correct[e].get(q, False) for q in qids) / len(qids)) for e in experts}
        for c, qids in by_cat.items()
    }
    return acc, {c: float(len(q)) for c, q in by_cat.items()}
