"""What schema version 5 adds to usage records: one-hour cache writes, the service tier that served
a call and why a call is unpriced, on both backends; and a version-4 store upgraded by a writer."""

from __future__ import annotations

from dataclasses import replace

from llmtrace import semconv
from llmtrace._usage import UsageRecord
from llmtrace.store import Store, TraceFilter, _schema, _sql, open_store

from .dataset import (
    R1,
    R5,
    R6,
    TRACE_A,
    TRACE_C,
    TRACE_D,
    Call,
    TraceSpec,
    call_span,
    ns,
    root_span,
    usage_record,
)
from .test_readers import _old_store, _versions

DAY = ns("2024-04-01T00:00")
TRACE = TraceSpec("7" * 32, "tiers", "invoke_agent tiers", DAY + 1, DAY + 3600 * 10**9, ())
PRIORITY = replace(  # an Anthropic call on the priority tier, most of its cache writes one-hour ones
    R5,
    name="P",
    start=DAY + 60 * 10**9,
    input_tokens=1000,
    output_tokens=10,
    cache_write=600,
    cache_write_1h=400,
    cost=0.05,
    service_tier="priority",
)
SCALE = replace(  # OpenAI's scale tier: gpt-4o has no price for it
    R1,
    name="S",
    start=DAY + 120 * 10**9,
    input_tokens=100,
    output_tokens=10,
    cache_read=None,
    cost=None,
    cache_hit=None,
    service_tier="scale",
    unpriced_reason=semconv.UNPRICED_SERVICE_TIER,
)
LLAMA_1 = replace(R6, name="L1", start=DAY + 180 * 10**9, input_tokens=200, output_tokens=20)
LLAMA_2 = replace(R6, name="L2", start=DAY + 240 * 10**9, input_tokens=300, output_tokens=30)
FLEX = replace(
    R1,
    name="F",
    start=DAY + 300 * 10**9,
    input_tokens=50,
    output_tokens=5,
    cache_read=None,
    cost=0.001,
    cache_hit=None,
    service_tier="flex",
)
CALLS: tuple[Call, ...] = (PRIORITY, SCALE, LLAMA_1, LLAMA_2, FLEX)


def _write(store: Store, trace: TraceSpec = TRACE, calls: tuple[Call, ...] = CALLS) -> list[UsageRecord]:
    records = [usage_record(trace, i, call) for i, call in enumerate(calls)]
    store.write([root_span(trace), *(call_span(trace, i, call) for i, call in enumerate(calls))], records)
    return records


def test_tiers_one_hour_writes_and_unpriced_reasons_round_trip(store: Store) -> None:
    records = _write(store)
    assert store.get_usage(TRACE.trace_id) == records  # type: ignore[attr-defined]
    got = {r.span_id[-1]: r for r in store.get_usage(TRACE.trace_id)}  # type: ignore[attr-defined]
    assert (got["1"].cache_write_1h_tokens, got["1"].service_tier, got["1"].unpriced_reason) == (
        400,
        "priority",
        None,
    )
    assert (got["2"].service_tier, got["2"].unpriced_reason) == ("scale", "service_tier")
    assert (got["3"].service_tier, got["3"].unpriced_reason) == (None, "unknown_model")

    summary = store.usage_summary()
    assert (summary.calls, summary.cache_write_tokens, summary.cache_write_1h_tokens) == (5, 600, 400)
    assert summary.unpriced_calls == 3
    assert summary.unpriced_by_reason == {"unknown_model": 2, "service_tier": 1}
    ollama = store.usage_summary(TraceFilter(provider="ollama"))
    assert (ollama.unpriced_calls, ollama.unpriced_by_reason) == (2, {"unknown_model": 2})
    priced = store.usage_summary(TraceFilter(provider="anthropic"))
    assert (priced.unpriced_calls, priced.unpriced_by_reason, priced.cache_write_1h_tokens) == (0, {}, 400)

    # by tier: calls whose provider reported none (the llama3 calls) under ""
    series = store.usage_series(group_by="service_tier", bucket="day")
    assert [
        (p.bucket_start_ns, p.group, p.calls, p.input_tokens, p.output_tokens, p.cost and round(p.cost, 9))
        for p in series
    ] == [
        (DAY, "", 2, 500, 50, None),
        (DAY, "flex", 1, 50, 5, 0.001),
        (DAY, "priority", 1, 1000, 10, 0.05),
        (DAY, "scale", 1, 100, 10, None),
    ]

    # the trace listing counts its unpriced calls by the reason on their spans
    (listed,) = store.list_traces(TraceFilter(service="tiers")).items
    assert (listed.unpriced_calls, listed.unpriced_by_reason) == (3, {"unknown_model": 2, "service_tier": 1})
    assert listed.cost is not None and round(listed.cost, 9) == 0.051


def test_stored_tiers_and_reasons_are_bounded_text(store: Store) -> None:
    (record,) = _write(store, calls=(replace(SCALE, service_tier="t" * 200, unpriced_reason="r\x00" * 50),))
    (got,) = store.get_usage(TRACE.trace_id)  # type: ignore[attr-defined]
    assert got.service_tier == "t" * _sql.MAX_LABEL_LENGTH
    assert got.unpriced_reason == "r\ufffd" * (_sql.MAX_LABEL_LENGTH // 2)
    assert record.service_tier == "t" * 200  # the caller's record is left as it is


def test_a_writer_upgrades_a_version_4_store_and_its_old_rows_keep_reading(store_url: str) -> None:
    _old_store(store_url, 4)  # the data set, as a writer of schema version 4 stored it
    store = open_store(store_url)
    try:
        assert store.schema_version() == _schema.CURRENT_VERSION == 6  # type: ignore[attr-defined]
        # the old rows have none of it: R5's one-hour writes and tier, R6's reason were dropped
        (r5,) = [u for u in store.get_usage(TRACE_C.trace_id) if u.input_tokens]  # type: ignore[attr-defined]
        assert (r5.cache_write_1h_tokens, r5.service_tier, r5.unpriced_reason) == (None, None, None)
        assert store.usage_summary().unpriced_by_reason == {"unknown": 1}
        (old,) = store.list_traces(TraceFilter(provider="ollama")).items
        assert (old.trace_id, old.unpriced_by_reason) == (TRACE_D.trace_id, {"unknown": 1})
        # what is written now keeps all of it, next to them
        _write(store)
        summary = store.usage_summary()
        assert (summary.calls, summary.cache_write_1h_tokens) == (14, 400)
        assert summary.unpriced_by_reason == {"unknown": 1, "unknown_model": 2, "service_tier": 1}
        series = store.usage_series(group_by="service_tier", bucket="day", filter=TraceFilter(since_ns=DAY))
        assert [(p.group, p.calls) for p in series] == [("", 2), ("flex", 1), ("priority", 1), ("scale", 1)]
        assert {
            t.trace_id: t.unpriced_by_reason for t in store.list_traces(limit=50).items if t.unpriced_calls
        } == {
            TRACE.trace_id: {"unknown_model": 2, "service_tier": 1},
            TRACE_D.trace_id: {"unknown": 1},
        }
        assert store.get_usage(TRACE_A.trace_id)[0].service_tier is None  # type: ignore[attr-defined]
    finally:
        store.close()
    assert _versions(store_url) == [1, 2, 3, 4, 5, 6]
