"""Multi-turn rollouts for training and evaluation: the inference loop (`Episode`), batched.

    rollouts = await run_rollouts(policy, prompts, question_ids=ids, resolve=..., submit=..., price_of=..., cfg=cfg)
    ids, mask = policy.encode(rollouts[0].prompt, rollouts[0].segments())    # mask 1 = policy text

Every turn of every active episode is generated in one batch (`generate_batch`); each episode
takes its turn through `Episode.accept` with the stop string it ended on, exactly as the router
does at inference (`parsing.close_turn`), and callee replies go through `truncate_reply` with
the policy's tokenizer, as in the router. Callee calls go through `submit` (a `Dispatcher`):
the batch's concurrent calls to one expert are coalesced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from experts.types import GenerationRequest
from routers.router_r1.episode import Episode, Step, truncate_reply
from routers.router_r1.prompts import agent_prompt
from routers.router_r1.reward import call_cost
from routers.router_r1.training.engine import Policy, SamplingConfig, SharedPrefix, generate_batch


@dataclass
class Rollout:
    """One trajectory: the rendered prompt and the episode (its transcript is the assistant side)."""

    prompt: str
    episode: Episode
    question_id: str | None = None
    policy_tokens: int = 0  # tokens the policy sampled (before the cut at a stop string)

    def segments(self) -> list[tuple[str, bool]]:
        return self.episode.segments()


async def run_rollouts(
    policy: Policy,
    prompts: Sequence[str],
    *,
    question_ids: Sequence[str | None],
    resolve: Callable[[str], str | None],
    submit: Callable[[str, GenerationRequest], Any],
    price_of: Callable[[str], float],
    cfg: SamplingConfig,
    seed: int = 0,
    prefix: SharedPrefix | None = None,
) -> list[Rollout]:
    """One episode per rendered prompt, every turn batched; returns the trajectories.

    `submit(expert, request)` is an awaitable expert call returning a `GenerationResult`
    (`Dispatcher.submit_or_error`); `price_of(expert)` its USD per 1M output tokens."""
    rollouts = [Rollout(p, Episode.start(cfg.max_turns, cfg.prefill), question_id=q)
                for p, q in zip(prompts, question_ids, strict=True)]
    turn = 0
    while True:
        active = [r for r in rollouts if not r.episode.done]
        if not active:
            return rollouts
        seqs = [policy.encode(r.prompt, r.segments())[0] for r in active]
        turns = await asyncio.to_thread(generate_batch, policy, seqs, cfg, seed * 1000 + turn, prefix)
        pending = []
        for r, t in zip(active, turns, strict=True):
            r.policy_tokens += t.n_tokens
            step = r.episode.accept(t.text, resolve, t.stop_string)
            if step.call is not None:
                req = GenerationRequest.chat(agent_prompt(step.call.query), max_tokens=cfg.callee_max_tokens,
                                             temperature=0.0, seed=42, question_id=r.question_id)
                pending.append((r, step, submit(step.call.expert, req)))
            elif step.outcome not in ("answer", "final"):
                r.episode.observe(step, None)
        results = await asyncio.gather(*(p[2] for p in pending))
        for (r, step, _), res in zip(pending, results, strict=True):
            observe(policy, r.episode, step, res, price_of, cfg.obs_tokens)
        turn += 1


def observe(policy: Policy, ep: Episode, step: Step, result: Any, price_of: Callable[[str], float], obs_tokens: int) -> None:
    """The callee's reply (its tail, `truncate_reply` with the policy's tokenizer) as the observation."""
    assert step.call is not None
    if not result.ok:
        ep.observe(step, None)
        return
    tok = policy.tok
    reply = truncate_reply(result.text, obs_tokens, lambda s: tok.encode(s, add_special_tokens=False), tok.decode)
    ep.observe(step, reply, cost=call_cost(result.completion_tokens, price_of(step.call.expert)))
