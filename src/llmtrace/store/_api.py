"""The store's contract: what is written, what queries return. Both backends implement :class:`Store`.

Times are UTC nanoseconds since the epoch everywhere (``*_ns``); buckets are UTC, optionally
shifted to a caller's time zone for display grouping (``tz``). Costs are USD floats, None where
no priced call contributed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from llmtrace._usage import UsageRecord

Bucket = Literal["minute", "hour", "day"]
GroupBy = Literal["model", "provider", "service", "service_tier"]
LatencyBy = Literal["model", "operation"]
ErrorBy = Literal["error_type", "model", "provider"]
TraceStatus = Literal["ok", "error"]


_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def redact_url(url: str) -> str:
    """The store's URL with its password hidden (``user:***@``, ``password=***``): for messages,
    snapshot files and ``Store.url``. A URL that cannot be parsed is hidden whole past its scheme."""
    try:
        parts = urlsplit(url)
        password = parts.password
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        scheme, sep, _ = url.partition("://")
        return f"{scheme}://***" if sep else url
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{host}"
    if any(key.lower() in _SECRET_PARAMETERS for key, _ in query):
        hidden = [(key, "***" if key.lower() in _SECRET_PARAMETERS else value) for key, value in query]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    elif password is None:
        return url
    return urlunsplit(parts._replace(netloc=netloc))


class StoreError(Exception):
    """Base of every error the store raises to its callers (CLI, query API)."""


class TraceNotFound(StoreError):
    pass


class InvalidCursor(StoreError):
    """A cursor that is malformed or was issued for another query or store."""


class InvalidFilter(StoreError):
    pass


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: Mapping[str, Any] = field(default_factory=dict)
    dropped_attributes: int = 0  # attributes the SDK dropped (span limits)


@dataclass(frozen=True, slots=True)
class SpanLink:
    trace_id: str
    span_id: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    dropped_attributes: int = 0
    flags: int | None = None  # OTLP ``Link.flags`` (bits 8-9: is the linked context remote); None: unknown


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One finished span, whole: what the store keeps and gives back."""

    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_span_id: str | None
    name: str
    kind: str  # "INTERNAL", "CLIENT", ...
    start_ns: int
    end_ns: int
    status_code: str  # "UNSET", "OK", "ERROR"
    status_message: str
    attributes: Mapping[str, Any]
    events: Sequence[SpanEvent]
    links: Sequence[SpanLink]
    resource: Mapping[str, Any]
    scope: str  # the instrumentation scope's name
    # What OTLP carries besides; None (or 0) in records stored before schema version 3.
    scope_version: str | None = None
    scope_schema_url: str | None = None
    scope_attributes: Mapping[str, Any] = field(default_factory=dict)
    resource_schema_url: str | None = None
    trace_state: str | None = None  # W3C ``tracestate`` header value ("k1=v1,k2=v2")
    flags: int | None = None  # OTLP ``Span.flags`` (bits 8-9: is the parent remote); None: unknown
    dropped_attributes: int = 0  # attributes, events and links the SDK dropped (span limits)
    dropped_events: int = 0
    dropped_links: int = 0

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(frozen=True, slots=True)
class EvaluationRecord:
    """One evaluation of a span (a ``gen_ai.evaluation.result`` event: ``llmtrace.record_evaluation``),
    as the store keeps it (from schema version 6 on). Its span need not be stored: it may have been
    sampled out, or not have ended yet."""

    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex: the evaluated span
    time_ns: int  # when the evaluation was recorded
    name: str  # gen_ai.evaluation.name
    score: float | None = None  # gen_ai.evaluation.score.value
    label: str | None = None  # gen_ai.evaluation.score.label
    explanation: str | None = None  # gen_ai.evaluation.explanation
    response_id: str | None = None  # gen_ai.response.id: the evaluated response
    service: str | None = None  # service.name of the program that recorded it
    evaluation_id: str = ""
    """Tells apart evaluations of one trace (16 lowercase hex): writing the same one twice keeps one.
    Empty: the store makes one up (each write of it is then kept)."""


@dataclass(frozen=True, slots=True)
class Trace:
    trace_id: str
    spans: Sequence[SpanRecord]  # ordered by start time
    evaluations: Sequence[EvaluationRecord] = ()
    """The trace's evaluations, in the order they were recorded (their span may be missing from
    ``spans``: sampled out, or not ended yet; a trace may even hold evaluations only)."""


@dataclass(frozen=True, slots=True)
class TraceSummary:
    trace_id: str
    service: str | None
    root_name: str
    start_ns: int
    duration_ns: int
    span_count: int
    input_tokens: int
    output_tokens: int
    cost: float | None
    status: TraceStatus
    unpriced_calls: int = 0
    """Model calls of the trace that reported token usage but have no cost (no price known): ``cost``
    leaves them out."""
    unpriced_by_reason: Mapping[str, int] = field(default_factory=dict)
    """``unpriced_calls`` by why they are unpriced (``unknown_model``, ``service_tier``; ``unknown``
    for spans that carry no reason or were stored before schema version 5)."""


@dataclass(frozen=True, slots=True)
class Page:
    items: Sequence[TraceSummary]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class TraceFilter:
    service: str | None = None
    model: str | None = None  # request or response model of any model call in the trace
    provider: str | None = None
    status: TraceStatus | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    min_cost: float | None = None
    min_duration_ns: int | None = None


@dataclass(frozen=True, slots=True)
class UsageSummary:
    calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost: float | None
    unpriced_calls: int
    error_calls: int
    cache_hits: int
    cache_write_1h_tokens: int = 0
    """Of ``cache_write_tokens``, those written with a one-hour lifetime (0 for calls stored before
    schema version 5)."""
    unpriced_by_reason: Mapping[str, int] = field(default_factory=dict)
    """``unpriced_calls`` by why they are unpriced (``unknown_model``, ``service_tier``; ``unknown``
    for calls recorded without a reason or stored before schema version 5)."""


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    bucket_start_ns: int  # UTC start of the bucket (in ``tz`` when given)
    group: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost: float | None


@dataclass(frozen=True, slots=True)
class ModelStats:
    model: str
    provider: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost: float | None
    mean_duration_s: float
    error_rate: float


@dataclass(frozen=True, slots=True)
class Percentiles:
    key: str
    count: int
    p50_s: float
    p90_s: float
    p99_s: float


@dataclass(frozen=True, slots=True)
class Pruned:
    """What a prune deleted (or, for a dry run, would delete)."""

    traces: int = 0
    spans: int = 0
    usage: int = 0  # usage records: of the traces deleted, and of calls whose trace is not stored
    more: bool = False  # one batch: there is more to delete (another batch is needed)
    evaluations: int = 0  # evaluations: of the traces deleted, and of spans whose trace is not stored

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(
            self.traces + other.traces,
            self.spans + other.spans,
            self.usage + other.usage,
            other.more,
            self.evaluations + other.evaluations,
        )


@dataclass(frozen=True, slots=True)
class ErrorRate:
    key: str
    calls: int
    errors: int

    @property
    def rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


class Store(Protocol):
    """A trace and usage store. Implementations are thread-safe for one writer and many readers."""

    url: str

    def write(
        self,
        spans: Sequence[SpanRecord],
        usage: Sequence[UsageRecord],
        evaluations: Sequence[EvaluationRecord] = (),
    ) -> None:
        """Write one batch in one transaction (idempotent per span id, usage span id and evaluation id)."""

    def get_trace(self, trace_id: str) -> Trace:
        """The trace's spans and evaluations. Raises TraceNotFound when it has neither."""

    def list_traces(
        self, filter: TraceFilter | None = None, *, limit: int = 20, cursor: str | None = None
    ) -> Page:
        """Newest first. Raises InvalidCursor, InvalidFilter.

        ``cursor`` (a previous page's ``next_cursor``) must come with the same filter, except for
        its time bounds: later pages keep the time window of the first page."""

    def usage_summary(self, filter: TraceFilter | None = None) -> UsageSummary: ...

    def usage_series(
        self, *, group_by: GroupBy, bucket: Bucket, filter: TraceFilter | None = None, tz: str = "UTC"
    ) -> list[SeriesPoint]: ...

    def model_stats(self, filter: TraceFilter | None = None) -> list[ModelStats]: ...

    def latency_percentiles(
        self, *, by: LatencyBy, filter: TraceFilter | None = None
    ) -> list[Percentiles]: ...

    def error_rates(self, *, by: ErrorBy, filter: TraceFilter | None = None) -> list[ErrorRate]: ...

    def usage_time_range(self, filter: TraceFilter | None = None) -> tuple[int, int] | None:
        """The start times of the first and last model calls the filter matches; None if none."""

    def find_trace_ids(self, prefix: str, *, limit: int = 2) -> tuple[list[str], int]:
        """Up to ``limit`` stored trace ids that start with ``prefix`` (lowercase hex), and how many
        match in all (counted up to 1,000)."""

    def prune_batch(self, cutoff_ns: int, *, now_ns: int, max_spans: int) -> Pruned:
        """Delete, in one short transaction, some of what is older than ``cutoff_ns`` (see
        :mod:`llmtrace.store._retention`); ``more`` says whether there is more."""

    def count_prunable(self, cutoff_ns: int, *, now_ns: int) -> Pruned:
        """What pruning at ``cutoff_ns`` would delete (nothing is deleted)."""

    def size_bytes(self) -> int | None:
        """The space the store takes (SQLite: its file and journal; PostgreSQL: its tables)."""

    def reclaim_space(self) -> None:
        """Give the space of deleted rows back (SQLite: ``VACUUM``; PostgreSQL: ``VACUUM ANALYZE``)."""

    def close(self) -> None: ...
