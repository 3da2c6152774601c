"""The `mot` router: Mixture of Thoughts, run in-process.

    orchestrator train mot --out out/mot --store          # train, then save as the artefact mot/default
    orchestrator ask "Which enzyme unwinds DNA?" --router mot
    # or point at a checkpoint: routers: {mot: {checkpoint: out/mot}} in the config file

Routing (once per query): the frozen sentence embedding of the query → the router MLP → top-K
active experts, the top-1 being the primary. Generation: the primary decodes while its peers run
in lockstep on the same growing text (`decode.generate`). The trace holds the route decision
(active experts, primary, scores), a generate step naming the primary, its peers and the number
of stacks (interaction points), and one call record for the fused generation. Chat, batch jobs
and `orchestrator bench --router mot` all answer through `run`, so all of them fuse.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from experts.backends.streaming import StopHoldback
from experts.types import GenerationResult
from routers.base import Router
from routers.tracing import call_record
from routers.types import (
    AnswerSink,
    Assignment,
    ExpertOutput,
    ExpertRuntime,
    FinalAnswer,
    Plan,
    Query,
    QueryOutcome,
    RouterContext,
    RoutingError,
    extract_answer,
)
from store.records import TraceStepRecord
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

    def _generate_sync(self, loaded: _Loaded, query: Query, plan: Plan, on_text: Callable[[str], bool] | None = None) -> GenerationResult:
        from routers.mot.decode import generate

        idx = {n: i for i, n in enumerate(loaded.names)}
        active = [idx[a.expert] for a in plan.assignments]
        r = loaded.fusion.fixed_route(active[0], active[1:])
        with self._gen_lock:
            # Base experts continue the shared "Question: ... Answer:" format with a new question.
            stop = (*query.stop, "\nQuestion:")
            g = generate(loaded.fusion, loaded.experts, r, query_prompt(query), max_new_tokens=query.max_tokens or self.max_new_tokens,
                         stop=stop, temperature=query.temperature or 0.0, seed=query.seed, on_text=on_text)
        return GenerationResult(text=g.text, prompt_tokens=g.prompt_tokens, completion_tokens=len(g.token_ids),
                                latency_s=g.latency_s, finish_reason=g.finish_reason)

    # ---------------------------------------------------------------- answering
    async def run(self, queries: Sequence[Query], runtime: ExpertRuntime) -> list[QueryOutcome]:
        """Route every query (one embedding batch), then one fused decode per query: the primary
        generates while its peers run in lockstep (in-process; one generation at a time). A
        streaming caller (one query) gets the primary's text token by token."""
        loaded = await self._load()
        sink = runtime.answer_sink if len(queries) == 1 else None
        t0 = time.perf_counter()
        plans = await self.route_batch(list(queries))
        route_share = (time.perf_counter() - t0) / max(1, len(plans))
        outcomes = []
        for query, plan in zip(queries, plans, strict=True):
            t1 = time.perf_counter()
            primary = plan.assignments[0].expert
            on_text, stop_streaming = self._streamer(sink, primary, query) if sink is not None else (None, None)
            try:
                result = await asyncio.to_thread(self._generate_sync, loaded, query, plan, on_text)
            finally:
                if stop_streaming is not None:
                    stop_streaming()  # cancelled: the worker ends at its next token
            peers = [a.expert for a in plan.assignments[1:]]
            answer = extract_answer(query, result)
            rec = call_record(runtime.registry, primary, result, answer=answer)
            steps = [
                TraceStepRecord(seq=0, kind="route", detail=plan.summary(), duration_s=route_share),
                TraceStepRecord(seq=0, kind="generate", duration_s=time.perf_counter() - t1,
                                detail={"expert": primary, "peers": peers, "fused": True, "tokens": result.completion_tokens,
                                        "stacks": loaded.fusion.cfg.n_stacks,
                                        "s_per_token": round(result.latency_s / max(result.completion_tokens, 1), 4)}),
            ]
            final = FinalAnswer(text=result.text, answer=answer, method="mot", detail={"primary": primary, "peers": peers},
                                finish_reason=result.finish_reason)
            outcomes.append(QueryOutcome(query=query, plan=plan, final=final, calls=[rec], steps=steps,
                                         outputs=[ExpertOutput(index=0, expert=primary, text=result.text, answer=answer)]))
        return outcomes

    @staticmethod
    def _streamer(sink: AnswerSink, primary: str, query: Query) -> tuple[Callable[[str], bool], Callable[[], None]]:
        """A decode callback (run in the worker thread) that sends the new text to `sink` on the
        event loop, stop strings held back; and a function that makes the decode stop."""
        loop = asyncio.get_running_loop()
        hold = StopHoldback((*query.stop, "\nQuestion:"))
        seen = 0
        stopped = threading.Event()

        def on_text(text: str) -> bool:
            nonlocal seen
            if text.endswith("\ufffd"):  # a multi-byte character still incomplete: wait for it
                return not stopped.is_set()
            piece = hold.feed(text[seen:])
            seen = len(text)
            if piece:
                loop.call_soon_threadsafe(functools.partial(sink.send, piece, expert=primary))
            return not stopped.is_set()

        return on_text, stopped.set

    async def route_batch(self, queries: Sequence[Query]) -> list[Plan]:
        loaded = await self._load()
        texts = [query_prompt(q) for q in queries]
        routes = await asyncio.to_thread(self._route_many_sync, loaded, texts)
        return [self._plan(loaded, q, r) for q, r in zip(queries, routes, strict=True)]

    def _route_many_sync(self, loaded: _Loaded, texts: list[str]) -> list[Route]:
        with torch.no_grad():
            vecs = loaded.embed(texts)
            return [loaded.fusion.route(v) for v in vecs]
