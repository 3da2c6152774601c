"""A LOAD-TEST UPSTREAM: a minimal OpenAI-compatible server that answers instantly.

    python -m orchestrator.loadtest.upstream --port 9100

It is not a model. It exists only to measure what the gateway (or LiteLLM) adds in front of a
fast server: every `POST .../chat/completions` gets the same canned completion at once,
`GET /health` and `GET /v1/models` answer as vLLM does. It speaks HTTP/1.1 keep-alive on a raw
asyncio protocol (uvloop + httptools), so that it is never the bottleneck of a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import httptools

MODEL = "loadtest-upstream"

_COMPLETION = json.dumps({
    "id": "chatcmpl-loadtest", "object": "chat.completion", "created": 0, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
}).encode()
_MODELS = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "loadtest"}]}).encode()
_HEALTH = b"{}"
_NOT_FOUND = json.dumps({"error": {"message": "no such route", "type": "invalid_request_error", "param": None, "code": None}}).encode()


def _response(status: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


_RESPONSES = {
    (b"POST", b"/v1/chat/completions"): _response(b"200 OK", _COMPLETION),
    (b"POST", b"/chat/completions"): _response(b"200 OK", _COMPLETION),
    (b"GET", b"/v1/models"): _response(b"200 OK", _MODELS),
    (b"GET", b"/health"): _response(b"200 OK", _HEALTH),
}
_MISSING = _response(b"404 Not Found", _NOT_FOUND)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; pipelined requests are answered in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(_response(b"400 Bad Request", _NOT_FOUND))
            self.transport.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        assert self.transport is not None
        path = self.url.split(b"?", 1)[0]
        self.transport.write(_RESPONSES.get((self.parser.get_method(), path), _MISSING))
        self.url = b""
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(host: str, port: int, ready: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Connection, host, port, backlog=2048, reuse_address=True)
    print(f"load-test upstream on http://{host}:{port}/v1 (model {MODEL})", flush=True)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description="Load-test upstream: an instant OpenAI-compatible server (not a model).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        pass
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
