import pytest

from orchestrator.answers import extract_choice, extract_gpqa, extract_mmlu_pro, extract_symbolic_moe, short_answer_match, strip_reasoning


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Let's see. The answer is (C).", "C"),
        ("the answer is B because", "B"),
        ("The answer is (B). Wait, no: the answer is (D).", "B"),  # the authors take the first match
        ("Reasoning...\nAnswer: E", "E"),
        ("I pick option H here.", "H"),  # last standalone capital in range
        ("The answer is (K).", None),  # K is not an option letter...
        ("Option A is wrong, so J", "J"),
        ("", None),
        ("no letter at all here", None),
    ],
)
def test_mmlu_pro_extractor(text: str, expected: str | None) -> None:
    assert extract_mmlu_pro(text, 10) == expected


def test_letters_outside_the_option_range_are_ignored() -> None:
    assert extract_mmlu_pro("The answer is (F)", n_options=4) is None
    assert extract_mmlu_pro("The answer is (F). Otherwise C", n_options=4) == "C"


def test_symbolic_moe_extractor_takes_last_paren_then_noisy_fallback() -> None:
    assert extract_symbolic_moe("(A) is tempting but C) is right", 10) == "C"
    # The documented noisy fallback: the last capital in range anywhere, even inside a word.
    assert extract_symbolic_moe("Because Dalton said so", 4) == "D"
    assert extract_symbolic_moe("Because Einstein said so", 4) == "B"
    assert extract_symbolic_moe("", 4) is None


def test_gpqa_extractor() -> None:
    assert extract_gpqa("Answer: B\n... on reflection\nAnswer: $D") == "D"
    assert extract_gpqa("so the answer is (C)") == "C"
    assert extract_gpqa("Answer: E") is None


def test_reasoning_is_stripped_before_extraction() -> None:
    text = "<think>The answer is (A)? no...</think>The answer is (G)."
    assert strip_reasoning(text) == "The answer is (G)."
    assert extract_choice(text, 10) == "G"


@pytest.mark.parametrize(
    ("pred", "gold", "ok"),
    [("42", "42", True), (" 42. ", "42", True), ("1.0", "1", True), ("1,000", "1000", True), ("\\boxed{17}", "17", True),
     ("The answer is Paris.", "paris", True), ("the Nile", "Nile", True), ("41", "42", False), (None, "x", False)],
)
def test_short_answer_match(pred: str | None, gold: str, ok: bool) -> None:
    assert short_answer_match(pred, gold) is ok
