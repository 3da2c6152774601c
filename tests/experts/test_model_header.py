"""The gateway names the selected upstream model in `X-Gateway-Model-Name` on every request to an
OpenAI-compatible expert (the Inference Extension's header: an HTTPRoute in front of a vLLM
fleet routes on it; deploy/k8s/overlays/llm-d). A real HTTP server records what arrives."""

from __future__ import annotations

from pathlib import Path

import pytest

from experts import parse_config
from experts.backends.openai import MODEL_HEADER, OpenAIBackend
from experts.spec import ExpertSpec
from experts.types import GenerationRequest
from orchestrator.pipeline import Runtime
from recording_upstream import RecordingUpstream
from routers.types import Query


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
async def test_every_upstream_request_carries_the_selected_model_header(client: str) -> None:
    with RecordingUpstream() as up:
        spec = ExpertSpec(name="qwen-small", backend="openai", base_url=up.base_url, model="Qwen/Qwen2.5-1.5B-Instruct", max_retries=0)
        backend = OpenAIBackend(spec, http_client=client)
        try:
            [chat] = await backend.generate([GenerationRequest.chat("2+2?", max_tokens=4)])
            [completion] = await backend.generate([GenerationRequest(prompt="2+2=", max_tokens=4)])
            streamed = await backend.stream(GenerationRequest.chat("2+2?", max_tokens=4), _ignore)
        finally:
            await backend.aclose()
    assert chat.ok and completion.ok and streamed.ok
    posts = [h for h in up.hits if h.method == "POST"]
    assert {h.path for h in posts} == {"/v1/chat/completions", "/v1/completions"} and len(posts) == 3
    assert all(h.headers.get(MODEL_HEADER.lower()) == "Qwen/Qwen2.5-1.5B-Instruct" for h in posts)


async def test_the_router_selected_expert_is_named_in_the_header_through_the_runtime(tmp_path: Path) -> None:
    with RecordingUpstream() as a, RecordingUpstream() as b:
        config = parse_config({
            "store": f"sqlite+aiosqlite:///{tmp_path / 'h.db'}",
            "experts": [{"name": "small", "backend": "openai", "base_url": a.base_url, "model": "fleet/small-model"},
                        {"name": "large", "backend": "openai", "base_url": b.base_url, "model": "fleet/large-model"}],
        })
        async with await Runtime.create(config) as rt:
            result = await rt.answer(Query(text="2+2?"), "all-vote", record=False)
    assert result.ok
    for up, model in ((a, "fleet/small-model"), (b, "fleet/large-model")):
        [hit] = [h for h in up.hits if h.path.endswith("/chat/completions")]
        assert hit.headers[MODEL_HEADER.lower()] == model


async def _ignore(_delta: object) -> None:
    return None
