"""ScriptedToolUpstream: an OpenAI-compatible server that answers with tool calls (a scripted
server, not a model), for the tool-calling tests.

    with ScriptedToolUpstream() as up:
        up.base_url              # http://127.0.0.1:PORT/v1
        up.requests              # every chat request body it received, as sent
        up.tool_calls_sent       # the tool_calls of its last answer, exactly as it sent them

Why a scripted server: the only real model here is SmolLM2-135M on vLLM, which runs without a
tool-call parser (vLLM then refuses `tools`), and the tiny model cannot call tools reliably.

A chat request with `tools` is answered by a call to the requested tool (`tool_choice`) or the
first one, its arguments `{"city": <the last word of the last user message>}`; streamed as OpenAI
streams tool calls (id and name first, the arguments in two pieces, `finish_reason:
"tool_calls"`). A request with a tool result in its messages gets a text answer quoting it.
`/v1/embeddings` answers deterministic vectors; `/v1/completions` echoes the prompt's length.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from aiohttp import web


class ScriptedToolUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.tool_calls_sent: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._n = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------------ answers
    def _answer(self, body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None]:
        msgs = body.get("messages") or []
        tool_results = [m for m in msgs if m.get("role") == "tool"]
        if tool_results:
            return f"The tool said: {tool_results[-1].get('content')}", None
        tools = body.get("tools") or []
        if not tools:
            return "A scripted answer.", None
        choice = body.get("tool_choice")
        name = choice["function"]["name"] if isinstance(choice, dict) else tools[0]["function"]["name"]
        last_user = next((m.get("content") or "" for m in reversed(msgs) if m.get("role") == "user"), "")
        words = [w.strip("?.!,") for w in str(last_user).split()]
        self._n += 1
        return None, [{"id": f"call_scripted_{self._n}", "type": "function",
                       "function": {"name": name, "arguments": json.dumps({"city": words[-1] if words else ""})}}]

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        text, calls = self._answer(body)
        self.tool_calls_sent = calls or []
        finish = "tool_calls" if calls else "stop"
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        if not body.get("stream"):
            message = {"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})}
            return web.json_response({"id": "chatcmpl-scripted", "object": "chat.completion", "created": 0, "model": body.get("model"),
                                      "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def event(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0, "model": body.get("model"),
                     "choices": choices, **extra}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        await event([{"index": 0, "delta": {"role": "assistant", "content": None if calls else ""}, "finish_reason": None}])
        if calls:
            for i, c in enumerate(calls):
                args = c["function"]["arguments"]
                half = len(args) // 2
                await event([{"index": 0, "delta": {"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                                                    "function": {"name": c["function"]["name"], "arguments": ""}}]}}])
                for piece in (args[:half], args[half:]):
                    await event([{"index": 0, "delta": {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}}])
        else:
            for word in (text or "").split(" "):
                await event([{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}])
        await event([{"index": 0, "delta": {}, "finish_reason": finish}])
        await event([], usage=usage)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [float(len(str(t))), float(sum(c in "aeiou" for c in str(t))), 1.0]}
                for i, t in enumerate(inputs)]
        n = sum(len(str(t).split()) for t in inputs)
        return web.json_response({"object": "list", "data": data, "model": body.get("model"),
                                  "usage": {"prompt_tokens": n, "total_tokens": n}})

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"id": "cmpl-scripted", "object": "text_completion", "created": 0, "model": body.get("model"),
                                  "choices": [{"index": 0, "text": f" ({len(str(body.get('prompt')))} characters)", "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})

    # ------------------------------------------------------------------ lifecycle
    async def _start(self) -> None:
        async def health(_: web.Request) -> web.Response:
            return web.json_response({})

        async def models(_: web.Request) -> web.Response:
            return web.json_response({"object": "list", "data": [{"id": "scripted-tools", "object": "model"}]})

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/completions", self._completions)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def __enter__(self) -> "ScriptedToolUpstream":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
