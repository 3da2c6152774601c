"""The plain types every layer shares: a query, a router's plan, fit data, expert outputs, the
answer, and the two protocols a router runs against.

    query = Query(text="Which enzyme unwinds DNA?", choices=("Helicase", "Ligase"))
    plan = Plan.single("my-router", "qwen2.5-7b", query.expert_request())
    outcome = (await router.run([query], runtime))[0]        # runtime: an `ExpertRuntime`
    outcome.final.answer, outcome.calls, outcome.steps

Nothing here imports the orchestrator: routers, the orchestrator's execution policies, the
gateway and the benchmark harness all speak these types.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from evals.answers import LETTERS, extract_choice, normalize_short_answer, strip_reasoning
from experts.types import ChatMessage, GenerationRequest, GenerationResult
from store.records import ExpertCallRecord, TraceStepRecord

if TYPE_CHECKING:
    from experts.registry import ExpertRegistry
    from store.repository import Store

SHORT_ANSWER_MAX_CHARS = 64


class RoutingError(ValueError):
    """Raised when a router cannot make a plan (bad options, nothing fitted, unknown expert)."""


class UnsupportedRequest(RoutingError):
    """Raised when a route cannot honour what the request asks (tools or response_format on a
    plan that combines several experts' outputs, or sends them to an expert without support)."""


class Query(BaseModel):
    """One question for the system.

    `prompt` is the full text sent to experts when the caller (e.g. the benchmark harness, with
    its 5-shot format) wants a specific format; otherwise `expert_request()` builds a default.
    `gold` is only ever set by the benchmark harness (the oracle reads it).
    """

    model_config = ConfigDict(frozen=True)

    text: str = Field(min_length=1)
    # One option alphabet everywhere (evals.answers.LETTERS): more options cannot be answered.
    choices: tuple[str, ...] | None = Field(default=None, max_length=len(LETTERS))
    question_id: str | None = None
    category: str | None = None
    prompt: str | None = None
    gold: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # OpenAI fields for the expert unchanged (tools, tool_choice, response_format): a plan may
    # only send them to one expert that supports them (`Plan.passthrough_problem`).
    passthrough: dict[str, Any] | None = None
    # A whole conversation (gateway chat requests): experts receive it as is; `text` (its last
    # user message) is what routers look at.
    messages: tuple[ChatMessage, ...] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    def tool_fields(self) -> list[str]:
        """What only a tool-capable expert can honour (see `GenerationRequest.tool_fields`)."""
        fields = sorted(self.passthrough or {})
        if any(m.role == "tool" or m.tool_calls for m in self.messages or ()):
            fields.append("tool messages")
        return fields

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
            "passthrough": self.passthrough,
        }
        if self.top_p is not None:
            common["top_p"] = self.top_p
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
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)  # the aggregator model's sampling temperature


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

    def passthrough_problem(self, registry: "ExpertRegistry") -> str | None:
        """Why this plan cannot honour the OpenAI fields (tools, response_format) its requests
        carry, or None when it can: it must send them to ONE expert (and its fallback) that
        supports them, whose answer is the answer (no vote, no synthesis)."""
        carried = sorted({k for a in self.assignments for k in a.request.tool_fields()})
        if not carried:
            return None
        fields = ", ".join(carried)
        if len(self.assignments) != 1 or self.aggregation.kind not in ("single", "vote", "weighted-vote"):
            return (f"router {self.router!r} combines several answers ({len(self.assignments)} experts, "
                    f"{self.aggregation.kind}), so it cannot honour {fields}; call a tool-capable expert by name")
        a = self.assignments[0]
        for name in (a.expert, a.fallback):
            if name is not None and (registry.find(name) is None or not registry.spec(name).supports_tools):
                return (f"expert {name!r} (chosen by router {self.router!r}) does not support {fields}; "
                        "use an expert with supports_tools: true")
        return None

    def summary(self) -> dict[str, Any]:
        """What a trace's route step shows: who was recruited, why, and how they combine."""
        return {
            "experts": [{"expert": a.expert, "weight": a.weight, "reason": a.reason, "fallback": a.fallback} for a in self.assignments],
            "aggregation": self.aggregation.model_dump(),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class FitOutcome:
    """One expert's outcome on one fit question. `score` is a partial score in [0, 1] (F1, a
    test pass rate) when the data has one; `quality` is what routers average."""

    correct: bool
    answer: str | None = None
    response: str = ""
    score: float | None = None
    cost_usd: float | None = None  # what the output cost, when the data logged it

    @property
    def quality(self) -> float:
        return float(self.correct) if self.score is None else self.score


@dataclass
class FitData:
    """What routers fit on: questions and every pool expert's outcome on them.

    `outcomes[expert][question_id]` holds whether the expert answered correctly (and its
    partial score, if any), its parsed answer and (optionally) its response text. Built from
    recorded outputs or from live runs.
    """

    questions: list[Query]
    outcomes: dict[str, dict[str, FitOutcome]]
    source: str = ""

    def accuracy(self, expert: str) -> float:
        rows = self.outcomes.get(expert, {})
        qids = [q.question_id for q in self.questions if q.question_id in rows]
        return sum(rows[q].quality for q in qids) / len(qids) if qids else 0.0


@dataclass
class ExpertOutput:
    """One expert's (final, after fallback) output for one assignment of a plan."""

    index: int
    expert: str
    text: str
    answer: str | None
    weight: float = 1.0
    ok: bool = True
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class FinalAnswer:
    text: str
    answer: str | None
    method: str
    tally: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    # Why the chosen output ended ("stop", "length", "tool_calls"), and its tool calls (unchanged).
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class QueryOutcome:
    """Everything one query produced: the plan, each expert's output, the answer, and the call
    and step records its trace keeps (ordered by `seq`)."""

    query: Query
    plan: Plan
    final: FinalAnswer
    outputs: list[ExpertOutput] = field(default_factory=list)
    calls: list[ExpertCallRecord] = field(default_factory=list)
    steps: list[TraceStepRecord] = field(default_factory=list)


def extract_answer(query: Query, result: GenerationResult) -> str | None:
    """The comparable answer of one output: the backend's own parse (recorded outputs), the
    option letter for multiple choice, else a normalised short answer (None for long prose)."""
    if not result.ok:
        return None
    if result.answer_parsed or result.answer is not None:
        return result.answer
    if query.is_multiple_choice:
        return extract_choice(result.text, query.n_options)
    text = strip_reasoning(result.text).strip()
    if 0 < len(text) <= SHORT_ANSWER_MAX_CHARS:
        return normalize_short_answer(text) or None
    return None


class QueryState(TypedDict, total=False):
    """LangGraph state of one query's graph. List fields merge by concatenation, so fan-out
    branches (one per expert call) each return only the records they add."""

    query: Query
    plan: Plan
    outputs: Annotated[list[ExpertOutput], operator.add]
    calls: Annotated[list[ExpertCallRecord], operator.add]
    steps: Annotated[list[TraceStepRecord], operator.add]
    final: FinalAnswer
    scratch: dict[str, Any]  # per-method working state (Router-R1's transcript, ...)


class ExpertCaller(Protocol):
    """One expert call; expert failures come back in the result's `error`, never raised."""

    async def submit_or_error(self, expert: str, request: GenerationRequest) -> GenerationResult: ...


class AnswerSink(Protocol):
    """Where a streaming caller receives the answer of ONE query while it is generated.

    `send` takes each new piece of the answer (text, and tool-call deltas exactly as the expert
    streamed them) and never blocks; `expert` names who produced it. Once `started`, nothing can
    be taken back: no fallback or retry may replace an answer the caller has begun to read."""

    @property
    def started(self) -> bool: ...

    def send(self, text: str, tool_calls: list[dict[str, Any]] | None = None, *, expert: str | None = None) -> None: ...


# Maps the text an answering call has produced so far to the part of it that is the answer so far
# (e.g. Router-R1: what follows "<answer>"); the part must only grow as the text grows.
AnswerSelector = Callable[[str], str]


class ExpertRuntime(Protocol):
    """What `Router.run` runs against; the orchestrator implements it once for chat, batch jobs
    and benchmarks (interactive or grouped scheduling, the same dispatcher and aggregation).

    * `registry`: the experts (specs, prices, backends for in-process methods such as MoT).
    * `generate`: one call through the dispatcher (circuit breaker, concurrency bounds, retries);
      concurrent calls to one expert are batched together.
    * `generate_answer`: a call whose output is (or holds) the final answer: streamed to the
      caller when it streams (`answer_sink`), else the same as `generate`. `select` picks the
      answer out of the text (Router-R1's `<answer>` tags); default: all of it.
    * `execute`: run plans made up front under the runtime's scheduling policy, aggregation
      included, returning one outcome per query (without the route step; `Router.run` adds it).
      A streaming runtime streams each plan's answering call (one expert's output, an
      aggregator's) and sends a vote's result once it is decided.
    * `answer_sink`: the streaming caller's sink (one query), or None; in-process methods that
      decode themselves (MoT) send their text to it.
    """

    registry: "ExpertRegistry"
    answer_sink: AnswerSink | None

    async def generate(self, expert: str, request: GenerationRequest) -> GenerationResult: ...

    async def generate_answer(self, expert: str, request: GenerationRequest, *, select: AnswerSelector | None = None) -> GenerationResult: ...

    async def execute(self, queries: Sequence[Query], plans: Sequence[Plan]) -> list[QueryOutcome]: ...


# The phase a fitted router reports while it embeds its fit questions (RouterContext.progress).
FIT_EMBED_PHASE = "embed fit questions"


@dataclass
class RouterContext:
    """What a router may use: the pool, the registry, an expert caller, the store, a seeded RNG."""

    pool: list[str]
    registry: "ExpertRegistry"
    dispatcher: ExpertCaller | None = None
    store: "Store | None" = None
    seed: int = 0
    services: dict[str, Any] = field(default_factory=dict)  # shared heavy helpers (embedder)
    # (phase, done, total) of a router's own long work (embedding its fit questions), or None
    progress: Callable[[str, int, int], None] | None = None

    def rng(self, salt: str = "") -> random.Random:
        return random.Random(f"{self.seed}:{salt}")

    def progress_of(self, phase: str) -> Callable[[int, int], None] | None:
        """A (done, total) callback reporting `phase` to the progress hook, or None without one."""
        hook = self.progress
        return None if hook is None else (lambda done, total: hook(phase, done, total))
