"""LoRA adapter directories as local models: the adapter's base (a packaged model id or a
directory) is loaded and the adapter merged into it.

    model, tokenizer_dir = load_causal_lm(Path("routers/router_r1/policy"), torch.bfloat16)

An adapter directory is what `peft` saves (`adapter_config.json` + `adapter_model.safetensors`);
its `base_model_name_or_path` may name a packaged model (`smollm2-135m-instruct`), so a few-MB
adapter shipped in the repository loads on a fresh install without any hub.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: Path) -> str:
    """The adapter's base model: a packaged model id or a directory."""
    return str(json.loads((Path(path) / ADAPTER_CONFIG).read_text())["base_model_name_or_path"])


def tokenizer_dir(path: Path) -> Path:
    """Where the tokenizer of a model or adapter directory is (an adapter may carry its own)."""
    path = Path(path)
    if not is_adapter_dir(path) or (path / "tokenizer_config.json").is_file():
        return path
    from experts.packaged_models import resolve_model_dir

    return resolve_model_dir(adapter_base(path))


def load_causal_lm(path: Path, dtype: Any, *, merge: bool = True, trainable: bool = False) -> Any:
    """A transformers causal LM from a model directory, or from an adapter directory over its base.

    `merge` folds the adapter into the base weights (inference: no adapter overhead per layer);
    `trainable` keeps it a `PeftModel` whose adapter weights train."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not is_adapter_dir(path):
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    from peft import PeftModel

    from experts.packaged_models import resolve_model_dir

    base = AutoModelForCausalLM.from_pretrained(str(resolve_model_dir(adapter_base(path))), dtype=dtype)
    model = PeftModel.from_pretrained(base, str(path), is_trainable=trainable)
    return model.merge_and_unload() if merge and not trainable else model
