"""What the frozen parts compute for an example, computed once and kept on disk (fp16).

    cache = StateCache(default_cache_root())
    cache.build(expert, examples, on_progress=print)      # the frozen forwards, paid once
    states = cache.load(expert, examples)                  # list[ExpertStates], in order
    cache.build_queries(embed, examples)
    z = cache.load_queries(examples)                       # (n, embed_dim) float32

Per example and expert: the prompt's token ids and character ends, the residual stream at every
stack boundary (Q, n, d) in fp16 with one fp32 scale per vector (Gemma's residual stream reaches
values past fp16's range, 65,504: its <bos> state overflows and others come close, so each
vector is stored divided by its largest magnitude), the logits of the option letters at the prompt's last
position, and the expert's own letter-renormalised NLL of the gold letter. Per example: the
frozen sentence embedding of the prompt. MoT's interaction reads only the experts' own states
(`model.MoTFusion.letter_logits`), so training from this cache runs only the trainable layers.

Entries live in append-only shard files (`part-NNNNN.pt`) under a directory per expert, named
by the expert, its number of stacks and a fingerprint of its weights, so a changed model or
stack layout never reads stale states; an interrupted build keeps every finished shard.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from routers.mot.data import Example
from routers.mot.experts import FrozenExpert

FORMAT = "mot-states-v1"


def default_cache_root() -> Path:
    base = Path(os.environ.get("ORCHESTRATOR_CACHE", Path.home() / ".cache" / "llm-orchestrator"))
    return base / "mot"


@dataclass
class ExpertStates:
    ids: list[int]
    ends: list[int]
    scaled: torch.Tensor  # (Q, n, d) fp16 (or fp32): the residual stream after each stack / scale
    scale: torch.Tensor  # (Q, n, 1) fp32: each vector's largest magnitude
    letter_logits: torch.Tensor  # (n_options,) fp32, at the prompt's last position
    nll: float  # own letter-renormalised NLL of the gold letter

    @property
    def states(self) -> torch.Tensor:
        """(Q, n, d) float32."""
        return self.scaled.float() * self.scale

    @classmethod
    def from_dense(cls, ids: list[int], ends: list[int], states: torch.Tensor, letter_logits: torch.Tensor, nll: float,
                   dtype: torch.dtype = torch.float16) -> ExpertStates:
        scale = states.abs().amax(-1, keepdim=True).clamp_min(1e-12).float()
        return cls(ids, ends, (states / scale).to(dtype), scale, letter_logits, nll)


def example_key(ex: Example) -> str:
    return hashlib.sha256(f"{FORMAT}\0{ex.prompt}\0{ex.n_options}".encode()).hexdigest()[:32]


def letter_nll(letter_logits: torch.Tensor, gold: torch.Tensor | int) -> torch.Tensor:
    """NLL of the gold letter under the softmax over the option letters only."""
    logits = letter_logits.float()
    if logits.dim() == 1:
        return F.cross_entropy(logits.unsqueeze(0), torch.tensor([int(gold)]))
    return F.cross_entropy(logits, gold, reduction="none")


def expert_fingerprint(expert: FrozenExpert) -> str:
    emb = expert.model.get_input_embeddings().weight
    probe = float(emb[: min(64, emb.shape[0])].double().sum())
    cfg = expert.model.config
    text = f"{FORMAT}|{expert.name}|{expert.meeting_layers}|{expert.hidden_size}|{cfg.vocab_size}|{probe:.6e}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _Shards:
    """key -> entry dict, in append-only torch files (several builders may add to one directory:
    every shard has a unique name, and new shards written by others are picked up). Building
    needs only the keys, so entries are held in memory only once `entries()` is asked for."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._keys: set[str] = set()
        self._entries: dict[str, dict[str, Any]] | None = None
        self._read: set[str] = set()

    def _scan(self, keep: bool) -> None:
        for path in sorted(self.dir.glob("part-*.pt")):
            if path.name not in self._read:
                items = torch.load(path, map_location="cpu", weights_only=True)
                self._keys.update(items)
                if keep and self._entries is not None:
                    self._entries.update(items)
                self._read.add(path.name)

    def keys(self) -> set[str]:
        self._scan(keep=self._entries is not None)
        return self._keys

    def entries(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            self._entries, self._read, self._keys = {}, set(), set()
        self._scan(keep=True)
        return self._entries

    def append(self, items: dict[str, dict[str, Any]]) -> None:
        if not items:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"part-{time.time_ns()}-{os.getpid()}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(items, tmp)
        tmp.replace(path)  # a reader never sees half a shard
        self._read.add(path.name)
        self._keys.update(items)
        if self._entries is not None:
            self._entries.update(items)


class StateCache:
    def __init__(self, root: Path | None = None, *, dtype: torch.dtype = torch.float16) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.dtype = dtype  # fp16 on disk; tests may keep fp32 to compare exactly
        self._experts: dict[str, _Shards] = {}
        self._queries: _Shards | None = None

    def expert_dir(self, expert: FrozenExpert) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(expert.name).name)
        return self.root / f"{safe}-q{len(expert.meeting_layers)}-{expert_fingerprint(expert)}"

    def _shards(self, expert: FrozenExpert) -> _Shards:
        d = self.expert_dir(expert)
        key = str(d)
        if key not in self._experts:
            self._experts[key] = _Shards(d)
        return self._experts[key]

    def missing(self, expert: FrozenExpert, examples: Sequence[Example]) -> list[Example]:
        have = self._shards(expert).keys()
        seen: set[str] = set()
        out = []
        for ex in examples:
            k = example_key(ex)
            if k not in have and k not in seen:
                seen.add(k)
                out.append(ex)
        return out

    @torch.no_grad()
    def build(self, expert: FrozenExpert, examples: Sequence[Example], *, batch_size: int = 8, shard_size: int = 64,
              on_progress: Callable[[int, int], None] | None = None) -> int:
        """Run the expert once over every example not cached yet; returns how many it ran."""
        todo = self.missing(expert, examples)
        shards = self._shards(expert)
        done = 0
        for start in range(0, len(todo), shard_size):
            chunk = todo[start : start + shard_size]
            items: dict[str, dict[str, Any]] = {}
            # Similar lengths together: less padding.
            chunk = sorted(chunk, key=lambda ex: len(ex.prompt))
            for b in range(0, len(chunk), batch_size):
                batch = chunk[b : b + batch_size]
                for ex, st in zip(batch, expert_states(expert, batch), strict=True):
                    q = ExpertStates.from_dense(st.ids, st.ends, st.states, st.letter_logits, st.nll, self.dtype)
                    items[example_key(ex)] = {"ids": q.ids, "ends": q.ends, "states": q.scaled, "scale": q.scale,
                                              "letter_logits": q.letter_logits, "nll": q.nll}
            shards.append(items)
            done += len(chunk)
            if on_progress:
                on_progress(done, len(todo))
        return done

    def load(self, expert: FrozenExpert, examples: Sequence[Example]) -> list[ExpertStates]:
        have = self._shards(expert).entries()
        out = []
        for ex in examples:
            e = have.get(example_key(ex))
            if e is None:
                raise KeyError(f"{expert.name}: example {ex.id} is not cached; build the cache first")
            out.append(ExpertStates(ids=list(e["ids"]), ends=list(e["ends"]), scaled=e["states"], scale=e["scale"],
                                    letter_logits=e["letter_logits"], nll=float(e["nll"])))
        return out

    # ---------------------------------------------------------------- query embeddings
    def _query_shards(self, embed_id: str) -> _Shards:
        if self._queries is None:
            self._queries = _Shards(self.root / f"queries-{re.sub(r'[^A-Za-z0-9_.-]+', '_', embed_id)}")
        return self._queries

    def build_queries(self, embed: Callable[[list[str]], torch.Tensor], examples: Sequence[Example], *,
                      embed_id: str = "all-MiniLM-L6-v2", batch_size: int = 64) -> int:
        shards = self._query_shards(embed_id)
        have = shards.keys()
        todo = list({example_key(ex): ex for ex in examples if example_key(ex) not in have}.values())
        for b in range(0, len(todo), batch_size):
            batch = todo[b : b + batch_size]
            vecs = embed([ex.prompt for ex in batch])
            shards.append({example_key(ex): {"z": v.to(self.dtype)} for ex, v in zip(batch, vecs, strict=True)})
        return len(todo)

    def load_queries(self, examples: Sequence[Example], *, embed_id: str = "all-MiniLM-L6-v2") -> torch.Tensor:
        have = self._query_shards(embed_id).entries()
        missing = [ex.id for ex in examples if example_key(ex) not in have]
        if missing:
            raise KeyError(f"query embeddings of {len(missing)} examples are not cached (first: {missing[0]})")
        return torch.stack([have[example_key(ex)]["z"].float() for ex in examples])


@torch.no_grad()
def expert_states(expert: FrozenExpert, batch: Sequence[Example]) -> list[ExpertStates]:
    """One batched, right-padded forward of the expert's own layers (no LM head over the
    vocabulary: the option letters' logits come from the last boundary's state)."""
    encs = [expert.encode(ex.prompt) for ex in batch]
    n_max = max(len(e) for e in encs)
    ids = torch.zeros(len(encs), n_max, dtype=torch.long)
    mask = torch.zeros(len(encs), n_max, dtype=torch.long)
    for i, e in enumerate(encs):
        ids[i, : len(e)] = torch.tensor(e.ids)
        mask[i, : len(e)] = 1
    with expert.capture() as states:
        expert.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
    stacked = torch.stack([states[q] for q in range(len(expert.meeting_layers))], dim=1)  # (B, Q, n, d)
    out = []
    for i, (ex, e) in enumerate(zip(batch, encs, strict=True)):
        st = stacked[i, :, : len(e)].float()
        logits = expert.head(st[-1, -1], expert.letter_ids(ex.n_options)).float()
        out.append(ExpertStates(ids=e.ids, ends=e.ends, scaled=st, scale=torch.ones(*st.shape[:2], 1), letter_logits=logits,
                                nll=float(letter_nll(logits, ex.gold))))
    return out
