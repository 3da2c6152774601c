"""One fused forward pass over a whole text (training, scoring, and the uncached reference).

    out = fused_forward(fusion, experts, route, "Question: ...\nAnswer: B", logits_to_keep=2)
    out.logits        # (1, 2, V) primary logits for the last two positions

Peers run first under no_grad (they are frozen and never receive the primary's states, so their
states at every stack boundary are fixed before the primary starts); the primary then runs with
an interaction at the end of each stack. This gives the same numbers as running the experts in
lockstep stack by stack, since information flows only from peers to the primary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from routers.mot.alignment import settled_boundaries, visibility
from routers.mot.experts import Encoded, FrozenExpert
from routers.mot.model import MoTFusion, Route


@dataclass
class FusedOutput:
    logits: torch.Tensor
    primary: Encoded
    peers: dict[int, Encoded] = field(default_factory=dict)
    peer_logits: dict[int, torch.Tensor] = field(default_factory=dict)


def peer_states(expert: FrozenExpert, enc: Encoded, keep: int = 1) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    with torch.no_grad(), expert.capture() as states:
        out = expert.model(input_ids=enc.tensor(), use_cache=False, logits_to_keep=max(keep, 1))
    return dict(states), out.logits


def fused_forward(
    fusion: MoTFusion,
    experts: Sequence[FrozenExpert],
    route: Route,
    text: str,
    *,
    primary_enc: Encoded | None = None,
    peer_texts: Mapping[int, str] | None = None,
    logits_to_keep: int = 1,
    peer_logits_to_keep: Mapping[int, int] | None = None,
    interact: bool = True,
    causal: bool = True,
    peer_given: Mapping[int, tuple[Encoded, dict[int, torch.Tensor]]] | None = None,
) -> FusedOutput:
    """`peer_texts` overrides a peer's text (the perturbation test); `causal=False` lets every
    primary position see every peer token (only to show that the test can fail); `peer_given`
    supplies a peer's encoding and stack states already computed (evaluation reuses the peer's
    own forward pass)."""
    p = route.primary
    prim = experts[p]
    penc = primary_enc or prim.encode(text)
    out = FusedOutput(logits=torch.empty(0), primary=penc)
    settled = settled_boundaries(text)
    n_meet = len(fusion.meetings)
    keys: list[list[torch.Tensor]] = [[] for _ in range(n_meet)]
    values: list[list[torch.Tensor]] = [[] for _ in range(n_meet)]
    masks: list[torch.Tensor] = []
    if interact:
        for j in route.peers:
            if peer_given and j in peer_given:
                enc, states = peer_given[j]
            else:
                enc = experts[j].encode((peer_texts or {}).get(j, text))
                states, out.peer_logits[j] = peer_states(experts[j], enc, (peer_logits_to_keep or {}).get(j, 1))
            out.peers[j] = enc
            mask = visibility(penc.ends, enc.ends, settled)
            masks.append(mask if causal else torch.ones_like(mask))
            for q, meet in enumerate(fusion.meetings):
                k, v = meet.peer_kv(j, states[q], route.gates[j])
                keys[q].append(k)
                values[q].append(v)
    if not interact:
        out.logits = prim.model(input_ids=penc.tensor(), use_cache=False, logits_to_keep=logits_to_keep).logits
        return out
    mask = torch.cat(masks, dim=1) if masks else torch.zeros(len(penc), 0, dtype=torch.bool)
    kq = [torch.cat(k, dim=1) if k else torch.zeros(1, 0, fusion.cfg.d_shared) for k in keys]
    vq = [torch.cat(v, dim=1) if v else torch.zeros(1, 0, fusion.cfg.d_shared) for v in values]

    def interaction(q: int, h: torch.Tensor) -> torch.Tensor:
        return h + fusion.meetings[q](p, h, kq[q], vq[q], mask)

    with prim.inject(interaction):
        out.logits = prim.model(input_ids=penc.tensor(), use_cache=False, logits_to_keep=logits_to_keep).logits
    return out
