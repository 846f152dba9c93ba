"""How each implementation is switched on, inside its own subprocess.

All of them export to the same kind of pipeline, built by ``pipeline()``: an SDK TracerProvider
with a BatchSpanProcessor feeding ``CountingExporter`` (counts spans, keeps none), set as the global
provider and passed explicitly where the tracer takes one; and an SDK MeterProvider with one
``InMemoryMetricReader`` (instruments record into the SDK's aggregations; the reader is never
collected during timing), also global. The queue is large (``QUEUE``) so no span is dropped and
the span count is exact.

``setup(impl, tp, mp, exporter)`` turns the implementation on and returns ``Hooks``: the
LangChain config to pass to each invocation (handler-based tracers) and an optional function run
after each invocation (the floors' spans and metric records).

Two floors. ``floor`` is the issue's: a do-nothing handler plus as many bare spans (no attributes)
as llmtrace exports. ``floor-telemetry`` is the same handler plus, through the bare SDK, exactly
the telemetry llmtrace emits per invocation (recorded by a probe run of ``llmtrace-instrument``:
every span with its name, kind, parent, attributes and events, and every metric record with its
instrument and attributes), so ``llmtrace - floor-telemetry`` is what llmtrace's own code costs
beyond the SDK work its output needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

QUEUE = 1 << 18
PROBED_COUNTER = "probed counter"

# implementation -> virtualenv under bench/.venvs
ENV_OF = {
    "none": "llmtrace",
    "floor": "llmtrace",
    "floor-telemetry": "llmtrace",
    "llmtrace-handler": "llmtrace",
    "llmtrace-instrument": "llmtrace",
    "llmtrace-content": "llmtrace",
    "llmtrace-traces-only": "llmtrace",
    "openinference": "openinference",
    "openllmetry": "openllmetry",
    "langfuse": "langfuse",
    "openlit": "openlit",
    "otel-genai": "otel-genai",
}
OURS = ("llmtrace-handler", "llmtrace-instrument", "llmtrace-content", "llmtrace-traces-only")
PEERS = ("openinference", "openllmetry", "langfuse", "openlit", "otel-genai")
FLOORS = ("floor", "floor-telemetry")
IMPLS = ("none", *FLOORS, *OURS, *PEERS)

# Workloads an implementation does not cover, with the reason (shown as n/a in the tables).
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("llmtrace-handler", "llamaindex_query"): "a LangChain callback handler",
    ("langfuse", "llamaindex_query"): "Langfuse v3+ has no LlamaIndex integration "
    "(its docs point to OpenInference)",
    ("otel-genai", "llamaindex_query"): "LangChain-only package",
}
DESCRIPTIONS = {
    "none": "no instrumentation",
    "floor": "do-nothing LangChain callback handler in config / do-nothing LlamaIndex dispatcher span "
    "and event handlers, plus the same number of bare OTel SDK spans as llmtrace-instrument emits",
    "floor-telemetry": "the same do-nothing handlers, plus exactly the telemetry llmtrace-instrument emits "
    "per invocation made with the bare OTel SDK: the same spans (names, kinds, parents, attributes, "
    "events) and the same metric records (instruments, attributes); the SDK cost of llmtrace's output",
    "llmtrace-handler": "`LLMTraceCallbackHandler(tracer_provider, meter_provider)` in `config['callbacks']`",
    "llmtrace-instrument": "`llmtrace.instrument(tracer_provider=..., meter_provider=...)` (default "
    "settings: no content captured)",
    "llmtrace-traces-only": "as llmtrace-instrument, with `meter_provider=NoOpMeterProvider()`: the same "
    "spans, no metric records (what llmtrace costs an application that exports traces only)",
    "llmtrace-content": "as llmtrace-instrument, with `llmtrace.configure(capture_content='SPAN_ONLY')` "
    "(content on spans, like the peers' defaults)",
    "openinference": "`openinference-instrumentation-langchain` / `-llama-index` "
    "`Instrumentor().instrument(tracer_provider=...)`",
    "openllmetry": "`opentelemetry-instrumentation-langchain` / `-llamaindex` (Traceloop) `instrument()`",
    "langfuse": "`langfuse.langchain.CallbackHandler` in config; `Langfuse(tracer_provider=, "
    "span_exporter=)` so its own BatchSpanProcessor (LangfuseSpanProcessor) feeds the counting "
    "exporter and nothing is sent anywhere",
    "openlit": "`openlit.init(pricing_json=<local empty table>)`, which reuses the global tracer and meter "
    "providers; a global SDK LoggerProvider with no processor receives its events",
    "otel-genai": "official `opentelemetry-instrumentation-genai-langchain` "
    "`LangChainInstrumentor().instrument()`",
}


class CountingExporter(SpanExporter):
    """Counts exported spans and discards them (keeps them when ``keep`` is set, for the probe)."""

    def __init__(self) -> None:
        self.count = 0
        self.keep = False
        self.kept: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        if self.keep:
            self.kept.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@dataclass
class Hooks:
    config: dict[str, Any] | None = None
    after: Callable[[], None] | None = None
    notes: list[str] = field(default_factory=list)


def pipeline(
    with_processor: bool = True, reader: InMemoryMetricReader | None = None
) -> tuple[TracerProvider, MeterProvider, CountingExporter]:
    exporter = CountingExporter()
    tp = TracerProvider()
    if with_processor:
        tp.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=QUEUE, max_export_batch_size=512))
    if reader is None:
        mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    else:  # the probe: counters as histograms, so the number of records per attribute set shows
        histogram = ExplicitBucketHistogramAggregation()
        counted = View(instrument_type=Counter, description=PROBED_COUNTER, aggregation=histogram)
        mp = MeterProvider(metric_readers=[reader], views=[counted])
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(mp)
    return tp, mp, exporter


def _bare_spans(tp: TracerProvider, spans: int) -> Callable[[], None]:
    """The issue's floor: one root span and ``spans - 1`` children, no attributes."""
    tracer = tp.get_tracer("bench.floor")

    def after() -> None:
        if spans <= 0:
            return
        root = tracer.start_span("floor")
        ctx = trace.set_span_in_context(root)
        for _ in range(spans - 1):
            tracer.start_span("floor.child", context=ctx).end()
        root.end()

    return after


def _same_telemetry(tp: TracerProvider, mp: MeterProvider, script: dict[str, Any]) -> Callable[[], None]:
    """Replay one invocation's telemetry (see ``telemetry_script``) with the bare SDK."""
    tracer = tp.get_tracer("bench.floor-telemetry")
    meter = mp.get_meter("bench.floor-telemetry")
    spans = script.get("spans", [])
    records: list[tuple[Callable[..., None], float, dict[str, Any]]] = []
    made: dict[tuple[str, str, str], Any] = {}
    for m in script.get("metrics", []):
        key = (m["name"], m["kind"], m["unit"])
        if key not in made:
            create = meter.create_histogram if m["kind"] == "histogram" else meter.create_counter
            made[key] = create(m["name"], unit=m["unit"])
        instrument = made[key]
        fn = instrument.record if m["kind"] == "histogram" else instrument.add
        records += [(fn, m["value"], m["attributes"])] * m["per_invocation"]

    def after() -> None:
        live: list[Any] = []
        for s in spans:
            parent = s["parent"]
            ctx = trace.set_span_in_context(live[parent]) if parent is not None else None
            live.append(
                tracer.start_span(
                    s["name"], context=ctx, kind=SpanKind[s["kind"]], attributes=s["attributes"]
                )
            )
        for span, s in zip(reversed(live), reversed(spans), strict=True):
            for name, attributes in s["events"]:
                span.add_event(name, attributes)
            if s["error"]:
                span.set_status(Status(StatusCode.ERROR, s["error"]))
            span.end()
        for fn, value, attributes in records:
            fn(value, attributes)

    return after


def telemetry_script(
    spans: Sequence[ReadableSpan], reader: InMemoryMetricReader, invocations: int
) -> dict[str, Any]:
    """One invocation's telemetry, JSON-ready: ``spans`` (the spans of the last trace, parents
    first) and ``metrics`` (every data point, as records per invocation with their mean value)."""
    last = (
        [s for s in spans if s.context is not None and s.context.trace_id == spans[-1].context.trace_id]
        if spans
        else []
    )
    last.sort(key=lambda s: s.start_time or 0)
    index = {s.context.span_id: i for i, s in enumerate(last) if s.context is not None}
    out_spans = [
        {
            "name": s.name,
            "kind": s.kind.name,
            "parent": index.get(s.parent.span_id) if s.parent is not None else None,
            "attributes": {
                k: list(v) if isinstance(v, tuple) else v for k, v in (s.attributes or {}).items()
            },
            "events": [[e.name, dict(e.attributes or {})] for e in s.events],
            "error": s.status.description if s.status.status_code == StatusCode.ERROR else None,
        }
        for s in last
    ]
    metrics_out: list[dict[str, Any]] = []
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    if not isinstance(point, HistogramDataPoint):
                        continue
                    count, total = point.count, point.sum
                    histogram = metric.description != PROBED_COUNTER
                    per = round(count / invocations)
                    if per:
                        metrics_out.append(
                            {
                                "name": metric.name,
                                "kind": "histogram" if histogram else "counter",
                                "unit": metric.unit or "",
                                "attributes": dict(point.attributes or {}),
                                "value": total / max(count, 1),
                                "per_invocation": per,
                            }
                        )
    return {"spans": out_spans, "metrics": metrics_out}


def _floor(workload: str, after: Callable[[], None]) -> Hooks:
    """The framework's do-nothing handler(s), and ``after`` run after each invocation."""
    if workload == "llamaindex_query":
        from llama_index.core.instrumentation import get_dispatcher
        from llama_index.core.instrumentation.event_handlers import BaseEventHandler
        from llama_index.core.instrumentation.span_handlers import BaseSpanHandler

        class NoopSpanHandler(BaseSpanHandler[Any]):
            def new_span(self, *args: Any, **kwargs: Any) -> None:
                return None

            def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
                return None

            def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
                return None

        class NoopEventHandler(BaseEventHandler):
            def handle(self, event: Any, **kwargs: Any) -> None:
                return None

        dispatcher = get_dispatcher()
        dispatcher.add_span_handler(NoopSpanHandler())
        dispatcher.add_event_handler(NoopEventHandler())
        return Hooks(after=after)

    from langchain_core.callbacks import BaseCallbackHandler

    class NoopHandler(BaseCallbackHandler):
        """Receives every callback (the base class's methods do nothing)."""

    return Hooks(config={"callbacks": [NoopHandler()]}, after=after)


def setup(
    impl: str,
    workloads: Sequence[str],
    floor_spans: dict[str, int] | None = None,
    floor_scripts: dict[str, dict[str, Any]] | None = None,
    reader: InMemoryMetricReader | None = None,
) -> tuple[dict[str, Hooks], TracerProvider, MeterProvider, CountingExporter]:
    """Switch ``impl`` on for the frameworks ``workloads`` use; return per-workload hooks, pipeline."""
    if impl == "langfuse":
        # Langfuse adds its own BatchSpanProcessor (LangfuseSpanProcessor) to the provider it is
        # given; hand it the counting exporter so spans are batched and counted exactly once.
        tp, mp, exporter = pipeline(with_processor=False)
    else:
        tp, mp, exporter = pipeline(reader=reader)
    lc = any(w != "llamaindex_query" for w in workloads)
    li = "llamaindex_query" in workloads
    shared = Hooks()
    hooks: dict[str, Hooks] = {}
    if impl == "none":
        pass
    elif impl == "floor":
        hooks = {w: _floor(w, _bare_spans(tp, (floor_spans or {}).get(w, 0))) for w in workloads}
    elif impl == "floor-telemetry":
        hooks = {w: _floor(w, _same_telemetry(tp, mp, (floor_scripts or {}).get(w, {}))) for w in workloads}
    elif impl == "llmtrace-handler":
        from llmtrace_langchain import LLMTraceCallbackHandler

        shared.config = {"callbacks": [LLMTraceCallbackHandler(tracer_provider=tp, meter_provider=mp)]}
    elif impl in ("llmtrace-instrument", "llmtrace-content", "llmtrace-traces-only"):
        import llmtrace

        if impl == "llmtrace-content":
            # The global providers are already set, so configure() only applies settings.
            llmtrace.configure(capture_content="SPAN_ONLY")
        meters = metrics.NoOpMeterProvider() if impl == "llmtrace-traces-only" else mp
        shared.notes.append(f"instrumented: {llmtrace.instrument(tracer_provider=tp, meter_provider=meters)}")
    elif impl == "openinference":
        if lc:
            from openinference.instrumentation.langchain import LangChainInstrumentor

            LangChainInstrumentor().instrument(tracer_provider=tp)
        if li:
            from openinference.instrumentation.llama_index import LlamaIndexInstrumentor

            LlamaIndexInstrumentor().instrument(tracer_provider=tp)
    elif impl == "openllmetry":
        if lc:
            from opentelemetry.instrumentation.langchain import LangchainInstrumentor

            LangchainInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
        if li:
            from opentelemetry.instrumentation.llamaindex import LlamaIndexInstrumentor as OLLlamaIndex

            OLLlamaIndex().instrument(tracer_provider=tp, meter_provider=mp)
    elif impl == "langfuse":
        from langfuse import Langfuse
        from langfuse.langchain import CallbackHandler

        Langfuse(
            public_key="pk-lf-bench",
            secret_key="sk-lf-bench",
            base_url="http://127.0.0.1:9",  # never contacted: spans go to span_exporter
            tracer_provider=tp,
            span_exporter=exporter,
        )
        shared.config = {"callbacks": [CallbackHandler(public_key="pk-lf-bench")]}
    elif impl == "openlit":
        import openlit
        from opentelemetry import _logs
        from opentelemetry.sdk._logs import LoggerProvider

        # openlit reuses the global providers it finds; give it a logger provider with no
        # processor so its events go nowhere (instead of an OTLP exporter it would create).
        _logs.set_logger_provider(LoggerProvider())
        openlit.init(pricing_json=str(Path(__file__).resolve().parent / "openlit_pricing.json"))
    elif impl == "otel-genai":
        from opentelemetry.instrumentation.genai.langchain import LangChainInstrumentor as GenAIInstrumentor

        GenAIInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
    else:
        raise ValueError(f"unknown implementation {impl!r}")
    for w in workloads:
        hooks.setdefault(w, shared)
    return hooks, tp, mp, exporter
