"""Recorded expert pools: which models, their coverage of the evaluated questions, their prices,
and the generic outcomes format users bring their own pool in.

Two directory layouts (both read by `experts.backends.recorded`):

* `responses/<model>.jsonl.gz` + `models.json` (TIGER-Lab's MMLU-Pro runs, reshaped): the
  questions come from the MMLU-Pro dataset file, a row is right when its `pred` is the key;
* the generic outcomes format, for any pool and any task::

      DIR/queries.jsonl    {"question_id", "text", "choices"?, "category"?, "split"?: "train"|"test"}
      DIR/outcomes.jsonl   {"model", "question_id", "score" (0..1), "pred"?, "response"?, "cost_usd"?,
        (or .jsonl.gz)      "input_tokens"?, "output_tokens"?, "latency_s"?}
      DIR/models.json      [{"model", "params_b"?, "price_per_mtok"?: {"input", "output"}, "description"?,
                             "price_source"?}]   (optional)

Prices (USD per million tokens, for the cost axis), in order: the directory's `price_per_mtok`;
for a model with a parameter count, `PRICE_PER_BILLION_PARAMS` × its parameters in billions
(active parameters for mixture-of-experts models) for input and output alike, a stated convention
for comparing routers, not any provider's price list; for an API model of undisclosed size, its
documented list price (`evals.prices`). A model with none of these is an error, never a price of 0.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evals.answers import LETTERS
from evals.prices import list_price
from experts.backends.recorded import RecordedLibrary, available_models, outcomes_file
from experts.errors import ConfigError
from experts.spec import ExpertSpec, Price

PRICE_PER_BILLION_PARAMS = 0.02  # USD per Mtok per billion parameters (e.g. 7B -> $0.14/Mtok)

Layout = Literal["responses", "outcomes"]

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


def layout(directory: Path) -> Layout:
    """Which layout a recorded directory uses (the generic format when it has outcomes.jsonl)."""
    directory = Path(directory)
    if outcomes_file(directory) is not None:
        if not (directory / "queries.jsonl").is_file():
            raise ConfigError(f"{directory}: the outcomes format needs queries.jsonl beside {outcomes_file(directory).name}")
        return "outcomes"
    if (directory / "responses").is_dir():
        return "responses"
    raise ConfigError(f"{directory}: not a recorded-outputs directory (expected responses/<model>.jsonl.gz, "
                      "or queries.jsonl with outcomes.jsonl[.gz])")


# ----------------------------------------------------------------------------- the generic format


class RecordedQuery(BaseModel):
    """One row of queries.jsonl."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    question_id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    choices: tuple[str, ...] | None = Field(default=None, min_length=2, max_length=len(LETTERS))
    category: str | None = None
    split: Literal["train", "test"] | None = None


class ModelInfo(BaseModel):
    """One entry of a generic directory's models.json."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = Field(min_length=1)
    params_b: float | None = Field(default=None, gt=0)
    price_per_mtok: Price | None = None
    description: str = ""
    price_source: str | None = None


def load_queries(directory: Path) -> list[RecordedQuery]:
    """queries.jsonl, in file order; errors name the file and the line."""
    path = Path(directory) / "queries.jsonl"
    out: list[RecordedQuery] = []
    seen: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            if isinstance(raw, dict) and raw.get("question_id") is not None:
                raw["question_id"] = str(raw["question_id"])
            q = RecordedQuery.model_validate(raw)
        except (ValueError, ValidationError) as e:
            raise ConfigError(f"{path}: line {n}: {_first_error(e)}") from None
        if q.question_id in seen:
            raise ConfigError(f"{path}: line {n}: duplicate question_id {q.question_id!r}")
        seen.add(q.question_id)
        out.append(q)
    if not out:
        raise ConfigError(f"{path}: no queries")
    splits = {q.split for q in out}
    if None in splits and len(splits) > 1:
        raise ConfigError(f"{path}: some rows have a split and others not; give every row train or test, or none")
    return out


def _first_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        err = e.errors()[0]
        return f"{'.'.join(str(x) for x in err['loc']) or 'row'}: {err['msg']}"
    return str(e)


def model_metadata(directory: Path) -> dict[str, dict]:
    """models.json as {model: entry} (either layout; empty when absent)."""
    path = Path(directory) / "models.json"
    if not path.exists():
        return {}
    try:
        rows = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"{path}: not JSON ({e})") from None
    if not isinstance(rows, list) or not all(isinstance(m, dict) and m.get("model") for m in rows):
        raise ConfigError(f"{path}: expected a list of objects with a 'model' field")
    return {m["model"]: m for m in rows}


# ----------------------------------------------------------------------------- pools, prices


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


def resolve_pool(directory: Path, pool: list[str] | None) -> list[str]:
    """Pool names (or a named pool) checked against the directory's models."""
    available = available_models(directory)
    if not available:
        raise ConfigError(f"{directory}: no recorded models (expected responses/<model>.jsonl.gz or outcomes.jsonl)")
    if not pool:
        return available
    if len(pool) == 1 and pool[0] in NAMED_POOLS:
        pool = NAMED_POOLS[pool[0]]
    missing = [m for m in pool if m not in available]
    if missing:
        raise ConfigError(f"--pool: no recorded outputs for {', '.join(missing)} in {directory}; available: {', '.join(available)}")
    return list(dict.fromkeys(pool))


@dataclass(frozen=True)
class PricedModel:
    params_b: float | None
    price: Price
    source: str


def model_price(directory: Path, model: str, meta: dict[str, dict] | None = None) -> PricedModel:
    """The model's parameters and price per Mtok, with where the price came from."""
    entry = (model_metadata(directory) if meta is None else meta).get(model, {})
    try:
        info = ModelInfo.model_validate({**entry, "model": model})
    except ValidationError as e:
        raise ConfigError(f"{Path(directory) / 'models.json'}: model {model!r}: {_first_error(e)}") from None
    params = info.params_b if info.params_b is not None else parse_params_b(entry.get("params_nominal"))
    if info.price_per_mtok is not None:
        return PricedModel(params, info.price_per_mtok, info.price_source or f"{Path(directory) / 'models.json'}")
    if params:
        price = PRICE_PER_BILLION_PARAMS * params
        return PricedModel(params, Price(input=price, output=price),
                           f"convention: USD {PRICE_PER_BILLION_PARAMS} per Mtok per billion parameters × {params:g}B")
    listed = list_price(model)
    if listed is not None:
        return PricedModel(None, listed.price, f"list price: {listed.source}")
    raise ConfigError(
        f"{directory}: model {model!r} has no price: give it \"price_per_mtok\" (or \"params_b\") in models.json; "
        "a model of unknown size and price cannot be placed on the cost axis"
    )


def recorded_specs(directory: Path, pool: list[str]) -> list[ExpertSpec]:
    meta = model_metadata(directory)
    specs = []
    for m in pool:
        priced = model_price(directory, m, meta)
        nominal = meta.get(m, {}).get("params_nominal") or (f"{priced.params_b:g}B" if priced.params_b else "undisclosed")
        description = meta.get(m, {}).get("description") or f"recorded outputs of {m} ({nominal} parameters)"
        specs.append(
            ExpertSpec(
                name=m, backend="recorded", path=str(directory), model=m, params_b=priced.params_b,
                price_per_mtok=priced.price, description=description, max_batch_size=4096,
            )
        )
    return specs


def price_sources(directory: Path, pool: list[str]) -> dict[str, str]:
    """Where each pool model's price came from (for the report)."""
    meta = model_metadata(directory)
    return {m: model_price(directory, m, meta).source for m in pool}


@dataclass
class Coverage:
    questions: int
    covered_by_all: int
    per_model: dict[str, int]


def coverage(library: RecordedLibrary, directory: Path, pool: list[str], question_ids: list[str]) -> Coverage:
    per_model = {}
    have_all = set(question_ids)
    for m in pool:
        table = library.table(directory, m)
        ids = {q for q in question_ids if q in table}
        per_model[m] = len(ids)
        have_all &= ids
    return Coverage(questions=len(question_ids), covered_by_all=len(have_all), per_model=per_model)


def covered_ids(library: RecordedLibrary, directory: Path, pool: list[str], question_ids: list[str]) -> list[str]:
    """The ids (in the given order) every pool model has an output for."""
    tables = [library.table(directory, m) for m in pool]
    return [q for q in question_ids if all(q in t for t in tables)]
