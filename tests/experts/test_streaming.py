"""Streaming in the expert backends: SSE parsing, stop strings held back, the openai backend's
retry rule (before the first delta only), and streaming from the real vLLM server and the real
in-process SmolLM2 (tokens arrive while the model generates; the result is generate's)."""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import pytest

from conftest import require_vllm_url
from tcp_proxy import TcpProxy
from experts import ExpertSpec, GenerationRequest
from experts.backends.openai import OpenAIBackend
from experts.backends.recorded import RecordedBackend
from experts.backends.streaming import ChatStreamAccumulator, StopHoldback
from experts.types import GenerationDelta


class Collect:
    """An `on_delta` that keeps every delta and when it arrived."""

    def __init__(self) -> None:
        self.deltas: list[GenerationDelta] = []
        self.at: list[float] = []
        self.t0 = time.perf_counter()

    async def __call__(self, d: GenerationDelta) -> None:
        self.deltas.append(d)
        self.at.append(time.perf_counter() - self.t0)

    @property
    def text(self) -> str:
        return "".join(d.text for d in self.deltas)


def sse(*events: dict | str) -> bytes:
    return b"".join(b"data: " + (e.encode() if isinstance(e, str) else json.dumps(e).encode()) + b"\n\n" for e in events)


def chunk(content: str | None = None, finish: str | None = None, tool_calls: list | None = None) -> dict:
    delta = {k: v for k, v in (("content", content), ("tool_calls", tool_calls)) if v is not None}
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


# ---------------------------------------------------------------------- parsing
def test_accumulator_merges_tool_call_deltas_and_tolerates_null_choices() -> None:
    acc = ChatStreamAccumulator()
    lines = sse(
        chunk(""),
        chunk(tool_calls=[{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"city": '}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '"Paris"}'}}]),
        chunk(finish="tool_calls"),
        {"object": "chat.completion.chunk", "choices": None, "usage": {"prompt_tokens": 9, "completion_tokens": 4}},
        "[DONE]",
    ).split(b"\n")
    deltas = [d for line in lines for d in acc.feed(line)]
    assert [d.tool_calls[0]["index"] for d in deltas] == [0, 0, 0]  # passed on unchanged, one per event
    assert acc.tool_calls == [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    assert acc.finish_reason == "tool_calls" and acc.usage["completion_tokens"] == 4 and acc.done and acc.text == ""


def test_accumulator_keeps_an_in_band_error() -> None:
    acc = ChatStreamAccumulator()
    for line in sse(chunk("Par"), {"error": {"message": "engine died", "type": "InternalServerError", "code": 500}}).split(b"\n"):
        acc.feed(line)
    assert acc.done and acc.error == "engine died" and acc.text == "Par" and acc.emitted


def test_stop_holdback_never_shows_what_generate_cuts() -> None:
    rng = random.Random(7)
    alphabet = ["a", "b", "\n", "Question:", "</ans", "wer>", " x", "ab"]
    for _ in range(3000):
        stops = rng.choice([("\nQuestion:",), ("ab",), ("</answer>", "x"), ()])
        text = "".join(rng.choice(alphabet) for _ in range(10))
        cuts = sorted(rng.sample(range(len(text) + 1), min(4, len(text) + 1)))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        hold = StopHoldback(stops)
        shown = [hold.feed(p) for p in pieces]
        out = "".join(shown) + hold.flush()
        found = [k for k in (text.find(s) for s in stops) if k >= 0]
        assert out == (text[: min(found)] if found else text), (stops, pieces)
        for k in range(len(shown)):  # at no point was any part of a stop string shown
            assert not any(s in "".join(shown[: k + 1]) for s in stops)


# ---------------------------------------------------------------------- openai backend, error paths
def backend(handler) -> OpenAIBackend:  # type: ignore[no-untyped-def]
    spec = ExpertSpec(name="up", backend="openai", base_url="http://upstream.test/v1", model="m", timeout_s=5, max_retries=2)
    return OpenAIBackend(spec, transport=httpx.MockTransport(handler), backoff_base_s=0.01, backoff_max_s=0.02)


async def test_stream_retries_before_the_first_delta_only() -> None:
    calls: list[dict] = []

    def flaky_then_ok(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        if len(calls) == 1:
            return httpx.Response(503, json={"error": {"message": "warming up"}})
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=sse(chunk("Par"), chunk("is."), chunk(finish="stop"),
                                          {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}, "[DONE]"))

    got = Collect()
    r = await backend(flaky_then_ok).stream(GenerationRequest.chat("capital of France?", max_tokens=8), got)
    assert r.ok and r.text == "Paris." == got.text and r.finish_reason == "stop" and r.attempts == 2
    assert (r.prompt_tokens, r.completion_tokens) == (5, 2)
    assert calls[1]["stream"] is True and calls[1]["stream_options"] == {"include_usage": True}

    broken: list[int] = []

    def dies_after_a_token(request: httpx.Request) -> httpx.Response:
        broken.append(1)
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=sse(chunk("Par"), {"error": {"message": "engine died"}}))

    got = Collect()
    r = await backend(dies_after_a_token).stream(GenerationRequest.chat("capital of France?"), got)
    assert not r.ok and r.error.kind == "server_error" and "engine died" in r.error.message
    assert r.text == "Par" == got.text and broken == [1]  # tokens were sent: never retried


async def test_stream_from_a_server_that_does_not_stream() -> None:
    def plain(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."},
                                                      "finish_reason": "stop"}], "usage": {"completion_tokens": 2}})

    got = Collect()
    r = await backend(plain).stream(GenerationRequest.chat("capital?"), got)
    assert r.ok and r.text == got.text == "Paris." and len(got.deltas) == 1


async def test_recorded_backend_streams_its_recorded_text_whole(recorded_dir) -> None:  # type: ignore[no-untyped-def]
    from conftest import mmlu_questions

    q = mmlu_questions(1)[0]
    b = RecordedBackend(ExpertSpec(name="r", backend="recorded", path=str(recorded_dir), model="Yi-34B"))
    got = Collect()
    r = await b.stream(GenerationRequest.chat(q.text, question_id=q.question_id), got)
    assert r.ok and len(got.deltas) == 1 and got.text == r.text and r.text
    got = Collect()
    r = await b.stream(GenerationRequest.chat("no such question"), got)
    assert not r.ok and got.deltas == []  # a failure sends nothing


# ---------------------------------------------------------------------- the real servers
@pytest.mark.vllm
async def test_vllm_streams_tokens_as_it_generates_them() -> None:
    url = require_vllm_url()
    b = OpenAIBackend(ExpertSpec(name="vllm-smol", backend="openai", base_url=url, model="smollm2-135m-instruct", timeout_s=120))
    try:
        req = GenerationRequest.chat("Write a long story about a robot who learns to paint.", max_tokens=64)
        got = Collect()
        r = await b.stream(req, got)
        assert r.ok, r.error
        assert r.finish_reason == "length" and r.completion_tokens == 64 and r.text == got.text
        assert len(got.deltas) >= 32  # token by token, not one piece
        # Delivered as generated, not buffered: the deltas are spread over the decode (a buffered
        # reply lands within milliseconds). Measured from the first delta, not from the request:
        # the time to the first token is the prefill's, which a busy machine stretches at will.
        gaps = [b - a for a, b in zip(got.at, got.at[1:])]
        assert got.at[-1] - got.at[0] >= 0.25, got.at
        assert sum(g >= 0.002 for g in gaps) >= len(gaps) // 2, got.at
        [plain] = await b.generate([req])
        assert plain.text == r.text  # greedy: the same answer as without streaming

    finally:
        await b.aclose()


@pytest.mark.vllm
async def test_cancelling_a_vllm_stream_closes_its_connection() -> None:
    """The caller goes away: the HTTP stream to vLLM is closed at once (vLLM then aborts the
    request), seen through a TCP proxy in between."""
    url = require_vllm_url()
    parts = httpx.URL(url)
    with TcpProxy(parts.host, parts.port or 80) as proxy:
        b = OpenAIBackend(ExpertSpec(name="vllm-smol", backend="openai", model="smollm2-135m-instruct", timeout_s=120,
                                     base_url=f"http://127.0.0.1:{proxy.port}/v1"))
        try:
            first = asyncio.Event()

            async def on(d: GenerationDelta) -> None:
                first.set()

            task = asyncio.create_task(b.stream(GenerationRequest.chat("Write a very long story about the sea.", max_tokens=1000), on))
            await asyncio.wait_for(first.wait(), 60)
            assert proxy.open_connections == 1
            cancelled_at = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            deadline = time.monotonic() + 5
            while not proxy.closed_at and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert proxy.closed_at and proxy.closed_at[0] - cancelled_at < 2.0
            received = proxy.bytes_down
            await asyncio.sleep(1.0)
            assert proxy.bytes_down == received  # nothing more streams down
        finally:
            await b.aclose()


@pytest.mark.slow
async def test_local_backend_streams_token_by_token_and_stops_when_cancelled() -> None:
    from experts.backends.local import LocalBackend

    b = LocalBackend(ExpertSpec(name="smol", backend="local", model="smollm2-135m-instruct", max_new_tokens=64, timeout_s=600))
    req = GenerationRequest.chat("List the numbers 1 to 10 separated by commas.", max_tokens=40, stop=("5",))
    got = Collect()
    r = await b.stream(req, got)
    [plain] = await b.generate([req])
    assert r.ok and r.text == plain.text == got.text and "5" not in got.text and r.finish_reason == "stop"
    assert len(got.deltas) >= 3

    first = asyncio.Event()

    async def on(d: GenerationDelta) -> None:
        first.set()

    task = asyncio.create_task(b.stream(GenerationRequest.chat("Write a long story about a cat.", max_tokens=64), on))
    await asyncio.wait_for(first.wait(), 300)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the worker stopped at its next token: the model is free again at once, not after 64 tokens
    t0 = time.perf_counter()
    [short] = await b.generate([GenerationRequest.chat("Hi", max_tokens=1)])
    assert short.ok and time.perf_counter() - t0 < 15
