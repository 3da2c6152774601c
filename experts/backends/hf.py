"""Helpers for transformers models, shared by the local backend, MoT and Router-R1 training."""

from __future__ import annotations

from typing import Any


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends a generation: the model's generation config may list several
    (chat models add an end-of-turn token), the tokenizer names one."""
    ids: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
        elif value is not None:
            ids.add(int(value))
    return ids
