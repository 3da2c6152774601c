"""The `mot` router: Mixture of Thoughts, run in-process.

    orchestrator train mot --out out/mot --store          # train, then save as the artefact mot/default
    orchestrator ask "Which enzyme unwinds DNA?" --router mot
    # or point at a checkpoint: routers: {mot: {checkpoint: out/mot}} in the config file

Routing (once per query): the frozen sentence embedding of the query → the router MLP → top-K
active experts, the top-1 being the primary. Generation: the primary decodes while its peers run
in lockstep on the same growing text (`decode.generate`). The trace holds the route decision
(active experts, primary, scores) and one call record for the fused generation.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from experts.types import GenerationResult
from routers.base import Assignment, Plan, Query, Router, RouterContext, RoutingError
from routers.mot.data import mmlu_prompt
from routers.mot.model import MoTFusion, Route

if TYPE_CHECKING:
    from routers.mot.experts import FrozenExpert

ARTEFACT_KIND = "mot"


@dataclass
class _Loaded:
    fusion: MoTFusion
    experts: list["FrozenExpert"]
    names: list[str]  # registry names of the experts (their model ids when not registered)
    source: str
    embed: Any


def query_prompt(query: Query) -> str:
    """The plain text MoT's experts share (the format it was trained on)."""
    if query.prompt:
        return query.prompt
    if query.choices:
        return mmlu_prompt(query.text, list(query.choices))
    return f"Question: {query.text.strip()}\nAnswer:"


class MoTRouter(Router):
    name = "mot"
    description = "Mixture of Thoughts: top-K frozen experts fused by cross-attention at every stack; the top-1 decodes"

    def __init__(
        self,
        ctx: RouterContext,
        *,
        checkpoint: str | None = None,
        artefact: str = "default",
        max_new_tokens: int = 64,
    ) -> None:
        super().__init__(ctx)
        self.checkpoint = checkpoint
        self.artefact = artefact
        self.max_new_tokens = max_new_tokens
        self._loaded: _Loaded | None = None
        self._load_lock = asyncio.Lock()
        self._gen_lock = threading.Lock()  # one fused model instance: one generation at a time

    # ---------------------------------------------------------------- loading
    async def _load(self) -> _Loaded:
        async with self._load_lock:
            if self._loaded is None:
                blob, source = await self._checkpoint_blob()
                self._loaded = await asyncio.to_thread(self._load_sync, blob, source)
            return self._loaded

    async def _checkpoint_blob(self) -> tuple[bytes | str, str]:
        if self.checkpoint:
            return self.checkpoint, str(self.checkpoint)
        rec = None
        if self.ctx.store is not None:
            rec = await self.ctx.store.load_artefact(ARTEFACT_KIND, self.artefact)
        if rec is None or rec.payload is None:
            raise RoutingError(
                f"router 'mot' has no trained checkpoint: run `orchestrator train mot --out DIR --store` "
                f"(stores artefact {ARTEFACT_KIND}/{self.artefact}) or set routers.mot.checkpoint to a checkpoint path"
            )
        return rec.payload, f"store artefact {ARTEFACT_KIND}/{self.artefact} v{rec.version}"

    def _load_sync(self, blob: bytes | str, source: str) -> _Loaded:
        from routers.embeddings import shared_embedder
        from routers.mot.checkpoint import load_checkpoint
        from routers.mot.session import load_experts, query_encoder

        try:
            fusion, _meta = load_checkpoint(blob if isinstance(blob, bytes) else Path(blob))
        except Exception as e:  # ConfigError and friends: a bad path or a bad artefact
            raise RoutingError(f"router 'mot': {e}") from None
        experts = load_experts(fusion.cfg.experts, fusion.cfg.n_stacks)
        for e, width in zip(experts, fusion.cfg.hidden_sizes, strict=True):
            if e.hidden_size != width:
                raise RoutingError(f"router 'mot': expert {e.name} has width {e.hidden_size}, the checkpoint expects {width}")
        return _Loaded(fusion, experts, [self._registry_name(m) for m in fusion.cfg.experts], source,
                       query_encoder(shared_embedder(self.ctx.services)))

    def _registry_name(self, model_id: str) -> str:
        for name in self.ctx.registry.names:
            spec = self.ctx.registry.spec(name)
            if spec.backend == "local" and spec.model == model_id:
                return name
        return model_id

    # ---------------------------------------------------------------- routing
    def _route_sync(self, loaded: _Loaded, text: str) -> Route:
        with torch.no_grad():
            return loaded.fusion.route(loaded.embed([text])[0])

    async def route(self, query: Query) -> Plan:
        loaded = await self._load()
        # The router was trained on the embedding of the shared prompt text: embed the same here.
        r = await asyncio.to_thread(self._route_sync, loaded, query_prompt(query))
        return self._plan(loaded, query, r)

    def _plan(self, loaded: _Loaded, query: Query, r: Route) -> Plan:
        probs = r.probs.tolist()
        req = query.expert_request(max_tokens=query.max_tokens or self.max_new_tokens)
        assignments = [
            Assignment(expert=loaded.names[m], request=req, weight=probs[m], reason="primary" if m == r.primary else "peer")
            for m in r.active
        ]
        detail = {
            "primary": loaded.names[r.primary],
            "active": [loaded.names[m] for m in r.active],
            "scores": {loaded.names[m]: round(s, 4) for m, s in enumerate(r.scores.tolist())},
            "checkpoint": loaded.source,
        }
        return Plan(router=self.name, assignments=assignments, aggregation={"kind": "single"}, detail=detail)

    def _generate_sync(self, loaded: _Loaded, query: Query, plan: Plan) -> GenerationResult:
        from routers.mot.decode import generate

        idx = {n: i for i, n in enumerate(loaded.names)}
        active = [idx[a.expert] for a in plan.assignments]
        r = loaded.fusion.fixed_route(active[0], active[1:])
        with self._gen_lock:
            # Base experts continue the shared "Question: ... Answer:" format with a new question.
            stop = (*query.stop, "\nQuestion:")
            g = generate(loaded.fusion, loaded.experts, r, query_prompt(query), max_new_tokens=query.max_tokens or self.max_new_tokens,
                         stop=stop, temperature=query.temperature or 0.0, seed=query.seed)
        return GenerationResult(text=g.text, prompt_tokens=g.prompt_tokens, completion_tokens=len(g.token_ids),
                                latency_s=g.latency_s, finish_reason=g.finish_reason)

    # ---------------------------------------------------------------- graph
    def build_graph(self, runtime: Any) -> Any:
        """route → fuse: one in-process generation by the primary with its peers in lockstep."""
        from langgraph.graph import END, START, StateGraph

        from orchestrator import aggregators
        from orchestrator.aggregators import ExpertOutput, FinalAnswer
        from orchestrator.graph import plan_summary
        from orchestrator.state import QueryState
        from orchestrator.trace import call_record
        from store.records import TraceStepRecord

        async def recruit(state: QueryState) -> dict[str, Any]:
            t0 = time.perf_counter()
            plan = await self.route(state["query"])
            step = TraceStepRecord(kind="route", detail=plan_summary(plan), duration_s=time.perf_counter() - t0)
            return {"plan": plan, "steps": [step]}

        async def fuse(state: QueryState) -> dict[str, Any]:
            query, plan = state["query"], state["plan"]
            loaded = await self._load()
            t0 = time.perf_counter()
            result = await asyncio.to_thread(self._generate_sync, loaded, query, plan)
            primary = plan.assignments[0].expert
            answer = aggregators.extract_answer(query, result)
            rec = call_record(runtime.registry, primary, result, answer=answer)
            peers = [a.expert for a in plan.assignments[1:]]
            step = TraceStepRecord(seq=0, kind="generate", duration_s=time.perf_counter() - t0,
                                   detail={"expert": primary, "peers": peers, "fused": True, "tokens": result.completion_tokens,
                                           "s_per_token": round(result.latency_s / max(result.completion_tokens, 1), 4)})
            final = FinalAnswer(text=result.text, answer=answer, method="mot", detail={"primary": primary, "peers": peers})
            output = ExpertOutput(index=0, expert=primary, text=result.text, answer=answer)
            return {"outputs": [output], "calls": [rec], "steps": [step], "final": final}

        g = StateGraph(QueryState)
        g.add_node("recruit", recruit)
        g.add_node("fuse", fuse)
        g.add_edge(START, "recruit")
        g.add_edge("recruit", "fuse")
        g.add_edge("fuse", END)
        return g.compile()
