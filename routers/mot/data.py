"""Training and evaluation examples: MMLU-Pro questions (answer letter) or plain JSONL pairs.

    train = load_examples("mmlu-pro", split="train", max_prompt_chars=600)
    held_out = load_examples("mmlu-pro", split="eval", max_prompt_chars=600, limit=150)
    pairs = load_examples("pairs.jsonl", split="train")      # {"prompt": ..., "target": ...} per line

The split is `evals.splits.split_fit_eval` over the question ids (or line ids), the one seeded
split every method uses, so the train and eval ids are disjoint for any `eval_fraction`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from evals.answers import LETTERS
from evals.datasets import default_mmlu_pro_paths
from evals.datasets import load_mmlu_pro as load_mmlu_pro_questions
from evals.splits import split_fit_eval
from experts.errors import ConfigError
Split = Literal["train", "eval", "all"]


class Example(BaseModel):
    id: str
    prompt: str
    target: str
    answer: str | None = None  # the gold letter for multiple choice
    n_options: int = 0

    @property
    def text(self) -> str:
        return self.prompt + self.target


class _Pair(BaseModel):
    prompt: str
    target: str
    id: str | None = None


def mmlu_prompt(question: str, options: list[str]) -> str:
    """Plain text that every expert reads identically (no chat template: the experts must share
    one text for character alignment)."""
    opts = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    return f"Question: {question.strip()}\nOptions:\n{opts}\nAnswer:"


def _kept_ids(ids: list[str], split: Split, eval_fraction: float, seed: int) -> set[str]:
    if split == "all":
        return set(ids)
    train, held_out = split_fit_eval(ids, 1.0 - eval_fraction, seed)
    return held_out if split == "eval" else train


def mmlu_pro_path() -> Path:
    path = default_mmlu_pro_paths().get("test")
    if path is None:
        raise ConfigError("MMLU-Pro data not found: put shared/data/mmlu_pro/test.jsonl beside the repository or set ORCHESTRATOR_DATA_DIR")
    return path


def load_mmlu_pro(path: Path, *, split: Split, eval_fraction: float, seed: int, max_prompt_chars: int | None) -> list[Example]:
    questions = load_mmlu_pro_questions(path)
    keep = _kept_ids([q.id for q in questions], split, eval_fraction, seed)
    out = []
    for q in questions:
        if q.id not in keep:
            continue
        prompt = mmlu_prompt(q.question, q.options)
        if max_prompt_chars and len(prompt) > max_prompt_chars:
            continue
        out.append(Example(id=q.id, prompt=prompt, target=f" {q.answer}", answer=q.answer, n_options=q.n_options))
    return out


def load_pairs(path: Path, *, split: Split, eval_fraction: float, seed: int, max_prompt_chars: int | None) -> list[Example]:
    pairs: list[tuple[str, _Pair]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                pair = _Pair.model_validate_json(line)
            except ValidationError as e:
                err = e.errors()[0]
                raise ConfigError(f"{path}: line {lineno}: {'.'.join(map(str, err['loc'])) or 'row'}: {err['msg']} (expected {{\"prompt\": ..., \"target\": ...}})") from None
            pairs.append((pair.id or str(lineno), pair))
    keep = _kept_ids([pid for pid, _ in pairs], split, eval_fraction, seed)
    return [Example(id=pid, prompt=p.prompt, target=p.target) for pid, p in pairs
            if pid in keep and not (max_prompt_chars and len(p.prompt) > max_prompt_chars)]


def load_examples(
    source: str, *, split: Split = "train", eval_fraction: float = 0.2, seed: int = 0,
    max_prompt_chars: int | None = None, limit: int | None = None,
) -> list[Example]:
    """`source` is `mmlu-pro` (the shared MMLU-Pro test file), an MMLU-Pro-format JSONL file, or
    a JSONL file of prompt/target pairs."""
    if source == "mmlu-pro":
        path, kind = mmlu_pro_path(), "mmlu"
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"training data {source!r} not found: give `mmlu-pro` or a JSONL file of prompt/target pairs")
        with open(path, encoding="utf-8") as f:
            first = next((json.loads(x) for x in f if x.strip()), {})
        kind = "mmlu" if "question_id" in first and "options" in first else "pairs"
    load = load_mmlu_pro if kind == "mmlu" else load_pairs
    out = load(path, split=split, eval_fraction=eval_fraction, seed=seed, max_prompt_chars=max_prompt_chars)
    return out[:limit] if limit else out
