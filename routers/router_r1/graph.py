"""Router-R1's LangGraph graph on `QueryState`: think → route → information → think … → answer.

    graph = build_router_r1_graph(router)                     # once per router
    state = await graph.ainvoke({"query": query}, run_config(runtime, max_turns))

Each policy generation is a `think` step (and a `policy` expert call); a search it ends with is a
`route` step; the callee's reply is an `information` step (and a `callee` expert call); the end
is an `answer` step. Policy and callee calls both go through the runtime (`ExpertRuntime.generate`,
the orchestrator's dispatcher), so concurrent queries' calls batch per expert. The runtime is
run-scoped (LangGraph's `configurable`), so one compiled graph serves every caller, streaming
ones included: each policy turn is a `generate_answer` call whose `<answer>` part, if it writes
one, streams to a streaming caller as the policy produces it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from experts.types import ChatMessage, GenerationRequest
from routers.tracing import call_record
from routers.types import Aggregation, Assignment, ExpertOutput, ExpertRuntime, FinalAnswer, Plan, QueryState
from routers.router_r1.episode import Episode, Step, truncate_reply
from routers.router_r1.parsing import answer_so_far
from routers.router_r1.prompts import STOP_STRINGS, agent_prompt
from routers.router_r1.reward import answer_letter, call_cost
from store.records import TraceStepRecord

if TYPE_CHECKING:
    from routers.router_r1.router import RouterR1Router

DETAIL_CHARS = 4000  # trace details keep this much of each text


def policy_request(prompt: str, transcript: str, *, max_tokens: int, temperature: float, seed: int | None,
                   question_id: str | None = None) -> GenerationRequest:
    """The next policy generation: the user prompt, then the assistant turn continued as raw text."""
    user = ChatMessage(role="user", content=prompt)
    common: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "top_p": 1.0 if temperature == 0 else 0.95,
                              "stop": STOP_STRINGS, "seed": seed, "question_id": question_id}
    if not transcript:
        return GenerationRequest(messages=(user,), **common)
    return GenerationRequest(messages=(user, ChatMessage(role="assistant", content=transcript)), continue_final_message=True, **common)


def run_config(runtime: ExpertRuntime, max_turns: int) -> RunnableConfig:
    """The per-run config of one episode: the runtime its calls go through, and the step bound."""
    return {"configurable": {"runtime": runtime}, "recursion_limit": recursion_limit(max_turns)}


def _runtime(config: RunnableConfig) -> ExpertRuntime:
    return config["configurable"]["runtime"]


def build_router_r1_graph(router: "RouterR1Router") -> Any:
    registry = router.ctx.registry
    opts = router.opts

    async def prepare(state: QueryState) -> dict[str, Any]:
        t0 = time.perf_counter()
        query = state["query"]
        prompt = await router.prompt_for(query)
        step = TraceStepRecord(seq=0, kind="prompt", detail={"policy": router.policy, "pool": router.callee_pool,
                                                             "prompt": prompt[:DETAIL_CHARS]}, duration_s=time.perf_counter() - t0)
        return {"scratch": {"episode": Episode.start(opts.max_turns, opts.prefill), "prompt": prompt, "assignments": []}, "steps": [step]}

    async def think(state: QueryState, config: RunnableConfig) -> dict[str, Any]:
        t0 = time.perf_counter()
        query, scratch = state["query"], state["scratch"]
        ep: Episode = scratch["episode"]
        req = policy_request(scratch["prompt"], ep.transcript, max_tokens=opts.max_tokens, temperature=opts.temperature,
                             seed=opts.seed if query.seed is None else query.seed, question_id=query.question_id)
        pending = ep.pending  # a prefill opens this turn: its answer tag may be there already
        # Any turn may be the answering one; only an <answer> it writes reaches a streaming caller.
        result = await _runtime(config).generate_answer(router.policy, req, select=lambda text: answer_so_far(pending + text))
        seq = 1 + 3 * ep.turn
        rec = call_record(registry, router.policy, result, role="policy")
        rec.seq = seq
        if not result.ok:  # the policy itself failed: end with no answer, keep the error in the trace
            ep.done = True
            step = TraceStepRecord(seq=seq, kind="think", detail={"turn": ep.turn, "error": rec.error_message}, duration_s=time.perf_counter() - t0)
            return {"scratch": {**scratch, "last": None}, "calls": [rec], "steps": [step]}
        scratch = {**scratch, "finish_reason": result.finish_reason}
        st = ep.accept(result.text, router.resolve, result.stop_string)
        if st.outcome == "no-action":
            ep.observe(st, None)  # no search or answer: empty observation, the loop goes on
        step = TraceStepRecord(seq=seq, kind="think", detail={"turn": st.turn, "routing": st.routing, "outcome": st.outcome,
                                                                "text": st.text[:DETAIL_CHARS]}, duration_s=time.perf_counter() - t0)
        return {"scratch": {**scratch, "last": st}, "calls": [rec], "steps": [step]}

    def next_after_think(state: QueryState) -> str:
        ep: Episode = state["scratch"]["episode"]
        st: Step | None = state["scratch"].get("last")
        if ep.done:
            return "answer"
        if st is not None and st.outcome in ("route", "invalid-route", "unknown-expert"):
            return "route"
        return "think"

    async def route(state: QueryState) -> dict[str, Any]:
        st: Step = state["scratch"]["last"]
        assert st.route is not None
        detail = {"turn": st.turn, "outcome": st.outcome, "name": st.route.name, "query": st.route.query,
                  "valid": st.route.valid, "reason": st.route.reason, "expert": st.call.expert if st.call else None}
        if st.outcome == "unknown-expert":
            detail["reason"] = f"{st.route.name!r} names no expert of the pool ({', '.join(router.callee_pool)})"
        return {"steps": [TraceStepRecord(seq=2 + 3 * st.turn, kind="route", detail=detail)]}

    async def information(state: QueryState, config: RunnableConfig) -> dict[str, Any]:
        t0 = time.perf_counter()
        query, scratch = state["query"], state["scratch"]
        ep: Episode = scratch["episode"]
        st: Step = scratch["last"]
        seq = 3 + 3 * st.turn
        calls, outputs, assignments = [], [], list(scratch["assignments"])
        if st.call is None:
            ep.observe(st, None)
        else:
            req = GenerationRequest.chat(agent_prompt(st.call.query), max_tokens=opts.callee_max_tokens or query.max_tokens or 512,
                                         temperature=0.0, seed=42, question_id=query.question_id)
            result = await _runtime(config).generate(st.call.expert, req)
            rec = call_record(registry, st.call.expert, result, role="callee")
            rec.seq = seq
            calls.append(rec)
            outputs.append(ExpertOutput(index=len(assignments), expert=st.call.expert, text=result.text, answer=None, ok=result.ok))
            assignments.append(Assignment(expert=st.call.expert, request=req, reason=f"turn {st.turn}: {st.call.query}"))
            reply = None
            if result.ok:
                tok = router.policy_tokenizer()
                reply = truncate_reply(result.text, opts.obs_tokens, *((tok.encode, tok.decode) if tok is not None else (None, None)))
            price = registry.spec(st.call.expert).price_per_mtok.output
            ep.observe(st, reply, cost=call_cost(result.completion_tokens, price))
        detail = {"turn": st.turn, "expert": st.call.expert if st.call else None, "ok": st.ok,
                  "observation": st.observation[:DETAIL_CHARS]}
        step = TraceStepRecord(seq=seq, kind="information", detail=detail, duration_s=time.perf_counter() - t0)
        return {"scratch": {**scratch, "assignments": assignments}, "calls": calls, "outputs": outputs, "steps": [step]}

    async def answer(state: QueryState) -> dict[str, Any]:
        query, scratch = state["query"], state["scratch"]
        ep: Episode = scratch["episode"]
        text = ep.answer
        parsed = None
        if text is not None:
            parsed = answer_letter(text, query.n_options) if query.is_multiple_choice else text
        detail = {"answer": text, "turns": ep.turn, "routes": ep.routes_executed, "cost_micro_usd": ep.cost,
                  "finished": "answer" if text is not None else "no answer tag"}
        plan = Plan(router=router.name, assignments=scratch["assignments"], aggregation=Aggregation(kind="single"),
                    detail={"policy": router.policy, "transcript": ep.transcript[:DETAIL_CHARS], **detail})
        # An answer tag closes the turn (a stop string); without one the last turn says why it ended.
        finish = "stop" if text is not None else scratch.get("finish_reason") or "stop"
        final = FinalAnswer(text=text or "", answer=parsed, method="router-r1", detail=detail, finish_reason=finish)
        step = TraceStepRecord(seq=10_000, kind="answer", detail=detail)
        return {"final": final, "plan": plan, "steps": [step]}

    g = StateGraph(QueryState)
    for name, fn in (("prepare", prepare), ("think", think), ("route", route), ("information", information), ("answer", answer)):
        g.add_node(name, fn)
    g.add_edge(START, "prepare")
    g.add_edge("prepare", "think")
    g.add_conditional_edges("think", next_after_think, ["answer", "route", "think"])
    g.add_edge("route", "information")
    g.add_edge("information", "think")
    g.add_edge("answer", END)
    return g.compile()


def recursion_limit(max_turns: int) -> int:
    """LangGraph steps one episode can take (3 per routed turn, the final turn, prepare, answer)."""
    return 3 * (max_turns + 1) + 5

