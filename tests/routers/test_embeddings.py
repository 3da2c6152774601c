"""The routers' embedder: the int8 ONNX export against the float model, coalesced concurrent
calls, and the persistent vector cache (real MiniLM weights from the packaged model)."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from conftest import POOL3, RECORDED, mmlu_questions, recorded_specs
from experts import ExpertRegistry
from routers.coe import CoERouter
from routers.embeddings import EmbeddingCache, SentenceEmbedder, prepare_onnx_embedder, vector_key
from routers.symbolic_moe import SymbolicMoERouter
from routers.types import FitData, FitOutcome, Query, RouterContext


def _fit_data(registry: ExpertRegistry, questions: list[Query]) -> FitData:
    outcomes = {}
    for m in POOL3:
        t = registry.recorded_library.table(RECORDED, m)
        outcomes[m] = {q.question_id: FitOutcome(t[q.question_id].correct, t[q.question_id].pred, t[q.question_id].response)
                       for q in questions}
    return FitData(questions, outcomes, "recorded")


def _split(n_fit: int, n_eval: int) -> tuple[list[Query], list[Query]]:
    qs = mmlu_questions(20_000)  # every covered question: the file is sorted by category
    random.Random(0).shuffle(qs)
    return qs[:n_fit], qs[n_fit : n_fit + n_eval]


@pytest.mark.parametrize("router_name", [
    "coe",
    # Issue #25's 98% is not reached for Symbolic-MoE (measured 90.1%: its top-3 skills move with
    # small shifts of the vector), so int8 is not its default; strict, so reaching it fails here.
    pytest.param("symbolic-moe", marks=pytest.mark.xfail(
        strict=True, reason="#25: int8 decisions agree with float on 90.1% for symbolic-moe (target 98%)")),
])
async def test_int8_onnx_embedder_matches_the_float_model_on_1000_mmlu_pro_questions(tmp_path, router_name) -> None:  # type: ignore[no-untyped-def]
    prepare_onnx_embedder()  # once per machine (`orchestrator models prepare` does it at install)
    fit, evaluate = _split(300, 1000)
    assert len(evaluate) == 1000
    f32 = SentenceEmbedder(backend="torch", cache_path=tmp_path / "v.sqlite")
    int8 = SentenceEmbedder(backend="onnx-int8", cache_path=tmp_path / "v.sqlite")  # one file: keys name the model
    texts = [q.text for q in evaluate]
    a, b = await f32.embed(texts), await int8.embed(texts)
    assert int8.computed == len(set(texts))  # nothing served from the float model's cached vectors
    cos = (a * b).sum(axis=1)
    print(f"cosine int8 vs float on 1000 questions: mean {cos.mean():.4f}, p1 {np.percentile(cos, 1):.4f}, min {cos.min():.4f}")
    assert cos.mean() >= 0.99 and np.percentile(cos, 1) >= 0.98

    registry = ExpertRegistry.from_specs(recorded_specs(POOL3))
    data = _fit_data(registry, fit)
    routers = {"coe": (CoERouter, {}), "symbolic-moe": (SymbolicMoERouter, {"tagger": "embedding"})}
    for cls, options in [routers[router_name]]:
        services = {"embedder": f32}
        router = cls(RouterContext(pool=POOL3, registry=registry, seed=0, services=services), **options)
        await router.fit(data)  # fitted with the float model
        reference = [p.experts for p in await router.route_batch(evaluate)]
        services["embedder"] = int8
        quantised = [p.experts for p in await router.route_batch(evaluate)]
        agree = float(np.mean([x == y for x, y in zip(reference, quantised, strict=True)]))
        print(f"{router.name}: int8 decisions agree with float on {agree:.1%} of 1000 questions")
        assert agree >= 0.98, router.name


async def test_concurrent_decisions_share_embedder_calls_and_match_sequential_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fit, evaluate = _split(120, 24)
    registry = ExpertRegistry.from_specs(recorded_specs(POOL3))
    fit_emb = SentenceEmbedder(backend="torch", cache_path=tmp_path / "fit.sqlite")
    router = CoERouter(RouterContext(pool=POOL3, registry=registry, seed=0, services={"embedder": fit_emb}))
    await router.fit(_fit_data(registry, fit))

    sequential_emb = SentenceEmbedder(backend="torch", cache_path=None)
    sequential_emb._model = fit_emb._load()  # the same loaded weights; nothing cached
    router.ctx.services["embedder"] = sequential_emb
    sequential = [(await router.route(q)).experts for q in evaluate]
    assert sequential_emb.model_calls == len(evaluate)

    concurrent_emb = SentenceEmbedder(backend="torch", cache_path=None, max_pending=4)
    concurrent_emb._model = fit_emb._load()
    router.ctx.services["embedder"] = concurrent_emb
    concurrent = [p.experts for p in await asyncio.gather(*(router.route(q) for q in evaluate))]
    print(f"{len(evaluate)} concurrent decisions: {concurrent_emb.model_calls} embedder calls")
    assert concurrent_emb.model_calls < len(evaluate)
    assert concurrent == sequential


async def test_a_caller_that_gives_up_does_not_break_its_batch() -> None:
    emb = SentenceEmbedder(backend="torch", cache_path=None)
    texts = [f"What is {i} plus {i}?" for i in range(6)]
    tasks = [asyncio.ensure_future(emb.embed([t])) for t in texts]
    await asyncio.sleep(0)
    tasks[3].cancel()  # waits behind the first call, then gives up
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[3], asyncio.CancelledError)
    alone = emb.embed_sync(texts)
    for i, v in enumerate(done):
        if i != 3:
            assert np.allclose(v[0], alone[i], atol=1e-5)


def test_vector_cache_is_keyed_by_model_and_bounded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert vector_key("all-MiniLM-L6-v2", "a question") != vector_key("all-MiniLM-L6-v2:onnx-int8", "a question")
    cache = EmbeddingCache(tmp_path / "c.sqlite", max_entries=3)
    vecs = {f"k{i}": np.full(4, i, dtype=np.float32) for i in range(5)}
    for k, v in vecs.items():
        cache.put({k: v})
    assert len(cache) == 3
    got = cache.get(list(vecs))
    assert sorted(got) == ["k2", "k3", "k4"] and np.array_equal(got["k4"], vecs["k4"])
    # another process (a second connection) sees the same vectors
    assert sorted(EmbeddingCache(tmp_path / "c.sqlite", max_entries=3).get(list(vecs))) == ["k2", "k3", "k4"]
