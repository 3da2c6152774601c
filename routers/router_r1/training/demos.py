"""Warm-up demonstrations built from real recorded outputs, never invented ones.

    demo = demonstration(question, pool, tables, rng, tok, obs_tokens=48)
    demo.episode.transcript      # think → route → information → (route → information) → answer

A demonstration thinks, routes to an expert of the pool chosen uniformly at random (not the
oracle: the warm-up teaches the format and the copying, GRPO the choice), receives the tail of
that expert's recorded reply as information, then answers with that expert's recorded
prediction: the answer is copied from the information and the gold answer never leaks in. When
the first expert's run gave no answer, a second expert (uniform among the others that did) is
asked first. Every demonstration is played through `Episode` with the inference parser, the
observation cut by `truncate_reply` exactly as in rollouts, and must pass the format gate.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evals.datasets import Question
from experts.backends.recorded import RecordedRow
from routers.router_r1.episode import Episode, truncate_reply
from routers.router_r1.reward import format_score

# Short on purpose: every token is a decoding step in every rollout, on a CPU.
ROUTE_TURN = "<think>I will ask an LLM.</think>\n<search> {name}:{query} </search>"
RETRY_TURN = "<think>No answer there, so I will ask another LLM.</think>\n<search> {name}:{query} </search>"
ANSWER_TURN = "<think>The answer is ({letter}).</think>\n<answer> {letter} </answer>"

@dataclass
class Demonstration:
    question: Question
    pool: list[str]
    episode: Episode
    experts: list[str]  # asked, in order
    answer: str


def sub_query(question: str, max_words: int = 8) -> str:
    """A short sub-question from the question's first words (no colons or tag brackets: the
    route syntax and the format gate forbid them)."""
    words = re.sub(r"[:<>\s]+", " ", question).split()[:max_words]
    return " ".join(words).rstrip(" ?.,;") + "?"


def demonstration(q: Question, pool: Sequence[str], tables: Mapping[str, Mapping[str, RecordedRow]], rng: random.Random,
                  tok: Any, *, obs_tokens: int, max_turns: int = 3) -> Demonstration | None:
    """One demonstration for `q` with `pool`, or None when no expert of the pool has an answer."""
    first = rng.choice(list(pool))
    order = [first]
    if tables[first][q.id].pred is None:
        others = [m for m in pool if m != first and tables[m][q.id].pred is not None]
        if not others or max_turns < 2:
            return None
        order.append(rng.choice(others))
    by_name = {m.lower(): m for m in pool}

    def resolve(name: str) -> str | None:
        return by_name.get(name.strip().lower())

    query = sub_query(q.question)
    ep = Episode.start(max_turns)
    for i, name in enumerate(order):
        step = ep.accept((ROUTE_TURN if i == 0 else RETRY_TURN).format(name=name, query=query), resolve)
        if step.call is None or step.call.expert != name:
            return None
        reply = truncate_reply(tables[name][q.id].response, obs_tokens, lambda s: tok.encode(s, add_special_tokens=False), tok.decode)
        ep.observe(step, reply)
    letter = tables[order[-1]][q.id].pred
    assert letter is not None
    ep.accept(ANSWER_TURN.format(letter=letter), resolve)
    if not ep.done or format_score(ep.transcript, lambda n: resolve(n) is not None) != 0:
        return None
    return Demonstration(question=q, pool=list(pool), episode=ep, experts=order, answer=letter)
