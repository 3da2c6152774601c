"""The standard query graph: recruit → fan-out generation (one branch per expert) → aggregate.

    graph = build_standard_graph(router, runtime)                    # runs the nodes directly
    state = await graph.ainvoke({"query": query})
    compiled = build_standard_graph(router, runtime, langgraph=True)  # the same nodes in LangGraph

The two are the same three nodes with the same state merging; the direct runner exists because
LangGraph's executor costs about 3 ms of CPU per query (measured by `orchestrator loadtest`),
more than everything else the gateway does for a single-expert plan.

Multi-round methods build their own graph on the same `QueryState`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from orchestrator import aggregators
from orchestrator.aggregators import ExpertOutput
from orchestrator.state import QueryState
from orchestrator.trace import call_record
from routers.base import Assignment, Query, Router
from store.records import TraceStepRecord

if TYPE_CHECKING:
    from orchestrator.pipeline import Runtime


def plan_summary(plan: Any) -> dict[str, Any]:
    return {
        "experts": [{"expert": a.expert, "weight": a.weight, "reason": a.reason, "fallback": a.fallback} for a in plan.assignments],
        "aggregation": plan.aggregation.model_dump(),
        "detail": plan.detail,
    }


class DirectGraph:
    """Runs recruit → call_expert (concurrently, one per assignment) → aggregate without an executor."""

    def __init__(self, recruit: Any, call_expert: Any, aggregate: Any) -> None:
        self._recruit, self._call_expert, self._aggregate = recruit, call_expert, aggregate

    async def ainvoke(self, state: dict[str, Any]) -> dict[str, Any]:
        st: dict[str, Any] = dict(state)

        def merge(update: dict[str, Any]) -> None:
            for k, v in update.items():
                st[k] = st.get(k, []) + v if k in _LIST_FIELDS else v

        merge(await self._recruit(st))
        assignments = st["plan"].assignments
        if len(assignments) == 1:
            merge(await self._call_expert({"query": st["query"], "assignment": assignments[0], "index": 0}))
        elif assignments:
            for update in await asyncio.gather(*(
                self._call_expert({"query": st["query"], "assignment": a, "index": i}) for i, a in enumerate(assignments)
            )):
                merge(update)
        merge(await self._aggregate(st))
        return st


_LIST_FIELDS = ("outputs", "calls", "steps")


def build_standard_graph(router: Router, runtime: "Runtime", *, langgraph: bool = False) -> Any:
    registry = runtime.registry
    dispatcher = runtime.dispatcher

    async def recruit(state: QueryState) -> dict[str, Any]:
        t0 = time.perf_counter()
        plan = await router.route(state["query"])
        step = TraceStepRecord(kind="route", detail=plan_summary(plan), duration_s=time.perf_counter() - t0)
        return {"plan": plan, "steps": [step]}

    def fan_out(state: QueryState) -> Any:
        from langgraph.types import Send

        plan = state["plan"]
        if not plan.assignments:
            return "aggregate"
        return [
            Send("call_expert", {"query": state["query"], "assignment": a, "index": i})
            for i, a in enumerate(plan.assignments)
        ]

    async def call_expert(branch: dict[str, Any]) -> dict[str, Any]:
        query: Query = branch["query"]
        assignment: Assignment = branch["assignment"]
        t0 = time.perf_counter()
        outcome = await dispatcher.call(assignment)
        calls = []
        for att in outcome.attempts:
            answer = aggregators.extract_answer(query, att.result)
            rec = call_record(registry, att.expert, att.result, answer=answer, fallback_for=att.fallback_for)
            rec.seq = branch["index"] * 10 + len(calls)  # ordered by assignment, then attempt
            calls.append(rec)
        final = outcome.final
        output = ExpertOutput(
            index=branch["index"],
            expert=final.expert,
            text=final.result.text,
            answer=calls[-1].answer,
            weight=assignment.weight,
            ok=final.result.ok,
        )
        step = TraceStepRecord(
            seq=branch["index"],
            kind="generate",
            detail={"expert": final.expert, "assigned": assignment.expert, "ok": final.result.ok,
                    "fallback_used": len(outcome.attempts) > 1},
            duration_s=time.perf_counter() - t0,
        )
        return {"outputs": [output], "calls": calls, "steps": [step]}

    async def aggregate(state: QueryState) -> dict[str, Any]:
        t0 = time.perf_counter()
        plan = state["plan"]
        query = state["query"]
        outputs = sorted(state.get("outputs", []), key=lambda o: o.index)
        agg = plan.aggregation
        calls = []
        if agg.kind == "oracle":
            final = aggregators.oracle(outputs, query.gold)
        elif agg.kind == "llm" and agg.expert and any(o.ok for o in outputs):
            req = aggregators.synthesis_request(query, outputs)
            result = await dispatcher.submit_or_error(agg.expert, req)
            rec = call_record(registry, agg.expert, result, role="aggregator", answer=aggregators.extract_answer(query, result))
            rec.seq = 10_000
            calls.append(rec)
            if result.ok:
                final = aggregators.from_synthesis(query, result, agg.expert)
            else:
                final = aggregators.vote(outputs, weighted=agg.fallback == "weighted-vote")
                final.detail["aggregator_failed"] = result.error.message if result.error else "unknown"
        elif agg.kind == "weighted-vote":
            final = aggregators.vote(outputs, weighted=True)
        elif agg.kind == "single":
            ok = [o for o in outputs if o.ok]
            chosen = ok[0] if ok else (outputs[0] if outputs else None)
            final = aggregators.FinalAnswer(
                text=chosen.text if chosen else "", answer=chosen.answer if chosen else None, method="single",
                detail={"expert": chosen.expert} if chosen else {},
            )
        else:
            final = aggregators.vote(outputs)
        step = TraceStepRecord(
            seq=10_000,
            kind="aggregate",
            detail={"method": final.method, "answer": final.answer, "tally": final.tally, **final.detail},
            duration_s=time.perf_counter() - t0,
        )
        return {"final": final, "calls": calls, "steps": [step]}

    if not langgraph:
        return DirectGraph(recruit, call_expert, aggregate)
    from langgraph.graph import END, START, StateGraph  # imported here: about 1 s on first use

    g = StateGraph(QueryState)
    g.add_node("recruit", recruit)
    g.add_node("call_expert", call_expert)
    g.add_node("aggregate", aggregate)
    g.add_edge(START, "recruit")
    g.add_conditional_edges("recruit", fan_out, ["call_expert", "aggregate"])
    g.add_edge("call_expert", "aggregate")
    g.add_edge("aggregate", END)
    return g.compile()
