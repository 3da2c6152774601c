"""The openai backend's two HTTP clients (aiohttp on the hot path, httpx the fallback) against
the same real misbehaving server: the same request on the wire, the same outcome per fault."""

from __future__ import annotations

import json

import pytest

from experts import ExpertSpec, GenerationRequest
from experts.backends.openai import OpenAIBackend
from faulty_upstream import FaultyUpstream

MODES = {"ok": None, "500": "server_error", "malformed": "bad_response", "hang": "timeout", "die": "unavailable"}


async def _outcome(up: FaultyUpstream, client: str) -> tuple[str | None, str, int, dict]:
    # only a hang needs a short timeout; the other faults get a roomy one so a busy machine's slow
    # first attempt cannot use up the retry budget (timeout x attempts) and skip the retry
    timeout_s = 0.5 if up.mode == "hang" else 10.0
    spec = ExpertSpec(name="faulty", backend="openai", base_url=up.base_url, model="faulty", timeout_s=timeout_s, max_retries=1)
    b = OpenAIBackend(spec, http_client=client, backoff_base_s=0.01, backoff_max_s=0.02)
    try:
        before = up.requests
        [r] = await b.generate([GenerationRequest.chat("What is 2+2?", max_tokens=7, temperature=0.2, stop=("\n",))])
        sent = json.loads(up.last_body)
        return (r.error.kind if r.error else None), (r.error.message if r.error else r.text), up.requests - before, sent
    finally:
        await b.aclose()


@pytest.mark.parametrize("mode", list(MODES))
async def test_aiohttp_and_httpx_agree_on_every_fault(mode: str) -> None:
    with FaultyUpstream(mode) as up:
        fast = await _outcome(up, "aiohttp")
        fallback = await _outcome(up, "httpx")
    assert fast[0] == fallback[0] == MODES[mode], (fast, fallback)
    expected_attempts = 1 if mode == "ok" else 2  # every fault here is retryable: retried once
    assert fast[2] == fallback[2] == expected_attempts
    assert fast[3] == fallback[3] and fast[3]["messages"] == [{"role": "user", "content": "What is 2+2?"}]
    assert fast[3]["max_tokens"] == 7 and fast[3]["stop"] == ["\n"]
    if mode == "ok":
        assert fast[1] == fallback[1] == "The answer is 4."
    elif mode != "hang":  # a hang's message names the exception of the phase that timed out
        assert fast[1] == fallback[1]


def test_unknown_http_client_is_a_clear_error() -> None:
    spec = ExpertSpec(name="x", backend="openai", base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(ValueError, match="http_client must be 'aiohttp' or 'httpx'"):
        OpenAIBackend(spec, http_client="curl")


def test_proxy_from_the_environment_as_httpx_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from experts.backends.openai import env_proxy

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert env_proxy("http://vllm.internal:8000/v1") == "http://proxy.internal:3128"
    assert env_proxy("http://127.0.0.1:8000/v1") is None
    monkeypatch.delenv("HTTP_PROXY")
    assert env_proxy("http://vllm.internal:8000/v1") is None
