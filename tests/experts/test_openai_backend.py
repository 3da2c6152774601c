"""Error mapping and retry policy of the openai backend, with httpx's mock transport.

(The same backend talks to a real vLLM server in test_openai_vllm.py.)"""

import asyncio
import json
import socket
import time

import httpx
import pytest

from experts import ExpertSpec, GenerationRequest
from experts.backends.openai import OpenAIBackend


def spec(**kw) -> ExpertSpec:  # type: ignore[no-untyped-def]
    base = {"name": "up", "backend": "openai", "base_url": "http://upstream.test/v1", "model": "m", "timeout_s": 5, "max_retries": 2}
    base.update(kw)
    return ExpertSpec(**base)


def chat_body(text: str = "Paris.") -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3}}


class Script:
    """A transport handler answering from a list of responses; records each request."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        r = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(r, Exception):
            raise r
        return r


def backend(script: Script, **kw) -> OpenAIBackend:  # type: ignore[no-untyped-def]
    return OpenAIBackend(spec(**kw), transport=httpx.MockTransport(script), backoff_base_s=0.01, backoff_max_s=0.02)


async def test_chat_success() -> None:
    s = Script(httpx.Response(200, json=chat_body()))
    [r] = await backend(s).generate([GenerationRequest.chat("capital of France?", max_tokens=8)])
    assert r.ok and r.text == "Paris." and (r.prompt_tokens, r.completion_tokens) == (11, 3) and r.finish_reason == "stop"
    sent = json.loads(s.requests[0].content)
    assert s.requests[0].url.path == "/v1/chat/completions"
    assert sent["messages"] == [{"role": "user", "content": "capital of France?"}] and sent["max_tokens"] == 8


async def test_prompts_of_a_batch_go_in_one_completions_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        prompts = json.loads(request.content)["prompt"]
        choices = [{"index": i, "text": f"out{i}", "finish_reason": "length"} for i in reversed(range(len(prompts)))]
        return httpx.Response(200, json={"choices": choices, "usage": {"prompt_tokens": 80, "completion_tokens": 32}})

    s = Script(httpx.Response(500))
    s.__call__ = handler  # type: ignore[method-assign]
    calls: list[httpx.Request] = []

    def counting(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return handler(req)

    b = OpenAIBackend(spec(max_batch_size=16), transport=httpx.MockTransport(counting))
    results = await b.generate([GenerationRequest(prompt=f"p{i}", max_tokens=4) for i in range(8)])
    assert len(calls) == 1 and calls[0].url.path == "/v1/completions"
    assert [r.text for r in results] == [f"out{i}" for i in range(8)]  # re-ordered by index
    assert sum(r.prompt_tokens for r in results) == 80 and sum(r.completion_tokens for r in results) == 32


async def test_429_with_retry_after_is_retried() -> None:
    s = Script(httpx.Response(429, headers={"Retry-After": "0.05"}, json={"error": {"message": "slow down"}}), httpx.Response(200, json=chat_body()))
    t0 = time.monotonic()
    [r] = await backend(s).generate([GenerationRequest.chat("q")])
    assert r.ok and r.attempts == 2 and len(s.requests) == 2
    assert time.monotonic() - t0 >= 0.05  # honoured Retry-After


async def test_500_is_retried_then_succeeds() -> None:
    s = Script(httpx.Response(500, text="boom"), httpx.Response(200, json=chat_body()))
    [r] = await backend(s).generate([GenerationRequest.chat("q")])
    assert r.ok and r.attempts == 2


async def test_500_forever_gives_server_error_after_all_attempts() -> None:
    s = Script(httpx.Response(503, json={"error": {"message": "overloaded"}}))
    [r] = await backend(s, max_retries=2).generate([GenerationRequest.chat("q")])
    assert r.error.kind == "server_error" and r.error.status_code == 503 and "overloaded" in r.error.message
    assert len(s.requests) == 3 and r.attempts == 3


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422])
async def test_client_errors_are_never_retried(status: int) -> None:
    s = Script(httpx.Response(status, json={"error": {"message": "bad max_tokens"}}))
    [r] = await backend(s).generate([GenerationRequest.chat("q")])
    assert len(s.requests) == 1
    assert r.error.kind == "rejected" and not r.error.retryable and "bad max_tokens" in r.error.message


async def test_malformed_json_is_a_bad_response() -> None:
    s = Script(httpx.Response(200, text="{not json"))
    [r] = await backend(s, max_retries=1).generate([GenerationRequest.chat("q")])
    assert r.error.kind == "bad_response" and len(s.requests) == 2


async def test_connection_refused_on_a_real_closed_port() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    b = OpenAIBackend(spec(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1), backoff_base_s=0.01)
    [r] = await b.generate([GenerationRequest.chat("q")])
    assert r.error.kind == "unavailable" and "connection refused" in r.error.message and r.attempts == 2
    h = await b.health()
    assert not h.healthy and "connection refused" in h.detail
    await b.aclose()


async def test_hang_past_the_timeout_is_a_timeout() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return httpx.Response(200, json=chat_body())

    b = OpenAIBackend(spec(timeout_s=0.3, max_retries=0), transport=httpx.MockTransport(hang))
    t0 = time.monotonic()
    [r] = await asyncio.wait_for(b.generate([GenerationRequest.chat("q")]), 5)
    assert r.error.kind == "timeout" and time.monotonic() - t0 < 2


async def test_health_up_and_wrong_model() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200)
        return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})

    assert (await OpenAIBackend(spec(), transport=httpx.MockTransport(handler)).health()).healthy
    down = await OpenAIBackend(spec(model="other"), transport=httpx.MockTransport(handler)).health()
    assert not down.healthy and "not served" in down.detail


async def test_api_key_header_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", "sk-test-123")
    s = Script(httpx.Response(200, json=chat_body()))
    await backend(s, api_key_env="UPSTREAM_KEY").generate([GenerationRequest.chat("q")])
    assert s.requests[0].headers["authorization"] == "Bearer sk-test-123"


async def test_an_upstreams_cookie_is_never_sent_back() -> None:
    """The aiohttp session keeps no cookie jar: a Set-Cookie from an upstream (answering one
    caller) never rides along on the next caller's request to it."""
    import http.server
    import threading

    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.append(self.headers.get("cookie"))
            out = json.dumps(chat_body("ok")).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.send_header("set-cookie", "session=caller-a-secret; Path=/")
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # a host name, not an IP: a default aiohttp cookie jar would keep this cookie (it ignores IP hosts)
    b = OpenAIBackend(spec(base_url=f"http://localhost:{server.server_address[1]}/v1", max_retries=0))
    try:
        for _ in range(2):
            [r] = await b.generate([GenerationRequest.chat("q")])
            assert r.error is None and r.text == "ok"
    finally:
        await b.aclose()
        server.shutdown()
        server.server_close()
    assert seen == [None, None]
