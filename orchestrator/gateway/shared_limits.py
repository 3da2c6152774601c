"""Token buckets shared by the worker processes of one `serve --workers N` (one host).

    path = SharedRateLimiter.create(directory / "rate-limit.bin", slots=65_536)   # the parent, before the workers start
    limiter = SharedRateLimiter(path, rpm=60, burst=10)                             # each worker
    wait = limiter.check("key_abc")          # None: allowed; else seconds until a token is free

Same contract as `auth.RateLimiter`, but the buckets live in a file every worker maps
(`mmap`), and each check holds an exclusive `flock` on it for a few microseconds, so a key's
limit is one limit across the workers, whichever worker the kernel hands its connections to.
CLOCK_MONOTONIC is one clock for every process of the host, so refill times agree.

The table is bounded: `slots` fixed-size records (caller hash, tokens, last update), found by
open addressing over `PROBE` slots. A slot whose bucket has been idle long enough to be full
again may be taken by another caller (forgetting a full bucket changes nothing); when every probed
slot is busy with a live bucket, the stalest is taken, which can only hand that caller a full
bucket early: the table never grows with the number of callers.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import time
from pathlib import Path

RATE_LIMIT_FILE = "rate-limit.bin"  # per-key request budget
AUTH_FAILURES_FILE = "auth-failures.bin"  # per-address budget of unknown or malformed keys
_RECORD = struct.Struct("<Qdd")  # caller hash (0 = empty), tokens, last update (monotonic s)
PROBE = 8


def _hash(who: str) -> int:
    return int.from_bytes(hashlib.blake2b(who.encode(), digest_size=8).digest(), "little") or 1


class SharedRateLimiter:
    """A token bucket per caller in a file shared by the workers of one host; see the module docstring."""

    def __init__(self, path: Path, rpm: int, burst: int | None = None) -> None:
        self.rate = rpm / 60.0
        self.capacity = float(burst or max(1, rpm // 6 or 1))
        self.refill_s = self.capacity / self.rate if self.rate > 0 else 1.0
        self._fd = os.open(path, os.O_RDWR)
        size = os.fstat(self._fd).st_size
        self.slots = size // _RECORD.size
        if self.slots < PROBE:
            raise ValueError(f"{path}: a shared rate-limit table needs at least {PROBE} slots")
        self._map = mmap.mmap(self._fd, self.slots * _RECORD.size)

    @staticmethod
    def create(path: Path, slots: int = 65_536) -> Path:
        """A zeroed table of `slots` buckets (made once, by the process that starts the workers)."""
        with open(path, "wb") as f:
            f.truncate(slots * _RECORD.size)
        return path

    def _slot(self, h: int, now: float) -> tuple[int, float, float]:
        """(offset, tokens, last) of the caller's slot, claiming one if it has none."""
        base = h % self.slots
        free, stalest, stalest_last = -1, -1, float("inf")
        for i in range(PROBE):
            off = ((base + i) % self.slots) * _RECORD.size
            owner, tokens, last = _RECORD.unpack_from(self._map, off)
            if owner == h:
                return off, tokens, last
            if owner == 0 or now - last >= self.refill_s:  # empty, or a bucket full again: free to take
                if free < 0:
                    free = off
            elif last < stalest_last:
                stalest, stalest_last = off, last
        return (free if free >= 0 else stalest), self.capacity, now

    def check(self, who: str) -> float | None:
        """Take a token: None if allowed; else seconds until a token is free."""
        if self.rate <= 0:
            return None
        h = _hash(who)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            now = time.monotonic()
            off, tokens, last = self._slot(h, now)
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                _RECORD.pack_into(self._map, off, h, tokens - 1.0, now)
                return None
            _RECORD.pack_into(self._map, off, h, tokens, now)
            return (1.0 - tokens) / self.rate
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def refund(self, who: str) -> None:
        """Give back the token `check` took (the request turned out not to count)."""
        if self.rate <= 0:
            return
        h = _hash(who)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            off, tokens, last = self._slot(h, time.monotonic())
            _RECORD.pack_into(self._map, off, h, min(self.capacity, tokens + 1.0), last)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def __len__(self) -> int:
        now = time.monotonic()
        return sum(1 for i in range(self.slots)
                   if (r := _RECORD.unpack_from(self._map, i * _RECORD.size))[0] and now - r[2] < self.refill_s)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
