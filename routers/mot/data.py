"""Training and evaluation examples: MMLU-Pro questions (answer letter) or plain JSONL pairs.

    train = load_examples("mmlu-pro", split="train", max_prompt_chars=600)
    held_out = load_examples("mmlu-pro", split="eval", max_prompt_chars=600, limit=150)
    pairs = load_examples("pairs.jsonl", split="train")      # {"prompt": ..., "target": ...} per line

The split is by a hash of each question id (or line id), so the train and eval ids are disjoint
for any `eval_fraction` and no question can move between them when the data grows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from experts.errors import ConfigError

LETTERS = "ABCDEFGHIJ"
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


def in_eval_split(example_id: str, eval_fraction: float, seed: int = 0) -> bool:
    h = int(hashlib.sha256(f"{seed}:{example_id}".encode()).hexdigest()[:8], 16)
    return h % 10_000 < eval_fraction * 10_000


def _keep(example_id: str, split: Split, eval_fraction: float, seed: int) -> bool:
    return split == "all" or (in_eval_split(example_id, eval_fraction, seed) == (split == "eval"))


def mmlu_pro_path() -> Path:
    from orchestrator.bench.datasets import default_mmlu_pro_paths

    path = default_mmlu_pro_paths().get("test")
    if path is None:
        raise ConfigError("MMLU-Pro data not found: put shared/data/mmlu_pro/test.jsonl beside the repository or set ORCHESTRATOR_DATA_DIR")
    return path


def load_mmlu_pro(path: Path, *, split: Split, eval_fraction: float, seed: int, max_prompt_chars: int | None) -> list[Example]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            qid = str(row["question_id"])
            if not _keep(qid, split, eval_fraction, seed):
                continue
            options = [o for o in row["options"] if o != "N/A"]
            prompt = mmlu_prompt(row["question"], options)
            if max_prompt_chars and len(prompt) > max_prompt_chars:
                continue
            out.append(Example(id=qid, prompt=prompt, target=f" {row['answer']}", answer=row["answer"], n_options=len(options)))
    return out


def load_pairs(path: Path, *, split: Split, eval_fraction: float, seed: int, max_prompt_chars: int | None) -> list[Example]:
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                pair = _Pair.model_validate_json(line)
            except ValidationError as e:
                err = e.errors()[0]
                raise ConfigError(f"{path}: line {lineno}: {'.'.join(map(str, err['loc'])) or 'row'}: {err['msg']} (expected {{\"prompt\": ..., \"target\": ...}})") from None
            pid = pair.id or str(lineno)
            if not _keep(pid, split, eval_fraction, seed) or (max_prompt_chars and len(pair.prompt) > max_prompt_chars):
                continue
            out.append(Example(id=pid, prompt=pair.prompt, target=pair.target))
    return out


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
