"""Training MoT: only the router and the interaction layers learn.

    fusion = new_fusion(experts, n_stacks=4, top_k=2)
    summary = train(fusion, experts, embedder, examples, TrainSettings(minutes=20), out_dir=Path("out/mot"))

Objective per batch (the reference leaves the paper's exact terms unverified; these are ours):

* `lm`: next-token cross-entropy of the primary, with interaction, on the target tokens only;
  the peers' values are scaled by straight-through gates, so this term reaches the router too;
* `sel`: cross-entropy of the router's scores against the active expert whose own (frozen,
  interaction-free) negative log-likelihood of the target text is lowest: summed over the
  target's tokens, so it is comparable across tokenizers;
* `bal`: the Switch-style load-balancing term M * sum_m f_m * P_m over the batch.

Routing in training samples the top-K with Gumbel noise (temperature `tau`); at inference there
is no noise, so the router's choice is the same function of the query at train and test time.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from routers.mot.checkpoint import save_checkpoint
from routers.mot.data import Example
from routers.mot.experts import Encoded, FrozenExpert
from routers.mot.fused import fused_forward
from routers.mot.model import MoTConfig, MoTFusion, Route


class TrainSettings(BaseModel):
    minutes: float = Field(default=20.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=4, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    lambda_sel: float = 0.1
    lambda_bal: float = 0.01
    tau: float = 1.0
    seed: int = 0
    checkpoint_every: int = Field(default=25, ge=1)


def new_fusion(experts: Sequence[FrozenExpert], **kw: Any) -> MoTFusion:
    cfg = MoTConfig(experts=[e.name for e in experts], hidden_sizes=[e.hidden_size for e in experts],
                    n_stacks=len(experts[0].meeting_layers), **kw)
    return MoTFusion(cfg)


def n_target_tokens(enc: Encoded, prompt_chars: int) -> int:
    """Trailing tokens that hold target characters (at least 1, and never the first token)."""
    n = sum(1 for e in enc.ends if e > prompt_chars)
    return max(1, min(n, len(enc) - 1))


def target_nll(logits: torch.Tensor, enc: Encoded, n_t: int) -> torch.Tensor:
    """Summed NLL of the last `n_t` tokens, from logits of the last `n_t + 1` positions."""
    pred = logits[0, -(n_t + 1):-1]
    gold = torch.tensor(enc.ids[-n_t:], dtype=torch.long)
    return F.cross_entropy(pred.float(), gold, reduction="sum")


def example_losses(fusion: MoTFusion, experts: Sequence[FrozenExpert], route: Route, ex: Example) -> dict[str, torch.Tensor]:
    """LM loss (mean per target token) of the fused primary, and each active expert's own summed
    target NLL (no grad) for the selection term."""
    text, pc = ex.text, len(ex.prompt)
    p = route.primary
    penc = experts[p].encode(text)
    n_p = n_target_tokens(penc, pc)
    peer_keep = {}
    for j in route.peers:
        peer_keep[j] = n_target_tokens(experts[j].encode(text), pc) + 1
    out = fused_forward(fusion, experts, route, text, primary_enc=penc, logits_to_keep=n_p + 1, peer_logits_to_keep=peer_keep)
    lm_sum = target_nll(out.logits, penc, n_p)
    own = {}
    with torch.no_grad():
        plain = experts[p].model(input_ids=penc.tensor(), use_cache=False, logits_to_keep=n_p + 1).logits
        own[p] = target_nll(plain, penc, n_p)
        for j in route.peers:
            own[j] = target_nll(out.peer_logits[j], out.peers[j], peer_keep[j] - 1)
    best = min(own, key=lambda m: float(own[m]))
    return {"lm": lm_sum / n_p, "best": torch.tensor(best), "fused_nll": lm_sum.detach(), "own_nll": own[p]}


def batch_loss(fusion: MoTFusion, experts: Sequence[FrozenExpert], batch: Sequence[Example], z: torch.Tensor,
               settings: TrainSettings, gen: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    m = len(fusion.cfg.experts)
    lm, sel, probs, primary = [], [], [], torch.zeros(m)
    stats = {"fused_nll": 0.0, "own_nll": 0.0}
    for ex, zi in zip(batch, z, strict=True):
        route = fusion.route(zi, gumbel=True, tau=settings.tau, generator=gen)
        parts = example_losses(fusion, experts, route, ex)
        lm.append(parts["lm"])
        sel.append(F.cross_entropy(route.scores.unsqueeze(0), parts["best"].view(1)))
        probs.append(route.probs)
        primary[route.primary] += 1
        stats["fused_nll"] += float(parts["fused_nll"].detach()) / len(batch)
        stats["own_nll"] += float(parts["own_nll"]) / len(batch)
    bal = m * torch.sum(primary / len(batch) * torch.stack(probs).mean(0))
    lm_t, sel_t = torch.stack(lm).mean(), torch.stack(sel).mean()
    total = lm_t + settings.lambda_sel * sel_t + settings.lambda_bal * bal
    stats.update(loss=float(total.detach()), lm=float(lm_t.detach()), sel=float(sel_t.detach()), bal=float(bal.detach()))
    return total, stats


def train(
    fusion: MoTFusion,
    experts: Sequence[FrozenExpert],
    embed: Callable[[list[str]], torch.Tensor],
    examples: Sequence[Example],
    settings: TrainSettings,
    *,
    out_dir: Path | None = None,
    on_step: Callable[[int, dict[str, float], float], None] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train until `minutes` pass or `max_steps` batches are done; checkpoints (router and
    interaction parameters only) go to `out_dir` every `checkpoint_every` steps and at the end."""
    if not examples:
        raise ValueError("no training examples")
    fusion.train()
    for e in experts:
        e.model.requires_grad_(False)
    opt = torch.optim.AdamW(fusion.parameters(), lr=settings.lr, weight_decay=0.0)
    rng = random.Random(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    deadline = time.monotonic() + settings.minutes * 60
    t0 = time.monotonic()
    step, seen, history = 0, 0, []
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    log = (out_dir / "train_log.jsonl").open("a") if out_dir else None

    def checkpoint() -> None:
        if out_dir:
            save_checkpoint(fusion, out_dir, {**(meta or {}), "steps": step, "examples_seen": seen,
                                              "minutes": (time.monotonic() - t0) / 60, "settings": settings.model_dump()})

    try:
        while time.monotonic() < deadline and (settings.max_steps is None or step < settings.max_steps):
            idx = [order[(seen + i) % len(order)] for i in range(settings.batch_size)]
            batch = [examples[i] for i in idx]
            z = embed([ex.prompt for ex in batch])
            opt.zero_grad(set_to_none=True)
            loss, stats = batch_loss(fusion, experts, batch, z, settings, gen)
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"MoT training diverged at step {step}: loss {float(loss.detach())}")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(fusion.parameters(), 1.0)
            opt.step()
            step += 1
            seen += len(batch)
            stats.update(step=step, seen=seen, elapsed_s=round(time.monotonic() - t0, 1))
            history.append(stats)
            if log:
                log.write(json.dumps(stats) + "\n")
                log.flush()
            if on_step:
                on_step(step, stats, (time.monotonic() - t0) / (settings.minutes * 60))
            if step % settings.checkpoint_every == 0:
                checkpoint()
    finally:
        if log:
            log.close()
    checkpoint()
    fusion.eval()
    recent = history[-10:]
    return {
        "steps": step, "examples_seen": seen, "epochs": seen / len(examples), "wall_s": round(time.monotonic() - t0, 1),
        "recent_lm": sum(h["lm"] for h in recent) / max(len(recent), 1),
        "recent_own_nll": sum(h["own_nll"] for h in recent) / max(len(recent), 1),
        "checkpoint": str(out_dir / "mot.pt") if out_dir else None,
    }
