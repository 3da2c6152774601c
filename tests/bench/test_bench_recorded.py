"""The benchmark on recorded outputs, checked against an independent recomputation from the
recorded `correct` fields."""

import gzip
import json
from pathlib import Path

from conftest import RECORDED
from evals.splits import split_fit_eval
from orchestrator.bench.runner import BenchOptions, run_benchmark
from store import Store

POOL = ["Meta-Llama-3.1-8B-Instruct", "Phi-3-mini-4k-instruct", "Yi-34B", "Mixtral-8x7B-Instruct-v0.1", "gemma-7b"]


def load_correct(models: list[str]) -> dict[str, dict[str, tuple[bool, str | None]]]:
    out = {}
    for m in models:
        with gzip.open(RECORDED / "responses" / f"{m}.jsonl.gz", "rt") as f:
            out[m] = {str(d["question_id"]): (bool(d["correct"]), d["pred"]) for d in map(json.loads, f)}
    return out


async def test_recorded_bench_matches_independent_recomputation(tmp_path: Path) -> None:
    opts = BenchOptions(dataset="mmlu-pro", recorded=RECORDED, pool=POOL, routers=["best-single", "all-vote", "oracle", "random"],
                        limit=400, seed=7, out=tmp_path / "out")
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}") as store:
        report = await run_benchmark(opts, store)
        items = {r: {i.question_id: i for i in await store.bench_items(report["run_id"], r)} for r in opts.routers}

    table = load_correct(POOL)
    gold = {}
    for line in (RECORDED.parents[1] / "mmlu_pro" / "test.jsonl").open():
        d = json.loads(line)
        gold[str(d["question_id"])] = d["answer"]
    evaluated = list(items["oracle"])
    assert len(evaluated) == 400 == report["n_questions"]

    # fit and evaluation ids are disjoint
    covered = [q for q in gold if all(q in table[m] for m in POOL)]
    fit_ids, eval_ids = split_fit_eval(covered, 0.3, 7)
    assert set(evaluated) <= eval_ids and not set(evaluated) & fit_ids

    # best-single: the pool model with the highest fit accuracy; its eval accuracy from `correct`
    fit_acc = {m: sum(table[m][q][0] for q in fit_ids) / len(fit_ids) for m in POOL}
    best = max(POOL, key=lambda m: fit_acc[m])
    assert report["routers"]["best-single"]["fit"]["expert"] == best
    expected = sum(table[best][q][0] for q in evaluated) / len(evaluated)
    assert abs(report["routers"]["best-single"]["accuracy"] - round(expected, 4)) < 1e-9

    # oracle: any pool model correct
    expected = sum(any(table[m][q][0] for m in POOL) for q in evaluated) / len(evaluated)
    assert abs(report["routers"]["oracle"]["accuracy"] - round(expected, 4)) < 1e-9

    # all-vote: plurality of the recorded preds, ties to the earliest pool model's answer
    def vote(q: str) -> str | None:
        preds = [table[m][q][1] for m in POOL if table[m][q][1]]
        if not preds:
            return None
        return max(dict.fromkeys(preds), key=lambda p: preds.count(p))

    expected = sum(vote(q) == gold[q] for q in evaluated) / len(evaluated)
    assert abs(report["routers"]["all-vote"]["accuracy"] - round(expected, 4)) < 1e-9
    assert report["routers"]["all-vote"]["expert_calls_per_question"] == 5.0
    assert report["routers"]["random"]["expert_calls_per_question"] == 1.0

    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert set(results["routers"]) == set(opts.routers) and results["pool"] == POOL
    assert (out / "plot.png").stat().st_size > 10_000 and "| router |" in (out / "report.md").read_text()


async def test_a_killed_run_resumes_without_redoing_work(tmp_path: Path) -> None:
    opts = BenchOptions(dataset="mmlu-pro", recorded=RECORDED, pool=POOL[:3], routers=["all-vote"], limit=50, seed=1)
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    async with await Store.open(url) as store:
        first = await run_benchmark(opts, store)
        run_id = first["run_id"]
        # Simulate a run killed after 20 questions: drop the rest of its outcomes.
        items = await store.bench_items(run_id, "all-vote")
        from sqlalchemy import delete

        from store.models import BenchItemRow

        async with store._sessions() as s, s.begin():
            await s.execute(delete(BenchItemRow).where(BenchItemRow.question_id.in_([i.question_id for i in items[20:]])))
        assert len(await store.bench_items(run_id, "all-vote")) == 20
        second = await run_benchmark(opts, store)
        third = await run_benchmark(opts, store)  # nothing left to answer
    assert second["run_id"] == run_id and second["resumed"]
    assert second["routers"]["all-vote"]["accuracy"] == first["routers"]["all-vote"]["accuracy"]
    assert second["routers"]["all-vote"]["n"] == 50
    # Wall time counts the work of every session that answered the items, not only what was left.
    assert second["routers"]["all-vote"]["wall_s"] > 0
    assert third["routers"]["all-vote"]["wall_s"] == second["routers"]["all-vote"]["wall_s"]


async def test_a_pool_named_in_the_config_expands_and_coverage_is_reported(tmp_path: Path) -> None:
    opts = BenchOptions(dataset="mmlu-pro", recorded=RECORDED, pool=["mine"], named_pools={"mine": POOL[:2]},
                        routers=["all-vote"], limit=20)
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}") as store:
        report = await run_benchmark(opts, store)
    assert report["pool"] == POOL[:2]
    info = report["pool_info"]
    assert info["covered_by_every_model"] <= info["questions_in_dataset"] == 12032
    assert set(info["per_model"]) == set(POOL[:2])
