"""OpenAI wire fidelity, end to end: the official `openai` SDK and LangChain's `ChatOpenAI`,
unchanged, against a real `orchestrator serve` whose experts are the vLLM CPU server.

Streaming is real (the first token arrives long before the last, for a direct call and for CoE,
which routes first); `finish_reason` is the expert's, streamed or not; the SDK's Files + Batch
API works; tools reach a tool-capable expert and its `tool_calls` come back unchanged; invalid
parameters raise `openai.BadRequestError`; completions pass through; a client that goes away
cancels the upstream stream and the trace says so.

The tool-capable expert is `ScriptedToolUpstream` (scripted_upstream.py), a scripted server:
SmolLM2-135M cannot call tools and the vLLM server runs without a tool-call parser. Structured
output (`response_format`) goes to the real vLLM. Set ORCH_WIRE_REPORT=FILE to keep the timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from conftest import REPO, require_vllm_url
from gateway_fixtures import free_port
from scripted_upstream import ScriptedToolUpstream
from tcp_proxy import TcpProxy

pytestmark = pytest.mark.vllm

STORY = [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIMINGS: dict[str, dict[str, float]] = {}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ScriptedToolUpstream, TcpProxy]]:
    vllm = require_vllm_url()
    tmp = tmp_path_factory.mktemp("wire")
    parts = httpx.URL(vllm)
    with ScriptedToolUpstream() as tools, TcpProxy(parts.host, parts.port or 80) as proxy:
        def smol(name: str, **kw: object) -> dict:
            return {"name": name, "backend": "openai", "base_url": vllm, "model": "smollm2-135m-instruct", "timeout_s": 120,
                    "params_b": 0.135, "price_per_mtok": {"input": 0.1, "output": 0.2}, **kw}

        config = {
            "store": f"sqlite+aiosqlite:///{tmp / 'wire.db'}",
            "experts": [
                smol("vllm-smol"), smol("vllm-smol-b", description="the same server under a second name"),
                smol("vllm-short", max_new_tokens=3),
                smol("vllm-structured", supports_tools=True, description="vLLM's structured outputs (no tool parser)"),
                # the same vLLM behind a TCP proxy that records its connections (the disconnect test)
                smol("vllm-proxied", base_url=f"http://127.0.0.1:{proxy.port}/v1"),
                {"name": "scripted-tools", "backend": "openai", "base_url": tools.base_url, "model": "scripted-tools", "supports_tools": True},
            ],
            "routers": {"coe": {"pool": ["vllm-smol", "vllm-smol-b"]}, "all-vote": {"pool": ["vllm-smol", "vllm-short"]}},
        }
        cfg = tmp / "wire.yaml"
        cfg.write_text(yaml.safe_dump(config))
        # CoE routes by a fitted category map: fit it on live answers first (orchestrator profile build)
        fit = subprocess.run([sys.executable, "-m", "orchestrator.cli", "profile", "build", "--router", "coe", "--config", str(cfg),
                              "--pool", "vllm-smol,vllm-smol-b", "--fit-limit", "24", "--max-tokens", "8"],
                             env=_env(), cwd=tmp, capture_output=True, text=True, timeout=600)
        assert fit.returncode == 0, fit.stdout[-2000:] + fit.stderr[-2000:]
        port = free_port()
        log = (tmp / "serve.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", "--config", str(cfg), "--port", str(port),
                                 "--log-level", "warning"], env=_env(), cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                assert proc.poll() is None, (tmp / "serve.log").read_text()[-3000:]
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            yield url, tools, proxy
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            if report := os.environ.get("ORCH_WIRE_REPORT"):
                Path(report).write_text(json.dumps(TIMINGS, indent=2))


@pytest.fixture
def client(served: tuple[str, ScriptedToolUpstream, TcpProxy]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served[0]}/v1", api_key="sk-anything", max_retries=0, timeout=300)


def timed_stream(client: openai.OpenAI, model: str, **kw: object) -> dict:
    t0 = time.perf_counter()
    first = last = None
    pieces, finishes, usage, ids = [], [], None, set()
    raw = client.chat.completions.with_raw_response.create(model=model, stream=True, stream_options={"include_usage": True}, **kw)  # type: ignore[call-overload]
    for ch in raw.parse():
        ids.add(ch.id)
        if ch.choices and ch.choices[0].delta.content:
            now = time.perf_counter() - t0
            first = now if first is None else first
            last = now
            pieces.append(ch.choices[0].delta.content)
        if ch.choices and ch.choices[0].finish_reason:
            finishes.append(ch.choices[0].finish_reason)
        if not ch.choices:
            usage = ch.usage
    return {"ttft_s": first, "last_chunk_s": last, "total_s": time.perf_counter() - t0, "chunks": len(pieces), "text": "".join(pieces),
            "finish": finishes, "usage": usage, "ids": ids, "trace_id": raw.headers["x-orchestrator-trace-id"]}


@pytest.mark.parametrize("model", ["single", "coe"])
def test_streamed_tokens_arrive_as_the_expert_generates_them(client: openai.OpenAI, model: str) -> None:
    # The first request to a fitted router loads it (its classifier, the sentence encoder): once
    # per process, so measured apart from the streaming.
    t0 = time.perf_counter()
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    cold = time.perf_counter() - t0
    s = timed_stream(client, model, messages=STORY, max_tokens=64, temperature=0)
    TIMINGS[model] = {k: round(s[k], 3) for k in ("ttft_s", "last_chunk_s", "total_s")} | {"chunks": s["chunks"],
                                                                                          "first_request_s": round(cold, 3)}
    print(f"\n{model}: time to first token {s['ttft_s']:.3f} s, total {s['total_s']:.3f} s, {s['chunks']} content chunks")
    # As generated, not buffered: the chunks arrive spread over the expert's own generation (a
    # buffered answer arrives in one burst after it). Measured against the call's duration in the
    # trace, so a slow routing step (coe's embedding on a busy machine) cannot fail it.
    calls = httpx.get(f"{client.base_url}traces/{s['trace_id']}").json()["calls"]
    call = [c for c in calls if c["role"] == "expert" and not c["error_kind"]][-1]  # the one that answered
    assert s["last_chunk_s"] - s["ttft_s"] >= 0.5 * call["latency_s"], (s, call["latency_s"])
    assert s["chunks"] >= 32  # token by token, not the answer cut up afterwards
    assert s["finish"] == ["length"] and s["usage"].completion_tokens == 64 and len(s["ids"]) == 1
    plain = client.chat.completions.create(model=model, messages=STORY, max_tokens=64, temperature=0)
    assert plain.choices[0].message.content == s["text"]  # the same (greedy) answer as without streaming


def test_finish_reason_is_length_when_max_tokens_is_hit(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="vllm-smol", messages=STORY, max_tokens=5)
    assert plain.choices[0].finish_reason == "length" and plain.usage.completion_tokens == 5
    streamed = timed_stream(client, "vllm-smol", messages=STORY, max_tokens=5)
    assert streamed["finish"] == ["length"] and streamed["text"] == plain.choices[0].message.content
    # a vote: the finish reason of the answer that won, not of the last call (vllm-short stops at 3 tokens)
    q = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    voted = client.chat.completions.with_raw_response.create(model="all-vote", messages=q, max_tokens=32)
    body = voted.parse()
    trace = httpx.get(f"{client.base_url}traces/{voted.headers['x-orchestrator-trace-id']}").json()
    by_expert = {c["expert"]: c["finish_reason"] for c in trace["calls"]}
    winner = next(s for s in trace["steps"] if s["kind"] == "aggregate")["detail"]["representative"]
    assert body.choices[0].finish_reason == by_expert[winner] and by_expert["vllm-short"] == "length"


def test_invalid_parameters_raise_bad_request(client: openai.OpenAI, served: tuple[str, ScriptedToolUpstream, TcpProxy]) -> None:
    q = [{"role": "user", "content": "hi"}]
    for kw, param in [({"max_tokens": -5}, "max_tokens"), ({"temperature": 5}, "temperature"), ({"n": 2}, "n"),
                      ({"extra_body": {"frobnicate": True}}, "frobnicate"), ({"logit_bias": {"42": 5}}, "logit_bias")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="vllm-smol", messages=q, **kw)  # type: ignore[call-overload]
        assert e.value.status_code == 400 and e.value.body["param"] == param, e.value.body  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="vllm-smol", messages=[])
    with pytest.raises(openai.BadRequestError):  # before the first token: the same HTTP error when streaming
        client.chat.completions.create(model="vllm-smol", messages=q, max_tokens=-5, stream=True)
    r = httpx.get(f"{served[0]}/v1/chat/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]["type"] == "invalid_request_error"


def test_batches_from_an_uploaded_file(client: openai.OpenAI) -> None:
    countries = ["France", "Italy", "Japan"]
    lines = [json.dumps({"custom_id": c, "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "vllm-smol", "max_tokens": 24, "messages": [{"role": "user", "content": f"What is the capital of {c}?"}]}})
             for c in countries]
    lines.insert(1, "{not json")  # a broken line, and a request for an unknown model: each fails alone
    lines.append(json.dumps({"custom_id": "nobody", "body": {"model": "gpt-17", "messages": [{"role": "user", "content": "hi"}]}}))
    f = client.files.create(file=("requests.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch")
    assert f.purpose == "batch" and f.bytes > 0 and client.files.retrieve(f.id).id == f.id
    assert client.files.content(f.id).text.startswith(lines[0])
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.input_file_id == f.id and batch.status == "in_progress"
    deadline = time.monotonic() + 180
    while batch.status in ("validating", "in_progress", "finalizing") and time.monotonic() < deadline:
        time.sleep(0.5)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    assert batch.request_counts.total == 5 and batch.request_counts.completed == 3 and batch.request_counts.failed == 2
    out = [json.loads(ln) for ln in client.files.content(batch.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in out] == countries
    for o in out:
        assert o["response"]["status_code"] == 200 and o["error"] is None
        body = o["response"]["body"]
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] and body["model"] == "vllm-smol"
    assert "paris" in out[0]["response"]["body"]["choices"][0]["message"]["content"].lower()
    errors = [json.loads(ln) for ln in client.files.content(batch.error_file_id).text.splitlines()]
    assert [e["custom_id"] for e in errors] == [None, "nobody"]
    assert errors[0]["response"]["status_code"] == 400 and errors[0]["error"]["code"] == "invalid_json"
    assert errors[1]["response"]["status_code"] == 404 and errors[1]["error"]["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.txt", b"hello"), purpose="fine-tune")


def test_tool_calls_come_back_unchanged(client: openai.OpenAI, served: tuple[str, ScriptedToolUpstream, TcpProxy]) -> None:
    up = served[1]
    q = [{"role": "user", "content": "What is the weather in Paris?"}]
    resp = client.chat.completions.create(model="scripted-tools", messages=q, tools=[WEATHER_TOOL], tool_choice="auto")
    sent = up.tool_calls_sent
    assert resp.choices[0].finish_reason == "tool_calls" and resp.choices[0].message.content is None
    assert [c.model_dump() for c in resp.choices[0].message.tool_calls] == sent
    assert up.requests[-1]["tools"] == [WEATHER_TOOL] and up.requests[-1]["tool_choice"] == "auto"  # passed on unchanged

    calls: dict[int, dict] = {}
    finishes = []
    for ch in client.chat.completions.create(model="scripted-tools", messages=q, tools=[WEATHER_TOOL], stream=True):
        for d in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            c = calls.setdefault(d.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
            c["id"] = d.id or c["id"]
            c["function"]["name"] += (d.function.name or "") if d.function else ""
            c["function"]["arguments"] += (d.function.arguments or "") if d.function else ""
        if ch.choices and ch.choices[0].finish_reason:
            finishes.append(ch.choices[0].finish_reason)
    assert list(calls.values()) == up.tool_calls_sent and finishes == ["tool_calls"]

    # the tool's result goes back; the expert answers from it
    follow = q + [{"role": "assistant", "content": None, "tool_calls": sent},
                  {"role": "tool", "tool_call_id": sent[0]["id"], "content": "sunny, 21 C"}]
    answer = client.chat.completions.create(model="scripted-tools", messages=follow, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content == "The tool said: sunny, 21 C"
    assert up.requests[-1]["messages"][1]["tool_calls"] == sent and up.requests[-1]["messages"][2]["tool_call_id"] == sent[0]["id"]

    # routes that cannot honour tools say so
    with pytest.raises(openai.BadRequestError, match="cannot honour tools"):
        client.chat.completions.create(model="all-vote", messages=q, tools=[WEATHER_TOOL])
    with pytest.raises(openai.BadRequestError, match="does not support tools"):
        client.chat.completions.create(model="vllm-smol", messages=q, tools=[WEATHER_TOOL])


def test_structured_output_reaches_vllm(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"]}
    resp = client.chat.completions.create(model="vllm-structured", max_tokens=40,
                                          messages=[{"role": "user", "content": "Give the capital of France as JSON."}],
                                          response_format={"type": "json_schema", "json_schema": {"name": "capital", "schema": schema}})
    assert set(json.loads(resp.choices[0].message.content)) == {"capital"}
    with pytest.raises(openai.BadRequestError, match="does not support response_format"):
        client.chat.completions.create(model="vllm-smol", messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"})


def test_completions_and_embeddings_pass_through(client: openai.OpenAI, served: tuple[str, ScriptedToolUpstream, TcpProxy]) -> None:
    c = client.completions.create(model="vllm-smol", prompt="The capital of France is", max_tokens=5, temperature=0)
    assert c.model == "vllm-smol" and c.choices[0].text and c.choices[0].finish_reason in ("length", "stop") and c.usage.completion_tokens
    e = client.embeddings.create(model="scripted-tools", input=["banana", "kiwi"])
    assert [d.embedding for d in e.data] == [[6.0, 3.0, 1.0], [4.0, 2.0, 1.0]] and e.model == "scripted-tools"
    with pytest.raises(openai.BadRequestError, match="is a router"):
        client.completions.create(model="coe", prompt="x", max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="gpt-17", input="x")
    metrics = httpx.get(f"{served[0]}/metrics").text
    assert 'orchestrator_router_requests_total{router="passthrough",status="200"}' in metrics
    assert 'orchestrator_router_cost_usd_total{router="single"}' in metrics
    assert 'orchestrator_time_to_first_token_seconds_count{router="coe"}' in metrics
    assert 'orchestrator_router_latency_seconds_count{router="coe"}' in metrics


def test_a_client_that_goes_away_cancels_the_upstream_stream(client: openai.OpenAI, served: tuple[str, ScriptedToolUpstream, TcpProxy]) -> None:
    url, _, proxy = served
    opened = len(proxy.closed_at)
    with client.chat.completions.with_streaming_response.create(
            model="vllm-proxied", messages=[{"role": "user", "content": "Write a very long story about the sea."}], max_tokens=500,
            stream=True) as raw:
        trace_id = raw.headers["x-orchestrator-trace-id"]
        for n, _ in enumerate(raw.iter_lines()):
            if n >= 6:
                break  # a few chunks, then hang up
    hung_up = time.monotonic()
    deadline = hung_up + 10
    while len(proxy.closed_at) == opened and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(proxy.closed_at) > opened and proxy.closed_at[-1] - hung_up < 3.0  # the gateway closed vLLM's stream
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/v1/traces/{trace_id}")
        if r.status_code == 200:
            break
        time.sleep(0.1)
    trace = r.json()
    assert trace["status"] == "cancelled" and trace["calls"][0]["error_kind"] == "cancelled" and trace["answer_text"]


def test_langchain_chat_openai(served: tuple[str, ScriptedToolUpstream, TcpProxy]) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    url = served[0]
    llm = ChatOpenAI(base_url=f"{url}/v1", api_key="sk-anything", model="vllm-smol", max_tokens=64, temperature=0, max_retries=0)
    reply = llm.invoke([HumanMessage("What is the capital of France?")])
    assert "paris" in str(reply.content).lower() and reply.response_metadata["finish_reason"] in ("stop", "length")

    t0 = time.perf_counter()
    at = []
    text = ""
    for chunk in llm.stream(STORY):
        if chunk.content:
            at.append(time.perf_counter() - t0)
            text += str(chunk.content)
    total = time.perf_counter() - t0
    assert len(at) >= 32 and at[0] <= 0.3 * total and text

    short = ChatOpenAI(base_url=f"{url}/v1", api_key="sk-anything", model="vllm-smol", max_tokens=5, max_retries=0)
    assert short.invoke(STORY).response_metadata["finish_reason"] == "length"

    tooled = ChatOpenAI(base_url=f"{url}/v1", api_key="sk-anything", model="scripted-tools", max_retries=0).bind_tools([WEATHER_TOOL])
    msg = tooled.invoke("What is the weather in Lisbon?")
    assert msg.tool_calls and msg.tool_calls[0]["name"] == "get_weather" and msg.tool_calls[0]["args"] == {"city": "Lisbon"}

    with pytest.raises(openai.BadRequestError):
        ChatOpenAI(base_url=f"{url}/v1", api_key="sk-anything", model="vllm-smol", temperature=5, max_retries=0).invoke("hi")
