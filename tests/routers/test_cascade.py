"""Cascades (adaptive k) and calibrated votes: the stopping rule checked against the recorded
answers, the cross-validated choice within the call budget, the replay arithmetic."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import RECORDED
from orchestrator.bench.runner import BenchOptions, run_benchmark
from routers.cascade import _Trajectories, weighted_answer
from store import Store

POOL = ["Meta-Llama-3.1-8B-Instruct", "Phi-3-mini-4k-instruct", "Yi-34B", "Mixtral-8x7B-Instruct-v0.1", "gemma-7b"]


def test_weighted_answer_leads_and_ties() -> None:
    assert weighted_answer(["A", "B", "A"], [1.0, 1.5, 1.0]) == ("A", 0.5, {"A": 2.0, "B": 1.5})
    assert weighted_answer(["B", "A"], [1.0, 1.0])[:2] == ("B", 0.0)  # a tie goes to the answer seen first
    assert weighted_answer([None, None], [1.0, 2.0]) == (None, 0.0, {})


def test_the_replay_stops_where_a_step_by_step_cascade_stops() -> None:
    rng = np.random.default_rng(0)
    n, m, k_max = 200, 5, 4
    answers = [[str(rng.choice(list("ABC"))) for _ in range(m)] for _ in range(n)]
    quality = np.array([[float(a == "A") for a in row] for row in answers])
    weights = rng.uniform(0.2, 2.0, size=(n, m))
    orders = [list(rng.permutation(m)) for _ in range(n)]
    traj = _Trajectories.replay(orders, answers, weights, quality, k_max)
    for k_min, margin in ((1, 0.5), (2, 1.0), (2, 0.0), (3, 2.5)):
        scores, calls = [], []
        for r in range(n):
            asked: list[int] = []
            for e in orders[r][:k_max]:
                asked.append(e)
                winner, lead, _ = weighted_answer([answers[r][j] for j in asked], [weights[r, j] for j in asked])
                if len(asked) >= k_min and lead >= margin or len(asked) == k_max:
                    break
            best = max((j for j in asked if answers[r][j] == winner), key=lambda j: weights[r, j])
            scores.append(quality[r, best])
            calls.append(len(asked))
        assert traj.evaluate(k_min, margin) == pytest.approx((np.mean(scores), np.mean(calls)))


def preds(models: list[str]) -> dict[str, dict[str, str | None]]:
    out = {}
    for m in models:
        with gzip.open(RECORDED / "responses" / f"{m}.jsonl.gz", "rt") as f:
            out[m] = {str(d["question_id"]): d["pred"] for d in map(json.loads, f)}
    return out


async def test_the_cascade_escalates_until_the_answers_agree(tmp_path: Path) -> None:
    data = tmp_path / "test.jsonl"
    with (RECORDED.parents[1] / "mmlu_pro" / "test.jsonl").open() as src:
        data.write_text("".join(line for _, line in zip(range(1200), src, strict=False)))
    opts = BenchOptions(recorded=RECORDED, data=data, pool=POOL, seed=3,
                        routers=["cascade", "cascade@free", "calibrated-vote", "all-vote"],
                        router_options={"cascade": {"confidence": "none", "margin": 1.0, "k_max": 4, "k_min": 2, "budget": 4.0},
                                        "cascade@free": {"budget": 3.0}})
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}") as store:
        report = await run_benchmark(opts, store)
        items = await store.bench_items(report["run_id"], "cascade")
    table = preds(POOL)
    stops = {2: 0, 3: 0, 4: 0}
    for it in items:
        called = it.detail["experts"]
        assert 2 <= len(called) <= 4 and len(set(called)) == len(called)
        answers = [table[e][it.question_id] for e in called]
        # stop at the first k ≥ 2 whose leading answer is a whole vote ahead, else at k_max
        for k in range(2, len(called)):
            assert weighted_answer(answers[:k], [1.0] * k)[1] < 1.0, (it.question_id, answers)
        winner, lead, _ = weighted_answer(answers, [1.0] * len(answers))
        assert lead >= 1.0 or len(called) == 4
        assert it.pred == winner
        stops[len(called)] += 1
    assert all(v > 0 for v in stops.values())  # it really adapts k
    assert report["routers"]["cascade"]["expert_calls_per_question"] == pytest.approx(
        sum(k * v for k, v in stops.items()) / len(items), abs=1e-3)

    free = report["routers"]["cascade@free"]
    assert free["fit"]["cv_calls_per_question"] <= 3.0 and free["expert_calls_per_question"] <= 3.3
    assert report["routers"]["calibrated-vote"]["expert_calls_per_question"] == 3.0
