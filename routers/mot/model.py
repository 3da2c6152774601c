"""MoT's trainable parts: the query router and one interaction layer per stack boundary.

    fusion = MoTFusion(MoTConfig(experts=["a", "b"], hidden_sizes=[576, 640]))
    route = fusion.route(z)                        # z: (1, embed_dim) frozen sentence embedding
    delta = fusion.update(primary, states, keys, values, mask)   # added after the last stack

Only these parameters train; the experts stay frozen. Each meeting projects every expert's hidden
states into a shared latent space (per-expert LayerNorm + Linear), the primary's projections form
queries over its peers' keys and values (plus one learned "null" key whose value is zero, so a
position that may see no peer yet attends somewhere harmless and gets no update), and the result
is projected back to the primary's width.

Where the update enters (a deliberate deviation from the paper, whose interaction feeds the
primary's next stack): the meetings at all Q boundaries read the experts' own states, and their
summed update joins the primary's residual stream after its last stack, before its final norm
and LM head. The frozen experts' forwards are then independent of the trainable parameters, so
they are computed once and cached (`cache`), and training runs only the trainable layers; the
paper's mid-stack injection would need a backward pass through the primary's frozen later stacks
at every step (about 1 s per example on this CPU), which the training budget here cannot pay.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, model_validator
from torch import nn


class MoTConfig(BaseModel):
    experts: list[str] = Field(min_length=2)  # model ids or directories, in router-score order
    hidden_sizes: list[int]
    n_stacks: int = Field(default=4, ge=1)
    top_k: int = Field(default=2, ge=2)
    d_shared: int = Field(default=64, ge=8)
    n_heads: int = Field(default=4, ge=1)
    router_hidden: int = 256
    embed_dim: int = 384
    dropout: float = 0.1
    out_init_std: float = 1e-3  # small: training starts near each expert's own behaviour

    @model_validator(mode="after")
    def _check(self) -> "MoTConfig":
        if len(self.hidden_sizes) != len(self.experts):
            raise ValueError("hidden_sizes must give one width per expert")
        if self.top_k > len(self.experts):
            raise ValueError(f"top_k={self.top_k} exceeds the {len(self.experts)} experts")
        if self.d_shared % self.n_heads:
            raise ValueError("d_shared must be divisible by n_heads")
        return self


@dataclass
class Route:
    """One routing decision. `gates[m]` is 1 for active experts in the forward pass; in training
    with M > K it carries the straight-through gradient of the router's (Gumbel-)softmax."""

    scores: torch.Tensor  # (M,)
    probs: torch.Tensor  # (M,)
    active: list[int]  # primary first
    gates: torch.Tensor  # (M,)

    @property
    def primary(self) -> int:
        return self.active[0]

    @property
    def peers(self) -> list[int]:
        return self.active[1:]

    def primary_probs(self) -> torch.Tensor:
        """The router's distribution over which active expert is primary: softmax of the active
        experts' scores, in `active` order (its argmax is the primary)."""
        return torch.softmax(self.scores[self.active], dim=-1)


class QueryRouter(nn.Module):
    def __init__(self, cfg: MoTConfig) -> None:
        super().__init__()
        h = cfg.router_hidden
        self.net = nn.Sequential(
            nn.Linear(cfg.embed_dim, h), nn.ReLU(), nn.Dropout(cfg.dropout),
            nn.Linear(h, h), nn.ReLU(), nn.Dropout(cfg.dropout),
            nn.Linear(h, len(cfg.experts)),
        )
        for mod in self.net:
            if isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, std=0.02)
                nn.init.zeros_(mod.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Meeting(nn.Module):
    """The interaction layer at one stack boundary.

    There is one learned "null" key and its value is zero, and the projections after the
    attention have no bias: a position that sees no peer (or a route with none) gets an update
    of exactly 0, i.e. the primary alone, never a constant offset."""

    def __init__(self, cfg: MoTConfig) -> None:
        super().__init__()
        d = cfg.d_shared
        self.n_heads = cfg.n_heads
        self.inp = nn.ModuleList([nn.Sequential(nn.LayerNorm(dm), nn.Linear(dm, d)) for dm in cfg.hidden_sizes])
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, d) for _ in range(3))
        self.o_proj = nn.Linear(d, d, bias=False)
        self.null_k = nn.Parameter(torch.zeros(1, 1, d))
        self.drop = nn.Dropout(cfg.dropout)  # training only: a few thousand questions, ~1.5M parameters
        self.out = nn.ModuleList([nn.Linear(d, dm, bias=False) for dm in cfg.hidden_sizes])
        for lin in self.out:
            nn.init.normal_(lin.weight, std=cfg.out_init_std)

    def peer_kv(self, expert: int, h: torch.Tensor, gate: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of one peer's states (B, n, d_m) in the shared space. Position-wise, so
        decoding can append to a cache of them. `gate` scales the values (1 in the forward pass;
        in training with more experts than active ones it carries the router's gradient)."""
        x = self.inp[expert](h)
        return self.k_proj(x), self.v_proj(x) * gate

    def forward(self, primary: int, h: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h: (B, n, d_p) primary states; keys/values: (B, k, d); mask: (n, k) or (B, n, k) bool.
        Returns the update (B, n, d_p) for the primary's residual stream."""
        b, n, _ = h.shape
        q = self.q_proj(self.inp[primary](h))
        k = torch.cat([self.null_k.expand(b, 1, -1), keys], dim=1)
        v = torch.cat([torch.zeros_like(self.null_k).expand(b, 1, -1), values], dim=1)
        if mask.dim() == 2:
            mask = mask.unsqueeze(0).expand(b, -1, -1)
        m = torch.cat([torch.ones(b, n, 1, dtype=torch.bool, device=mask.device), mask], dim=2)
        heads = self.n_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], heads, -1).transpose(1, 2)

        att = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=m.unsqueeze(1))
        att = att.transpose(1, 2).reshape(b, n, -1)
        return self.out[primary](self.o_proj(self.drop(att)))


class MoTFusion(nn.Module):
    def __init__(self, cfg: MoTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.router = QueryRouter(cfg)
        self.meetings = nn.ModuleList([Meeting(cfg) for _ in range(cfg.n_stacks)])

    def route(self, z: torch.Tensor, *, gumbel: bool = False, tau: float = 1.0, generator: torch.Generator | None = None) -> Route:
        """Top-K experts for one query embedding z (embed_dim,) or (1, embed_dim); the top-1 is the
        primary. With `gumbel` (training), the active set is sampled and, when there are more
        experts than active ones, the peers' gates are straight-through (membership is then a
        choice the LM loss can inform; with M = K it is not, and the gates stay constant). Which
        active expert is primary is trained separately (`train.batch_loss`)."""
        scores = self.router(z.reshape(1, -1))[0]
        noisy = scores
        if gumbel:
            u = torch.rand(scores.shape, generator=generator).clamp_(1e-9, 1 - 1e-9)
            noisy = scores - torch.log(-torch.log(u))
        soft = torch.softmax(noisy / tau, dim=-1)
        active = torch.topk(noisy.detach(), self.cfg.top_k).indices.tolist()
        hard = torch.zeros_like(soft)
        hard[active] = 1.0
        gates = hard + soft - soft.detach() if gumbel and self.cfg.top_k < len(self.cfg.experts) else hard
        return Route(scores=scores, probs=torch.softmax(scores, dim=-1), active=active, gates=gates)

    def update(self, primary: int, states: list[torch.Tensor], keys: list[torch.Tensor], values: list[torch.Tensor],
               mask: torch.Tensor) -> torch.Tensor:
        """The interaction's total update to the primary's residual stream after its last stack:
        the sum over the Q meetings, each reading the primary's own states at its boundary
        (`states[q]`, (B, n, d_p)) and the peers' keys and values projected from theirs, in
        units of the residual's RMS at each position. (These residual streams reach norms of
        ~10^3 (SmolLM2) to ~10^4.6 (Gemma) before the final norm; an update of order 1 could not
        move the logits, and learning weights of order 10^2 would take far too many steps.)"""
        total = torch.zeros_like(states[-1])
        for q, meet in enumerate(self.meetings):
            total = total + meet(primary, states[q], keys[q], values[q], mask)
        return total * states[-1].pow(2).mean(-1, keepdim=True).sqrt()

    def fixed_route(self, primary: int, peers: list[int]) -> Route:
        """A route chosen by hand (tests, ablations): gates 1, no router gradient."""
        m = len(self.cfg.experts)
        gates = torch.zeros(m)
        gates[[primary, *peers]] = 1.0
        return Route(scores=torch.zeros(m), probs=torch.full((m,), 1.0 / m), active=[primary, *peers], gates=gates)

    def zero_interaction_(self) -> None:
        """Zero every back-projection: the interaction then adds exactly 0 to the residual."""
        with torch.no_grad():
            for meet in self.meetings:
                for lin in meet.out:
                    lin.weight.zero_()
