"""Grouped vs naive scheduling, and dispatcher coalescing, on real tiny in-process models.

    .venv/bin/python benchmarks/scheduling.py [--questions 40] [--max-tokens 8] [--requests 200]

1. Grouped (Symbolic-MoE batch inference) vs naive per-query scheduling: two local models
   (SmolLM2-135M-Instruct, gemma-3-270m), residency capacity 1, every question to both models.
   Prints model loads and wall time for both, and their ratios.
2. Dispatcher coalescing: N concurrent single-question requests to one expert; prints the number
   of backend calls against ceil(N / max_batch_size).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time

from experts import ExpertRegistry, ExpertSpec, GenerationRequest
from evals.datasets import default_mmlu_pro_paths, load_mmlu_pro
from evals.prompts import mmlu_pro_zero_shot_prompt
from orchestrator.dispatcher import Dispatcher
from orchestrator.residency import ResidencyManager
from orchestrator.scheduler import GroupedScheduler, run_naive
from routers.types import Query, RouterContext
from routers.baselines import AllVoteRouter


def specs(max_tokens: int, batch: int) -> list[ExpertSpec]:
    common = {"backend": "local", "max_new_tokens": max_tokens, "max_batch_size": batch, "max_concurrency": 1, "timeout_s": 900}
    return [
        ExpertSpec(name="smollm2-135m", model="smollm2-135m-instruct", **common),
        ExpertSpec(name="gemma-3-270m", model="gemma-3-270m", chat_template=False, **common),
    ]


async def scheduling(n: int, max_tokens: int) -> dict[str, float]:
    test = load_mmlu_pro(default_mmlu_pro_paths()["test"])[:n]
    queries = [Query(text=q.question, choices=tuple(q.options), question_id=q.id, gold=q.answer, prompt=mmlu_pro_zero_shot_prompt(q), max_tokens=max_tokens) for q in test]
    out: dict[str, float] = {}
    for mode in ("grouped", "naive"):
        reg = ExpertRegistry.from_specs(specs(max_tokens, batch=8))
        router = AllVoteRouter(RouterContext(pool=reg.names, registry=reg))
        residency = ResidencyManager(reg, capacity=1)
        t0 = time.perf_counter()
        if mode == "grouped":
            run = await GroupedScheduler(reg, residency).run(router, queries)
        else:
            run = await run_naive(reg, residency, router, queries)
        wall = time.perf_counter() - t0
        await residency.release_all()
        await reg.aclose()
        out[f"{mode}_loads"] = run.stats.model_loads
        out[f"{mode}_calls"] = run.stats.expert_calls
        out[f"{mode}_wall_s"] = wall
        print(f"{mode:>8}: {run.stats.expert_calls} expert calls, {run.stats.model_loads} model loads, {wall:.1f} s wall")
    print(f"loads naive/grouped = {out['naive_loads'] / out['grouped_loads']:.1f}x; "
          f"wall naive/grouped = {out['naive_wall_s'] / out['grouped_wall_s']:.2f}x")
    return out


async def coalescing(n: int, batch: int) -> None:
    reg = ExpertRegistry.from_specs([specs(4, batch)[0].model_copy(update={"max_wait_ms": 20.0, "max_queue": 4096})])
    await reg.backend("smollm2-135m").load()
    async with Dispatcher(reg) as d:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(d.submit("smollm2-135m", GenerationRequest.chat(f"Say the number {i}.", max_tokens=4)) for i in range(n)))
        wall = time.perf_counter() - t0
        st = d.stats["smollm2-135m"]
    await reg.aclose()
    ok = sum(r.ok for r in results)
    print(f"coalescing: {n} concurrent requests -> {st.backend_calls} backend calls "
          f"(ceil({n}/{batch}) = {math.ceil(n / batch)}), batch sizes {dict(sorted(st.batch_sizes.items()))}, {ok} ok, {wall:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    asyncio.run(scheduling(args.questions, args.max_tokens))
    asyncio.run(coalescing(args.requests, args.batch))


if __name__ == "__main__":
    main()
