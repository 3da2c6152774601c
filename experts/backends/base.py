"""The one interface every expert backend implements.

    backend = build_backend(spec)          # experts.registry
    async with backend:
        results = await backend.generate([GenerationRequest.chat("2+2?")])

`generate` takes a *batch* and returns one `GenerationResult` per request, in order. A failure
of one request is reported in its result's `error`; a failure of the whole batch (server down)
is reported in every result. `generate` never raises `ExpertError`.
"""

from __future__ import annotations

import abc
from types import TracebackType

from experts.spec import ExpertSpec
from experts.types import GenerationRequest, GenerationResult, HealthStatus


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
