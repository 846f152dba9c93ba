"""The SQL store shared by both backends: writes, trace summaries, queries and analytics.

Backends provide a connection, a write transaction and a read function; every statement here is
written once, with ``?`` placeholders, in the SQL subset SQLite and PostgreSQL share (percentiles
excepted: PostgreSQL's ``percentile_cont``, SQLite's window functions). What the two databases could
do differently stays in Python or in integers: time zones are resolved in Python into the offsets
in effect over the stored time span, and the database groups calls by local bucket in integer
arithmetic; percentiles interpolate as ``percentile`` does; text is ordered in Python. Both
backends return the same results, and no query brings every call (or trace) into Python.

Queries scale with what they return, not with the store: usage analytics read the usage table
alone (its span and trace are looked up only for the service of calls stored without one), and a
filtered trace listing either walks the traces newest first along an index and stops after a
page, or, when an index shows a filter matches few traces, fetches and sorts those few.

Semantics the contract leaves open, decided here:

* **Trace summary** (``list_traces``): start = earliest span start, duration = latest span end minus
  that, root = the span without a parent (until it arrives, the earliest span stands in), service =
  the root's ``service.name``, tokens and cost = sums over model-call spans (cost None when none
  was priced; a cache hit's cost is 0), status ``error`` when any span has status ERROR.
  Spans are written with insert-or-ignore: rewriting a span id changes nothing, and the summary is
  updated incrementally from the spans that are new, so batches may arrive in any order.
* **Filters on traces**: time range on the trace start, ``since_ns`` inclusive, ``until_ns``
  exclusive (with a cursor, the range of the page that issued it: a relative range resolved anew
  on each call neither breaks paging nor drifts); ``model`` matches the request or response model
  of any model call in the trace, ``provider`` any model call's provider; ``min_cost`` excludes
  traces without cost.
* **Usage analytics** read the usage records (one per model call), and the filter applies to each
  call: its start time, its service (its own: the ``service.name`` of the pipeline that recorded it,
  from schema version 4 on; for calls stored without one, its span's, else its trace's), its
  request or response model, its
  provider, status ``error`` (the call failed) or ``ok`` (it did not), its cost and duration.
  A cache hit is a call with cost 0; ``unpriced_calls`` counts calls that reported token usage
  but have no cost (no price known); a failed call that reported no usage is not "unpriced".
  ``unpriced_by_reason`` splits them by the reason recorded with them (``unknown_model``,
  ``service_tier``), ``unknown`` for calls stored without one (before schema version 5, or by an
  older writer); a trace listing splits its ``unpriced_calls`` by its spans' reason alike.
  Calls are grouped by request model (the response model when no request model was recorded);
  by service tier, calls whose provider reported no tier (and calls stored before schema version
  5) form the group ``""``.
* **Percentiles** use linear interpolation between closest ranks (``numpy.percentile``'s default):
  the value at rank ``p * (n - 1)`` of the sorted durations.
* **Evaluations** (schema version 6 on) are rows of their own, keyed by trace and evaluation id:
  ``get_trace`` gives a trace's evaluations with its spans (also those of spans not stored, and a
  trace that has evaluations only); they change no trace summary, listing or usage analytics.
* **Error rates**: by model or provider, errors among that key's calls; by error type, calls is
  the total number of calls matched and errors those that failed with that type (``unknown``
  when none was recorded).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from llmtrace import semconv
from llmtrace._usage import UsageRecord, coerce_tokens
from llmtrace.store import _cursor, _retention
from llmtrace.store._api import (
    Bucket,
    ErrorBy,
    ErrorRate,
    EvaluationRecord,
    GroupBy,
    InvalidFilter,
    LatencyBy,
    ModelStats,
    Page,
    Percentiles,
    Pruned,
    SeriesPoint,
    SpanEvent,
    SpanLink,
    SpanRecord,
    StoreError,
    Trace,
    TraceFilter,
    TraceNotFound,
    TraceStatus,
    TraceSummary,
    UsageSummary,
)
from llmtrace.store._schema import CURRENT_VERSION, Dialect

_CHUNK = 400
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""What both backends store (times are int64 ns: 1677-09-21 to 2262-04-11 UTC)."""
_MINUTE_NS = 60_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
UNKNOWN = "unknown"
_PERCENTILES = (0.5, 0.9, 0.99)


class Tx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


# --------------------------------------------------------------------------------------
# JSON values: OTel attribute values are str, bool, int, float or homogeneous sequences of them
# --------------------------------------------------------------------------------------
def _no_nul(text: str) -> str:
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


_LARGE_FLOAT = 1e16
"""From here on ``repr`` writes floats with an exponent (``1e+16``), which PostgreSQL's JSONB keeps as
a numeric without a fraction and gives back as an integer; every float this large is whole."""
_LARGE_FLOAT_MARK = "\x00"
"""Starts the stand-in string of a large float: no cleaned string contains NUL (see ``_no_nul``)."""
_LARGE_FLOAT_TOKEN = re.compile(r'"\\u0000(-?[0-9]+\.0)"')


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _no_nul(value)
    if isinstance(value, (bool, int)) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)  # JSON (and JSONB) have no NaN/inf
        if abs(value) >= _LARGE_FLOAT:
            return f"{_LARGE_FLOAT_MARK}{int(value)}.0"  # written as a number by dump_json
        return value
    if isinstance(value, Mapping):
        return {_no_nul(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def dump_json(value: Any) -> str:
    """Compact JSON that both backends give back with the same types (floats stay floats)."""
    text = json.dumps(_clean(value), separators=(",", ":"), ensure_ascii=False)
    if "\\u0000" in text:  # large floats, as decimals with a fraction: 1e16 -> 10000000000000000.0
        text = _LARGE_FLOAT_TOKEN.sub(r"\1", text)
    return text


def load_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _text(value: Any) -> str | None:
    return _no_nul(value) if isinstance(value, str) and value else None


def _label(value: Any) -> str | None:
    """A service tier or unpriced reason as stored: text, bounded; None when missing or not text."""
    return _text(value[:MAX_LABEL_LENGTH]) if isinstance(value, str) else None


def _no_nul_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """``row`` with NUL replaced in every text, as in JSON values: PostgreSQL's TEXT cannot hold
    it, and the whole batch would be refused (a span name, status message or scope from any
    instrumentation, a model name from a framework)."""
    return tuple(_no_nul(value) if type(value) is str else value for value in row)


def _cost(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _add(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else a + b


# --------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------
_SPAN_COLUMNS_V1 = (
    "trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code, status_message, "
    "attributes, events, links, resource, scope, service, operation, request_model, response_model, "
    "provider, error_type, input_tokens, output_tokens, cost"
)
_SPAN_COLUMNS_V3 = (
    "scope_version, scope_schema_url, scope_attributes, resource_schema_url, trace_state, flags, "
    "dropped_attributes, dropped_events, dropped_links"
)
_SPAN_COLUMNS = f"{_SPAN_COLUMNS_V1}, {_SPAN_COLUMNS_V3}"
"""The columns a span record is read from."""
_SPAN_INSERT_COLUMNS = f"{_SPAN_COLUMNS}, unpriced_reason"  # schema version 5: for trace listings only
_INSERT_SPAN = (
    f"INSERT INTO spans ({_SPAN_INSERT_COLUMNS}) "
    f"VALUES ({', '.join('?' * (_SPAN_INSERT_COLUMNS.count(',') + 1))}) "
    "ON CONFLICT (trace_id, span_id) DO NOTHING"
)
_USAGE_COLUMNS_V1 = (
    "trace_id, span_id, operation, provider, request_model, response_model, framework, input_tokens, "
    "output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, duration_s, "
    "time_to_first_chunk_s, streamed, status, error_type, cache_hit, start_ns, dimensions"
)
_USAGE_COLUMNS_V4 = f"{_USAGE_COLUMNS_V1}, service"
_USAGE_COLUMNS = f"{_USAGE_COLUMNS_V4}, cache_write_1h_tokens, service_tier, unpriced_reason"  # version 5
_INSERT_USAGE = (
    f"INSERT INTO usage ({_USAGE_COLUMNS}) VALUES ({', '.join('?' * (_USAGE_COLUMNS.count(',') + 1))}) "
    "ON CONFLICT (trace_id, span_id) DO NOTHING"
)
MAX_LABEL_LENGTH = 64
"""A stored service tier or unpriced reason is cut to this many characters (both are short words)."""
_TRACE_COLUMNS = (
    "trace_id",
    "service",
    "root_name",
    "root_start_ns",
    "has_root",
    "start_ns",
    "end_ns",
    "duration_ns",
    "span_count",
    "input_tokens",
    "output_tokens",
    "cost",
    "error_spans",
    "status",
)
_UPSERT_TRACE = (
    f"INSERT INTO traces ({', '.join(_TRACE_COLUMNS)}) VALUES ({', '.join('?' * len(_TRACE_COLUMNS))}) "
    "ON CONFLICT (trace_id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _TRACE_COLUMNS[1:])
)
_INSERT_KEY = "INSERT INTO trace_keys (kind, value, trace_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
_EVALUATION_COLUMNS = (
    "trace_id, evaluation_id, span_id, time_ns, name, score, label, explanation, response_id, service"
)
_INSERT_EVALUATION = (
    f"INSERT INTO evaluations ({_EVALUATION_COLUMNS}) "
    f"VALUES ({', '.join('?' * (_EVALUATION_COLUMNS.count(',') + 1))}) "
    "ON CONFLICT (trace_id, evaluation_id) DO NOTHING"
)
MAX_EVALUATION_NAME = 256
"""A stored evaluation name, label and response id are cut as ``record_evaluation`` cuts them
(names to 256 characters, labels to 256, response ids to 1,024, explanations to 4,096): events
from other emitters are bounded alike."""
MAX_EVALUATION_LABEL = 256
MAX_EVALUATION_EXPLANATION = 4096
MAX_RESPONSE_ID = 1024
EVALUATIONS_VERSION = 6
"""The schema version that added the evaluations table."""


@dataclass(slots=True)
class _SpanFacts:
    """What the summary and the indexes need from one span."""

    trace_id: str
    span_id: str
    is_root: bool
    name: str
    start_ns: int
    end_ns: int
    service: str | None
    request_model: str | None
    response_model: str | None
    provider: str | None
    model_call: bool
    input_tokens: int
    output_tokens: int
    cost: float | None
    error: bool
    row: tuple[Any, ...]


def _event_json(event: SpanEvent) -> list[Any]:
    """``[name, time, attributes]`` as before schema version 3, then the dropped count if any."""
    item: list[Any] = [event.name, int(event.time_ns), event.attributes]
    if event.dropped_attributes:
        item.append(int(event.dropped_attributes))
    return item


def _span_event(name: str, time_ns: int, attributes: Mapping[str, Any], dropped: int = 0) -> SpanEvent:
    return SpanEvent(name, int(time_ns), attributes, int(dropped))


def _link_json(link: SpanLink) -> list[Any]:
    """``[trace id, span id, attributes]`` as before schema version 3, then the dropped count and
    the flags when known."""
    item: list[Any] = [link.trace_id, link.span_id, link.attributes]
    if link.dropped_attributes or link.flags is not None:
        item += [int(link.dropped_attributes), link.flags]
    return item


def _span_link(
    trace_id: str, span_id: str, attributes: Mapping[str, Any], dropped: int = 0, flags: int | None = None
) -> SpanLink:
    return SpanLink(trace_id, span_id, attributes, int(dropped), None if flags is None else int(flags))


def _span_facts(span: SpanRecord) -> _SpanFacts:
    attrs = span.attributes
    operation = _text(attrs.get(semconv.GEN_AI_OPERATION_NAME))
    # Usage and cost are counted from llmtrace's own model spans only: a provider SDK's own GenAI
    # span nested under one (the anthropic SDK emits one per call) carries the same tokens again.
    model_call = operation in semconv.MODEL_OPERATIONS and span.scope == semconv.INSTRUMENTATION_SCOPE
    service = _text(span.resource.get(semconv.SERVICE_NAME))
    request_model = _text(attrs.get(semconv.GEN_AI_REQUEST_MODEL))
    response_model = _text(attrs.get(semconv.GEN_AI_RESPONSE_MODEL))
    provider = _text(attrs.get(semconv.GEN_AI_PROVIDER_NAME))
    error_type = _text(attrs.get(semconv.ERROR_TYPE))
    input_tokens = coerce_tokens(attrs.get(semconv.GEN_AI_USAGE_INPUT_TOKENS)) if model_call else None
    output_tokens = coerce_tokens(attrs.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS)) if model_call else None
    cost = _cost(attrs.get(semconv.GEN_AI_USAGE_COST_AMOUNT)) if model_call else None
    if model_call and cost is None and attrs.get(semconv.LLMTRACE_CACHE_HIT) is True:
        cost = 0.0
    unpriced_reason = None
    if model_call and cost is None and (input_tokens is not None or output_tokens is not None):
        unpriced_reason = _label(attrs.get(semconv.LLMTRACE_COST_UNPRICED_REASON))
    events = [_event_json(e) for e in span.events]
    links = [_link_json(link) for link in span.links]
    trace_id, span_id = _no_nul(span.trace_id.lower()), _no_nul(span.span_id.lower())
    parent = _no_nul(span.parent_span_id.lower()) if span.parent_span_id else None
    name = _no_nul(span.name)
    row = (
        trace_id,
        span_id,
        parent,
        name,
        span.kind,
        int(span.start_ns),
        int(span.end_ns),
        span.status_code,
        span.status_message or "",
        dump_json(attrs),
        dump_json(events),
        dump_json(links),
        dump_json(span.resource),
        span.scope or "",
        service,
        operation,
        request_model,
        response_model,
        provider,
        error_type,
        input_tokens,
        output_tokens,
        cost,
        span.scope_version,
        span.scope_schema_url,
        dump_json(span.scope_attributes) if span.scope_attributes else None,
        span.resource_schema_url,
        span.trace_state,
        span.flags,
        int(span.dropped_attributes),
        int(span.dropped_events),
        int(span.dropped_links),
        unpriced_reason,
    )
    return _SpanFacts(
        trace_id,
        span_id,
        parent is None,
        name,
        int(span.start_ns),
        int(span.end_ns),
        service,
        request_model,
        response_model,
        provider,
        model_call,
        input_tokens or 0,
        output_tokens or 0,
        cost,
        span.status_code == "ERROR",
        _no_nul_row(row),
    )


def _usage_row(record: UsageRecord) -> tuple[Any, ...]:
    def flag(value: bool | None) -> int | None:
        return None if value is None else int(bool(value))

    row = (
        record.trace_id.lower(),
        record.span_id.lower(),
        record.operation,
        record.provider,
        record.request_model,
        record.response_model,
        record.framework,
        record.input_tokens,
        record.output_tokens,
        record.cache_read_tokens,
        record.cache_write_tokens,
        record.reasoning_tokens,
        _cost(record.cost),
        float(record.duration_s),
        record.time_to_first_chunk_s,
        int(bool(record.streamed)),
        record.status,
        record.error_type,
        flag(record.cache_hit),
        int(record.start_time_unix_nano),
        dump_json(dict(record.dimensions)),
        _text(record.service),
        coerce_tokens(record.cache_write_1h_tokens),
        _label(record.service_tier),
        _label(record.unpriced_reason),
    )
    return _no_nul_row(row)


def new_evaluation_id() -> str:
    """A random evaluation id (16 lowercase hex); ``random`` is reseeded in a forked child."""
    return format(random.getrandbits(64), "016x")


def _bounded(value: Any, limit: int) -> str | None:
    return _text(value[:limit]) if isinstance(value, str) else None


def _evaluation_row(record: EvaluationRecord) -> tuple[Any, ...]:
    """An evaluation as stored: ids lowercase, texts bounded, a score only when it is a finite number."""
    name = _bounded(record.name, MAX_EVALUATION_NAME)
    if name is None:
        raise ValueError("an evaluation without a name")
    score = record.score
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        score = None
    row = (
        record.trace_id.lower(),
        (record.evaluation_id or new_evaluation_id()).lower(),
        record.span_id.lower(),
        int(record.time_ns),
        name,
        None if score is None else float(score),
        _bounded(record.label, MAX_EVALUATION_LABEL),
        _bounded(record.explanation, MAX_EVALUATION_EXPLANATION),
        _bounded(record.response_id, MAX_RESPONSE_ID),
        _text(record.service),
    )
    return _no_nul_row(row)


@dataclass(slots=True)
class _TraceState:
    trace_id: str
    service: str | None
    root_name: str
    root_start_ns: int
    has_root: bool
    start_ns: int
    end_ns: int
    span_count: int
    input_tokens: int
    output_tokens: int
    cost: float | None
    error_spans: int

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> _TraceState:
        (
            trace_id,
            service,
            root_name,
            root_start,
            has_root,
            start,
            end,
            _duration,
            count,
            inp,
            out,
            cost,
            errors,
            _status,
        ) = row
        return cls(
            trace_id,
            service,
            root_name,
            int(root_start),
            bool(has_root),
            int(start),
            int(end),
            int(count),
            int(inp),
            int(out),
            None if cost is None else float(cost),
            int(errors),
        )

    @classmethod
    def first(cls, span: _SpanFacts) -> _TraceState:
        return cls(
            span.trace_id,
            span.service,
            span.name,
            span.start_ns,
            span.is_root,
            span.start_ns,
            span.end_ns,
            1,
            span.input_tokens,
            span.output_tokens,
            span.cost,
            int(span.error),
        )

    def add(self, span: _SpanFacts) -> None:
        current = (not self.has_root, self.root_start_ns, self.root_name)
        if (not span.is_root, span.start_ns, span.name) < current:
            self.root_name, self.root_start_ns, self.has_root = span.name, span.start_ns, span.is_root
            self.service = span.service or self.service
        elif self.service is None:
            self.service = span.service
        self.start_ns = min(self.start_ns, span.start_ns)
        self.end_ns = max(self.end_ns, span.end_ns)
        self.span_count += 1
        self.input_tokens += span.input_tokens
        self.output_tokens += span.output_tokens
        self.cost = _add(self.cost, span.cost)
        self.error_spans += int(span.error)

    def row(self) -> tuple[Any, ...]:
        return (
            self.trace_id,
            self.service,
            self.root_name,
            self.root_start_ns,
            int(self.has_root),
            self.start_ns,
            self.end_ns,
            max(0, self.end_ns - self.start_ns),
            self.span_count,
            self.input_tokens,
            self.output_tokens,
            self.cost,
            self.error_spans,
            "error" if self.error_spans else "ok",
        )


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------
def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_filter(filter: TraceFilter | None) -> TraceFilter:
    f = filter if filter is not None else TraceFilter()
    if not isinstance(f, TraceFilter):
        raise InvalidFilter(f"expected a TraceFilter, got {type(f).__name__}")
    for name in ("service", "model", "provider"):
        value = getattr(f, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidFilter(f"{name} must be a non-empty string")
    if f.status not in (None, "ok", "error"):
        raise InvalidFilter(f"status must be 'ok' or 'error', not {f.status!r}")
    for name in ("since_ns", "until_ns", "min_duration_ns"):
        value = getattr(f, name)
        if value is not None and not _is_int(value):
            raise InvalidFilter(f"{name} must be an integer number of nanoseconds")
        if value is not None and not INT64_MIN <= value <= INT64_MAX:
            raise InvalidFilter(f"{name} is out of range: nanoseconds must fit in 64 bits")
    if f.since_ns is not None and f.until_ns is not None and f.since_ns > f.until_ns:
        raise InvalidFilter("since is after until: the time range is empty")
    if f.min_duration_ns is not None and f.min_duration_ns < 0:
        raise InvalidFilter("min_duration must not be negative")
    if f.min_cost is not None:
        if isinstance(f.min_cost, bool) or not isinstance(f.min_cost, (int, float)):
            raise InvalidFilter("min_cost must be a number")
        if not math.isfinite(f.min_cost) or f.min_cost < 0:
            raise InvalidFilter("min_cost must be a non-negative finite number")
    return f


def _choice(name: str, value: object, allowed: Iterable[str]) -> None:
    options = tuple(allowed)
    if value not in options:
        raise InvalidFilter(f"{name} must be one of {', '.join(options)}; got {value!r}")


def zone(tz: str) -> ZoneInfo | None:
    """None for UTC; raises InvalidFilter for an unknown IANA name."""
    if not isinstance(tz, str) or not tz:
        raise InvalidFilter("tz must be an IANA time zone name such as 'UTC' or 'Europe/Paris'")
    if tz in ("UTC", "Etc/UTC", "utc"):
        return None
    try:
        return ZoneInfo(tz)
    except (KeyError, ValueError, OSError, TypeError):
        raise InvalidFilter(f"unknown time zone {tz!r}: use an IANA name such as 'Europe/Paris'") from None


def bucket_start(minute_ns: int, bucket: Bucket, tz: ZoneInfo | None) -> int:
    """UTC ns of the start of the ``bucket`` containing ``minute_ns``, buckets aligned in ``tz``."""
    if tz is None:
        size = {"minute": _MINUTE_NS, "hour": 60 * _MINUTE_NS, "day": 1440 * _MINUTE_NS}[bucket]
        return minute_ns - minute_ns % size
    local = datetime.fromtimestamp(minute_ns // 1_000_000_000, tz)  # sets fold in repeated hours
    if bucket == "minute":
        local = local.replace(second=0, microsecond=0)
    elif bucket == "hour":
        local = local.replace(minute=0, second=0, microsecond=0)  # keeps fold: 01:00 EST != 01:00 EDT
    else:
        local = local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
    return ((local - _EPOCH) // timedelta(seconds=1)) * 1_000_000_000


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not sorted_values:
        return 0.0
    rank = p * (len(sorted_values) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


# Usage analytics: one row per model call. Its service is its own (written with it from schema
# version 4 on), else its span's, else its trace's: rows written before, or by an older writer, have
# none. The span and trace are looked up only for those rows: COALESCE evaluates its arguments
# lazily on both backends.
_SPAN_SERVICE = "(SELECT s.service FROM spans s WHERE s.trace_id = u.trace_id AND s.span_id = u.span_id)"
_TRACE_SERVICE = "(SELECT t.service FROM traces t WHERE t.trace_id = u.trace_id)"
_MODEL = f"COALESCE(u.request_model, u.response_model, '{UNKNOWN}')"
_COST = "(CASE WHEN u.cache_hit = 1 THEN 0.0 ELSE u.cost END)"
_ERROR = "(CASE WHEN u.status = 'error' THEN 1 ELSE 0 END)"
_UNPRICED = (
    f"(CASE WHEN {_COST} IS NULL AND (u.input_tokens IS NOT NULL OR u.output_tokens IS NOT NULL) "
    "THEN 1 ELSE 0 END)"
)
_GROUPS = ("model", "provider", "service", "service_tier")
_BUCKET_S = {"minute": 60, "hour": 3600, "day": 86400}


def _service(version: int) -> str:
    own = ("u.service",) if version >= 4 else ()
    return f"COALESCE({', '.join((*own, _SPAN_SERVICE, _TRACE_SERVICE))})"


def _group(group_by: str, version: int) -> str:
    if group_by == "service":
        return f"COALESCE({_service(version)}, '')"
    if group_by == "service_tier":  # written from schema version 5 on
        return "COALESCE(u.service_tier, '')" if version >= 5 else "''"
    return _MODEL if group_by == "model" else "u.provider"


def _floor_div(x: str, n: int) -> str:
    """``floor(x / n)`` for a positive ``n``, in integers on both backends (their ``/`` truncates)."""
    return f"(CASE WHEN {x} < 0 THEN ({x} + 1) / {n} - 1 ELSE ({x}) / {n} END)"


def _usage_where(f: TraceFilter, version: int) -> tuple[str, list[Any]]:
    conds: list[str] = []
    params: list[Any] = []
    if f.service is not None:
        conds.append(f"{_service(version)} = ?")
        params.append(f.service)
    if f.model is not None:
        conds.append("(u.request_model = ? OR u.response_model = ?)")
        params += [f.model, f.model]
    if f.provider is not None:
        conds.append("u.provider = ?")
        params.append(f.provider)
    if f.status is not None:
        conds.append("u.status = 'error'" if f.status == "error" else "u.status <> 'error'")
    if f.since_ns is not None:
        conds.append("u.start_ns >= ?")
        params.append(f.since_ns)
    if f.until_ns is not None:
        conds.append("u.start_ns < ?")
        params.append(f.until_ns)
    if f.min_cost is not None:
        conds.append(f"{_COST} >= ?")
        params.append(float(f.min_cost))
    if f.min_duration_ns is not None:
        conds.append("u.duration_s >= ?")
        params.append(f.min_duration_ns / 1e9)
    return (" WHERE " + " AND ".join(conds) if conds else ""), params


def _utc_offset_s(minute: int, tz: ZoneInfo) -> int:
    offset = datetime.fromtimestamp(minute * 60, tz).utcoffset()
    return 0 if offset is None else int(offset.total_seconds())


def _offset_stretches(tz: ZoneInfo | None, first: int, last: int) -> list[tuple[int, int]]:
    """``(first minute, UTC offset in s)`` of each stretch of minutes ``first..last`` (minute numbers
    since the epoch) over which ``tz`` keeps one offset, taken at each minute's start as
    :func:`bucket_start` takes it. Probed a day apart, then bisected to the minute: a zone that
    changed its offset and back within one day would be missed (none has)."""
    if tz is None:
        return [(first, 0)]
    stretches = [(first, _utc_offset_s(first, tz))]
    probe = first
    while probe < last:
        ahead = min(probe + 1440, last)
        if _utc_offset_s(ahead, tz) == stretches[-1][1]:
            probe = ahead
            continue
        low, high = probe, ahead  # the offset changes in (low, high]
        while high - low > 1:
            middle = (low + high) // 2
            if _utc_offset_s(middle, tz) == stretches[-1][1]:
                low = middle
            else:
                high = middle
        stretches.append((high, _utc_offset_s(high, tz)))
        probe = high
    return stretches


_PROBE_LIMIT = 1000
"""A trace filter that an index shows to match at most this many traces leads the listing (its
matches are fetched and sorted); one that matches more is checked on each trace while the listing
walks the traces newest first along their start index, which stops after one page."""


@dataclass(frozen=True, slots=True)
class _Narrowing:
    """A trace filter an index can count: ``probe`` (a FROM clause), and the condition to use when
    it matches few traces (``few``, which leads the query) or many (``many``, checked per trace)."""

    probe: str
    few: str
    many: str
    value: Any


def _narrowings(f: TraceFilter, version: int) -> list[_Narrowing]:
    found = []
    for kind, value in (("model", f.model), ("provider", f.provider)):
        if value is not None:
            keys = f"trace_keys k WHERE k.kind = '{kind}' AND k.value = ?"
            found.append(
                _Narrowing(
                    f"FROM {keys}",
                    f"trace_id IN (SELECT k.trace_id FROM {keys})",
                    f"EXISTS (SELECT 1 FROM {keys} AND k.trace_id = traces.trace_id)",
                    value,
                )
            )
    for column, minimum in (
        ("cost", None if f.min_cost is None else float(f.min_cost)),
        ("duration_ns", f.min_duration_ns),
    ):
        if minimum is not None:
            indexed = version >= 4  # traces_cost, traces_duration
            found.append(
                _Narrowing(
                    f"FROM traces WHERE {column} >= ?" if indexed else "",
                    f"trace_id IN (SELECT trace_id FROM traces WHERE {column} >= ?)",
                    f"{column} >= ?",
                    minimum,
                )
            )
    return found


def _trace_where(f: TraceFilter) -> tuple[list[str], list[Any]]:
    """The other conditions: the service (its index, on (service, start), keeps the order) and
    the status and time range (checked along whichever index the listing walks)."""
    conds: list[str] = []
    params: list[Any] = []
    if f.service is not None:
        conds.append("service = ?")
        params.append(f.service)
    if f.status is not None:
        conds.append("status = ?")
        params.append(f.status)
    if f.since_ns is not None:
        conds.append("start_ns >= ?")
        params.append(f.since_ns)
    if f.until_ns is not None:
        conds.append("start_ns < ?")
        params.append(f.until_ns)
    return conds, params


def _int(value: Any) -> int:
    return 0 if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


# --------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------
class SqlStore(ABC):
    """Everything but the connection handling, shared by the SQLite and PostgreSQL stores."""

    url: str
    dialect: Dialect
    _store_id: str
    read_only = False
    """Opened by a reader (``create=False``): nothing is written, the schema is read as it is."""
    _version = CURRENT_VERSION
    """The schema version the queries are written for (a reader's store may be older)."""

    def __init__(self) -> None:
        self._closed = False
        self._close_lock = threading.Lock()

    # -- backend hooks -----------------------------------------------------------------
    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction, exclusive against other writers of the same database."""

    @abstractmethod
    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read-only statement and return its rows."""

    # -- writes ------------------------------------------------------------------------
    def write(
        self,
        spans: Sequence[SpanRecord],
        usage: Sequence[UsageRecord],
        evaluations: Sequence[EvaluationRecord] = (),
    ) -> None:
        """Write one batch in one transaction; spans, usage records and evaluations already stored
        are left as they are.

        Database errors (``sqlite3.OperationalError``, ``psycopg.OperationalError``, ...) propagate
        unchanged, so the writer can classify them.
        """
        facts = {}
        for span in spans:
            f = _span_facts(span)
            facts[(f.trace_id, f.span_id)] = f
        usage_rows = {(r[0], r[1]): r for r in map(_usage_row, usage)}
        evaluation_rows = {(r[0], r[1]): r for r in map(_evaluation_row, evaluations)}
        if not facts and not usage_rows and not evaluation_rows:
            return
        if self.read_only:
            raise StoreError(f"the store {self.url} was opened for reading only")
        if evaluation_rows and self._version < EVALUATIONS_VERSION:
            raise StoreError(
                f"the store {self.url} has schema version {self._version}: it keeps evaluations from "
                f"version {EVALUATIONS_VERSION} on (llmtrace.configure() upgrades it)"
            )
        with self._transaction() as tx:
            new = self._new_spans(tx, facts)
            if new:
                tx.executemany(_INSERT_SPAN, [f.row for f in new])
                self._update_traces(tx, new)
            keys: set[tuple[str, str, str]] = set()
            for f in new:
                for kind, value in (
                    ("model", f.request_model),
                    ("model", f.response_model),
                    ("provider", f.provider),
                ):
                    if value:
                        keys.add((kind, value, f.trace_id))
            for row in usage_rows.values():
                for kind, value in (("model", row[4]), ("model", row[5]), ("provider", row[3])):
                    if value:
                        keys.add((kind, value, row[0]))
            if keys:
                tx.executemany(_INSERT_KEY, sorted(keys))
            if usage_rows:
                tx.executemany(_INSERT_USAGE, list(usage_rows.values()))
            if evaluation_rows:
                tx.executemany(_INSERT_EVALUATION, list(evaluation_rows.values()))

    def _new_spans(self, tx: Tx, facts: Mapping[tuple[str, str], _SpanFacts]) -> list[_SpanFacts]:
        by_trace: dict[str, list[str]] = {}
        for trace_id, span_id in facts:
            by_trace.setdefault(trace_id, []).append(span_id)
        existing: set[tuple[str, str]] = set()
        for trace_id, span_ids in by_trace.items():
            for chunk in _chunks(span_ids):
                rows = tx.execute(
                    "SELECT span_id FROM spans WHERE trace_id = ? "
                    f"AND span_id IN ({', '.join('?' * len(chunk))})",
                    (trace_id, *chunk),
                )
                existing.update((trace_id, r[0]) for r in rows)
        return [f for key, f in facts.items() if key not in existing]

    def _update_traces(self, tx: Tx, new: Sequence[_SpanFacts]) -> None:
        trace_ids = sorted({f.trace_id for f in new})
        states: dict[str, _TraceState] = {}
        for chunk in _chunks(trace_ids):
            rows = tx.execute(
                f"SELECT {', '.join(_TRACE_COLUMNS)} FROM traces "
                f"WHERE trace_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for row in rows:
                states[row[0]] = _TraceState.from_row(row)
        for f in new:
            state = states.get(f.trace_id)
            if state is None:
                states[f.trace_id] = _TraceState.first(f)
            else:
                state.add(f)
        tx.executemany(_UPSERT_TRACE, [states[t].row() for t in trace_ids])

    # -- traces ------------------------------------------------------------------------
    def get_trace(self, trace_id: str) -> Trace:
        if not isinstance(trace_id, str) or not trace_id.strip():
            raise TraceNotFound("a trace id is a 32-character hex string")
        wanted = trace_id.strip().lower()
        columns = _SPAN_COLUMNS if self._version >= 3 else f"{_SPAN_COLUMNS_V1}{', NULL' * 9}"
        rows = self._read(
            f"SELECT {columns} FROM spans WHERE trace_id = ? ORDER BY start_ns, span_id", (wanted,)
        )
        evaluations = self.get_evaluations(wanted)
        if not rows and not evaluations:
            raise TraceNotFound(f"no trace {wanted} in {self.url}")
        return Trace(wanted, tuple(self._span_record(r) for r in rows), evaluations)

    def get_evaluations(self, trace_id: str) -> tuple[EvaluationRecord, ...]:
        """The evaluations of one trace, in the order they were recorded (none before schema
        version 6)."""
        if self._version < EVALUATIONS_VERSION:
            return ()
        rows = self._read(
            f"SELECT {_EVALUATION_COLUMNS} FROM evaluations WHERE trace_id = ? "
            "ORDER BY time_ns, evaluation_id",
            (trace_id.strip().lower(),),
        )
        return tuple(
            EvaluationRecord(
                trace_id=str(r[0]),
                evaluation_id=str(r[1]),
                span_id=str(r[2]),
                time_ns=int(r[3]),
                name=str(r[4]),
                score=_float(r[5]),
                label=r[6],
                explanation=r[7],
                response_id=r[8],
                service=r[9],
            )
            for r in rows
        )

    @staticmethod
    def _span_record(row: Sequence[Any]) -> SpanRecord:
        attributes, events, links, resource = (load_json(v) for v in row[9:13])
        # Rows written before schema version 3 have NULLs from column 23 on, and events and links
        # without their dropped-attribute counts and flags.
        return SpanRecord(
            trace_id=row[0],
            span_id=row[1],
            parent_span_id=row[2],
            name=row[3],
            kind=row[4],
            start_ns=int(row[5]),
            end_ns=int(row[6]),
            status_code=row[7],
            status_message=row[8],
            attributes=attributes,
            events=tuple(_span_event(*event) for event in events),
            links=tuple(_span_link(*link) for link in links),
            resource=resource,
            scope=row[13],
            scope_version=row[23],
            scope_schema_url=row[24],
            scope_attributes=load_json(row[25]) if row[25] is not None else {},
            resource_schema_url=row[26],
            trace_state=row[27],
            flags=None if row[28] is None else int(row[28]),
            dropped_attributes=_int(row[29]),
            dropped_events=_int(row[30]),
            dropped_links=_int(row[31]),
        )

    def get_usage(self, trace_id: str) -> list[UsageRecord]:
        """The usage records of one trace, by start time (not part of the Store protocol)."""
        columns = _USAGE_COLUMNS  # what older versions lack, as NULL
        if self._version == 4:
            columns = f"{_USAGE_COLUMNS_V4}, NULL, NULL, NULL"
        elif self._version < 4:
            columns = f"{_USAGE_COLUMNS_V1}, NULL, NULL, NULL, NULL"
        rows = self._read(
            f"SELECT {columns} FROM usage WHERE trace_id = ? ORDER BY start_ns, span_id",
            (trace_id.strip().lower(),),
        )
        return [
            UsageRecord(
                operation=r[2],
                provider=r[3],
                request_model=r[4],
                response_model=r[5],
                framework=r[6],
                input_tokens=r[7],
                output_tokens=r[8],
                cache_read_tokens=r[9],
                cache_write_tokens=r[10],
                reasoning_tokens=r[11],
                cost=_float(r[12]),
                duration_s=float(r[13]),
                time_to_first_chunk_s=_float(r[14]),
                streamed=bool(r[15]),
                status=r[16],
                error_type=r[17],
                cache_hit=None if r[18] is None else bool(r[18]),
                trace_id=r[0],
                span_id=r[1],
                start_time_unix_nano=int(r[19]),
                dimensions=dict(load_json(r[20])),
                service=r[21],
                cache_write_1h_tokens=r[22],
                service_tier=r[23],
                unpriced_reason=r[24],
            )
            for r in rows
        ]

    def list_traces(
        self, filter: TraceFilter | None = None, *, limit: int = 20, cursor: str | None = None
    ) -> Page:
        f = check_filter(filter)
        if not _is_int(limit) or limit < 1:
            raise InvalidFilter(f"limit must be a positive integer, not {limit!r}")
        position = _cursor.decode(self._store_id, f, cursor) if cursor is not None else None
        if position is not None:  # later pages keep the first page's time window
            f = replace(f, since_ns=position.since_ns, until_ns=position.until_ns)
        conds, params = self._narrowed(f)
        if conds is None:  # an index shows that nothing matches
            return Page([], None)
        more, more_params = _trace_where(f)
        conds += more
        params += more_params
        if position is not None:
            conds.append("start_ns <= ? AND (start_ns < ? OR trace_id < ?)")
            params += [position.start_ns, position.start_ns, position.trace_id]
        where = " WHERE " + " AND ".join(conds) if conds else ""
        rows = self._read(
            "SELECT trace_id, service, root_name, start_ns, duration_ns, span_count, input_tokens, "
            f"output_tokens, cost, status FROM traces{where} ORDER BY start_ns DESC, trace_id DESC LIMIT ?",
            (*params, limit + 1),
        )
        unpriced = self._unpriced_calls([r[0] for r in rows[:limit]])
        items = [
            TraceSummary(
                trace_id=r[0],
                service=r[1],
                root_name=r[2],
                start_ns=int(r[3]),
                duration_ns=int(r[4]),
                span_count=int(r[5]),
                input_tokens=int(r[6]),
                output_tokens=int(r[7]),
                cost=_float(r[8]),
                status=_status(r[9]),
                unpriced_calls=sum(unpriced.get(r[0], {}).values()),
                unpriced_by_reason=unpriced.get(r[0], {}),
            )
            for r in rows[:limit]
        ]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = _cursor.encode(self._store_id, f, last.start_ns, last.trace_id)
        return Page(items, next_cursor)

    def _unpriced_calls(self, trace_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per trace, its model-call spans with token usage and no cost (as ``unpriced_calls`` of
        the usage analytics counts calls), by reason: the trace's cost leaves them out."""
        reason = f"COALESCE(unpriced_reason, '{UNKNOWN}')" if self._version >= 5 else f"'{UNKNOWN}'"
        found: dict[str, dict[str, int]] = {}
        for chunk in _chunks(trace_ids):
            rows = self._read(
                f"SELECT trace_id, {reason}, COUNT(*) FROM spans "
                f"WHERE trace_id IN ({', '.join('?' * len(chunk))}) AND cost IS NULL "
                "AND (input_tokens IS NOT NULL OR output_tokens IS NOT NULL) GROUP BY 1, 2",
                chunk,
            )
            for trace_id, why, n in rows:
                found.setdefault(str(trace_id), {})[str(why)] = int(n)
        return found

    def find_trace_ids(self, prefix: str, *, limit: int = 2) -> tuple[list[str], int]:
        """Up to ``limit`` trace ids that start with ``prefix`` (lowercase hex), and how many match
        (counted up to ``_PROBE_LIMIT``): a range of the traces' primary key."""
        if not re.fullmatch(r"[0-9a-f]{1,32}", prefix):
            raise InvalidFilter(f"{prefix!r} is not the beginning of a trace id (lowercase hex)")
        bounds = (prefix, prefix + "g")  # "g" sorts after every hex digit, bytewise on both backends
        rows = self._read(
            "SELECT trace_id FROM traces WHERE trace_id >= ? AND trace_id < ? ORDER BY trace_id LIMIT ?",
            (*bounds, max(1, limit)),
        )
        found = [str(r[0]) for r in rows]
        total = len(found)
        if total >= limit:
            total = _int(
                self._read(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM traces WHERE trace_id >= ? AND trace_id < ? "
                    f"LIMIT {_PROBE_LIMIT}) p",
                    bounds,
                )[0][0]
            )
        return found, total

    # -- retention ---------------------------------------------------------------------
    def prune_batch(self, cutoff_ns: int, *, now_ns: int, max_spans: int = _retention.BATCH_SPANS) -> Pruned:
        """One short transaction of :func:`llmtrace.store._retention.delete_batch`. Database
        errors propagate unchanged (as from :meth:`write`), so the writer can classify them."""
        if self.read_only:
            raise StoreError(f"the store {self.url} was opened for reading only")
        evaluations = self._version >= EVALUATIONS_VERSION
        with self._transaction() as tx:
            return _retention.delete_batch(
                tx, int(cutoff_ns), int(now_ns), max_spans, evaluations=evaluations
            )

    def count_prunable(self, cutoff_ns: int, *, now_ns: int) -> Pruned:
        evaluations = self._version >= EVALUATIONS_VERSION
        return _retention.count(self._read, int(cutoff_ns), int(now_ns), evaluations=evaluations)

    def _narrowed(self, f: TraceFilter) -> tuple[list[str] | None, list[Any]]:
        """The conditions of the filters that an index can count, each in the form that suits how
        many traces it matches (see ``_PROBE_LIMIT``); None when one matches no trace."""
        conds: list[str] = []
        params: list[Any] = []
        for narrowing in _narrowings(f, self._version):
            matches = _PROBE_LIMIT + 1
            if narrowing.probe:
                matches = _int(
                    self._read(
                        f"SELECT COUNT(*) FROM (SELECT 1 {narrowing.probe} LIMIT {_PROBE_LIMIT + 1}) p",
                        (narrowing.value,),
                    )[0][0]
                )
            if matches == 0:
                return None, []
            conds.append(narrowing.few if matches <= _PROBE_LIMIT else narrowing.many)
            params.append(narrowing.value)
        return conds, params

    # -- usage analytics ---------------------------------------------------------------
    def usage_summary(self, filter: TraceFilter | None = None) -> UsageSummary:
        where, params = _usage_where(check_filter(filter), self._version)
        write_1h = "SUM(u.cache_write_1h_tokens)" if self._version >= 5 else "NULL"
        row = self._read(
            "SELECT COUNT(*), SUM(u.input_tokens), SUM(u.output_tokens), SUM(u.cache_read_tokens), "
            f"SUM(u.cache_write_tokens), SUM(u.reasoning_tokens), SUM({_COST}), "
            f"SUM({_UNPRICED}), SUM({_ERROR}), "
            f"SUM(CASE WHEN u.cache_hit = 1 THEN 1 ELSE 0 END), {write_1h} FROM usage u{where}",
            params,
        )[0]
        unpriced = _int(row[7])
        by_reason: dict[str, int] = {}
        if unpriced and self._version >= 5:  # a second pass over the matched calls only when some are
            unpriced_where = (where + " AND " if where else " WHERE ") + f"{_UNPRICED} = 1"
            rows = self._read(
                f"SELECT COALESCE(u.unpriced_reason, '{UNKNOWN}'), COUNT(*) FROM usage u{unpriced_where} "
                "GROUP BY 1",
                params,
            )
            by_reason = {str(why): int(n) for why, n in rows}
        elif unpriced:
            by_reason = {UNKNOWN: unpriced}
        return UsageSummary(
            calls=_int(row[0]),
            input_tokens=_int(row[1]),
            output_tokens=_int(row[2]),
            cache_read_tokens=_int(row[3]),
            cache_write_tokens=_int(row[4]),
            reasoning_tokens=_int(row[5]),
            cost=_float(row[6]),
            unpriced_calls=_int(row[7]),
            error_calls=_int(row[8]),
            cache_hits=_int(row[9]),
            cache_write_1h_tokens=_int(row[10]),
            unpriced_by_reason=by_reason,
        )

    def usage_series(
        self, *, group_by: GroupBy, bucket: Bucket, filter: TraceFilter | None = None, tz: str = "UTC"
    ) -> list[SeriesPoint]:
        """Bucketed in SQL: one row per bucket (and per offset of ``tz`` within it) and group."""
        _choice("group_by", group_by, _GROUPS)
        _choice("bucket", bucket, tuple(_BUCKET_S))
        zone_info = zone(tz)
        where, params = _usage_where(check_filter(filter), self._version)
        minute = _floor_div("u.start_ns", _MINUTE_NS)
        offset = "0"
        if zone_info is not None:  # the zone's offsets over the stored calls' time span (two index seeks)
            first, last = self._read(
                "SELECT (SELECT MIN(start_ns) FROM usage), (SELECT MAX(start_ns) FROM usage)"
            )[0]
            if first is None:
                return []
            stretches = _offset_stretches(zone_info, int(first) // _MINUTE_NS, int(last) // _MINUTE_NS)
            offset = str(stretches[0][1])
            if len(stretches) > 1:
                cases = " ".join(
                    f"WHEN m < {begin} THEN {previous[1]}"
                    for previous, (begin, _) in itertools.pairwise(stretches)
                )
                offset = f"CASE {cases} ELSE {stretches[-1][1]} END"
        # the local bucket of each call's minute; the minute's offset tells apart the two 01:00 hours
        # of a night when clocks go back. bucket_start (of the first minute) then gives the UTC start.
        source = (
            f"SELECT {_group(group_by, self._version)} AS g, {minute} AS m, u.input_tokens AS i, "
            f"u.output_tokens AS x, {_COST} AS c FROM usage u{where}"
        )
        rows = self._read(
            f"SELECT g, o, {_floor_div('m * 60 + o', _BUCKET_S[bucket])}, MIN(m), COUNT(*), SUM(i), "
            f"SUM(x), SUM(c) FROM (SELECT g, m, i, x, c, {offset} AS o FROM ({source}) r) q GROUP BY 1, 2, 3",
            params,
        )
        points: dict[tuple[int, str], list[Any]] = {}
        for group, _offset, _bucket, first_minute, calls, inp, out, cost in rows:
            start = bucket_start(int(first_minute) * _MINUTE_NS, bucket, zone_info)
            acc = points.setdefault((start, group), [0, 0, 0, None])
            acc[0] += int(calls)
            acc[1] += _int(inp)
            acc[2] += _int(out)
            acc[3] = _add(acc[3], _float(cost))
        return [
            SeriesPoint(start, group, acc[0], acc[1], acc[2], acc[3])
            for (start, group), acc in sorted(points.items())
        ]

    def usage_time_range(self, filter: TraceFilter | None = None) -> tuple[int, int] | None:
        where, params = _usage_where(check_filter(filter), self._version)
        first, last = self._read(f"SELECT MIN(u.start_ns), MAX(u.start_ns) FROM usage u{where}", params)[0]
        return None if first is None else (int(first), int(last))

    def model_stats(self, filter: TraceFilter | None = None) -> list[ModelStats]:
        where, params = _usage_where(check_filter(filter), self._version)
        rows = self._read(
            f"SELECT {_MODEL}, u.provider, COUNT(*), SUM(u.input_tokens), SUM(u.output_tokens), "
            f"SUM({_COST}), SUM(u.duration_s), SUM({_ERROR}) FROM usage u{where} GROUP BY 1, 2",
            params,
        )
        stats = [
            ModelStats(
                model=model,
                provider=provider,
                calls=int(calls),
                input_tokens=_int(inp),
                output_tokens=_int(out),
                cost=_float(cost),
                mean_duration_s=float(duration) / int(calls),
                error_rate=_int(errors) / int(calls),
            )
            for model, provider, calls, inp, out, cost, duration, errors in rows
        ]
        return sorted(stats, key=lambda s: (s.model, s.provider))

    def latency_percentiles(self, *, by: LatencyBy, filter: TraceFilter | None = None) -> list[Percentiles]:
        _choice("by", by, ("model", "operation"))
        where, params = _usage_where(check_filter(filter), self._version)
        key = _MODEL if by == "model" else "u.operation"
        if self.dialect == "postgresql":  # percentile_cont interpolates as percentile() does
            rows = self._read(
                f"SELECT {key}, COUNT(*), percentile_cont(ARRAY[{', '.join(map(str, _PERCENTILES))}]) "
                f"WITHIN GROUP (ORDER BY u.duration_s) FROM usage u{where} GROUP BY 1",
                params,
            )
            result = [Percentiles(name, int(n), *(float(v) for v in values)) for name, n, values in rows]
        elif sqlite3.sqlite_version_info >= (3, 25, 0):
            result = self._ranked_percentiles(key, where, params)
        else:  # no window functions: sort in Python
            rows = self._read(f"SELECT {key}, u.duration_s FROM usage u{where}", params)
            durations: dict[str, list[float]] = {}
            for name, duration in rows:
                durations.setdefault(name, []).append(float(duration))
            result = []
            for name, values in durations.items():
                values.sort()
                result.append(Percentiles(name, len(values), *(percentile(values, p) for p in _PERCENTILES)))
        return sorted(result, key=lambda r: r.key)

    def _ranked_percentiles(self, key: str, where: str, params: Sequence[Any]) -> list[Percentiles]:
        """SQLite: one sort in the database numbers each key's durations; only those at the ranks the
        percentiles interpolate between reach Python (``p * (n - 1)`` is the same double in SQL)."""
        near = " OR ".join(f"r - CAST({p} * (n - 1) AS INTEGER) IN (0, 1)" for p in _PERCENTILES)
        rows = self._read(
            "SELECT k, n, r, d FROM (SELECT k, d, ROW_NUMBER() OVER (PARTITION BY k ORDER BY d) - 1 AS r, "
            f"COUNT(*) OVER (PARTITION BY k) AS n FROM (SELECT {key} AS k, u.duration_s AS d "
            f"FROM usage u{where}) c) w WHERE {near}",
            params,
        )
        counts: dict[str, int] = {}
        at: dict[tuple[str, int], float] = {}
        for name, n, rank, duration in rows:
            counts[name] = int(n)
            at[name, int(rank)] = float(duration)
        result = []
        for name, count in counts.items():
            values = []
            for p in _PERCENTILES:
                rank = p * (count - 1)
                low = math.floor(rank)
                high = min(low + 1, count - 1)
                values.append(at[name, low] + (at[name, high] - at[name, low]) * (rank - low))
            result.append(Percentiles(name, count, *values))
        return result

    def error_rates(self, *, by: ErrorBy, filter: TraceFilter | None = None) -> list[ErrorRate]:
        _choice("by", by, ("error_type", "model", "provider"))
        where, params = _usage_where(check_filter(filter), self._version)
        if by == "error_type":
            total = _int(self._read(f"SELECT COUNT(*) FROM usage u{where}", params)[0][0])
            error_where = (where + " AND " if where else " WHERE ") + "u.status = 'error'"
            rows = self._read(
                f"SELECT COALESCE(u.error_type, '{UNKNOWN}'), COUNT(*) FROM usage u{error_where} GROUP BY 1",
                params,
            )
            rates = [ErrorRate(key, total, int(errors)) for key, errors in rows]
        else:
            key = _MODEL if by == "model" else "u.provider"
            rows = self._read(f"SELECT {key}, COUNT(*), SUM({_ERROR}) FROM usage u{where} GROUP BY 1", params)
            rates = [ErrorRate(name, int(calls), _int(errors)) for name, calls, errors in rows]
        return sorted(rates, key=lambda r: (-r.errors, r.key))


def _status(value: str) -> TraceStatus:
    return "error" if value == "error" else "ok"
