"""A real OpenAI-compatible HTTP server on loopback that records every request reaching it.

    with RecordingUpstream() as up:                   # host="127.0.0.2" binds another loopback address
        up.base_url                                   # http://127.0.0.1:PORT/v1
        up.hits                                       # [Hit(method, path, headers, body), ...]
        up.fail_with = (500, b'{"error": {"message": "db at 10.9.8.7 down"}}')   # answer every chat, completion, embedding with this

It plays two parts in the tests: the attacker's listener (anything that reaches it is a leak or a
request the gateway should have refused) and a legitimate upstream experts may be registered at.
"""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def completion(text: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-recording", "object": "chat.completion", "created": 0, "model": "recording",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
    }).encode()


class RecordingUpstream:
    def __init__(self, host: str = "127.0.0.1", answer: str = "The answer is 4.") -> None:
        self.hits: list[Hit] = []
        self.answer = answer
        self.fail_with: tuple[int, bytes] | None = None
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                upstream.hits.append(Hit(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status, out = 200, b'{"object": "list", "data": [{"id": "recording", "object": "model"}]}'
                if self.path.endswith(("/chat/completions", "/completions", "/embeddings")):
                    status, out = upstream.fail_with or (200, completion(upstream.answer))
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args: object) -> None:  # quiet
                pass

        self._server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> "RecordingUpstream":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
