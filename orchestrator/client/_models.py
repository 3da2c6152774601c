"""Typed results of the client. The gateway's wire models (`orchestrator.protocol`) are reused
where they exist, so the client and the gateway cannot drift apart."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from experts.spec import ExpertSpec
from orchestrator.protocol import (
    BatchObject,
    BatchRequestItem,
    BatchResultItem,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ModelCard,
)
from store.records import TraceRecord


class ExpertInfo(ExpertSpec):
    """A registered expert with its last health probe."""

    model_config = ConfigDict(extra="ignore")

    healthy: bool | None = None
    health_detail: str = ""


class ExpertDeleted(BaseModel):
    id: str
    object: str = "expert"
    deleted: bool


class Readiness(BaseModel):
    status: str
    problems: list[str] = []
    experts: dict[str, bool] = {}

    @property
    def ready(self) -> bool:
        return self.status == "ready"


class ChatCompletion(ChatCompletionResponse):
    """A chat completion with the gateway's extensions (`experts`, `router`, `trace_id`)."""

    @property
    def text(self) -> str:
        return self.choices[0].message.content if self.choices else ""


__all__ = [
    "BatchObject",
    "BatchRequestItem",
    "BatchResultItem",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ExpertDeleted",
    "ExpertInfo",
    "ExpertSpec",
    "ModelCard",
    "Readiness",
    "TraceRecord",
]
