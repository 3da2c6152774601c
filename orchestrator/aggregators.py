"""Combining expert outputs: majority vote, weighted vote, LLM synthesis, oracle.

Answers are extracted per output first (`extract_answer`): a recorded expert's own parsed letter
when the backend gives one, else the multiple-choice extractor for questions with options, else
the normalised short answer. Free-form text that yields no comparable answer is "voted" by
agreement: the output sharing the most words with the others wins (a medoid), since exact-match
voting over free text would always tie.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from experts.types import GenerationRequest, GenerationResult
from orchestrator.answers import extract_choice, normalize_short_answer, strip_reasoning
from routers.base import Query

SHORT_ANSWER_MAX_CHARS = 64


@dataclass
class ExpertOutput:
    """One expert's (final, after fallback) output for one assignment of a plan."""

    index: int
    expert: str
    text: str
    answer: str | None
    weight: float = 1.0
    ok: bool = True


@dataclass
class FinalAnswer:
    text: str
    answer: str | None
    method: str
    tally: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)


def extract_answer(query: Query, result: GenerationResult) -> str | None:
    if not result.ok:
        return None
    if result.answer_parsed or result.answer is not None:
        return result.answer
    if query.is_multiple_choice:
        return extract_choice(result.text, query.n_options)
    text = strip_reasoning(result.text).strip()
    if 0 < len(text) <= SHORT_ANSWER_MAX_CHARS:
        return normalize_short_answer(text) or None
    return None


def _words(text: str) -> set[str]:
    return {w for w in "".join(c.lower() if c.isalnum() else " " for c in text).split() if len(w) > 2}


def _medoid(outputs: list[ExpertOutput]) -> ExpertOutput:
    if len(outputs) <= 2:
        return outputs[0]
    bags = [_words(o.text) for o in outputs]

    def agreement(i: int) -> float:
        return sum(len(bags[i] & bags[j]) / (len(bags[i] | bags[j]) or 1) for j in range(len(outputs)) if j != i)

    return outputs[max(range(len(outputs)), key=lambda i: (agreement(i), -i))]


def vote(outputs: list[ExpertOutput], *, weighted: bool = False) -> FinalAnswer:
    """Majority (or weighted) vote over extracted answers; ties go to the answer seen first."""
    method = "weighted-vote" if weighted else "vote"
    ok = [o for o in outputs if o.ok]
    if not ok:
        return FinalAnswer(text="", answer=None, method=method, detail={"reason": "every expert failed"})
    tally: dict[str, float] = defaultdict(float)
    first_seen: dict[str, int] = {}
    for o in ok:
        if o.answer is None:
            continue
        tally[o.answer] += o.weight if weighted else 1.0
        first_seen.setdefault(o.answer, o.index)
    if not tally:
        rep = _medoid(ok)
        return FinalAnswer(text=rep.text, answer=None, method=f"{method}:agreement", detail={"representative": rep.expert})
    winner = max(tally, key=lambda a: (tally[a], -first_seen[a]))
    rep = next(o for o in ok if o.answer == winner)
    return FinalAnswer(text=rep.text, answer=winner, method=method, tally=dict(tally), detail={"representative": rep.expert})


def oracle(outputs: list[ExpertOutput], gold: str | None) -> FinalAnswer:
    """Correct if any expert is correct (an upper bound, benchmarks only)."""
    for o in outputs:
        if o.ok and o.answer is not None and gold is not None and o.answer == gold:
            return FinalAnswer(text=o.text, answer=o.answer, method="oracle", detail={"by": o.expert})
    fallback = vote(outputs)
    fallback.method = "oracle"
    return fallback


def synthesis_request(query: Query, outputs: list[ExpertOutput], *, max_tokens: int | None = None, temperature: float = 0.0) -> GenerationRequest:
    """The Mixture-of-Agents style aggregation prompt Symbolic-MoE uses (reasoning stripped)."""
    from orchestrator.prompts import aggregator_prompt

    texts = [o.text for o in outputs if o.ok and o.text.strip()]
    prompt = aggregator_prompt(query.text_with_options(), texts, query.answer_instruction())
    return GenerationRequest.chat(prompt, max_tokens=max_tokens or query.max_tokens or 256, temperature=temperature)


def from_synthesis(query: Query, result: GenerationResult, aggregator: str) -> FinalAnswer:
    return FinalAnswer(text=result.text, answer=extract_answer(query, result), method="llm", detail={"aggregator": aggregator})
