"""Generation with the peers in lockstep: every generated token is shaped by the interaction.

    gen = generate(fusion, experts, route, "Question: ...\nAnswer:", max_new_tokens=8)
    gen.text, gen.token_ids, gen.latency_s

Prefill: each peer runs the whole prompt (its own segment, all settled once complete). Per step:
the new primary token's text is appended to the shared continuation; each peer re-tokenises the
continuation, checks that the tokens it already ran are unchanged, and runs only its newly settled
tokens (see `alignment`) through its own KV cache; their projected keys and values are appended to
an append-only cache per interaction layer. The primary then runs its one new token through its KV
cache, its states at every stack boundary meet the peers', and the summed update joins its
residual stream after the last stack. `use_cache=False` recomputes everything from scratch at
every step (the reference the cached path must match).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from routers.mot.alignment import n_settled, settled_boundaries, visibility
from routers.mot.experts import Encoded, FrozenExpert
from routers.mot.fused import final_interaction, fused_forward
from routers.mot.model import MoTFusion, Route


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str
    latency_s: float
    prefill_s: float = 0.0  # time to the first token's logits (routing excluded)
    peer_tokens: dict[str, int] = field(default_factory=dict)  # tokens each peer ran

    @property
    def s_per_token(self) -> float:
        return self.latency_s / max(len(self.token_ids), 1)


class _PeerCache:
    """One peer's KV cache, the tokens it has run, and its projected keys/values per meeting."""

    def __init__(self, index: int, expert: FrozenExpert, n_meetings: int) -> None:
        self.index, self.expert, self.n_meetings = index, expert, n_meetings
        self.reset()

    def reset(self) -> None:
        self.kv: Any = None
        self.ids: list[int] = []
        self.ends: list[int] = []
        self.keys: list[list[torch.Tensor]] = [[] for _ in range(self.n_meetings)]
        self.values: list[list[torch.Tensor]] = [[] for _ in range(self.n_meetings)]
        self.ran = 0

    def advance(self, fusion: MoTFusion, route: Route, prompt: str, text: str, settled: list[int]) -> None:
        enc = self.expert.encode(prompt, text[len(prompt):])
        n_have = len(self.ids)
        if enc.ids[:n_have] != self.ids or enc.ends[:n_have] != self.ends:
            # The text's earlier part changed (a multi-byte character completed): start over.
            self.reset()
            n_have = 0
        n = n_settled(enc.ends, len(text), settled)
        if n <= n_have:
            return
        new = Encoded(enc.ids[n_have:n], enc.ends[n_have:n])
        with self.expert.capture() as states:
            out = self.expert.model.base_model(input_ids=new.tensor(), past_key_values=self.kv, use_cache=True)
        self.kv = out.past_key_values
        for q, meet in enumerate(fusion.meetings):
            k, v = meet.peer_kv(self.index, states[q], route.gates[self.index])
            self.keys[q].append(k)
            self.values[q].append(v)
        self.ids += new.ids
        self.ends += new.ends
        self.ran += len(new)

    def kv_for(self, q: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.keys[q]:
            return torch.zeros(1, 0, d), torch.zeros(1, 0, d)
        if len(self.keys[q]) > 1:  # compact the append-only lists
            self.keys[q] = [torch.cat(self.keys[q], dim=1)]
            self.values[q] = [torch.cat(self.values[q], dim=1)]
        return self.keys[q][0], self.values[q][0]


def _pick(logits: torch.Tensor, temperature: float, gen: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


@torch.no_grad()
def generate(
    fusion: MoTFusion,
    experts: Sequence[FrozenExpert],
    route: Route,
    prompt: str,
    *,
    max_new_tokens: int = 32,
    stop: Sequence[str] = (),
    temperature: float = 0.0,
    seed: int | None = None,
    interact: bool = True,
    use_cache: bool = True,
    step_logits: list[torch.Tensor] | None = None,
    ignore_eos: bool = False,
    on_text: Callable[[str], bool] | None = None,
) -> Generation:
    """Greedy (or sampled) generation by the route's primary; `interact=False` is the primary
    alone (no peer runs at all). `on_text` (streaming) gets the text generated so far after each
    token; returning False ends the generation there (the caller went away)."""
    t0 = time.perf_counter()
    prim = experts[route.primary]
    penc = prim.encode(prompt)
    ids, ends = list(penc.ids), list(penc.ends)
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    gen: list[int] = []
    text = prompt
    finish = "length"
    peers = [_PeerCache(j, experts[j], len(fusion.meetings)) for j in route.peers] if interact else []
    stepper = _Stepper(fusion, experts, route, prim, peers, interact, use_cache, prompt)
    logits = stepper(text, ids, ends, n_new=len(ids))
    prefill_s = time.perf_counter() - t0
    for step in range(max_new_tokens):
        if step_logits is not None:  # for tests and diagnostics
            step_logits.append(logits.clone())
        tok = _pick(logits, temperature, rng)
        if tok in prim.eos_ids and not ignore_eos:  # ignore_eos: fixed-length timing runs
            finish = "stop"
            break
        gen.append(tok)
        text = prompt + prim.tokenizer.decode(gen, skip_special_tokens=True)
        hit = [s for s in stop if s and s in text[len(prompt):]]
        if hit:
            finish = "stop"
            break
        if on_text is not None and on_text(text[len(prompt):]) is False:
            finish = "stop"
            break
        if step == max_new_tokens - 1:
            break
        ids.append(tok)
        ends.append(max(len(text), ends[-1] if ends else 0))
        logits = stepper(text, ids, ends, n_new=1)
    out = text[len(prompt):]
    for s in stop:
        k = out.find(s) if s else -1
        if k >= 0:
            out = out[:k]
    return Generation(
        text=out, token_ids=gen, prompt_tokens=len(penc), finish_reason=finish, latency_s=time.perf_counter() - t0, prefill_s=prefill_s,
        peer_tokens={p.expert.name: p.ran for p in peers},
    )


class _Stepper:
    """Next-token logits after the newest `n_new` primary tokens, cached or recomputed."""

    def __init__(self, fusion: MoTFusion, experts: Sequence[FrozenExpert], route: Route, prim: FrozenExpert,
                 peers: list[_PeerCache], interact: bool, use_cache: bool, prompt: str) -> None:
        self.fusion, self.experts, self.route, self.prim, self.prompt = fusion, experts, route, prim, prompt
        # With no peer (top-K of 1 is refused by the config, but a hand-made route may have none)
        # the primary simply runs alone.
        self.peers, self.interact, self.use_cache = peers, interact and bool(route.peers), use_cache
        self.kv: Any = None

    def __call__(self, text: str, ids: list[int], ends: list[int], *, n_new: int) -> torch.Tensor:
        if not self.use_cache:
            out = fused_forward(self.fusion, self.experts, self.route, self.prompt, text[len(self.prompt):],
                                primary_enc=Encoded(list(ids), list(ends)), logits_to_keep=1, interact=self.interact)
            return out.logits[0, -1]
        new = Encoded(ids[-n_new:], ends[-n_new:])
        if not self.interact:
            out = self.prim.model(input_ids=new.tensor(), past_key_values=self.kv, use_cache=True, logits_to_keep=1)
            self.kv = out.past_key_values
            return out.logits[0, -1]
        settled = settled_boundaries(text, [len(self.prompt)])
        for peer in self.peers:
            peer.advance(self.fusion, self.route, self.prompt, text, settled)
        d = self.fusion.cfg.d_shared
        mask = torch.cat([visibility(new.ends, p.ends, settled) for p in self.peers], dim=1)
        kv = [[p.kv_for(q, d) for p in self.peers] for q in range(len(self.fusion.meetings))]
        keys = [torch.cat([k for k, _ in kv[q]], dim=1) for q in range(len(kv))]
        values = [torch.cat([v for _, v in kv[q]], dim=1) for q in range(len(kv))]
        with self.prim.inject(final_interaction(self.fusion, self.route.primary, keys, values, mask)):
            out = self.prim.model(input_ids=new.tensor(), past_key_values=self.kv, use_cache=True, logits_to_keep=1)
        self.kv = out.past_key_values
        return out.logits[0, -1]
