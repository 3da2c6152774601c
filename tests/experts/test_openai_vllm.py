"""The openai backend against a REAL vLLM CPU server (started by .ci/vllm.sh / scripts/test.sh)."""

import httpx
import pytest

from conftest import require_vllm_url
from experts import ExpertSpec, GenerationRequest
from experts.backends.openai import OpenAIBackend

pytestmark = pytest.mark.vllm


@pytest.fixture
def vllm_url() -> str:
    return require_vllm_url()


def vllm_spec(url: str) -> ExpertSpec:
    return ExpertSpec(name="vllm-smol", backend="openai", base_url=url, model="smollm2-135m-instruct", timeout_s=120, max_batch_size=16)


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
async def test_chat_and_one_batched_completions_call(vllm_url: str, client: str) -> None:
    sent: list[str] = []  # the URL of every generation request sent

    async def count(request: httpx.Request) -> None:
        sent.append(str(request.url))

    b = OpenAIBackend(vllm_spec(vllm_url), http_client=client)
    if client == "httpx":
        for i in range(len(b._pools)):
            b._pool(i).event_hooks["request"].append(count)
    else:
        send = b._send_aiohttp

        async def counted(url: str, data: bytes):  # type: ignore[no-untyped-def]
            sent.append(url)
            return await send(url, data)

        b._send_aiohttp = counted  # type: ignore[method-assign]
    try:
        assert (await b.health()).healthy
        [chat] = await b.generate([GenerationRequest.chat("What is the capital of France?", max_tokens=24)])
        assert chat.ok, chat.error
        assert "paris" in chat.text.lower()
        assert chat.prompt_tokens > 5 and 0 < chat.completion_tokens <= 24

        sent.clear()
        prompts = [f"Question: What is {i} plus {i}?\nAnswer:" for i in range(8)]
        results = await b.generate([GenerationRequest(prompt=p, max_tokens=12) for p in prompts])
        assert len(sent) == 1 and sent[0].endswith("/v1/completions")  # ONE request for 8 prompts
        assert len(results) == 8 and all(r.ok and r.text.strip() for r in results)
        assert all(r.completion_tokens > 0 and r.prompt_tokens > 0 for r in results)
    finally:
        await b.aclose()
