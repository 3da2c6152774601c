"""Choose Symbolic-MoE variants by k-fold cross-validation *inside the fit split only*.

Rebuilds the benchmark's fit split (same seeded split by question id as `orchestrator bench`),
splits its question ids into `--folds` folds (seeded hash), fits each router configuration on the
other folds and scores it on the held-out fold with the recorded answers and the real vote
aggregator. The evaluation split is never loaded into the routers nor scored.

    PYTHONPATH=$PWD python benchmarks/symbolic_moe_cv.py --recorded ../shared/data/recorded/mmlu_pro_tiger \
        --config 'faithful:' --config 'skill-acc:mode=accuracy'
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from routers.aggregation import vote
from routers.types import ExpertOutput
from evals.recorded_pool import NAMED_POOLS
from evals.splits import split_fit_eval
from orchestrator.bench.runner import BenchmarkRunner, BenchOptions, question_query
from routers.types import FitData, Query, RouterContext
from routers.embeddings import shared_embedder
from routers.symbolic_moe import SymbolicMoERouter
from routers.symbolic_moe.vocabulary import SKILLS


def parse_config(text: str) -> tuple[str, dict[str, Any]]:
    label, _, rest = text.partition(":")
    opts: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        try:
            opts[key] = json.loads(value)
        except json.JSONDecodeError:
            opts[key] = value
    return label, opts


async def load(recorded: Path, seed: int, fit_fraction: float) -> tuple[list[str], FitData]:
    opts = BenchOptions(recorded=recorded, pool=["small16"], named_pools=NAMED_POOLS, seed=seed, fit_fraction=fit_fraction)
    runner = BenchmarkRunner(opts, store=None)  # type: ignore[arg-type]
    test, _ = runner.load_questions()
    registry, pool, questions, _ = runner.build_pool(test)
    fit_ids, _ = split_fit_eval([q.id for q in questions], fit_fraction, seed)
    fit_qs = [question_query(q, None, 512) for q in questions if q.id in fit_ids]
    return pool, await runner.fit_data(registry, pool, fit_qs)


class RankedTags:
    """The embedding tagger's ranking computed once for all fit questions (the same MiniLM
    cosine ranking `EmbeddingTagger` computes), cut to the router's `skills_per_question`."""

    def __init__(self, texts: list[str], ranking: np.ndarray) -> None:
        self.rank = {t: [SKILLS[j] for j in row] for t, row in zip(texts, ranking, strict=True)}

    def tagger_for(self, n: int):  # type: ignore[no-untyped-def]
        async def tag(texts: list[str]) -> list[list[str]]:
            return [self.rank[t][:n] for t in texts]

        return tag


def fold_of(qid: str, folds: int, seed: int) -> int:
    return int(hashlib.sha256(f"cv{seed}:{qid}".encode()).hexdigest(), 16) % folds


async def cv_score(pool: list[str], data: FitData, tags: RankedTags, opts: dict[str, Any], folds: int, seed: int) -> dict[str, Any]:
    from experts import ExpertRegistry
    from evals.recorded_pool import recorded_specs

    directory = Path(data.source.removeprefix("recorded outputs in "))
    registry = ExpertRegistry.from_specs(recorded_specs(directory, pool))
    right = n = calls = 0
    services: dict[str, Any] = {}
    for f in range(folds):
        train = [q for q in data.questions if fold_of(q.question_id or "", folds, seed) != f]
        held = [q for q in data.questions if fold_of(q.question_id or "", folds, seed) == f]
        train_ids = {q.question_id for q in train}
        sub = FitData(train, {m: {i: o for i, o in out.items() if i in train_ids} for m, out in data.outcomes.items()}, data.source)
        router = SymbolicMoERouter(RouterContext(pool=pool, registry=registry, seed=seed, services=services), **opts)
        router.tag = tags.tagger_for(router.skills_per_question)  # type: ignore[method-assign]
        await router.fit(sub)
        plans = await router.route_batch([q.model_copy(update={"gold": None}) for q in held])
        for q, plan in zip(held, plans, strict=True):
            outs = [
                ExpertOutput(index=i, expert=a.expert, text="", answer=data.outcomes[a.expert][q.question_id or ""].answer, weight=a.weight)
                for i, a in enumerate(plan.assignments)
            ]
            final = vote(outs, weighted=plan.aggregation.kind == "weighted-vote")
            right += final.answer is not None and final.answer == q.gold
            n += 1
            calls += len(plan.assignments)
    return {"cv_accuracy": right / n, "n": n, "calls_per_q": calls / n}


def baselines(pool: list[str], data: FitData, folds: int, seed: int) -> dict[str, float]:
    """All-vote and best-single (chosen on the training folds) under the same folds."""
    all_vote = sum(
        vote([ExpertOutput(i, m, "", data.outcomes[m][q.question_id].answer) for i, m in enumerate(pool)]).answer == q.gold
        for q in data.questions
    ) / len(data.questions)
    right = 0
    for f in range(folds):
        train = [q for q in data.questions if fold_of(q.question_id, folds, seed) != f]
        held = [q for q in data.questions if fold_of(q.question_id, folds, seed) == f]
        best = max(pool, key=lambda m: sum(data.outcomes[m][q.question_id].correct for q in train))
        right += sum(data.outcomes[best][q.question_id].correct for q in held)
    return {"all-vote": all_vote, "best-single": right / len(data.questions)}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recorded", type=Path, required=True)
    ap.add_argument("--config", action="append", default=[], help="LABEL:key=value,key=value")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="the benchmark's split seed (fit vs evaluation)")
    ap.add_argument("--cv-seeds", default="0", help="comma-separated seeds of the folds inside the fit split (repeated k-fold CV)")
    ap.add_argument("--fit-fraction", type=float, default=0.3)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    pool, data = await load(a.recorded, a.seed, a.fit_fraction)
    texts = [q.text for q in data.questions]
    embedder = shared_embedder({})
    vocab = await embedder.embed(list(SKILLS))
    vecs = await embedder.embed(texts)
    tags = RankedTags(texts, np.argsort(-(vecs @ vocab.T), axis=1)[:, :10])
    seeds = [int(x) for x in a.cv_seeds.split(",")]
    base = [baselines(pool, data, a.folds, s) for s in seeds]
    rows: dict[str, Any] = {
        "fit_questions": len(data.questions), "folds": a.folds, "cv_seeds": seeds,
        "baselines": {k: float(np.mean([b[k] for b in base])) for k in base[0]},
    }
    print(json.dumps(rows), flush=True)
    for spec in a.config:
        label, opts = parse_config(spec)
        t0 = time.perf_counter()
        per_seed = [await cv_score(pool, data, tags, opts, a.folds, s) for s in seeds]
        res = {"cv_accuracy": float(np.mean([r["cv_accuracy"] for r in per_seed])),
               "per_seed": [round(r["cv_accuracy"], 4) for r in per_seed], "calls_per_q": per_seed[0]["calls_per_q"]}
        res.update(label=label, options=opts, seconds=round(time.perf_counter() - t0, 1))
        rows[label] = res
        print(json.dumps(res), flush=True)
    if a.out:
        a.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
