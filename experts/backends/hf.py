"""Helpers for transformers models, shared by the local backend, MoT and Router-R1 training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_MISTRAL_TYPES = {"mistral", "mistral3", "ministral", "pixtral", "voxtral"}


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


def load_tokenizer(path: Path) -> Any:
    """`AutoTokenizer.from_pretrained` on a local model directory. transformers 4.57.3+ flags every
    locally saved tokenizer as a Mistral one with a bad regex (a false positive that warns at each
    load): say explicitly that a non-Mistral model needs no fix."""
    from transformers import AutoTokenizer  # its importers (local backend, MoT, Router-R1) import transformers first

    try:
        model_type = json.loads((Path(path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        model_type = None
    kwargs = {} if model_type is None or model_type in _MISTRAL_TYPES else {"fix_mistral_regex": False}
    return AutoTokenizer.from_pretrained(str(path), **kwargs)
