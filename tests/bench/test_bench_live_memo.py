"""A live bench generates each temperature-0 (expert, request) once, whichever router asks (issue #25).

The experts are real OpenAI-compatible HTTP clients talking to a real loopback server that records
every request reaching it (tests/recording_upstream.py): the calls are counted at the backend.
"""

import asyncio
import json
from collections import Counter
from pathlib import Path

from experts import ExpertRegistry, GenerationRequest
from experts.spec import ExpertSpec
from orchestrator.bench.runner import BenchOptions, run_benchmark
from orchestrator.dispatcher import Dispatcher
from orchestrator.memo import GenerationMemo
from recording_upstream import RecordingUpstream
from store import Store


def _specs(base_url: str) -> list[ExpertSpec]:
    return [ExpertSpec(name=n, backend="openai", base_url=base_url, model=n, max_batch_size=1, max_wait_ms=0,
                       max_retries=0)
            for n in ("alpha", "beta")]


def _generations(up: RecordingUpstream) -> Counter[tuple[str, str]]:
    """(model, prompt) of every chat completion the upstream received."""
    calls: Counter[tuple[str, str]] = Counter()
    for h in up.hits:
        if h.path.endswith("/chat/completions"):
            body = json.loads(h.body)
            calls[(body["model"], json.dumps(body["messages"], sort_keys=True))] += 1
    return calls


async def test_two_routers_in_one_live_bench_generate_each_expert_prompt_once(tmp_path: Path) -> None:
    with RecordingUpstream(answer="The answer is (B).") as up:
        registry = ExpertRegistry.from_specs(_specs(up.base_url))
        # `single` asks alpha; all-vote asks alpha AND beta the same questions with the same prompt
        opts = BenchOptions(dataset="mmlu-pro", routers=["single", "all-vote", "single@beta"], limit=5, prompt="zero-shot",
                            max_tokens=8, seed=0, router_options={"single": {"expert": "alpha"}, "single@beta": {"expert": "beta"}})
        try:
            async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'live.db'}") as store:
                report = await run_benchmark(opts, store, registry=registry)
        finally:
            await registry.aclose()
    calls = _generations(up)
    r = report["routers"]
    assert r["single"]["n"] == r["all-vote"]["n"] == r["single@beta"]["n"] == 5
    assert r["all-vote"]["expert_calls_per_question"] == 2  # each router still sees (and is charged for) its calls
    assert sorted({m for m, _ in calls}) == ["alpha", "beta"]
    assert len(calls) == 10 and set(calls.values()) == {1}, calls  # 5 questions x 2 experts, each generated once
    # single generates alpha's 5; all-vote reuses those and generates beta's 5; single@beta reuses beta's
    assert report["generation_memo"] == {"reused": 10, "generated": 10}
    assert r["single"]["accuracy"] == r["single@beta"]["accuracy"]  # the same answer text either way


async def test_sampled_and_failed_generations_are_asked_again() -> None:
    with RecordingUpstream() as up:
        registry = ExpertRegistry.from_specs(_specs(up.base_url))
        memo = GenerationMemo()
        try:
            async with Dispatcher(registry, memo=memo) as d:
                sampled = GenerationRequest.chat("Name a colour.", temperature=0.7)
                await d.submit("alpha", sampled)
                await d.submit("alpha", sampled)
                up.fail_with = (500, b'{"error": {"message": "overloaded"}}')
                greedy = GenerationRequest.chat("What is 2+2?")
                failed = await d.submit("alpha", greedy)
                up.fail_with = None
                ok = await d.submit("alpha", greedy)
                again = await d.submit("alpha", greedy)
                # concurrent identical requests share one call; another expert is another generation
                other = GenerationRequest.chat("What is 3+3?")
                both = await asyncio.gather(*(d.submit("alpha", other) for _ in range(4)), d.submit("beta", other))
                group = await d.submit_many("beta", [greedy, greedy, other])
        finally:
            await registry.aclose()
    calls = _generations(up)
    prompt = lambda text: json.dumps([{"role": "user", "content": text}], sort_keys=True)  # noqa: E731
    assert calls[("alpha", prompt("Name a colour."))] == 2
    assert not failed.ok and ok.ok and again.text == ok.text
    assert calls[("alpha", prompt("What is 2+2?"))] == 2  # the failure was not kept; the success was
    assert calls[("alpha", prompt("What is 3+3?"))] == 1 and calls[("beta", prompt("What is 3+3?"))] == 1
    assert all(b.ok for b in both) and all(g.ok for g in group)
    assert calls[("beta", prompt("What is 2+2?"))] == 1  # repeated in one group: sent once
