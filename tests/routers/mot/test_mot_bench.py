"""`bench --router mot` runs MoT's fused decode (its own `run`), not top-1 routing of a plan.

Two tiny experts whose interaction weights are far from zero: the bench's grouped path gives
outputs that differ from the same router with the interaction zeroed (which is exactly top-1
routing: the primary decodes alone), and the bench records the fused method and the plan.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experts.registry import ExpertRegistry
from experts.spec import ExpertSpec
from mot_tiny import tiny_experts, tiny_fusion
from orchestrator.bench.runner import BenchOptions, run_benchmark
from orchestrator.scheduler import GroupedScheduler
from routers.mot.checkpoint import save_checkpoint
from routers.mot.router import MoTRouter
from routers.types import Query, RouterContext
from store.repository import Store

QUESTIONS = [
    ("q1", "what is the capital of france", ["paris", "dog", "cat", "mat"], "A"),
    ("q2", "which enzyme unwinds dna", ["cat", "helicase", "dog", "mat"], "B"),
    ("q3", "what sat on the mat", ["paris", "dna", "cat", "dog"], "C"),
    ("q4", "what is the capital", ["dog", "cat", "mat", "paris"], "D"),
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """Model directories of the tiny pair, a checkpoint with a strong interaction, and the same
    checkpoint with the interaction zeroed (top-1 routing)."""
    root = tmp_path_factory.mktemp("mot-bench")
    experts = tiny_experts()
    dirs = []
    for e in experts:
        d = root / e.name
        e.model.save_pretrained(d)
        e.tokenizer.save_pretrained(d)
        e.name = str(d)
        dirs.append(str(d))
    fused = tiny_fusion(experts, embed_dim=384, out_init_std=0.5)
    save_checkpoint(fused, root / "fused", {"steps": 0})
    top1 = tiny_fusion(experts, embed_dim=384, out_init_std=0.5)
    top1.zero_interaction_()
    save_checkpoint(top1, root / "top1", {"steps": 0})
    return root / "fused", root / "top1", dirs


def _registry(dirs: list[str]) -> ExpertRegistry:
    return ExpertRegistry.from_specs([
        ExpertSpec(name="tiny-a", backend="local", model=dirs[0]),  # type: ignore[arg-type]
        ExpertSpec(name="tiny-b", backend="local", model=dirs[1]),  # type: ignore[arg-type]
    ])


async def test_the_grouped_path_fuses_and_differs_from_top1(pair) -> None:
    fused_ckpt, top1_ckpt, dirs = pair
    registry = _registry(dirs)
    queries = [Query(text=q, choices=tuple(opts), question_id=qid, max_tokens=6) for qid, q, opts, _ in QUESTIONS]
    texts = {}
    for label, ckpt in (("fused", fused_ckpt), ("top1", top1_ckpt)):
        router = MoTRouter(RouterContext(pool=["tiny-a", "tiny-b"], registry=registry), checkpoint=str(ckpt))
        run = await GroupedScheduler(registry).run(router, queries)
        for out in run.outcomes:
            gen = next(s for s in out.steps if s.kind == "generate")
            assert gen.detail["fused"] is True and gen.detail["peers"] and gen.detail["stacks"] == 2
            assert set(gen.detail["stack_boundaries"]) == {gen.detail["expert"], *gen.detail["peers"]}
            assert all(len(b) == 2 for b in gen.detail["stack_boundaries"].values())
            assert out.final.method == "mot" and [c.expert for c in out.calls] == [out.plan.detail["primary"]]
        texts[label] = [o.final.text for o in run.outcomes]
    await registry.aclose()
    assert any(a != b for a, b in zip(texts["fused"], texts["top1"], strict=True)), texts


async def test_bench_router_mot_runs_the_fused_decode(pair, tmp_path: Path) -> None:
    fused_ckpt, _, dirs = pair
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps({
        "question_id": qid, "question": q, "options": opts, "answer": ans, "answer_index": "ABCD".index(ans),
        "category": "other", "cot_content": "", "src": "tiny"}) + "\n" for qid, q, opts, ans in QUESTIONS))
    registry = _registry(dirs)
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}") as store:
        report = await run_benchmark(BenchOptions(
            dataset="mmlu-pro", data=data, routers=["mot"], fit_fraction=0.0, prompt="zero-shot", max_tokens=4,
            router_options={"mot": {"checkpoint": str(fused_ckpt)}}), store, registry=registry)
        items = await store.bench_items(report["run_id"], "mot")
    await registry.aclose()
    assert report["routers"]["mot"]["n"] == len(QUESTIONS) == len(items)
    for item in items:
        assert item.detail["method"] == "mot"  # the fused decode, not a plan run as top-1 + a wasted peer call
        assert item.detail["expert_calls"] == 1 and item.detail["plan"]["primary"] in {"tiny-a", "tiny-b"}
        plan = item.detail["plan"]
        assert set(plan["active"]) == {"tiny-a", "tiny-b"} and set(plan["stack_boundaries"]) == set(plan["active"])
        assert all(len(b) == 2 for b in plan["stack_boundaries"].values())
