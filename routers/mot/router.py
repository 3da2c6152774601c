"""The `mot` router: Mixture of Thoughts, run in-process.

    orchestrator ask "Which enzyme unwinds DNA?" --router mot      # the shipped checkpoint
    orchestrator train mot --out out/mot --store          # retrain, then save as the artefact mot/default
    # or point at a checkpoint: routers: {mot: {checkpoint: out/mot}} in the config file

Checkpoint: the `checkpoint` option, else the store artefact mot/default, else the one shipped in
`routers/mot/shipped/` when the pool's local experts serve the models it was trained on. The
experts' weights are those of the registry's local backends for the same model ids (one copy in
memory; MoT holds a backend's generation lock while its hooks are on the model), or loaded
privately when no local expert serves a model. Options: `max_new_tokens` (64), `choice_tokens`
(4: a multiple-choice question is answered in MoT's trained letter format, whose first token is
the letter).

Routing (once per query): the frozen sentence embedding of the query → the router MLP → top-K
active experts, the top-1 being the primary. Generation: the primary decodes while its peers run
in lockstep on the same growing text (`decode.generate`). The trace holds the route decision
(active experts, primary, scores), a generate step naming the primary, its peers and the number
of stacks (interaction points), and one call record for the fused generation. Chat, batch jobs
and `orchestrator bench --router mot` all answer through `run`, so all of them fuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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
    backends: dict[str, Any] = field(default_factory=dict)  # model id -> the local backend shared


def query_prompt(query: Query) -> str:
    """The plain text MoT's experts share. A multiple-choice question is always put in the format
    MoT was trained on (question, lettered options, "Answer:"), whatever prompt a benchmark built
    for other routers (a 5-shot chain-of-thought prompt is thousands of tokens the fusion never
    saw); other queries use their own prompt, else "Question: ...\nAnswer:"."""
    if query.choices:
        return mmlu_prompt(query.text, list(query.choices))
    if query.prompt:
        return query.prompt
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
        choice_tokens: int = 4,
    ) -> None:
        super().__init__(ctx)
        self.checkpoint = checkpoint
        self.artefact = artefact
        self.max_new_tokens = max_new_tokens
        self.choice_tokens = choice_tokens  # multiple choice: the letter is the first token MoT was trained on
        self._loaded: _Loaded | None = None
        self._load_lock = asyncio.Lock()
        self._gen_lock = threading.Lock()  # one fused model instance: one generation at a time

    # ---------------------------------------------------------------- loading
    async def _load(self) -> _Loaded:
        async with self._load_lock:
            if self._loaded is None:
                blob, source = await self._checkpoint_blob()
                fusion = await asyncio.to_thread(self._read_checkpoint, blob)
                backends = await self._shared_backends(fusion.cfg.experts)
                self._loaded = await asyncio.to_thread(self._load_sync, fusion, source, backends)
            return self._loaded

    async def _checkpoint_blob(self) -> tuple[bytes | str, str]:
        """The checkpoint option, else the store artefact, else the checkpoint shipped in the
        repository when the pool's local experts are the ones it was trained on."""
        if self.checkpoint:
            return self.checkpoint, str(self.checkpoint)
        rec = None
        if self.ctx.store is not None:
            rec = await self.ctx.store.load_artefact(ARTEFACT_KIND, self.artefact)
        if rec is not None and rec.payload is not None:
            return rec.payload, f"store artefact {ARTEFACT_KIND}/{self.artefact} v{rec.version}"
        from routers.mot.checkpoint import SHIPPED, shipped_experts

        experts = shipped_experts()
        if experts and all(self._local_name(m) is not None for m in experts):
            return str(SHIPPED), f"shipped checkpoint {SHIPPED.parent.name}/{SHIPPED.name}"
        shipped = (f"the shipped one needs local experts {', '.join(experts)}" if experts
                   else f"no checkpoint is shipped in {SHIPPED.parent}")
        raise RoutingError(
            f"router 'mot' has no trained checkpoint for these experts ({shipped}): run `orchestrator train mot --out DIR --store` "
            f"(stores artefact {ARTEFACT_KIND}/{self.artefact}) or set routers.mot.checkpoint to a checkpoint path"
        )

    @staticmethod
    def _read_checkpoint(blob: bytes | str) -> MoTFusion:
        from routers.mot.checkpoint import load_checkpoint

        try:
            fusion, _meta = load_checkpoint(blob if isinstance(blob, bytes) else Path(blob))
        except Exception as e:  # ConfigError and friends: a bad path or a bad artefact
            raise RoutingError(f"router 'mot': {e}") from None
        return fusion

    async def _shared_backends(self, model_ids: Sequence[str]) -> dict[str, Any]:
        """The registry's local backends whose model is one of the checkpoint's experts, loaded:
        MoT runs on their weights instead of loading a second copy."""
        from experts.backends.local import LocalBackend

        out: dict[str, Any] = {}
        for m in model_ids:
            name = self._local_name(m)
            if name is None:
                continue
            backend = self.ctx.registry.backend(name)
            if isinstance(backend, LocalBackend):
                await backend.load()
                out[m] = backend
        return out

    def _load_sync(self, fusion: MoTFusion, source: str, backends: dict[str, Any]) -> _Loaded:
        from routers.embeddings import shared_embedder
        from routers.mot.experts import FrozenExpert
        from routers.mot.session import query_encoder

        experts = []
        for m in fusion.cfg.experts:
            if m in backends:
                with backends[m].exclusive() as (model, tokenizer):
                    experts.append(FrozenExpert(m, model, tokenizer, fusion.cfg.n_stacks))
            else:
                experts.append(FrozenExpert.load(m, fusion.cfg.n_stacks))
        for e, width in zip(experts, fusion.cfg.hidden_sizes, strict=True):
            if e.hidden_size != width:
                raise RoutingError(f"router 'mot': expert {e.name} has width {e.hidden_size}, the checkpoint expects {width}")
        names = [self._local_name(m) or m for m in fusion.cfg.experts]
        return _Loaded(fusion, experts, names, source, query_encoder(shared_embedder(self.ctx.services)), backends)

    def _local_name(self, model_id: str) -> str | None:
        """The registry name of the local expert serving `model_id`, if any."""
        for name in self.ctx.registry.names:
            spec = self.ctx.registry.spec(name)
            if spec.backend == "local" and spec.model == model_id:
                return name
        return None

    @contextlib.contextmanager
    def _hold(self, loaded: _Loaded, active: Sequence[int]) -> Iterator[list[FrozenExpert]]:
        """The experts for one fused generation, with the shared backends' generation held off
        (in a fixed order, so two holders never deadlock). A backend that reloaded its model
        since (residency swaps) is re-wrapped."""
        with contextlib.ExitStack() as stack:
            for i in sorted(active, key=lambda i: loaded.fusion.cfg.experts[i]):
                m = loaded.fusion.cfg.experts[i]
                backend = loaded.backends.get(m)
                if backend is None:
                    continue
                model, tokenizer = stack.enter_context(backend.exclusive())
                if loaded.experts[i].model is not model:
                    from routers.mot.experts import FrozenExpert

                    loaded.experts[i] = FrozenExpert(m, model, tokenizer, loaded.fusion.cfg.n_stacks)
            yield loaded.experts

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
        req = query.expert_request(max_tokens=self._max_tokens(query))
        assignments = [
            Assignment(expert=loaded.names[m], request=req, weight=probs[m], reason="primary" if m == r.primary else "peer")
            for m in r.active
        ]
        detail = {
            "primary": loaded.names[r.primary],
            "active": [loaded.names[m] for m in r.active],
            "scores": {loaded.names[m]: round(s, 4) for m, s in enumerate(r.scores.tolist())},
            # in the plan too, so a bench item (which keeps the plan, not the trace) records them
            "stack_boundaries": {loaded.names[m]: loaded.experts[m].meeting_layers for m in r.active},
            "checkpoint": loaded.source,
        }
        return Plan(router=self.name, assignments=assignments, aggregation={"kind": "single"}, detail=detail)

    def _max_tokens(self, query: Query) -> int:
        n = query.max_tokens or self.max_new_tokens
        return min(n, self.choice_tokens) if query.choices else n

    def _generate_sync(self, loaded: _Loaded, query: Query, plan: Plan, on_text: Callable[[str], bool] | None = None) -> GenerationResult:
        from routers.mot.decode import generate

        idx = {n: i for i, n in enumerate(loaded.names)}
        active = [idx[a.expert] for a in plan.assignments]
        r = loaded.fusion.fixed_route(active[0], active[1:])
        with self._gen_lock, self._hold(loaded, active) as experts:
            # Base experts continue the shared "Question: ... Answer:" format with a new question.
            stop = (*query.stop, "\nQuestion:")
            g = generate(loaded.fusion, experts, r, query_prompt(query), max_new_tokens=self._max_tokens(query),
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
                                        "stack_boundaries": {loaded.names[i]: loaded.experts[i].meeting_layers
                                                             for i in range(len(loaded.names)) if loaded.names[i] in (primary, *peers)},
                                        "prompt": "mot letter format" if query.choices else "plain",
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
