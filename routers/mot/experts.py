"""Frozen causal LMs with hooks at stack boundaries.

    expert = FrozenExpert.load("smollm2-135m-instruct", n_stacks=4)   # packaged id or directory
    expert = FrozenExpert("smol", backend.model, backend.tokenizer, 4)  # or share a loaded model
    enc = expert.encode("Question: ...\nAnswer:", " B")              # ids + character ends
    with expert.capture() as states:                                  # states[q]: (1, n, d) after stack q
        expert.model(input_ids=enc.tensor())
    with expert.inject(fn):                                           # h <- fn(q, h) after stack q
        expert.model(input_ids=enc.tensor())

The expert's own forward (rotary embeddings, masks, sliding windows, KV cache) runs unchanged; the
hooks only read or replace the residual stream at the end of each of the Q uniform stacks, which
is where MoT's interaction layers meet.

Text is tokenised in two segments, the prompt (with the tokenizer's special tokens) and the
continuation (without), each on its own: the prompt's tokens then never depend on what follows
it, so all of them are settled once the prompt is complete (see `alignment`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from evals.answers import LETTERS
from experts.backends.hf import eos_token_ids, load_tokenizer
from routers.mot.alignment import token_ends


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    ends: list[int]

    def tensor(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return torch.tensor([self.ids[start:stop]], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)


def encode_segments(tokenizer: Any, prompt: str, continuation: str = "") -> Encoded:
    """The prompt (with the tokenizer's special tokens) and the continuation (without) tokenised
    as separate segments; `ends` are character ends in `prompt + continuation`."""
    enc = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=True)
    ids, ends = list(enc["input_ids"]), token_ends(enc["offset_mapping"])
    if continuation:
        cont = tokenizer(continuation, return_offsets_mapping=True, add_special_tokens=False)
        ids += list(cont["input_ids"])
        ends += [len(prompt) + e for e in token_ends(cont["offset_mapping"])]
    return Encoded(ids=ids, ends=ends)


def decoder_layers(model: Any) -> Any:
    """The list of decoder blocks of a transformers causal LM (Llama/Gemma/Qwen or GPT-2 layout)."""
    for path in ("model.layers", "transformer.h", "model.decoder.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise TypeError(f"MoT: cannot find the decoder layers of {type(model).__name__}")


def final_norm(model: Any) -> Any:
    """The norm between the last decoder block and the LM head."""
    for path in ("model.norm", "transformer.ln_f", "model.decoder.final_layer_norm"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise TypeError(f"MoT: cannot find the final norm of {type(model).__name__}")


def stack_ends(n_layers: int, n_stacks: int) -> list[int]:
    """Index of the last layer of each of `n_stacks` contiguous, near-equal stacks."""
    if not 1 <= n_stacks <= n_layers:
        raise ValueError(f"n_stacks must be in 1..{n_layers}, got {n_stacks}")
    return [round((q + 1) * n_layers / n_stacks) - 1 for q in range(n_stacks)]


class FrozenExpert:
    def __init__(self, name: str, model: Any, tokenizer: Any, n_stacks: int) -> None:
        self.name = name
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.tokenizer = tokenizer
        self.layers = decoder_layers(model)
        self.meeting_layers = stack_ends(len(self.layers), n_stacks)
        cfg = model.config
        self.hidden_size = int(getattr(cfg, "hidden_size", None) or cfg.n_embd)
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.final_norm = final_norm(model)

    @classmethod
    def load(cls, model_id: str, n_stacks: int) -> "FrozenExpert":
        """Load a packaged model id or a model directory (float32, CPU), as the local backend does."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForCausalLM

        from experts.backends.local import LocalBackend
        from experts.packaged_models import resolve_model_dir

        path = resolve_model_dir(model_id)
        with LocalBackend._process_load_lock:  # transformers' model building is not thread-safe
            tok = load_tokenizer(path)
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        return cls(model_id, model, tok, n_stacks)

    def encode(self, prompt: str, continuation: str = "") -> Encoded:
        return encode_segments(self.tokenizer, prompt, continuation)

    def letter_ids(self, n: int) -> list[int]:
        """Token ids of " A", " B", ... (the continuation after "Answer:"); each must be one token."""
        out = []
        for letter in LETTERS[:n]:
            ids = self.tokenizer(f" {letter}", add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise ValueError(f"{self.name}: ' {letter}' is not a single token ({ids})")
            out.append(int(ids[0]))
        return out

    def head(self, residual: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
        """Logits of `token_ids` from the residual stream after the last layer (..., d): the
        model's final norm, the rows of its LM head, and Gemma-style soft-capping when set."""
        h = self.final_norm(residual.to(self.final_norm.weight.dtype)).to(residual.dtype)
        w = self.model.get_output_embeddings().weight[token_ids].to(residual.dtype)
        logits = h @ w.T
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    @contextlib.contextmanager
    def capture(self) -> Iterator[dict[int, torch.Tensor]]:
        states: dict[int, torch.Tensor] = {}

        def make(q: int) -> Callable[..., None]:
            def hook(_m: Any, _a: Any, output: Any) -> None:
                states[q] = output[0] if isinstance(output, tuple) else output

            return hook

        handles = [self.layers[i].register_forward_hook(make(q)) for q, i in enumerate(self.meeting_layers)]
        try:
            yield states
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def inject(self, fn: Callable[[int, torch.Tensor], torch.Tensor]) -> Iterator[None]:
        def make(q: int) -> Callable[..., Any]:
            def hook(_m: Any, _a: Any, output: Any) -> Any:
                if isinstance(output, tuple):
                    return (fn(q, output[0]), *output[1:])
                return fn(q, output)

            return hook

        handles = [self.layers[i].register_forward_hook(make(q)) for q, i in enumerate(self.meeting_layers)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
