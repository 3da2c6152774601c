"""The two optimiser steps: supervised (warm-up) and GRPO, on the policy's own tokens only.

    rows = [policy.encode(r.prompt, r.segments()) for r in rollouts]      # mask 0: prompt, observations
    adv = group_advantages(rewards, group_size)
    stats = grpo_step(policy, ref_model, optimizer, rows, adv, prefix=prefix, ref_prefix=ref_prefix, beta=0.001)
    stats = sft_step(policy, optimizer, rows, prefix=prefix)

Why our own step and not TRL: TRL's `GRPOTrainer` (1.16, the current release) would move this
environment to transformers 5 (it requires transformers>=4.56 and pip resolves 5.24, while the
project pins <5), and its multi-turn support follows chat-template tool calls (each tool result
a new turn) or a custom `rollout_func` tied to its vLLM generation path. Router-R1 continues
one assistant turn with raw `<information>` text and needs a per-token mask for it, which a
small step written here expresses directly.

Why GRPO and not the reference's PPO with a critic (GAE, γ=λ=1): a critic doubles the model
memory and compute, which a CPU cannot afford; GRPO's group baseline replaces it (the paper says
veRL supports both). The KL term is a loss term (k3 estimator, masked like the policy loss)
against the reference model (the warm-up checkpoint), rather than the reference's in-reward KL
penalty, as GRPO does; β = 0.001 as in the reference. One update per batch, so the probability
ratio is exactly 1 where the step starts and the clipped surrogate's gradient is A·∇log π (the
clip ε only bites with several updates per batch, which we do not take).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from routers.router_r1.training.engine import Policy, SharedPrefix, response_logprobs

Rows = Sequence[tuple[Sequence[int], Sequence[int]]]


def group_advantages(rewards: Sequence[float], group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """(r - mean of its group) / (std of its group + eps); a group with equal rewards gets 0."""
    r = torch.tensor(rewards, dtype=torch.float32).view(-1, group_size)
    mean, std = r.mean(dim=1, keepdim=True), r.std(dim=1, keepdim=True, unbiased=False)
    return ((r - mean) / (std + eps)).view(-1)


@dataclass
class StepStats:
    loss: float
    kl: float
    grad_norm: float
    tokens: int


def _finish(policy: Policy, optimizer: torch.optim.Optimizer, max_grad_norm: float) -> float:
    params = [p for p in policy.model.parameters() if p.requires_grad]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    policy.version += 1  # cached prefix keys/values of the old weights are stale now
    return grad_norm


def sft_step(policy: Policy, optimizer: torch.optim.Optimizer, rows: Rows, *, prefix: SharedPrefix | None = None,
             max_grad_norm: float = 1.0) -> StepStats:
    """Mean negative log-likelihood of the policy tokens (observations and prompt masked out)."""
    lp, _ = response_logprobs(policy.model, rows, prefix, grad=True)
    loss = -lp.mean()
    loss.backward()
    return StepStats(loss=float(loss.detach()), kl=0.0, grad_norm=_finish(policy, optimizer, max_grad_norm), tokens=int(lp.numel()))


def grpo_step(
    policy: Policy,
    ref_model: Any,
    optimizer: torch.optim.Optimizer,
    rows: Rows,
    advantages: torch.Tensor,
    *,
    prefix: SharedPrefix | None = None,
    ref_prefix: SharedPrefix | None = None,
    beta: float = 0.001,
    clip_eps: float = 0.2,
    max_grad_norm: float = 1.0,
) -> StepStats:
    """One optimiser step. Loss = token-mean over policy tokens of −min(ρA, clip(ρ)A) + β·KL_k3(π‖π_ref)."""
    if beta == 0 and not bool(advantages.abs().sum()):
        return StepStats(loss=0.0, kl=0.0, grad_norm=0.0, tokens=0)  # nothing to learn from this batch
    lp, row = response_logprobs(policy.model, rows, prefix, grad=True)
    with torch.no_grad():
        ref_lp, _ = response_logprobs(ref_model, rows, ref_prefix, grad=False) if beta > 0 else (lp.detach(), None)
    ratio = torch.exp(lp - lp.detach())
    adv = advantages.to(lp.device)[row]
    surrogate = torch.min(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    d = ref_lp - lp
    kl = torch.exp(d) - d - 1  # k3: unbiased, non-negative estimate of KL(π‖π_ref)
    loss = (-surrogate + beta * kl).sum() / max(lp.numel(), 1)
    loss.backward()
    return StepStats(loss=float(loss.detach()), kl=float(kl.detach().mean()), grad_norm=_finish(policy, optimizer, max_grad_norm),
                     tokens=int(lp.numel()))
