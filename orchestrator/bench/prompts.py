"""Benchmark prompt formats: MMLU-Pro's official 5-shot chain of thought, zero-shot CoT, GPQA."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from orchestrator.bench.datasets import LETTERS, Question

COT_START = "Answer: Let's think step by step."


def format_options(options: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def format_question_with_options(q: Question) -> str:
    return f"{q.question}\nOptions:\n{format_options(q.options)}"


def _example(q: Question, with_cot: bool) -> str:
    text = f"Question:\n{q.question}\nOptions:\n{format_options(q.options)}\n"
    if with_cot:
        cot = q.cot_content.replace("A: Let's think step by step.", COT_START, 1)
        if not cot.startswith(COT_START):
            cot = f"{COT_START} {cot}"
        return text + cot + "\n\n"
    return text + COT_START


def exemplars_by_category(validation: Iterable[Question]) -> dict[str, list[Question]]:
    out: dict[str, list[Question]] = defaultdict(list)
    for v in validation:
        out[v.category].append(v)
    return dict(out)


def mmlu_pro_cot_prompt(
    q: Question,
    exemplars: list[Question],
    *,
    max_exemplars: int = 5,
    token_counter: Callable[[str], int] | None = None,
    max_prompt_tokens: int = 2048,
) -> str:
    """The official format: header (category twice), up to 5 same-category CoT exemplars, the
    question ending in `Answer: Let's think step by step.`; exemplars are dropped one by one
    while the prompt exceeds `max_prompt_tokens` (4,096 context minus 2,048 for generation)."""
    shots = [e for e in exemplars if e.category == q.category and e.id != q.id][:max_exemplars]
    header = (
        f"You are an expert in {q.category}. Below is a series of example questions (with answers) about "
        f"{q.category} for demonstration. You will be given a question at the end, after the examples, for you to "
        "answer. First give step-by-step reasoning about how to solve the question. Then output the answer.\n\n"
    )
    while True:
        prompt = header + "".join(_example(e, True) for e in shots) + _example(q, False)
        if token_counter is None or not shots or token_counter(prompt) <= max_prompt_tokens:
            return prompt
        shots = shots[:-1]


def mmlu_pro_zero_shot_prompt(q: Question) -> str:
    return (
        f"The following is a multiple choice question about {q.category}. Think step by step, then finish your "
        'answer with "The answer is (X)" where X is the correct letter choice.\n\n'
        f"Question:\n{q.question}\nOptions:\n{format_options(q.options)}\n{COT_START}"
    )


def gpqa_zero_shot_prompt(q: Question) -> str:
    return (
        "Answer the following multiple choice question. Think step by step before answering. The last line of "
        "your response must be of the form 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD.\n\n"
        f"{q.question}\n\n{format_options(q.options)}"
    )
