"""NUL characters in the texts of spans and usage records, on every backend.

PostgreSQL's TEXT and JSONB cannot hold NUL: a span whose status message, name, scope or model
name had one made the whole batch fail, and the writer dropped it. Both backends store U+FFFD
instead, in every column, as they already did inside attribute values.
"""

from __future__ import annotations

from dataclasses import replace

from llmtrace import semconv
from llmtrace._usage import UsageRecord
from llmtrace.store import SpanEvent, SpanLink, SpanRecord, Store, TraceFilter

S = 1_000_000_000
T0 = 1_710_000_000 * S
TRACE = "0af7651916cd43dd8448eb211c80319c"
ROOT, CHILD = "b7ad6b7169203331", "00f067aa0ba902b7"


def test_nul_in_any_text_is_replaced_and_nothing_is_lost(store: Store) -> None:
    root = SpanRecord(
        trace_id=TRACE,
        span_id=ROOT,
        parent_span_id=None,
        name="execute_tool nul\x00tool",
        kind="INTERNAL",
        start_ns=T0,
        end_ns=T0 + S,
        status_code="ERROR",
        status_message="bad\x00byte",
        attributes={semconv.ERROR_TYPE: "Value\x00Error"},
        events=(SpanEvent("exception\x00", T0 + 1, {"exception.message": "bad\x00byte"}),),
        links=(SpanLink("1" * 32, "2" * 16, {"why\x00": "x\x00"}),),
        resource={semconv.SERVICE_NAME: "svc\x00"},
        scope="scope\x00",
        scope_version="1.0\x00",
        trace_state="k=v\x00",
    )
    child = replace(
        root,
        span_id=CHILD,
        parent_span_id=ROOT,
        name="chat gpt\x00x",
        start_ns=T0 + 10,
        status_code="OK",
        status_message="",
        attributes={
            semconv.GEN_AI_OPERATION_NAME: semconv.OP_CHAT,
            semconv.GEN_AI_REQUEST_MODEL: "gpt\x00x",
            semconv.GEN_AI_PROVIDER_NAME: "open\x00ai",
        },
        events=(),
        links=(),
    )
    usage = UsageRecord(
        operation="chat",
        provider="open\x00ai",
        request_model="gpt\x00x",
        response_model=None,
        framework="lang\x00chain",
        input_tokens=3,
        output_tokens=1,
        cache_read_tokens=None,
        cache_write_tokens=None,
        reasoning_tokens=None,
        cost=None,
        duration_s=0.5,
        time_to_first_chunk_s=None,
        streamed=False,
        status="error",
        error_type="Value\x00Error",
        cache_hit=None,
        trace_id=TRACE,
        span_id=CHILD,
        start_time_unix_nano=T0 + 10,
    )
    store.write([root, child], [usage])

    got = {span.span_id: span for span in store.get_trace(TRACE).spans}
    first = got[ROOT]
    assert (first.name, first.status_message, first.scope, first.scope_version, first.trace_state) == (
        "execute_tool nul\ufffdtool",
        "bad\ufffdbyte",
        "scope\ufffd",
        "1.0\ufffd",
        "k=v\ufffd",
    )
    assert dict(first.attributes) == {semconv.ERROR_TYPE: "Value\ufffdError"}
    assert first.events == (SpanEvent("exception\ufffd", T0 + 1, {"exception.message": "bad\ufffdbyte"}),)
    assert first.links == (SpanLink("1" * 32, "2" * 16, {"why\ufffd": "x\ufffd"}),)
    assert dict(first.resource) == {semconv.SERVICE_NAME: "svc\ufffd"}
    assert (got[CHILD].name, got[CHILD].attributes[semconv.GEN_AI_REQUEST_MODEL]) == (
        "chat gpt\ufffdx",
        "gpt\ufffdx",
    )

    (summary,) = store.list_traces().items
    assert (summary.root_name, summary.service, summary.span_count) == (
        "execute_tool nul\ufffdtool",
        "svc\ufffd",
        2,
    )
    assert [t.trace_id for t in store.list_traces(TraceFilter(model="gpt\ufffdx")).items] == [TRACE]
    (record,) = store.get_usage(TRACE)  # type: ignore[attr-defined]
    assert (record.provider, record.request_model, record.framework, record.error_type) == (
        "open\ufffdai",
        "gpt\ufffdx",
        "lang\ufffdchain",
        "Value\ufffdError",
    )
