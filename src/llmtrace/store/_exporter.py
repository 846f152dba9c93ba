"""From OpenTelemetry to the store: span conversion, a span processor/exporter and a usage sink.

All three hand items to a :class:`~llmtrace.store.StoreWriter`; none of them ever blocks on
the database or raises into the application.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext

from llmtrace._usage import UsageRecord
from llmtrace.store._api import SpanEvent, SpanLink, SpanRecord
from llmtrace.store._writer import StoreWriter


def _value(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_value(v) for v in value]
    return value


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {str(key): _value(value) for key, value in (attributes or {}).items()}


_NO_SCOPE = InstrumentationScope("")
_HAS_IS_REMOTE = 0x100  # OTLP SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = 0x200  # OTLP SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


def _flags(context: SpanContext | None) -> int:
    """OTLP ``flags`` of a span (``context``: its parent's) or a link, as the SDK's OTLP exporter sets."""
    return _HAS_IS_REMOTE | _IS_REMOTE if context is not None and context.is_remote else _HAS_IS_REMOTE


def span_to_record(span: ReadableSpan) -> SpanRecord:
    """The store's record of one finished SDK span (ids as lowercase hex, times in ns)."""
    context = span.context
    if context is None:
        raise ValueError("a span without a context")
    parent = span.parent
    start = span.start_time or 0
    end = span.end_time if span.end_time is not None else start
    scope = span.instrumentation_scope or _NO_SCOPE
    return SpanRecord(
        trace_id=format(context.trace_id, "032x"),
        span_id=format(context.span_id, "016x"),
        parent_span_id=format(parent.span_id, "016x") if parent is not None and parent.span_id else None,
        name=span.name,
        kind=span.kind.name,
        start_ns=start,
        end_ns=end,
        status_code=span.status.status_code.name,
        status_message=span.status.description or "",
        attributes=_attributes(span.attributes),
        events=[
            SpanEvent(
                name=event.name,
                time_ns=event.timestamp,
                attributes=_attributes(event.attributes),
                dropped_attributes=event.dropped_attributes,
            )
            for event in span.events
        ],
        links=[
            SpanLink(
                trace_id=format(link.context.trace_id, "032x"),
                span_id=format(link.context.span_id, "016x"),
                attributes=_attributes(link.attributes),
                dropped_attributes=link.dropped_attributes,
                flags=_flags(link.context),
            )
            for link in span.links
        ],
        resource=_attributes(span.resource.attributes),
        scope=scope.name,
        scope_version=scope.version or None,
        scope_schema_url=scope.schema_url or None,
        scope_attributes=_attributes(scope.attributes),
        resource_schema_url=span.resource.schema_url or None,
        trace_state=context.trace_state.to_header() or None,
        flags=_flags(parent),
        dropped_attributes=span.dropped_attributes,
        dropped_events=span.dropped_events,
        dropped_links=span.dropped_links,
    )


class StoreSpanProcessor(SpanProcessor):
    """Hands each ended, sampled span to the writer (conversion happens on the writer thread).

    Used by ``configure()`` instead of a batch span processor: the writer is the batcher, so
    a span waits in one bounded queue, not two.
    """

    def __init__(self, writer: StoreWriter, *, shutdown_timeout_s: float = 10.0) -> None:
        self.writer = writer
        self._shutdown_timeout_s = shutdown_timeout_s

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is not None and context.trace_flags.sampled:
            self.writer.submit_span(span)

    def shutdown(self) -> None:
        self.writer.shutdown(self._shutdown_timeout_s)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.writer.flush(timeout_millis / 1000)


class StoreSpanExporter(SpanExporter):
    """A SpanExporter over the writer, for pipelines that want their own span processor.

    ``export()`` only queues: it reports SUCCESS even when the queue is full (those spans are
    counted as dropped in the writer's snapshot), so the SDK never retries or blocks.
    """

    def __init__(self, writer: StoreWriter, *, shutdown_timeout_s: float = 10.0) -> None:
        self.writer = writer
        self._shutdown_timeout_s = shutdown_timeout_s

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.writer.submit_spans(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.writer.shutdown(self._shutdown_timeout_s)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.writer.flush(timeout_millis / 1000)


class StoreUsageSink:
    """A usage sink (``llmtrace.add_usage_sink``) that queues each UsageRecord for the store.

    ``service``: the pipeline's ``service.name`` (its resource's), given to records that have none,
    so each usage row keeps its service even when its span is not stored (sampled out, dropped).
    """

    def __init__(self, writer: StoreWriter, *, service: object = None) -> None:
        self.writer = writer
        if isinstance(service, str) and service:
            writer.usage_service = service  # applied on the writer's thread: nothing more per call here

    def __call__(self, record: UsageRecord) -> None:
        self.writer.submit_usage(record)


def store_writer(
    store: Any,
    *,
    store_url: str | None = None,
    max_queue_size: int | None = None,
    max_batch_size: int | None = None,
    flush_interval_s: float | None = None,
    status_path: Any = None,
    retention_s: float | None = None,
) -> StoreWriter:
    """A writer that converts SDK spans (what :class:`StoreSpanProcessor` hands it) itself."""
    kwargs: dict[str, Any] = {}
    if max_queue_size is not None:
        kwargs["max_queue_size"] = max_queue_size
    if max_batch_size is not None:
        kwargs["max_batch_size"] = max_batch_size
    if flush_interval_s is not None:
        kwargs["flush_interval_s"] = flush_interval_s
    return StoreWriter(
        store,
        store_url=store_url,
        convert_span=_convert,
        status_path=status_path,
        retention_s=retention_s,
        **kwargs,
    )


def _convert(item: Any) -> SpanRecord:
    return item if isinstance(item, SpanRecord) else span_to_record(item)
