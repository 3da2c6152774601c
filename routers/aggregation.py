"""How expert outputs combine: majority vote, weighted vote, LLM synthesis, oracle.

    final = vote(outputs)                               # or vote(outputs, weighted=True)
    final = combine(query, "oracle", outputs)           # every kind that needs no model call
    request = synthesis_request(query, outputs)         # kind "llm": the aggregator's prompt

Pure functions over plain types: the orchestrator's executor runs them for chat, batch jobs and
benchmarks alike (and makes the aggregator call for kind "llm"); routers that decide in rounds
(a cascade) may vote themselves. Answers are extracted per output first
(`routers.types.extract_answer`). Outputs that yield no comparable answer (free-form text, code)
cannot be counted: the highest-weighted output wins (the router's strongest recruit), and when
every weight is equal, the output sharing the most words with the others (a medoid), since
exact-match voting over free text would always tie.
"""

from __future__ import annotations

from collections import defaultdict

from evals.prompts import aggregator_prompt
from experts.types import GenerationRequest, GenerationResult
from routers.types import AggregationKind, ExpertOutput, FinalAnswer, Query, extract_answer


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
        if len({o.weight for o in ok}) > 1:
            rep = max(ok, key=lambda o: (o.weight, -o.index))
            return FinalAnswer(text=rep.text, answer=None, method=f"{method}:highest-weight", detail={"representative": rep.expert})
        rep = _medoid(ok)
        return FinalAnswer(text=rep.text, answer=None, method=f"{method}:agreement", detail={"representative": rep.expert},
                           finish_reason=rep.finish_reason, tool_calls=rep.tool_calls)
    winner = max(tally, key=lambda a: (tally[a], -first_seen[a]))
    rep = next(o for o in ok if o.answer == winner)
    return FinalAnswer(text=rep.text, answer=winner, method=method, tally=dict(tally), detail={"representative": rep.expert},
                       finish_reason=rep.finish_reason, tool_calls=rep.tool_calls)


def oracle(outputs: list[ExpertOutput], gold: str | None) -> FinalAnswer:
    """Correct if any expert is correct (an upper bound, benchmarks only)."""
    for o in outputs:
        if o.ok and o.answer is not None and gold is not None and o.answer == gold:
            return FinalAnswer(text=o.text, answer=o.answer, method="oracle", detail={"by": o.expert}, finish_reason=o.finish_reason)
    fallback = vote(outputs)
    fallback.method = "oracle"
    return fallback


def synthesis_request(query: Query, outputs: list[ExpertOutput], *, max_tokens: int | None = None, temperature: float = 0.0) -> GenerationRequest:
    """The Mixture-of-Agents style aggregation prompt Symbolic-MoE uses (reasoning stripped)."""
    texts = [o.text for o in outputs if o.ok and o.text.strip()]
    prompt = aggregator_prompt(query.text_with_options(), texts, query.answer_instruction())
    return GenerationRequest.chat(prompt, max_tokens=max_tokens or query.max_tokens or 256, temperature=temperature)


def from_synthesis(query: Query, result: GenerationResult, aggregator: str) -> FinalAnswer:
    return FinalAnswer(text=result.text, answer=extract_answer(query, result), method="llm", detail={"aggregator": aggregator},
                       finish_reason=result.finish_reason)


def single(outputs: list[ExpertOutput]) -> FinalAnswer:
    """The first output that succeeded (else the first output): a plan of one expert, or one
    that lists fallbacks in preference order."""
    ok = [o for o in outputs if o.ok] or outputs
    if not ok:
        return FinalAnswer("", None, "single")
    return FinalAnswer(ok[0].text, ok[0].answer, "single", detail={"expert": ok[0].expert}, finish_reason=ok[0].finish_reason,
                       tool_calls=ok[0].tool_calls)


def combine(query: Query, kind: AggregationKind, outputs: list[ExpertOutput]) -> FinalAnswer:
    """Combine outputs by a kind that needs no model call ("llm" falls back to a plain vote here:
    the executor makes the aggregator call and uses this for the plan's `fallback`)."""
    if kind == "oracle":
        return oracle(outputs, query.gold)
    if kind == "weighted-vote":
        return vote(outputs, weighted=True)
    if kind == "single":
        return single(outputs)
    return vote(outputs)
