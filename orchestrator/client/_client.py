"""The async client of the gateway.

    async with AsyncOrchestratorClient("http://127.0.0.1:8000", api_key="sk-orch-...") as client:
        reply = await client.chat("all-vote", [{"role": "user", "content": "Which enzyme unwinds DNA?"}])
        print(reply.text, reply.experts, reply.trace_id)
        async for chunk in client.chat_stream("smollm2-135m", "Hello"):
            print(chunk.choices[0].delta.content or "", end="")
        batch = await client.submit_batch([{"custom_id": "a", "body": {"model": "coe", "messages": [...]}}])
        batch = await client.wait_batch(batch.id)
        results = await client.batch_results(batch.id)

429 and 503 answers are retried with exponential backoff that honours `Retry-After`; a stream is
only retried before its first chunk. A failed connection is retried only when the request cannot
have been acted on twice: it never reached the gateway (connect errors), it is a GET or DELETE,
or it carries an `Idempotency-Key` (`submit_batch` sends one by default, so a retried submit
returns the first job). Errors raise the typed exceptions of `orchestrator.client` (see its
`_exceptions` module for the tree).
"""

from __future__ import annotations

import asyncio
import enum
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from experts.spec import ExpertSpec
from orchestrator.client._exceptions import (
    APIConnectionError,
    APIStatusError,
    BatchTimeout,
    ClientError,
    StreamError,
    error_from_response,
    invalid_arguments,
    retry_after_s,
)
from orchestrator.client._models import ChatCompletion, ExpertDeleted, ExpertInfo, Readiness
from orchestrator.protocol import (
    BatchCreate,
    BatchObject,
    BatchRequestItem,
    BatchResultItem,
    BatchResults,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessageIn,
    FeedbackCreate,
    FeedbackObject,
    ModelCard,
    ModelList,
)
from store.records import TraceRecord
from store.urls import mask_url

RETRY_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
# transport errors raised before the request left: retrying cannot make the gateway act twice
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
MessagesIn = str | Sequence[ChatMessageIn | dict[str, Any]]


class _State(enum.Enum):
    UNOPENED = 1  # built, not yet used
    OPENED = 2  # used or entered; holds pooled connections
    CLOSED = 3  # closed; further use raises


class AsyncOrchestratorClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: httpx.Timeout | float = httpx.Timeout(600.0, connect=10.0),
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        root = base_url.rstrip("/").removesuffix("/v1")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=root, headers=headers, timeout=timeout, transport=transport)
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self._state = _State.UNOPENED

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> "AsyncOrchestratorClient":
        if self._state is _State.CLOSED:
            raise ClientError("this client is closed; create a new one")
        self._state = _State.OPENED
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._state = _State.CLOSED
        await self._http.aclose()

    # ------------------------------------------------------------------ transport
    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        hinted = retry_after_s(response) if response is not None else None
        backoff = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
        return min(self.max_backoff_s, max(hinted or 0.0, backoff))

    @asynccontextmanager
    async def _send(self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None,
                    stream: bool = False, headers: dict[str, str] | None = None) -> AsyncIterator[httpx.Response]:
        """One request with retries on 429/503 and on connection errors that cannot duplicate it
        (see the module's docstring); yields a successful response."""
        if self._state is _State.CLOSED:
            raise ClientError("this client is closed; create a new one")
        self._state = _State.OPENED
        replayable = method in IDEMPOTENT_METHODS or any(k.lower() == "idempotency-key" for k in headers or {})
        attempt = 0
        while True:
            request = self._http.build_request(method, path, json=json_body, params=params, headers=headers)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as e:
                if attempt >= self.max_retries or not (replayable or isinstance(e, NOT_SENT_ERRORS)):
                    sent = "" if replayable or isinstance(e, NOT_SENT_ERRORS) else " (not retried: the gateway may have acted on it)"
                    raise APIConnectionError(f"cannot reach the gateway at {mask_url(str(self._http.base_url))}: "
                                             f"{type(e).__name__}: {e}{sent}") from e
                await asyncio.sleep(self._delay(attempt, None))
                attempt += 1
                continue
            if response.status_code < 400:
                try:
                    yield response
                finally:
                    await response.aclose()
                return
            await response.aread()
            await response.aclose()
            in_use = response.status_code == 409 and replayable  # its first attempt is still being submitted
            if (response.status_code in RETRY_STATUSES or in_use) and attempt < self.max_retries:
                await asyncio.sleep(self._delay(attempt, response))
                attempt += 1
                continue
            raise error_from_response(response)

    async def _json(self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None,
                    headers: dict[str, str] | None = None) -> Any:
        async with self._send(method, path, json_body=json_body, params=params, headers=headers) as r:
            await r.aread()
            return r.json()

    # ------------------------------------------------------------------ chat
    @staticmethod
    def _chat_request(model: str, messages: MessagesIn, params: dict[str, Any]) -> ChatCompletionRequest:
        msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
        msgs = [m.model_dump(exclude_none=True) if isinstance(m, BaseModel) else m for m in msgs]
        try:
            return ChatCompletionRequest.model_validate({"model": model, "messages": msgs, **params})
        except ValidationError as e:
            raise invalid_arguments(e) from None

    async def chat(self, model: str, messages: MessagesIn, **params: Any) -> ChatCompletion:
        """One answer. `model` is a router or an expert; `params` are chat completion fields
        (max_tokens, temperature, stop, seed, metadata, ...). A string is one user message."""
        req = self._chat_request(model, messages, {**params, "stream": False})
        body = await self._json("POST", "/v1/chat/completions", json_body=req.model_dump(mode="json", exclude_none=True))
        return ChatCompletion.model_validate(body)

    async def chat_stream(self, model: str, messages: MessagesIn, *, include_usage: bool = True, **params: Any) -> AsyncIterator[ChatCompletionChunk]:
        """Chunks as they arrive; raises `StreamError` if the gateway ends the stream with an error."""
        req = self._chat_request(model, messages, {**params, "stream": True, "stream_options": {"include_usage": include_usage}})
        async with self._send("POST", "/v1/chat/completions", json_body=req.model_dump(mode="json", exclude_none=True), stream=True) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    err = event["error"] or {}
                    raise StreamError(str(err.get("message", "stream failed")), type=err.get("type"), code=err.get("code"))
                yield ChatCompletionChunk.model_validate({**event, "choices": event.get("choices") or []})
        raise StreamError("the stream ended without [DONE]")

    # ------------------------------------------------------------------ models and experts
    async def models(self) -> list[ModelCard]:
        return ModelList.model_validate(await self._json("GET", "/v1/models")).data

    async def model(self, model_id: str) -> ModelCard:
        return ModelCard.model_validate(await self._json("GET", f"/v1/models/{model_id}"))

    async def experts(self) -> list[ExpertInfo]:
        """The registry with each expert's (cached) health."""
        body = await self._json("GET", "/v1/experts")
        return [ExpertInfo.model_validate(e) for e in body["data"]]

    async def create_expert(self, spec: ExpertSpec | dict[str, Any]) -> ExpertSpec:
        try:
            spec = spec if isinstance(spec, ExpertSpec) else ExpertSpec.model_validate(spec)
        except ValidationError as e:
            raise invalid_arguments(e) from None
        body = await self._json("POST", "/v1/experts", json_body=spec.model_dump(mode="json", exclude_defaults=True))
        return ExpertSpec.model_validate(body)

    async def delete_expert(self, name: str) -> ExpertDeleted:
        return ExpertDeleted.model_validate(await self._json("DELETE", f"/v1/experts/{name}"))

    async def expert_health(self) -> dict[str, bool | None]:
        return {e.name: e.healthy for e in await self.experts()}

    # ------------------------------------------------------------------ traces and health
    async def trace(self, trace_id: str) -> TraceRecord:
        return TraceRecord.model_validate(await self._json("GET", f"/v1/traces/{trace_id}"))

    async def feedback(self, trace_id: str, score: float, comment: str | None = None) -> FeedbackObject:
        """Rate an answer (its `trace_id`): `score` from -1 (bad) to 1 (good), with an optional comment."""
        try:
            body = FeedbackCreate(trace_id=trace_id, score=score, comment=comment)
        except ValidationError as e:
            raise invalid_arguments(e) from None
        return FeedbackObject.model_validate(await self._json("POST", "/v1/feedback", json_body=body.model_dump(exclude_none=True)))

    async def health(self) -> bool:
        return (await self._json("GET", "/health")).get("status") == "ok"

    async def ready(self) -> Readiness:
        """Readiness even when not ready (the gateway answers 503 then, which is not an error here)."""
        try:
            return Readiness.model_validate(await self._json("GET", "/ready"))
        except APIStatusError as e:
            if e.status_code == 503 and e.response is not None and "status" in e.response.json():
                return Readiness.model_validate(e.response.json())
            raise

    async def metrics(self) -> str:
        async with self._send("GET", "/metrics") as r:
            return (await r.aread()).decode()

    # ------------------------------------------------------------------ batches
    async def submit_batch(self, requests: Sequence[BatchRequestItem | dict[str, Any]], *, metadata: dict[str, str] | None = None,
                           idempotency_key: str | None = None) -> BatchObject:
        """Start a batch job; each request is `{"custom_id", "body": <chat completion request>}`.

        Sent with an `Idempotency-Key` (a fresh UUID unless given): a retry after a lost answer
        returns the job the first attempt created instead of starting a second one."""
        try:
            create = BatchCreate.model_validate({
                "requests": [r.model_dump(mode="json", exclude_none=True) if isinstance(r, BaseModel) else r for r in requests],
                "metadata": metadata,
            })
        except ValidationError as e:
            raise invalid_arguments(e) from None
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return BatchObject.model_validate(await self._json("POST", "/v1/batches", json_body=create.model_dump(mode="json", exclude_none=True),
                                                           headers=headers))

    async def batch(self, batch_id: str) -> BatchObject:
        return BatchObject.model_validate(await self._json("GET", f"/v1/batches/{batch_id}"))

    async def batches(self, *, limit: int = 20) -> list[BatchObject]:
        body = await self._json("GET", "/v1/batches", params={"limit": limit})
        return [BatchObject.model_validate(b) for b in body["data"]]

    async def cancel_batch(self, batch_id: str) -> BatchObject:
        return BatchObject.model_validate(await self._json("POST", f"/v1/batches/{batch_id}/cancel"))

    async def wait_batch(self, batch_id: str, *, poll_s: float = 1.0, timeout_s: float | None = None) -> BatchObject:
        """Poll until the job is completed, failed or cancelled."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            b = await self.batch(batch_id)
            if b.status not in ("in_progress", "cancelling"):
                return b
            if deadline is not None and time.monotonic() >= deadline:
                raise BatchTimeout(f"batch {batch_id} still {b.status} after {timeout_s:g} s "
                                   f"({b.request_counts.completed + b.request_counts.failed}/{b.request_counts.total} done)")
            await asyncio.sleep(poll_s)

    async def batch_results(self, batch_id: str, *, page_size: int = 1000) -> list[BatchResultItem]:
        """Every finished item, in index order (all pages)."""
        out: list[BatchResultItem] = []
        after = -1
        while True:
            page = BatchResults.model_validate(
                await self._json("GET", f"/v1/batches/{batch_id}/results", params={"after": after, "limit": page_size}))
            out += page.data
            if not page.has_more or not page.data:
                return out
            after = page.data[-1].index
