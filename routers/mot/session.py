"""Loading what MoT runs on: the frozen experts named by a checkpoint and the query encoder.

    experts = load_experts(["smollm2-135m-instruct", "gemma-3-270m"], n_stacks=4)
    embed = query_encoder(SentenceEmbedder())        # list[str] -> (n, 384) float tensor
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from routers.mot.experts import FrozenExpert


def load_experts(model_ids: Sequence[str], n_stacks: int) -> list[FrozenExpert]:
    return [FrozenExpert.load(m, n_stacks) for m in model_ids]


def query_encoder(embedder: Any) -> Callable[[list[str]], torch.Tensor]:
    """The frozen sentence encoder (all-MiniLM-L6-v2 here) as a synchronous function."""

    def embed(texts: list[str]) -> torch.Tensor:
        return torch.from_numpy(embedder.embed_sync(texts)).float()

    return embed


# The experts' packaged ids, keyed by the short names the CLI accepts.
EXPERT_ALIASES = {"smollm2-135m": "smollm2-135m-instruct", "gemma3-270m": "gemma-3-270m"}


def resolve_expert_ids(names: Sequence[str]) -> list[str]:
    return [EXPERT_ALIASES.get(n, n) for n in names]
