"""The loop's rules (§1.3): turn limit plus one answer-only turn, observations per outcome."""

from routers.router_r1.episode import Episode, truncate_reply
from routers.router_r1.prompts import NONE_OBSERVATION


def resolve(name: str) -> str | None:
    return {"yi-34b": "Yi-34B"}.get(name)


def test_loop_stops_after_max_turns_plus_one_answer_only_turn() -> None:
    ep = Episode(max_turns=4)
    generations = 0
    while not ep.done:
        step = ep.accept("<think>still thinking</think> <search> Yi-34B:what is it? </search>", resolve)
        generations += 1
        if step.call is not None:
            ep.observe(step, "a reply")
        else:
            ep.observe(step, None)
    assert generations == 5
    assert [s.routing for s in ep.steps] == [True, True, True, True, False]
    assert [s.outcome for s in ep.steps] == ["route"] * 4 + ["final"]
    assert ep.routes_executed == 4  # the last turn's search is parsed, never executed
    assert ep.steps[-1].call is None
    assert ep.transcript.count("<information>") == 4


def test_answer_ends_the_episode_at_once() -> None:
    ep = Episode(max_turns=4)
    step = ep.accept("<think>easy</think><answer> Paris </answer> and more text", resolve)
    assert step.outcome == "answer" and ep.done and ep.answer == "Paris"
    assert ep.transcript.endswith("</answer>")  # cut after the first </answer>


def test_invalid_and_missing_actions_give_empty_observations_and_continue() -> None:
    ep = Episode(max_turns=4)
    s1 = ep.accept("I will just talk.", resolve)
    assert s1.outcome == "no-action" and ep.observe(s1, None) == "" and not ep.done
    s2 = ep.accept("<search> Yi-34B no colon </search>", resolve)
    assert s2.outcome == "invalid-route" and s2.call is None and ep.observe(s2, None) == ""
    s3 = ep.accept("<search> gpt-9: who? </search>", resolve)
    assert s3.outcome == "unknown-expert" and ep.observe(s3, None) == NONE_OBSERVATION
    s4 = ep.accept("<search> yi-34b: who? </search>", resolve)
    assert s4.call is not None and s4.call.expert == "Yi-34B"
    assert ep.observe(s4, None) == NONE_OBSERVATION and not s4.ok  # a failed call: None, counted invalid
    assert ep.routes_executed == 0 and not ep.done


def test_costs_accumulate_only_for_answered_routes() -> None:
    ep = Episode(max_turns=2)
    s = ep.accept("<search> yi-34b: who? </search>", resolve)
    ep.observe(s, "him", cost=12.5)
    s = ep.accept("<search> yi-34b: and? </search>", resolve)
    ep.observe(s, None, cost=99.0)
    assert ep.cost == 12.5 and ep.routes_executed == 1


def test_observation_truncation_keeps_the_tail_and_the_tag() -> None:
    assert truncate_reply("h" * 50 + "x" * 100, 5) == "x" * 20  # ~4 characters a token without a tokenizer
    words = "one two three four five six"
    enc = lambda s: s.split()  # noqa: E731 - a whitespace "tokenizer" makes the cut visible
    dec = lambda ids: " ".join(ids)  # noqa: E731
    assert truncate_reply(words, 3, enc, dec) == "four five six"
    assert truncate_reply(words, 10, enc, dec) == words
    ep = Episode()
    s = ep.accept("<search> yi-34b: q? </search>", resolve)
    assert ep.observe(s, truncate_reply(words, 2, enc, dec)).strip() == "<information>five six</information>"


def test_truncation_ends_at_the_first_answer_statement() -> None:
    """Chain-of-thought replies end with "The answer is (X)"; base models then write an invented
    next question, which is dropped, so the kept tail ends with the answer."""
    enc = lambda s: s.split()  # noqa: E731
    dec = lambda ids: " ".join(ids)  # noqa: E731
    reply = "Let's think. Mitochondria make ATP. The answer is (C).\n\nQuestion: Which organ pumps blood? Options: A. liver"
    assert truncate_reply(reply, 7, enc, dec) == "Mitochondria make ATP. The answer is (C)."
    assert truncate_reply(reply, 100, enc, dec) == "Let's think. Mitochondria make ATP. The answer is (C)."
    assert truncate_reply("the answer is B and more", 100) == "the answer is B"


def test_prefill_opens_the_first_turn_and_stripped_stops_are_restored() -> None:
    ep = Episode.start(max_turns=2, prefill="<think>ask</think>\n<search> Yi-34B:")
    step = ep.accept(" who wrote it? ", resolve, stop_string="</search>")  # the server removed </search>
    assert step.outcome == "route" and step.call is not None and step.call.query == "who wrote it?"
    assert ep.transcript == "<think>ask</think>\n<search> Yi-34B: who wrote it? </search>"
    assert ep.segments()[0] == ("<think>ask</think>\n<search> Yi-34B:", False)  # the prefill is not the policy's text
    ep.observe(step, "Shakespeare")
    step = ep.accept("<think>ok</think><answer> Shakespeare", resolve, stop_string="</answer>")
    assert step.outcome == "answer" and ep.answer == "Shakespeare"
    assert "".join(t for t, _ in ep.segments()) == ep.transcript


def test_end_of_sequence_inside_a_search_is_not_a_route() -> None:
    """EOS (or the token limit) in the middle of `<search>`: no stop string, so no closing tag is
    invented and nothing is called — the same in training and at inference."""
    ep = Episode(max_turns=2)
    step = ep.accept("<think>x</think><search> yi-34b: who? ", resolve, stop_string=None)
    assert step.outcome == "no-action" and step.call is None
