"""One fused forward pass over a whole text (scoring, the uncached reference, the live side of
the cached-training check).

    out = fused_forward(fusion, experts, route, "Question: ...\nAnswer:", " B", logits_to_keep=2)
    out.logits        # (1, 2, V) primary logits for the last two positions

Peers run first under no_grad (they are frozen and never receive the primary's states, so their
states at every stack boundary are fixed before the primary starts); the primary then runs its
own forward unchanged, its states at each stack boundary are read, and after its last stack the
interaction's summed update (`MoTFusion.update`) is added to its residual stream. The same
numbers come out of running the experts in lockstep stack by stack, since information flows only
from the peers to the primary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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


def peer_states(expert: FrozenExpert, enc: Encoded) -> dict[int, torch.Tensor]:
    with torch.no_grad(), expert.capture() as states:
        expert.model.base_model(input_ids=enc.tensor(), use_cache=False)
    return dict(states)


def final_interaction(fusion: MoTFusion, primary: int, keys: list[torch.Tensor], values: list[torch.Tensor],
                      mask: torch.Tensor) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """The hook function for `FrozenExpert.inject`: keeps the primary's states at stacks
    0..Q-2 unchanged (and remembers them), and after the last stack adds the summed update."""
    seen: dict[int, torch.Tensor] = {}
    last = len(fusion.meetings) - 1

    def interaction(q: int, h: torch.Tensor) -> torch.Tensor:
        seen[q] = h
        if q < last:
            return h
        return h + fusion.update(primary, [seen[i] for i in range(last + 1)], keys, values, mask)

    return interaction


def fused_forward(
    fusion: MoTFusion,
    experts: Sequence[FrozenExpert],
    route: Route,
    prompt: str,
    continuation: str = "",
    *,
    primary_enc: Encoded | None = None,
    peer_texts: Mapping[int, tuple[str, str]] | None = None,
    logits_to_keep: int = 1,
    interact: bool = True,
    causal: bool = True,
    peer_given: Mapping[int, tuple[Encoded, dict[int, torch.Tensor]]] | None = None,
) -> FusedOutput:
    """`peer_texts` overrides a peer's (prompt, continuation) (the perturbation test);
    `causal=False` lets every primary position see every peer token (only to show that the test
    can fail); `peer_given` supplies a peer's encoding and stack states already computed."""
    p = route.primary
    prim = experts[p]
    text = prompt + continuation
    penc = primary_enc or prim.encode(prompt, continuation)
    out = FusedOutput(logits=torch.empty(0), primary=penc)
    if not interact or not route.peers:
        out.logits = prim.model(input_ids=penc.tensor(), use_cache=False, logits_to_keep=logits_to_keep).logits
        return out
    settled = settled_boundaries(text, [len(prompt)])
    n_meet = len(fusion.meetings)
    keys: list[list[torch.Tensor]] = [[] for _ in range(n_meet)]
    values: list[list[torch.Tensor]] = [[] for _ in range(n_meet)]
    masks: list[torch.Tensor] = []
    for j in route.peers:
        if peer_given and j in peer_given:
            enc, states = peer_given[j]
        else:
            pj, cj = (peer_texts or {}).get(j, (prompt, continuation))
            enc = experts[j].encode(pj, cj)
            states = peer_states(experts[j], enc)
        out.peers[j] = enc
        mask = visibility(penc.ends, enc.ends, settled)
        masks.append(mask if causal else torch.ones_like(mask))
        for q, meet in enumerate(fusion.meetings):
            k, v = meet.peer_kv(j, states[q], route.gates[j])
            keys[q].append(k)
            values[q].append(v)
    mask = torch.cat(masks, dim=1)
    kq = [torch.cat(k, dim=1) for k in keys]
    vq = [torch.cat(v, dim=1) for v in values]
    with prim.inject(final_interaction(fusion, p, kq, vq, mask)):
        out.logits = prim.model(input_ids=penc.tensor(), use_cache=False, logits_to_keep=logits_to_keep).logits
    return out
