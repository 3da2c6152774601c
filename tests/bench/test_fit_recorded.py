"""`bench --recorded A --fit-recorded B`: fit on every question B covers, evaluate on every question
A covers; two disjoint directories cut from one reproduce the one-directory split exactly, and
directories that share questions (or a B that covers none) are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import RECORDED
from evals.recorded_split import split_recorded
from evals.splits import split_fit_eval
from experts.errors import ConfigError
from orchestrator.bench.runner import BenchOptions, run_benchmark
from routers.types import RoutingError
from store import Store

POOL = ["Meta-Llama-3.1-8B-Instruct", "Phi-3-mini-4k-instruct", "Yi-34B", "Mixtral-8x7B-Instruct-v0.1", "gemma-7b"]
DATASET = RECORDED.parents[1] / "mmlu_pro" / "test.jsonl"
# Fitted routers whose fit is cheap on CPU (category profiles) plus the unfitted references.
ROUTERS = ["best-single", "calibrated-vote", "cascade", "all-vote", "oracle"]
N_QUESTIONS = 900


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first N_QUESTIONS MMLU-Pro test questions (a smaller dataset file keeps the test fast)."""
    path = tmp_path_factory.mktemp("data") / "test.jsonl"
    with DATASET.open(encoding="utf-8") as src:
        path.write_text("".join(line for _, line in zip(range(N_QUESTIONS), src, strict=False)), encoding="utf-8")
    return path


def subset_ids(subset: Path) -> list[str]:
    return [str(json.loads(line)["question_id"]) for line in subset.read_text().splitlines() if line.strip()]


async def bench(tmp_path: Path, name: str, **kw: object) -> tuple[dict, dict[str, dict[str, object]]]:
    options: dict[str, object] = {"dataset": "mmlu-pro", "pool": POOL, "routers": ROUTERS, "seed": 7, "fit_fraction": 0.3, **kw}
    opts = BenchOptions(**options)  # type: ignore[arg-type]
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}") as store:
        report = await run_benchmark(opts, store)
        items = {r: {i.question_id: (i.pred, i.correct) for i in await store.bench_items(report["run_id"], r)} for r in ROUTERS}
    return report, items


async def test_two_disjoint_directories_reproduce_the_one_directory_split(tmp_path: Path, subset: Path) -> None:
    single, single_items = await bench(tmp_path, "single", recorded=RECORDED, data=subset)

    summary = split_recorded(RECORDED, tmp_path / "fit", tmp_path / "eval", fit_fraction=0.3, seed=7, pool=POOL,
                             ids=subset_ids(subset))
    assert summary.fit_questions + summary.eval_questions + summary.left_out_questions <= N_QUESTIONS
    pair, pair_items = await bench(tmp_path, "pair", recorded=tmp_path / "eval", fit_recorded=tmp_path / "fit", data=subset)

    # the same questions on each side as the seeded split inside the one directory
    assert pair["fit_questions"] == single["fit_questions"] == summary.fit_questions > 150
    assert pair["eval_questions"] == single["eval_questions"] == summary.eval_questions > 350
    tables = _tables()
    fit_ids, eval_ids = split_fit_eval([q for q in subset_ids(subset) if all(q in t for t in tables)], 0.3, 7)
    assert set(single_items["oracle"]) == eval_ids and len(fit_ids) == single["fit_questions"]
    for r in ROUTERS:
        assert set(pair_items[r]) == set(single_items[r]), r
        assert pair_items[r] == single_items[r], r  # same answer on every evaluated question
        assert pair["routers"][r]["accuracy"] == single["routers"][r]["accuracy"], r
    assert pair["routers"]["best-single"]["fit"]["expert"] == single["routers"]["best-single"]["fit"]["expert"]
    assert "fit on every question" in pair["fit"] and f"({summary.fit_questions})" in pair["fit"]
    assert "seeded split" in single["fit"]

    # the evaluated ids are exactly those the evaluation directory holds, none of the fit directory's
    eval_ids = {str(json.loads(line)["question_id"]) for line in _lines(tmp_path / "eval", POOL[0])}
    fit_ids = {str(json.loads(line)["question_id"]) for line in _lines(tmp_path / "fit", POOL[0])}
    assert set(pair_items["oracle"]) == eval_ids and not eval_ids & fit_ids


def _tables() -> list[set[str]]:
    return [{str(json.loads(line)["question_id"]) for line in _lines(RECORDED, m)} for m in POOL]


def _lines(directory: Path, model: str) -> list[str]:
    import gzip

    with gzip.open(directory / "responses" / f"{model}.jsonl.gz", "rt") as f:
        return [line for line in f if line.strip()]


async def test_directories_that_share_questions_are_refused_with_the_count(tmp_path: Path, subset: Path) -> None:
    ids = subset_ids(subset)
    split_recorded(RECORDED, tmp_path / "fit", tmp_path / "eval", fit_fraction=0.3, seed=7, pool=POOL, ids=ids)
    # The whole source as the fit side shares every evaluation question with the evaluation side.
    with pytest.raises(ConfigError, match=r"share (\d+) question id") as err:
        await bench(tmp_path, "overlap", recorded=tmp_path / "eval", fit_recorded=RECORDED, data=subset)
    n_eval = len(_lines(tmp_path / "eval", POOL[0]))
    assert f"share {n_eval} question id(s)" in str(err.value)
    # Two splits with different seeds overlap partly: refused too, with the exact count.
    split_recorded(RECORDED, tmp_path / "fit2", tmp_path / "eval2", fit_fraction=0.3, seed=8, pool=POOL, ids=ids)
    shared = ({json.loads(x)["question_id"] for x in _lines(tmp_path / "fit2", POOL[0])}
              & {json.loads(x)["question_id"] for x in _lines(tmp_path / "eval", POOL[0])})
    assert shared
    with pytest.raises(ConfigError, match=f"share {len(shared)} question id"):
        await bench(tmp_path, "overlap2", recorded=tmp_path / "eval", fit_recorded=tmp_path / "fit2", data=subset)


async def test_a_fit_directory_covering_none_of_the_questions_is_refused(tmp_path: Path, subset: Path) -> None:
    ids = subset_ids(subset)
    # A fit directory of questions outside the evaluated dataset file covers none of its questions.
    split_recorded(RECORDED, tmp_path / "fit", tmp_path / "eval", fit_fraction=1.0, seed=7, pool=POOL,
                   ids=[str(json.loads(line)["question_id"]) for _, line in zip(range(2 * N_QUESTIONS), DATASET.open(), strict=False)][N_QUESTIONS:])
    with pytest.raises(ConfigError, match="covers none"):
        await bench(tmp_path, "none", recorded=RECORDED, fit_recorded=tmp_path / "fit", data=subset)
    # A fit directory without a pool model is refused by name.
    split_recorded(RECORDED, tmp_path / "fit3", tmp_path / "eval3", fit_fraction=0.3, seed=7, pool=POOL[:2], ids=ids)
    with pytest.raises(ConfigError, match="no recorded outcomes for pool model"):
        await bench(tmp_path, "missing", recorded=RECORDED, fit_recorded=tmp_path / "fit3", data=subset)


async def test_a_router_that_needs_fit_data_and_gets_none_is_an_error(tmp_path: Path, subset: Path) -> None:
    with pytest.raises(RoutingError, match="needs fit data"):
        await bench(tmp_path, "nofit", recorded=RECORDED, data=subset, fit_fraction=0.0)


def test_the_cli_splits_benches_the_pair_and_refuses_an_overlap(tmp_path: Path, subset: Path) -> None:
    """`orchestrator recorded split` then `orchestrator bench --fit-recorded`: the printed table fits
    80 columns with every router name whole, and states the fit and evaluation counts."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    runner = CliRunner()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"store: sqlite+aiosqlite:///{tmp_path / 'cli.db'}\nexperts: []\n")
    ids = ",".join(POOL)
    r = runner.invoke(app, ["recorded", "split", str(RECORDED), "--fit-out", str(tmp_path / "fit"), "--eval-out",
                            str(tmp_path / "eval"), "--fit-fraction", "0.3", "--seed", "7", "--pool", ids])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["fit_questions"] > 2000 and abs(summary["fit_questions"] - 0.3 * (summary["fit_questions"] + summary["eval_questions"])) <= 1
    common = ["bench", "--data", str(subset), "--pool", ids, "--config", str(cfg), "-r", "best-single",
              "-r", "calibrated-vote", "-r", "all-vote", "--seed", "7"]
    r = runner.invoke(app, [*common, "--recorded", str(tmp_path / "eval"), "--fit-recorded", str(tmp_path / "fit")])
    assert r.exit_code == 0, r.output
    assert all(len(line) <= 80 for line in r.stdout.splitlines()), r.stdout
    assert "calibrated-vote" in r.stdout and "best-single" in r.stdout
    # the fit side is the whole fit directory restricted to the dataset file's questions
    in_subset = set(subset_ids(subset))
    n_fit, n_eval = (len({str(json.loads(x)["question_id"]) for x in _lines(tmp_path / part, POOL[0])} & in_subset)
                     for part in ("fit", "eval"))
    assert f"fit questions: {n_fit}, evaluated: {n_eval}\n" in r.stdout

    r = runner.invoke(app, [*common, "--recorded", str(tmp_path / "eval"), "--fit-recorded", str(RECORDED)])
    assert r.exit_code == 2 and "share" in r.output and "question id" in r.output and "Traceback" not in r.output
