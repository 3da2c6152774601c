"""The policy being trained and the two things training does with it: sample turns for a batch
of episodes, and score the policy's own tokens.

    policy = Policy.load("smollm2-135m-instruct", lora=LoraSettings())      # or adapter=DIR
    ids, mask = policy.encode(prompt, segments)           # mask 1 = written by the policy
    prefix = policy.shared_prefix(prompt, head)            # the rules block every prompt starts with
    turns = generate_batch(policy, [ids, ...], cfg, seed=0, prefix=prefix)
    lp, rows = response_logprobs(policy.model, [(ids, mask), ...], prefix)   # one per masked token

Token ids always come from encoding the episode's text (prompt, then the assistant side: policy
turns and observations), never from the ids sampled: inference sends that same text to the
model (`GenerationRequest` with the assistant turn continued), so training sees exactly the
tokens the router will. Three things keep it inside a CPU budget:

* bf16 weights (CPUs with AMX run them several times faster than fp32), LoRA adapters only on
  the upper layers (the lower ones are frozen, so no backward pass runs through them);
* the rules block shared by every prompt of a pool is run once per batch and its keys and
  values reused by every row (`SharedPrefix`), in generation and in the loss alike; gradients
  flow through it, so the loss is the same as without sharing;
* logits (a 49k-word projection) only at the positions whose next token is the policy's.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub is reachable: peft must not try one when saving
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import DynamicCache, StopStringCriteria, StoppingCriteriaList

from experts.backends.hf import eos_token_ids, load_tokenizer
from routers.router_r1.prompts import STOP_STRINGS

Segments = Sequence[tuple[str, bool]]  # (text, written by the policy)


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rank: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    first_layer: float = Field(default=0.75, ge=0.0, lt=1.0)  # share of layers kept frozen below the adapters
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Policy:
    model: Any  # a transformers causal LM, usually a peft model
    tok: Any
    base_model: str  # packaged model id or directory the adapter sits on
    version: int = 0  # optimiser steps taken (prefix caches are valid for one version)
    _stops: Any = field(default=None, repr=False)

    @classmethod
    def load(cls, base_model: str, *, adapter: Path | None = None, lora: LoraSettings | None = None, dtype: Any = torch.bfloat16,
             trainable: bool = True) -> "Policy":
        """`adapter` None: a fresh LoRA adapter (`lora`) on `base_model`; else that adapter, trainable."""
        from transformers import AutoModelForCausalLM

        from experts.adapters import adapter_base, load_causal_lm, tokenizer_dir
        from experts.packaged_models import resolve_model_dir

        if adapter is not None:
            base_model = adapter_base(adapter)
            model = load_causal_lm(adapter, dtype, trainable=trainable, merge=not trainable)
            tok_dir = tokenizer_dir(adapter)
        else:
            tok_dir = resolve_model_dir(base_model)
            model = AutoModelForCausalLM.from_pretrained(str(tok_dir), dtype=dtype)
            if trainable:
                model = add_lora(model, lora or LoraSettings(), base_model)
        tok = load_tokenizer(tok_dir)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model.to(default_device()).eval()  # no dropout anywhere: sampling and scoring see the same function
        return cls(model=model, tok=tok, base_model=base_model)

    # ------------------------------------------------------------------ text ↔ tokens
    def render(self, user_text: str) -> str:
        """The prompt as the local backend renders it: the chat template, assistant turn opened."""
        return self.tok.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True)

    def encode(self, prompt: str, segments: Segments) -> tuple[list[int], list[int]]:
        """Ids of `prompt` + the segments' text, and a mask: 1 on tokens inside a policy segment."""
        spans, pos = [], len(prompt)
        for text, mine in segments:
            if mine and text:
                spans.append((pos, pos + len(text)))
            pos += len(text)
        enc = self.tok(prompt + "".join(t for t, _ in segments), add_special_tokens=False, return_offsets_mapping=True)
        mask = [int(any(a <= s and e <= b for a, b in spans) and e > s) for s, e in enc["offset_mapping"]]
        return list(enc["input_ids"]), mask

    def shared_prefix(self, prompt: str, head: str) -> "SharedPrefix | None":
        """The tokens of `prompt` up to the end of `head` (the rules block), when the tokenisation
        has a boundary exactly there (so every prompt with that head starts with these ids)."""
        end = prompt.find(head)
        if end < 0:
            return None
        end += len(head)
        enc = self.tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
        n = next((i for i, (s, _) in enumerate(enc["offset_mapping"]) if s >= end), None)
        if n is None or n == 0 or enc["offset_mapping"][n - 1][1] != end:
            return None
        return SharedPrefix(list(enc["input_ids"][:n]))

    def stop_criteria(self) -> Any:
        """StopStringCriteria scans the whole vocabulary when built: once per policy."""
        if self._stops is None:
            self._stops = StoppingCriteriaList([StopStringCriteria(self.tok, list(STOP_STRINGS))])
        return self._stops

    def save(self, path: Path) -> None:
        """The adapter only (a few MB); its config names the base model."""
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path), save_embedding_layers=False)  # embeddings are never trained
        (path / "README.md").unlink(missing_ok=True)  # peft's blank model-card template; router_r1.json says what this is


def add_lora(model: Any, lora: LoraSettings, base_model: str) -> Any:
    from peft import LoraConfig, get_peft_model

    n_layers = model.config.num_hidden_layers
    first = int(n_layers * lora.first_layer)
    cfg = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=0.0, target_modules=list(lora.targets),
                     layers_to_transform=list(range(first, n_layers)), task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    peft_model.peft_config["default"].base_model_name_or_path = base_model  # portable: a packaged id, not a cache path
    return peft_model


def _parts(model: Any) -> tuple[Any, Any]:
    """(decoder stack, lm_head) of a causal LM, through a peft wrapper if there is one."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.model, inner.lm_head


@dataclass
class SharedPrefix:
    """Ids every row of a batch starts with; their keys and values are computed once."""

    ids: list[int]
    _kv: tuple[int, Any] | None = field(default=None, repr=False)  # (policy version, per-layer (k, v)) for generation

    def matches(self, rows: Sequence[Sequence[int]]) -> bool:
        n = len(self.ids)
        return all(len(r) > n and list(r[:n]) == self.ids for r in rows)

    def kv(self, model: Any, *, version: int = 0, grad: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer (key, value) of the prefix, batch 1. Without grad it is cached per version."""
        if not grad and self._kv is not None and self._kv[0] == version:
            return self._kv[1]
        decoder, _ = _parts(model)
        ids = torch.tensor([self.ids], device=_device(model))
        with torch.set_grad_enabled(grad):
            out = decoder(input_ids=ids, use_cache=True)
        kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        if not grad:
            self._kv = (version, kv)
        return kv


def default_device() -> str:
    """CUDA when there is one; every input is built on the model's device (`_device`)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _expanded_cache(kv: Sequence[tuple[torch.Tensor, torch.Tensor]], batch: int, *, copy: bool) -> DynamicCache:
    # Generation appends to the cache in place per row: it needs real copies; the loss only reads.
    if copy:
        return DynamicCache(ddp_cache_data=[(k.repeat(batch, 1, 1, 1), v.repeat(batch, 1, 1, 1)) for k, v in kv])
    return DynamicCache(ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in kv])


# ---------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 1.0  # the reference's training rollouts; 0 = greedy (evaluation)
    top_p: float = 0.95
    max_turns: int = 4
    obs_tokens: int = 600
    callee_max_tokens: int = 512
    # Text the assistant turn starts with (e.g. "<think>"); not in the reference.
    prefill: str = ""


@dataclass(frozen=True)
class Turn:
    text: str  # decoded, up to and including the stop string when it stopped on one
    stop_string: str | None  # the stop string it ended on (None: end-of-sequence or the token limit)
    n_tokens: int


def generate_batch(policy: Policy, sequences: Sequence[Sequence[int]], cfg: SamplingConfig, seed: int,
                   prefix: SharedPrefix | None = None) -> list[Turn]:
    """One turn for each sequence, batched; each stops at `</search>`, `</answer>` or end-of-sequence.

    With a `prefix` every sequence starts with, the batch is `prefix | padding | rest`: the
    prefix's keys and values are computed once, the padding is masked out, positions count
    real tokens only (as with left padding)."""
    model, tok = policy.model, policy.tok
    pad = tok.pad_token_id
    device = _device(model)
    shared = prefix is not None and prefix.matches(sequences)
    n_pre = len(prefix.ids) if shared else 0  # type: ignore[union-attr]
    rests = [list(s[n_pre:]) for s in sequences]
    width = max(len(r) for r in rests)
    ids = torch.full((len(sequences), n_pre + width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, r in enumerate(rests):
        if shared:
            ids[i, :n_pre] = torch.tensor(prefix.ids)  # type: ignore[union-attr]
            attn[i, :n_pre] = 1
        ids[i, n_pre + width - len(r):] = torch.tensor(r)
        attn[i, n_pre + width - len(r):] = 1
    kwargs: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "pad_token_id": pad,
                              "stopping_criteria": policy.stop_criteria()}
    if cfg.temperature > 0:
        kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if shared:
        kv = prefix.kv(model, version=policy.version)  # type: ignore[union-attr]
        kwargs["past_key_values"] = _expanded_cache(kv, len(sequences), copy=True)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), **kwargs)
    eos = eos_token_ids(model, tok) | {pad}
    return [keep_turn(tok, out[i, ids.shape[1]:].tolist(), eos) for i in range(len(sequences))]


def keep_turn(tok: Any, gen: list[int], eos_ids: set[int]) -> Turn:
    """The sampled ids up to the end of the turn: before end-of-sequence/padding, and no further
    than the token that completes the earliest stop string (what a server with stop strings does)."""
    cut = next((j for j, t in enumerate(gen) if t in eos_ids), len(gen))
    gen = gen[:cut]
    text = tok.decode(gen, skip_special_tokens=True)
    hits = sorted((text.find(s) + len(s), s) for s in STOP_STRINGS if s in text)
    if not hits:
        return Turn(text=text, stop_string=None, n_tokens=len(gen))
    end, stop = hits[0]
    for k in range(1, len(gen) + 1):
        part = tok.decode(gen[:k], skip_special_tokens=True)
        if len(part) >= end:
            return Turn(text=part, stop_string=stop, n_tokens=k)
    return Turn(text=text, stop_string=stop, n_tokens=len(gen))


# ---------------------------------------------------------------------- scoring
def response_logprobs(model: Any, rows: Sequence[tuple[Sequence[int], Sequence[int]]], prefix: SharedPrefix | None = None,
                      *, grad: bool = True, version: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(token) for every token whose mask is 1, in row order, and the row of each.

    Rows are right-padded after the shared prefix (when every row starts with it); logits are
    computed only where the next token is a masked-in one."""
    device = _device(model)
    decoder, lm_head = _parts(model)
    seqs = [list(ids) for ids, _ in rows]
    shared = prefix is not None and prefix.matches(seqs)
    n_pre = len(prefix.ids) if shared else 0  # type: ignore[union-attr]
    rests = [s[n_pre:] for s in seqs]
    masks = [list(m)[n_pre:] for _, m in rows]
    width = max(len(r) for r in rests)
    b = len(rows)
    ids = torch.zeros((b, width), dtype=torch.long)
    attn = torch.zeros((b, width), dtype=torch.long)
    tmask = torch.zeros((b, width), dtype=torch.bool)
    for i, (r, m) in enumerate(zip(rests, masks, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        attn[i, : len(r)] = 1
        tmask[i, : len(m)] = torch.tensor(m, dtype=torch.bool)
    if bool(tmask[:, 0].any()):
        raise ValueError("a row's first scored token has no context (it must follow its prompt)")
    with torch.set_grad_enabled(grad):
        kwargs: dict[str, Any] = {}
        if shared:
            kv = prefix.kv(model, version=version, grad=grad)  # type: ignore[union-attr]
            kwargs["past_key_values"] = _expanded_cache(kv, b, copy=False)
            attn_full = torch.cat([torch.ones((b, n_pre), dtype=torch.long), attn], dim=1)
        else:
            attn_full = attn
        pos = torch.arange(n_pre, n_pre + width).unsqueeze(0).expand(b, -1)
        hidden = decoder(input_ids=ids.to(device), attention_mask=attn_full.to(device), position_ids=pos.to(device),
                         use_cache=shared, **kwargs).last_hidden_state
        row, col = tmask.nonzero(as_tuple=True)
        lp = _token_logprobs(lm_head, hidden[row, col - 1], ids[row, col].to(device), grad=grad)
    return lp, row.to(device)


LOGIT_CHUNK = 128  # positions per (positions × 49k-word) logit block


def _token_logprobs(lm_head: Any, hidden: torch.Tensor, targets: torch.Tensor, *, grad: bool) -> torch.Tensor:
    """log p(target) from the final hidden states, a block of positions at a time. With grad each
    block is recomputed in the backward pass instead of kept (activation checkpointing): the
    float logits of a whole batch would be hundreds of MB on a machine that is short of memory."""
    from torch.utils.checkpoint import checkpoint

    def block(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(lm_head(h).float(), dim=-1).gather(-1, t[:, None]).squeeze(-1)

    parts = []
    for s in range(0, hidden.shape[0], LOGIT_CHUNK):
        h, t = hidden[s : s + LOGIT_CHUNK], targets[s : s + LOGIT_CHUNK]
        parts.append(checkpoint(block, h, t, use_reentrant=False) if grad else block(h, t))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)

