"""Opt-in response caches: exact (same request) and semantic (similar question, per router).

    caches = ResponseCaches(config.cache, services=runtime.services, observe=metrics.record_cache)
    hit, pending = await caches.find(query, router, options, owner=key_id)
    if hit is None:
        result = ...                               # answer it
        caches.keep(pending, result)

Both are keyed per API key (`owner`): one key never gets an answer another key's request produced,
whatever the similarity. Only temperature-0 requests that carry no tool fields are looked up or kept,
and only answers that succeeded with text. Both are bounded (entries, age): a kept answer is at most
`ttl_s` old, and every entry is dropped when the registry changes (`clear`), so an answer is never
served from an expert that was replaced. They are per process (replicas each keep their own).

* exact: the key is the whole query (conversation, sampling fields, question id, choices), the
  router, its options and its fit version (a refit or a rollback routes anew); `cachetools.TTLCache` (size and age bound).
* semantic: per (key, router, fit version, options, sampling fields) bucket, the stored questions' embeddings
  (the router context's shared embedder, `routers.embeddings`, on the question with its options);
  the most similar one at or above the router's threshold answers. Single-turn questions only (a
  conversation's earlier turns are not in the embedding).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from cachetools import LRUCache, TTLCache

from experts.spec import CacheConfig
from routers.types import Query

if TYPE_CHECKING:
    from orchestrator.pipeline import QueryResult

CacheObserver = Callable[[str, str], None]  # (kind "exact" | "semantic", "hit" | "miss")


@dataclass
class CacheHit:
    """An answer served from a cache: where it came from (the trace that produced it)."""

    kind: str
    result: "QueryResult"
    source_trace_id: str
    age_s: float
    similarity: float | None = None

    def detail(self) -> dict[str, Any]:
        d: dict[str, Any] = {"cache": self.kind, "hit": True, "source_trace_id": self.source_trace_id, "age_s": round(self.age_s, 3)}
        if self.similarity is not None:
            d["similarity"] = round(self.similarity, 4)
        return d


@dataclass
class Pending:
    """What a miss needs to keep its answer (computed once at lookup)."""

    exact_key: bytes | None = None
    bucket: bytes | None = None
    vector: np.ndarray | None = None


@dataclass
class _Bucket:
    """One (key, router, ...) bucket of the semantic cache: a ring of vectors and answers."""

    vectors: np.ndarray
    stored_at: np.ndarray  # time.monotonic() per slot
    results: list[Any] = field(default_factory=list)  # the answer per slot
    next: int = 0


def cacheable(query: Query) -> bool:
    """Temperature 0 (the default when unset) and nothing only one tool-capable expert honours."""
    return (query.temperature or 0.0) == 0.0 and not query.tool_fields()


def _digest(*parts: Any) -> bytes:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=20).digest()


class ResponseCaches:
    """The exact and semantic caches of one runtime; see the module docstring."""

    def __init__(self, config: CacheConfig, *, services: dict[str, Any], observe: CacheObserver | None = None) -> None:
        self.config = config
        self.services = services
        self.observe = observe
        ex = config.exact
        self._exact: TTLCache[bytes, tuple["QueryResult", float]] | None = (
            TTLCache(maxsize=ex.max_entries, ttl=ex.ttl_s) if ex.enabled else None)
        sem = config.semantic
        self._buckets: LRUCache[bytes, _Bucket] = LRUCache(maxsize=sem.max_buckets)

    @property
    def enabled(self) -> bool:
        return self._exact is not None or bool(self.config.semantic.routers)

    def clear(self) -> None:
        """Forget every answer (the registry changed: an expert may answer differently now)."""
        if self._exact is not None:
            self._exact.clear()
        self._buckets.clear()

    def _seen(self, kind: str, outcome: str) -> None:
        if self.observe is not None:
            self.observe(kind, outcome)

    async def find(self, query: Query, router: str, options: dict[str, Any] | None, *,
                   owner: str | None, fit_version: int | None = None) -> tuple[CacheHit | None, Pending | None]:
        """A cached answer for this caller, or (None, what `keep` needs); (None, None) when the
        query is not cacheable. `fit_version` is the stored fit the router routes with: an answer
        routed by another version (before a refit, or a `profile use` rollback) is not served."""
        if not self.enabled or not cacheable(query):
            return None, None
        pending = Pending()
        opts = sorted((options or {}).items())
        if self._exact is not None:
            pending.exact_key = _digest("exact", owner, router, fit_version, opts, query.model_dump(mode="json", exclude={"gold"}))
            got = self._exact.get(pending.exact_key)
            if got is not None:
                self._seen("exact", "hit")
                result, at = got
                return CacheHit("exact", result, result.trace_id, time.monotonic() - at), None
            self._seen("exact", "miss")
        sem = self.config.semantic.routers.get(router)
        if sem is not None and self._single_turn(query):
            from routers.embeddings import shared_embedder

            sampling = query.model_dump(mode="json", include={"max_tokens", "temperature", "top_p", "stop", "seed"})
            pending.bucket = _digest("semantic", owner, router, fit_version, opts, sampling)
            pending.vector = (await shared_embedder(self.services).embed([query.text_with_options()]))[0]
            hit = self._nearest(pending.bucket, pending.vector, sem.threshold)
            self._seen("semantic", "hit" if hit is not None else "miss")
            if hit is not None:
                return hit, None
        return None, pending

    @staticmethod
    def _single_turn(query: Query) -> bool:
        return not query.messages or sum(m.role != "system" for m in query.messages) == 1

    def _nearest(self, bucket_key: bytes, vector: np.ndarray, threshold: float) -> CacheHit | None:
        bucket = self._buckets.get(bucket_key)
        if bucket is None or not bucket.results:
            return None
        now = time.monotonic()
        ttl = self.config.semantic.ttl_s
        n = len(bucket.results)
        sims = np.where(now - bucket.stored_at[:n] <= ttl, bucket.vectors[:n] @ vector, -np.inf)
        best = int(np.argmax(sims))
        if sims[best] < threshold:
            return None
        result = bucket.results[best]
        return CacheHit("semantic", result, result.trace_id, now - float(bucket.stored_at[best]), similarity=float(sims[best]))

    def keep(self, pending: Pending | None, result: "QueryResult") -> None:
        """Keep a fresh answer (a successful one with text) for the lookups `pending` came from."""
        if pending is None or not result.ok or not result.final.text or result.interrupted:
            return
        now = time.monotonic()
        if pending.exact_key is not None and self._exact is not None:
            self._exact[pending.exact_key] = (result, now)
        if pending.bucket is not None and pending.vector is not None:
            bucket = self._buckets.get(pending.bucket)
            cap = self.config.semantic.max_entries
            if bucket is None:
                bucket = self._buckets[pending.bucket] = _Bucket(np.zeros((cap, pending.vector.shape[0]), dtype=np.float32),
                                                                 np.zeros(cap, dtype=np.float64))
            slot = bucket.next  # the oldest slot once full
            bucket.vectors[slot] = pending.vector
            bucket.stored_at[slot] = now
            if slot < len(bucket.results):
                bucket.results[slot] = result
            else:
                bucket.results.append(result)
            bucket.next = (slot + 1) % cap
