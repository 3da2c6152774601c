"""Model profiles, the global prior, and recruiting weights (Symbolic-MoE §1.5–1.6).

    P_m[k] = Σ over fit items v carrying keyword k of (+1 if m answered v correctly else −1)
    G_m    = Σ_k P_m[k];  shift so that min G = 1 if any G < 0;  g = G^(1/T) / Σ, T = 0.5
    L_m(q) = Σ over the query's mapped keywords k of P_m[k]   (duplicates count twice)
    keep L_m > 0 (or, if none is positive, shift all to L − min L + 1);  w ∝ L_m · g_m

Our extension (`mode="accuracy"`): with every model answering every fit item (n_k items tagged
k), the profile encodes the number right, right_m[k] = (n_k + P_m[k]) / 2, so a model's accuracy
on the fit items of a query's skills K is Σ_k right_m[k] / Σ_k n_k — Laplace-smoothed, or shrunk
toward its global fit accuracy acc_m with s pseudo-items (a Beta prior) so that rare skills do
not decide alone: (Σ_k right_m[k] + s · acc_m) / (Σ_k n_k + s).

Fits from traffic (`impute_profiles`): only the models a query recruited have an outcome on it, so
before L and g are computed each unanswered item is filled with the model's expected ±1; with
every item answered this is the reference's profile unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from routers.fitted import top_k

PRIOR_TEMPERATURE = 0.5

Profiles = dict[str, dict[str, int]]


def build_profiles(
    item_keywords: Mapping[str, Sequence[str]], correctness: Mapping[str, Mapping[str, bool]], models: Sequence[str]
) -> Profiles:
    """`item_keywords[item]` → keywords; `correctness[model][item]` → right or wrong.

    Every model gets every keyword of the fit set (possibly 0), as in the reference."""
    vocab = sorted({k for kws in item_keywords.values() for k in kws})
    profiles: Profiles = {m: dict.fromkeys(vocab, 0) for m in models}
    for item, kws in item_keywords.items():
        for m in models:
            if item not in correctness.get(m, {}):
                continue
            delta = 1 if correctness[m][item] else -1
            for k in kws:
                profiles[m][k] += delta
    return profiles


def global_prior(profiles: Mapping[str, Mapping[str, float]], temperature: float = PRIOR_TEMPERATURE) -> dict[str, float]:
    totals = {m: float(sum(p.values())) for m, p in profiles.items()}
    low = min(totals.values())
    if low < 0:
        totals = {m: g - low + 1 for m, g in totals.items()}
    powered = {m: g ** (1.0 / temperature) for m, g in totals.items()}
    z = sum(powered.values())
    if z == 0:
        return {m: 1.0 / len(powered) for m in powered}
    return {m: v / z for m, v in powered.items()}


def local_scores(profiles: Mapping[str, Mapping[str, float]], mapped_keywords: Sequence[str]) -> dict[str, float]:
    return {m: float(sum(p.get(k, 0) for k in mapped_keywords)) for m, p in profiles.items()}


def recruit_weights(local: Mapping[str, float], prior: Mapping[str, float]) -> dict[str, float]:
    """Normalised sampling weights w ∝ L·g over the candidate models."""
    positive = {m: s for m, s in local.items() if s > 0}
    if not positive:
        low = min(local.values())
        positive = {m: s - low + 1 for m, s in local.items()}
    raw = {m: s * prior.get(m, 0.0) for m, s in positive.items()}
    z = sum(raw.values())
    if z <= 0:
        return {m: 1.0 / len(raw) for m in raw}
    return {m: v / z for m, v in raw.items()}


def draw(
    weights: Mapping[str, float], k: int, rng: random.Random | None = None, *, mode: str = "sample", backup: Sequence[str] = ()
) -> list[str]:
    """`sample`: k i.i.d. draws with replacement with `rng` (the reference, `random.choices`);
    `topk`: the k highest weights, distinct, ties broken by model order, filled up from
    `backup` (models ranked by L·g) when fewer than k candidates scored positive."""
    if mode == "topk":
        chosen = top_k(weights, k)
        chosen += [m for m in backup if m not in chosen][: k - len(chosen)]
        return chosen
    if rng is None:
        raise ValueError("sampling recruits needs a seeded rng")
    models = list(weights)
    return rng.choices(models, weights=[weights[m] for m in models], k=k)


def model_keyword_counts(
    item_keywords: Mapping[str, Sequence[str]], correctness: Mapping[str, Mapping[str, bool]], models: Sequence[str]
) -> dict[str, dict[str, int]]:
    """n_m[k]: how many fit items carrying keyword k model m has an outcome for (so that its
    right count (n_m[k] + P_m[k]) / 2 does not count an unanswered item as half right)."""
    out: dict[str, dict[str, int]] = {m: {} for m in models}
    for item, kws in item_keywords.items():
        for m in models:
            if item in correctness.get(m, {}):
                for k in kws:
                    out[m][k] = out[m].get(k, 0) + 1
    return out


def keyword_counts(item_keywords: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """n_k: how many fit items carry keyword k."""
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


IMPUTE_STRENGTH = 10.0  # pseudo-items of the Beta prior an imputed accuracy is shrunk with


def impute_profiles(
    profiles: Profiles, model_counts: Mapping[str, Mapping[str, int]], counts: Mapping[str, int],
    strength: float = IMPUTE_STRENGTH,
) -> dict[str, dict[str, float]]:
    """The profiles every model would have had, in expectation, had it answered every fit item.

    The ±1 sum P_m[k] assumes every model answered every item carrying k (the offline fit); from
    traffic a model has outcomes on the items it was called for only, so its sum grows with how
    often it was recruited, not with how good it is. Each unanswered item of k is filled with its
    expected ±1, 2·a − 1, where a is m's accuracy on k shrunk with `strength` pseudo-items toward
    m's overall accuracy, itself shrunk the same way toward the pool's pooled accuracy (counts are
    of answered (item, keyword) pairs):

        a_m   = (right_m + s·ā) / (n_m + s)             ā: over every model's answered pairs
        a_mk  = (right_mk + s·a_m) / (n_mk + s)         right_mk = (n_mk + P_m[k]) / 2
        P̂_m[k] = P_m[k] + (n_k − n_mk)·(2·a_mk − 1)

    With every item answered (n_mk = n_k) P̂ = P exactly: an offline fit is unchanged."""
    right = {m: {k: (model_counts.get(m, {}).get(k, 0) + v) / 2 for k, v in p.items()} for m, p in profiles.items()}
    answered = {m: sum(model_counts.get(m, {}).values()) for m in profiles}
    total_right = {m: sum(r.values()) for m, r in right.items()}
    pooled = sum(total_right.values()) / sum(answered.values()) if sum(answered.values()) else 0.5
    overall = {m: (total_right[m] + strength * pooled) / (answered[m] + strength) if answered[m] + strength > 0 else pooled
               for m in profiles}
    out: dict[str, dict[str, float]] = {}
    for m, p in profiles.items():
        mc = model_counts.get(m, {})
        row = {}
        for k, v in p.items():
            n_mk, missing = mc.get(k, 0), counts.get(k, 0) - mc.get(k, 0)
            if missing <= 0:
                row[k] = float(v)
                continue
            a_mk = (right[m][k] + strength * overall[m]) / (n_mk + strength) if n_mk + strength > 0 else overall[m]
            row[k] = v + missing * (2 * a_mk - 1)
        out[m] = row
    return out
