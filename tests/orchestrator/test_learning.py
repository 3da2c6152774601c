"""Learning from traffic: feedback and checkable answers become per-expert fit outcomes, a refit
from traffic stores a new version, and the refit job runs exactly once per trigger however many
replicas check it."""

import asyncio
from pathlib import Path

from conftest import POOL3, RECORDED, mmlu_questions
from fit_fixtures import recorded_fit_data
from experts.spec import OrchestratorConfig
from orchestrator.learning import RefitJob, refit_from_traffic, trace_outcomes, traffic_fit_data
from orchestrator.pipeline import Runtime
from store.records import ExpertCallRecord, FeedbackRecord, TraceRecord


def call(seq: int, expert: str, answer: str | None, role: str = "expert", error: str | None = None) -> ExpertCallRecord:
    return ExpertCallRecord(seq=seq, expert=expert, role=role, answer=answer, error_kind=error, output=f"({answer})")


def trace(answer: str | None, calls: list[ExpertCallRecord], meta: dict | None = None) -> TraceRecord:
    return TraceRecord(id="t", router="symbolic-moe", query_text="q", answer=answer, calls=calls,
                       query_meta={"question_id": "7", "choices": ["a", "b", "c", "d"], **(meta or {})})


def test_outcomes_from_answer_feedback_call_feedback_and_checkable_answers() -> None:
    calls = [call(0, "A", "B"), call(1, "B", "B"), call(2, "C", "D"), call(3, "D", None, error="timeout"),
             call(4, "E", "B", role="aggregator")]
    right = trace_outcomes(trace("B", calls), [FeedbackRecord(trace_id="t", score=1.0)])
    # agreeing experts were right, the one that said D was wrong (one option is right); failed calls and aggregators say nothing
    assert {m: o.correct for m, o in right.items()} == {"A": True, "B": True, "C": False}
    wrong = trace_outcomes(trace("B", calls), [FeedbackRecord(trace_id="t", score=-1.0)])
    assert {m: o.correct for m, o in wrong.items()} == {"A": False, "B": False}  # D might be right: left out
    assert wrong["A"].quality == 0.0 and right["A"].quality == 1.0
    # Feedback on one call rates that expert only, and later feedback overrides earlier.
    one = trace_outcomes(trace("B", calls), [FeedbackRecord(trace_id="t", score=-1.0), FeedbackRecord(trace_id="t", score=1.0, call_seq=2)])
    assert {m: o.correct for m, o in one.items()} == {"A": False, "B": False, "C": True}
    # A checkable answer scores every call, with no feedback at all.
    auto = trace_outcomes(trace("B", calls, {"metadata": {"answer": "d"}}), [])
    assert {m: o.correct for m, o in auto.items()} == {"A": False, "B": False, "C": True}


def test_a_multiple_choice_call_that_chose_no_option_was_wrong_whatever_the_rating() -> None:
    # F answered but chose no option (its letter could not be read): it cannot have been right
    calls = [call(0, "A", "B"), call(1, "F", None), call(2, "C", "D"), call(3, "S", None, role="shadow")]
    for score in (1.0, -1.0):
        out = trace_outcomes(trace("B", calls), [FeedbackRecord(trace_id="t", score=score)])
        assert out["F"].correct is False and out["S"].correct is False and out["F"].quality == 0.0
        assert out["A"].correct is (score > 0)
        assert ("C" in out) is (score > 0)  # another option is wrong only when the answer was right
    # a free-text question: no option to choose, so an unread answer says nothing
    free = trace_outcomes(trace("B", calls, {"choices": None}), [FeedbackRecord(trace_id="t", score=1.0)])
    assert set(free) == {"A"}


def config(tmp_path: Path, url: str | None = None) -> OrchestratorConfig:
    return OrchestratorConfig.model_validate({
        "store": url or f"sqlite+aiosqlite:///{tmp_path / 'learn.db'}",
        "experts": [{"name": m, "backend": "recorded", "path": str(RECORDED), "model": m} for m in POOL3],
    })


async def answer_and_rate(rt: Runtime, router: str, qs: list) -> list[str]:  # type: ignore[type-arg]
    """Answer each question, then post correctness as feedback (1 right, -1 wrong), as a client would."""
    ids = []
    for q in qs:
        res = await rt.answer(q.model_copy(update={"gold": None}), router)  # the router never sees the key
        await rt.store.add_feedback(FeedbackRecord(trace_id=res.trace_id, score=1.0 if res.final.answer == q.gold else -1.0))
        ids.append(res.trace_id)
    return ids


async def test_feedback_becomes_the_fit_data_an_offline_fit_uses_and_refits_a_new_version(tmp_path: Path) -> None:
    qs = mmlu_questions(60, offset=4000)
    async with await Runtime.create(config(tmp_path)) as rt:
        rt.fit_poll_s = 0.0
        await answer_and_rate(rt, "symbolic-moe", qs)  # cold: the uniform prior, three recruits each
        data, n = await traffic_fit_data(rt.store, POOL3)
        truth = recorded_fit_data(POOL3, 60, 4000)
        assert {q.question_id for q in data.questions} == {q.question_id for q in qs} == {q.question_id for q in truth.questions}
        # Every outcome derived from feedback is the real recorded correctness of that expert.
        derived = [(m, qid, o.correct) for m, rows in data.outcomes.items() for qid, o in rows.items()]
        assert len(derived) == n and n >= 60
        assert all(truth.outcomes[m][qid].correct == c for m, qid, c in derived)
        # A refit from traffic stores a new version; the runtime routes with it from the next request.
        out = await refit_from_traffic(rt, "symbolic-moe")
        assert out["version"] == 1 and out["outcomes"] == n
        res = await rt.answer(qs[0], "symbolic-moe")
        trace = await rt.store.get_trace(res.trace_id)
        assert trace.plan.detail["fit_version"] == 1 and "prior" not in trace.plan.detail
        [listed] = await rt.store.list_artefacts("symbolic-moe-profile")
        assert listed.meta["fit"]["source"] == "traffic" and listed.meta["fit"]["outcomes"] == n


async def test_two_replicas_refit_exactly_once_per_trigger(tmp_path: Path, store_url: str) -> None:
    qs = mmlu_questions(80, offset=4100)
    cfg = config(tmp_path, store_url)
    async with await Runtime.create(cfg) as a, await Runtime.create(cfg) as b:
        jobs = [RefitJob(rt, owner=name, routers=["symbolic-moe"], threshold=30) for rt, name in ((a, "replica-a"), (b, "replica-b"))]
        await answer_and_rate(a, "symbolic-moe", qs[:20])
        assert await asyncio.gather(*(j.check() for j in jobs)) == [[], []]  # 20 outcomes: below the threshold
        await answer_and_rate(b, "symbolic-moe", qs[20:40])
        done = await asyncio.gather(*(j.check() for j in jobs))
        assert sum(len(d) for d in done) == 1  # both saw the trigger; one refitted
        assert [r.version for r in await a.store.list_artefacts("symbolic-moe-profile")] == [1]
        assert await asyncio.gather(*(j.check() for j in jobs)) == [[], []]  # the watermark moved: no second refit
        await answer_and_rate(a, "symbolic-moe", qs[40:80])
        done = await asyncio.gather(*(j.check() for j in jobs), *(j.check() for j in jobs))
        assert sum(len(d) for d in done) == 1
        assert [r.version for r in await a.store.list_artefacts("symbolic-moe-profile")] == [1, 2]
        state = await a.store.refit_state("symbolic-moe-profile", "default", POOL3)
        assert state == {"outcomes_used": 80, "refits": 2, "lease_owner": None}


def test_profile_build_from_traces_by_hand(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    cfg_file = tmp_path / "learn.yaml"
    experts = "\n".join(f"  - {{name: {m}, backend: recorded, path: {RECORDED}, model: {m}}}" for m in POOL3)
    cfg_file.write_text(f"store: sqlite+aiosqlite:///{tmp_path / 'learn.db'}\nexperts:\n{experts}\n")

    async def traffic() -> None:
        async with await Runtime.create(config(tmp_path)) as rt:
            await answer_and_rate(rt, "coe", mmlu_questions(30, offset=4300))

    asyncio.run(traffic())
    runner = CliRunner()
    r = runner.invoke(app, ["profile", "build", "--router", "symbolic-moe", "--from-traces", "--since", "1h", "--config", str(cfg_file)])
    assert r.exit_code == 0, r.output
    assert "stored symbolic-moe v1 · fitted on" in r.stdout and "expert outcomes from traffic (30 rated questions, since" in r.stdout
    r = runner.invoke(app, ["profile", "build", "--router", "symbolic-moe", "--since", "2099-01-01", "--config", str(cfg_file)])
    assert r.exit_code == 2 and "no rated traffic for its pool yet" in r.stderr
    r = runner.invoke(app, ["profile", "build", "--router", "symbolic-moe", "--since", "yesterday", "--config", str(cfg_file)])
    assert r.exit_code == 2 and "--since" in r.stderr
    listed = runner.invoke(app, ["profile", "list", "--config", str(cfg_file), "--json"])
    [row] = __import__("json").loads(listed.stdout)
    assert row["version"] == 1 and row["in_use"] and row["source"] == "traffic" and row["pool"] == POOL3
