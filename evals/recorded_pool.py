"""Recorded expert pools: which models, their coverage of the evaluated questions, their prices.

Recorded outputs carry no prices. For a cost axis we state one: USD per million tokens =
`PRICE_PER_BILLION_PARAMS` × the model's nominal parameters in billions (active parameters for
mixture-of-experts models when the metadata gives them), for input and output alike. This is a
stated convention for comparing routers, not any provider's price list.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from experts.backends.recorded import RecordedLibrary, available_models
from experts.errors import ConfigError
from experts.spec import ExpertSpec, Price

PRICE_PER_BILLION_PARAMS = 0.02  # USD per Mtok per billion parameters (e.g. 7B -> $0.14/Mtok)

# Named pools that issues and benchmarks refer to.
NAMED_POOLS: dict[str, list[str]] = {
    # The 16 recorded models of at most 35B parameters (the Symbolic-MoE-sized pool).
    "small16": [
        "Meta-Llama-3.1-8B-Instruct", "Phi-3-mini-4k-instruct", "Yi-34B", "Mixtral-8x7B-Instruct-v0.1",
        "mathstral-7B", "Mixtral-8x7B-v0.1", "c4ai-command-r-v01", "Meta-Llama-3.1-8B", "Meta-Llama-3-8B",
        "DeepSeek-R1-Distill-Qwen-7B-nothinking", "gemma-7b", "Mistral-7B-v0.1", "Mistral-7B-Instruct-v0.2",
        "Yi-6b-Chat", "Qwen1.5-7B-Chat", "Llama-2-13b-hf",
    ],
}


def parse_params_b(nominal: str | None) -> float | None:
    """'7B' -> 7, '8x7B' -> 56, '236B MoE (21B active)' -> 21, '3.8B' -> 3.8; unknown -> None."""
    if not nominal:
        return None
    active = re.search(r"([\d.]+)\s*B\s*active", nominal, re.I)
    if active:
        return float(active.group(1))
    moe = re.search(r"(\d+)\s*x\s*([\d.]+)\s*B", nominal, re.I)
    if moe:
        return float(moe.group(1)) * float(moe.group(2))
    plain = re.search(r"([\d.]+)\s*B\b", nominal, re.I)
    return float(plain.group(1)) if plain else None


def model_metadata(directory: Path) -> dict[str, dict]:
    path = Path(directory) / "models.json"
    if not path.exists():
        return {}
    return {m["model"]: m for m in json.loads(path.read_text())}


def resolve_pool(directory: Path, pool: list[str] | None) -> list[str]:
    """Pool names (or a named pool) checked against the directory's models."""
    available = available_models(directory)
    if not available:
        raise ConfigError(f"{directory}: no recorded models (expected responses/<model>.jsonl.gz)")
    if not pool:
        return available
    if len(pool) == 1 and pool[0] in NAMED_POOLS:
        pool = NAMED_POOLS[pool[0]]
    missing = [m for m in pool if m not in available]
    if missing:
        raise ConfigError(f"--pool: no recorded outputs for {', '.join(missing)} in {directory}; available: {', '.join(available)}")
    return list(dict.fromkeys(pool))


@dataclass
class Coverage:
    questions: int
    covered_by_all: int
    per_model: dict[str, int]


def recorded_specs(directory: Path, pool: list[str]) -> list[ExpertSpec]:
    meta = model_metadata(directory)
    specs = []
    for m in pool:
        params = parse_params_b(meta.get(m, {}).get("params_nominal"))
        price = PRICE_PER_BILLION_PARAMS * params if params else 0.0
        specs.append(
            ExpertSpec(
                name=m, backend="recorded", path=str(directory), model=m, params_b=params,
                price_per_mtok=Price(input=price, output=price),
                description=f"recorded MMLU-Pro outputs of {m} ({meta.get(m, {}).get('params_nominal', '?')} parameters)",
                max_batch_size=4096,
            )
        )
    return specs


def coverage(library: RecordedLibrary, directory: Path, pool: list[str], question_ids: list[str]) -> Coverage:
    per_model = {}
    have_all = set(question_ids)
    for m in pool:
        table = library.table(directory, m)
        ids = {q for q in question_ids if q in table}
        per_model[m] = len(ids)
        have_all &= ids
    return Coverage(questions=len(question_ids), covered_by_all=len(have_all), per_model=per_model)
