"""Cascades (adaptive k) and calibrated weighted votes: extensions of ours, not a published method.

`cascade` asks the experts most likely to be right on the query first (their fit accuracy on the
query's category, `routers.scoring`), `k_min` of them, and then one more at a time while the
answers disagree: it stops once the leading answer's weighted vote is at least `margin` ahead of
the runner-up, or after `k_max` experts. A vote's weight is the weighted-majority weight
log((K−1)·p/(1−p)) of the expert's probability p of being right:

* `confidence="response"` (default): p from the response itself and the router's score
  (`routers.confidence.ResponseConfidence`, fitted on the fit split);
* `confidence="category"`: p = the expert's fit accuracy on the query's category;
* `confidence="none"`: every vote counts 1 (stop at agreement).

`margin` and `k_max` are chosen on the fit split: `folds`-fold cross-validation replays every
candidate cascade on the held-out folds' recorded outcomes (every fit question has every
expert's output, so the replay is exact) and keeps the most accurate one whose average number of
expert calls stays within `budget`. The evaluation questions are never seen. Reports give the
average calls per question.

`calibrated-vote` is the same machinery at a fixed k (`k_min = k_max = k`, no escalation): the k
experts with the best category accuracy, their votes weighted by calibrated confidence.

Both override `Router.run`: each round is one `runtime.execute` over every query still open
(grouped by expert in benchmarks and batch jobs), so every call goes through the one execution path.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from evals.answers import LETTERS
from routers.confidence import ResponseConfidence, response_features, vote_weight
from routers.embeddings import shared_embedder
from routers.fitted import ExpertScores, FittedRouter, top_k
from routers.scoring import CategoryAccuracy
from routers.types import (
    FIT_EMBED_PHASE, Aggregation, Assignment, ExpertOutput, ExpertRuntime, FinalAnswer, FitData, Plan, Query, QueryOutcome,
    RouterContext, RoutingError,
)
from store.records import TraceStepRecord

CONFIDENCES = ("response", "category", "none")
MARGIN_GRID = tuple(float(x) for x in np.arange(0.0, 8.01, 0.25))
K_MAX_GRID = (3, 4, 5, 6, 8)


def _n_options(query: Query) -> int:
    return query.n_options if query.n_options >= 2 else len(LETTERS)


def weighted_answer(answers: Sequence[str | None], weights: Sequence[float]) -> tuple[str | None, float, dict[str, float]]:
    """(winner, lead over the runner-up, tally); ties go to the answer seen first."""
    tally: dict[str, float] = defaultdict(float)
    first: dict[str, int] = {}
    for i, (a, w) in enumerate(zip(answers, weights, strict=True)):
        if a is None:
            continue
        tally[a] += w
        first.setdefault(a, i)
    if not tally:
        return None, 0.0, {}
    ranked = sorted(tally, key=lambda a: (-tally[a], first[a]))
    lead = tally[ranked[0]] - (tally[ranked[1]] if len(ranked) > 1 else 0.0)
    return ranked[0], lead, dict(tally)


@dataclass
class _Open:
    """One query's cascade so far."""

    query: Query
    order: list[str]
    scores: dict[str, float]
    outputs: list[ExpertOutput] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    calls: list[Any] = field(default_factory=list)
    steps: list[TraceStepRecord] = field(default_factory=list)
    assignments: list[Assignment] = field(default_factory=list)
    stopped: str = ""

    @property
    def asked(self) -> int:
        return len(self.outputs)


class CascadeRouter(FittedRouter[ExpertScores]):
    name = "cascade"
    description = "asks the likeliest experts first and escalates while they disagree (adaptive k; extension)"
    fit_hint = "run `orchestrator bench` or `orchestrator profile build --router cascade`"
    artefact_kind: ClassVar[str | None] = "cascade-router"
    escalates: ClassVar[bool] = True

    def __init__(
        self,
        ctx: RouterContext,
        *,
        k_min: int = 2,
        k_max: int | None = None,
        margin: float | None = None,
        budget: float = 3.0,
        confidence: str = "response",
        folds: int = 5,
        classify: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(ctx, **options)
        if confidence not in CONFIDENCES:
            raise RoutingError(f"router {self.name!r}: confidence must be one of {', '.join(CONFIDENCES)}, got {confidence!r}")
        if not 1 <= k_min <= len(self.pool):
            raise RoutingError(f"router {self.name!r}: k_min must be between 1 and the pool size {len(self.pool)}, got {k_min}")
        if k_max is not None and not k_min <= k_max <= len(self.pool):
            raise RoutingError(f"router {self.name!r}: k_max must be between k_min={k_min} and the pool size {len(self.pool)}, got {k_max}")
        if budget < k_min:
            raise RoutingError(f"router {self.name!r}: budget {budget} is below k_min={k_min} calls per query")
        if folds < 2:
            raise RoutingError(f"router {self.name!r}: folds must be at least 2, got {folds}")
        self.k_min, self.k_max_option, self.margin_option = k_min, k_max, margin
        self.k_max = k_max if k_max is not None else k_min
        self.margin = margin if margin is not None else 0.0
        self.budget, self.confidence_kind, self.folds, self.classify = budget, confidence, folds, classify
        self.k = k_min  # `route` (one plan up front) gives the first round
        self.scorer: CategoryAccuracy | None = None
        self.confidence: ResponseConfidence | None = None
        self.aggregation = Aggregation(kind="weighted-vote")

    @property
    def fitted(self) -> bool:
        return self.scorer is not None

    # ------------------------------------------------------------------ scores
    async def _embed(self, texts: list[str]) -> np.ndarray:
        return await shared_embedder(self.ctx.services).embed(texts)

    async def _embed_fit(self, texts: list[str]) -> np.ndarray:
        return await shared_embedder(self.ctx.services).embed(texts, self.ctx.progress_of(FIT_EMBED_PHASE))

    async def score_batch(self, queries: Sequence[Query]) -> list[ExpertScores]:
        assert self.scorer is not None
        scores = await self.scorer.score_batch(queries, self._embed if self.scorer.classifier is not None else None)
        return [ExpertScores(s, reason=f"fit accuracy on category {q.category or '(predicted)'}", detail={"category": q.category})
                for q, s in zip(queries, scores, strict=True)]

    def probability(self, query: Query, expert: str, output: ExpertOutput, router_score: float) -> float:
        """P(this output is right), by the configured confidence."""
        if self.confidence_kind == "category":
            return router_score
        if self.confidence_kind == "none":
            return 0.5
        assert self.confidence is not None
        return self.confidence.predict(expert, output.text, output.answer, query.choices, router_score)

    def weight(self, query: Query, p: float) -> float:
        return 1.0 if self.confidence_kind == "none" else vote_weight(p, _n_options(query))

    # ------------------------------------------------------------------ fitting
    async def fit(self, data: FitData) -> dict[str, Any]:
        t0 = time.perf_counter()
        qs = [q for q in data.questions if q.question_id and all(q.question_id in data.outcomes.get(e, {}) for e in self.pool)]
        if len(qs) < 4 * self.folds:
            raise RoutingError(f"router {self.name!r}: needs at least {4 * self.folds} fit questions with every pool expert's "
                               f"outcome, got {len(qs)}")
        rng = np.random.default_rng(self.ctx.seed)
        fold = rng.permutation(len(qs)) % self.folds
        ids = [q.question_id or "" for q in qs]
        m, n = len(self.pool), len(qs)
        # Out-of-fold router scores: each fold scored by accuracies fitted on the other folds.
        oof = np.zeros((n, m))
        for f in range(self.folds):
            scorer = CategoryAccuracy(self.pool).fit(data, [i for i, k in zip(ids, fold, strict=True) if k != f])
            for row in np.flatnonzero(fold == f):
                s = scorer.score(qs[row])
                oof[row] = [s[e] for e in self.pool]
        quality = np.array([[data.outcomes[e][i].quality for e in self.pool] for i in ids])
        answers = [[data.outcomes[e][i].answer for e in self.pool] for i in ids]
        # Out-of-fold P(right) of every fit output, by the configured confidence.
        if self.confidence_kind == "response":
            feats = np.stack([
                np.stack([response_features(data.outcomes[e][i].response, data.outcomes[e][i].answer, q.choices, oof[r, j])
                          for j, e in enumerate(self.pool)])
                for r, (i, q) in enumerate(zip(ids, qs, strict=True))
            ])  # (n, m, features)
            prob = np.zeros((n, m))
            for f in range(self.folds):
                tr, te = fold != f, fold == f
                model = ResponseConfidence().fit_features({e: (feats[tr, j], quality[tr, j] >= 0.5) for j, e in enumerate(self.pool)})
                for j, e in enumerate(self.pool):
                    prob[te, j] = model.predict_features(e, feats[te, j])
            self.confidence = ResponseConfidence().fit_features({e: (feats[:, j], quality[:, j] >= 0.5) for j, e in enumerate(self.pool)})
        elif self.confidence_kind == "category":
            prob = oof
        else:
            prob = np.full((n, m), 0.5)
        k_opts = [n_options for n_options in (_n_options(q) for q in qs)]
        weights = np.array([[1.0 if self.confidence_kind == "none" else vote_weight(p, k_opts[r]) for p in prob[r]] for r in range(n)])
        orders = [[self.pool.index(e) for e in top_k(dict(zip(self.pool, oof[r], strict=True)), m)] for r in range(n)]

        # Choose (k_max, margin) by replaying the cascade on the out-of-fold scores and weights.
        k_grid = [self.k_max_option] if self.k_max_option is not None else [k for k in K_MAX_GRID if self.k_min <= k <= m] or [self.k_min]
        if not self.escalates:
            k_grid = [self.k_min]
        m_grid = [self.margin_option] if self.margin_option is not None else (MARGIN_GRID if self.escalates else [0.0])
        best: tuple[float, float, int, float] | None = None
        table = []
        for k_max in k_grid:
            trajectories = _Trajectories.replay(orders, answers, weights, quality, k_max)
            for margin in m_grid:
                acc, calls = trajectories.evaluate(self.k_min, margin)
                table.append({"k_max": k_max, "margin": margin, "cv_accuracy": round(acc, 4), "cv_calls": round(calls, 3)})
                if calls <= self.budget + 1e-9 and (best is None or acc > best[0] + 1e-12):
                    best = (acc, calls, k_max, margin)
        if best is None:
            raise RoutingError(f"router {self.name!r}: no cascade stays within budget {self.budget} calls per query on the fit split")
        self.k_max, self.margin = best[2], best[3]
        self.scorer = CategoryAccuracy(self.pool).fit(data)
        if self.classify:
            await self.scorer.fit_classifier(data, self._embed_fit, seed=self.ctx.seed)
        self.fit_info = {
            "fit_questions": n, "folds": self.folds, "confidence": self.confidence_kind, "k_min": self.k_min, "k_max": self.k_max,
            "margin": self.margin, "budget": self.budget, "cv_accuracy": round(best[0], 4), "cv_calls_per_question": round(best[1], 3),
            "categories": len(self.scorer.by_category), "classifier": bool(self.scorer.classifier),
            "fit_s": round(time.perf_counter() - t0, 1),
            "cv_table_best": sorted(table, key=lambda r: -r["cv_accuracy"] if r["cv_calls"] <= self.budget else 1)[:5],
        }
        await self.save()
        return self.fit_info

    # ------------------------------------------------------------------ persistence
    def dump_state(self) -> bytes:
        assert self.scorer is not None
        head = {"pool": self.pool, "k_min": self.k_min, "k_max": self.k_max, "margin": self.margin, "budget": self.budget,
                "confidence_kind": self.confidence_kind, "fit_info": self.fit_info,
                "confidence": self.confidence.to_json() if self.confidence is not None else None}
        return json.dumps(head).encode() + b"\n" + self.scorer.dumps()

    def load_state(self, payload: bytes) -> None:
        head, blob = payload.split(b"\n", 1)
        d = json.loads(head)
        self.k_min, self.k_max, self.margin, self.budget = d["k_min"], d["k_max"], d["margin"], d["budget"]
        self.confidence_kind, self.fit_info = d["confidence_kind"], d.get("fit_info", {})
        self.k = self.k_min
        self.confidence = ResponseConfidence.from_json(d["confidence"]) if d.get("confidence") else None
        self.scorer = CategoryAccuracy.loads(blob)

    # ------------------------------------------------------------------ running
    async def run(self, queries: Sequence[Query], runtime: ExpertRuntime) -> list[QueryOutcome]:
        if not self.fitted:
            raise RoutingError(f"router {self.name!r} is not fitted: {self.fit_hint}")
        t0 = time.perf_counter()
        queries = list(queries)
        scored = await self.score_batch(queries)
        route_share = (time.perf_counter() - t0) / max(1, len(queries))
        states = [_Open(q, top_k(s.scores, len(self.pool)), s.scores) for q, s in zip(queries, scored, strict=True)]
        for st, s in zip(states, scored, strict=True):
            st.steps.append(TraceStepRecord(seq=0, kind="route", duration_s=route_share, detail={
                "router": self.name, "order": st.order[: self.k_max], "scores": {e: round(s.scores[e], 4) for e in st.order[: self.k_max]},
                "k_min": self.k_min, "k_max": self.k_max, "margin": self.margin}))
        pending = list(states)
        round_no = 0
        while pending:
            round_no += 1
            take = self.k_min if round_no == 1 else 1
            plans = []
            for st in pending:
                experts = st.order[st.asked : st.asked + take]
                assignments = [Assignment(expert=e, request=st.query.expert_request(), reason=f"rank {st.asked + i + 1}, "
                                          f"category accuracy {st.scores[e]:.3f}") for i, e in enumerate(experts)]
                st.assignments += assignments
                plans.append(Plan(router=self.name, assignments=assignments, aggregation=Aggregation(kind="vote")))
            outcomes = await runtime.execute([st.query for st in pending], plans)
            for st, out in zip(pending, outcomes, strict=True):
                self._absorb(st, out, round_no)
            pending = [st for st in pending if not self._done(st)]
        return [self._finish(st) for st in states]

    def _absorb(self, st: _Open, out: QueryOutcome, round_no: int) -> None:
        base = st.asked
        for o in out.outputs:
            p = self.probability(st.query, o.expert, o, st.scores.get(o.expert, 0.5)) if o.ok else 0.0
            w = self.weight(st.query, p) if o.ok else 0.0
            st.outputs.append(ExpertOutput(index=base + o.index, expert=o.expert, text=o.text, answer=o.answer, weight=w, ok=o.ok))
            st.weights.append(w)
            st.probs.append(p)
        for c in out.calls:
            if c.role != "aggregator":
                c.seq = 100 * round_no + c.seq
                st.calls.append(c)
        for s in out.steps:
            if s.kind == "generate":
                st.steps.append(s.model_copy(update={"seq": 100 * round_no + s.seq, "detail": {**s.detail, "round": round_no}}))

    def _done(self, st: _Open) -> bool:
        if st.asked >= min(self.k_max, len(st.order)):
            st.stopped = st.stopped or f"asked {st.asked} (k_max)"
            return True
        if not self.escalates:
            return True
        winner, lead, _ = weighted_answer([o.answer if o.ok else None for o in st.outputs], st.weights)
        if winner is not None and lead >= self.margin and st.asked >= self.k_min:
            st.stopped = f"lead {lead:.2f} ≥ margin {self.margin:g} after {st.asked}"
            return True
        return False

    def _finish(self, st: _Open) -> QueryOutcome:
        answers = [o.answer if o.ok else None for o in st.outputs]
        winner, lead, tally = weighted_answer(answers, st.weights)
        ok = [o for o in st.outputs if o.ok]
        if winner is not None:
            rep = max((o for o in ok if o.answer == winner), key=lambda o: (o.weight, -o.index))
        elif ok:  # no comparable answer (free-form): the most confident output
            rep = max(ok, key=lambda o: (st.probs[o.index], -o.index))
        else:
            rep = None
        final = FinalAnswer(
            text=rep.text if rep else "", answer=winner, method=self.name, tally={a: round(v, 4) for a, v in tally.items()},
            detail={"representative": rep.expert if rep else None, "calls": st.asked, "lead": round(lead, 4), "stopped": st.stopped,
                    **({"reason": "every expert failed"} if not ok else {})},
        )
        st.steps.append(TraceStepRecord(seq=10_000, kind="aggregate", detail={
            "method": self.name, "answer": winner, "tally": final.tally, "weights": [round(w, 3) for w in st.weights],
            "p_right": [round(p, 3) for p in st.probs], "stopped": st.stopped}))
        plan = Plan(router=self.name, assignments=st.assignments, aggregation=self.aggregation,
                    detail={"expert_calls": st.asked, "stopped": st.stopped})
        return QueryOutcome(query=st.query, plan=plan, final=final, outputs=st.outputs, calls=st.calls, steps=st.steps)


@dataclass
class _Trajectories:
    """Per fit question, the cascade's state after each number of calls k = 1..k_max: the
    leading answer's lead and the score it would get (that of its best-weighted supporter)."""

    lead: np.ndarray  # (n, k_max); NaN: no comparable answer yet
    score: np.ndarray  # (n, k_max)

    @classmethod
    def replay(cls, orders: list[list[int]], answers: list[list[str | None]], weights: np.ndarray, quality: np.ndarray,
               k_max: int) -> "_Trajectories":
        n = len(orders)
        lead = np.full((n, k_max), np.nan)
        score = np.zeros((n, k_max))
        for r, order in enumerate(orders):
            asked: list[int] = []
            for k, e in enumerate(order[:k_max]):
                asked.append(e)
                winner, lead_k, _ = weighted_answer([answers[r][j] for j in asked], [weights[r, j] for j in asked])
                if winner is not None:
                    lead[r, k] = lead_k
                    score[r, k] = quality[r, max((j for j in asked if answers[r][j] == winner), key=lambda j: weights[r, j])]
                else:
                    score[r, k] = quality[r, max(asked, key=lambda j: weights[r, j])]
            if len(asked) < k_max:  # a pool smaller than k_max: the last state holds
                lead[r, len(asked):] = lead[r, len(asked) - 1]
                score[r, len(asked):] = score[r, len(asked) - 1]
        return cls(lead, score)

    def evaluate(self, k_min: int, margin: float) -> tuple[float, float]:
        """(mean score, mean calls) when stopping at the first k ≥ k_min whose lead ≥ margin."""
        n, k_max = self.lead.shape
        stop = np.nan_to_num(self.lead, nan=-np.inf) >= margin
        stop[:, : k_min - 1] = False
        stop[:, k_max - 1] = True
        k = stop.argmax(axis=1)
        return float(self.score[np.arange(n), k].mean()), float((k + 1).mean())


class CalibratedVoteRouter(CascadeRouter):
    """The k experts with the best category accuracy, their votes weighted by calibrated
    confidence (category accuracy, or the response-level model); no escalation."""

    name = "calibrated-vote"
    description = "k best experts by category accuracy, votes weighted by calibrated confidence (extension)"
    fit_hint = "run `orchestrator bench` or `orchestrator profile build --router calibrated-vote`"
    artefact_kind = "calibrated-vote-router"
    escalates = False

    def __init__(self, ctx: RouterContext, *, k: int = 3, confidence: str = "category", folds: int = 5, classify: bool = False,
                 **options: Any) -> None:
        if not 1 <= k <= len(ctx.pool):
            raise RoutingError(f"router 'calibrated-vote': k must be between 1 and the pool size {len(ctx.pool)}, got {k}")
        super().__init__(ctx, k_min=k, k_max=k, margin=0.0, budget=float(k), confidence=confidence, folds=folds,
                         classify=classify, **options)


__all__ = ["CalibratedVoteRouter", "CascadeRouter", "weighted_answer"]
