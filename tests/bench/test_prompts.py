from orchestrator.bench.datasets import Question, default_mmlu_pro_paths, load_mmlu_pro
from orchestrator.bench.prompts import exemplars_by_category, gpqa_zero_shot_prompt, mmlu_pro_cot_prompt, mmlu_pro_zero_shot_prompt


def _data():  # type: ignore[no-untyped-def]
    paths = default_mmlu_pro_paths()
    return load_mmlu_pro(paths["test"]), exemplars_by_category(load_mmlu_pro(paths["validation"]))


def test_five_shot_prompt_follows_the_official_format() -> None:
    test, ex = _data()
    q = next(q for q in test if q.category == "law")
    prompt = mmlu_pro_cot_prompt(q, ex["law"])
    assert prompt.startswith("You are an expert in law. Below is a series of example questions (with answers) about law")
    assert prompt.count("Question:\n") == 6  # 5 exemplars + the question
    assert prompt.count("Answer: Let's think step by step.") == 6
    assert "A: Let's think step by step." not in prompt
    assert "N/A" not in prompt
    assert prompt.endswith("Answer: Let's think step by step.")
    assert q.question in prompt.rsplit("Question:\n", 1)[1]


def test_exemplars_are_dropped_to_fit_the_token_budget() -> None:
    test, ex = _data()
    q = test[0]
    count = lambda s: len(s.split())  # noqa: E731 - a crude token counter is enough here
    full = mmlu_pro_cot_prompt(q, ex[q.category])
    short = mmlu_pro_cot_prompt(q, ex[q.category], token_counter=count, max_prompt_tokens=count(full) - 1)
    assert short.count("Question:\n") == 5
    tiny = mmlu_pro_cot_prompt(q, ex[q.category], token_counter=count, max_prompt_tokens=1)
    assert tiny.count("Question:\n") == 1  # all exemplars gone, the question stays


def test_zero_shot_prompts() -> None:
    q = Question(id="1", dataset="x", question="Which is prime?", options=["4", "6", "7", "9"], answer="C", answer_index=2, category="math")
    assert "The answer is (X)" in mmlu_pro_zero_shot_prompt(q) and "C. 7" in mmlu_pro_zero_shot_prompt(q)
    g = gpqa_zero_shot_prompt(q)
    assert "Answer: $LETTER" in g and "D. 9" in g
