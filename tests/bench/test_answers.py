"""Answer extraction: the three multiple-choice conventions, reasoning stripping, short answers."""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path

import pytest

from evals.answers import (
    extract_boxed,
    extract_choice,
    extract_gpqa,
    extract_mmlu_pro,
    extract_symbolic_moe,
    normalize_short_answer,
    option_letters,
    short_answer_match,
    strip_reasoning,
)

RECORDED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "recorded" / "mmlu_pro_tiger" / "responses"


# ----------------------------------------------------------------------------- MMLU-Pro order


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Let's see. The answer is (C).", "C"),
        ("the answer is B because", "B"),
        ("The answer is (B). Wait, no: the answer is (D).", "B"),  # the authors take the FIRST match
        ("The Answer is (E)", "E"),  # step 1 is case-sensitive ("answer is"), step 3 then finds E
        ("Reasoning...\nAnswer: E", "E"),
        ("answer: F", "F"),  # step 2 accepts a lowercase "answer:"
        ("Answer: (B)", "B"),  # step 2 wants the letter right after the colon; step 3 finds it
        ("Answer: A, or maybe Answer: C\nlater Answer: D", "C"),  # step 2: first line, last hit on it
        ("I pick option H here.", "H"),  # step 3: the last standalone capital in range
        ("Option A is wrong, so J", "J"),
        ("It is B. Not the DNA", "B"),  # letters inside words do not count in step 3
        ("The answer is (K).", None),  # K is not an option letter
        ("", None),
        ("no letter at all here", None),
    ],
)
def test_mmlu_pro_extractor(text: str, expected: str | None) -> None:
    assert extract_mmlu_pro(text, 10) == expected


def test_mmlu_pro_letters_outside_n_options_are_ignored() -> None:
    assert extract_mmlu_pro("The answer is (F)", n_options=4) is None
    assert extract_mmlu_pro("The answer is (F). Otherwise C", n_options=4) == "C"
    assert extract_mmlu_pro("Answer: G\nso it is B", n_options=4) == "B"
    with pytest.raises(ValueError, match="n_options"):
        extract_mmlu_pro("A", n_options=11)


def _authors_extract(text: str) -> str | None:
    """The MMLU-Pro authors' three regexes, literally (current evaluate_from_local.py)."""
    if m := re.search(r"answer is \(?([A-J])\)?", text):
        return m.group(1)
    if m := re.search(r".*[aA]nswer:\s*([A-J])", text):
        return m.group(1)
    m = re.search(r"\b[A-J]\b(?!.*\b[A-J]\b)", text, re.DOTALL)
    return m.group(0) if m else None


def test_mmlu_pro_extractor_equals_the_authors_regexes_on_random_text() -> None:
    rng = random.Random(1234)
    tokens = ["answer:", "Answer: ", "Answer:", "A", "B", "J", "K", " ", "\n", "\n\n", "x", "answer is (", ")", "DNA", "é", "nswer:", "\t"]
    for _ in range(20_000):
        text = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 14)))
        assert extract_mmlu_pro(text) == _authors_extract(text), repr(text)


def test_mmlu_pro_extractor_is_linear_on_long_lines() -> None:
    # The authors' `.*[aA]nswer:` regex is quadratic on a long line; ours must not be.
    text = "x " * 200_000 + "Answer: C"
    assert extract_mmlu_pro(text) == "C"


@pytest.mark.parametrize("model", ["Gemini-3.1-Pro", "DeepSeek-R1-Distill-Qwen-7B-nothinking", "jamba-1.5-large"])
def test_mmlu_pro_extractor_reproduces_the_recorded_preds(model: str) -> None:
    """These runs were scored by the authors' current extractor: every recorded `pred` must match."""
    path = RECORDED / f"{model}.jsonl.gz"
    assert path.is_file(), f"recorded data missing at {path}: shared/ must sit beside the repository"
    n = 0
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            assert extract_mmlu_pro(row["response"] or "") == row["pred"], row["question_id"]
            n += 1
    assert n > 8000


# ----------------------------------------------------------------------------- Symbolic-MoE order


def test_symbolic_moe_extractor_takes_the_last_paren_then_the_noisy_fallback() -> None:
    assert extract_symbolic_moe("(A) is tempting but C) is right", 10) == "C"
    assert extract_symbolic_moe("The answer is (B). Hmm, (D)", 4) == "D"  # the LAST X)
    assert extract_symbolic_moe("B. is the one", 4) == "B"
    # The documented noisy fallback: the last capital in range anywhere, even inside a word.
    assert extract_symbolic_moe("Because Dalton said so", 4) == "D"
    assert extract_symbolic_moe("Because Einstein said so", 4) == "B"  # E is not in A-D
    assert extract_symbolic_moe("F) no, G)", 4) is None
    assert extract_symbolic_moe("", 4) is None


# ----------------------------------------------------------------------------- GPQA


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: B\n... on reflection\nAnswer: $D", "D"),  # the last one
        ("**Answer:** C", "C"),
        ("ANSWER: (A)", "A"),
        ("Answer: $B$", "B"),
        ("so the answer is (C)", "C"),
        ("the answer is B. Later: the answer is (A)", "A"),
        ("Answer: Because of symmetry, the answer is (D)", "D"),  # "Because" is not an answer
        ("Answer: E", None),  # out of range
        ("", None),
    ],
)
def test_gpqa_extractor(text: str, expected: str | None) -> None:
    assert extract_gpqa(text) == expected


# ----------------------------------------------------------------------------- dispatch, reasoning


def test_reasoning_is_stripped_before_extraction() -> None:
    text = "<think>The answer is (A)? no...</think>The answer is (G)."
    assert strip_reasoning(text) == "The answer is (G)."
    assert strip_reasoning("a</think>b</think> c") == " c"  # the LAST </think>
    assert strip_reasoning("no tags") == "no tags"
    assert extract_choice(text, 10) == "G"
    assert extract_choice(text, 10, strip_think=False) == "A"
    assert extract_choice("<think>Answer: B</think>", 4, style="gpqa") is None  # nothing after thinking


def test_extract_choice_dispatches_on_style() -> None:
    text = "The answer is (B). Hmm, D) looks better"
    assert extract_choice(text, 4) == "B"
    assert extract_choice(text, 4, style="symbolic-moe") == "D"
    assert extract_choice("Answer: C", 4, style="gpqa") == "C"
    assert extract_choice(None, 4) is None
    with pytest.raises(ValueError, match="style"):
        extract_choice("A", 4, style="nope")  # type: ignore[arg-type]
    assert option_letters(4) == "ABCD"


# ----------------------------------------------------------------------------- short answers


@pytest.mark.parametrize(
    ("pred", "gold", "ok"),
    [
        ("42", "42", True),
        (" 42. ", "42", True),
        ("1.0", "1", True),
        ("-0.50", "-.5", True),
        ("1,000", "1000", True),
        ("1,2", "12", False),  # not a thousands separator
        ("\\boxed{17}", "17", True),
        ("so \\boxed{1} then \\boxed{\\frac{1}{2}}", "0.5", True),  # the last box, balanced braces
        ("$3/4$", "0.75", True),
        ("50\\%", "50", True),
        ("The answer is Paris.", "paris", True),
        ("the Nile", "Nile", True),
        ("<think>maybe 41</think>42", "42", True),
        ("41", "42", False),
        ("1/0", "0", False),
        ("nan", "NaN", True),  # equal as strings, never parsed as a number
        ("inf", "1e309", False),
        (None, "x", False),
    ],
)
def test_short_answer_match(pred: str | None, gold: str, ok: bool) -> None:
    assert short_answer_match(pred, gold) is ok


def test_normalize_short_answer_and_boxed() -> None:
    assert normalize_short_answer("  **The final answer is: $\\text{Blue}$.** ") == "blue"
    assert normalize_short_answer("answer") == "answer"
    assert extract_boxed("\\boxed{a{b}c} and \\fbox{d}") == "d"
    assert extract_boxed("\\boxed{a{b}c}") == "a{b}c"
    assert extract_boxed("\\boxed{cut off") is None
    assert extract_boxed("none") is None
