"""Prompt formats: MMLU-Pro's official 5-shot CoT, zero-shot CoT, GPQA, Symbolic-MoE's prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.answers import extract_choice
from evals.datasets import Question, load_mmlu_pro
from evals.prompts import (
    BOXED_ANSWER_INSTRUCTION,
    COT_START,
    MMLU_PRO_HEADER,
    aggregator_prompt,
    exemplars_by_category,
    expert_prompt,
    format_question_with_options,
    gpqa_zero_shot_prompt,
    keyword_prompt,
    mmlu_pro_cot_prompt,
    mmlu_pro_zero_shot_prompt,
)

MMLU = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mmlu_pro"


@pytest.fixture(scope="module")
def test_questions() -> list[Question]:
    assert (MMLU / "test.jsonl").is_file(), f"MMLU-Pro data missing at {MMLU}: shared/ must sit beside the repository"
    return load_mmlu_pro(MMLU / "test.jsonl")


@pytest.fixture(scope="module")
def shots() -> dict[str, list[Question]]:
    return exemplars_by_category(load_mmlu_pro(MMLU / "validation.jsonl"))


def _q(**over: object) -> Question:
    fields: dict[str, object] = {
        "id": "1", "dataset": "x", "question": "Which is prime?", "options": ["4", "6", "7", "9"],
        "answer": "C", "answer_index": 2, "category": "math",
    }
    fields.update(over)
    return Question(**fields)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- MMLU-Pro 5-shot


def test_exemplars_by_category(shots: dict[str, list[Question]]) -> None:
    assert len(shots) == 14 and all(len(v) == 5 for v in shots.values())
    assert all(e.category == c for c, v in shots.items() for e in v)


def test_five_shot_prompt_follows_the_official_format(test_questions: list[Question], shots: dict[str, list[Question]]) -> None:
    q = next(q for q in test_questions if q.category == "law")
    prompt = mmlu_pro_cot_prompt(q, shots["law"])
    header = MMLU_PRO_HEADER.format(category="law")
    assert header.startswith("You are an expert in law. Below is a series of example questions (with answers) about law")
    assert prompt.startswith(header + "\nQuestion:\n")  # one newline after the header, as upstream
    assert prompt.count("Question:\n") == 6  # 5 exemplars + the question
    assert prompt.count(COT_START) == 6
    assert "A: Let's think step by step." not in prompt
    assert "N/A" not in prompt
    assert prompt.endswith("\nAnswer: Let's think step by step.")
    for e in shots["law"]:
        assert f"Question:\n{e.question}\nOptions:\n" in prompt
        assert e.cot_content.replace("A: Let's think step by step.", COT_START) + "\n\n" in prompt
    last = prompt.rsplit("Question:\n", 1)[1]
    expected_options = "\n".join(f"{'ABCDEFGHIJ'[i]}. {o}" for i, o in enumerate(q.options))
    assert last == f"{q.question}\nOptions:\n{expected_options}\n{COT_START}"


def test_five_shot_prompt_uses_only_the_questions_category(test_questions: list[Question], shots: dict[str, list[Question]]) -> None:
    q = next(q for q in test_questions if q.category == "physics")
    all_val = [e for v in shots.values() for e in v]
    from_list = mmlu_pro_cot_prompt(q, all_val)
    assert from_list == mmlu_pro_cot_prompt(q, shots) == mmlu_pro_cot_prompt(q, shots["physics"])
    assert all(e.question not in from_list for c, v in shots.items() if c != "physics" for e in v)


def test_five_shot_prompt_equals_an_independent_rendering(test_questions: list[Question]) -> None:
    """Rebuild the prompt from the raw JSON, step by step as benchmarks.md describes it."""
    raw_val = [json.loads(line) for line in (MMLU / "validation.jsonl").read_text(encoding="utf-8").splitlines()]
    val = exemplars_by_category(load_mmlu_pro(MMLU / "validation.jsonl"))
    for q in test_questions[::1500]:
        text = MMLU_PRO_HEADER.replace("{category}", q.category) + "\n"
        for r in [r for r in raw_val if r["category"] == q.category][:5]:
            opts = [o for o in r["options"] if o != "N/A"]
            text += "Question:\n" + r["question"] + "\nOptions:\n" + "".join(f"{'ABCDEFGHIJ'[i]}. {o}\n" for i, o in enumerate(opts))
            text += r["cot_content"].replace("A: Let's think step by step.", "Answer: Let's think step by step.") + "\n\n"
        text += "Question:\n" + q.question + "\nOptions:\n" + "".join(f"{'ABCDEFGHIJ'[i]}. {o}\n" for i, o in enumerate(q.options))
        text += "Answer: Let's think step by step."
        assert mmlu_pro_cot_prompt(q, val) == text


def test_exemplars_are_dropped_to_fit_the_token_budget(test_questions: list[Question], shots: dict[str, list[Question]]) -> None:
    q = test_questions[0]
    words = lambda s: len(s.split())  # noqa: E731 - a crude token counter is enough here
    full = mmlu_pro_cot_prompt(q, shots)
    assert mmlu_pro_cot_prompt(q, shots, token_counter=words, max_prompt_tokens=words(full) + 1) == full
    # The authors keep a prompt only if it is strictly shorter than the budget.
    at_limit = mmlu_pro_cot_prompt(q, shots, token_counter=words, max_prompt_tokens=words(full))
    assert at_limit.count("Question:\n") == 5
    assert full.startswith(at_limit.rsplit("Question:\n", 1)[0])  # the LAST exemplar went first
    counts = [mmlu_pro_cot_prompt(q, shots, token_counter=words, max_prompt_tokens=b).count("Question:\n") for b in range(words(full) + 1, 0, -50)]
    assert counts == sorted(counts, reverse=True) and counts[0] == 6 and counts[-1] == 1
    tiny = mmlu_pro_cot_prompt(q, shots, token_counter=words, max_prompt_tokens=1)
    assert tiny.count("Question:\n") == 1 and tiny.endswith(COT_START)  # all exemplars gone, the question stays
    assert mmlu_pro_cot_prompt(q, shots, max_exemplars=2).count("Question:\n") == 3
    assert mmlu_pro_cot_prompt(q, shots, max_exemplars=0).count("Question:\n") == 1


# ----------------------------------------------------------------------------- zero-shot


def test_zero_shot_prompts() -> None:
    q = _q()
    mmlu = mmlu_pro_zero_shot_prompt(q)
    assert "The answer is (X)" in mmlu and "\nC. 7\n" in mmlu and "about math" in mmlu
    assert mmlu.endswith(COT_START)
    g = gpqa_zero_shot_prompt(q)
    assert "'Answer: $LETTER'" in g and "one of ABCD" in g
    assert g.endswith("A) 4\nB) 6\nC) 7\nD) 9")


# ----------------------------------------------------------------------------- Symbolic-MoE


def test_format_question_with_options() -> None:
    q = _q()
    assert format_question_with_options(q) == "Which is prime?\nOptions:\nA. 4\nB. 6\nC. 7\nD. 9"
    assert format_question_with_options(q, layout="inline") == "Which is prime? The options are: (A) 4 (B) 6 (C) 7 (D) 9."


def test_expert_and_keyword_prompts() -> None:
    q = _q()
    e = expert_prompt(q)
    assert e.startswith("Question: Which is prime? The options are: (A) 4")
    assert '"The answer is (X)"' in e and e.count("Question:") == 1
    assert expert_prompt("What is 2+2?", answer_instruction=BOXED_ANSWER_INSTRUCTION).endswith(BOXED_ANSWER_INSTRUCTION)
    assert "\\boxed{X}" in BOXED_ANSWER_INSTRUCTION
    k = keyword_prompt(q)
    assert k.startswith("Question: Which is prime?")
    assert "2-5 keywords" in k and "comma" in k and "virology" in k and "property law" in k
    assert k.endswith("Keywords: <keyword1>, <keyword2>...")


def test_aggregator_prompt_strips_reasoning_and_numbers_the_responses() -> None:
    responses = [
        "<think>secret chain of thought, maybe (A)</think>\n\nIt is 7. The answer is (C).",
        None,  # a missing response is skipped...
        "   ",  # ...and so is a blank one
        "Six is not prime; 7 is. The answer is (C).",
        "<think>a</think>first</think> final part only",
    ]
    p = aggregator_prompt(format_question_with_options(_q()), responses)
    assert "secret chain of thought" not in p and "<think>" not in p and "</think>" not in p
    assert "Responses from models:\n\n### Model 1's response:\nIt is 7. The answer is (C).\n\n" in p
    assert "### Model 2's response:\nSix is not prime" in p
    assert "### Model 3's response:\nfinal part only\n\n" in p
    assert "### Model 4" not in p
    assert p.index("Responses from models:") < p.index("Question: Which is prime?\nOptions:")
    assert p.endswith('at the end of your response, where X is the letter of the option you choose (a single capital letter).')
    assert extract_choice(p.rsplit("Question:", 1)[0], 4) == "C"  # the synthesised evidence is still parseable
    assert aggregator_prompt(_q(), ["x"], BOXED_ANSWER_INSTRUCTION).endswith(BOXED_ANSWER_INSTRUCTION)
    assert "The options are: (A) 4" in aggregator_prompt(_q(), ["x"])
