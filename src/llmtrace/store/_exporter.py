"""From OpenTelemetry to the store: span conversion, a span processor/exporter, a usage sink and
an evaluation-event processor.

All of them hand items to a :class:`~llmtrace.store.StoreWriter`; none of them ever blocks on
the database or raises into the application.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext

from llmtrace import semconv
from llmtrace._safety import report_internal_error
from llmtrace._usage import UsageRecord
from llmtrace.store._api import EvaluationRecord, SpanEvent, SpanLink, SpanRecord
from llmtrace.store._sql import new_evaluation_id
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


def evaluation_to_record(log_record: ReadableLogRecord | ReadWriteLogRecord) -> EvaluationRecord:
    """The store's record of one ``gen_ai.evaluation.result`` event (on the writer's thread).

    Raises ValueError for an event without a span or a name; the store bounds the texts."""
    record = log_record.log_record
    if not record.trace_id or not record.span_id:
        raise ValueError("an evaluation event without a span")
    attributes = record.attributes or {}

    def text(key: str) -> str | None:
        value = attributes.get(key)
        return value if isinstance(value, str) else None

    name = text(semconv.GEN_AI_EVALUATION_NAME)
    if not name:
        raise ValueError(f"an evaluation event without {semconv.GEN_AI_EVALUATION_NAME}")
    score = attributes.get(semconv.GEN_AI_EVALUATION_SCORE_VALUE)
    resource = getattr(log_record, "resource", None)
    service = resource.attributes.get(semconv.SERVICE_NAME) if resource is not None else None
    return EvaluationRecord(
        trace_id=format(record.trace_id, "032x"),
        span_id=format(record.span_id, "016x"),
        time_ns=int(record.timestamp or record.observed_timestamp or time.time_ns()),
        name=name,
        score=float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None,
        label=text(semconv.GEN_AI_EVALUATION_SCORE_LABEL),
        explanation=text(semconv.GEN_AI_EVALUATION_EXPLANATION),
        response_id=text(semconv.GEN_AI_RESPONSE_ID),
        service=service if isinstance(service, str) and service else None,
        evaluation_id=new_evaluation_id(),  # here, once: a retried write keeps one row
    )


def is_evaluation(log_record: ReadableLogRecord | ReadWriteLogRecord) -> bool:
    """Whether a log record is a ``gen_ai.evaluation.result`` event that names a span."""
    record = log_record.log_record
    return record.event_name == semconv.EVENT_EVALUATION_RESULT and bool(record.trace_id and record.span_id)


class StoreEvaluationProcessor(LogRecordProcessor):
    """Hands each ``gen_ai.evaluation.result`` event (``llmtrace.record_evaluation``) that names a
    span to the writer; other events and log records are left alone. Conversion happens on the
    writer's thread; on the caller's, one comparison and a queue append.

    Added by ``configure()`` to the LoggerProvider it creates whenever the store is on. It does not
    shut the writer down: the store's span processor (or exporter) does."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        try:
            if is_evaluation(log_record):
                self.writer.submit_evaluation(log_record)
        except Exception as exc:  # never into the application
            report_internal_error(f"{__name__}.StoreEvaluationProcessor.on_emit", exc)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.writer.flush(timeout_millis / 1000)


class StoreEvaluationExporter(LogRecordExporter):
    """A LogRecordExporter over the writer, for pipelines that batch events themselves (the SDK's
    own configuration: ``OTEL_LOGS_EXPORTER=store``): it queues the evaluation events of each batch
    and leaves the other records alone. ``export()`` only queues and reports SUCCESS (a full queue
    counts them as dropped in the writer's snapshot). Like :class:`StoreEvaluationProcessor`, it
    does not shut the writer down."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        for log_record in batch:
            if is_evaluation(log_record):
                self.writer.submit_evaluation(log_record)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.writer.flush(timeout_millis / 1000)


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
    """A writer that converts SDK spans (what :class:`StoreSpanProcessor` hands it) and evaluation
    events (what :class:`StoreEvaluationProcessor` hands it) itself."""
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
        convert_evaluation=_convert_evaluation,
        status_path=status_path,
        retention_s=retention_s,
        **kwargs,
    )


def _convert(item: Any) -> SpanRecord:
    return item if isinstance(item, SpanRecord) else span_to_record(item)


def _convert_evaluation(item: Any) -> EvaluationRecord:
    return item if isinstance(item, EvaluationRecord) else evaluation_to_record(item)
