"""How each implementation is switched on, inside its own subprocess.

All of them export to the same kind of pipeline, built by ``pipeline()``: an SDK TracerProvider
with a BatchSpanProcessor feeding ``CountingExporter`` (counts spans, keeps none), set as the global
provider and passed explicitly where the tracer takes one; and an SDK MeterProvider with one
``InMemoryMetricReader`` (instruments record into the SDK's aggregations; the reader is never
collected during timing), also global. The queue is large (``QUEUE``) so no span is dropped and
the span count is exact.

``setup(impl, tp, mp, exporter)`` turns the implementation on and returns ``Hooks``: the
LangChain config to pass to each invocation (handler-based tracers) and an optional function run
after each invocation (the floor's bare spans).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

QUEUE = 1 << 18

# implementation -> virtualenv under bench/.venvs
ENV_OF = {
    "none": "llmtrace",
    "floor": "llmtrace",
    "llmtrace-handler": "llmtrace",
    "llmtrace-instrument": "llmtrace",
    "llmtrace-content": "llmtrace",
    "openinference": "openinference",
    "openllmetry": "openllmetry",
    "langfuse": "langfuse",
    "openlit": "openlit",
    "otel-genai": "otel-genai",
}
OURS = ("llmtrace-handler", "llmtrace-instrument", "llmtrace-content")
PEERS = ("openinference", "openllmetry", "langfuse", "openlit", "otel-genai")
IMPLS = ("none", "floor", *OURS, *PEERS)

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
    "llmtrace-handler": "`LLMTraceCallbackHandler(tracer_provider, meter_provider)` in "
    "`config['callbacks']`",
    "llmtrace-instrument": "`llmtrace.instrument(tracer_provider=..., meter_provider=...)` (default "
    "settings: no content captured)",
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
    """Counts exported spans and discards them."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
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


def pipeline(with_processor: bool = True) -> tuple[TracerProvider, MeterProvider, CountingExporter]:
    exporter = CountingExporter()
    tp = TracerProvider()
    if with_processor:
        tp.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=QUEUE, max_export_batch_size=512))
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(mp)
    return tp, mp, exporter


def _floor(workload: str, tp: TracerProvider, spans: int) -> Hooks:
    tracer = tp.get_tracer("bench.floor")

    def after() -> None:
        if spans <= 0:
            return
        root = tracer.start_span("floor")
        ctx = trace.set_span_in_context(root)
        for _ in range(spans - 1):
            tracer.start_span("floor.child", context=ctx).end()
        root.end()

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
    impl: str, workloads: Sequence[str], floor_spans: dict[str, int] | None = None
) -> tuple[dict[str, Hooks], TracerProvider, MeterProvider, CountingExporter]:
    """Switch ``impl`` on for the frameworks ``workloads`` use; return per-workload hooks, pipeline."""
    if impl == "langfuse":
        # Langfuse adds its own BatchSpanProcessor (LangfuseSpanProcessor) to the provider it is
        # given; hand it the counting exporter so spans are batched and counted exactly once.
        tp, mp, exporter = pipeline(with_processor=False)
    else:
        tp, mp, exporter = pipeline()
    lc = any(w != "llamaindex_query" for w in workloads)
    li = "llamaindex_query" in workloads
    shared = Hooks()
    hooks: dict[str, Hooks] = {}
    if impl == "none":
        pass
    elif impl == "floor":
        hooks = {w: _floor(w, tp, (floor_spans or {}).get(w, 0)) for w in workloads}
    elif impl == "llmtrace-handler":
        from llmtrace_langchain import LLMTraceCallbackHandler

        shared.config = {"callbacks": [LLMTraceCallbackHandler(tracer_provider=tp, meter_provider=mp)]}
    elif impl in ("llmtrace-instrument", "llmtrace-content"):
        import llmtrace

        if impl == "llmtrace-content":
            # The global providers are already set, so configure() only applies settings.
            llmtrace.configure(capture_content="SPAN_ONLY")
        shared.notes.append(f"instrumented: {llmtrace.instrument(tracer_provider=tp, meter_provider=mp)}")
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
