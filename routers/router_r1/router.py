"""Router-R1 (Zhang et al., 2025): a policy LLM that thinks, routes sub-questions to pool experts
over several rounds, and answers; trained with RL on a format/outcome/cost reward.

    orchestrator ask "Who wrote Hamlet?" --router router-r1
    routers: {router-r1: {policy: smollm2-135m, max_turns: 4, descriptors: full}}
    routers: {router-r1: {policy_path: runs/r1/checkpoint-final}}       # a trained checkpoint

Options: `policy` (any registered expert as an untrained, prompted policy), `policy_path` (a
checkpoint directory saved by `orchestrator train router-r1`, registered as a local expert named
`router-r1-policy`; default: the policy shipped in `routers/router_r1/policy/`, a LoRA adapter on
SmolLM2-135M-Instruct), `max_turns`, `max_tokens` per policy generation, `obs_tokens` (tokens
kept of each callee reply, its tail), `prefill` (text the assistant turn starts with): a
checkpoint's own values (`router_r1.json`) unless set; `callee_max_tokens` (the query's
max_tokens, else 512), `temperature` (0: greedy, as in the reference's evaluation),
`descriptors` ("full" or "prose"; a checkpoint's saved descriptor lines are used when the callee
pool is the pool it was trained on), `family` ("qwen" or "llama" template), `seed`,
`policy_dtype` (bfloat16: what checkpoints train in; fast on CPUs with AMX).

Deviations from the reference (§1), and why:
  * Names resolve against the registry (case-insensitive name or alias, limited to the pool),
    not the hard-coded substring table; an unknown name gets `<information>None</information>`.
  * Generation uses real stop strings at `</search>`/`</answer>` (the released inference script
    does; the training rollout generates to the limit and cuts afterwards; the cut is applied
    here too, so the result is the same text, just cheaper).
  * Policy turns default to 128 new tokens, not 1024 (CPU); observations keep the *tail* of the
    reply (cut after its first "answer is (X)"), 600 tokens by default, a checkpoint's own
    length when it has one, and the closing tag always (the reference cuts the head and may cut
    the tag off; chain-of-thought replies put the answer last).
  * A turn that ended on a stop string gets it back; one that ended on end-of-sequence is taken
    as written (`parsing.close_turn`, the same rule as in training).
  * Multiple-choice questions (MMLU-Pro, GPQA) list their options in the prompt and score by
    letter; the reference is short-answer QA only (EM), which is kept for questions without
    options.
  * Descriptors come from the registry; "full" adds price, measured latency and per-category
    accuracy (the paper's abstract), "prose" is the released template's style.
  * Training is GRPO, not PPO with a critic (see routers/router_r1/training/grpo.py).
  * No plan up front (`route()` refuses): the policy decides each next call from the previous
    reply. `run()` answers any number of queries, one episode each, concurrently (chat, batch
    jobs and benchmarks alike); their policy and callee calls batch per expert in the dispatcher.
  * Recorded callees (replayed MMLU-Pro outputs) answer the original question whatever
    sub-question the policy wrote: with them only the choice of expert and the final answer
    are learned. Live callees answer the sub-question itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from experts.adapters import is_adapter_dir
from experts.spec import ExpertSpec
from routers.base import Router
from routers.types import ExpertRuntime, Plan, Query, QueryOutcome, RouterContext, RoutingError
from routers.router_r1.checkpoint import SHIPPED_POLICY_DIR, PolicyCheckpoint, read_checkpoint
from routers.router_r1.descriptors import DescriptorStyle, build_descriptors
from routers.router_r1.parsing import resolve_expert
from routers.router_r1.prompts import policy_prompt

CHECKPOINT_EXPERT = "router-r1-policy"


class RouterR1Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str | None = None
    policy_path: str | None = None
    max_turns: int = Field(default=4, ge=1, le=16)
    max_tokens: int = Field(default=128, ge=8, le=8192)
    callee_max_tokens: int | None = Field(default=None, ge=1, le=8192)
    obs_tokens: int = Field(default=600, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    descriptors: DescriptorStyle = "full"
    family: str = Field(default="qwen", pattern="^(qwen|llama)$")
    seed: int | None = None
    prefill: str = ""  # text the assistant turn starts with
    policy_dtype: Literal["auto", "float32", "bfloat16"] = "bfloat16"


# Options a checkpoint's router_r1.json supplies when they are not set explicitly.
_FROM_CHECKPOINT = ("max_turns", "max_tokens", "obs_tokens", "prefill", "family")


class RouterR1Router(Router):
    name: ClassVar[str] = "router-r1"
    description: ClassVar[str] = "Router-R1: a policy LLM thinks, routes sub-questions to pool experts over rounds, then answers"

    def __init__(self, ctx: RouterContext, **options: Any) -> None:
        try:
            opts = RouterR1Options(**options)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "options"
            raise RoutingError(f"router 'router-r1': option {where}: {first['msg']}") from None
        super().__init__(ctx)
        self.checkpoint: PolicyCheckpoint | None = None
        self.policy = self._policy_expert(ctx, opts)
        if self.checkpoint is not None:
            unset = {k: getattr(self.checkpoint, k) for k in _FROM_CHECKPOINT if k not in opts.model_fields_set}
            opts = opts.model_copy(update=unset)
        self.opts = opts
        self.callee_pool = [p for p in ctx.pool if ctx.registry.find(p) != CHECKPOINT_EXPERT]  # a checkpoint is never its own callee
        if not self.callee_pool:
            raise RoutingError("router 'router-r1' needs at least one callee expert in its pool")
        if self.checkpoint is not None and set(self.checkpoint.pool) == set(self.callee_pool):
            self.callee_pool = list(self.checkpoint.pool)  # the order it was trained on
        self._descriptor_lines: list[str] | None = None

    def _policy_expert(self, ctx: RouterContext, opts: RouterR1Options) -> str:
        reg = ctx.registry
        if opts.policy is not None and opts.policy_path is None:
            found = reg.find(opts.policy)
            if found is None:
                raise RoutingError(f"router 'router-r1': policy expert {opts.policy!r} is not registered; pass policy=NAME "
                                   f"(one of: {', '.join(reg.names)}) or policy_path=DIR")
            return found
        path = Path(opts.policy_path).expanduser() if opts.policy_path is not None else SHIPPED_POLICY_DIR
        if not ((path / "config.json").is_file() or is_adapter_dir(path)):
            raise RoutingError(f"router 'router-r1': policy_path {str(path)!r} is not a model directory (no config.json "
                               "or adapter_config.json); pass a checkpoint saved by `orchestrator train router-r1`")
        self.checkpoint = read_checkpoint(path)
        max_tokens = max(opts.max_tokens, self.checkpoint.max_tokens if self.checkpoint else 0)
        reg.add(ExpertSpec(name=CHECKPOINT_EXPERT, backend="local", model=str(path.resolve()),  # type: ignore[arg-type]
                           description="Router-R1 policy checkpoint", max_batch_size=32, max_concurrency=1,
                           max_new_tokens=max(max_tokens, 256), timeout_s=1800, dtype=opts.policy_dtype))
        return CHECKPOINT_EXPERT

    # ------------------------------------------------------------------ pieces the graph uses
    def resolve(self, name: str) -> str | None:
        return resolve_expert(name, self.ctx.registry, self.callee_pool)

    def policy_tokenizer(self) -> Any:
        """The policy's tokenizer when it runs in-process (exact observation cut), else None."""
        backend = self.ctx.registry.backend(self.policy)
        return getattr(backend, "tokenizer", None)

    async def descriptor_lines(self) -> list[str]:
        if self._descriptor_lines is None and self.checkpoint is not None and self.callee_pool == self.checkpoint.pool:
            self._descriptor_lines = list(self.checkpoint.descriptor_lines)  # the lines it was trained on
        if self._descriptor_lines is None:
            descs = await build_descriptors(self.ctx.registry, self.callee_pool, self.ctx.store)
            self._descriptor_lines = [d.render(self.opts.descriptors) for d in descs]
        return self._descriptor_lines

    async def prompt_for(self, query: Query) -> str:
        return policy_prompt(query.text, names=self.callee_pool, descriptions=await self.descriptor_lines(),
                             family=self.opts.family, choices=query.choices)

    # ------------------------------------------------------------------ Router interface
    async def route(self, query: Query) -> Plan:
        raise RoutingError("router 'router-r1' decides each call from the previous reply, so it cannot plan up front; "
                           "it answers through `run` (chat, batch jobs and `orchestrator bench` call it that way)")

    async def run(self, queries: Sequence[Query], runtime: ExpertRuntime) -> list[QueryOutcome]:
        """One episode per query, all at once: think → route → information … → answer."""
        import asyncio

        from routers.router_r1.graph import run_config

        graph = self._graph_for()
        config = run_config(runtime, self.opts.max_turns)

        async def episode(query: Query) -> QueryOutcome:
            st = await graph.ainvoke({"query": query}, config)
            return QueryOutcome(query=query, plan=st["plan"], final=st["final"], outputs=st.get("outputs", []),
                                calls=st.get("calls", []), steps=st.get("steps", []))

        return list(await asyncio.gather(*(episode(q) for q in queries)))

    def _graph_for(self) -> Any:
        # Compiled once (a compile takes milliseconds, a chat request should not pay it); the
        # runtime is passed per run, so streaming and batch callers share it.
        graph = getattr(self, "_graph", None)
        if graph is None:
            from routers.router_r1.graph import build_router_r1_graph

            graph = self._graph = build_router_r1_graph(self)
        return graph

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "policy": self.policy, "callees": self.callee_pool, "options": self.opts.model_dump(),
                "checkpoint": self.checkpoint.stage if self.checkpoint else None}
