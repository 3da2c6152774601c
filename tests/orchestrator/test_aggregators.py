from experts import GenerationResult
from routers import aggregation as aggregators
from routers.types import ExpertOutput
from routers.types import Query


def out(i: int, answer: str | None, weight: float = 1.0, ok: bool = True, text: str = "") -> ExpertOutput:
    return ExpertOutput(index=i, expert=f"e{i}", text=text or f"The answer is ({answer})", answer=answer, weight=weight, ok=ok)


def test_majority_vote_and_tie_break_by_first_seen() -> None:
    final = aggregators.vote([out(0, "B"), out(1, "C"), out(2, "C")])
    assert final.answer == "C" and final.tally == {"B": 1.0, "C": 2.0}
    tie = aggregators.vote([out(0, "D"), out(1, "A")])
    assert tie.answer == "D"  # first seen wins a tie: deterministic


def test_vote_ignores_failed_and_unparsed_outputs() -> None:
    final = aggregators.vote([out(0, None), out(1, "A", ok=False), out(2, "E")])
    assert final.answer == "E"
    assert aggregators.vote([out(0, "A", ok=False)]).answer is None


def test_weighted_vote_lets_weights_overrule_counts() -> None:
    outs = [out(0, "A", 0.2), out(1, "A", 0.2), out(2, "B", 0.9)]
    assert aggregators.vote(outs).answer == "A"
    assert aggregators.vote(outs, weighted=True).answer == "B"


def test_free_text_vote_picks_the_most_agreeing_output() -> None:
    outs = [
        out(0, None, text="Paris is the capital of France."),
        out(1, None, text="The capital of France is Paris."),
        out(2, None, text="I like turtles very much."),
    ]
    final = aggregators.vote(outs)
    assert final.method == "vote:agreement" and "Paris" in final.text


def test_oracle_takes_a_correct_answer_when_any_exists() -> None:
    outs = [out(0, "A"), out(1, "A"), out(2, "J")]
    assert aggregators.oracle(outs, gold="J").answer == "J"
    assert aggregators.oracle(outs, gold="C").answer == "A"


def test_extract_answer_prefers_backend_parse_then_extractor() -> None:
    q = Query(text="q", choices=("x", "y", "z", "w"))
    assert aggregators.extract_answer(q, GenerationResult(text="The answer is (C)", answer="B")) == "B"
    assert aggregators.extract_answer(q, GenerationResult(text="so the answer is (C).")) == "C"
    short = Query(text="What is 6*7?")
    assert aggregators.extract_answer(short, GenerationResult(text=" 42. ")) == "42"


def test_synthesis_prompt_lists_candidates_without_reasoning() -> None:
    q = Query(text="Which is prime?", choices=("4", "6", "7", "9"))
    outs = [out(0, "C", text="<think>hmm 4 is even</think>7 is prime. The answer is (C)"), out(1, "A", text="The answer is (A)")]
    req = aggregators.synthesis_request(q, outs)
    prompt = req.messages[-1].content
    assert "hmm 4 is even" not in prompt and "7 is prime" in prompt
    assert "The answer is (A)" in prompt and "Which is prime?" in prompt
