"""Dispatcher: coalescing, backpressure, fallback — on real recorded experts."""

import asyncio
import math

import pytest

from conftest import POOL3, mmlu_questions, recorded_specs
from experts import ExpertOverloaded, ExpertRegistry, GenerationRequest
from orchestrator.dispatcher import Dispatcher
from routers.types import Assignment


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


async def test_unbatched_expert_runs_in_the_callers_task_within_its_concurrency_bound() -> None:
    """max_wait_ms=0 and an idle queue: the request skips the collector (the gateway's fast path),
    yet order, stats, the batch observer and max_concurrency are those of the queue."""
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3[:1], max_wait_ms=0, max_batch_size=16, max_concurrency=1))
    backend = reg.backend(POOL3[0])
    inner = backend.generate
    inflight = peak = 0

    async def observed(requests: list[GenerationRequest]) -> list:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.001)  # let other callers run meanwhile
        try:
            return await inner(requests)
        finally:
            inflight -= 1

    backend.generate = observed  # type: ignore[method-assign]
    batches: list[int] = []
    qs = mmlu_questions(30)
    table = backend.rows()
    async with Dispatcher(reg, on_batch=lambda _e, size, _d: batches.append(size)) as d:
        first = await d.submit(POOL3[0], GenerationRequest.chat("q", question_id=qs[0].question_id))
        assert first.text == table[qs[0].question_id].response
        assert batches == [1] and d._queues[POOL3[0]].queue.qsize() == 0
        results = await asyncio.gather(*(d.submit(POOL3[0], GenerationRequest.chat("q", question_id=q.question_id)) for q in qs[1:]))
        stats = d.stats[POOL3[0]]
    assert [r.text for r in results] == [table[q.question_id].response for q in qs[1:]]
    assert peak == 1  # the direct path took the slot, so the rest waited in the queue
    assert stats.requests == 30 and sum(batches) == 30
    assert max(batches) > 1  # those that queued behind the busy slot were coalesced


async def test_grouped_work_is_batched_by_prompt_length_and_answered_in_order() -> None:
    """submit_many enqueues the shortest prompts first, so a padded local batch holds prompts of
    like length; every caller still gets the answer to its own question, in the group's order."""
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3[:1], max_batch_size=8, max_wait_ms=20))
    backend = reg.backend(POOL3[0])
    inner = backend.generate
    batches: list[list[int]] = []

    async def observed(requests: list[GenerationRequest]) -> list:
        batches.append([len(r.messages[0].content) for r in requests])
        return await inner(requests)

    backend.generate = observed  # type: ignore[method-assign]
    qs = mmlu_questions(64)
    requests = [GenerationRequest.chat(q.text_with_options(), question_id=q.question_id) for q in qs]
    async with Dispatcher(reg) as d:
        results = await d.submit_many(POOL3[0], requests)
    table = backend.rows()
    assert [r.text for r in results] == [table[q.question_id].response for q in qs]
    sent = [n for b in batches for n in b]
    assert sent == sorted(len(r.messages[0].content) for r in requests)
    assert sent != [len(r.messages[0].content) for r in requests]  # the group was not already sorted
    # Within a batch the longest prompt is at most the next batch's shortest.
    assert all(max(a) <= min(b) for a, b in zip(batches, batches[1:]))
