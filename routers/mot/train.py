"""Training MoT from cached expert states: only the router and the interaction layers run.

    data = TrainData.from_cache(cache, experts, examples)        # states, letter logits, embeddings
    fusion = new_fusion(experts, top_k=2)
    summary = train(fusion, experts, data, TrainSettings(epochs=30), dev=dev_data, out_dir=Path("out/mot"))

The task is the answer letter after "Answer:" (`data`): the primary's logits at the prompt's last
position, renormalised over the option letters. The objective per batch (the paper's exact terms
are unverified; these are ours):

* `lm`: the letter cross-entropy of the fused primary, averaged over every active expert taken
  as the primary (each with the other active experts as its peers), so each expert's side of the
  interaction learns;
* `route`: the expected fused loss under the router's distribution over which active expert is
  primary, `sum_p pi_p * lm_p` with `lm_p` held fixed. Its gradient raises the score of the
  primary whose fused loss is lower than the others', which is exactly the choice made at
  inference (the primary is the top-1). With M > K, peers' values also carry straight-through
  gates, so the LM loss informs which experts are active (with M = K that choice does not exist).

Routing in training samples the active set with Gumbel noise when M > K; at inference there is
no noise, so the router's choice is the same function of the query at train and test time.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from routers.mot.cache import ExpertStates, StateCache
from routers.mot.checkpoint import save_checkpoint
from routers.mot.data import Example
from routers.mot.experts import FrozenExpert
from routers.mot.fused import fused_forward
from routers.mot.model import MoTConfig, MoTFusion


class TrainSettings(BaseModel):
    epochs: float = Field(default=10.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    minutes: float | None = Field(default=None, gt=0)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    lambda_route: float = Field(default=1.0, ge=0)
    tau: float = Field(default=1.0, gt=0)
    seed: int = 0


def new_fusion(experts: Sequence[FrozenExpert], **kw: Any) -> MoTFusion:
    cfg = MoTConfig(experts=[e.name for e in experts], hidden_sizes=[e.hidden_size for e in experts],
                    n_stacks=len(experts[0].meeting_layers), **kw)
    return MoTFusion(cfg)


@dataclass
class TrainData:
    """Everything training needs about a set of examples, per expert in router order."""

    examples: list[Example]
    z: torch.Tensor  # (n, embed_dim) query embeddings
    gold: torch.Tensor  # (n,) gold letter index
    states: list[list[ExpertStates]]  # [expert][example]

    @classmethod
    def from_cache(cls, cache: StateCache, experts: Sequence[FrozenExpert], examples: Sequence[Example]) -> TrainData:
        n_opt = {ex.n_options for ex in examples}
        if len(n_opt) != 1:
            raise ValueError(f"examples must all have the same number of options, got {sorted(n_opt)}")
        return cls(list(examples), cache.load_queries(examples), torch.tensor([ex.gold for ex in examples]),
                   [cache.load(e, examples) for e in experts])

    def __len__(self) -> int:
        return len(self.examples)

    def subset(self, idx: Sequence[int]) -> TrainData:
        return TrainData([self.examples[i] for i in idx], self.z[list(idx)], self.gold[list(idx)],
                         [[s[i] for i in idx] for s in self.states])

    def own_letter_logits(self, m: int) -> torch.Tensor:
        return torch.stack([s.letter_logits.float() for s in self.states[m]])


def _padded(states: Sequence[ExpertStates]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Q, N, d) float states, zero-padded, and the (B, N) mask of real tokens."""
    n = max(s.scaled.shape[1] for s in states)
    q, _, d = states[0].scaled.shape
    out = torch.zeros(len(states), q, n, d)
    mask = torch.zeros(len(states), n, dtype=torch.bool)
    for i, s in enumerate(states):
        k = s.scaled.shape[1]
        out[i, :, :k] = s.states
        mask[i, :k] = True
    return out, mask


def cached_letter_logits(fusion: MoTFusion, experts: Sequence[FrozenExpert], data: TrainData, primary: int,
                         peer_on: torch.Tensor, gates: torch.Tensor | None = None) -> torch.Tensor:
    """The fused primary's option-letter logits at the prompt's last position, (B, n_options),
    from cached states only. `peer_on` (B, M) says which experts are peers per example; `gates`
    (B, M) scales their values. At the prompt's last position every peer prompt token is settled
    (the prompt is its own segment), so the only mask is padding."""
    n_q = len(fusion.meetings)
    prim = torch.stack([s.scaled[:, -1].float() * s.scale[:, -1] for s in data.states[primary]])  # (B, Q, d_p)
    prim_states = [prim[:, q].unsqueeze(1) for q in range(n_q)]
    keys: list[list[torch.Tensor]] = [[] for _ in range(n_q)]
    values: list[list[torch.Tensor]] = [[] for _ in range(n_q)]
    masks = []
    for j in range(len(experts)):
        if j == primary or not bool(peer_on[:, j].any()):
            continue
        st, real = _padded(data.states[j])
        masks.append(real & peer_on[:, j : j + 1])
        gate = gates[:, j].view(-1, 1, 1) if gates is not None else 1.0
        for q, meet in enumerate(fusion.meetings):
            k, v = meet.peer_kv(j, st[:, q], gate)
            keys[q].append(k)
            values[q].append(v)
    n_opt = data.examples[0].n_options
    letters = experts[primary].letter_ids(n_opt)
    if not masks:
        return experts[primary].head(prim[:, -1], letters)
    mask = torch.cat(masks, dim=1).unsqueeze(1)  # (B, 1, N)
    upd = fusion.update(primary, prim_states, [torch.cat(k, 1) for k in keys], [torch.cat(v, 1) for v in values], mask)
    return experts[primary].head(prim[:, -1] + upd[:, 0], letters)


def live_letter_logits(fusion: MoTFusion, experts: Sequence[FrozenExpert], examples: Sequence[Example], primary: int,
                       peers: Sequence[int]) -> torch.Tensor:
    """The same logits computed the way inference does: the experts run live (`fused_forward`)."""
    route = fusion.fixed_route(primary, list(peers))
    out = []
    for ex in examples:
        logits = fused_forward(fusion, experts, route, ex.prompt, logits_to_keep=1).logits[0, -1]
        out.append(logits[experts[primary].letter_ids(ex.n_options)])
    return torch.stack(out)


def route_batch(fusion: MoTFusion, z: torch.Tensor, *, gumbel: bool, tau: float = 1.0,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched `MoTFusion.route`: (scores (B, M), active mask (B, M), gates (B, M))."""
    scores = fusion.router(z)
    m, k = scores.shape[1], fusion.cfg.top_k
    noisy = scores
    if gumbel:
        u = torch.rand(scores.shape, generator=generator).clamp_(1e-9, 1 - 1e-9)
        noisy = scores - torch.log(-torch.log(u))
    idx = torch.topk(noisy.detach(), k, dim=1).indices
    active = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, idx, True)
    hard = active.float()
    if gumbel and k < m:
        soft = torch.softmax(noisy / tau, dim=1)
        gates = hard + soft - soft.detach()
    else:
        gates = hard
    return scores, active, gates


def batch_loss(fusion: MoTFusion, experts: Sequence[FrozenExpert], data: TrainData, settings: TrainSettings,
               gen: torch.Generator | None = None, *, gumbel: bool = True,
               letter_logits: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """`letter_logits(primary, peer_on, gates)` defaults to the cached path; the cached-vs-live
    check passes the live one."""
    compute = letter_logits or (lambda p, on, g: cached_letter_logits(fusion, experts, data, p, on, g))
    scores, active, gates = route_batch(fusion, data.z, gumbel=gumbel, tau=settings.tau, generator=gen)
    m = len(experts)
    losses = torch.zeros(len(data), m)
    for p in range(m):
        rows = active[:, p]
        if not bool(rows.any()):
            continue
        peer_on = active.clone()
        peer_on[:, p] = False
        lp = F.cross_entropy(compute(p, peer_on, gates), data.gold, reduction="none")
        losses[:, p] = torch.where(rows, lp, torch.zeros_like(lp))
    lm = losses.sum() / active.sum()
    pi = torch.softmax(scores.masked_fill(~active, float("-inf")), dim=1)
    route = (pi * losses.detach()).sum(1).mean()
    total = lm + settings.lambda_route * route
    chosen = scores.detach().masked_fill(~active, float("-inf")).argmax(1)
    own = torch.stack([F.cross_entropy(data.own_letter_logits(j), data.gold, reduction="none") for j in range(m)], 1)
    stats = {"loss": float(total.detach()), "lm": float(lm.detach()), "route": float(route.detach()),
             "fused_nll": float(losses.detach().gather(1, chosen.view(-1, 1)).mean()),
             "own_nll": float(own.gather(1, chosen.view(-1, 1)).mean())}
    return total, stats


@torch.no_grad()
def predict(fusion: MoTFusion, experts: Sequence[FrozenExpert], data: TrainData, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """MoT as it runs at inference (no noise, primary = top-1): per example, the primary index,
    the fused letter log-probabilities (n, n_options) and the router scores."""
    fusion.eval()
    prim, logp, scores = [], [], []
    for s in range(0, len(data), batch_size):
        part = data.subset(range(s, min(s + batch_size, len(data))))
        sc, active, gates = route_batch(fusion, part.z, gumbel=False)
        chosen = sc.masked_fill(~active, float("-inf")).argmax(1)
        out = torch.zeros(len(part), part.examples[0].n_options)
        for p in range(len(experts)):
            rows = chosen == p
            if not bool(rows.any()):
                continue
            peer_on = active.clone()
            peer_on[:, p] = False
            out[rows] = F.log_softmax(cached_letter_logits(fusion, experts, part, p, peer_on, gates).float(), -1)[rows]
        prim.append(chosen)
        logp.append(out)
        scores.append(sc)
    return {"primary": torch.cat(prim), "logp": torch.cat(logp), "scores": torch.cat(scores)}


def evaluate(fusion: MoTFusion, experts: Sequence[FrozenExpert], data: TrainData) -> dict[str, float]:
    pred = predict(fusion, experts, data)
    nll = -pred["logp"].gather(1, data.gold.view(-1, 1)).squeeze(1)
    acc = (pred["logp"].argmax(1) == data.gold).float()
    return {"nll": float(nll.mean()), "accuracy": float(acc.mean()),
            **{f"primary_{experts[m].name}": int((pred["primary"] == m).sum()) for m in range(len(experts))}}


def train(
    fusion: MoTFusion,
    experts: Sequence[FrozenExpert],
    data: TrainData,
    settings: TrainSettings,
    *,
    dev: TrainData | None = None,
    out_dir: Path | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train for `epochs` (or `max_steps` batches, or `minutes`); with `dev`, the parameters of
    the epoch with the lowest dev NLL are kept. The checkpoint (router and interaction
    parameters only) and `train_log.jsonl` go to `out_dir`."""
    if not len(data):
        raise ValueError("no training examples")
    torch.manual_seed(settings.seed)
    fusion.train()
    for e in experts:
        e.model.requires_grad_(False)
    opt = torch.optim.AdamW(fusion.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    rng = random.Random(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    steps_per_epoch = math.ceil(len(data) / settings.batch_size)
    total_steps = settings.max_steps or max(1, int(settings.epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    deadline = time.monotonic() + settings.minutes * 60 if settings.minutes else None
    t0 = time.monotonic()
    step, epoch, history = 0, 0, []
    best: tuple[float, dict[str, torch.Tensor], int] | None = None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "train_log.jsonl").unlink(missing_ok=True)
    log = (out_dir / "train_log.jsonl").open("a") if out_dir else None
    try:
        while step < total_steps and (deadline is None or time.monotonic() < deadline):
            order = list(range(len(data)))
            rng.shuffle(order)
            fusion.train()
            sums: dict[str, float] = {}
            n_batches = 0
            for s in range(0, len(order), settings.batch_size):
                if step >= total_steps or (deadline is not None and time.monotonic() >= deadline):
                    break
                batch = data.subset(order[s : s + settings.batch_size])
                opt.zero_grad(set_to_none=True)
                loss, stats = batch_loss(fusion, experts, batch, settings, gen)
                if not math.isfinite(float(loss.detach())):
                    raise FloatingPointError(f"MoT training diverged at step {step}: loss {float(loss.detach())}")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(fusion.parameters(), 1.0)
                opt.step()
                sched.step()
                step += 1
                n_batches += 1
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
            epoch += 1
            row: dict[str, Any] = {"epoch": epoch, "step": step, "elapsed_s": round(time.monotonic() - t0, 1),
                                   **{f"train_{k}": round(v / max(n_batches, 1), 5) for k, v in sums.items()}}
            if dev is not None:
                ev = evaluate(fusion, experts, dev)
                row.update({f"dev_{k}": (round(v, 5) if isinstance(v, float) else v) for k, v in ev.items()})
                if best is None or ev["nll"] < best[0]:
                    best = (ev["nll"], copy.deepcopy(fusion.state_dict()), epoch)
            history.append(row)
            if log:
                log.write(json.dumps(row) + "\n")
                log.flush()
            if on_epoch:
                on_epoch(row)
    finally:
        if log:
            log.close()
    if best is not None:
        fusion.load_state_dict(best[1])
    with torch.no_grad():  # the checkpoint stores fp16: keep in memory exactly what ships
        for p in fusion.parameters():
            p.copy_(p.half().float())
    fusion.eval()
    summary = {"steps": step, "epochs": epoch, "examples_seen": step * settings.batch_size, "train_examples": len(data),
               "wall_s": round(time.monotonic() - t0, 1), "best_epoch": best[2] if best else epoch,
               "best_dev_nll": best[0] if best else None, "last": history[-1] if history else {}}
    if out_dir:
        summary["checkpoint"] = str(save_checkpoint(fusion, out_dir, {**(meta or {}), **summary, "settings": settings.model_dump()}))
    return summary
