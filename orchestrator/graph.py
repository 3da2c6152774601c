"""One query as a graph: recruit → fan-out generation (one branch per expert) → aggregate.

    graph = build_standard_graph(router, runtime)                    # runs the nodes directly
    state = await graph.ainvoke({"query": query})
    compiled = build_standard_graph(router, runtime, langgraph=True)  # the same nodes in LangGraph

Both run the executor's own pieces (`Executor.call_assignment`, `Executor.aggregate`), so they
give what chat requests give. The direct form is what the pipeline runs (`Router.run` on the
interactive executor); LangGraph's executor costs about 3 ms of CPU per query (measured by
`orchestrator loadtest`), more than everything else the gateway does for a single-expert plan,
so the LangGraph form is kept for tooling that wants a compiled graph.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from routers.base import Router
from routers.types import QueryState
from store.records import TraceStepRecord

if TYPE_CHECKING:
    from orchestrator.execution import Executor
    from orchestrator.pipeline import Runtime


class DirectGraph:
    """`router.run` on the runtime's interactive executor, presented as a graph's final state."""

    def __init__(self, router: Router, executor: "Executor") -> None:
        self._router, self._executor = router, executor

    async def ainvoke(self, state: dict[str, Any]) -> dict[str, Any]:
        (out,) = await self._router.run([state["query"]], self._executor)
        return {**state, "plan": out.plan, "outputs": out.outputs, "calls": out.calls, "steps": out.steps, "final": out.final}


def build_standard_graph(router: Router, runtime: "Runtime", *, langgraph: bool = False) -> Any:
    executor = runtime.executor
    if not langgraph:
        return DirectGraph(router, executor)

    from langgraph.graph import END, START, StateGraph  # imported here: about 1 s on first use
    from langgraph.types import Send

    async def recruit(state: QueryState) -> dict[str, Any]:
        t0 = time.perf_counter()
        plan = await router.route(state["query"])
        step = TraceStepRecord(kind="route", detail=plan.summary(), duration_s=time.perf_counter() - t0)
        return {"plan": plan, "steps": [step]}

    def fan_out(state: QueryState) -> Any:
        plan = state["plan"]
        if not plan.assignments:
            return "aggregate"
        return [Send("call_expert", {"query": state["query"], "assignment": a, "index": i}) for i, a in enumerate(plan.assignments)]

    async def call_expert(branch: dict[str, Any]) -> dict[str, Any]:
        part = await executor.call_assignment(branch["query"], branch["assignment"], branch["index"])
        return {"outputs": [part.output], "calls": part.calls, "steps": [part.step]}

    async def aggregate(state: QueryState) -> dict[str, Any]:
        outputs = sorted(state.get("outputs", []), key=lambda o: o.index)
        final, calls, step = await executor.aggregate(state["query"], state["plan"], outputs)
        return {"final": final, "calls": calls, "steps": [step]}

    g = StateGraph(QueryState)
    g.add_node("recruit", recruit)
    g.add_node("call_expert", call_expert)
    g.add_node("aggregate", aggregate)
    g.add_edge(START, "recruit")
    g.add_conditional_edges("recruit", fan_out, ["call_expert", "aggregate"])
    g.add_edge("call_expert", "aggregate")
    g.add_edge("aggregate", END)
    return g.compile()
