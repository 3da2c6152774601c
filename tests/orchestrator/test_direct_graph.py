"""The direct runner of the standard graph gives exactly what the LangGraph graph gives."""

from pathlib import Path

from conftest import mmlu_questions
from orchestrator.graph import DirectGraph, build_standard_graph
from orchestrator.pipeline import Runtime
from test_pipeline import config


def _summary(state: dict) -> tuple:
    return (
        state["plan"].router,
        [(o.index, o.expert, o.answer, o.ok) for o in sorted(state["outputs"], key=lambda o: o.index)],
        sorted((c.seq, c.expert, c.answer, c.error_kind, c.prompt_tokens, c.completion_tokens) for c in state["calls"]),
        sorted((s.kind, s.seq) for s in state["steps"]),
        (state["final"].answer, state["final"].method, state["final"].text),
    )


async def test_direct_runner_matches_langgraph(tmp_path: Path) -> None:
    qs = mmlu_questions(4, offset=3)
    async with await Runtime.create(config(tmp_path)) as rt:
        for name in ("all-vote", "single", "random"):
            router = await rt.router(name)
            direct = build_standard_graph(router, rt)
            compiled = build_standard_graph(router, rt, langgraph=True)
            assert isinstance(direct, DirectGraph) and not isinstance(compiled, DirectGraph)
            for q in qs:
                a = await direct.ainvoke({"query": q})
                b = await compiled.ainvoke({"query": q})
                assert _summary(a) == _summary(b), (name, q.question_id)
        # a failing expert (unknown question) goes through both the same way
        router = await rt.router("all-vote")
        from routers.types import Query

        q = Query(text="not a recorded question")
        a = await build_standard_graph(router, rt).ainvoke({"query": q})
        b = await build_standard_graph(router, rt, langgraph=True).ainvoke({"query": q})
        assert _summary(a) == _summary(b)
        assert all(c.error_kind == "unknown_question" for c in a["calls"])
