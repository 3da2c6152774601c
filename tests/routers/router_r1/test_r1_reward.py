"""The reward of the reference (§1.5): format gate, outcome, cost normaliser, α."""

import math

import numpy as np
import pytest

from routers.router_r1.reward import (
    CostNormaliser,
    answer_letter,
    call_cost,
    exact_match,
    f1_score,
    format_score,
    format_violations,
    normalize_answer,
    total_reward,
)

POOL = {"qwen2.5-7b-instruct", "llama-3.1-70b-instruct"}


def valid(name: str) -> bool:
    return name.strip().lower() in POOL


GOOD = [
    "<think>I know this.</think>\n<answer> Paris </answer>",
    "<think>Need help.</think>\n<search> Qwen2.5-7B-Instruct:Who wrote Hamlet? </search>\n\n"
    "<information>Shakespeare wrote it.</information>\n\n<think>So.</think>\n<answer> William Shakespeare </answer>",
    "<think>a</think><search> llama-3.1-70b-instruct: capital of France? </search><information>Paris</information>"
    "<think>b</think><search> qwen2.5-7b-instruct: really? </search><information>yes</information><think>c</think><answer>Paris</answer>",
]

BAD = {
    "no tags": "Paris",
    "does not start with think": "<answer> Paris </answer>",
    "does not end with answer": "<think>x</think><answer> Paris </answer> trailing",
    "two answers": "<think>x</think><answer>A</answer><answer>B</answer>",
    "unbalanced": "<think>x</think><think>y<answer>A</answer>",
    "empty think": "<think> </think><answer>A</answer>",
    "ellipsis think": "<think>...</think><answer>A</answer>",
    "nested": "<think>x <answer>A</answer></think><answer>A</answer>",
    "search without information": "<think>x</think><search> Qwen2.5-7B-Instruct:q? </search><think>y</think><answer>A</answer>",
    "two colons": "<think>x</think><search> Qwen2.5-7B-Instruct:a:b </search><information>i</information><think>y</think><answer>A</answer>",
    "empty query": "<think>x</think><search> Qwen2.5-7B-Instruct: </search><information>i</information><think>y</think><answer>A</answer>",
    "placeholder": "<think>x</think><search> LLM-Name:Your-Query </search><information>i</information><think>y</think><answer>A</answer>",
    "name in query": "<think>x</think><search> Qwen2.5-7B-Instruct:is qwen2.5-7b-instruct good? </search><information>i</information><think>y</think><answer>A</answer>",
    "unknown model": "<think>x</think><search> GPT-9:q? </search><information>i</information><think>y</think><answer>A</answer>",
    "no think": "<search> Qwen2.5-7B-Instruct:q? </search><information>i</information><answer>A</answer>",
}


@pytest.mark.parametrize("response", GOOD)
def test_format_gate_accepts_good_responses(response: str) -> None:
    assert format_violations(response, valid) == []
    assert format_score(response, valid) == 0


@pytest.mark.parametrize("case", sorted(BAD))
def test_format_gate_rejects_bad_responses(case: str) -> None:
    assert format_score(BAD[case], valid) == -1, case
    assert format_violations(BAD[case], valid)


def test_squad_normalisation_em_and_f1() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("the eiffel tower", ["Eiffel Tower."])
    assert not exact_match("tower", ["Eiffel Tower"])
    assert f1_score("eiffel tower paris", ["the Eiffel Tower"]) == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert f1_score("yes", ["no"]) == 0.0


def test_answer_letter_forms() -> None:
    assert [answer_letter(a, 10) for a in ("B", "(c)", "D. text", "E) x", "Option f", "K", "Because")] == [
        "B", "C", "D", "E", "F", None, None]
    assert answer_letter("J", 4) is None  # out of range


def test_cost_normaliser_rolling_percentiles() -> None:
    n = CostNormaliser(window=5)
    assert n.score(4.0) == 0.5  # one value: lo == hi
    assert n.score(4.0) == 0.5  # equal values: range below 1e-8
    # Three values: sqrt costs [2, 2, 10]; 5th/95th percentiles by linear interpolation.
    lo, hi = np.percentile([2, 2, 10], 5), np.percentile([2, 2, 10], 95)
    assert n.score(100.0) == pytest.approx(1 - min(max((10 - lo) / (hi - lo), 0), 1))
    c = n.score(0.0)  # cheapest so far: clipped to the top of the scale
    assert c == 1.0
    # The window drops the oldest values.
    for _ in range(5):
        n.score(9.0)
    assert list(n.values) == [3.0] * 5


def test_cost_is_completion_tokens_times_price_in_micro_dollars() -> None:
    assert call_cost(120, 0.88) == pytest.approx(105.6)


def test_total_reward_arithmetic() -> None:
    good = "<think>x</think><search> Qwen2.5-7B-Instruct:who? </search><information>i</information><think>y</think><answer> Paris </answer>"
    norm = CostNormaliser()
    norm.score(0.0)
    norm.score(400.0)  # sqrt costs seen: 0, 20
    r = total_reward(good, gold=["paris"], raw_cost=100.0, alpha=0.6, normaliser=norm, is_valid_name=valid)
    xs = [0.0, 20.0, 10.0]
    lo, hi = np.percentile(xs, 5), np.percentile(xs, 95)
    c = 1 - (math.sqrt(100.0) - lo) / (hi - lo)
    assert r.format_score == 0 and r.outcome == 1.0
    assert r.cost_reward == pytest.approx(c)
    assert r.reward == pytest.approx(0.4 + 0.6 * c)
    # α = 0: pure outcome.
    assert total_reward(good, gold="Paris", raw_cost=0, alpha=0.0, normaliser=CostNormaliser(), is_valid_name=valid).reward == 1.0
    # Wrong answer: 0, whatever the cost.
    assert total_reward(good, gold="Lyon", raw_cost=0, alpha=0.9, normaliser=CostNormaliser(), is_valid_name=valid).reward == 0.0
    # Bad format: -1 even when correct.
    assert total_reward("<answer>Paris</answer>", gold="Paris", raw_cost=0, alpha=0.0, normaliser=CostNormaliser(),
                        is_valid_name=valid).reward == -1.0


def test_multiple_choice_outcome_by_letter_or_option_text() -> None:
    resp = "<think>x</think><answer> (B) </answer>"
    kw = {"raw_cost": 0.0, "alpha": 0.0, "is_valid_name": valid, "n_options": 4, "choices": ["red", "blue", "green", "gray"]}
    assert total_reward(resp, gold="B", normaliser=CostNormaliser(), **kw).reward == 1.0
    assert total_reward(resp, gold="C", normaliser=CostNormaliser(), **kw).reward == 0.0
    assert total_reward("<think>x</think><answer> Blue </answer>", gold="B", normaliser=CostNormaliser(), **kw).reward == 1.0
