"""Any OpenAI-compatible server (vLLM first) over pooled HTTP connections.

    backend = OpenAIBackend(spec)                       # spec.base_url = "http://host:8000/v1"
    results = await backend.generate(requests)
    await backend.aclose()

* Chat requests go to `/chat/completions`, one HTTP request each, sent concurrently (bounded by
  `max_concurrency`).
* Plain-prompt requests of a batch that share sampling settings go as ONE `/completions`
  request with a list of prompts (vLLM batches them server-side).
* Retries with exponential backoff and full jitter on connection errors, timeouts, 429
  (honouring `Retry-After`), 5xx and malformed bodies; a 4xx caused by our own request is never
  retried. Every attempt stays within the expert's timeout budget.
* Every request names the upstream model in `X-Gateway-Model-Name` (`MODEL_HEADER`): the header
  the Gateway API Inference Extension's body-based routing sets, so an HTTPRoute in front of a
  vLLM fleet (llm-d, deploy/k8s/overlays/llm-d) picks the InferencePool by it without parsing
  the body; the pool's endpoint picker then picks the replica.
* Generation requests go over one `aiohttp.ClientSession` (about 0.13 ms of CPU per request
  against 0.58 ms for httpx, measured against the load-test upstream: it is the gateway's hot
  path). httpx stays the fallback (`http_client="httpx"`, or whenever a test injects an httpx
  transport) and serves health checks and residency calls.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import random
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
import httpx

from experts.backends.base import ExpertBackend
from experts.errors import (
    ExpertBadResponse,
    ExpertError,
    ExpertRateLimited,
    ExpertRequestRejected,
    ExpertServerError,
    ExpertTimeout,
    ExpertUnavailable,
)
from experts.backends.streaming import ChatStreamAccumulator
from experts.spec import ExpertSpec
from experts.types import DeltaHandler, GenerationRequest, GenerationResult, HealthStatus

MAX_RETRY_AFTER_S = 30.0
POOL_SHARD_SIZE = 8  # connections per httpx pool (see OpenAIBackend.__init__)


@functools.cache
def _shared_ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()  # what httpx builds per client by default (certifi roots)


def map_httpx_error(exc: httpx.HTTPError, expert: str, url: str) -> ExpertError:
    """Translate an httpx transport exception into our error tree (cause chained by caller)."""
    if isinstance(exc, httpx.TimeoutException):
        return ExpertTimeout(f"expert {expert!r} timed out ({type(exc).__name__}) at {url}", expert=expert)
    if isinstance(exc, (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.NetworkError)):
        reason = "connection refused" if "refused" in str(exc).lower() or isinstance(exc, httpx.ConnectError) else "connection lost"
        return ExpertUnavailable(f"expert {expert!r}: {reason} at {url}", expert=expert)
    return ExpertUnavailable(f"expert {expert!r}: {type(exc).__name__} at {url}", expert=expert)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _server_message(content: bytes) -> str:
    try:
        body = json.loads(content)
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message") if isinstance(err, dict) else None
        return str(msg or body)[:500]
    except ValueError:
        return content.decode("utf-8", "replace")[:500]


def map_status_parts(status: int, retry_after: str | None, content: bytes, expert: str) -> ExpertError:
    """The error for a non-200 answer, from its status, `Retry-After` header and body."""
    msg = f"expert {expert!r} answered {status}: {_server_message(content)}"
    if status == 429:
        return ExpertRateLimited(msg, expert=expert, retry_after_s=_retry_after(retry_after))
    if status >= 500:
        return ExpertServerError(msg, expert=expert, status_code=status)
    return ExpertRequestRejected(msg, expert=expert, status_code=status)


def map_status(resp: httpx.Response, expert: str) -> ExpertError:
    return map_status_parts(resp.status_code, resp.headers.get("retry-after"), resp.content, expert)


def map_aiohttp_error(exc: aiohttp.ClientError, expert: str, url: str) -> ExpertError:
    """Translate an aiohttp transport exception into our error tree, worded as for httpx."""
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return ExpertTimeout(f"expert {expert!r} timed out ({type(exc).__name__}) at {url}", expert=expert)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ExpertUnavailable(f"expert {expert!r}: connection refused at {url}", expert=expert)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
        return ExpertUnavailable(f"expert {expert!r}: connection lost at {url}", expert=expert)
    return ExpertUnavailable(f"expert {expert!r}: {type(exc).__name__} at {url}", expert=expert)


def env_proxy(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY / NO_PROXY name for `url` (httpx honours them by default; aiohttp
    would look them up in a thread per request, so the backend resolves them once)."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _check_completion(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise ValueError("no choices list")
    return body


def _check_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    return body


BodyCheck = Callable[[Any], dict[str, Any]]
MODEL_HEADER = "X-Gateway-Model-Name"  # the Gateway API Inference Extension's model-name header


class OpenAIBackend(ExpertBackend):
    def __init__(
        self,
        spec: ExpertSpec,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        sleep_mode: bool = False,
        http_client: str = "aiohttp",
        api_key: str | None = None,
    ) -> None:
        super().__init__(spec)
        assert spec.base_url is not None  # validated by ExpertSpec
        self.base_url = spec.base_url
        self.root_url = spec.base_url.removesuffix("/v1")
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.sleep_mode = sleep_mode
        headers = {"User-Agent": "llm-orchestrator"}
        if spec.model.isascii() and spec.model.isprintable():  # a header value must be (a model name always is in practice)
            headers[MODEL_HEADER] = spec.model
        # `api_key`: resolved by the registry (experts.spec.resolve_api_key); without it, the
        # spec's own api_key_env (a backend built directly from a config-file spec)
        key = api_key or (os.environ.get(spec.api_key_env) if spec.api_key_env else None)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        connect = min(5.0, spec.timeout_s)
        total = max(spec.max_concurrency * 2, 8)
        # Connections are spread over several small pools: httpcore scans every connection of a
        # pool for every request event, so one pool of 64 busy connections cost ~1.6 ms of CPU per
        # request (measured with `orchestrator loadtest` at concurrency 64); pools of 8 do not.
        n_pools = -(-total // POOL_SHARD_SIZE)
        self._client_kwargs: dict[str, Any] = dict(
            transport=transport, headers=headers, timeout=httpx.Timeout(spec.timeout_s, connect=connect, pool=spec.timeout_s),
            limits=httpx.Limits(max_connections=min(total, POOL_SHARD_SIZE), max_keepalive_connections=min(total, POOL_SHARD_SIZE)),
        )
        if transport is None:
            self._client_kwargs["verify"] = _shared_ssl_context()  # building one costs ~40 ms; share it
        self._pools: list[httpx.AsyncClient | None] = [None] * n_pools
        self._client = self._pool(0)
        self._next_pool = itertools.count()
        self._slots = asyncio.Semaphore(spec.max_concurrency)
        self._awake = True
        if http_client not in ("aiohttp", "httpx"):
            raise ValueError(f"http_client must be 'aiohttp' or 'httpx', not {http_client!r}")
        # An injected httpx transport (tests, proxies) means httpx carries everything.
        self._use_aiohttp = http_client == "aiohttp" and transport is None
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._headers = {**headers, "Content-Type": "application/json"}
        self._connect_s = connect
        self._proxy = env_proxy(spec.base_url)
        self._max_connections = total

    def _aiohttp_session(self) -> aiohttp.ClientSession:
        # Built lazily: a ClientSession belongs to the running event loop (a backend outliving
        # one asyncio.run, as in the CLI and tests, gets a fresh session in the next loop).
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session_loop = loop
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300,
                ssl=_shared_ssl_context() if self.base_url.startswith("https") else False,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, skip_auto_headers=("Accept-Encoding",),
                # An upstream's cookies are never sent back: no jar to filter on every request
                # (and no state one caller's answer could leave for the next caller's request).
                cookie_jar=aiohttp.DummyCookieJar(),
                # The whole exchange is bounded by asyncio.wait_for in _post; these bound its phases.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_s, sock_read=self.spec.timeout_s),
            )
        return self._session

    def _pool(self, i: int) -> httpx.AsyncClient:
        client = self._pools[i]
        if client is None:
            client = self._pools[i] = httpx.AsyncClient(**self._client_kwargs)
        return client

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self._pools if c is not None))
        if self._session is not None and self._session_loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None

    # ------------------------------------------------------------------ retries
    async def _send_httpx(self, url: str, payload: dict[str, Any], *, check: BodyCheck = _check_completion) -> dict[str, Any] | ExpertError:
        """One attempt over httpx: the completion body, or the error to retry or raise."""
        try:
            client = self._pool(next(self._next_pool) % len(self._pools))
            resp = await client.post(url, json=payload)
        except httpx.HTTPError as e:
            err = map_httpx_error(e, self.name, url)
            err.__cause__ = e
            return err
        if resp.status_code != 200:
            return map_status(resp, self.name)
        try:
            return check(orjson.loads(resp.content))  # the aiohttp path's parser: the same outcome and message
        except ValueError as e:
            return ExpertBadResponse(f"expert {self.name!r} sent a malformed completion ({e})", expert=self.name)

    async def _send_aiohttp(self, url: str, data: bytes, *, check: BodyCheck = _check_completion) -> dict[str, Any] | ExpertError:
        """One attempt over aiohttp, with the same outcomes as `_send_httpx`."""
        try:
            async with self._aiohttp_session().post(url, data=data, proxy=self._proxy) as resp:
                content = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except aiohttp.ClientError as e:
            err = map_aiohttp_error(e, self.name, url)
            err.__cause__ = e
            return err
        if status != 200:
            return map_status_parts(status, retry_after, content, self.name)
        try:
            return check(orjson.loads(content))  # orjson: a fraction of the stdlib's CPU, on every chat request
        except ValueError as e:
            return ExpertBadResponse(f"expert {self.name!r} sent a malformed completion ({e})", expert=self.name)

    async def _post(self, path: str, payload: dict[str, Any], check: BodyCheck = _check_completion) -> tuple[dict[str, Any], int]:
        """POST with retries; returns (body, attempts) or raises ExpertError."""
        url = f"{self.base_url}{path}"
        deadline = time.monotonic() + self.spec.timeout_s * (self.spec.max_retries + 1)
        attempt = 0
        data = orjson.dumps(payload) if self._use_aiohttp else b""
        kw = {} if check is _check_completion else {"check": check}
        while True:
            attempt += 1
            try:
                # httpx and aiohttp bound each phase; this bounds the whole exchange (a server
                # that drips bytes slowly never trips a per-read timeout).
                async with asyncio.timeout(self.spec.timeout_s):  # no extra task, unlike wait_for
                    out = await (self._send_aiohttp(url, data, **kw) if self._use_aiohttp else self._send_httpx(url, payload, **kw))
                if not isinstance(out, ExpertError):
                    return out, attempt
                err = out
            except TimeoutError:
                err = ExpertTimeout(f"expert {self.name!r} gave no complete answer within {self.spec.timeout_s:g} s", expert=self.name)
            err.attempts = attempt  # type: ignore[attr-defined]
            delay = self._retry_delay(err, attempt, deadline)
            if delay is None:
                raise err
            await asyncio.sleep(delay)

    def _retry_delay(self, err: ExpertError, attempt: int, deadline: float) -> float | None:
        """How long to wait before trying again after `err`, or None to give up."""
        if not err.retryable or attempt > self.spec.max_retries:
            return None
        delay = random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)))
        if isinstance(err, ExpertRateLimited) and err.retry_after_s is not None:
            delay = min(err.retry_after_s, MAX_RETRY_AFTER_S)
        return None if time.monotonic() + delay >= deadline else delay

    async def _guard(self, fn: Callable[[], Awaitable[list[GenerationResult]]], n: int) -> list[GenerationResult]:
        t0 = time.perf_counter()
        try:
            async with self._slots:
                return await fn()
        except ExpertError as e:
            return [GenerationResult.failed(e, latency_s=time.perf_counter() - t0, attempts=getattr(e, "attempts", 1)) for _ in range(n)]

    # ------------------------------------------------------------------ generation
    def _sampling(self, r: GenerationRequest) -> dict[str, Any]:
        p: dict[str, Any] = {
            "model": self.spec.model,
            "max_tokens": min(r.max_tokens, self.spec.max_new_tokens),
            "temperature": r.temperature,
            "top_p": r.top_p,
        }
        if r.stop:
            p["stop"] = list(r.stop)
        if r.seed is not None:
            p["seed"] = r.seed
        return p

    def _chat_payload(self, r: GenerationRequest) -> dict[str, Any]:
        payload = self._sampling(r)
        payload["messages"] = [m.openai() for m in r.messages or ()]
        if r.continue_final_message:
            # vLLM's extension: keep writing the last assistant message instead of opening a turn.
            payload.update(continue_final_message=True, add_generation_prompt=False)
        if r.passthrough:
            payload.update(r.passthrough)  # tools, tool_choice, response_format: unchanged
        return payload

    async def _chat(self, r: GenerationRequest) -> list[GenerationResult]:
        t0 = time.perf_counter()
        body, attempts = await self._post("/chat/completions", self._chat_payload(r))
        try:
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
            usage = body.get("usage") or {}
            return [
                GenerationResult(
                    text=text, prompt_tokens=int(usage.get("prompt_tokens", 0)), completion_tokens=int(usage.get("completion_tokens", 0)),
                    latency_s=time.perf_counter() - t0, finish_reason=choice.get("finish_reason"), attempts=attempts,
                    tool_calls=choice["message"].get("tool_calls") or None, stop_string=_stop_string(choice),
                )
            ]
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise ExpertBadResponse(f"expert {self.name!r} sent a chat completion without a message ({e})", expert=self.name) from e

    async def _completions(self, batch: list[GenerationRequest]) -> list[GenerationResult]:
        t0 = time.perf_counter()
        payload = self._sampling(batch[0])
        payload["max_tokens"] = max(min(r.max_tokens, self.spec.max_new_tokens) for r in batch)
        payload["prompt"] = [r.prompt for r in batch]
        body, attempts = await self._post("/completions", payload)
        choices = body["choices"]
        if len(choices) != len(batch):
            raise ExpertBadResponse(f"expert {self.name!r} returned {len(choices)} choices for {len(batch)} prompts", expert=self.name)
        usage = body.get("usage") or {}
        ordered = sorted(choices, key=lambda c: c.get("index", 0))
        texts = [str(c.get("text") or "") for c in ordered]
        # The server reports usage for the whole batch only: apportion prompt tokens by prompt
        # length and completion tokens by output length (exact in total, estimated per request).
        p_total, c_total = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        p_len = [max(1, len(r.prompt or "")) for r in batch]
        c_len = [max(1, len(t)) for t in texts]
        latency = time.perf_counter() - t0
        return [
            GenerationResult(
                text=t, prompt_tokens=round(p_total * pl / sum(p_len)), completion_tokens=round(c_total * cl / sum(c_len)),
                tokens_estimated=len(batch) > 1, latency_s=latency, finish_reason=c.get("finish_reason"), attempts=attempts,
                stop_string=_stop_string(c),
            )
            for t, c, pl, cl in zip(texts, ordered, p_len, c_len, strict=True)
        ]

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if len(requests) == 1 and requests[0].messages is not None:
            r = requests[0]
            return await self._guard(lambda: self._chat(r), 1)  # the common case, without a gather
        results: list[GenerationResult | None] = [None] * len(requests)
        tasks: list[tuple[list[int], Awaitable[list[GenerationResult]]]] = []
        prompt_groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            if r.messages is not None:
                tasks.append(([i], self._guard(lambda r=r: self._chat(r), 1)))
            else:
                key = json.dumps({k: v for k, v in self._sampling(r).items() if k != "max_tokens"}, sort_keys=True)
                prompt_groups.setdefault(key, []).append(i)
        for idxs in prompt_groups.values():
            for k in range(0, len(idxs), self.spec.max_batch_size):
                chunk = idxs[k : k + self.spec.max_batch_size]
                tasks.append((chunk, self._guard(lambda c=chunk: self._completions([requests[i] for i in c]), len(chunk))))
        outs = await asyncio.gather(*(t for _, t in tasks))
        for (idxs, _), out in zip(tasks, outs, strict=True):
            for i, res in zip(idxs, out, strict=True):
                results[i] = res
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ streaming
    async def stream(self, request: GenerationRequest, on_delta: DeltaHandler) -> GenerationResult:
        """One chat request over the server's SSE stream (`stream: true`), each delta passed on
        as it arrives. Failures before the first delta are retried as `generate` retries them;
        after it, the result carries the error and the text so far. Cancelling closes the
        connection, which makes vLLM abort the request."""
        if request.messages is None:
            return await super().stream(request, on_delta)  # plain prompts: one /completions call
        t0 = time.perf_counter()
        url = f"{self.base_url}/chat/completions"
        payload = {**self._chat_payload(request), "stream": True, "stream_options": {"include_usage": True}}
        data = json.dumps(payload, separators=(",", ":")).encode()
        deadline = time.monotonic() + self.spec.timeout_s * (self.spec.max_retries + 1)
        attempt = 0
        async with self._slots:
            while True:
                attempt += 1
                acc = ChatStreamAccumulator()
                try:
                    async with asyncio.timeout(self.spec.timeout_s):  # the whole generation, as for `generate`
                        err = await (self._stream_aiohttp(url, data, acc, on_delta) if self._use_aiohttp
                                     else self._stream_httpx(url, payload, acc, on_delta))
                except TimeoutError:
                    err = ExpertTimeout(f"expert {self.name!r} gave no complete answer within {self.spec.timeout_s:g} s", expert=self.name)
                if err is None and acc.error is not None:
                    err = ExpertServerError(f"expert {self.name!r} failed mid-stream: {acc.error}", expert=self.name)
                if err is None and not acc.done and acc.finish_reason is None:
                    err = ExpertBadResponse(f"expert {self.name!r} ended its stream without [DONE]", expert=self.name)
                if err is None:
                    usage = acc.usage
                    return GenerationResult(
                        text=acc.text, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                        completion_tokens=int(usage.get("completion_tokens", 0)), latency_s=time.perf_counter() - t0,
                        finish_reason=acc.finish_reason, attempts=attempt, tool_calls=acc.tool_calls,
                    )
                delay = None if acc.emitted else self._retry_delay(err, attempt, deadline)
                if delay is None:
                    failed = GenerationResult.failed(err, latency_s=time.perf_counter() - t0, attempts=attempt)
                    return failed.model_copy(update={"text": acc.text})  # the part the caller has seen
                await asyncio.sleep(delay)

    async def _stream_aiohttp(self, url: str, data: bytes, acc: ChatStreamAccumulator, on_delta: DeltaHandler) -> ExpertError | None:
        try:
            async with self._aiohttp_session().post(url, data=data, proxy=self._proxy) as resp:
                if resp.status != 200:
                    return map_status_parts(resp.status, resp.headers.get("Retry-After"), await resp.read(), self.name)
                if resp.content_type == "application/json":  # a server that does not stream: one whole answer
                    for delta in acc.feed_completion(_check_completion(json.loads(await resp.read()))):
                        await on_delta(delta)
                    return None
                async for line in resp.content:
                    for delta in acc.feed(line):
                        await on_delta(delta)
                    if acc.done:
                        return None
        except aiohttp.ClientError as e:
            err = map_aiohttp_error(e, self.name, url)
            err.__cause__ = e
            return err
        except ValueError as e:
            return ExpertBadResponse(f"expert {self.name!r} sent a malformed stream ({e})", expert=self.name)
        return None

    async def _stream_httpx(self, url: str, payload: dict[str, Any], acc: ChatStreamAccumulator, on_delta: DeltaHandler) -> ExpertError | None:
        try:
            client = self._pool(next(self._next_pool) % len(self._pools))
            async with client.stream("POST", url, json=payload) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    return map_status(resp, self.name)
                if resp.headers.get("content-type", "").startswith("application/json"):  # not streamed: one whole answer
                    for delta in acc.feed_completion(_check_completion(json.loads(await resp.aread()))):
                        await on_delta(delta)
                    return None
                async for line in resp.aiter_lines():
                    for delta in acc.feed(line):
                        await on_delta(delta)
                    if acc.done:
                        return None
        except httpx.HTTPError as e:
            err = map_httpx_error(e, self.name, url)
            err.__cause__ = e
            return err
        except ValueError as e:
            return ExpertBadResponse(f"expert {self.name!r} sent a malformed stream ({e})", expert=self.name)
        return None

    # ------------------------------------------------------------------ other OpenAI endpoints
    async def forward(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """`/completions` or `/embeddings` on the expert's server, with the same retries and
        timeout as generation; `model` becomes the served model id."""
        if path not in ("/completions", "/embeddings"):
            raise ValueError(f"forward() serves /completions and /embeddings, not {path}")
        async with self._slots:
            out, _ = await self._post(path, {**body, "model": self.spec.model}, check=_check_object)
        return out

    # ------------------------------------------------------------------ health and residency
    async def health(self) -> HealthStatus:
        t0 = time.perf_counter()
        try:
            h = await self._client.get(f"{self.root_url}/health", timeout=min(5.0, self.spec.timeout_s))
            if h.status_code >= 400:
                return HealthStatus(name=self.name, backend="openai", healthy=False, detail=f"/health answered {h.status_code} at {self.root_url}")
            m = await self._client.get(f"{self.base_url}/models", timeout=min(5.0, self.spec.timeout_s))
            if m.status_code >= 400:
                return HealthStatus(name=self.name, backend="openai", healthy=False, detail=f"/v1/models answered {m.status_code}: {_server_message(m.content)}")
            served = [d.get("id") for d in m.json().get("data", [])]
        except httpx.HTTPError as e:
            err = map_httpx_error(e, self.name, self.root_url)
            return HealthStatus(name=self.name, backend="openai", healthy=False, detail=err.message)
        except (ValueError, AttributeError):
            return HealthStatus(name=self.name, backend="openai", healthy=False, detail="/v1/models did not return a model list")
        ms = (time.perf_counter() - t0) * 1000
        if self.spec.model not in served:
            return HealthStatus(name=self.name, backend="openai", healthy=False, detail=f"model {self.spec.model!r} not served; served: {served}", latency_ms=ms)
        return HealthStatus(name=self.name, backend="openai", healthy=True, detail=f"serving {self.spec.model} at {self.base_url}", latency_ms=ms)

    @property
    def is_loaded(self) -> bool:
        return self._awake

    async def load(self) -> None:
        """Residency hook: wake a sleeping vLLM server (sleep mode); no-op by default."""
        if self.sleep_mode and not self._awake:
            await self._client.post(f"{self.root_url}/wake_up")
        self._awake = True

    async def unload(self) -> None:
        if self.sleep_mode and self._awake:
            await self._client.post(f"{self.root_url}/sleep", params={"level": 1})
        self._awake = False if self.sleep_mode else True


def _stop_string(choice: dict[str, Any]) -> str | None:
    """vLLM names the stop string a choice ended on in `stop_reason` (a token id or None otherwise)."""
    reason = choice.get("stop_reason")
    return reason if isinstance(reason, str) else None
