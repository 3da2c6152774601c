"""Routing cost: the time one routing decision takes, beside the time of its embedding, CPU only.

    .venv/bin/python benchmarks/routing_cost.py [--json FILE] [--embedder torch,onnx-int8] [--pool small16]
        [--fit 300] [--singles 40] [--batches 3] [--threads 2]

Every fitted embedding router (CoE, Symbolic-MoE with the embedding tagger, knn, mlp) is fitted on
the recorded MMLU-Pro outputs in ../shared/data/recorded/mmlu_pro_tiger (the recorded-outcome
fitting `orchestrator bench --recorded` does), then routes questions it has never seen, whose
embeddings are not cached (what a new question pays):

* batch 1: one `route` call per query, p50 over `--singles` queries;
* batch 64: one `route_batch` of 64 queries, the median call time / 64;
* the embedding alone at batch 1: `embed([text])` of another new question, timed alternately
  with the batch-1 decisions so that both see the same machine load.

`--json FILE` writes {"<router>": {"batch1_p50_ms", "batch64_per_query_ms", "embedding_batch1_p50_ms"}}
for the first embedder named; each further embedder's rows are keyed "<router>@<embedder>".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from experts import ExpertRegistry
from evals.datasets import default_mmlu_pro_paths, load_mmlu_pro
from evals.recorded_pool import recorded_specs, resolve_pool
from routers.embeddings import SentenceEmbedder
from routers.registry import build_router
from routers.types import FitData, FitOutcome, Query, RouterContext
from store import Store

RECORDED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "recorded" / "mmlu_pro_tiger"
# (name, options): the fitted routers whose decision embeds the query.
ROUTERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("coe", {}),
    ("symbolic-moe", {"tagger": "embedding"}),
    ("knn", {}),
    ("mlp", {}),
)


def _queries(pool: list[str], registry: ExpertRegistry) -> list[Query]:
    tables = [registry.recorded_library.table(RECORDED, m) for m in pool]
    qs = load_mmlu_pro(default_mmlu_pro_paths()["test"])
    return [Query(text=q.question, choices=tuple(q.options), question_id=q.id, category=q.category, gold=q.answer)
            for q in qs if all(q.id in t for t in tables)]


def _fit_data(pool: list[str], registry: ExpertRegistry, questions: list[Query]) -> FitData:
    outcomes = {}
    for m in pool:
        t = registry.recorded_library.table(RECORDED, m)
        outcomes[m] = {q.question_id: FitOutcome(t[q.question_id].correct, t[q.question_id].pred, t[q.question_id].response)
                       for q in questions}
    return FitData(questions, outcomes, f"recorded outputs in {RECORDED}")


def _embedder(backend: str, cache: Path) -> SentenceEmbedder:
    # A cache of its own per run: the timed questions are new to it, as a new question is.
    if backend == "torch":
        return SentenceEmbedder(cache_path=cache)
    return SentenceEmbedder(cache_path=cache, backend=backend)  # type: ignore[call-arg]


async def _time_router(router: Any, embedder: SentenceEmbedder, singles: list[Query], probes: list[Query],
                       batches: list[list[Query]]) -> dict[str, float]:
    one, emb = [], []
    for q, p in zip(singles, probes, strict=True):
        t0 = time.perf_counter()
        await embedder.embed([p.text])
        emb.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await router.route(q)
        one.append(time.perf_counter() - t0)
    many = []
    for b in batches:
        t0 = time.perf_counter()
        plans = await router.route_batch(b)
        many.append(time.perf_counter() - t0)
        assert len(plans) == len(b)
    return {"batch1_p50_ms": statistics.median(one) * 1000, "batch64_per_query_ms": statistics.median(many) * 1000 / 64,
            "embedding_batch1_p50_ms": statistics.median(emb) * 1000}


async def main_async(args: argparse.Namespace, console: Console) -> dict[str, dict[str, float]]:
    pool = resolve_pool(RECORDED, [args.pool] if args.pool else None)
    registry = ExpertRegistry.from_specs(recorded_specs(RECORDED, pool))
    queries = _queries(pool, registry)
    random.Random(0).shuffle(queries)  # the file is sorted by category; fit on all categories
    fit_qs, rest = queries[: args.fit], queries[args.fit :]
    per_run = 2 * args.singles + 64 * args.batches + 8
    backends = [b.strip() for b in args.embedder.split(",") if b.strip()]
    need = per_run * len(ROUTERS) * len(backends)
    if len(rest) < need:
        raise SystemExit(f"only {len(rest)} unseen questions covered by the whole pool; need {need}")
    out: dict[str, dict[str, float]] = {}
    fresh = iter(range(0, need, per_run))
    with tempfile.TemporaryDirectory() as tmp:
        for bi, backend in enumerate(backends):
            embedder = _embedder(backend, Path(tmp) / f"{backend}.sqlite")
            async with await Store.open(f"sqlite+aiosqlite:///{tmp}/{backend}.db") as store:
                for name, options in ROUTERS:
                    ctx = RouterContext(pool=pool, registry=registry, store=store, seed=0, services={"embedder": embedder})
                    router = build_router(name, ctx, dict(options))
                    with console.status(f"[{backend}] fitting {name} on {len(fit_qs)} recorded questions × {len(pool)} experts"):
                        await router.fit(_fit_data(pool, registry, fit_qs))
                    base = next(fresh)
                    chunk = rest[base : base + per_run]
                    warm, chunk = chunk[:8], chunk[8:]
                    await router.route_batch(warm[:4])  # loads the model and anything the router keeps warm
                    for q in warm[4:]:
                        await router.route(q)
                    singles, probes = chunk[: args.singles], chunk[args.singles : 2 * args.singles]
                    bq = chunk[2 * args.singles :]
                    batches = [bq[k : k + 64] for k in range(0, 64 * args.batches, 64)]
                    with console.status(f"[{backend}] timing {name}"):
                        res = await _time_router(router, embedder, singles, probes, batches)
                    out[name if bi == 0 else f"{name}@{backend}"] = res
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--embedder", default="torch", help="embedding backends, comma-separated (the first one's rows are keyed by router name)")
    ap.add_argument("--pool", default="small16", help="a named pool or one model (default: small16)")
    ap.add_argument("--fit", type=int, default=300, help="fit questions")
    ap.add_argument("--singles", type=int, default=40, help="queries routed one at a time (and as many embedded alone)")
    ap.add_argument("--batches", type=int, default=3, help="batches of 64 routed")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    res = asyncio.run(main_async(args, console))
    t = Table(title=f"Routing cost, CPU ({args.threads} threads), pool {args.pool}; new questions (embeddings not cached)")
    for col in ("router", "batch 1 p50 ms", "embedding alone p50 ms", "added ms", "batch 64 ms/query"):
        # Router names are kept whole (a narrow terminal folds the numbers instead).
        t.add_column(col, justify="left" if col == "router" else "right", no_wrap=col == "router",
                     min_width=max(map(len, res)) if col == "router" else None, overflow="fold")
    for name, r in res.items():
        t.add_row(name, f"{r['batch1_p50_ms']:.2f}", f"{r['embedding_batch1_p50_ms']:.2f}",
                  f"{r['batch1_p50_ms'] - r['embedding_batch1_p50_ms']:.2f}", f"{r['batch64_per_query_ms']:.2f}")
    console.print(t)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
