"""The embedded trace and usage store (SQLite by default, PostgreSQL for teams), in progress."""

from __future__ import annotations

from llmtrace.store._api import (
    Bucket,
    ErrorBy,
    ErrorRate,
    GroupBy,
    InvalidCursor,
    InvalidFilter,
    LatencyBy,
    ModelStats,
    Page,
    Percentiles,
    SeriesPoint,
    SpanEvent,
    SpanLink,
    SpanRecord,
    Store,
    StoreError,
    Trace,
    TraceFilter,
    TraceNotFound,
    TraceSummary,
    UsageSummary,
)
from llmtrace.store._exporter import StoreSpanExporter, StoreSpanProcessor, StoreUsageSink, span_to_record
from llmtrace.store._open import open_store
from llmtrace.store._writer import StoreWriter, WriterSnapshot, classify_failure

__all__ = [
    "Bucket",
    "ErrorBy",
    "ErrorRate",
    "GroupBy",
    "InvalidCursor",
    "InvalidFilter",
    "LatencyBy",
    "ModelStats",
    "Page",
    "Percentiles",
    "SeriesPoint",
    "SpanEvent",
    "SpanLink",
    "SpanRecord",
    "Store",
    "StoreError",
    "StoreSpanExporter",
    "StoreSpanProcessor",
    "StoreUsageSink",
    "StoreWriter",
    "Trace",
    "TraceFilter",
    "TraceNotFound",
    "TraceSummary",
    "UsageSummary",
    "WriterSnapshot",
    "classify_failure",
    "open_store",
    "span_to_record",
]
