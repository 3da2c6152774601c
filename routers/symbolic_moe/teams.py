"""Extensions of Symbolic-MoE's skill profiles: shrunk per-skill accuracy and team profiles.

The paper's profile P_m[k] = Σ ±1 over the fit items tagged k. With every model answering every
fit item (n_k items tagged k), it encodes the number right: right_m[k] = (n_k + P_m[k]) / 2.

* Shrunk skill accuracy (our extension): for a query with mapped keywords K,
      p_m(K) = (Σ_k right_m[k] + s · acc_m) / (Σ_k n_k + s)
  i.e. the model's accuracy on the fit items of the query's skills, shrunk toward its global fit
  accuracy acc_m with `s` pseudo-items (a Beta prior), so rare skills do not decide alone.
* Team profiles (our extension): the same ±1 arithmetic applied to a *team* of k recruits, +1
  when the team's majority vote (ties to the first member, members in a fixed order) is right.
  Recruiting then picks the team with the highest shrunk skill accuracy — the recruits that
  answer the query's skills best *together*, which accounts for correlated errors that
  recruiting by single-model scores ignores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np

Team = tuple[str, ...]


def majority(answers: Sequence[str | None]) -> str | None:
    """Plain majority vote; ties go to the answer given first; missing answers do not vote
    (the same rule as `routers.aggregation.vote`)."""
    tally: dict[str, int] = {}
    for a in answers:
        if a is not None:
            tally[a] = tally.get(a, 0) + 1
    if not tally:
        return None
    best = max(tally.values())
    return next(a for a in tally if tally[a] == best)  # dicts keep first-seen order


def keyword_counts(item_keywords: Mapping[str, Sequence[str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for kws in item_keywords.values():
        for k in kws:
            out[k] = out.get(k, 0) + 1
    return out


def shrunk_accuracy(right: float, n: float, global_acc: float, strength: float) -> float:
    """(right + s·acc) / (n + s); with s = 0 and n = 0 the global accuracy."""
    if n + strength <= 0:
        return global_acc
    return (right + strength * global_acc) / (n + strength)


def candidate_teams(models: Sequence[str], k: int, order: Sequence[str]) -> list[Team]:
    """All k-subsets of `models`, each listed in `order` (strongest first: that member breaks ties)."""
    rank = {m: i for i, m in enumerate(order)}
    ranked = sorted(models, key=lambda m: rank.get(m, len(rank)))
    return list(combinations(ranked, k))


def team_profiles(
    item_keywords: Mapping[str, Sequence[str]],
    answers: Mapping[str, Mapping[str, str | None]],
    gold: Mapping[str, str | None],
    teams: Sequence[Team],
    vocabulary: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """(P, overall): P[t, j] = Σ ±1 of team t's vote over fit items tagged vocabulary[j];
    overall[t] = team t's vote accuracy over all fit items with keywords."""
    col = {k: j for j, k in enumerate(vocabulary)}
    items = [i for i, kws in item_keywords.items() if kws]
    # Answers as integer codes (−1: no answer), so each team's vote is a few array operations.
    letters: dict[str | None, int] = {None: -1}
    members = sorted({m for t in teams for m in t})
    codes = {m: np.array([letters.setdefault(answers.get(m, {}).get(i), len(letters)) for i in items]) for m in members}
    gold_codes = np.array([letters.get(gold.get(i), -2) if gold.get(i) is not None else -2 for i in items])
    incidence = np.zeros((len(items), len(vocabulary)), dtype=np.int64)  # item × keyword, duplicates count
    for r, i in enumerate(items):
        for k in item_keywords[i]:
            incidence[r, col[k]] += 1
    prof = np.zeros((len(teams), len(vocabulary)), dtype=np.int64)
    right = np.zeros(len(teams), dtype=np.int64)
    for t, team in enumerate(teams):
        ok = team_vote_correct(np.stack([codes[m] for m in team]), gold_codes)
        right[t] = ok.sum()
        prof[t] = np.where(ok, 1, -1) @ incidence
    return prof, right / max(len(items), 1)


def team_vote_correct(codes: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Per item (column), whether the members' (rows, in order) plain vote is right: the answer
    with most votes, ties to the earliest member, −1 (no answer) never votes — `majority` on arrays."""
    valid = codes >= 0
    agree = ((codes[:, None, :] == codes[None, :, :]) & valid[None, :, :]).sum(axis=1) * valid  # votes for member j's answer
    winner = codes[agree.argmax(axis=0), np.arange(codes.shape[1])]
    return (winner == gold) & (agree.max(axis=0) > 0)


def best_team(
    prof: np.ndarray, overall: np.ndarray, counts: np.ndarray, columns: Sequence[int], strength: float,
    allowed: np.ndarray | None = None,
) -> tuple[int, np.ndarray]:
    """Index of the team with the highest shrunk vote accuracy on the query's keyword columns
    (duplicates count twice, as in the paper's local score), and all teams' scores; `allowed`
    (a boolean mask) restricts the choice, e.g. to teams drawn from a per-query shortlist."""
    cols = list(columns)
    n = float(counts[cols].sum()) if cols else 0.0
    right = (n + prof[:, cols].sum(axis=1)) / 2.0 if cols else np.zeros(len(overall))
    scores = (right + strength * overall) / (n + strength) if n + strength > 0 else overall.astype(float)
    pick = np.where(allowed, scores, -np.inf) if allowed is not None and allowed.any() else scores
    return int(np.argmax(pick)), scores  # argmax: the first (strongest-ordered) team on ties
