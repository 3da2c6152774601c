"""Descriptors from the registry, with latency and per-category accuracy from the store."""

from pathlib import Path

from conftest import POOL3, RECORDED, recorded_specs
from experts import ExpertRegistry
from orchestrator.bench.runner import BenchOptions, run_benchmark
from routers.router_r1.descriptors import accuracy_from_bench_results, build_descriptors
from store.records import ExpertCallRecord, TraceRecord
from store.repository import Store


async def test_descriptors_without_store_hold_registry_facts() -> None:
    from experts.spec import Price

    reg = ExpertRegistry.from_specs(recorded_specs(POOL3, price_per_mtok=Price(input=0.1, output=0.3), description="a recorded model"))
    descs = await build_descriptors(reg, POOL3)
    assert [d.name for d in descs] == POOL3
    d = descs[0]
    assert d.mean_latency_s is None and d.accuracy == {}
    assert d.render("prose") == f"- {POOL3[0]}: a recorded model"
    assert "price $0.3 per 1M output tokens" in d.render("full")
    await reg.aclose()


async def test_descriptors_use_measured_latency_and_stored_benchmark_accuracy(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    async with await Store.open(url) as store:
        # A real benchmark run on recorded outputs in which Yi-34B answers alone (router single).
        opts = BenchOptions(dataset="mmlu-pro", recorded=RECORDED, pool=POOL3, routers=["single"], limit=40, seed=3,
                            router_options={"single": {"expert": "Yi-34B"}}, out=None)
        report = await run_benchmark(opts, store)
        await store.save_trace(TraceRecord(id="t1", router="single", query_text="q", calls=[
            ExpertCallRecord(expert="Yi-34B", latency_s=0.5), ExpertCallRecord(expert="Yi-34B", latency_s=1.5)]))
        reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
        descs = {d.name: d for d in await build_descriptors(reg, POOL3, store)}
        await reg.aclose()
    yi = descs["Yi-34B"]
    assert yi.latency_calls >= 2 and yi.mean_latency_s is not None
    expected = report["routers"]["single"]["per_category"]
    assert {c: (a.n, a.accuracy) for c, a in yi.accuracy.items()} == {c: (m["n"], m["accuracy"]) for c, m in expected.items()}
    assert descs["Phi-3-mini-4k-instruct"].accuracy == {}  # it never answered alone
    assert "accuracy by category" in yi.render("full")


def test_accuracy_merges_runs_weighted_by_n_and_skips_multi_expert_routers() -> None:
    runs = [
        {"routers": {"single": {"expert_usage": {"A": 10}, "expert_calls_per_question": 1.0,
                                "per_category": {"math": {"n": 10, "accuracy": 0.5}}}}},
        {"routers": {"best-single": {"expert_usage": {"A": 30}, "expert_calls_per_question": 1.0,
                                     "per_category": {"math": {"n": 30, "accuracy": 0.9}}},
                     "all-vote": {"expert_usage": {"A": 30, "B": 30}, "expert_calls_per_question": 2.0,
                                  "per_category": {"math": {"n": 30, "accuracy": 0.1}}}}},
    ]
    acc = accuracy_from_bench_results("A", runs)
    assert acc["math"].n == 40 and acc["math"].accuracy == 0.8
