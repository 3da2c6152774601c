"""OpenTelemetry spans for answered queries, following the GenAI semantic conventions.

    telemetry = Telemetry.from_env(os.environ)   # None unless OTEL_EXPORTER_OTLP_ENDPOINT is set
    runtime.telemetry = telemetry                 # the runtime hands it every trace it records
    ...
    telemetry.shutdown()                          # flushes what is still queued

The spans are built from the trace record the runtime already writes to the store, once the query
is over, so tracing adds nothing to the request path beyond building them (and nothing at all when
off: then there is no `Telemetry`, no tracer provider, and the SDK is not even imported). One trace
per query:

* `invoke_workflow {router}` (the root; `gen_ai.operation.name=invoke_workflow`): the router, the
  experts that answered, tokens, cost, status, and `orchestrator.trace_id`, the id the gateway
  returns (`x-orchestrator-trace-id`). That id is a UUID, 128 bits as an OTel trace id is, so it is
  also the OTel trace id: the gateway's id finds the trace in the receiver as it is.
* `plan {router}` per route decision (`gen_ai.operation.name=plan`): who was recruited, with the
  router's reasons and weights.
* `chat {model}` per expert call (`gen_ai.operation.name=chat`): provider, requested and answering
  model, input and output tokens, finish reason, cost, attempts, fallback, error kind.

The record keeps durations, not start times, so start times are laid out from them: the route
decision first, a plan's expert calls together after it (the executor runs them concurrently), a
fallback after the call it replaces, an aggregator after the calls it combines, and the calls of
routers that make their own (Router-R1, MoT, keyword taggers) one after another.

What a span never holds: API keys (neither the gateway's nor an upstream's), an upstream's address
beyond host and port, an upstream's error message (it can echo a request or a credential). Prompt
and answer text are left out too unless `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` is
true (the GenAI conventions' opt-in), which adds `gen_ai.input.messages` / `gen_ai.output.messages`
and the routers' full step details.

Export is the SDK's own: OTLP over HTTP/protobuf to `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), with the SDK's `OTEL_EXPORTER_OTLP_*`, `OTEL_BSP_*`,
`OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`; `OTEL_SDK_DISABLED=true` turns it off.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import trace as otel
from opentelemetry.trace import SpanKind, Status, StatusCode

from experts.registry import ExpertRegistry
from experts.spec import BackendKind, ExpertSpec
from store.records import ExpertCallRecord, TraceRecord, TraceStepRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger("orchestrator.telemetry")

SERVICE_NAME = "llm-orchestrator"
SCOPE = "orchestrator"
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# Values the GenAI instrumentations accept for the opt-in (plain true, or the newer span modes).
CAPTURE_VALUES = frozenset({"true", "1", "yes", "span_only", "span_and_event"})
# Providers as the conventions name them: the OpenAI API flavour for OpenAI-compatible servers
# (server.address says which one), our own names for in-process and replayed experts.
PROVIDERS = {BackendKind.OPENAI: "openai", BackendKind.LOCAL: "orchestrator.local", BackendKind.RECORDED: "orchestrator.recorded"}
# Plan details kept by default: labels from the routers' own vocabularies, never raw query text
# (Symbolic-MoE's raw `keywords` are words of the query: content, so opt-in only).
LABEL_KEYS = frozenset({"predicted_category", "category", "mapped", "tagger", "primary", "active", "policy"})
ROUTE_DURING_PLAN = frozenset({"keyword"})  # calls a router makes while it decides (Symbolic-MoE's tagger)
NS = 1_000_000_000


def tracing_configured(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for OTLP export (the SDK's own variables)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip())


def capture_content(env: Mapping[str, str]) -> bool:
    return env.get(CAPTURE_CONTENT_ENV, "").strip().lower() in CAPTURE_VALUES


class _RequestTraceIds:
    """Trace ids for the SDK: the request's own id for its root span, random ones otherwise.

    Set right before the root span starts and taken by it, in the same synchronous call
    (`Telemetry.export` never awaits), so no other span can take it."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

        self._random = RandomIdGenerator()
        self.next_trace_id: int | None = None

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        tid, self.next_trace_id = self.next_trace_id, None
        return tid or self._random.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return True  # a UUID4 is random too (W3C trace-context's random flag)


class Telemetry:
    """Exports each finished trace as OTel spans (module docstring); owns its tracer provider."""

    def __init__(self, provider: "TracerProvider", ids: _RequestTraceIds, *, content: bool = False) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(SCOPE)
        self.ids = ids
        self.content = content

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Telemetry | None":
        """OTLP/HTTP export as the SDK's environment variables say; None when not asked for."""
        if not tracing_configured(env):
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return cls.with_exporter(OTLPSpanExporter(), content=capture_content(env))

    @classmethod
    def with_exporter(cls, exporter: "SpanExporter", *, content: bool = False, batch: bool = True) -> "Telemetry":
        """Spans to `exporter`: through the SDK's batching processor (a background thread; the
        request never waits for the receiver), or one by one (`batch=False`, for tests)."""
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        ids = _RequestTraceIds()
        # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, which win over ours
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}), id_generator=ids)  # type: ignore[arg-type]
        provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
        return cls(provider, ids, content=content)

    def shutdown(self) -> None:
        """Flush the queued spans and stop the exporter (bounded by the SDK's export timeout)."""
        self.provider.shutdown()

    # ------------------------------------------------------------------ spans
    def export(self, trace: TraceRecord, registry: ExpertRegistry, *, end_ns: int | None = None) -> None:
        """The trace's spans, its root ending at `end_ns` (now by default: it is exported as its query ends).
        Never raises: a span that cannot be built must not fail the request it describes."""
        try:
            self._export(trace, registry, end_ns)
        except Exception:  # noqa: BLE001 - tracing is best effort; the trace itself is in the store
            self.ids.next_trace_id = None
            logger.exception("could not build the OTel spans of trace %s", trace.id)

    def _export(self, trace: TraceRecord, registry: ExpertRegistry, end_ns: int | None) -> None:
        end = end_ns if end_ns is not None else time.time_ns()
        start = end - int(trace.latency_s * NS)
        self.ids.next_trace_id = _trace_id_of(trace.id)
        root = self.tracer.start_span(f"invoke_workflow {trace.router}", kind=SpanKind.INTERNAL, start_time=start,
                                      attributes=self._root_attributes(trace), context=otel.set_span_in_context(otel.INVALID_SPAN))
        self.ids.next_trace_id = None  # not taken (an SDK that had a parent): never leak it to another span
        under_root = otel.set_span_in_context(root)
        route_steps = [s for s in trace.steps if s.kind == "route"]
        cursor = start
        plan_ctx = under_root
        for i, step in enumerate(route_steps):
            step_end = min(end, cursor + int(step.duration_s * NS))
            span = self.tracer.start_span(f"plan {trace.router}", kind=SpanKind.INTERNAL, start_time=cursor,
                                          attributes=self._plan_attributes(trace.router, step), context=under_root)
            span.end(step_end)
            if i == 0:
                plan_ctx, cursor = otel.set_span_in_context(span), step_end
        for call, (c_start, c_end) in zip(trace.calls, _call_times(trace.calls, start, cursor, end), strict=True):
            spec = _spec(registry, call.expert)
            ctx = plan_ctx if call.role in ROUTE_DURING_PLAN else under_root
            span = self.tracer.start_span(f"chat {spec.model if spec else call.expert}", kind=_call_kind(spec), start_time=c_start,
                                          attributes=self._call_attributes(call, spec), context=ctx)
            if call.error_kind:
                span.set_status(Status(StatusCode.ERROR))
            span.end(c_end)
        if trace.status != "ok":
            root.set_status(Status(StatusCode.ERROR))
        root.end(end)

    def _root_attributes(self, trace: TraceRecord) -> dict[str, Any]:
        experts = list(dict.fromkeys(c.expert for c in trace.calls if c.error_kind is None))
        a: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": trace.router,
            "gen_ai.usage.input_tokens": trace.prompt_tokens,
            "gen_ai.usage.output_tokens": trace.completion_tokens,
            "orchestrator.trace_id": trace.id,
            "orchestrator.router": trace.router,
            "orchestrator.experts": experts,
            "orchestrator.cost_usd": trace.cost_usd,
            "orchestrator.status": trace.status,
            "orchestrator.latency_s": trace.latency_s,
        }
        if trace.plan is not None:
            a["orchestrator.plan.experts"] = [str(e) for e in trace.plan.experts]
            if kind := trace.plan.aggregation.get("kind"):
                a["orchestrator.aggregation"] = str(kind)
        if trace.owner:
            a["orchestrator.key_id"] = trace.owner  # the key's id (its row), never the key
        meta = trace.query_meta
        for field, attr in (("max_tokens", "gen_ai.request.max_tokens"), ("temperature", "gen_ai.request.temperature"),
                            ("top_p", "gen_ai.request.top_p"), ("seed", "gen_ai.request.seed")):
            if isinstance(meta.get(field), (int, float)):
                a[attr] = meta[field]
        if trace.status != "ok":
            a["error.type"] = trace.status if trace.status == "cancelled" else _error_type(trace.calls)
        if self.content:
            a["gen_ai.input.messages"] = _messages("user", trace.query_text)
            if trace.answer_text:
                a["gen_ai.output.messages"] = _messages("assistant", trace.answer_text)
        return a

    def _plan_attributes(self, router: str, step: TraceStepRecord) -> dict[str, Any]:
        d = step.detail
        a: dict[str, Any] = {"gen_ai.operation.name": "plan", "gen_ai.agent.name": router, "orchestrator.router": router}
        recruited = d.get("experts")
        if isinstance(recruited, list) and all(isinstance(x, dict) for x in recruited):  # a plan's summary
            a["orchestrator.route.experts"] = [str(x.get("expert")) for x in recruited]
            a["orchestrator.route.weights"] = [float(x.get("weight") or 0.0) for x in recruited]
            # the router's why: skills, category and confidence, scores (labels, not the prompt)
            a["orchestrator.route.reasons"] = [str(x.get("reason") or "") for x in recruited]
            agg = d.get("aggregation")
            if isinstance(agg, dict) and agg.get("kind"):
                a["orchestrator.aggregation"] = str(agg["kind"])
        elif isinstance(d.get("order"), list):  # a cascade's ranking
            a["orchestrator.route.experts"] = [str(e) for e in d["order"]]
        elif d.get("expert") is not None:  # one decision of a multi-round policy (Router-R1)
            a["orchestrator.route.experts"] = [str(d["expert"])]
            if d.get("outcome") is not None:
                a["orchestrator.route.outcome"] = str(d["outcome"])
        inner = d.get("detail") if isinstance(d.get("detail"), dict) else {}
        for key, value in inner.items():  # the plan's numbers and labels: category, confidence, skills
            if isinstance(value, (bool, int, float)) or (key in LABEL_KEYS and isinstance(value, str)):
                a[f"orchestrator.route.{key}"] = value
            elif key in LABEL_KEYS and isinstance(value, list) and all(isinstance(v, str) for v in value):
                a[f"orchestrator.route.{key}"] = value
        scores = d.get("scores", inner.get("scores"))
        if isinstance(scores, dict) and scores and all(isinstance(v, (int, float)) for v in scores.values()):
            a["orchestrator.route.scored_experts"] = [str(k) for k in scores]
            a["orchestrator.route.scores"] = [float(v) for v in scores.values()]
        if self.content:  # the full detail can quote the query (Router-R1's sub-queries, MoT's prompt)
            a["orchestrator.route.detail"] = json.dumps(d, default=str)[:20_000]
        return a

    def _call_attributes(self, call: ExpertCallRecord, spec: ExpertSpec | None) -> dict[str, Any]:
        model = spec.model if spec else call.expert
        a: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDERS.get(spec.backend, str(spec.backend)) if spec else "orchestrator",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": call.prompt_tokens,
            "gen_ai.usage.output_tokens": call.completion_tokens,
            "orchestrator.expert": call.expert,
            "orchestrator.role": call.role,
            "orchestrator.cost_usd": call.cost_usd,
            "orchestrator.attempts": call.attempts,
            "orchestrator.tokens_estimated": call.tokens_estimated,
        }
        if call.error_kind is None:
            a["gen_ai.response.model"] = model
        else:
            a["error.type"] = call.error_kind  # the kind only: the message can echo an upstream's body
        if call.finish_reason:
            a["gen_ai.response.finish_reasons"] = [call.finish_reason]
        if call.fallback_for:
            a["orchestrator.fallback_for"] = call.fallback_for
        if spec is not None and spec.base_url:
            host, port = _server(spec.base_url)
            if host:
                a["server.address"] = host
            if port:
                a["server.port"] = port
        if self.content and call.output:
            a["gen_ai.output.messages"] = _messages("assistant", call.output, call.finish_reason)
        return a


def _call_times(calls: list[ExpertCallRecord], start: int, routed: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of each call, laid out from durations (module docstring), within the root."""
    out: list[tuple[int, int]] = []
    ends: dict[str, int] = {}  # the last end of each expert's call
    seq_cursor, in_plan, plan_end = routed, start, routed
    for c in calls:
        dur = int(c.latency_s * NS)
        if c.role in ROUTE_DURING_PLAN:
            s = in_plan
            in_plan = s + dur
        elif c.role == "expert" and c.fallback_for is None:
            s = routed  # a plan's assignments run together once routed
        elif c.role == "expert":
            s = ends.get(c.fallback_for or "", routed)  # after the call it replaces
        elif c.role == "aggregator":
            s = plan_end
        else:  # policy, callee, ...: one after another
            s = seq_cursor
        s = min(max(s, start), end)
        e = min(s + dur, end)
        out.append((s, e))
        ends[c.expert] = e
        if c.role == "expert":
            plan_end = max(plan_end, e)
        elif c.role not in ROUTE_DURING_PLAN:
            seq_cursor = e
    return out


def _spec(registry: ExpertRegistry, expert: str) -> ExpertSpec | None:
    try:
        return registry.spec(expert)
    except KeyError:  # removed from the registry since it answered
        return None


def _call_kind(spec: ExpertSpec | None) -> SpanKind:
    # CLIENT for a call to a server; the conventions allow INTERNAL for a model in this process
    return SpanKind.CLIENT if spec is not None and spec.backend == BackendKind.OPENAI else SpanKind.INTERNAL


def _server(base_url: str) -> tuple[str | None, int | None]:
    """Host and port only: a URL's user info (user:password@) or query can carry a credential."""
    parts = urlsplit(base_url)
    return parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def _error_type(calls: list[ExpertCallRecord]) -> str:
    kinds = sorted({c.error_kind for c in calls if c.error_kind})
    return ",".join(kinds) if kinds else "_OTHER"


def _messages(role: str, text: str, finish_reason: str | None = None) -> str:
    """The conventions' message schema as JSON (the SDK's attributes take no nested values)."""
    msg: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": text}]}
    if role == "assistant":
        msg["finish_reason"] = finish_reason or "stop"
    return json.dumps([msg])


def _trace_id_of(trace_id: str) -> int | None:
    try:
        return uuid.UUID(trace_id).int or None
    except ValueError:  # not a UUID: the span gets a random trace id, orchestrator.trace_id still says it
        return None


