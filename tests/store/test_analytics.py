"""Analytics on the fixed data set (tests/store/dataset.py), hand-computed values in the comments."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from llmtrace.store import (
    ErrorRate,
    InvalidFilter,
    ModelStats,
    Percentiles,
    SeriesPoint,
    Store,
    TraceFilter,
    UsageSummary,
)
from llmtrace.store._sql import bucket_start

from .dataset import R3, R4, R7, R8, TRACE_A, TRACE_B, TRACE_C, TRACE_D, TRACE_E, ns, write_dataset

S = 1_000_000_000


@pytest.fixture
def filled(store: Store) -> Store:
    write_dataset(store)
    return store


def approx_points(points: list[SeriesPoint]) -> list[tuple[str, str, int, int, int, float | None]]:
    """(bucket start as UTC ISO, group, calls, in, out, cost rounded) for readable comparisons."""
    return [
        (
            datetime.fromtimestamp(p.bucket_start_ns // S, timezone.utc).strftime("%m-%dT%H:%M"),
            p.group,
            p.calls,
            p.input_tokens,
            p.output_tokens,
            None if p.cost is None else round(p.cost, 9),
        )
        for p in points
    ]


def test_usage_summary(filled: Store) -> None:
    # calls R1..R9; in 100+200+300+400+1000; out 50+20+100+40; cost .01+.02+0 (R3 hit)+.03+.002;
    # unpriced: R6 only (R4, R7, R9 failed without usage), no price for its model; errors R4, R7, R9;
    # one cache hit (R3); of R5's 50 cache-write tokens, 30 one-hour writes
    summary = filled.usage_summary()
    assert summary == UsageSummary(
        calls=9,
        input_tokens=2000,
        output_tokens=210,
        cache_read_tokens=20,
        cache_write_tokens=50,
        reasoning_tokens=5,
        cost=pytest.approx(0.062),
        unpriced_calls=1,
        error_calls=3,
        cache_hits=1,
        cache_write_1h_tokens=30,
        unpriced_by_reason={"unknown_model": 1},
    )


def test_usage_summary_filters(filled: Store) -> None:
    # search: R4 R5 R6 R7: in 300+400, out 100+40, cost .03, unpriced R6, errors R4 R7
    search = filled.usage_summary(TraceFilter(service="search"))
    assert (search.calls, search.input_tokens, search.output_tokens) == (4, 700, 140)
    assert (search.cost, search.unpriced_calls, search.error_calls) == (pytest.approx(0.03), 1, 2)
    # response model matches too: R1 R2
    dated = filled.usage_summary(TraceFilter(model="gpt-4o-2024-08-06"))
    assert (dated.calls, dated.cost) == (2, pytest.approx(0.03))
    # only an unpriced call: cost None, not 0
    assert filled.usage_summary(TraceFilter(provider="ollama")).cost is None
    # [R3, R8): R3 (0) R4 R5 (.03) R6 R7
    window = filled.usage_summary(TraceFilter(since_ns=R3.start, until_ns=R8.start))
    assert (window.calls, window.cost, window.cache_hits) == (5, pytest.approx(0.03), 1)
    # failed calls: R4 R7 R9; ok calls: the other six
    assert filled.usage_summary(TraceFilter(status="error")).calls == 3
    assert filled.usage_summary(TraceFilter(status="ok")).calls == 6
    # min cost .02: R2 .02, R5 .03; min duration 3 s: R5 3.0, R6 4.0, R9 10.0
    assert filled.usage_summary(TraceFilter(min_cost=0.02)).calls == 2
    assert filled.usage_summary(TraceFilter(min_duration_ns=3 * S)).calls == 3
    empty = filled.usage_summary(TraceFilter(service="nope"))
    assert empty == UsageSummary(0, 0, 0, 0, 0, 0, None, 0, 0, 0)


def test_series_by_day_utc(filled: Store) -> None:
    points = filled.usage_series(group_by="provider", bucket="day")
    assert approx_points(points) == [
        ("03-09T00:00", "openai", 2, 300, 70, 0.03),  # R1 R2
        ("03-10T00:00", "anthropic", 3, 300, 100, 0.03),  # R4 R5 R7
        ("03-10T00:00", "ollama", 1, 400, 40, None),  # R6 unpriced
        ("03-10T00:00", "openai", 1, 0, 0, 0.0),  # R3 cache hit
        ("03-11T00:00", "openai", 2, 1000, 0, 0.002),  # R8 R9
    ]


def test_series_by_day_new_york_across_dst(filled: Store) -> None:
    # Local midnights: 03-09 00:00 EST = 05:00Z, 03-10 00:00 EST = 05:00Z, 03-11 00:00 EDT = 04:00Z
    # (03-10 has 23 hours). R1 R2 R3 are on the evening of 03-09 local (18:58, 18:59, 19:00 EST);
    # R4 01:59 EST, R5 03:01 EDT, R6 R7 14:40 EDT on 03-10; R8 R9 00:30 EDT on 03-11.
    points = filled.usage_series(group_by="provider", bucket="day", tz="America/New_York")
    assert approx_points(points) == [
        ("03-09T05:00", "openai", 3, 300, 70, 0.03),
        ("03-10T05:00", "anthropic", 3, 300, 100, 0.03),
        ("03-10T05:00", "ollama", 1, 400, 40, None),
        ("03-11T04:00", "openai", 2, 1000, 0, 0.002),
    ]


def test_series_by_day_kolkata(filled: Store) -> None:
    # IST = UTC+05:30: local midnight = 18:30Z the day before. R1..R5 fall on 03-10 IST
    # (05:28 .. 12:31), R6 R7 (00:10 IST) and R8 R9 (10:00 IST) on 03-11 IST.
    points = filled.usage_series(group_by="provider", bucket="day", tz="Asia/Kolkata")
    assert approx_points(points) == [
        ("03-09T18:30", "anthropic", 2, 300, 100, 0.03),  # R4 R5
        ("03-09T18:30", "openai", 3, 300, 70, 0.03),  # R1 R2 R3
        ("03-10T18:30", "anthropic", 1, 0, 0, None),  # R7 failed, no cost
        ("03-10T18:30", "ollama", 1, 400, 40, None),  # R6
        ("03-10T18:30", "openai", 2, 1000, 0, 0.002),  # R8 R9
    ]


def test_series_by_hour_utc_and_kolkata(filled: Store) -> None:
    utc = filled.usage_series(group_by="service", bucket="hour")
    assert approx_points(utc) == [
        ("03-09T23:00", "checkout", 2, 300, 70, 0.03),  # R1 R2
        ("03-10T00:00", "checkout", 1, 0, 0, 0.0),  # R3
        ("03-10T06:00", "search", 1, 0, 0, None),  # R4
        ("03-10T07:00", "search", 1, 300, 100, 0.03),  # R5
        ("03-10T18:00", "search", 2, 400, 40, None),  # R6 R7
        ("03-11T04:00", "checkout", 2, 1000, 0, 0.002),  # R8 R9
    ]
    # IST hours start at :30 UTC: R3 (05:30:20 IST) joins R1 R2 in 05:00 IST; R4 (12:29) and R5 (12:31)
    # share 12:00 IST = 06:30Z.
    kolkata = filled.usage_series(group_by="service", bucket="hour", tz="Asia/Kolkata")
    assert approx_points(kolkata) == [
        ("03-09T23:30", "checkout", 3, 300, 70, 0.03),
        ("03-10T06:30", "search", 2, 300, 100, 0.03),
        ("03-10T18:30", "search", 2, 400, 40, None),
        ("03-11T04:30", "checkout", 2, 1000, 0, 0.002),
    ]
    # New York hours align with UTC hours (whole-hour offsets on both sides of the change)
    new_york = filled.usage_series(group_by="service", bucket="hour", tz="America/New_York")
    assert approx_points(new_york) == approx_points(utc)


def test_series_by_minute(filled: Store) -> None:
    until = TraceFilter(until_ns=R3.start + 60 * S)
    utc = filled.usage_series(group_by="model", bucket="minute", filter=until)
    assert approx_points(utc) == [
        ("03-09T23:58", "gpt-4o", 1, 100, 50, 0.01),  # R1 23:58:30
        ("03-09T23:59", "gpt-4o", 1, 200, 20, 0.02),  # R2 23:59:10
        ("03-10T00:00", "gpt-4o", 1, 0, 0, 0.0),  # R3 00:00:20, cache hit
    ]
    kolkata = filled.usage_series(group_by="model", bucket="minute", filter=until, tz="Asia/Kolkata")
    assert approx_points(kolkata) == approx_points(utc)


def test_bucket_start_across_fall_back() -> None:
    # 2024-11-03 in New York: 01:00-02:00 happens twice (EDT 05:00Z, then EST 06:00Z)
    ny = ZoneInfo("America/New_York")
    first = ns("2024-11-03T05:30")  # 01:30 EDT
    second = ns("2024-11-03T06:30")  # 01:30 EST
    assert bucket_start(first, "hour", ny) == ns("2024-11-03T05:00")
    assert bucket_start(second, "hour", ny) == ns("2024-11-03T06:00")
    # that day is 25 hours long: it starts at 04:00Z (00:00 EDT) and the next at 05:00Z (00:00 EST)
    assert bucket_start(second, "day", ny) == ns("2024-11-03T04:00")
    assert bucket_start(ns("2024-11-04T04:59"), "day", ny) == ns("2024-11-03T04:00")
    assert bucket_start(ns("2024-11-04T05:00"), "day", ny) == ns("2024-11-04T05:00")
    assert bucket_start(ns("2024-03-10T12:34:56"), "minute", None) == ns("2024-03-10T12:34")


def test_model_stats(filled: Store) -> None:
    stats = filled.model_stats()
    assert stats == [
        # R4 R5 R7: mean (0.5 + 3.0 + 0.4) / 3 = 1.3, 2 of 3 failed
        ModelStats(
            "claude-3-5-sonnet",
            "anthropic",
            3,
            300,
            100,
            pytest.approx(0.03),
            pytest.approx(1.3),
            pytest.approx(2 / 3),
        ),
        # R1 R2 R3 R9 (request model; R1 R2 answered as gpt-4o-2024-08-06): mean 13.01 / 4
        ModelStats("gpt-4o", "openai", 4, 300, 70, pytest.approx(0.03), pytest.approx(3.2525), 0.25),
        ModelStats("llama3", "ollama", 1, 400, 40, None, 4.0, 0.0),
        ModelStats(
            "text-embedding-3-small", "openai", 1, 1000, 0, pytest.approx(0.002), pytest.approx(0.2), 0.0
        ),
    ]
    assert [s.model for s in filled.model_stats(TraceFilter(service="search"))] == [
        "claude-3-5-sonnet",
        "llama3",
    ]


def test_latency_percentiles(filled: Store) -> None:
    # linear interpolation at rank p * (n - 1) of the sorted durations
    by_model = filled.latency_percentiles(by="model")
    assert by_model == [
        # [0.4, 0.5, 3.0]: p50 = 0.5; p90 rank 1.8 = 0.5 + 0.8 * 2.5 = 2.5; p99 rank 1.98 = 2.95
        Percentiles("claude-3-5-sonnet", 3, pytest.approx(0.5), pytest.approx(2.5), pytest.approx(2.95)),
        # [0.01, 1, 2, 10]: p50 rank 1.5 = 1.5; p90 rank 2.7 = 2 + 0.7 * 8 = 7.6; p99 rank 2.97 = 9.76
        Percentiles("gpt-4o", 4, pytest.approx(1.5), pytest.approx(7.6), pytest.approx(9.76)),
        Percentiles("llama3", 1, 4.0, 4.0, 4.0),
        Percentiles("text-embedding-3-small", 1, pytest.approx(0.2), pytest.approx(0.2), pytest.approx(0.2)),
    ]
    by_operation = filled.latency_percentiles(by="operation")
    assert by_operation == [
        # chat, 8 calls [0.01, 0.4, 0.5, 1, 2, 3, 4, 10]: p50 rank 3.5 = 1.5;
        # p90 rank 6.3 = 4 + 0.3 * 6 = 5.8; p99 rank 6.93 = 4 + 0.93 * 6 = 9.58
        Percentiles("chat", 8, pytest.approx(1.5), pytest.approx(5.8), pytest.approx(9.58)),
        Percentiles("embeddings", 1, pytest.approx(0.2), pytest.approx(0.2), pytest.approx(0.2)),
    ]


def test_error_rates(filled: Store) -> None:
    # by error type: of all 9 calls, 2 RateLimitError (R4 R7), 1 timeout (R9)
    assert filled.error_rates(by="error_type") == [
        ErrorRate("RateLimitError", 9, 2),
        ErrorRate("timeout", 9, 1),
    ]
    assert filled.error_rates(by="model") == [
        ErrorRate("claude-3-5-sonnet", 3, 2),
        ErrorRate("gpt-4o", 4, 1),
        ErrorRate("llama3", 1, 0),
        ErrorRate("text-embedding-3-small", 1, 0),
    ]
    rates = filled.error_rates(by="provider")
    assert rates == [ErrorRate("anthropic", 3, 2), ErrorRate("openai", 5, 1), ErrorRate("ollama", 1, 0)]
    assert rates[0].rate == pytest.approx(2 / 3)
    # a window holding R4 only
    window = TraceFilter(since_ns=R4.start, until_ns=R4.start + 1)
    assert filled.error_rates(by="error_type", filter=window) == [ErrorRate("RateLimitError", 1, 1)]
    assert filled.error_rates(by="model", filter=TraceFilter(service="nope")) == []
    assert R7.error_type == "RateLimitError"


def test_trace_summaries(filled: Store) -> None:
    items = filled.list_traces(limit=10).items
    got = [
        (
            t.trace_id[0],
            t.service,
            t.root_name,
            t.span_count,
            t.input_tokens,
            t.output_tokens,
            None if t.cost is None else round(t.cost, 9),
            t.status,
            t.duration_ns / S,
        )
        for t in items
    ]
    assert got == [  # newest first
        ("e", "checkout", "embed and answer", 3, 1000, 0, 0.002, "error", 51.0),
        ("d", "search", "invoke_agent researcher", 3, 400, 40, None, "error", 36.0),
        ("c", "search", "invoke_agent researcher", 3, 300, 100, 0.03, "error", 125.0),
        ("b", "checkout", "chain cached", 2, 0, 0, 0.0, "ok", 0.6),
        ("a", "checkout", "invoke_agent shopper", 4, 300, 70, 0.03, "ok", 44.0),
    ]
    assert [t.start_ns for t in items] == [t.start for t in (TRACE_E, TRACE_D, TRACE_C, TRACE_B, TRACE_A)]


@pytest.mark.parametrize(
    ("trace_filter", "expected"),
    [
        (TraceFilter(service="search"), "dc"),
        (TraceFilter(model="gpt-4o"), "eba"),
        (TraceFilter(model="gpt-4o-2024-08-06"), "a"),
        (TraceFilter(model="claude-3-5-sonnet"), "dc"),
        (TraceFilter(provider="ollama"), "d"),
        (TraceFilter(status="error"), "edc"),
        (TraceFilter(status="ok"), "ba"),
        # trace start in [R3, R8): B starts 0.1 s before R3, E 1 s before R8
        (TraceFilter(since_ns=R3.start, until_ns=R8.start), "edc"),
        (TraceFilter(min_cost=0.02), "ca"),
        (TraceFilter(min_duration_ns=45 * S), "ec"),
        (TraceFilter(service="checkout", status="error", min_cost=0.001), "e"),
        (TraceFilter(service="nope"), ""),
    ],
)
def test_list_traces_filters(filled: Store, trace_filter: TraceFilter, expected: str) -> None:
    assert "".join(t.trace_id[0] for t in filled.list_traces(trace_filter).items) == expected


def test_analytics_reject_bad_arguments(filled: Store) -> None:
    with pytest.raises(InvalidFilter, match="time zone"):
        filled.usage_series(group_by="model", bucket="day", tz="Mars/Olympus_Mons")
    with pytest.raises(InvalidFilter, match="bucket"):
        filled.usage_series(group_by="model", bucket="week")  # type: ignore[arg-type]
    with pytest.raises(InvalidFilter, match="group_by"):
        filled.usage_series(group_by="color", bucket="day")  # type: ignore[arg-type]
    with pytest.raises(InvalidFilter, match="since"):
        filled.usage_summary(TraceFilter(since_ns=R8.start, until_ns=R4.start))
    with pytest.raises(InvalidFilter):
        filled.latency_percentiles(by="tool")  # type: ignore[arg-type]
    with pytest.raises(InvalidFilter):
        filled.error_rates(by="color")  # type: ignore[arg-type]
    with pytest.raises(InvalidFilter, match="min_cost"):
        filled.model_stats(TraceFilter(min_cost=-1))
