"""The router interface.

A router turns a `Query` into a `Plan`: which experts answer, with what request, and how their
outputs are combined. Routers that act in rounds (Router-R1) or in-process (MoT) override
`build_graph` (or `answer`) on the same base, so the pipeline never special-cases a method.

    class MyRouter(Router):
        name = "my-router"
        async def route(self, query: Query) -> Plan:
            return Plan.single(self.name, "qwen2.5-7b", query.expert_request())

Routers never call HTTP: they use `ctx.dispatcher` for any expert call they need themselves
(keyword tagging, policy rollouts).
"""

from __future__ import annotations

import abc
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from experts.types import ChatMessage, GenerationRequest

if TYPE_CHECKING:  # imported for types only: the orchestrator depends on routers, not the reverse
    from experts.registry import ExpertRegistry
    from store.repository import Store

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class RoutingError(ValueError):
    """Raised when a router cannot make a plan (bad options, nothing fitted, unknown expert)."""


class Query(BaseModel):
    """One question for the system.

    `prompt` is the full text sent to experts when the caller (e.g. the benchmark harness, with
    its 5-shot format) wants a specific format; otherwise `expert_request()` builds a default.
    `gold` is only ever set by the benchmark harness (the oracle reads it).
    """

    model_config = ConfigDict(frozen=True)

    text: str = Field(min_length=1)
    choices: tuple[str, ...] | None = None
    question_id: str | None = None
    category: str | None = None
    prompt: str | None = None
    gold: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # A whole conversation (gateway chat requests): experts receive it as is; `text` (its last
    # user message) is what routers look at.
    messages: tuple[ChatMessage, ...] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_multiple_choice(self) -> bool:
        return bool(self.choices)

    @property
    def n_options(self) -> int:
        return len(self.choices or ())

    def text_with_options(self) -> str:
        if not self.choices:
            return self.text
        opts = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(self.choices))
        return f"{self.text}\nOptions:\n{opts}"

    def answer_instruction(self) -> str:
        if self.choices:
            return 'Think step by step, then finish your answer with "The answer is (X)" where X is the letter of the correct option.'
        return ""

    def default_prompt(self) -> str:
        instr = self.answer_instruction()
        return f"{self.text_with_options()}\n\n{instr}".strip() if instr else self.text_with_options()

    def expert_request(
        self, *, max_tokens: int | None = None, temperature: float | None = None, seed: int | None = None
    ) -> GenerationRequest:
        """The request an expert gets for this query (the caller's prompt, or the default one)."""
        if temperature is None:
            temperature = self.temperature if self.temperature is not None else 0.0
        common = {
            "max_tokens": max_tokens or self.max_tokens or 256,
            "temperature": temperature,
            "question_id": self.question_id,
            "seed": seed if seed is not None else self.seed,
            "stop": self.stop,
        }
        if self.messages and not self.prompt:
            return GenerationRequest(messages=self.messages, **common)
        return GenerationRequest.chat(self.prompt or self.default_prompt(), **common)


class Assignment(BaseModel):
    """One expert asked one request, with why it was chosen and where to go if it fails."""

    model_config = ConfigDict(frozen=True)

    expert: str
    request: GenerationRequest
    weight: float = 1.0
    fallback: str | None = None
    reason: str = ""


AggregationKind = Literal["single", "vote", "weighted-vote", "llm", "oracle"]


class Aggregation(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: AggregationKind = "single"
    expert: str | None = None  # the aggregator model for kind == "llm"
    fallback: AggregationKind = "vote"  # used if the aggregator model fails


class Plan(BaseModel):
    """A router's decision for one query."""

    router: str
    assignments: list[Assignment]
    aggregation: Aggregation = Aggregation()
    detail: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def single(cls, router: str, expert: str, request: GenerationRequest, **kw: Any) -> "Plan":
        return cls(router=router, assignments=[Assignment(expert=expert, request=request, **kw)])

    @property
    def experts(self) -> list[str]:
        return [a.expert for a in self.assignments]


@dataclass
class FitData:
    """What routers fit on: questions and every pool expert's outcome on them.

    `outcomes[expert][question_id]` holds whether the expert answered correctly, its parsed
    answer and (optionally) its response text. Built from recorded outputs or from live runs.
    """

    questions: list[Query]
    outcomes: dict[str, dict[str, "FitOutcome"]]
    source: str = ""

    def accuracy(self, expert: str) -> float:
        rows = self.outcomes.get(expert, {})
        qids = [q.question_id for q in self.questions if q.question_id in rows]
        return sum(rows[q].correct for q in qids) / len(qids) if qids else 0.0


@dataclass(frozen=True, slots=True)
class FitOutcome:
    correct: bool
    answer: str | None = None
    response: str = ""


@dataclass
class RouterContext:
    """What a router may use: the pool, the registry, a dispatcher, the store, a seeded RNG."""

    pool: list[str]
    registry: "ExpertRegistry"
    dispatcher: Any = None  # orchestrator.dispatcher.Dispatcher (kept untyped: no import cycle)
    store: "Store | None" = None
    seed: int = 0
    services: dict[str, Any] = field(default_factory=dict)  # shared heavy helpers (embedder)

    def rng(self, salt: str = "") -> random.Random:
        return random.Random(f"{self.seed}:{salt}")


class Router(abc.ABC):
    """Base class of every routing method.

    Class flags:
      * `name`: registry key, CLI choice and gateway model id.
      * `needs_fit`: `fit()` must run before routing (the CLI and bench do it).
      * `uses_gold`: reads the gold answer (the oracle); benchmarks only, an upper bound.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = False
    uses_gold: ClassVar[bool] = False

    def __init__(self, ctx: RouterContext, **options: Any) -> None:
        if options:
            raise RoutingError(f"router {self.name!r} takes no option(s) {', '.join(sorted(options))}")
        if not ctx.pool:
            raise RoutingError(f"router {self.name!r} needs at least one expert in its pool")
        self.ctx = ctx

    @property
    def pool(self) -> list[str]:
        return self.ctx.pool

    async def fit(self, data: FitData) -> dict[str, Any]:
        """Fit on per-expert outcomes; returns a summary for reports. Default: nothing to fit."""
        return {}

    @abc.abstractmethod
    async def route(self, query: Query) -> Plan:
        """Decide which experts answer `query` and how their outputs are combined."""

    async def route_batch(self, queries: Sequence[Query]) -> list[Plan]:
        """Plan many queries at once (override to vectorise, e.g. one embedding batch)."""
        return [await self.route(q) for q in queries]

    def build_graph(self, runtime: Any) -> Any:
        """The LangGraph graph that answers one query. Default: recruit → generate → aggregate.

        Routers that act in rounds return their own compiled graph here."""
        from orchestrator.graph import build_standard_graph

        return build_standard_graph(self, runtime)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "pool": list(self.pool)}
