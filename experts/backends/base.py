"""The one interface every expert backend implements.

    backend = build_backend(spec)          # experts.registry
    async with backend:
        results = await backend.generate([GenerationRequest.chat("2+2?")])

`generate` takes a *batch* and returns one `GenerationResult` per request, in order. A failure
of one request is reported in its result's `error`; a failure of the whole batch (server down)
is reported in every result. `generate` never raises `ExpertError`.

`stream` generates ONE request, handing each piece of the answer to a callback as the model
produces it, and returns the same complete result `generate` would (failures included):

    result = await backend.stream(GenerationRequest.chat("2+2?"), on_delta)

Cancelling the caller stops the generation upstream (the HTTP stream is closed; an in-process
model stops at its next token).
"""

from __future__ import annotations

import abc
from types import TracebackType

from typing import Any

from experts.errors import ExpertRequestRejected
from experts.spec import ExpertSpec
from experts.types import DeltaHandler, GenerationDelta, GenerationRequest, GenerationResult, HealthStatus


class ExpertBackend(abc.ABC):
    """Base class of the `openai`, `local` and `recorded` backends."""

    def __init__(self, spec: ExpertSpec) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @abc.abstractmethod
    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Generate for a batch of requests; one result per request, errors included."""

    async def stream(self, request: GenerationRequest, on_delta: DeltaHandler) -> GenerationResult:
        """Generate one request, passing the answer to `on_delta` as it is produced; never raises
        `ExpertError`, and never calls `on_delta` after a failure.

        Default, for backends whose output exists at once (recorded replays): generate, then hand
        over the whole answer as one delta."""
        from experts.backends.streaming import tool_call_deltas

        (result,) = await self.generate([request])
        if result.ok and (result.text or result.tool_calls):
            calls = tool_call_deltas(result.tool_calls) if result.tool_calls else None
            await on_delta(GenerationDelta(text=result.text, tool_calls=calls))
        return result

    async def forward(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Another OpenAI endpoint (`/completions`, `/embeddings`) answered by the expert's own
        server, the body passed unchanged but for `model`; raises `ExpertError`. Only servers
        have such endpoints: in-process and recorded experts refuse."""
        raise ExpertRequestRejected(f"expert {self.name!r} ({self.spec.backend.value} backend) does not serve {path}; "
                                    "only experts on an OpenAI-compatible server do", expert=self.name, status_code=400)

    @abc.abstractmethod
    async def health(self) -> HealthStatus:
        """Probe the expert cheaply (no generation when the backend can avoid it)."""

    # Residency: models that must be swapped in and out of limited memory.
    @property
    def is_loaded(self) -> bool:
        return True

    async def load(self) -> None:
        """Bring the model into memory (local: load weights; openai: wake hook). Idempotent."""

    async def unload(self) -> None:
        """Release the model's memory (local: drop weights; openai: sleep hook). Idempotent."""

    async def aclose(self) -> None:
        await self.unload()

    async def __aenter__(self) -> "ExpertBackend":
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
