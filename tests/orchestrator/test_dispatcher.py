"""Dispatcher: coalescing, backpressure, fallback — on real recorded experts."""

import asyncio
import math

import pytest

from conftest import POOL3, mmlu_questions, recorded_specs
from experts import ExpertOverloaded, ExpertRegistry, GenerationRequest
from orchestrator.dispatcher import Dispatcher
from routers.base import Assignment


async def test_concurrent_requests_are_coalesced_into_batches() -> None:
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3[:1], max_batch_size=16, max_wait_ms=20))
    qs = mmlu_questions(200)
    async with Dispatcher(reg) as d:
        results = await asyncio.gather(*(d.submit(POOL3[0], GenerationRequest.chat("q", question_id=q.question_id)) for q in qs))
        stats = d.stats[POOL3[0]]
    assert all(r.ok for r in results)
    assert stats.requests == 200
    assert stats.backend_calls <= math.ceil(200 / 16) + 2, stats.batch_sizes
    assert max(stats.batch_sizes) == 16
    # every caller got the answer to its own question, not a neighbour's
    table = reg.backend(POOL3[0]).rows()
    assert [r.text for r in results] == [table[q.question_id].response for q in qs]


async def test_full_queue_rejects_with_retryable_error() -> None:
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3[:1], max_queue=4, max_batch_size=1))
    qs = mmlu_questions(10)
    async with Dispatcher(reg) as d:
        outcomes = await asyncio.gather(
            *(d.submit(POOL3[0], GenerationRequest.chat("q", question_id=q.question_id)) for q in qs), return_exceptions=True
        )
    rejected = [o for o in outcomes if isinstance(o, ExpertOverloaded)]
    served = [o for o in outcomes if not isinstance(o, BaseException)]
    assert rejected and served
    assert len(rejected) + len(served) == 10
    assert all(e.retryable and "retry later" in str(e) for e in rejected)
    assert d.stats[POOL3[0]].rejected == len(rejected)


async def test_failed_call_falls_back_and_both_attempts_are_kept() -> None:
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3[:2]))
    q = mmlu_questions(1)[0]
    async with Dispatcher(reg) as d:
        # The primary has no recorded output for this id: a real failure, then the fallback answers.
        bad = Assignment(expert=POOL3[0], request=GenerationRequest.chat("q", question_id="no-such-question"), fallback=POOL3[1])
        outcome = await d.call(bad)
        assert [a.expert for a in outcome.attempts] == [POOL3[0], POOL3[1]]
        assert outcome.attempts[0].result.error.kind == "unknown_question"
        assert outcome.attempts[1].fallback_for == POOL3[0]
        ok = await d.call(Assignment(expert=POOL3[0], request=GenerationRequest.chat("q", question_id=q.question_id), fallback=POOL3[1]))
        assert len(ok.attempts) == 1 and ok.ok


async def test_unknown_expert_is_a_clear_error() -> None:
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3[:1]))
    async with Dispatcher(reg) as d:
        with pytest.raises(KeyError, match="unknown expert 'nope'; registered experts"):
            await d.submit("nope", GenerationRequest.chat("q"))
