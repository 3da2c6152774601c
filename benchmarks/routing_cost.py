"""Routing cost: time to route one query with CoE and Symbolic-MoE (embedding tagger), CPU only.

    .venv/bin/python benchmarks/routing_cost.py [--pool small16] [--fit 300] [--singles 20] [--batches 3] [--threads 2]

Both routers are fitted on the recorded MMLU-Pro outputs in ../shared/data/recorded/mmlu_pro_tiger
(the same recorded-outcome fitting `orchestrator bench --recorded` does), then route questions
they have not seen: batch size 1 (one `route` call per query) and 64 (one `route_batch`).

"cold" means the query's embedding is computed (the question is new to the embedding cache and,
for Symbolic-MoE, to the keyword cache): the cost a new question pays. "cached" is the same
questions again, served from those caches: what a repeated question (or a benchmark rerun) pays.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from experts import ExpertRegistry
from evals.datasets import default_mmlu_pro_paths, load_mmlu_pro
from evals.recorded_pool import recorded_specs, resolve_pool
from routers.types import FitData, FitOutcome, Query, RouterContext
from routers.coe import CoERouter
from routers.embeddings import SentenceEmbedder
from routers.symbolic_moe import SymbolicMoERouter
from store import Store

RECORDED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "recorded" / "mmlu_pro_tiger"


def _queries(pool: list[str], registry: ExpertRegistry) -> list[Query]:
    tables = [registry.recorded_library.table(RECORDED, m) for m in pool]
    qs = load_mmlu_pro(default_mmlu_pro_paths()["test"])
    return [Query(text=q.question, choices=tuple(q.options), question_id=q.id, category=q.category, gold=q.answer)
            for q in qs if all(q.id in t for t in tables)]


def _fit_data(pool: list[str], registry: ExpertRegistry, questions: list[Query]) -> FitData:
    outcomes = {}
    for m in pool:
        t = registry.recorded_library.table(RECORDED, m)
        outcomes[m] = {q.question_id: FitOutcome(t[q.question_id].correct, t[q.question_id].pred, t[q.question_id].response) for q in questions}
    return FitData(questions, outcomes, f"recorded outputs in {RECORDED}")


async def _time_route(router, singles: list[Query], batches: list[list[Query]]) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    one = []
    for q in singles:
        t0 = time.perf_counter()
        await router.route(q)
        one.append(time.perf_counter() - t0)
    many = []
    for b in batches:
        t0 = time.perf_counter()
        plans = await router.route_batch(b)
        many.append(time.perf_counter() - t0)
        assert len(plans) == len(b)
    return {"1": one, "64": many}


async def main_async(args: argparse.Namespace, console: Console) -> list[tuple]:
    pool = resolve_pool(RECORDED, [args.pool] if args.pool else None)
    registry = ExpertRegistry.from_specs(recorded_specs(RECORDED, pool))
    queries = _queries(pool, registry)
    random.Random(0).shuffle(queries)  # the file is sorted by category; fit on all categories
    fit_qs = queries[: args.fit]
    rest = queries[args.fit :]
    need = args.singles * 2 + 64 * args.batches * 2 + 10
    if len(rest) < need:
        raise SystemExit(f"only {len(rest)} unseen questions covered by the whole pool; need {need}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        async with await Store.open(f"sqlite+aiosqlite:///{tmp}/r.db") as store:
            for i, cls in enumerate((CoERouter, SymbolicMoERouter)):
                services: dict = {"embedder": SentenceEmbedder()}  # the disk cache: fitting is not what we time
                ctx = RouterContext(pool=pool, registry=registry, store=store, seed=0, services=services)
                router = cls(ctx)
                with console.status(f"fitting {router.name} on {len(fit_qs)} recorded questions × {len(pool)} experts"):
                    await router.fit(_fit_data(pool, registry, fit_qs))
                    await router.route_batch(rest[:8])  # loads the model, profile vectors
                # Fresh questions per router so neither finds the other's keywords/embeddings.
                base = 9 + i * (args.singles + 64 * args.batches + 1)
                singles = rest[base : base + args.singles]
                batch_qs = rest[base + args.singles : base + args.singles + 64 * args.batches]
                batches = [batch_qs[k : k + 64] for k in range(0, len(batch_qs), 64)]
                # A fresh embedding cache: the query texts are new to it; the skill vocabulary and
                # profile keywords get embedded once by the untimed warm-up call below.
                cold_embedder = SentenceEmbedder(cache_path=Path(tmp) / f"cold{i}.sqlite")
                cold_embedder._model = services["embedder"]._load()  # same loaded model
                services["embedder"] = cold_embedder
                await router.route(rest[base - 1])
                with console.status(f"timing {router.name} (cold)"):
                    cold = await _time_route(router, singles, batches)
                # cached: the same questions again, their embeddings (and Symbolic-MoE keywords) cached
                # (the cold embedder's cache now holds these questions; the keyword cache too)
                with console.status(f"timing {router.name} (cached)"):
                    warm = await _time_route(router, singles, batches)
                for label, res in (("cold", cold), ("cached", warm)):
                    per1 = res["1"]
                    per64 = res["64"]
                    rows.append((router.name, "1", label, statistics.median(per1) * 1000, statistics.median(per1) * 1000, len(per1)))
                    rows.append((router.name, "64", label, statistics.median(per64) * 1000, statistics.median(per64) * 1000 / 64, len(per64)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", default="small16", help="a named pool or one model (default: small16)")
    ap.add_argument("--fit", type=int, default=300, help="fit questions")
    ap.add_argument("--singles", type=int, default=20, help="queries routed one at a time")
    ap.add_argument("--batches", type=int, default=3, help="batches of 64 routed")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    rows = asyncio.run(main_async(args, console))
    t = Table(title=f"Routing cost, CPU ({args.threads} torch threads), pool {args.pool}; medians")
    for col in ("router", "batch", "embeddings", "ms per call", "ms per query", "calls timed"):
        t.add_column(col, justify="left" if col in ("router", "embeddings") else "right")
    for r in rows:
        t.add_row(r[0], r[1], r[2], f"{r[3]:.1f}", f"{r[4]:.2f}", str(r[5]))
    console.print(t)


if __name__ == "__main__":
    main()
