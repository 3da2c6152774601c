"""One run's memo of deterministic generations: the same (expert, request) at temperature 0 is
generated once per run, whichever router asks for it.

    memo = GenerationMemo(max_entries=200_000)
    async with Dispatcher(registry, memo=memo) as dispatcher:   # every submit / submit_many consults it
        ...
    memo.hits, memo.misses

A live bench compares routers on the same questions; two routers that send the same prompt to the
same expert at temperature 0 would otherwise pay for the same generation twice (issue #25).
Only successful results are kept (a failure is asked again), and only requests at temperature 0
(sampled outputs are meant to differ). A call in flight is shared: a second identical request
waits for the first instead of sending its own. The memo is scoped to one run (the bench makes one
and drops it): it is never shared across processes or callers, so it needs no staleness bound
beyond the run; its size is bounded by `max_entries` (least recently used dropped first).
"""

from __future__ import annotations

import asyncio
import hashlib

from cachetools import LRUCache

from experts.types import GenerationRequest, GenerationResult


def memo_key(expert: str, request: GenerationRequest) -> bytes | None:
    """The memo's key for a request (None: not memoisable, it is sampled)."""
    if request.temperature != 0.0:
        return None
    h = hashlib.blake2b(expert.encode(), digest_size=20)
    h.update(b"\0")
    h.update(request.model_dump_json().encode())
    return h.digest()


class GenerationMemo:
    """Results by (expert, request) for one run; see the module docstring."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._done: LRUCache[bytes, GenerationResult] = LRUCache(maxsize=max_entries)
        self._inflight: dict[bytes, asyncio.Future[GenerationResult]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._done)

    def get(self, key: bytes) -> GenerationResult | None:
        hit = self._done.get(key)
        if hit is not None:
            self.hits += 1
        return hit

    def inflight(self, key: bytes) -> asyncio.Future[GenerationResult] | None:
        return self._inflight.get(key)

    def begin(self, key: bytes) -> asyncio.Future[GenerationResult]:
        """Claim a key's generation: identical requests from now on wait for this one."""
        self.misses += 1
        fut: asyncio.Future[GenerationResult] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        return fut

    def finish(self, key: bytes, result: GenerationResult | None) -> None:
        """The claimed generation's result (None: it was cancelled); waiters get it, and a
        successful one is kept."""
        fut = self._inflight.pop(key, None)
        if result is not None and result.ok:
            self._done[key] = result
        if fut is not None and not fut.done():
            if result is None:
                fut.cancel()
            else:
                fut.set_result(result)
