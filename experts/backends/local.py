"""In-process generation with transformers (CPU here; CUDA when present).

    backend = LocalBackend(ExpertSpec(name="smol", backend="local", model="smollm2-135m-instruct"))
    [result] = await backend.generate([GenerationRequest.chat("What is the capital of France?")])

Batched generation with left padding; chat requests go through the model's chat template (base
models get plain text). Loading and generation run in a worker thread so the event loop stays
free; one lock serialises generation on the single model instance. `load()`/`unload()` are
explicit so the residency manager can swap models in limited memory. `stream()` decodes one
request with transformers' `AsyncTextIteratorStreamer`, the text reaching the event loop token by
token.

Generation runs on this backend's own single worker thread (never the loop's shared default
pool, which a few stuck generations would exhaust), and every generation carries a stop flag
checked at each new token: when the caller's timeout passes (or it is cancelled, or a streaming
caller goes away), the flag is set and the generation ends at its next token, releasing the
thread and the lock within one decoding step instead of running to `max_new_tokens` for nobody.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub is reachable: never try one
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# Imported here, not inside worker threads: transformers' lazy module is not safe to import
# from two threads at once (two models loading in parallel hit a spurious ImportError).
import torch
from transformers import (
    AsyncTextIteratorStreamer,
    StoppingCriteria,
    StopStringCriteria,
    StoppingCriteriaList,
)

from experts.backends.base import ExpertBackend
from experts.backends.hf import eos_token_ids, load_tokenizer
from experts.backends.streaming import StopHoldback
from experts.errors import ConfigError, ExpertError, ExpertTimeout, ExpertUnavailable
from experts.spec import ExpertSpec
from experts.types import DeltaHandler, GenerationDelta, GenerationRequest, GenerationResult, HealthStatus


class _StopWhenSet(StoppingCriteria):
    """Stops every sequence of a generation once `event` is set (checked after each token)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class GenerationStopped(ExpertError):
    """Raised inside the worker thread when a generation was stopped before it started."""


class LocalBackend(ExpertBackend):
    # One load at a time per process: transformers builds models under a context manager that
    # patches torch globally (empty-weight init), so two threads loading at once corrupt each
    # other ("Cannot copy out of meta tensor").
    _process_load_lock = threading.Lock()

    def __init__(self, spec: ExpertSpec) -> None:
        super().__init__(spec)
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = "cpu"
        self._gen_lock = threading.Lock()
        self._load_lock = asyncio.Lock()
        # One worker: generations are serialised by _gen_lock anyway, and a queue of them here
        # never takes threads from the event loop's default pool.
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"local-{spec.name}")
        self.load_count = 0
        self.stopped_generations = 0  # generations ended early by their stop flag (timeouts, cancellations)
        self._stops: set[threading.Event] = set()  # stop flags of the generations queued or running
        self._stop_criteria: dict[tuple[str, ...], Any] = {}

    # ------------------------------------------------------------------ residency
    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def model(self) -> Any:
        return self._model

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[tuple[Any, Any]]:
        """(model, tokenizer) for in-process use by another component, with generation held off
        meanwhile: MoT shares these weights and registers hooks on the model's layers."""
        with self._gen_lock:
            if self._model is None:
                raise ExpertUnavailable(f"local expert {self.name!r} is not loaded", expert=self.name)
            yield self._model, self._tokenizer

    async def load(self) -> None:
        async with self._load_lock:
            if self._model is None:
                # On the generation thread. Loaded on the loop's default pool (a thread that
                # asyncio.run ends with its loop), generation in any later event loop ran about
                # 10x slower: a 5-prompt batch took 5-8 s in the loading loop, 67-80 s in the next.
                await asyncio.get_running_loop().run_in_executor(self._worker, self._load_sync)

    def _load_sync(self) -> None:
        with LocalBackend._process_load_lock:
            self._load_locked()

    def _load_locked(self) -> None:
        from experts.packaged_models import resolve_model_dir

        from experts.adapters import load_causal_lm, tokenizer_dir

        path = resolve_model_dir(self.spec.model)
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        # bf16 matmuls are slow on most CPUs: compute in float32 there unless the spec says
        # otherwise (CPUs with AMX run bf16 several times faster).
        if self.spec.dtype == "auto":
            dtype = torch.bfloat16 if self._device == "cuda" else torch.float32
        else:
            dtype = getattr(torch, self.spec.dtype)
        tok_path = tokenizer_dir(path)
        tok = load_tokenizer(tok_path)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        # A LoRA adapter directory loads over its base and is merged (experts/adapters.py).
        model = load_causal_lm(path, dtype).to(self._device)
        model.eval()
        self._tokenizer, self._model = tok, model
        self.load_count += 1

    async def unload(self) -> None:
        async with self._load_lock:
            if self._model is not None:
                await asyncio.get_running_loop().run_in_executor(self._worker, self._unload_sync)

    def _unload_sync(self) -> None:
        with self._gen_lock:
            self._model = None
            self._tokenizer = None
            self._stop_criteria.clear()
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ generation
    def _render(self, req: GenerationRequest) -> str:
        tok = self._tokenizer
        has_template = bool(getattr(tok, "chat_template", None)) and self.spec.chat_template
        if req.messages is not None:
            msgs = [m.model_dump(exclude_none=True) for m in req.messages]
            if has_template:
                if req.continue_final_message and msgs[-1]["role"] == "assistant":
                    return tok.apply_chat_template(msgs, tokenize=False, continue_final_message=True)
                return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            # Base model: plain text transcript; a continued assistant turn is just appended.
            return "\n\n".join(m["content"] for m in msgs) + ("" if req.continue_final_message else "\n\n")
        assert req.prompt is not None
        if has_template:
            return tok.apply_chat_template([{"role": "user", "content": req.prompt}], tokenize=False, add_generation_prompt=True)
        return req.prompt

    def _generate_sync(self, batch: list[GenerationRequest], stop: threading.Event | None = None,
                       streamer: Any = None) -> list[GenerationResult]:
        stop = stop or threading.Event()
        if stop.is_set():  # its caller gave up while it waited for the worker
            raise GenerationStopped(f"local expert {self.name!r}: generation stopped before it started", expert=self.name)
        with self._gen_lock:
            if self._model is None:
                raise ExpertUnavailable(f"local expert {self.name!r} was unloaded", expert=self.name)
            tok, model = self._tokenizer, self._model
            texts = [self._render(r) for r in batch]
            # Chat templates write their own BOS; plain prompts need the tokenizer's (Gemma
            # degrades badly without <bos>).
            templated = bool(getattr(tok, "chat_template", None)) and self.spec.chat_template
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not templated).to(self._device)
            first = batch[0]
            max_new = min(max(r.max_tokens for r in batch), self.spec.max_new_tokens)
            stops = sorted({s for r in batch for s in r.stop})
            kwargs: dict[str, Any] = {"max_new_tokens": max_new, "pad_token_id": tok.pad_token_id}
            if first.temperature > 0:
                kwargs.update(do_sample=True, temperature=first.temperature, top_p=first.top_p)
                if first.seed is not None:
                    torch.manual_seed(first.seed)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            criteria: list[StoppingCriteria] = [_StopWhenSet(stop)]
            if stops:
                criteria.append(self._stop_string_criteria(tuple(stops)))
            kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
            if streamer is not None:
                kwargs["streamer"] = streamer
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(**enc, **kwargs)
            latency = time.perf_counter() - t0
            if stop.is_set():
                self.stopped_generations += 1
                raise GenerationStopped(f"local expert {self.name!r}: generation stopped after {latency:.1f} s", expert=self.name)
            prompt_len = enc["input_ids"].shape[1]
            eos_ids = eos_token_ids(model, tok)
            results = []
            for i, req in enumerate(batch):
                gen = out[i, prompt_len:].tolist()
                # Trim padding and everything after the first end-of-sequence token.
                cut = next((j for j, t in enumerate(gen) if t in eos_ids), None)
                hit_eos = cut is not None
                gen = gen[:cut] if hit_eos else [t for t in gen if t != tok.pad_token_id]
                text = tok.decode(gen, skip_special_tokens=True)
                finish, stop_string = ("stop" if hit_eos else "length"), None
                n_gen = min(len(gen), req.max_tokens)
                if len(gen) > req.max_tokens:  # batch neighbours asked for more tokens than this one
                    text = tok.decode(gen[: req.max_tokens], skip_special_tokens=True)
                    finish = "length"
                text, stop_string = cut_at_stop(text, req.stop)
                if stop_string is not None:
                    finish = "stop"
                results.append(
                    GenerationResult(
                        text=text,
                        prompt_tokens=int(enc["attention_mask"][i].sum()),
                        completion_tokens=n_gen,
                        latency_s=latency,
                        finish_reason=finish,
                        stop_string=stop_string,
                    )
                )
            return results

    def _stop_string_criteria(self, stops: tuple[str, ...]) -> Any:
        """StopStringCriteria scans the whole vocabulary when built: build it once per stop set."""
        if stops not in self._stop_criteria:
            self._stop_criteria[stops] = StopStringCriteria(self._tokenizer, list(stops))
        return self._stop_criteria[stops]

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        try:
            await self.load()
        except ConfigError as e:
            return [GenerationResult.failed(ExpertUnavailable(str(e), expert=self.name)) for _ in requests]
        except Exception as e:  # a broken model directory must come back as a typed error
            err = ExpertUnavailable(f"local expert {self.name!r} failed to load: {type(e).__name__}: {e}", expert=self.name)
            return [GenerationResult.failed(err) for _ in requests]
        results: list[GenerationResult] = []
        # Same sampling settings per sub-batch (greedy and sampled requests are not mixed).
        step = self.spec.max_batch_size
        groups: dict[tuple[float, float, int | None], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.temperature, r.top_p, r.seed), []).append(i)
        by_index: dict[int, GenerationResult] = {}
        for idxs in groups.values():
            for k in range(0, len(idxs), step):
                chunk = idxs[k : k + step]
                try:
                    out = await self._run_bounded([requests[i] for i in chunk])
                except ExpertError as e:
                    out = [GenerationResult.failed(e) for _ in chunk]
                except Exception as e:
                    err = ExpertUnavailable(f"local expert {self.name!r} failed: {type(e).__name__}: {e}", expert=self.name)
                    out = [GenerationResult.failed(err) for _ in chunk]
                by_index.update(zip(chunk, out, strict=True))
        results = [by_index[i] for i in range(len(requests))]
        return results

    async def stream(self, request: GenerationRequest, on_delta: DeltaHandler) -> GenerationResult:
        """One request, its text handed to `on_delta` token by token (stop strings held back, as
        `generate` would cut them); the result is the one `generate` returns for it."""
        t0 = time.perf_counter()
        try:
            await self.load()
        except Exception as e:  # noqa: BLE001 - a broken model must come back as a typed error, as in generate
            return GenerationResult.failed(ExpertUnavailable(f"local expert {self.name!r} failed to load: {type(e).__name__}: {e}", expert=self.name))
        tok = self._tokenizer
        if tok is None:
            return GenerationResult.failed(ExpertUnavailable(f"local expert {self.name!r} was unloaded", expert=self.name))
        streamer = AsyncTextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()

        def work() -> list[GenerationResult]:
            try:
                return self._generate_sync([request], cancel, streamer)
            finally:
                streamer.end()  # wakes the reader even when generation failed before its first token

        self._stops.add(cancel)
        worker = asyncio.get_running_loop().run_in_executor(self._worker, work)
        worker.add_done_callback(lambda _f: self._stops.discard(cancel))
        worker.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even if we leave early
        hold = StopHoldback(request.stop)
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                async for piece in streamer:
                    if out := hold.feed(piece):
                        await on_delta(GenerationDelta(text=out))
                (result,) = await worker
        except TimeoutError:
            cancel.set()
            err = ExpertTimeout(f"local expert {self.name!r} took longer than {self.spec.timeout_s:.0f} s", expert=self.name)
            return GenerationResult.failed(err, latency_s=time.perf_counter() - t0).model_copy(update={"text": hold.emitted})
        except ExpertError as e:
            return GenerationResult.failed(e, latency_s=time.perf_counter() - t0).model_copy(update={"text": hold.emitted})
        except Exception as e:  # noqa: BLE001 - as in generate
            err = ExpertUnavailable(f"local expert {self.name!r} failed: {type(e).__name__}: {e}", expert=self.name)
            return GenerationResult.failed(err, latency_s=time.perf_counter() - t0).model_copy(update={"text": hold.emitted})
        finally:
            cancel.set()  # a cancelled or failed reader stops the worker at its next token
        if rest := hold.flush():
            await on_delta(GenerationDelta(text=rest))
        return result

    async def _run_bounded(self, batch: list[GenerationRequest]) -> list[GenerationResult]:
        """One generation on the worker thread, bounded by the expert's timeout; on timeout or
        cancellation it is told to stop and this waits (briefly: one token) until it has."""
        stop = threading.Event()
        self._stops.add(stop)
        fut = asyncio.get_running_loop().run_in_executor(self._worker, self._generate_sync, batch, stop)
        fut.add_done_callback(lambda _f: self._stops.discard(stop))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.spec.timeout_s)
        except asyncio.TimeoutError:
            stop.set()
            await asyncio.gather(fut, return_exceptions=True)
            raise ExpertTimeout(f"local expert {self.name!r} took longer than {self.spec.timeout_s:g} s", expert=self.name) from None
        except asyncio.CancelledError:
            stop.set()  # nobody waits for it: free the thread at the next token
            raise

    async def aclose(self) -> None:
        for stop in list(self._stops):
            stop.set()
        await super().aclose()
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def health(self) -> HealthStatus:
        from experts.packaged_models import locate_model, model_cache_dir

        try:
            found = locate_model(self.spec.model)
        except ConfigError as e:
            return HealthStatus(name=self.name, backend="local", healthy=False, detail=str(e))
        where = found if not hasattr(found, "id") else model_cache_dir() / found.id  # type: ignore[union-attr]
        state = "loaded" if self.is_loaded else "not loaded"
        return HealthStatus(name=self.name, backend="local", healthy=True, detail=f"weights {where} ({state})")


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """The text before the earliest stop string, and that stop string (removed, as servers do)."""
    hits = sorted((k, s) for s in stops if (k := text.find(s)) >= 0)
    if not hits:
        return text, None
    k, stop = hits[0]
    return text[:k], stop

