"""MoT's trainable parts: the query router and one interaction layer per stack boundary.

    fusion = MoTFusion(MoTConfig(experts=["a", "b"], hidden_sizes=[576, 640]))
    route = fusion.route(z)                        # z: (1, embed_dim) frozen sentence embedding
    delta = fusion.meetings[q](primary, h, peer_keys, peer_values, mask)   # added to the residual

Only these parameters train; the experts stay frozen. Each meeting projects every expert's hidden
states into a shared latent space (per-expert LayerNorm + Linear), the primary's projections form
queries over its peers' keys and values (plus one learned "null" slot, so a position that may see
no peer yet attends somewhere harmless), and the result is projected back to the primary's width.
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
    d_shared: int = Field(default=256, ge=8)
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
    """One routing decision. `gates[m]` is 1 for active experts in the forward pass; in training it
    carries the straight-through gradient of the router's (Gumbel-)softmax."""

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
    """The interaction layer at one stack boundary."""

    def __init__(self, cfg: MoTConfig) -> None:
        super().__init__()
        d = cfg.d_shared
        self.n_heads = cfg.n_heads
        self.inp = nn.ModuleList([nn.Sequential(nn.LayerNorm(dm), nn.Linear(dm, d)) for dm in cfg.hidden_sizes])
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d) for _ in range(4))
        self.null_k = nn.Parameter(torch.zeros(1, 1, d))
        self.null_v = nn.Parameter(torch.zeros(1, 1, d))
        self.out = nn.ModuleList([nn.Linear(d, dm) for dm in cfg.hidden_sizes])
        for lin in self.out:
            nn.init.normal_(lin.weight, std=cfg.out_init_std)
            nn.init.zeros_(lin.bias)

    def peer_kv(self, expert: int, h: torch.Tensor, gate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of one peer's states (1, n, d_m) in the shared space. Position-wise, so
        decoding can append to a cache of them."""
        x = self.inp[expert](h)
        # The gate is 1 in the forward pass; it carries the router's gradient (straight-through).
        return self.k_proj(x), self.v_proj(x) * gate

    def forward(self, primary: int, h: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h: (1, n, d_p) primary states; keys/values: (1, k, d); mask: (n, k) bool. Returns the
        residual update (1, n, d_p)."""
        b, n, _ = h.shape
        q = self.q_proj(self.inp[primary](h))
        k = torch.cat([self.null_k.expand(b, 1, -1), keys], dim=1)
        v = torch.cat([self.null_v.expand(b, 1, -1), values], dim=1)
        m = torch.cat([torch.ones(n, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        heads = self.n_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], heads, -1).transpose(1, 2)

        att = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=m.view(1, 1, n, -1))
        att = att.transpose(1, 2).reshape(b, n, -1)
        return self.out[primary](self.o_proj(att))


class MoTFusion(nn.Module):
    def __init__(self, cfg: MoTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.router = QueryRouter(cfg)
        self.meetings = nn.ModuleList([Meeting(cfg) for _ in range(cfg.n_stacks)])

    def route(self, z: torch.Tensor, *, gumbel: bool = False, tau: float = 1.0, generator: torch.Generator | None = None) -> Route:
        """Top-K experts for one query embedding z (embed_dim,) or (1, embed_dim); the top-1 is the
        primary. With `gumbel` (training), the choice is sampled and the gates are straight-through."""
        scores = self.router(z.reshape(1, -1))[0]
        noisy = scores
        if gumbel:
            u = torch.rand(scores.shape, generator=generator).clamp_(1e-9, 1 - 1e-9)
            noisy = scores - torch.log(-torch.log(u))
        soft = torch.softmax(noisy / tau, dim=-1)
        active = torch.topk(noisy.detach(), self.cfg.top_k).indices.tolist()
        hard = torch.zeros_like(soft)
        hard[active] = 1.0
        gates = hard + soft - soft.detach() if gumbel else hard
        return Route(scores=scores, probs=torch.softmax(scores, dim=-1), active=active, gates=gates)

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
                    lin.bias.zero_()
