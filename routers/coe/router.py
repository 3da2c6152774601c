"""Composition of Experts (CoE; Jain et al., arXiv 2412.01868): a category classifier, then a
category → expert map chosen under a budget, with an uncertainty fallback to a generalist.

Method per `shared/reference/symbolic-moe-coe-routellm.md` §2. Confirmed by the paper's abstract:
two-step routing (category router, then category-to-expert map) under a budget on average active
parameters. Our design where the paper could not be read (§2.7): MiniLM embeddings + a kNN or
logistic-regression head picked on validation; expert quality per category = accuracy on fit
data (the paper uses LLM-judge win rates); the map solved exactly as an integer program; the
fallback fires when the classifier's max probability is below a threshold calibrated on held-out
fit data.

Options:
  budget          average cost per query (None = unconstrained); in USD, or in billions of
                  active parameters with budget_kind="params" (the paper's formulation)
  budget_kind     "params" (the paper's), "cost", or "auto" (default): params when every pool
                  expert has a parameter count, else cost (API models of undisclosed size)
  fallback        the generalist expert (default: the best overall fit accuracy)
  threshold       a fixed confidence threshold, or None to calibrate
  calibrate       "accuracy" (threshold maximising held-out accuracy) or "rate" (fallback share
                  closest to target_fallback_rate)
  labels_path     JSONL of {"text", "label"} to train the classifier on instead of the
                  questions' own categories (any user taxonomy)
  decision        "argmax" (the predicted category's mapped expert, gated by the threshold) or
                  "expected" (the map's expert with the best expected accuracy, no gate; under a
                  budget, minus a cost weight calibrated on held-out fit questions)

The budget holds end to end: the map is solved under it, and the threshold (argmax) or the cost
weight (expected) is calibrated so that the held-out average cost, fallback calls included, stays
within it with 95% confidence (the upper bound of the mean; the map is re-solved under a tighter
budget when its held-out cost alone would exceed it; `expected_cost_held_out`, `map_budget` in
the fit summary). With `labels_path`, the fit questions'
categories are the classifier's labels for them, so the map is over the user's taxonomy.

The scoring function is `score_category`; `FittedRouter` turns its scores into plans.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experts.errors import ConfigError
from routers.coe.assignment import InfeasibleBudget, per_category_accuracy, solve_assignment
from routers.coe.classifier import CategoryClassifier
from routers.embeddings import shared_embedder
from routers.fitted import ExpertScores, FittedRouter
from routers.types import FIT_EMBED_PHASE, FitData, Query, RouterContext, RoutingError


def load_labelled(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read labelled prompts ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            texts.append(str(d["text"]))
            labels.append(str(d["label"]))
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{path}: line {n}: expected a JSON object with 'text' and 'label'") from None
    if len(set(labels)) < 2:
        raise ConfigError(f"{path}: need at least two different labels")
    return texts, labels


class CoERouter(FittedRouter[ExpertScores]):
    name = "coe"
    description = "category classifier, then the best expert per category under a budget (CoE)"
    fit_hint = "run `orchestrator profile build --router coe` or `orchestrator bench`"
    artefact_kind = "coe-router"
    cold_start = True  # learns from traffic: routes on a uniform prior until its first fit

    def __init__(
        self,
        ctx: RouterContext,
        *,
        budget: float | None = None,
        budget_kind: str = "auto",
        fallback: str | None = None,
        threshold: float | None = None,
        calibrate: str = "accuracy",
        target_fallback_rate: float = 0.1,
        calibration_fraction: float = 0.25,
        labels_path: str | None = None,
        decision: str = "argmax",
        **options: Any,
    ) -> None:
        super().__init__(ctx, **options)
        if budget_kind not in ("auto", "params", "cost"):
            raise RoutingError(f"router 'coe': budget_kind must be 'auto', 'params' or 'cost', got {budget_kind!r}")
        if budget_kind == "auto":
            budget_kind = "params" if all(ctx.registry.spec(e).params_b is not None for e in self.pool) else "cost"
        if calibrate not in ("accuracy", "rate"):
            raise RoutingError(f"router 'coe': calibrate must be 'accuracy' or 'rate', got {calibrate!r}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise RoutingError(f"router 'coe': threshold must be within [0, 1], got {threshold}")
        if decision not in ("argmax", "expected"):
            raise RoutingError(f"router 'coe': decision must be 'argmax' or 'expected', got {decision!r}")
        self.decision = decision
        self.category_accuracy: dict[str, dict[str, float]] = {}
        self.budget, self.budget_kind = budget, budget_kind
        self.fallback = ctx.registry.resolve(fallback) if fallback else None
        self.threshold = threshold
        self.calibrate, self.target_fallback_rate = calibrate, target_fallback_rate
        self.calibration_fraction = calibration_fraction
        self.labels_path = labels_path
        self.classifier: CategoryClassifier | None = None
        self.mapping: dict[str, str] = {}
        self.costs: dict[str, float] = {}  # per-query cost of each expert (budget units), from the fit
        self.cost_weight = 0.0  # decision="expected": accuracy traded per unit of cost to meet the budget
        self.inner_budget: float | None = None  # argmax: the budget the map was finally solved under

    @property
    def fitted(self) -> bool:
        return self.classifier is not None

    # ------------------------------------------------------------------ costs
    def expert_costs(self, data: FitData) -> dict[str, float]:
        """Per-query cost of each expert: active parameters (B), or mean USD on the fit data (the
        logged cost of each output when the data has one, else its price × estimated tokens)."""
        out = {}
        for e in self.pool:
            spec = self.ctx.registry.spec(e)
            if self.budget_kind == "params":
                if spec.params_b is None:
                    raise RoutingError(f"router 'coe': expert {e!r} has no params_b; set it or use budget_kind=cost")
                out[e] = spec.params_b
            else:
                qs = {q.question_id: q for q in data.questions}
                costs = [
                    o.cost_usd if o.cost_usd is not None
                    else spec.price_per_mtok.cost(len(qs[qid].prompt or qs[qid].text) // 4, len(o.response) // 4)
                    for qid, o in data.outcomes.get(e, {}).items() if qid in qs
                ]
                out[e] = float(np.mean(costs)) if costs else 0.0
        return out

    # ------------------------------------------------------------------ fitting
    async def fit(self, data: FitData) -> dict[str, Any]:
        qs = [q for q in data.questions if q.question_id and q.category]
        if len(qs) < 20:
            raise RoutingError("router 'coe': needs at least 20 categorised fit questions")
        rng = np.random.default_rng(self.ctx.seed)
        order = rng.permutation(len(qs))
        n_cal = int(len(qs) * self.calibration_fraction)
        cal = [qs[i] for i in order[:n_cal]]
        train = [qs[i] for i in order[n_cal:]]
        emb = shared_embedder(self.ctx.services)

        # Step 1: the classifier (on the user's labelled set, or on the fit questions' categories).
        if self.labels_path:
            texts, labels = load_labelled(Path(self.labels_path))
        else:
            texts, labels = [q.text for q in train], [q.category or "" for q in train]
        self.classifier = CategoryClassifier().fit(await emb.embed(texts, self.ctx.progress_of(FIT_EMBED_PHASE)), labels, seed=self.ctx.seed)
        # With the user's own taxonomy the map must be over its labels: a fit question's category
        # is then the label the classifier gives it (the dataset's categories would match no label,
        # and every query would fall back).
        if self.labels_path:
            train_cats, _ = self.classifier.predict(await emb.embed([q.text for q in train]))
            category_of = {q.question_id: c for q, c in zip(train, train_cats, strict=True)}
        else:
            category_of = {q.question_id: q.category for q in train}

        # Step 2: the category → expert map under the budget, exact.
        # An outcome's quality: right/wrong, or its partial score (F1, pass rate) as it is.
        correct = {e: {qid: o.quality for qid, o in data.outcomes.get(e, {}).items()} for e in self.pool}
        acc, freq = per_category_accuracy(correct, category_of, self.pool)
        costs = self.costs = self.expert_costs(data)
        try:
            solution = solve_assignment(acc, freq, costs, self.budget)
        except InfeasibleBudget as e:
            raise RoutingError(f"router 'coe': {e}") from None
        self.mapping = solution.mapping
        self.category_accuracy = acc
        overall = {e: float(np.mean([correct[e].get(q.question_id, False) for q in train])) for e in self.pool}
        if self.fallback is None:
            self.fallback = max(self.pool, key=lambda e: (overall[e], -self.pool.index(e)))

        # Step 3, on held-out fit questions: the uncertainty threshold (argmax) or the cost weight
        # (expected), chosen so that the average cost, fallback included, stays within the budget.
        probs = self.classifier.predict_proba(await emb.embed([q.text for q in cal])) if cal else np.zeros((0, 0))
        cats, conf = self.classifier.top_category(probs) if cal else ([], np.array([]))
        if self.budget is not None and self.decision == "argmax" and cal:
            solution = self._tighten_map(solution, acc, freq, cats)
        if self.decision == "expected":
            self.cost_weight = self._calibrate_cost_weight(cal, probs, correct)
        if self.threshold is None:
            self.threshold = self._calibrate(cal, cats, conf, correct)
        held_out_cost = self._held_out_cost(cal, cats, conf, probs)

        held_out_cls = float(np.mean([c == q.category for c, q in zip(cats, cal, strict=True)])) if cal else None
        self.fit_info = {
            "classifier": self.classifier.chosen,
            "classifier_validation": self.classifier.validation,
            "classifier_accuracy_held_out": held_out_cls,
            "mapping": self.mapping,
            "budget": self.budget,
            "budget_kind": self.budget_kind,
            "expected_fit_accuracy": round(solution.expected_accuracy, 4),
            "expected_cost": round(solution.expected_cost, 6),
            "fallback": self.fallback,
            "threshold": round(float(self.threshold), 4),
            "calibration": self.calibrate,
            "fallback_rate_held_out": float(np.mean(conf < self.threshold)) if len(conf) else None,
            "decision": self.decision,
            **({"cost_weight": self.cost_weight} if self.decision == "expected" else {}),
            "expected_cost_held_out": None if held_out_cost is None else round(held_out_cost, 6),
            **({"map_budget": round(self.inner_budget, 4)} if self.inner_budget is not None else {}),
        }
        await self.save()
        return self.fit_info

    def _calibrate(self, cal: list[Query], cats: list[str], conf: np.ndarray, correct: dict[str, dict[str, float]]) -> float:
        if not cal:
            return 0.0
        candidates = np.unique(np.concatenate([[0.0], conf, [1.01]]))
        assert self.fallback is not None
        routed_cost = np.array([self.costs.get(self.mapping.get(c, self.fallback), 0.0) for c in cats])
        fb_cost = self.costs.get(self.fallback, 0.0)

        def within_budget(t: float) -> bool:  # the average cost with the fallback's share counted
            return self._fits_budget(np.where(conf < t, fb_cost, routed_cost))

        feasible = [float(t) for t in candidates if within_budget(float(t))]
        if not feasible:  # even never falling back exceeds it on these questions: the cheapest
            return float(min(candidates, key=lambda t: float(np.mean(np.where(conf < t, fb_cost, routed_cost)))))
        if self.calibrate == "rate":
            return min(feasible, key=lambda t: (abs(float(np.mean(conf < t)) - self.target_fallback_rate), t))
        routed = np.array([correct[self.mapping.get(c, self.fallback)].get(q.question_id, False) for c, q in zip(cats, cal, strict=True)])
        fb = np.array([correct[self.fallback].get(q.question_id, False) for q in cal])
        best_t, best_acc = feasible[0], -1.0
        for t in feasible:
            acc = float(np.mean(np.where(conf < t, fb, routed)))
            if acc > best_acc + 1e-12:
                best_t, best_acc = t, acc
        return best_t

    def _fits_budget(self, costs: np.ndarray) -> bool:
        """Held-out per-query costs within the budget: their mean's upper 95% bound (normal
        approximation), so that the budget also holds on questions the fit never saw."""
        if self.budget is None:
            return True
        n = len(costs)
        if n == 0:
            return True
        half = 1.959964 * float(np.std(costs, ddof=1)) / np.sqrt(n) if n > 1 else 0.0
        return float(np.mean(costs)) + half <= self.budget + 1e-12

    def _tighten_map(self, solution: Any, acc: dict[str, dict[str, float]], freq: dict[str, float], cats: list[str]) -> Any:
        """Re-solve the map under a smaller budget while its held-out cost (the classifier's
        predicted categories, not the true ones) would exceed the budget."""
        assert self.budget is not None
        inner = self.budget
        for _ in range(30):
            routed = np.array([self.costs.get(solution.mapping.get(c, self.fallback or ""), 0.0) for c in cats])
            if self._fits_budget(routed):
                break
            inner *= 0.97
            try:
                solution = solve_assignment(acc, freq, self.costs, inner)
            except InfeasibleBudget:
                break
            self.mapping = solution.mapping
        self.inner_budget = inner
        return solution

    def _expected_choice(self, probs: np.ndarray, cost_weight: float) -> list[str]:
        """`decision="expected"`: per row, the candidate with the best Σ_c p(c)·acc[c][e] − w·cost(e)."""
        assert self.classifier is not None
        labels = self.classifier.labels
        candidates = [e for e in dict.fromkeys([*self.mapping.values(), self.fallback]) if e is not None]
        acc = np.array([[self.category_accuracy.get(c, {}).get(e, 0.0) for e in candidates] for c in labels])
        cost = np.array([self.costs.get(e, 0.0) for e in candidates])
        utility = probs @ acc - cost_weight * cost
        return [candidates[i] for i in utility.argmax(axis=1)]

    def _calibrate_cost_weight(self, cal: list[Query], probs: np.ndarray, correct: dict[str, dict[str, float]]) -> float:
        """The smallest cost weight whose choices keep the held-out average cost within the budget."""
        if self.budget is None or not cal:
            return 0.0
        top = max(self.costs.values()) or 1.0
        for w in [0.0, *(float(x) / top for x in np.geomspace(1e-3, 1e3, 61))]:
            chosen = self._expected_choice(probs, w)
            if self._fits_budget(np.array([self.costs.get(e, 0.0) for e in chosen])):
                return w
        return float(1e3 / top)

    def _held_out_cost(self, cal: list[Query], cats: list[str], conf: np.ndarray, probs: np.ndarray) -> float | None:
        """The average cost per held-out fit question of the fitted router, fallback included."""
        if not cal:
            return None
        if self.decision == "expected":
            chosen = self._expected_choice(probs, self.cost_weight)
        else:
            chosen = [self.fallback if (self.threshold is not None and p < self.threshold) or c not in self.mapping else self.mapping[c]
                      for c, p in zip(cats, conf, strict=True)]
        return float(np.mean([self.costs.get(e, 0.0) for e in chosen if e is not None]))

    # ------------------------------------------------------------------ persistence
    def dump_state(self) -> bytes:
        assert self.classifier is not None
        meta = {"pool": self.pool, "mapping": self.mapping, "fallback": self.fallback, "threshold": self.threshold,
                "fit_info": self.fit_info, "category_accuracy": self.category_accuracy, "decision": self.decision,
                "costs": self.costs, "cost_weight": self.cost_weight}
        return json.dumps({"meta": meta}).encode() + b"\n" + self.classifier.dumps()

    def load_state(self, payload: bytes) -> None:
        head, blob = payload.split(b"\n", 1)
        meta = json.loads(head)["meta"]
        self.classifier = CategoryClassifier.loads(blob)
        self.mapping, self.fallback, self.threshold = meta["mapping"], meta["fallback"], meta["threshold"]
        self.category_accuracy = meta.get("category_accuracy", {})
        self.fit_info = meta.get("fit_info", {})
        # The stored fit's decision rule is part of what was fitted (its calibration depends on it).
        self.decision = meta.get("decision", self.decision)
        self.costs = meta.get("costs", {})
        self.cost_weight = float(meta.get("cost_weight", 0.0))

    # ------------------------------------------------------------------ scoring
    async def score_batch(self, queries: Sequence[Query]) -> list[ExpertScores]:
        assert self.classifier is not None
        probs = self.classifier.predict_proba(await shared_embedder(self.ctx.services).embed([q.text for q in queries]))
        cats, conf = self.classifier.top_category(probs)
        return [self.score_category(c, float(p), pv) for c, p, pv in zip(cats, conf, probs, strict=True)]

    def score_category(self, category: str, confidence: float, probs: np.ndarray) -> ExpertScores:
        """`decision="argmax"`: the mapped expert of the predicted category scores its confidence;
        below the threshold (or for a category the map lacks) no expert is scored and the fallback
        answers. `decision="expected"`: the map's experts and the fallback score their expected
        accuracy Σ_c p(c|q)·acc[c][e] under the classifier's whole probability vector."""
        detail = {"predicted_category": category, "confidence": round(confidence, 4), "fallback_used": False}
        reason = f"category {category} (p={confidence:.2f})"
        if self.decision == "expected" and self.category_accuracy:
            assert self.classifier is not None
            labels = self.classifier.labels
            candidates = dict.fromkeys([*self.mapping.values(), self.fallback])
            expected = {
                e: float(sum(pc * self.category_accuracy.get(c, {}).get(e, 0.0) for c, pc in zip(labels, probs, strict=True)))
                - self.cost_weight * self.costs.get(e, 0.0)
                for e in candidates if e is not None
            }
            return ExpertScores(expected, reason=reason, detail=detail)
        if self.threshold is not None and confidence < self.threshold:
            reason = f"category {category} (p={confidence:.2f} < {self.threshold:.2f}): fallback generalist"
            return ExpertScores({}, reason=reason, detail={**detail, "fallback_used": True})
        return ExpertScores({self.mapping[category]: confidence} if category in self.mapping else {}, reason=reason, detail=detail)

    def explain(self, scored: ExpertScores, expert: str, weight: float) -> str:
        return scored.reason if scored.detail["fallback_used"] else f"{scored.reason} → {expert}"
