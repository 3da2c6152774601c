"""API keys, who is calling, and per-key rate limits.

    key_id, key, digest = new_api_key()            # the store keeps `digest`; `key` is shown once
    auth = Authenticator(store, settings)          # one per app (the lifespan builds it)
    caller = await auth.caller(request.headers.get("authorization", ""))   # or Unauthorized / RateLimited
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.gateway import errors as E

if TYPE_CHECKING:
    from orchestrator.settings import GatewaySettings
    from store.repository import Store

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


class Authenticator:
    """Resolves the caller of a request from its bearer token, then applies the caller's rate limit.

    Keys are required when `require_api_key` is set or the store holds an active key (asked at
    most every 5 s); a key's lookup is cached for 60 s, so most requests never reach the store."""

    def __init__(self, store: Store, settings: GatewaySettings) -> None:
        self.store, self.settings = store, settings
        self.limiter = RateLimiter(settings.rate_limit_rpm, settings.rate_limit_burst)
        self._keys: dict[str, tuple[float, Caller | None]] = {}
        self._required: tuple[float, bool] = (0.0, settings.require_api_key)

    async def required(self) -> bool:
        if self.settings.require_api_key:
            return True
        at, value = self._required
        if time.monotonic() - at < 5.0:
            return value
        with E.map_store_exceptions():
            value = await self.store.count_api_keys() > 0
        self._required = (time.monotonic(), value)
        return value

    async def caller(self, authorization: str) -> Caller:
        """The caller an `Authorization` header names; raises Unauthorized or RateLimited."""
        token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else None
        if not await self.required():
            caller = Caller()
        else:
            if not token:
                raise E.Unauthorized("missing API key: send `Authorization: Bearer <key>` (create one with `orchestrator keys create`)")
            h = hash_key(token)
            hit = self._keys.get(h)
            if hit is None or time.monotonic() - hit[0] > 60:
                found = await self.store.find_api_key(h)
                hit = (time.monotonic(), Caller(key_id=found[0], name=found[1]) if found else None)
                self._keys[h] = hit
            if hit[1] is None:
                raise E.Unauthorized("invalid API key")
            caller = hit[1]
        wait = self.limiter.check(caller.key_id or "anonymous")
        if wait is not None:
            raise E.RateLimited(f"rate limit of {self.settings.rate_limit_rpm} requests per minute exceeded", retry_after=wait)
        return caller
