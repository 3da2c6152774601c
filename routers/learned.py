"""Learned routers on query embeddings, the baselines RouterBench, RouteLLM and LLMRouter compare
against: `knn` and `mlp` predict each expert's quality on a query from its MiniLM embedding, then
pick the expert with the best quality − λ·cost.

    orchestrator bench --recorded DIR -r knn@l0 --router-opt knn@l0.lambda=0 -r knn@l1 --router-opt knn@l1.lambda=1

* `knn` (RouterBench's KNN router, LLMRouter's KNNRouter): the predicted quality of expert e is its
  mean score over the `neighbours` most similar fit questions (cosine, similarity-weighted,
  Laplace-smoothed); `neighbours="auto"` picks it by cross-validation inside the fit split.
* `mlp` (RouterBench's MLP router, LLMRouter's MLPRouter): a one-hidden-layer network
  (scikit-learn `MLPRegressor`, early stopping on a slice of the fit split) regressing every
  expert's score at once.
* `lambda` (≥ 0) is the willingness to pay, on costs normalised to the most expensive expert:
  score(e) = q̂(e) − λ·cost(e)/max cost. λ = 0 maximises predicted quality; a sweep of λ traces
  the method's cost-quality frontier (the plot joins a method's configurations). An expert's cost
  is its mean logged dollar cost per fit question when every fit outcome has one, else its price
  per Mtok (the mean of input and output).
* `k` > 1 asks the k best and takes a vote weighted by the predicted qualities' log-odds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from routers.embeddings import shared_embedder
from routers.fitted import ExpertScores, FittedRouter
from routers.types import FIT_EMBED_PHASE, Aggregation, FitData, Query, RouterContext, RoutingError

NEIGHBOUR_GRID = (10, 25, 50, 100, 200)


class EmbeddingQualityRouter(FittedRouter[ExpertScores]):
    """Shared part of `knn` and `mlp`: embeddings, costs, λ, persistence; subclasses predict."""

    fit_hint = "run `orchestrator bench` or `orchestrator profile build`"
    artefact_kind: ClassVar[str | None] = None

    def __init__(self, ctx: RouterContext, *, k: int = 1, seed: int | None = None, **options: Any) -> None:
        lam = options.pop("lambda", options.pop("lam", 0.0))
        super().__init__(ctx, **options)
        try:
            lam = float(lam)
        except (TypeError, ValueError):
            raise RoutingError(f"router {self.name!r}: lambda must be a number ≥ 0, got {lam!r}") from None
        if lam < 0 or not math.isfinite(lam):
            raise RoutingError(f"router {self.name!r}: lambda must be a number ≥ 0, got {lam}")
        if not 1 <= k <= len(self.pool):
            raise RoutingError(f"router {self.name!r}: k must be between 1 and the pool size {len(self.pool)}, got {k}")
        self.lam, self.k = lam, k
        self.seed = ctx.seed if seed is None else seed
        self.costs: dict[str, float] = {}
        self.cost_unit = ""
        self.aggregation = Aggregation(kind="single" if k == 1 else "weighted-vote")
        self._fitted = False

    @property
    def fitted(self) -> bool:
        return self._fitted

    async def _embed(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        return await shared_embedder(self.ctx.services).embed(list(texts), progress)

    def expert_costs(self, data: FitData) -> tuple[dict[str, float], str]:
        """Mean logged dollars per fit question when every outcome has them, else price per Mtok."""
        per = {}
        for e in self.pool:
            rows = [data.outcomes.get(e, {}).get(q.question_id or "") for q in data.questions]
            costs = [r.cost_usd for r in rows if r is not None]
            if not costs or any(c is None for c in costs):
                break
            per[e] = float(np.mean(costs))
        else:
            return per, "mean USD per fit question (logged)"
        prices = {e: self.ctx.registry.spec(e).price_per_mtok for e in self.pool}
        return {e: (p.input + p.output) / 2 for e, p in prices.items()}, "price USD/Mtok (mean of input and output)"

    async def fit(self, data: FitData) -> dict[str, Any]:
        qs = [q for q in data.questions if q.question_id and all(q.question_id in data.outcomes.get(e, {}) for e in self.pool)]
        if len(qs) < 20:
            raise RoutingError(f"router {self.name!r}: needs at least 20 fit questions with every pool expert's outcome, got {len(qs)}")
        x = await self._embed([q.text for q in qs], self.ctx.progress_of(FIT_EMBED_PHASE))
        y = np.array([[data.outcomes[e][q.question_id or ""].quality for e in self.pool] for q in qs])
        self.costs, self.cost_unit = self.expert_costs(data)
        info = self.fit_model(x, y)
        self._fitted = True
        self.fit_info = {"fit_questions": len(qs), "lambda": self.lam, "k": self.k, "cost": self.cost_unit,
                         "costs": {e: round(c, 8) for e, c in self.costs.items()}, **info}
        await self.save()
        return self.fit_info

    def fit_model(self, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted score in [0, 1] of every pool expert, per row of embeddings."""
        raise NotImplementedError

    async def score_batch(self, queries: Sequence[Query]) -> list[ExpertScores]:
        quality = np.clip(self.predict(await self._embed([q.text for q in queries])), 1e-3, 1 - 1e-3)
        top_cost = max(self.costs.values()) or 1.0
        penalty = np.array([self.costs[e] / top_cost for e in self.pool])
        out = []
        for row in quality:
            utility = row - self.lam * penalty
            out.append(ExpertScores(
                dict(zip(self.pool, utility.tolist(), strict=True)),
                reason=f"predicted quality − {self.lam:g}·cost",
                detail={"predicted": {e: round(float(v), 4) for e, v in zip(self.pool, row, strict=True)}},
                weights={e: float(np.log(v / (1 - v))) for e, v in zip(self.pool, row, strict=True)},
            ))
        return out

    def explain(self, scored: ExpertScores, expert: str, weight: float) -> str:
        return f"predicted quality {scored.detail['predicted'][expert]:.3f}, score {scored.scores[expert]:.3f} (λ={self.lam:g})"


class KnnRouter(EmbeddingQualityRouter):
    name = "knn"
    description = "per-expert quality from the nearest fit questions (MiniLM), best quality − λ·cost (RouterBench/LLMRouter baseline)"
    artefact_kind = "knn-router"

    def __init__(self, ctx: RouterContext, *, neighbours: int | str = "auto", **options: Any) -> None:
        super().__init__(ctx, **options)
        if neighbours != "auto" and (not isinstance(neighbours, int) or neighbours < 1):
            raise RoutingError(f"router 'knn': neighbours must be 'auto' or a positive integer, got {neighbours!r}")
        self.neighbours_option = neighbours
        self.neighbours = 0
        self.x = np.zeros((0, 0), dtype=np.float32)
        self.y = np.zeros((0, 0))

    @staticmethod
    def _estimate(sims: np.ndarray, idx: np.ndarray, y: np.ndarray) -> np.ndarray:
        w = np.maximum(np.take_along_axis(sims, idx, axis=1), 0.0)
        return (np.einsum("nk,nkm->nm", w, y[idx]) + 1.0) / (w.sum(axis=1, keepdims=True) + 2.0)

    def fit_model(self, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        cv: dict[int, float] = {}
        if self.neighbours_option == "auto":
            # 5-fold CV inside the fit split: the neighbour count whose top-1 choice scores best.
            fold = np.random.default_rng(self.seed).permutation(len(x)) % 5
            grid = [k for k in NEIGHBOUR_GRID if k < 0.8 * len(x)] or [max(1, len(x) // 2)]
            for k in grid:
                got = 0.0
                for f in range(5):
                    tr, te = fold != f, fold == f
                    sims = x[te] @ x[tr].T
                    idx = np.argsort(-sims, axis=1)[:, :k]
                    pred = self._estimate(sims, idx, y[tr])
                    got += float(y[te][np.arange(te.sum()), pred.argmax(axis=1)].sum())
                cv[k] = got / len(x)
            self.neighbours = max(cv, key=lambda k: (cv[k], -k))
        else:
            self.neighbours = int(self.neighbours_option)
        self.x, self.y = x.astype(np.float32), y
        return {"neighbours": self.neighbours, **({"cv_top1_accuracy": {str(k): round(v, 4) for k, v in cv.items()}} if cv else {})}

    def predict(self, x: np.ndarray) -> np.ndarray:
        sims = x @ self.x.T
        k = min(self.neighbours, len(self.x))
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        return self._estimate(sims, idx, self.y)

    def dump_state(self) -> bytes:
        head = json.dumps({"pool": self.pool, "neighbours": self.neighbours, "costs": self.costs, "cost_unit": self.cost_unit,
                           "fit_info": self.fit_info, "shape": list(self.x.shape)}).encode()
        return head + b"\n" + self.x.astype(np.float32).tobytes() + self.y.astype(np.float64).tobytes()

    def load_state(self, payload: bytes) -> None:
        head, blob = payload.split(b"\n", 1)
        d = json.loads(head)
        n, dim = d["shape"]
        self.neighbours, self.costs, self.cost_unit, self.fit_info = d["neighbours"], d["costs"], d["cost_unit"], d.get("fit_info", {})
        self.x = np.frombuffer(blob[: n * dim * 4], dtype=np.float32).reshape(n, dim)
        self.y = np.frombuffer(blob[n * dim * 4 :], dtype=np.float64).reshape(n, len(self.pool))
        self._fitted = True


class MlpRouter(EmbeddingQualityRouter):
    name = "mlp"
    description = "per-expert quality regressed from the MiniLM embedding by an MLP, best quality − λ·cost (RouterBench/LLMRouter baseline)"
    artefact_kind = "mlp-router"

    def __init__(self, ctx: RouterContext, *, hidden: int = 128, alpha: float = 1e-3, **options: Any) -> None:
        super().__init__(ctx, **options)
        if hidden < 1 or alpha < 0:
            raise RoutingError(f"router 'mlp': hidden must be ≥ 1 and alpha ≥ 0, got {hidden}, {alpha}")
        self.hidden, self.alpha = hidden, alpha
        self.model: Any = None

    def fit_model(self, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        from sklearn.neural_network import MLPRegressor

        self.model = MLPRegressor(hidden_layer_sizes=(self.hidden,), alpha=self.alpha, early_stopping=True, validation_fraction=0.15,
                                  max_iter=300, random_state=self.seed).fit(x, y)
        return {"hidden": self.hidden, "alpha": self.alpha, "epochs": int(self.model.n_iter_),
                "validation_r2": round(float(self.model.best_validation_score_), 4)}

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(x)).reshape(len(x), len(self.pool))

    def dump_state(self) -> bytes:
        import io
        import pickle

        buf = io.BytesIO()
        pickle.dump(self.model, buf)
        head = json.dumps({"pool": self.pool, "costs": self.costs, "cost_unit": self.cost_unit, "fit_info": self.fit_info}).encode()
        return head + b"\n" + buf.getvalue()

    def load_state(self, payload: bytes) -> None:
        import pickle

        head, blob = payload.split(b"\n", 1)
        d = json.loads(head)
        self.costs, self.cost_unit, self.fit_info = d["costs"], d["cost_unit"], d.get("fit_info", {})
        # Only artefacts this system wrote to its own store are loaded (pickle runs code).
        self.model = pickle.loads(blob)  # noqa: S301
        self._fitted = True
