"""Training and evaluation examples for MoT: MMLU-Pro reduced to a fixed number of options.

    train = load_examples("mmlu-pro", split="train", n_options=4, max_prompt_chars=300, limit=2500)
    held_out = load_examples("mmlu-pro", split="eval", n_options=4, max_prompt_chars=300, limit=600)

Each question keeps its gold option plus `n_options - 1` distractors drawn, and then shuffled,
with a generator seeded by `(seed, question id)`: every method that scores these questions sees
the same options in the same order; questions with fewer options are left out, so every example
has the same option letters (training batches and the letter-renormalised scores need that). The split is `evals.splits.split_fit_eval` over the question
ids (the one seeded split every method uses), so train and eval ids are disjoint; within a side
the questions are taken in the split's own hash order (categories mixed), after the length filter.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from evals.answers import LETTERS
from evals.datasets import Question, default_mmlu_pro_paths
from evals.datasets import load_mmlu_pro as load_mmlu_pro_questions
from evals.splits import split_fit_eval
from experts.errors import ConfigError

Split = Literal["train", "eval", "all"]


class Example(BaseModel):
    id: str
    prompt: str
    options: list[str]
    answer: str  # the gold letter
    category: str = ""

    @property
    def n_options(self) -> int:
        return len(self.options)

    @property
    def gold(self) -> int:
        return LETTERS.index(self.answer)

    @property
    def target(self) -> str:
        return f" {self.answer}"


def mmlu_prompt(question: str, options: list[str]) -> str:
    """Plain text that every expert reads identically (no chat template: the experts must share
    one text for character alignment)."""
    opts = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    return f"Question: {question.strip()}\nOptions:\n{opts}\nAnswer:"


def reduce_options(q: Question, n_options: int, seed: int) -> tuple[list[str], str]:
    """Gold plus `n_options - 1` seeded distractors, in a seeded order: (options, gold letter)."""
    if q.n_options <= n_options:
        return list(q.options), q.answer
    rng = random.Random(hashlib.sha256(f"options:{seed}:{q.id}".encode()).digest())
    distractors = [o for i, o in enumerate(q.options) if i != q.answer_index]
    kept = [q.options[q.answer_index], *rng.sample(distractors, n_options - 1)]
    order = list(range(n_options))
    rng.shuffle(order)
    options = [kept[i] for i in order]
    return options, LETTERS[order.index(0)]


def mmlu_pro_path() -> Path:
    path = default_mmlu_pro_paths().get("test")
    if path is None:
        raise ConfigError("MMLU-Pro data not found: put shared/data/mmlu_pro/test.jsonl beside the repository or set ORCHESTRATOR_DATA_DIR")
    return path


def _side(ids: list[str], split: Split, eval_fraction: float, seed: int) -> list[str]:
    """The ids of one side of the split, in the split's hash order."""
    order = sorted(dict.fromkeys(ids), key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest())
    if split == "all":
        return order
    fit, held_out = split_fit_eval(ids, 1.0 - eval_fraction, seed)
    keep = held_out if split == "eval" else fit
    return [i for i in order if i in keep]


def load_examples(
    source: str = "mmlu-pro", *, split: Split = "train", eval_fraction: float = 0.2, seed: int = 0,
    n_options: int = 4, max_prompt_chars: int | None = None, limit: int | None = None,
) -> list[Example]:
    """`source` is `mmlu-pro` (the shared MMLU-Pro test file) or an MMLU-Pro-format JSONL file."""
    if n_options < 2 or n_options > len(LETTERS):
        raise ConfigError(f"n_options must be within 2..{len(LETTERS)}, got {n_options}")
    path = mmlu_pro_path() if source == "mmlu-pro" else Path(source)
    if not path.is_file():
        raise ConfigError(f"training data {source!r} not found: give `mmlu-pro` or an MMLU-Pro-format JSONL file")
    questions = {q.id: q for q in load_mmlu_pro_questions(path)}
    out: list[Example] = []
    for qid in _side(list(questions), split, eval_fraction, seed):
        q = questions[qid]
        if q.n_options < n_options:  # a few MMLU-Pro questions have fewer: one letter set per job
            continue
        options, answer = reduce_options(q, n_options, seed)
        prompt = mmlu_prompt(q.question, options)
        if max_prompt_chars and len(prompt) > max_prompt_chars:
            continue
        out.append(Example(id=q.id, prompt=prompt, options=options, answer=answer, category=q.category))
        if limit and len(out) >= limit:
            break
    return out
