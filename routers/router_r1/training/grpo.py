"""The GRPO step: group-normalised advantages, clipped surrogate on policy tokens, KL to the reference.

    batch = build_batch(rollouts, pad_id)            # callee tokens get loss_mask 0
    adv = group_advantages(rewards, group_size)
    stats = grpo_step(model, ref_model, optimizer, batch, adv, beta=0.001)

Why our own step and not TRL: TRL's `GRPOTrainer` (1.16, the current release) would move this
environment to transformers 5 (it requires transformers>=4.56 and pip resolves 5.24, while the
project pins <5), and its multi-turn support follows chat-template tool calls (each tool result
a new turn) or a custom `rollout_func` tied to its vLLM generation path. Router-R1 continues
one assistant turn with raw `<information>` text and needs a per-token mask for it, which a
small step written here expresses directly (about a hundred lines).

Why GRPO and not the reference's PPO with a critic (GAE, γ=λ=1): a critic doubles the model
memory and compute, which a CPU cannot afford; GRPO's group baseline replaces it (the paper says
veRL supports both). The KL term is a loss term (k3 estimator, masked like the policy loss)
rather than the reference's in-reward KL penalty, as GRPO does; β = 0.001 as in the reference.
With one update per batch the old policy equals the current one, so the ratio is 1 at the
step's start; the clip (ε = 0.2) matters only when `epochs` > 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from routers.router_r1.training.rollout import Rollout


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T), right-padded
    attention_mask: torch.Tensor  # (B, T)
    loss_mask: torch.Tensor  # (B, T): 1 on policy-generated response tokens only

    @property
    def n_loss_tokens(self) -> int:
        return int(self.loss_mask.sum())


def build_batch(rollouts: Sequence[Rollout], pad_id: int) -> Batch:
    """Prompt + response per row; the loss mask covers the policy's tokens, never the prompt,
    the observations (callee text) or the padding."""
    width = max(len(r.prompt_ids) + len(r.response_ids) for r in rollouts)
    ids = torch.full((len(rollouts), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rollouts):
        seq = r.prompt_ids + r.response_ids
        ids[i, : len(seq)] = torch.tensor(seq)
        attn[i, : len(seq)] = 1
        mask[i, len(r.prompt_ids) : len(seq)] = torch.tensor(r.policy_mask, dtype=torch.long)
    return Batch(ids, attn, mask)


def group_advantages(rewards: Sequence[float], group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """(r - mean of its group) / (std of its group + eps); a group with equal rewards gets 0."""
    r = torch.tensor(rewards, dtype=torch.float32).view(-1, group_size)
    mean, std = r.mean(dim=1, keepdim=True), r.std(dim=1, keepdim=True, unbiased=False)
    return ((r - mean) / (std + eps)).view(-1)


def token_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """log p(token_t | tokens_<t) for t ≥ 1, aligned to positions (column 0 is 0)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    lp = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return torch.cat([torch.zeros_like(lp[:, :1]), lp], dim=1)


@dataclass
class StepStats:
    loss: float
    kl: float
    clip_frac: float
    grad_norm: float
    tokens: int


def grpo_step(
    model: Any,
    ref_model: Any,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    advantages: torch.Tensor,
    *,
    beta: float = 0.001,
    clip_eps: float = 0.2,
    max_grad_norm: float = 1.0,
    micro_batch: int = 2,
    old_logprobs: torch.Tensor | None = None,
) -> StepStats:
    """One optimiser step over the batch (gradient accumulated over micro-batches).

    Loss = token-mean over policy tokens of −min(ρA, clip(ρ)A) + β·KL_k3(π‖π_ref)."""
    model.train()
    n_tok = max(batch.n_loss_tokens, 1)
    optimizer.zero_grad(set_to_none=True)
    tot_loss = tot_kl = tot_clip = 0.0
    for s in range(0, batch.input_ids.shape[0], micro_batch):
        sl = slice(s, s + micro_batch)
        ids, attn, mask = batch.input_ids[sl], batch.attention_mask[sl], batch.loss_mask[sl].float()
        if mask.sum() == 0:
            continue
        width = int(attn.sum(dim=1).max())  # drop columns that are padding in this micro-batch
        ids, attn, mask = ids[:, :width], attn[:, :width], mask[:, :width]
        lp = token_logprobs(model, ids, attn)
        with torch.no_grad():
            ref_lp = token_logprobs(ref_model, ids, attn)
        old = lp.detach() if old_logprobs is None else old_logprobs[sl, :width]
        ratio = torch.exp(lp - old)
        adv = advantages[sl, None]
        surrogate = torch.min(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
        d = ref_lp - lp
        kl = torch.exp(d) - d - 1  # k3: unbiased, non-negative estimate of KL(π‖π_ref)
        loss = ((-surrogate + beta * kl) * mask).sum() / n_tok
        loss.backward()
        tot_loss += float(loss.detach())
        tot_kl += float((kl.detach() * mask).sum())
        tot_clip += float((((ratio.detach() - 1).abs() > clip_eps).float() * mask).sum())
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm))
    optimizer.step()
    model.eval()
    return StepStats(loss=tot_loss, kl=tot_kl / n_tok, clip_frac=tot_clip / n_tok, grad_norm=grad_norm, tokens=n_tok)
