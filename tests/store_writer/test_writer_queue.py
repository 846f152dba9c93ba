"""The writer's queueing, accounting, retries and failure classes, against a tiny in-test store.

(End-to-end behaviour against the real SQLite store is in test_writer_sqlite.py.)
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from llmtrace import semconv as sc
from llmtrace._usage import UsageRecord
from llmtrace.store import SpanRecord, StoreError
from llmtrace.store._writer import StoreWriter, classify_failure, pressure_level


def span(i: int) -> SpanRecord:
    return SpanRecord(
        trace_id=f"{i:032x}",
        span_id=f"{i:016x}",
        parent_span_id=None,
        name=f"span {i}",
        kind="INTERNAL",
        start_ns=i,
        end_ns=i + 1,
        status_code="UNSET",
        status_message="",
        attributes={},
        events=[],
        links=[],
        resource={},
        scope="test",
    )


def usage(i: int) -> UsageRecord:
    return UsageRecord(
        operation="chat",
        provider="openai",
        request_model="gpt-4o-mini",
        response_model=None,
        framework=None,
        input_tokens=1,
        output_tokens=1,
        cache_read_tokens=None,
        cache_write_tokens=None,
        reasoning_tokens=None,
        cost=None,
        duration_s=0.1,
        time_to_first_chunk_s=None,
        streamed=False,
        status="success",
        error_type=None,
        cache_hit=None,
        trace_id=f"{i:032x}",
        span_id=f"{i:016x}",
        start_time_unix_nano=i,
    )


class FakeStore:
    url = "fake://"

    def __init__(self, fail: Callable[[Sequence[SpanRecord]], Exception | None] | None = None) -> None:
        self.spans: list[SpanRecord] = []
        self.usage: list[UsageRecord] = []
        self.calls = 0
        self.fail = fail
        self.closed = False
        self.lock = threading.Lock()

    def write(self, spans: Sequence[SpanRecord], usage: Sequence[UsageRecord]) -> None:
        with self.lock:
            self.calls += 1
            error = self.fail(spans) if self.fail else None
            if error is not None:
                raise error
            self.spans.extend(spans)
            self.usage.extend(usage)

    def close(self) -> None:
        self.closed = True


def balanced(writer: StoreWriter) -> dict[str, Any]:
    snap = writer.snapshot()
    assert snap.accepted == snap.written + snap.dropped + snap.pending
    assert snap.dropped == sum(snap.dropped_by_reason.values())
    return snap.to_dict()


def test_everything_is_written_in_batches_and_counted():
    store = FakeStore()
    writer = StoreWriter(store, max_batch_size=100, flush_interval_s=0.05)
    for i in range(1000):
        assert writer.submit_span(span(i))
    assert writer.submit_usage(usage(1))
    assert writer.flush(5)
    snap = balanced(writer)
    assert snap["accepted"] == snap["written"] == 1001
    assert snap["written_spans"] == 1000 and snap["written_usage"] == 1
    assert snap["pending"] == 0 and snap["dropped"] == 0
    assert [s.name for s in store.spans] == [f"span {i}" for i in range(1000)]  # in order
    assert store.calls >= 10  # batched by size, not one huge transaction
    assert writer.shutdown(2)
    assert store.closed is False  # a store handed in is the caller's to close
    assert writer.snapshot().state == "stopped"


def test_full_queue_drops_and_counts_with_pressure_and_high_water():
    gate = threading.Event()

    def blocked(spans: Sequence[SpanRecord]) -> Exception | None:
        gate.wait(10)
        return None

    writer = StoreWriter(FakeStore(blocked), max_queue_size=100, max_batch_size=10, flush_interval_s=0.01)
    levels = []
    for i in range(150):
        writer.submit_span(span(i))
        levels.append(writer.snapshot().pressure)
    snap = balanced(writer)
    assert snap["dropped_by_reason"]["queue_full"] == 50
    assert snap["high_water_mark"] == 100 and snap["pressure"] == "saturated"
    assert levels[0] == "ok" and "elevated" in levels and "high" in levels and levels[-1] == "saturated"
    gate.set()
    assert writer.flush(5)
    snap = balanced(writer)
    assert snap["written"] == 100 and snap["pending"] == 0 and snap["pressure"] == "ok"
    assert snap["high_water_mark"] == 100
    writer.shutdown(2)


def test_pressure_levels():
    assert [pressure_level(d, 10) for d in (0, 4, 5, 7, 8, 9, 10, 11)] == [
        "ok",
        "ok",
        "elevated",
        "elevated",
        "high",
        "high",
        "saturated",
        "saturated",
    ]


def test_contention_is_retried_until_written():
    failures = iter([sqlite3.OperationalError("database is locked")] * 3)
    writer = StoreWriter(FakeStore(lambda s: next(failures, None)), flush_interval_s=0.01)
    for i in range(10):
        writer.submit_span(span(i))
    assert writer.flush(5)
    snap = balanced(writer)
    assert snap["written"] == 10 and snap["dropped"] == 0
    assert snap["write_failures"]["contention"] == 3 and snap["retries"] == 3
    assert snap["last_error_class"] == "contention" and "locked" in snap["last_error"]
    writer.shutdown(1)


def test_a_rejected_item_is_isolated_and_the_rest_written():
    def reject_13(spans: Sequence[SpanRecord]) -> Exception | None:
        if any(s.name == "span 13" for s in spans):
            return sqlite3.IntegrityError("UNIQUE constraint failed: spans.span_id")
        return None

    store = FakeStore(reject_13)
    writer = StoreWriter(store, max_batch_size=32, flush_interval_s=0.01)
    writer.submit_spans(span(i) for i in range(40))
    assert writer.flush(5)
    snap = balanced(writer)
    assert snap["written"] == 39 and snap["dropped_by_reason"]["write_failed"] == 1
    assert snap["write_failures"]["constraint"] >= 1
    assert sorted(int(s.name.split()[1]) for s in store.spans) == [i for i in range(40) if i != 13]
    writer.shutdown(1)


def test_reconnects_through_the_opener_after_a_connection_failure():
    opened: list[FakeStore] = []
    writes = iter([ConnectionResetError("server closed the connection unexpectedly")] * 2)
    opens = iter([OSError("could not connect to server: Connection refused")])

    def opener() -> FakeStore:
        error = next(opens, None)
        if error is not None:
            raise error
        store = FakeStore(lambda spans: next(writes, None))
        opened.append(store)
        return store

    writer = StoreWriter(opener, store_url="fake://db", flush_interval_s=0.01)
    for i in range(5):
        writer.submit_span(span(i))
    assert writer.flush(5)
    snap = balanced(writer)
    assert snap["written"] == 5 and snap["write_failures"]["connection"] == 3
    assert len(opened) == 3 and opened[0].closed and opened[1].closed  # broken connections replaced
    assert [len(s.spans) for s in opened] == [0, 0, 5]
    writer.shutdown(1)
    assert opened[2].closed  # an opened store is the writer's to close


def test_a_dead_store_never_raises_and_shutdown_is_bounded():
    def dead() -> FakeStore:
        raise ConnectionRefusedError("connection refused")

    writer = StoreWriter(dead, store_url="fake://dead", flush_interval_s=0.01)
    started = time.perf_counter()
    for i in range(100):
        writer.submit_span(span(i))
    assert time.perf_counter() - started < 0.5
    assert writer.flush(0.2) is False
    started = time.perf_counter()
    assert writer.shutdown(0.5) is False
    assert time.perf_counter() - started < 2.5
    snap = balanced(writer)
    assert snap["written"] == 0 and snap["pending"] == 0
    assert snap["dropped_by_reason"]["shutdown"] == 100 and snap["state"] == "stopped"
    # after shutdown, items are refused and counted, never raised
    assert writer.submit_span(span(1)) is False
    assert balanced(writer)["dropped_by_reason"]["shutdown"] == 101


def test_an_unconvertible_span_is_counted_as_invalid():
    def convert(item: Any) -> SpanRecord:
        if item == "bad":
            raise ValueError("no context")
        return span(int(item))

    writer = StoreWriter(FakeStore(), convert_span=convert, flush_interval_s=0.01)
    writer.submit_spans(["1", "bad", "2"])
    assert writer.flush(5)
    snap = balanced(writer)
    assert snap["written"] == 2 and snap["dropped_by_reason"]["invalid"] == 1
    writer.shutdown(1)


class _PgError(Exception):
    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class SerializationFailure(Exception):
    pass


class OperationalError(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (sqlite3.OperationalError("database is locked"), "contention"),
        (sqlite3.OperationalError("database table is locked: spans"), "contention"),
        (sqlite3.IntegrityError("NOT NULL constraint failed: spans.name"), "constraint"),
        (sqlite3.OperationalError("unable to open database file"), "connection"),
        (sqlite3.OperationalError("disk I/O error"), "connection"),
        (sqlite3.OperationalError("no such table: spans"), "unknown"),
        (sqlite3.OperationalError("database or disk is full"), "disk_full"),
        (_PgError("could not extend file: No space left on device", "53100"), "disk_full"),
        (OSError(28, "No space left on device"), "disk_full"),
        (_PgError("could not serialize access", "40001"), "contention"),
        (_PgError("deadlock detected", "40P01"), "contention"),
        (_PgError("canceling statement due to statement timeout", "57014"), "timeout"),
        (_PgError("terminating connection due to administrator command", "57P01"), "connection"),
        (_PgError("duplicate key value violates unique constraint", "23505"), "constraint"),
        (_PgError("connection failure", "08006"), "connection"),
        (SerializationFailure("x"), "contention"),
        (OperationalError("server closed the connection unexpectedly"), "connection"),
        (OperationalError("something odd"), "connection"),
        (TimeoutError("timed out"), "timeout"),
        (ConnectionRefusedError(111, "Connection refused"), "connection"),
        (ValueError("bad value"), "unknown"),
    ],
)
def test_failure_classes(exc, expected):
    assert classify_failure(exc) == expected


def test_failure_class_looks_through_wrapping_errors():
    try:
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.Error as inner:
            raise StoreError("write failed") from inner
    except StoreError as outer:
        assert classify_failure(outer) == "contention"


def test_metrics_are_observable_instruments():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    gate = threading.Event()

    def blocked(spans: Sequence[SpanRecord]) -> Exception | None:
        gate.wait(5)
        return None

    writer = StoreWriter(
        FakeStore(blocked),
        max_queue_size=10,
        max_batch_size=5,
        flush_interval_s=0.01,
    )
    writer.register_metrics(provider)
    for i in range(12):
        writer.submit_span(span(i))
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points[metric.name] = list(metric.data.data_points)
    items = {p.attributes[sc.LLMTRACE_STORE_OUTCOME]: p.value for p in points[sc.METRIC_STORE_ITEMS]}
    assert items["accepted"] == 12 and items["dropped_queue_full"] == 2
    assert [p.value for p in points[sc.METRIC_STORE_QUEUE_DEPTH]] == [10]
    assert [p.value for p in points[sc.METRIC_STORE_QUEUE_HIGH_WATER]] == [10]
    assert {p.attributes[sc.ERROR_TYPE] for p in points[sc.METRIC_STORE_WRITE_FAILURES]} >= {"contention"}
    gate.set()
    writer.shutdown(2)
    provider.shutdown()


def test_status_file_for_other_processes(tmp_path):
    path = tmp_path / "traces.db.writers" / "writer-1.json"
    writer = StoreWriter(FakeStore(), status_path=path, flush_interval_s=0.01)
    writer.submit_span(span(1))
    writer.shutdown(2)
    data = json.loads(path.read_text())
    # saved by the writer thread as its last act: it says the final state, not "stopping"
    assert data["written"] == 1 and data["state"] == "stopped" and data["store"] == "fake://"
    assert data["pending"] == 0 and data["accepted"] == 1


def test_status_file_hides_the_store_password_and_is_private(tmp_path):
    # the snapshot names the store; a PostgreSQL URL's password (in the user info or as a
    # parameter) must not reach a file other users can read, nor `llmtrace diagnostics`
    path = tmp_path / "writers-abc" / "writer-1.json"
    url = "postgresql://app:S3cretPw@db.internal:5432/traces?sslpassword=K3y&sslmode=require"
    writer = StoreWriter(FakeStore(), store_url=url, status_path=path, flush_interval_s=0.01)
    writer.submit_span(span(1))
    writer.shutdown(2)
    text = path.read_text()
    assert "S3cretPw" not in text and "K3y" not in text
    assert json.loads(text)["store"] == (
        "postgresql://app:***@db.internal:5432/traces?sslpassword=***&sslmode=require"
    )
    assert writer.snapshot().store == json.loads(text)["store"]
    assert path.stat().st_mode & 0o777 == 0o600
