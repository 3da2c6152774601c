"""Bring your own pool: the generic outcomes format (queries.jsonl, outcomes.jsonl[.gz], models.json)
read by `bench`, `profile build` and the fitted routers, checked against independent
recomputations from the files; the RouterBench fixture is the converted shared data."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import REPO, SHARED
from evals.recorded_pool import resolve_pool
from experts.errors import ConfigError
from orchestrator.bench.runner import BenchOptions, run_benchmark
from store import Store

FIXTURE = REPO / "tests" / "fixtures" / "routerbench_routerdc"
ROUTERBENCH = SHARED / "data" / "recorded" / "routerbench_subset_routerdc"


def read_fixture() -> tuple[dict[str, dict], dict[str, dict[str, dict]]]:
    queries = {q["question_id"]: q for q in map(json.loads, (FIXTURE / "queries.jsonl").read_text().splitlines())}
    outcomes: dict[str, dict[str, dict]] = defaultdict(dict)
    with gzip.open(FIXTURE / "outcomes.jsonl.gz", "rt") as f:
        for d in map(json.loads, f):
            outcomes[d["model"]][d["question_id"]] = d
    return queries, dict(outcomes)


def test_the_fixture_is_the_converted_shared_data(tmp_path: Path) -> None:
    """Re-running the committed converter on ../shared reproduces the fixture; PROVENANCE.md's
    checksums are those of the source files."""
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "convert_routerbench.py"), str(ROUTERBENCH), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout)
    assert counts["queries"] == 3178 and counts["models"] == 11
    assert (tmp_path / "out" / "queries.jsonl").read_bytes() == (FIXTURE / "queries.jsonl").read_bytes()
    assert (tmp_path / "out" / "models.json").read_bytes() == (FIXTURE / "models.json").read_bytes()
    with gzip.open(tmp_path / "out" / "outcomes.jsonl.gz") as a, gzip.open(FIXTURE / "outcomes.jsonl.gz") as b:
        assert a.read() == b.read()
    provenance = (FIXTURE / "PROVENANCE.md").read_text()
    for name in ("prompts.jsonl", "outcomes.jsonl"):
        assert hashlib.sha256((ROUTERBENCH / name).read_bytes()).hexdigest() in provenance
    assert (tmp_path / "out" / "PROVENANCE.md").read_text() == provenance
    # every API model's price has a stated source; open models have a parameter count
    for m in json.loads((FIXTURE / "models.json").read_text()):
        assert m.get("params_b") or (m.get("price_per_mtok") and m.get("price_source")), m


async def test_bench_on_the_fixture_uses_its_split_and_its_logged_dollars(tmp_path: Path) -> None:
    opts = BenchOptions(recorded=FIXTURE, routers=["best-single", "all-vote", "oracle"], out=tmp_path / "out")
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}") as store:
        report = await run_benchmark(opts, store)
        items = {r: {i.question_id: i for i in await store.bench_items(report["run_id"], r)} for r in opts.routers}

    queries, outcomes = read_fixture()
    pool = resolve_pool(FIXTURE, None)
    covered = [q for q in queries if all(q in outcomes[m] for m in pool)]
    train = [q for q in covered if queries[q]["split"] == "train"]
    test = [q for q in covered if queries[q]["split"] == "test"]
    assert report["fit_questions"] == len(train) and report["eval_questions"] == len(test) == len(items["oracle"])
    assert "the queries' own split" in report["fit"]

    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    best = max(pool, key=lambda m: (mean([outcomes[m][q]["score"] for q in train]), -pool.index(m)))
    bs = report["routers"]["best-single"]
    assert bs["fit"]["expert"] == best
    assert bs["accuracy"] == round(mean([outcomes[best][q]["score"] for q in test]), 4)
    # dollar costs are logged for every outcome: the cost axis is USD, the logged ones summed
    assert report["cost_axis"] == "usd" and "cost_units" not in bs
    assert bs["cost_usd"] == round(sum(outcomes[best][q]["cost_usd"] for q in test), 6)
    assert report["routers"]["all-vote"]["cost_usd"] == round(sum(outcomes[m][q]["cost_usd"] for m in pool for q in test), 6)
    assert report["routers"]["oracle"]["accuracy"] == round(mean([max(outcomes[m][q]["score"] for m in pool) for q in test]), 4)

    # all-vote on multiple-choice questions: plurality of the recorded `pred`s (ties to the first
    # pool model's answer), scored by the answering output's recorded score
    checked = 0
    for q in test:
        preds = [outcomes[m][q].get("pred") for m in pool]
        if not any(preds):
            continue
        named = [p for p in preds if p]
        winner = max(dict.fromkeys(named), key=named.count)
        rep = pool[preds.index(winner)]
        assert items["all-vote"][q].pred == winner
        assert items["all-vote"][q].detail["score"] == outcomes[rep][q]["score"], q
        checked += 1
    assert checked > 700
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["routers"]["best-single"]["cost_usd"] == bs["cost_usd"]
    assert "USD" in (tmp_path / "out" / "report.md").read_text()


def write_pool(directory: Path, models: list[dict], rows: list[tuple[str, str, float, str | None]], n: int = 40) -> None:
    """A small free-form pool: n queries (first half train), outcomes (model, qid, score, pred)."""
    directory.mkdir(parents=True)
    (directory / "queries.jsonl").write_text("".join(
        json.dumps({"question_id": f"q{i}", "text": f"Summarise document number {i}.", "category": "sum" if i % 2 else "qa",
                    "split": "train" if i < n // 2 else "test"}) + "\n" for i in range(n)))
    (directory / "outcomes.jsonl").write_text("".join(
        json.dumps({"model": m, "question_id": q, "score": s, **({"pred": p} if p else {}), "response": f"{m} says {q}"}) + "\n"
        for m, q, s, p in rows))
    (directory / "models.json").write_text(json.dumps(models))


async def test_partial_scores_are_averaged_and_unknown_tokens_give_price_units(tmp_path: Path) -> None:
    """F1-like scores, no tokens or costs logged: accuracy is the mean score, the cost axis is
    price units (the called experts' prices summed), an API model gets its documented list price."""
    n = 40
    score = {"open-7b": lambda i: 0.3 + 0.01 * (i % 5), "gpt-4-1106-preview": lambda i: 0.8 - 0.02 * (i % 3),
             "mine": lambda i: 0.55}
    rows = [(m, f"q{i}", round(f(i), 4), None) for m, f in score.items() for i in range(n)]
    models = [{"model": "open-7b", "params_b": 7}, {"model": "gpt-4-1106-preview"},
              {"model": "mine", "price_per_mtok": {"input": 1.0, "output": 3.0}, "price_source": "our invoice, 2026-11"}]
    write_pool(tmp_path / "pool", models, rows, n)
    opts = BenchOptions(recorded=tmp_path / "pool", routers=["best-single", "all-vote", "oracle"], out=tmp_path / "out")
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}") as store:
        report = await run_benchmark(opts, store)

    test = range(n // 2, n)
    bs = report["routers"]["best-single"]
    assert bs["fit"]["expert"] == "gpt-4-1106-preview"
    assert bs["accuracy"] == round(sum(score["gpt-4-1106-preview"](i) for i in test) / len(test), 4)
    assert report["routers"]["oracle"]["accuracy"] == round(sum(max(f(i) for f in score.values()) for i in test) / len(test), 4)
    assert report["scoring"].startswith("mean recorded score")
    # free-form outputs with equal weights: the vote's answer is one real output, scored as recorded
    assert min(min(f(i) for f in score.values()) for i in test) <= report["routers"]["all-vote"]["accuracy"] <= 0.8

    assert report["cost_axis"] == "price_units" and "cost_usd" not in bs
    gpt4 = (10.0 + 30.0) / 2  # evals.prices: the list price (input, output) per Mtok
    assert bs["cost_units"] == round(gpt4 * len(test), 4)
    seven_b = 0.02 * 7  # the stated convention: USD 0.02 per Mtok per billion parameters
    assert report["routers"]["all-vote"]["cost_units_per_question"] == round(gpt4 + seven_b + (1.0 + 3.0) / 2, 6)
    sources = report["pool_info"]["price_sources"]
    assert sources["gpt-4-1106-preview"].startswith("list price: AgentOps-AI/tokencost")
    assert sources["mine"] == "our invoice, 2026-11" and "convention" in sources["open-7b"]
    assert "price units" in report["cost_note"]


async def test_a_model_with_neither_size_nor_price_is_refused(tmp_path: Path) -> None:
    rows = [(m, f"q{i}", 1.0, None) for m in ("open-7b", "house-model") for i in range(4)]
    write_pool(tmp_path / "pool", [{"model": "open-7b", "params_b": 7}], rows, 4)
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}") as store:
        with pytest.raises(ConfigError, match=r"'house-model' has no price.*price_per_mtok"):
            await run_benchmark(BenchOptions(recorded=tmp_path / "pool", routers=["all-vote"]), store)


async def test_a_vote_over_free_form_answers_uses_pred_when_present(tmp_path: Path) -> None:
    """Two of three models give the same `pred`: the vote takes it, and its score is the score of
    the first output that gave it; with no pred anywhere a weighted vote takes the top recruit."""
    n = 40
    rows = []
    for i in range(n):
        rows += [("a", f"q{i}", 0.2, "X"), ("b", f"q{i}", 0.9, "Y"), ("c", f"q{i}", 0.7, "Y")]
    write_pool(tmp_path / "pool", [{"model": m, "params_b": 1} for m in "abc"], rows, n)
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}") as store:
        report = await run_benchmark(BenchOptions(recorded=tmp_path / "pool", routers=["all-vote"]), store)
    assert report["routers"]["all-vote"]["accuracy"] == 0.9

    from routers.aggregation import vote
    from routers.types import ExpertOutput

    outs = [ExpertOutput(0, "a", "free text one", None, weight=0.2), ExpertOutput(1, "b", "other words", None, weight=0.9),
            ExpertOutput(2, "c", "free text two", None, weight=0.5)]
    final = vote(outs, weighted=True)
    assert final.detail["representative"] == "b" and final.method == "weighted-vote:highest-weight"


def test_profile_build_fits_a_router_on_the_train_split_of_a_generic_directory(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"store: sqlite+aiosqlite:///{tmp_path / 'cli.db'}\nexperts: []\n")
    r = CliRunner().invoke(app, ["profile", "build", "--router", "calibrated-vote", "--recorded", str(FIXTURE), "--config", str(cfg),
                                  "--json"])  # the fit summary as JSON on stdout (a closing line goes to stderr)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    queries, outcomes = read_fixture()
    train = [q for q, d in queries.items() if d["split"] == "train" and all(q in t for t in outcomes.values())]
    assert out["fit_questions"] == len(train) and "queries' own split" in out["split"]


async def test_every_fitted_router_fits_on_a_generic_pool(tmp_path: Path) -> None:
    """Each fitted router fits on the fixture's train split and answers its test questions; the
    learned routers' λ trades quality for cost, and CoE budgets in dollars for API models."""
    fitted = ["best-single", "symbolic-moe", "coe", "knn", "mlp", "cascade", "calibrated-vote", "knn@cheap", "mlp@cheap"]
    opts = BenchOptions(recorded=FIXTURE, routers=[*fitted, "all-vote"], limit=150, fit_limit=400,
                        router_options={"knn@cheap": {"lambda": 2.0}, "mlp@cheap": {"lambda": 2.0}})
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}") as store:
        report = await run_benchmark(opts, store)
    assert report["fit_questions"] == 400 and report["eval_questions"] == 150
    for r in fitted:
        m = report["routers"][r]
        assert m["n"] == 150 and m["errors"] == 0 and m["fit"], r
    assert report["routers"]["coe"]["fit"]["budget_kind"] == "cost"  # API models have no parameter count
    for r in ("knn", "mlp"):
        assert report["routers"][r]["fit"]["cost"] == "mean USD per fit question (logged)"
        assert report["routers"][f"{r}@cheap"]["cost_usd"] < report["routers"][r]["cost_usd"], r
    assert report["routers"]["knn"]["fit"]["neighbours"] in (10, 25, 50, 100, 200)
