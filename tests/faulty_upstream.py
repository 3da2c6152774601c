"""A real misbehaving OpenAI-compatible server on loopback, for the fault tests.

    with FaultyUpstream("500") as up:          # modes: ok, slow, 500, malformed, hang, die, die-mid-stream
        up.base_url                           # http://127.0.0.1:PORT/v1
        up.mode = "ok"                        # switch behaviour while it runs
        up.requests                           # chat requests it received (it counts every call)
        up.health_probes                      # GET /health requests it received
        up.delay_s = 0.2                      # "slow": answer ok after this long...
        up.closed_early                       # ...unless the caller hangs up first: when it did (monotonic)

A raw asyncio server in its own thread: each mode is a real wire behaviour (a status, a broken
body, a connection that goes silent or is cut halfway through the body), not a mocked client.
A request with `"stream": true` is answered as OpenAI servers do, with server-sent events
(`ok`, and `slow` after its delay: the answer in three chunks; `die` and `die-mid-stream`: the
connection is cut before the first chunk, or after the first two).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

OK_BODY = json.dumps({
    "id": "chatcmpl-faulty", "object": "chat.completion", "created": 0, "model": "faulty",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "The answer is 4."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
}).encode()
MODELS_BODY = json.dumps({"object": "list", "data": [{"id": "faulty", "object": "model"}]}).encode()


def _resp(status: str, body: bytes, ctype: bytes = b"application/json") -> bytes:
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n".encode() + b"content-type: " + ctype + b"\r\n\r\n" + body


STREAM_PIECES = ("The answer", " is", " 4.")


def _sse_events() -> list[bytes]:
    """The OK answer as OpenAI streams it: role, content pieces, finish, usage, [DONE]."""
    def event(choices: list, **extra: object) -> bytes:
        chunk = {"id": "chatcmpl-faulty", "object": "chat.completion.chunk", "created": 0, "model": "faulty", "choices": choices, **extra}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    out = [event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    out += [event([{"index": 0, "delta": {"content": p}, "finish_reason": None}]) for p in STREAM_PIECES]
    out.append(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    out.append(event([], usage={"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}))
    return out + [b"data: [DONE]\n\n"]


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


class FaultyUpstream:
    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.requests = 0
        self.health_probes = 0
        self.delay_s = 0.0
        self.closed_early: list[float] = []  # time.monotonic() at which a caller closed a "slow" or "hang" request
        self.last_body: bytes = b""
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @staticmethod
    async def _stream(writer: asyncio.StreamWriter, mode: str) -> bool:
        """The answer as server-sent events; False when the mode cut the connection."""
        writer.write(SSE_HEAD)
        for i, ev in enumerate(_sse_events()):
            if (mode == "die" and i == 1) or (mode == "die-mid-stream" and i == 3):
                await writer.drain()
                writer.transport.abort()  # cut before the first chunk, or after two
                return False
            writer.write(_chunked(ev))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        return True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                length = next((int(ln.split(":", 1)[1]) for ln in lines if ln.lower().startswith("content-length:")), 0)
                body = await reader.readexactly(length) if length else b""
                if path.endswith("/health"):
                    self.health_probes += 1
                    writer.write(_resp("200 OK", b"{}") if self.mode == "ok" else _resp("503 Service Unavailable", b"{}"))
                elif path.endswith("/models"):
                    writer.write(_resp("200 OK", MODELS_BODY))
                else:
                    self.requests += 1
                    self.last_body = body
                    mode = self.mode
                    streamed = b'"stream":true' in body.replace(b" ", b"")
                    if streamed and mode in ("ok", "die", "die-mid-stream"):
                        if not await self._stream(writer, mode):
                            return
                    elif mode in ("hang", "slow"):
                        # Wait, watching the connection: a caller that hangs up shows as EOF.
                        try:
                            eof = await asyncio.wait_for(reader.read(1), 3600 if mode == "hang" else self.delay_s)
                        except asyncio.TimeoutError:
                            eof = None
                        if eof == b"":
                            self.closed_early.append(time.monotonic())
                            return
                        if streamed:  # "slow" streams its answer once the delay is over
                            await self._stream(writer, "ok")
                        else:
                            writer.write(_resp("200 OK", OK_BODY))
                    elif mode == "500":
                        writer.write(_resp("500 Internal Server Error", b'{"error": {"message": "engine crashed"}}'))
                    elif mode == "malformed":
                        writer.write(_resp("200 OK", b'{"choices": [{"message": {"content": "unterminated'))
                    elif mode == "die":
                        # headers promise the whole body, half of it arrives, then the connection is cut
                        full = _resp("200 OK", OK_BODY)
                        writer.write(full[: len(full) - len(OK_BODY) // 2])
                        await writer.drain()
                        writer.transport.abort()
                        return
                    else:
                        writer.write(_resp("200 OK", OK_BODY))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> "FaultyUpstream":
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop)
        self._server = fut.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
