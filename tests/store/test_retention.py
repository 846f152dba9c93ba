"""Retention on both backends: what a prune deletes, in bounded batches, next to a live writer, and
the store writer's automatic retention (LLMTRACE_STORE_RETENTION, configure(store_retention=...))."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import llmtrace
from llmtrace import semconv as sc
from llmtrace._usage import UsageRecord
from llmtrace.store import (
    SpanRecord,
    Store,
    StoreError,
    TraceFilter,
    TraceNotFound,
    _retention,
    _schema,
    open_store,
)
from llmtrace.store import _writer as writer_module
from llmtrace.store._api import Pruned
from llmtrace.store._retention import ROOTLESS_QUIET_NS, prune, retention_seconds
from llmtrace.store._writer import StoreWriter
from tests.store.dataset import (
    R1,
    R4,
    R7,
    R9,
    TRACE_D,
    TRACES,
    S,
    ns,
    write_dataset,
)

HOUR = 3600 * S
DAY = 24 * HOUR
NOW = ns("2024-03-20T00:00:00")  # the data set is ten days old then
CUT = ns("2024-03-10T12:00:00")  # A, B and C ended before it; D and E after


def _span(trace: int, index: int, start: int, *, root: bool = False, model: str | None = None) -> SpanRecord:
    attrs: dict[str, Any] = {}
    if model is not None:
        attrs = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
            sc.GEN_AI_REQUEST_MODEL: model,
            sc.GEN_AI_PROVIDER_NAME: "openai",
            sc.GEN_AI_USAGE_INPUT_TOKENS: 10,
        }
    return SpanRecord(
        trace_id=f"{trace:032x}",
        span_id=f"{index + 1:016x}" if not root else f"{0xFFFF:016x}",
        parent_span_id=None if root else f"{0xFFFF:016x}",
        name="root" if root else f"child {index}",
        kind="INTERNAL",
        start_ns=start,
        end_ns=start + S,
        status_code="UNSET",
        status_message="",
        attributes=attrs,
        events=(),
        links=(),
        resource={sc.SERVICE_NAME: "svc"},
        scope=sc.INSTRUMENTATION_SCOPE,
    )


def _usage(trace: int, index: int, start: int, model: str = "gpt-4o") -> UsageRecord:
    return UsageRecord(
        operation="chat",
        provider="openai",
        request_model=model,
        response_model=None,
        framework=None,
        input_tokens=10,
        output_tokens=1,
        cache_read_tokens=None,
        cache_write_tokens=None,
        reasoning_tokens=None,
        cost=0.001,
        duration_s=0.5,
        time_to_first_chunk_s=None,
        streamed=False,
        status="success",
        error_type=None,
        cache_hit=None,
        trace_id=f"{trace:032x}",
        span_id=f"{index + 1:016x}",
        start_time_unix_nano=start,
    )


def _trace(trace: int, start: int, spans: int, *, root: bool = True) -> list[SpanRecord]:
    children = [_span(trace, i, start + i, model="gpt-4o") for i in range(spans - int(root))]
    return children + ([_span(trace, 0, start, root=True)] if root else [])


def _ids(store: Store) -> list[str]:
    return sorted(str(r[0]) for r in _rows(store, "SELECT trace_id FROM traces"))


def _rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    return store._read(sql)  # type: ignore[attr-defined,no-any-return]


# --------------------------------------------------------------------------------------
# What goes
# --------------------------------------------------------------------------------------
def test_old_traces_go_whole_with_their_usage_records_and_index_entries(store: Store) -> None:
    write_dataset(store)
    assert store.count_prunable(CUT, now_ns=NOW) == Pruned(traces=3, spans=9, usage=5)
    assert prune(store, CUT, now_ns=NOW) == Pruned(traces=3, spans=9, usage=5)
    assert _ids(store) == [TRACE_D.trace_id, "e" * 32]
    for gone in ("a" * 32, "b" * 32, "c" * 32):
        with pytest.raises(TraceNotFound):
            store.get_trace(gone)
        assert store.get_usage(gone) == []  # type: ignore[attr-defined]
    assert {row[0][0] for row in _rows(store, "SELECT trace_id FROM trace_keys")} == {"d", "e"}
    # the model and provider filters no longer find what went (A, C) and still find what stayed
    assert [t.trace_id for t in store.list_traces(TraceFilter(provider="openai")).items] == ["e" * 32]
    assert [t.trace_id for t in store.list_traces(TraceFilter(provider="anthropic")).items] == ["d" * 32]
    assert store.usage_summary().calls == 4  # R6 to R9
    assert store.count_prunable(CUT, now_ns=NOW) == Pruned()
    assert prune(store, CUT, now_ns=NOW) == Pruned()


def test_a_trace_whose_root_is_not_stored_waits_until_it_has_been_quiet_for_a_day(store: Store) -> None:
    start = NOW - 3 * HOUR
    store.write(_trace(1, start, 3, root=False), [])  # still running: its root ends last
    cutoff = NOW - HOUR
    assert store.count_prunable(cutoff, now_ns=NOW) == Pruned()
    assert prune(store, cutoff, now_ns=NOW) == Pruned()
    assert _ids(store) == [f"{1:032x}"]
    # once its root arrives it is complete, and goes at the same cutoff
    store.write([_span(1, 0, start - S, root=True)], [])
    assert prune(store, cutoff, now_ns=NOW) == Pruned(traces=1, spans=4, usage=0)
    # a rootless trace (its root is in another service) goes once quiet for a day
    store.write(_trace(2, start, 2, root=False), [])
    assert prune(store, cutoff, now_ns=start + ROOTLESS_QUIET_NS) == Pruned()
    assert prune(store, cutoff, now_ns=start + 2 * S + ROOTLESS_QUIET_NS) == Pruned(1, 2, 0)
    assert _ids(store) == []


def test_usage_records_of_traces_not_stored_go_when_a_day_old(store: Store) -> None:
    """Calls whose spans were sampled out: their usage records stay until the cutoff and a day."""
    old = NOW - 2 * DAY
    store.write(
        [], [_usage(7, 0, old, "gpt-4o"), _usage(7, 1, old + S, "gpt-4o-mini"), _usage(8, 0, NOW, "o3")]
    )
    assert prune(store, NOW - HOUR, now_ns=old + HOUR) == Pruned()  # within a day of the calls
    assert store.count_prunable(NOW - HOUR, now_ns=NOW) == Pruned(usage=2)
    assert prune(store, NOW - HOUR, now_ns=NOW) == Pruned(usage=2)
    assert [r[1] for r in _rows(store, "SELECT trace_id, span_id FROM usage")] == [f"{1:016x}"]
    keys = sorted(
        (r[0], r[1], r[2][-1]) for r in _rows(store, "SELECT kind, value, trace_id FROM trace_keys")
    )
    assert keys == [("model", "o3", "8"), ("provider", "openai", "8")]


def test_an_orphan_usage_record_keeps_the_index_entries_its_trace_still_needs(store: Store) -> None:
    old = NOW - 2 * DAY
    store.write([], [_usage(7, 0, old, "gpt-4o"), _usage(7, 1, NOW, "gpt-4o")])
    assert prune(store, NOW - HOUR, now_ns=NOW) == Pruned(usage=1)
    keys = sorted((r[0], r[1]) for r in _rows(store, "SELECT kind, value FROM trace_keys"))
    assert keys == [("model", "gpt-4o"), ("provider", "openai")]  # the newer record has them too


def test_batches_are_bounded_and_a_big_trace_goes_in_pieces(store: Store) -> None:
    old = NOW - 10 * DAY
    store.write(_trace(1, old, 25), [_usage(1, i, old + i) for i in range(3)])
    for t in range(2, 12):
        store.write(_trace(t, old + t * S, 2), [])
    batches: list[Pruned] = []
    while True:
        batch = store.prune_batch(NOW - DAY, now_ns=NOW, max_spans=10)
        batches.append(batch)
        assert batch.spans + batch.usage <= 10 + 3  # a trace's usage records go with its last spans
        if not batch.more:
            break
    # the big trace first: 10, 10, then its last 5 spans with the whole trace; then 2-span traces
    assert [(b.traces, b.spans) for b in batches[:3]] == [(0, 10), (0, 10), (1, 5)]
    assert batches[2].usage == 3
    assert sum(b.traces for b in batches) == 11 and sum(b.spans for b in batches) == 45
    assert _ids(store) == [] and _rows(store, "SELECT COUNT(*) FROM spans") == [(0,)]
    assert _rows(store, "SELECT COUNT(*) FROM trace_keys") == [(0,)]


def test_a_live_writer_keeps_writing_while_prune_deletes(store_url: str) -> None:
    """Another store (connection) writes new traces through a real writer while prune deletes 300
    old traces in 40-span batches: the writer loses nothing and never fails."""
    filler = open_store(store_url)
    old = NOW - 30 * DAY
    filler.write([s for t in range(1, 301) for s in _trace(t, old + t * S, 10)], [])
    filler.close()
    writer = StoreWriter(lambda: open_store(store_url), max_batch_size=20, flush_interval_s=0.01)
    pruner = open_store(store_url)
    stop = threading.Event()
    submitted: list[int] = []

    def produce() -> None:
        trace = 1000
        while not stop.is_set():
            trace += 1
            writer.submit_spans(_trace(trace, time.time_ns(), 3))
            submitted.append(trace)
            time.sleep(0.005)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        batches: list[Pruned] = []
        total = prune(pruner, time.time_ns() - DAY, max_spans=40, progress=batches.append)
    finally:
        stop.set()
        producer.join()
    assert writer.flush(30)
    snap = writer.snapshot()
    writer.shutdown(5)
    assert total == Pruned(traces=300, spans=3000, usage=0)
    assert len(batches) >= 3000 // 40
    assert snap.written == 3 * len(submitted) and snap.dropped == 0
    assert sum(snap.write_failures.values()) == 0
    assert _ids(pruner) == sorted(f"{t:032x}" for t in submitted)
    pruner.close()


# --------------------------------------------------------------------------------------
# Opening a store to prune it
# --------------------------------------------------------------------------------------
def test_opening_to_write_creates_and_upgrades_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "traces.db"
    with pytest.raises(StoreError, match="no llmtrace store at"):
        open_store(str(missing), create=False, write=True)
    assert not missing.parent.exists()
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.close()
    with pytest.raises(StoreError, match="is not an llmtrace store"):
        open_store(str(other), create=False, write=True)
    old = tmp_path / "v2.db"
    conn = sqlite3.connect(old, isolation_level=None)
    _schema.migrate(lambda sql, params=(): conn.execute(sql, tuple(params)).fetchall(), "sqlite", target=2)
    conn.close()
    store = open_store(str(old), create=False, write=True)
    assert store.read_only is False  # type: ignore[attr-defined]
    assert prune(store, NOW, now_ns=NOW) == Pruned()
    assert store.schema_version() == 2  # type: ignore[attr-defined]
    store.close()


def test_opening_an_empty_postgresql_schema_to_write_refuses_it(fresh_postgres_url: str) -> None:
    with pytest.raises(StoreError, match="is not an llmtrace store"):
        open_store(fresh_postgres_url, create=False, write=True)
    open_store(fresh_postgres_url).close()  # a writer creates it
    store = open_store(fresh_postgres_url, create=False, write=True)
    store.write(_trace(1, NOW - 2 * DAY, 2), [])
    assert prune(store, NOW - DAY, now_ns=NOW) == Pruned(1, 2, 0)
    store.close()


def test_reclaim_space(store: Store) -> None:
    old = NOW - 10 * DAY
    big = {sc.GEN_AI_INPUT_MESSAGES: "x" * 2000}
    store.write([replace(s, attributes=big) for t in range(1, 200) for s in _trace(t, old + t, 5)], [])
    assert prune(store, NOW, now_ns=NOW).traces == 199
    before = store.size_bytes()
    store.reclaim_space()
    after = store.size_bytes()
    assert before is not None and after is not None and after > 0
    if store.url.startswith("postgres"):
        return  # VACUUM keeps the space for reuse: the size says so, without a bound to check
    assert after < before / 5


# --------------------------------------------------------------------------------------
# Reading helpers of the command line
# --------------------------------------------------------------------------------------
def test_trace_id_prefixes_unpriced_calls_and_the_calls_time_range(store: Store) -> None:
    write_dataset(store)
    unpriced = {t.trace_id: t.unpriced_calls for t in store.list_traces(limit=10).items}
    assert unpriced == {t.trace_id: int(t is TRACE_D) for t in TRACES}  # R6 (llama3) has no price
    assert store.find_trace_ids("aaaa") == (["a" * 32], 1)
    assert store.find_trace_ids("f0") == ([], 0)
    store.write([replace(_span(1, 0, NOW, root=True), trace_id="ab" + "0" * 30)], [])
    found, total = store.find_trace_ids("a", limit=2)
    assert (found, total) == (["a" * 32, "ab" + "0" * 30], 2)
    assert store.find_trace_ids("a", limit=1) == (["a" * 32], 2)
    assert store.usage_time_range() == (R1.start, R9.start)
    assert store.usage_time_range(TraceFilter(service="search")) == (R4.start, R7.start)
    assert store.usage_time_range(TraceFilter(model="nothing")) is None


# --------------------------------------------------------------------------------------
# The writer's automatic retention
# --------------------------------------------------------------------------------------
@pytest.fixture
def quick_retention(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(writer_module, "RETENTION_BATCH_SPANS", 4)
    yield


def _wait(predicate: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_writer_prunes_when_it_starts_on_its_own_thread(store_url: str, quick_retention: None) -> None:
    setup = open_store(store_url)
    write_dataset(setup)  # March 2024: every trace is older than a day, with its root
    recent = time.time_ns() - HOUR
    setup.write(_trace(99, recent, 3), [_usage(99, 0, recent)])
    setup.close()
    threads: list[str] = []

    def opener() -> Store:
        opened = open_store(store_url)
        batch = opened.prune_batch

        def recording(*args: Any, **kwargs: Any) -> Pruned:
            threads.append(threading.current_thread().name)
            return batch(*args, **kwargs)

        opened.prune_batch = recording  # type: ignore[method-assign]
        return opened

    writer = StoreWriter(opener, flush_interval_s=0.05, retention_s=24 * 3600)
    writer.submit_spans(_trace(100, time.time_ns(), 2))  # written between the prune's batches
    _wait(lambda: writer.snapshot().last_prune_time is not None)
    assert writer.flush(10)
    snap = writer.snapshot()
    writer.shutdown(5)
    assert (snap.pruned_traces, snap.pruned_spans, snap.pruned_usage) == (5, 15, 9)
    assert snap.retention_s == 24 * 3600 and snap.prune_failures == 0
    assert snap.written == 2 and snap.dropped == 0
    assert len(threads) >= 15 // 4 and set(threads) == {"llmtrace-store-writer"}
    check = open_store(store_url, create=False)
    assert _ids(check) == [f"{99:032x}", f"{100:032x}"]
    check.close()


def test_a_failing_retention_is_logged_once_counted_and_writing_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(writer_module, "RETENTION_INTERVAL_S", 0.0)
    path = tmp_path / "traces.db"
    setup = open_store(str(path))
    setup.write(_trace(1, NOW - 10 * DAY, 2), [])
    setup.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE usage")  # every prune batch now fails (it deletes the traces' usage)
    conn.close()
    caplog.set_level(logging.WARNING, logger="llmtrace")
    writer = StoreWriter(lambda: open_store(str(path)), flush_interval_s=0.02, retention_s=3600)
    _wait(lambda: writer.snapshot().prune_failures >= 3)
    writer.submit_spans(_trace(2, time.time_ns(), 2))
    assert writer.flush(10)
    snap = writer.snapshot()
    writer.shutdown(5)
    assert snap.written == 2 and snap.dropped == 0 and snap.pruned_traces == 0
    assert snap.last_prune_error is not None and "usage" in snap.last_prune_error
    warnings = [r.getMessage() for r in caplog.records if "retention failed" in r.getMessage()]
    assert len(warnings) == 1 and "no such table: usage" in warnings[0]


def test_retention_settings(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(_retention.ENV_VAR, raising=False)
    assert retention_seconds(None) is None
    assert retention_seconds(90) == 90.0 and retention_seconds(timedelta(hours=2)) == 7200.0
    for bad in (0, -1, float("inf"), float("nan"), "7d", True, timedelta(0)):
        with pytest.raises(ValueError, match="store_retention must be"):
            retention_seconds(bad)  # type: ignore[arg-type]
    monkeypatch.setenv(_retention.ENV_VAR, " 7d ")
    assert retention_seconds(None) == 7 * 86400.0
    assert retention_seconds(60) == 60.0  # the keyword wins
    monkeypatch.setenv(_retention.ENV_VAR, "1.5h")
    assert retention_seconds(None) == 5400.0
    caplog.set_level(logging.WARNING, logger="llmtrace")
    for bad, why in (
        ("a week", "is not a duration such as 7d"),
        ("0s", "must be positive"),
        ("3600", "is not"),
    ):
        caplog.clear()
        monkeypatch.setenv(_retention.ENV_VAR, bad)
        assert retention_seconds(None) is None
        (record,) = caplog.records
        assert f"LLMTRACE_STORE_RETENTION={bad!r} {why}" in record.getMessage()
        assert "the setting is ignored" in record.getMessage()


def test_configure_hands_the_retention_to_the_store_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_retention.ENV_VAR, "30m")
    for keyword, expected in ((None, 1800.0), (timedelta(days=7), 7 * 86400.0), (120, 120.0)):
        pipeline = llmtrace.configure(
            store=str(tmp_path / "traces.db"), exporters="store", store_retention=keyword, set_global=False
        )
        try:
            assert pipeline.store_writer is not None
            assert pipeline.store_writer.snapshot().retention_s == expected
        finally:
            pipeline.shutdown()
    with pytest.raises(ValueError, match="store_retention must be positive"):
        llmtrace.configure(store=str(tmp_path / "x.db"), store_retention=-5, set_global=False)
