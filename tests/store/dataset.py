"""A fixed, hand-checkable data set for store analytics (reusable by the CLI tests).

Nine model calls in five traces, spread across the UTC day boundary 2024-03-09/10 and the
America/New_York DST start (2024-03-10 02:00 EST = 07:00 UTC, clocks jump to 03:00 EDT):

===  ===================  ========  =========  ======================  ====  ===  =====  =====  ==============
id   start (UTC)          service   provider   request model           in    out  cost   dur s  outcome
===  ===================  ========  =========  ======================  ====  ===  =====  =====  ==============
R1   2024-03-09 23:58:30  checkout  openai     gpt-4o (*)              100   50   0.010  1.0    ok, cache_r 20
R2   2024-03-09 23:59:10  checkout  openai     gpt-4o (*)              200   20   0.020  2.0    ok, reason. 5
R3   2024-03-10 00:00:20  checkout  openai     gpt-4o                  -     -    (0)    0.01   cache hit
R4   2024-03-10 06:59:00  search    anthropic  claude-3-5-sonnet       -     -    -      0.5    RateLimitError
R5   2024-03-10 07:01:00  search    anthropic  claude-3-5-sonnet       300   100  0.030  3.0    ok, cache_w 50
R6   2024-03-10 18:40:00  search    ollama     llama3                  400   40   None   4.0    ok, unpriced
R7   2024-03-10 18:40:30  search    anthropic  claude-3-5-sonnet       -     -    -      0.4    RateLimitError
R8   2024-03-11 04:30:00  checkout  openai     text-embedding-3-small  1000  -    0.002  0.2    ok, embeddings
R9   2024-03-11 04:30:40  checkout  openai     gpt-4o                  -     -    -      10.0   timeout
===  ===================  ========  =========  ======================  ====  ===  =====  =====  ==============

(*) response model gpt-4o-2024-08-06. Service tiers: R1 ``default``, R2 ``flex``, R5 ``standard``,
none reported for the others. R5's 50 cache-write tokens include 30 one-hour writes. R6 is unpriced
for ``unknown_model``. Traces (root span first, then the model-call spans):

* A checkout ``invoke_agent shopper``   [R1-1s, R2+3s]  R1, R2 and a tool span: 4 spans, 44 s, ok
* B checkout ``chain cached``           [R3-0.1s, R3+0.5s]  R3: 2 spans, 0.6 s, ok, cost 0.0
* C search   ``invoke_agent researcher`` [R4-1s, R5+4s]  R4, R5: 3 spans, 125 s, error
* D search   ``invoke_agent researcher`` [R6-1s, R6+35s] R6, R7: 3 spans, 36 s, error, cost None
* E checkout ``embed and answer``       [R8-1s, R8+50s] R8, R9: 3 spans, 51 s, error
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from llmtrace import semconv
from llmtrace._usage import UsageRecord, service_tier_attribute
from llmtrace.store import SpanEvent, SpanRecord, Store

S = 1_000_000_000


def ns(text: str) -> int:
    """UTC ISO time (no zone) to ns."""
    dt = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * S + dt.microsecond * 1000


@dataclass(frozen=True)
class Call:
    name: str
    start: int
    service: str
    provider: str
    request_model: str
    response_model: str | None
    operation: str = semconv.OP_CHAT
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    reasoning: int | None = None
    cost: float | None = None
    duration_s: float = 1.0
    error_type: str | None = None
    cache_hit: bool | None = None
    cache_write_1h: int | None = None
    service_tier: str | None = None
    unpriced_reason: str | None = None


R1 = Call(
    "R1",
    ns("2024-03-09T23:58:30"),
    "checkout",
    "openai",
    "gpt-4o",
    "gpt-4o-2024-08-06",
    input_tokens=100,
    output_tokens=50,
    cache_read=20,
    cost=0.010,
    duration_s=1.0,
    cache_hit=False,
    service_tier="default",
)
R2 = Call(
    "R2",
    ns("2024-03-09T23:59:10"),
    "checkout",
    "openai",
    "gpt-4o",
    "gpt-4o-2024-08-06",
    input_tokens=200,
    output_tokens=20,
    reasoning=5,
    cost=0.020,
    duration_s=2.0,
    service_tier="flex",
)
R3 = Call(
    "R3", ns("2024-03-10T00:00:20"), "checkout", "openai", "gpt-4o", None, duration_s=0.01, cache_hit=True
)
R4 = Call(
    "R4",
    ns("2024-03-10T06:59:00"),
    "search",
    "anthropic",
    "claude-3-5-sonnet",
    None,
    duration_s=0.5,
    error_type="RateLimitError",
)
R5 = Call(
    "R5",
    ns("2024-03-10T07:01:00"),
    "search",
    "anthropic",
    "claude-3-5-sonnet",
    "claude-3-5-sonnet",
    input_tokens=300,
    output_tokens=100,
    cache_write=50,
    cost=0.030,
    duration_s=3.0,
    cache_write_1h=30,
    service_tier="standard",
)
R6 = Call(
    "R6",
    ns("2024-03-10T18:40:00"),
    "search",
    "ollama",
    "llama3",
    "llama3",
    input_tokens=400,
    output_tokens=40,
    duration_s=4.0,
    unpriced_reason=semconv.UNPRICED_UNKNOWN_MODEL,
)
R7 = Call(
    "R7",
    ns("2024-03-10T18:40:30"),
    "search",
    "anthropic",
    "claude-3-5-sonnet",
    None,
    duration_s=0.4,
    error_type="RateLimitError",
)
R8 = Call(
    "R8",
    ns("2024-03-11T04:30:00"),
    "checkout",
    "openai",
    "text-embedding-3-small",
    None,
    operation=semconv.OP_EMBEDDINGS,
    input_tokens=1000,
    cost=0.002,
    duration_s=0.2,
)
R9 = Call(
    "R9",
    ns("2024-03-11T04:30:40"),
    "checkout",
    "openai",
    "gpt-4o",
    None,
    duration_s=10.0,
    error_type="timeout",
)
CALLS = (R1, R2, R3, R4, R5, R6, R7, R8, R9)


@dataclass(frozen=True)
class TraceSpec:
    trace_id: str
    service: str
    root_name: str
    start: int
    end: int
    calls: tuple[Call, ...]


TRACE_A = TraceSpec("a" * 32, "checkout", "invoke_agent shopper", R1.start - S, R2.start + 3 * S, (R1, R2))
TRACE_B = TraceSpec("b" * 32, "checkout", "chain cached", R3.start - S // 10, R3.start + S // 2, (R3,))
TRACE_C = TraceSpec("c" * 32, "search", "invoke_agent researcher", R4.start - S, R5.start + 4 * S, (R4, R5))
TRACE_D = TraceSpec("d" * 32, "search", "invoke_agent researcher", R6.start - S, R6.start + 35 * S, (R6, R7))
TRACE_E = TraceSpec("e" * 32, "checkout", "embed and answer", R8.start - S, R8.start + 50 * S, (R8, R9))
TRACES = (TRACE_A, TRACE_B, TRACE_C, TRACE_D, TRACE_E)


def resource(service: str) -> dict[str, Any]:
    return {semconv.SERVICE_NAME: service, "service.version": "1.2.3", "telemetry.sdk.language": "python"}


def root_span(trace: TraceSpec) -> SpanRecord:
    return SpanRecord(
        trace_id=trace.trace_id,
        span_id=trace.trace_id[:15] + "0",
        parent_span_id=None,
        name=trace.root_name,
        kind="INTERNAL",
        start_ns=trace.start,
        end_ns=trace.end,
        status_code="UNSET",
        status_message="",
        attributes={semconv.GEN_AI_OPERATION_NAME: semconv.OP_INVOKE_AGENT},
        events=(),
        links=(),
        resource=resource(trace.service),
        scope=semconv.INSTRUMENTATION_SCOPE,
    )


def call_span(trace: TraceSpec, index: int, call: Call) -> SpanRecord:
    attrs: dict[str, Any] = {
        semconv.GEN_AI_OPERATION_NAME: call.operation,
        semconv.GEN_AI_PROVIDER_NAME: call.provider,
        semconv.GEN_AI_REQUEST_MODEL: call.request_model,
    }
    for key, value in (
        (semconv.GEN_AI_RESPONSE_MODEL, call.response_model),
        (semconv.GEN_AI_USAGE_INPUT_TOKENS, call.input_tokens),
        (semconv.GEN_AI_USAGE_OUTPUT_TOKENS, call.output_tokens),
        (semconv.GEN_AI_USAGE_COST_AMOUNT, call.cost),
        (semconv.ERROR_TYPE, call.error_type),
        (semconv.LLMTRACE_CACHE_HIT, call.cache_hit),
        (semconv.LLMTRACE_USAGE_CACHE_WRITE_1H_INPUT_TOKENS, call.cache_write_1h),
        (service_tier_attribute(call.provider), call.service_tier),
        (semconv.LLMTRACE_COST_UNPRICED_REASON, call.unpriced_reason),
    ):
        if value is not None:
            attrs[key] = value
    if call.cost is None and call.input_tokens is not None:
        attrs[semconv.LLMTRACE_COST_UNPRICED] = True
    return SpanRecord(
        trace_id=trace.trace_id,
        span_id=trace.trace_id[:15] + str(index + 1),
        parent_span_id=root_span(trace).span_id,
        name=semconv.span_name(call.operation, call.request_model),
        kind="CLIENT",
        start_ns=call.start,
        end_ns=call.start + round(call.duration_s * S),
        status_code="ERROR" if call.error_type else "UNSET",
        status_message=call.error_type or "",
        attributes=attrs,
        events=(),
        links=(),
        resource=resource(trace.service),
        scope=semconv.INSTRUMENTATION_SCOPE,
    )


def tool_span(trace: TraceSpec) -> SpanRecord:
    return SpanRecord(
        trace_id=trace.trace_id,
        span_id=trace.trace_id[:15] + "9",
        parent_span_id=root_span(trace).span_id,
        name="execute_tool lookup",
        kind="INTERNAL",
        start_ns=R1.start + 1_500_000_000,
        end_ns=R1.start + 1_800_000_000,
        status_code="UNSET",
        status_message="",
        attributes={
            semconv.GEN_AI_OPERATION_NAME: semconv.OP_EXECUTE_TOOL,
            semconv.GEN_AI_TOOL_NAME: "lookup",
        },
        events=(SpanEvent("tool.result", R1.start + 1_700_000_000, {"rows": 3}),),
        links=(),
        resource=resource(trace.service),
        scope=semconv.INSTRUMENTATION_SCOPE,
    )


def usage_record(trace: TraceSpec, index: int, call: Call) -> UsageRecord:
    return UsageRecord(
        operation=call.operation,
        provider=call.provider,
        request_model=call.request_model,
        response_model=call.response_model,
        framework="langchain",
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cache_read_tokens=call.cache_read,
        cache_write_tokens=call.cache_write,
        reasoning_tokens=call.reasoning,
        cost=0.0 if call.cache_hit else call.cost,
        duration_s=call.duration_s,
        time_to_first_chunk_s=None,
        streamed=False,
        status="error" if call.error_type else "success",
        error_type=call.error_type,
        cache_hit=call.cache_hit,
        trace_id=trace.trace_id,
        span_id=trace.trace_id[:15] + str(index + 1),
        start_time_unix_nano=call.start,
        dimensions={"tier": "free" if trace.service == "search" else "pro"},
        cache_write_1h_tokens=call.cache_write_1h,
        service_tier=call.service_tier,
        unpriced_reason=call.unpriced_reason,
    )


def all_spans() -> list[SpanRecord]:
    spans = []
    for trace in TRACES:
        spans.append(root_span(trace))
        spans.extend(call_span(trace, i, c) for i, c in enumerate(trace.calls))
    spans.append(tool_span(TRACE_A))
    return spans


def all_usage() -> list[UsageRecord]:
    return [usage_record(t, i, c) for t in TRACES for i, c in enumerate(t.calls)]


def write_dataset(store: Store, *, seed: int = 7) -> None:
    """Write the data set as a writer would: children before roots, usage in other batches, and twice."""
    spans, usage = all_spans(), all_usage()
    roots = [s for s in spans if s.parent_span_id is None]
    children = [s for s in spans if s.parent_span_id is not None]
    random.Random(seed).shuffle(children)
    store.write(children[:4], usage[:5])
    store.write(children[4:], [])
    store.write(roots, usage[5:])
    store.write(spans, usage)  # again: idempotent
    store.write([replace(spans[0])], [replace(usage[0])])
