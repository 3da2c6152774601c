"""API keys and their roles, who is calling, and the rate limits that bound what a caller costs.

    key_id, key, digest = new_api_key()            # the store keeps `digest`; `key` is shown once
    auth = Authenticator(store, settings)          # one per app (the lifespan builds it)
    caller = await auth.caller(request.headers.get("authorization", ""), client="10.0.0.7")
    auth.forget(key_id)                            # a key revoked here stops working here at once

Fail closed: keys are required when `require_api_key` is set, and otherwise from the moment the
store holds any key, revoked ones included, so revoking the last key never opens the gateway.
Only a store that has never held a key (a loopback gateway nobody configured) is open, and then
the anonymous caller is the operator (`OPEN_MODE_CALLER`, an admin).

Bounded cost: a token that is not a cached valid key costs its client address one attempt from a
small bucket *before* the store is asked, so unknown or malformed tokens cannot make the gateway
query the store faster than `auth_failures_per_minute`; only valid keys are cached (a TTLCache
bounded in size and age: `key_cache_s` is how long a revocation elsewhere can take to arrive).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from cachetools import TTLCache

from orchestrator.gateway import errors as E
from orchestrator.gateway.shared_limits import AUTH_FAILURES_FILE, RATE_LIMIT_FILE, SharedRateLimiter

if TYPE_CHECKING:
    from orchestrator.settings import GatewaySettings
    from store.repository import Store

KEY_PREFIX = "sk-orch-"
_WELL_FORMED = re.compile(r"^sk-orch-[A-Za-z0-9_-]{43}$")  # what new_api_key makes: 32 random bytes, urlsafe
Role = Literal["admin", "user"]
ROLES: tuple[Role, ...] = ("admin", "user")
OPEN_RECHECK_S = 5.0  # an open gateway asks the store this often whether a key exists yet


def new_api_key() -> tuple[str, str, str]:
    """(key id, secret key shown once, its SHA-256 stored)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return f"key_{secrets.token_hex(6)}", key, hash_key(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def is_well_formed(token: str) -> bool:
    """Whether `token` could be a key at all (checked before the store is asked)."""
    return _WELL_FORMED.match(token) is not None


@dataclass(frozen=True)
class Caller:
    """Who is calling: a key (its id owns traces and batches; its role says what it may change),
    or the operator of an open gateway."""

    key_id: str | None = None
    name: str = "anonymous"
    role: Role = "user"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


OPEN_MODE_CALLER = Caller(role="admin")


class RateLimiter:
    """A token bucket per caller: `rpm` requests per minute with bursts up to `burst`.

    At most `max_callers` buckets are kept, each forgotten once idle long enough to be full again
    (forgetting a full bucket changes nothing), so a flood of distinct callers cannot grow it."""

    def __init__(self, rpm: int, burst: int | None = None, *, max_callers: int = 65_536) -> None:
        self.rate = rpm / 60.0
        self.capacity = float(burst or max(1, rpm // 6 or 1))
        refill_s = self.capacity / self.rate if self.rate > 0 else 1.0
        self._buckets: TTLCache[str, tuple[float, float]] = TTLCache(maxsize=max_callers, ttl=refill_s)

    def check(self, who: str) -> float | None:
        """Take a token: None if allowed; else seconds until a token is free."""
        if self.rate <= 0:
            return None
        now = time.monotonic()
        try:  # item access, not .get(): a TTLCache checks expiry once per call, and this is the chat path
            tokens, last = self._buckets[who]
        except KeyError:
            tokens, last = self.capacity, now
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[who] = (tokens - 1.0, now)
            return None
        self._buckets[who] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def refund(self, who: str) -> None:
        """Give back the token `check` took (the request turned out not to count)."""
        if who in self._buckets:
            tokens, last = self._buckets[who]
            self._buckets[who] = (min(self.capacity, tokens + 1.0), last)

    def __len__(self) -> int:
        return len(self._buckets)


class Authenticator:
    """Resolves the caller of a request from its bearer token, then applies the caller's rate limit."""

    def __init__(self, store: Store, settings: GatewaySettings) -> None:
        self.store, self.settings = store, settings
        self.limiter: RateLimiter | SharedRateLimiter
        self.failures: RateLimiter | SharedRateLimiter
        shared = settings.shared_state_dir
        if shared is not None:  # workers of one `serve --workers N`: one bucket per caller across them
            self.limiter = SharedRateLimiter(shared / RATE_LIMIT_FILE, settings.rate_limit_rpm, settings.rate_limit_burst)
            self.failures = SharedRateLimiter(shared / AUTH_FAILURES_FILE, settings.auth_failures_per_minute,
                                              settings.auth_failures_burst)
        else:
            self.limiter = RateLimiter(settings.rate_limit_rpm, settings.rate_limit_burst)
            self.failures = RateLimiter(settings.auth_failures_per_minute, settings.auth_failures_burst)
        self.keys: TTLCache[str, Caller] = TTLCache(maxsize=settings.key_cache_size, ttl=settings.key_cache_s)
        self._closed = bool(settings.require_api_key)  # once True, never False again in this process
        self._open_until = 0.0

    async def required(self) -> bool:
        """Whether requests need a key: always once closed; while open, asked of the store every
        `OPEN_RECHECK_S` (a store that cannot answer is a 503, never an open gateway)."""
        if self._closed:
            return True
        if time.monotonic() < self._open_until:
            return False
        with E.map_store_exceptions():
            ever = await self.store.count_api_keys(include_revoked=True) > 0
        if ever:
            self._closed = True
        else:
            self._open_until = time.monotonic() + OPEN_RECHECK_S
        return self._closed

    async def caller(self, authorization: str, client: str = "unknown") -> Caller:
        """The caller an `Authorization` header names, sent from address `client`; raises
        Unauthorized, RateLimited, or ServiceUnavailable (the store is down)."""
        if not await self.required():
            return self._limited(OPEN_MODE_CALLER, "anonymous")
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        digest = hash_key(token) if token else ""
        try:
            caller = self.keys[digest]
        except KeyError:
            caller = await self._look_up(token, digest, client)
        return self._limited(caller, caller.key_id or "anonymous")

    async def _look_up(self, token: str, digest: str, client: str) -> Caller:
        wait = self.failures.check(client)  # before the store is asked
        if wait is not None:
            raise E.RateLimited("too many requests with a missing or invalid API key from this address", retry_after=wait)
        if not token:
            raise E.Unauthorized("missing API key: send `Authorization: Bearer <key>` (an operator creates keys with `orchestrator keys create`)")
        if not is_well_formed(token):
            raise E.Unauthorized("invalid API key")
        with E.map_store_exceptions():
            found = await self.store.find_api_key(digest)
        if found is None:
            raise E.Unauthorized("invalid API key")
        self.failures.refund(client)  # a valid key costs its address nothing
        caller = Caller(key_id=found.id, name=found.name, role="admin" if found.role == "admin" else "user")
        self.keys[digest] = caller
        return caller

    def _limited(self, caller: Caller, who: str) -> Caller:
        wait = self.limiter.check(who)
        if wait is not None:
            raise E.RateLimited(f"rate limit of {self.settings.rate_limit_rpm} requests per minute exceeded", retry_after=wait)
        return caller

    def forget(self, key_id: str) -> None:
        """Drop a key from the cache (it was revoked through this process: effective at once)."""
        for digest in [d for d, c in list(self.keys.items()) if c.key_id == key_id]:
            self.keys.pop(digest, None)

    def close(self) -> None:
        """Require keys from now on (a key was created through this process)."""
        self._closed = True
