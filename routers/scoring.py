"""Category-conditional expert accuracy: the expert scorer of the cascade and calibrated-vote routers.

    scorer = CategoryAccuracy(pool).fit(data)          # fit questions only
    scores = scorer.score(query)                       # {expert: P(right | the query's category)}

Each expert's accuracy (mean score) on the fit questions of each category, Laplace-smoothed
((right + 1) / (n + 2)), and overall. A query scores by its own category when the fit data has
it; a query without a known category scores by the expected accuracy under a category classifier
(MiniLM embeddings, `routers.coe.classifier`) when one was fitted (`classify=True`), else by the
overall accuracy. In fit-split cross-validation on MMLU-Pro, ranking by category accuracy
recruited as well as ranking by kNN on MiniLM embeddings (issue 17), at no embedding cost.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from routers.types import FitData, Query


class CategoryAccuracy:
    def __init__(self, pool: Sequence[str]) -> None:
        self.pool = list(pool)
        self.by_category: dict[str, dict[str, float]] = {}
        self.overall: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.classifier: Any = None  # routers.coe.classifier.CategoryClassifier, when fitted

    @property
    def fitted(self) -> bool:
        return bool(self.overall)

    def fit(self, data: FitData, question_ids: Sequence[str] | None = None) -> "CategoryAccuracy":
        """Accuracies on the fit questions (or on the subset `question_ids`, for cross-validation)."""
        keep = set(question_ids) if question_ids is not None else None
        qs = [q for q in data.questions if q.question_id and (keep is None or q.question_id in keep)]
        groups: dict[str, list[str]] = {}
        for q in qs:
            groups.setdefault(q.category or "", []).append(q.question_id or "")
        ids = [q.question_id or "" for q in qs]
        self.overall = {e: self._smoothed(data, e, ids) for e in self.pool}
        self.by_category = {c: {e: self._smoothed(data, e, g) for e in self.pool} for c, g in groups.items() if c}
        self.counts = {c: len(g) for c, g in groups.items() if c}
        return self

    @staticmethod
    def _smoothed(data: FitData, expert: str, ids: Sequence[str]) -> float:
        rows = data.outcomes.get(expert, {})
        got = [rows[i].quality for i in ids if i in rows]
        return (sum(got) + 1) / (len(got) + 2)

    async def fit_classifier(self, data: FitData, embed: Any, seed: int = 0) -> None:
        """A category classifier for queries without a category (`embed`: texts → vectors)."""
        from routers.coe.classifier import CategoryClassifier

        qs = [q for q in data.questions if q.category in self.by_category]
        if len({q.category for q in qs}) < 2:
            return
        self.classifier = CategoryClassifier().fit(await embed([q.text for q in qs]), [q.category for q in qs], seed=seed)

    def score(self, query: Query, probs: np.ndarray | None = None) -> dict[str, float]:
        """P(right) per expert for this query (see the module docstring)."""
        if query.category in self.by_category:
            return dict(self.by_category[query.category])
        if probs is not None and self.classifier is not None:
            table = np.array([[self.by_category.get(c, self.overall)[e] for e in self.pool] for c in self.classifier.labels])
            return dict(zip(self.pool, (probs @ table).tolist(), strict=True))
        return dict(self.overall)

    async def score_batch(self, queries: Sequence[Query], embed: Any = None) -> list[dict[str, float]]:
        unknown = [i for i, q in enumerate(queries) if q.category not in self.by_category]
        probs: dict[int, np.ndarray] = {}
        if unknown and self.classifier is not None and embed is not None:
            p = self.classifier.predict_proba(await embed([queries[i].text for i in unknown]))
            probs = dict(zip(unknown, p, strict=True))
        return [self.score(q, probs.get(i)) for i, q in enumerate(queries)]

    # ------------------------------------------------------------------ persistence
    def dumps(self) -> bytes:
        head = json.dumps({"pool": self.pool, "by_category": self.by_category, "overall": self.overall, "counts": self.counts}).encode()
        return head + b"\n" + (self.classifier.dumps() if self.classifier is not None else b"")

    @classmethod
    def loads(cls, payload: bytes) -> "CategoryAccuracy":
        from routers.coe.classifier import CategoryClassifier

        head, blob = payload.split(b"\n", 1)
        d = json.loads(head)
        out = cls(d["pool"])
        out.by_category, out.overall, out.counts = d["by_category"], d["overall"], d["counts"]
        out.classifier = CategoryClassifier.loads(blob) if blob else None
        return out
