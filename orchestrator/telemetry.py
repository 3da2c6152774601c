"""OpenTelemetry spans for answered queries, following the GenAI semantic conventions.

    telemetry = Telemetry.from_env(os.environ)   # None unless OTEL_EXPORTER_OTLP_ENDPOINT is set
    runtime.telemetry = telemetry                 # the runtime hands it every trace the store took
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
decision first (a keyword tagger's calls inside it), a plan's expert calls together after it (the
executor runs them concurrently), a fallback after the call it replaces, an aggregator after the
calls it combines, and the calls of routers that make their own (Router-R1, MoT) one after another.

What a span never holds: API keys (neither the gateway's nor an upstream's), an upstream's address
beyond host and port, an upstream's error message (it can echo a request or a credential). Prompt
and answer text are left out too unless `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` is
true (the GenAI conventions' opt-in), which adds `gen_ai.input.messages` / `gen_ai.output.messages`
and the routers' full step details.

Export is the SDK's own: OTLP over HTTP/protobuf to `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), with the SDK's `OTEL_EXPORTER_OTLP_*`, `OTEL_BSP_*`,
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER(_ARG)`;
`OTEL_SDK_DISABLED=true` turns it off.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from experts.registry import ExpertRegistry
from experts.spec import BackendKind, ExpertSpec
from store.records import ExpertCallRecord, TraceRecord, TraceStepRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
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


class Telemetry:
    """Exports each finished trace as OTel spans (module docstring) through an SDK span processor.

    The spans describe work that is over, so they are made as the SDK's finished spans
    (`ReadableSpan`, what processors and exporters take) with the recorded times, rather than
    started and ended through a tracer: that also costs a twentieth as much (the tracer
    validates every attribute again; ours are typed here), and lets the root take the request's
    trace id. The provider is kept for what it reads from the environment (resource, sampler)
    and to shut the processor down."""

    def __init__(self, provider: "TracerProvider", processor: "SpanProcessor", *, content: bool = False) -> None:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self._finished_span = ReadableSpan
        self.provider = provider
        self.processor = processor
        self.content = content
        self._ids = RandomIdGenerator()
        self._scope = InstrumentationScope(SCOPE)

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

        # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, which win over ours;
        # the provider reads OTEL_TRACES_SAMPLER(_ARG)
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
        return cls(provider, processor, content=content)

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
            logger.exception("could not build the OTel spans of trace %s", trace.id)

    def _export(self, trace: TraceRecord, registry: ExpertRegistry, end_ns: int | None) -> None:
        end = end_ns if end_ns is not None else time.time_ns()
        start = end - int(trace.latency_s * NS)
        trace_id = _trace_id_of(trace.id) or self._ids.generate_trace_id()
        root_name = f"invoke_workflow {trace.router}"
        if not self.provider.sampler.should_sample(None, trace_id, root_name, SpanKind.INTERNAL).decision.is_sampled():
            return
        root = self._context(trace_id)
        spans = [self._span(root_name, root, None, SpanKind.INTERNAL, start, end, self._root_attributes(trace), trace.status != "ok")]
        cursor, plan = start, root
        for i, step in enumerate(s for s in trace.steps if s.kind == "route"):
            ctx, step_end = self._context(trace_id), min(end, cursor + int(step.duration_s * NS))
            spans.append(self._span(f"plan {trace.router}", ctx, root, SpanKind.INTERNAL, cursor, step_end,
                                    self._plan_attributes(trace.router, step), False))
            if i == 0:
                plan, cursor = ctx, step_end
        for call, (c_start, c_end) in zip(trace.calls, _call_times(trace.calls, start, cursor, end), strict=True):
            spec = _spec(registry, call.expert)
            spans.append(self._span(f"chat {spec.model if spec else call.expert}", self._context(trace_id),
                                    plan if call.role in ROUTE_DURING_PLAN else root, _call_kind(spec), c_start, c_end,
                                    self._call_attributes(call, spec), call.error_kind is not None))
        for span in spans:
            self.processor.on_end(span)

    def _context(self, trace_id: int) -> SpanContext:
        return SpanContext(trace_id, self._ids.generate_span_id(), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))

    def _span(self, name: str, context: SpanContext, parent: SpanContext | None, kind: SpanKind, start: int, end: int,
              attributes: dict[str, Any], failed: bool) -> "ReadableSpan":
        return self._finished_span(name, context=context, parent=parent, resource=self.provider.resource, attributes=attributes,
                            kind=kind, status=Status(StatusCode.ERROR) if failed else Status(StatusCode.UNSET),
                            start_time=start, end_time=end, instrumentation_scope=self._scope)

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
    """The request's id as an OTel trace id: a UUID is 128 bits, as a trace id is."""
    try:
        return uuid.UUID(trace_id).int or None
    except ValueError:  # not a UUID: the trace gets a random id, orchestrator.trace_id still says it
        return None


