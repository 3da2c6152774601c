"""Parsing rules of the reference (§1.2, §1.3): the cut, the action, the route, the name."""

import pytest

from conftest import POOL3
from routers.router_r1.parsing import close_turn, cut_response, last_answer, parse_action, parse_route, resolve_expert


def test_cut_at_first_search_even_if_an_answer_comes_first() -> None:
    text = "<think>a</think><answer>X</answer> <search> m:q </search> <search> n:r </search> tail"
    # The rule checks </search> first: a response holding both is cut after the first </search>.
    assert cut_response(text) == "<think>a</think><answer>X</answer> <search> m:q </search>"


def test_cut_at_first_answer_when_no_search() -> None:
    assert cut_response("<think>a</think><answer> B </answer><answer> C </answer>") == "<think>a</think><answer> B </answer>"
    assert cut_response("no tags at all") == "no tags at all"


def test_action_is_the_first_matching_block() -> None:
    a = parse_action("<think>t</think><search> Yi-34B:what? </search>")
    assert (a.kind, a.content) == ("search", " Yi-34B:what? ")
    assert parse_action("<answer>\nParis\n</answer>").kind == "answer"
    assert parse_action("<search> unclosed").kind is None
    assert parse_action("<search>x</answer>").kind is None  # tags must match


def test_route_colon_handling() -> None:
    r = parse_route(" Qwen-7B : Who wrote Hamlet? ")
    assert (r.name, r.query, r.valid) == ("qwen-7b", "Who wrote Hamlet?", True)
    # A second colon truncates the query to the second piece, as in the reference.
    r = parse_route("Yi-34B: ratio 3:4 of what?")
    assert r.valid and r.query == "ratio 3"
    assert not parse_route("Yi-34B who?").valid and "invalid-2" in parse_route("Yi-34B who?").reason
    assert not parse_route("Yi-34B:   ").valid and "invalid-3" in parse_route("Yi-34B:   ").reason
    assert not parse_route("LLM-Name:Your-Query").valid and "invalid-1" in parse_route("LLM-Name:Your-Query").reason


def test_names_resolve_case_insensitively_by_name_or_alias_within_the_pool(recorded_registry) -> None:  # type: ignore[no-untyped-def]
    from experts import ExpertSpec

    from conftest import RECORDED

    recorded_registry.add(ExpertSpec(name="Llama-2-7b-hf", backend="recorded", path=str(RECORDED), model="Llama-2-7b-hf",
                                     aliases=("tiny-llama",)))
    pool = [*POOL3, "Llama-2-7b-hf"]
    assert resolve_expert("yi-34b", recorded_registry, pool) == "Yi-34B"
    assert resolve_expert("PHI-3-MINI-4K-INSTRUCT", recorded_registry, pool) == "Phi-3-mini-4k-instruct"
    assert resolve_expert("Tiny-Llama", recorded_registry, pool) == "Llama-2-7b-hf"
    assert resolve_expert("gpt-5", recorded_registry, pool) is None  # unknown name
    assert resolve_expert("", recorded_registry, pool) is None
    # Registered but outside the router's pool: not routable.
    assert resolve_expert("Llama-2-7b-hf", recorded_registry, POOL3) is None


@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        # a server stopped on the stop string and removed it: it is put back
        ("<think>t</think><search> a:b ", "</search>", "<think>t</think><search> a:b </search>"),
        ("<think>t</think><answer> B ", "</answer>", "<think>t</think><answer> B </answer>"),
        # end-of-sequence or the token limit: taken as written, an unclosed block stays unclosed
        ("<think>t</think><search> a:b ", None, "<think>t</think><search> a:b "),
        ("<think>t</think><answer> B ", None, "<think>t</think><answer> B "),
        # training keeps the sampled stop string in the text: nothing is added twice
        ("<answer> B </answer>", "</answer>", "<answer> B </answer>"),
        ("<think>x</think>", "not a stop string", "<think>x</think>"),
    ],
)
def test_a_turn_is_closed_only_with_the_stop_string_it_ended_on(text: str, stop: str | None, expected: str) -> None:
    assert close_turn(text, stop) == expected


def test_last_answer_block() -> None:
    assert last_answer("<answer> A </answer> x <answer>\n C \n</answer>") == "C"
    assert last_answer("<answer></answer") is None
