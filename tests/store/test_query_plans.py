"""How the queries scale: which tables and indexes they use (SQLite's ``EXPLAIN QUERY PLAN``), how
many rows they bring into Python, and that the SQL doing the work (buckets, percentiles, the
ordering of filtered listings) gives what the plain Python definitions give, on both backends.

No timing: a plan that joins the span table, sorts every match or scans a whole table is what made
``llmtrace stats`` and ``llmtrace traces --model ...`` slow on a store of a million spans.
"""

from __future__ import annotations

import math
import random
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from llmtrace import semconv
from llmtrace._usage import UsageRecord
from llmtrace.store import SpanRecord, Store, TraceFilter, _sql
from llmtrace.store._sql import bucket_start, percentile, zone

S = 1_000_000_000
MINUTE = 60 * S
T0 = 1_710_000_000 * S  # 2024-03-09 16:00 UTC
MODELS = ("gpt-4o", "claude-3-5-sonnet", "llama3")


def tid(n: int) -> str:
    return f"{n:032x}"


def sid(n: int) -> str:
    return f"{n:016x}"


def usage(
    n: int, start: int, *, model: str, duration_s: float = 1.0, service: str | None = None
) -> UsageRecord:
    return UsageRecord(
        operation="chat" if n % 4 else "embeddings",
        provider="openai",
        request_model=model,
        response_model=None,
        framework=None,
        input_tokens=10,
        output_tokens=2,
        cache_read_tokens=None,
        cache_write_tokens=None,
        reasoning_tokens=None,
        cost=0.001,
        duration_s=duration_s,
        time_to_first_chunk_s=None,
        streamed=False,
        status="error" if n % 7 == 0 else "success",
        error_type="RateLimitError" if n % 7 == 0 else None,
        cache_hit=None,
        trace_id=tid(n),
        span_id=sid(n),
        start_time_unix_nano=start,
        **({"service": service} if service else {}),  # type: ignore[arg-type]
    )


def root(
    n: int, start: int, *, service: str = "svc", cost: float | None = None, end: int | None = None
) -> SpanRecord:
    attrs: dict[str, Any] = {}
    if cost is not None:  # a model call of llmtrace's own: its cost counts in the trace's
        attrs = {
            semconv.GEN_AI_OPERATION_NAME: semconv.OP_CHAT,
            semconv.GEN_AI_REQUEST_MODEL: MODELS[n % len(MODELS)],
            semconv.GEN_AI_PROVIDER_NAME: "openai" if n % 2 else "anthropic",
            semconv.GEN_AI_USAGE_COST_AMOUNT: cost,
        }
    return SpanRecord(
        trace_id=tid(n),
        span_id=sid(n),
        parent_span_id=None,
        name=f"call {n}",
        kind="CLIENT",
        start_ns=start,
        end_ns=start + S if end is None else end,
        status_code="ERROR" if n % 5 == 0 else "UNSET",
        status_message="",
        attributes=attrs,
        events=(),
        links=(),
        resource={semconv.SERVICE_NAME: service},
        scope=semconv.INSTRUMENTATION_SCOPE,
    )


@dataclass
class Reads:
    """Every read a store makes: (sql, params, number of rows it brought back)."""

    calls: list[tuple[str, tuple[Any, ...], int]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(n for _, _, n in self.calls)


@pytest.fixture
def reads(store: Store) -> Iterator[Reads]:
    recorded = Reads()
    original = store._read  # type: ignore[attr-defined]

    def read(sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = original(sql, params)
        recorded.calls.append((sql, tuple(params), len(rows)))
        return rows

    store._read = read  # type: ignore[attr-defined]
    yield recorded


def plans(store: Store, reads: Reads) -> list[list[str]]:
    """The SQLite query plan (detail lines) of each read recorded."""
    original = type(store)._read  # type: ignore[attr-defined]  # the store's own, not the recorder
    return [
        [str(row[3]) for row in original(store, f"EXPLAIN QUERY PLAN {sql}", params)]
        for sql, params, _ in reads.calls
    ]


def sqlite_only(store: Store) -> None:
    if store.url.startswith("postgresql://"):
        pytest.skip("query plans are checked on SQLite (PostgreSQL plans with its statistics)")


# --------------------------------------------------------------------------------------
# Usage analytics: the usage table alone, unless the service is asked for
# --------------------------------------------------------------------------------------
_JOINED = re.compile(r"^(SCAN|SEARCH) (s|t|spans|traces)\b")


def test_usage_analytics_read_the_usage_table_alone(store: Store, reads: Reads) -> None:
    sqlite_only(store)
    store.write(
        [root(n, T0 + n * MINUTE) for n in range(1, 40)],
        [usage(n, T0 + n * MINUTE, model=MODELS[n % 3]) for n in range(1, 60)],
    )
    reads.calls.clear()
    for f in (None, TraceFilter(model="gpt-4o", since_ns=T0, status="ok", min_cost=0.0005)):
        store.usage_summary(f)
        store.model_stats(f)
        store.usage_series(group_by="model", bucket="hour", filter=f)
        store.usage_series(group_by="provider", bucket="day", filter=f, tz="America/New_York")
        store.latency_percentiles(by="model", filter=f)
        store.latency_percentiles(by="operation", filter=f)
        for by in ("error_type", "model", "provider"):
            store.error_rates(by=by, filter=f)
    details = [detail for plan in plans(store, reads) for detail in plan]
    assert any(detail.startswith("SCAN u") for detail in details)
    assert [detail for detail in details if _JOINED.match(detail)] == []


def test_usage_rows_with_a_service_of_their_own_need_no_span_or_trace(store: Store) -> None:
    """By service: a call's own service; its span's, else its trace's, for calls stored without one."""
    store.write(
        [root(1, T0, service="from-span"), root(2, T0, service="from-trace")],
        [
            usage(1, T0, model="gpt-4o"),  # its span says from-span
            usage(3, T0, model="gpt-4o", service="own"),  # no span, no trace
            usage(4, T0, model="gpt-4o", service="own"),
            replace(usage(2, T0, model="gpt-4o"), span_id="f" * 16),  # its span is not stored: its trace
            usage(5, T0, model="gpt-4o"),  # neither: no service
        ],
    )
    series = store.usage_series(group_by="service", bucket="day")
    assert sorted((p.group, p.calls) for p in series) == [
        ("", 1),
        ("from-span", 1),
        ("from-trace", 1),
        ("own", 2),
    ]
    assert store.usage_summary(TraceFilter(service="own")).calls == 2
    assert store.usage_summary(TraceFilter(service="from-trace")).calls == 1


# --------------------------------------------------------------------------------------
# Series: bucketed in the database
# --------------------------------------------------------------------------------------
def test_series_bring_one_row_per_bucket_and_group(store: Store, reads: Reads) -> None:
    # 600 calls, one a minute for 10 hours from 16:00 UTC, 3 models: 30 hourly points (33 in Kolkata)
    store.write([], [usage(n, T0 + n * MINUTE, model=MODELS[n % 3]) for n in range(600)])
    for tz in ("UTC", "America/New_York", "Asia/Kolkata"):
        reads.calls.clear()
        points = store.usage_series(group_by="model", bucket="hour", tz=tz)
        assert sum(p.calls for p in points) == 600
        assert reads.rows <= len(points) + 1 + 3  # + the time span (time zones), + split hours
        assert reads.rows < 100


def _reference_series(records: list[UsageRecord], bucket: str, tz: str) -> list[tuple[int, str, int, int]]:
    """What usage_series means, computed call by call in Python (buckets of each call's UTC minute)."""
    points: dict[tuple[int, str], list[int]] = {}
    zone_info = zone(tz)
    for r in records:
        minute = r.start_time_unix_nano // MINUTE * MINUTE
        start = bucket_start(minute, bucket, zone_info)  # type: ignore[arg-type]
        acc = points.setdefault((start, r.request_model or ""), [0, 0])
        acc[0] += 1
        acc[1] += r.input_tokens or 0
    return [(start, group, calls, inp) for (start, group), (calls, inp) in sorted(points.items())]


@pytest.mark.parametrize(
    "tz",
    [
        "UTC",
        "America/New_York",  # DST: 23- and 25-hour days, two 01:00 hours
        "Asia/Kolkata",  # +05:30: hours start at half past in UTC
        "Australia/Lord_Howe",  # a 30-minute DST shift
        "Europe/Amsterdam",  # +00:19:32 until 1937
    ],
)
def test_series_buckets_match_the_definition(store: Store, tz: str) -> None:
    rng = random.Random(tz)
    starts = [  # around DST changes of 2024, over years, and before 1970 (negative times)
        *(T0 + rng.randrange(-3 * 86400, 250 * 86400) * S + rng.randrange(S) for _ in range(150)),
        *(rng.randrange(-40 * 365 * 86400, 60 * 365 * 86400) * S for _ in range(60)),
        *(rng.randrange(-(10**18), -(10**17)) for _ in range(10)),  # 1938..1966
        -1,
        0,
        -MINUTE,
    ]
    records = [usage(n, start, model=MODELS[n % 3]) for n, start in enumerate(starts, 1)]
    store.write([], records)
    for bucket in ("minute", "hour", "day"):
        got = [
            (p.bucket_start_ns, p.group, p.calls, p.input_tokens)
            for p in store.usage_series(group_by="model", bucket=bucket, tz=tz)
        ]
        assert got == _reference_series(records, bucket, tz), bucket


# --------------------------------------------------------------------------------------
# Percentiles: computed in the database
# --------------------------------------------------------------------------------------
def test_percentiles_bring_only_the_durations_they_interpolate(store: Store, reads: Reads) -> None:
    store.write([], [usage(n, T0 + n * S, model=MODELS[n % 3], duration_s=n / 7) for n in range(1, 1201)])
    reads.calls.clear()
    result = store.latency_percentiles(by="model")
    assert [p.count for p in result] == [400, 400, 400]
    assert reads.rows <= 3 + 3 * 6  # the counts, then at most two durations per percentile


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_match_the_definition(store: Store, seed: int) -> None:
    rng = random.Random(seed)
    counts = {"gpt-4o": 1, "claude-3-5-sonnet": 2, "llama3": rng.randrange(3, 300)}
    records: list[UsageRecord] = []
    for model, count in counts.items():
        for _ in range(count):
            n = len(records) + 1
            duration = round(rng.lognormvariate(0, 1), rng.choice((1, 3, 9)))  # ties too
            records.append(usage(n, T0 + n * S, model=model, duration_s=duration))
    store.write([], records)
    since = T0 + (len(records) // 3) * S
    for f in (TraceFilter(), TraceFilter(since_ns=since), TraceFilter(status="error")):
        expected: dict[str, list[float]] = {}
        for r in records:
            status = "error" if r.status == "error" else "ok"
            if r.start_time_unix_nano >= (f.since_ns or 0) and f.status in (None, status):
                expected.setdefault(r.request_model or "", []).append(r.duration_s)
        got = store.latency_percentiles(by="model", filter=f)
        assert [p.key for p in got] == sorted(expected)
        for p in got:
            values = sorted(expected[p.key])
            assert p.count == len(values)
            want = [percentile(values, q) for q in (0.5, 0.9, 0.99)]
            assert [p.p50_s, p.p90_s, p.p99_s] == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_percentiles_without_window_functions(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """An SQLite older than 3.25 (no window functions) sorts in Python, with the same results."""
    sqlite_only(store)
    store.write([], [usage(n, T0 + n * S, model=MODELS[n % 3], duration_s=math.sqrt(n)) for n in range(1, 9)])
    with_windows = store.latency_percentiles(by="model")
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 24, 0))
    assert store.latency_percentiles(by="model") == with_windows


# --------------------------------------------------------------------------------------
# Filtered trace listings: in start order along the index, or a few matches sorted
# --------------------------------------------------------------------------------------
@pytest.fixture
def listed(store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    """120 traces; models, providers and services cycle, costs rise with n, two are long."""
    monkeypatch.setattr(_sql, "_PROBE_LIMIT", 10, raising=False)  # many: more than 10 matches
    spans = [
        root(
            n,
            T0 + n * S,
            service="rare" if n % 40 == 1 else "search" if n % 2 else "checkout",
            cost=n / 1000,
            end=T0 + n * S + (100 if n in (17, 18) else 1) * S,
        )
        for n in range(1, 121)
    ]
    store.write(spans, [])
    return store


def _listing_plan(store: Store, reads: Reads) -> list[str]:
    listings = zip(plans(store, reads), reads.calls, strict=True)
    (plan,) = [p for p, (sql, _, _) in listings if "ORDER BY" in sql]
    return plan


@pytest.mark.parametrize(
    "f",
    [
        TraceFilter(model="gpt-4o"),
        TraceFilter(provider="openai"),
        TraceFilter(model="gpt-4o", provider="openai", status="ok"),
        TraceFilter(service="search"),
        TraceFilter(min_cost=0.01),
        TraceFilter(min_duration_ns=S // 2),
    ],
    ids=repr,
)
def test_a_filter_matching_many_traces_walks_an_index_in_order(
    listed: Store, reads: Reads, f: TraceFilter
) -> None:
    sqlite_only(listed)
    page = listed.list_traces(f, limit=5)
    assert len(page.items) == 5
    plan = _listing_plan(listed, reads)
    ordered = (
        "SEARCH traces USING INDEX traces_service (service=?)"
        if f.service
        else ("SCAN traces USING INDEX traces_start")
    )
    assert plan[0] == ordered, plan
    # the start times come in order; at most ties on a start time are sorted (by trace id)
    assert "USE TEMP B-TREE FOR ORDER BY" not in plan, plan


@pytest.mark.parametrize(
    "f, expected",
    [
        (TraceFilter(min_cost=0.118), [120, 119, 118]),
        (TraceFilter(min_duration_ns=50 * S), [18, 17]),
        (TraceFilter(service="rare"), [81, 41, 1]),
    ],
    ids=repr,
)
def test_a_filter_matching_few_traces_looks_them_up(
    listed: Store, reads: Reads, f: TraceFilter, expected: list[int]
) -> None:
    sqlite_only(listed)
    assert [t.trace_id for t in listed.list_traces(f, limit=5).items] == [tid(n) for n in expected]
    plan = _listing_plan(listed, reads)
    assert not any(detail.startswith("SCAN traces") for detail in plan), plan  # no walk of every trace


@pytest.mark.parametrize(
    "f",
    [
        TraceFilter(min_cost=100.0),
        TraceFilter(min_duration_ns=3600 * S),
        TraceFilter(model="no-such-model"),
        TraceFilter(provider="no-such-provider"),
        TraceFilter(service="no-such-service"),
    ],
    ids=repr,
)
def test_a_filter_matching_nothing_scans_nothing(listed: Store, reads: Reads, f: TraceFilter) -> None:
    sqlite_only(listed)
    assert listed.list_traces(f).items == []
    details = [detail for plan in plans(listed, reads) for detail in plan]
    assert not any(detail.startswith("SCAN traces") for detail in details), details


@pytest.mark.parametrize("probe_limit", [0, 3, 1000])
def test_filtered_listings_page_through_exactly_the_matches(
    store: Store, monkeypatch: pytest.MonkeyPatch, probe_limit: int
) -> None:
    """Whichever plan a filter gets, the pages hold exactly its matches, newest first."""
    monkeypatch.setattr(_sql, "_PROBE_LIMIT", probe_limit, raising=False)
    rng = random.Random(probe_limit)
    spans = [
        root(n, T0 + rng.randrange(60) * S, service=rng.choice(("a", "b")), cost=rng.choice((None, 0.5, 2.0)))
        for n in range(1, 61)
    ]
    store.write(spans, [])
    for f in (
        TraceFilter(model="gpt-4o"),
        TraceFilter(provider="openai", service="a"),
        TraceFilter(min_cost=1.0, status="ok"),
        TraceFilter(min_duration_ns=S, since_ns=T0 + 10 * S),
        TraceFilter(model="llama3", min_cost=0.1, until_ns=T0 + 50 * S),
    ):
        seen: list[str] = []
        cursor = None
        while True:
            page = store.list_traces(f, limit=4, cursor=cursor)
            seen += [t.trace_id for t in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break

        def matches(s: SpanRecord, f: TraceFilter = f) -> bool:
            attrs = s.attributes
            cost = attrs.get(semconv.GEN_AI_USAGE_COST_AMOUNT)
            return (
                (f.model is None or attrs.get(semconv.GEN_AI_REQUEST_MODEL) == f.model)
                and (f.provider is None or attrs.get(semconv.GEN_AI_PROVIDER_NAME) == f.provider)
                and (f.service is None or s.resource[semconv.SERVICE_NAME] == f.service)
                and (f.status is None or (s.status_code == "ERROR") == (f.status == "error"))
                and (f.min_cost is None or (cost is not None and cost >= f.min_cost))
                and (f.min_duration_ns is None or s.end_ns - s.start_ns >= f.min_duration_ns)
                and (f.since_ns is None or s.start_ns >= f.since_ns)
                and (f.until_ns is None or s.start_ns < f.until_ns)
            )

        expected = sorted(filter(matches, spans), key=lambda s: (s.start_ns, s.trace_id), reverse=True)
        assert seen == [s.trace_id for s in expected], f
