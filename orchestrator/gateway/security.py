"""API keys, per-key rate limits and the request body size limit."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.gateway.errors import PayloadTooLarge, error_body

KEY_PREFIX = "sk-orch-"


def new_api_key() -> tuple[str, str, str]:
    """(key id, secret key shown once, its SHA-256 stored)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return f"key_{secrets.token_hex(6)}", key, hash_key(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who is calling: a key id (owner of traces and batches), or anonymous when auth is off."""

    key_id: str | None = None
    name: str = "anonymous"


class RateLimiter:
    """A token bucket per caller: `rpm` requests per minute with bursts up to `burst`."""

    def __init__(self, rpm: int, burst: int | None = None) -> None:
        self.rate = rpm / 60.0
        self.capacity = float(burst or max(1, rpm // 6 or 1))
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, who: str) -> float | None:
        """None if allowed; else seconds until a token is free."""
        if self.rate <= 0:
            return None
        now = time.monotonic()
        tokens, last = self._buckets.get(who, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[who] = (tokens - 1.0, now)
            return None
        self._buckets[who] = (tokens, now)
        return (1.0 - tokens) / self.rate


class BodySizeLimit:
    """Rejects bodies over `max_bytes` with 413, by Content-Length or while reading a chunked body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(send)
                    return
        # Read the whole body here (FastAPI reads it whole anyway), so an oversized chunked body is
        # a clean 413: raising from inside `receive` would surface as FastAPI's generic 400.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # disconnect: let the app see it
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return message
            return await receive()

        await self.app(scope, replay, send)

    def _message(self) -> str:
        return f"request body larger than {self.max_bytes} bytes"

    async def _reject(self, send: Send) -> None:
        import json

        body = json.dumps(error_body(PayloadTooLarge(self._message()))).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
