"""The writer against a real PostgreSQL server that the tests stop, restart and lock.

The server is this module's own throwaway cluster (``tests.pg_server.PgServer``), never the
shared one of ``LLMTRACE_TEST_POSTGRES_URL``: taking it away would disturb the other tests.
Spans and usage records come from real traced calls through ``llmtrace.configure(store=...)``,
so the whole path is exercised: TelemetryHandler -> span processor / usage sink -> writer ->
PostgresStore.
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import llmtrace
from llmtrace.store import StoreError, open_store
from llmtrace.store._exporter import store_writer
from llmtrace.store._writer import WriterSnapshot, classify_failure
from tests.heap import heap_frozen
from tests.pg_server import PgServer, unavailable
from tests.store_writer.test_writer_queue import span

psycopg = pytest.importorskip("psycopg")

MAX_CALL_MS = 250
"""No traced call may wait for the database: an outage or lock lasts 2 s, so waiting would show."""
LOCK_S = 4.0
"""How long the 8-thread test holds the table lock: production (~0.7 s) must end well before it."""


@pytest.fixture(scope="module")
def server() -> Iterator[PgServer]:
    try:
        pg = PgServer()
    except Exception as exc:
        unavailable(f"PostgreSQL: no server could be started for the writer's outage tests: {exc}")
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture(autouse=True)
def _heap_frozen() -> Iterator[None]:
    """The traced calls' latency is asserted: a full collection of the test session's heap (up to
    ~1 s late in the suite) would be measured instead of the writer (see tests.heap)."""
    with heap_frozen():
        yield


@pytest.fixture
def db_url(server: PgServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A new, empty database on the module's server (running), and a working directory of our own
    (the writer keeps its status file under ``.llmtrace/`` there)."""
    monkeypatch.chdir(tmp_path)
    try:
        with psycopg.connect(server.url, autocommit=True, connect_timeout=5):
            pass
    except psycopg.OperationalError:
        server.start()  # a previous test left it stopped
    name = f"w_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + f"/{name}"


def _pipeline(url: str, shutdown_timeout_s: float, **kwargs: Any) -> llmtrace.Pipeline:
    # the store's shutdown bound is the export timeout (at least 1 s)
    return llmtrace.configure(
        store=url,
        exporters="store",
        service_name="writer-pg",
        export_timeout_ms=shutdown_timeout_s * 1000,
        set_global=False,
        **kwargs,
    )


def _handler(pipeline: llmtrace.Pipeline) -> llmtrace.TelemetryHandler:
    return llmtrace.TelemetryHandler(
        tracer_provider=pipeline.tracer_provider,
        meter_provider=pipeline.meter_provider,
        logger_provider=pipeline.logger_provider,
    )


SPANS_PER_CALL = 2  # an agent span and its chat span
USAGE_PER_CALL = 1  # the chat's usage record


def _call(handler: llmtrace.TelemetryHandler, i: int) -> None:
    agent = handler.start_agent("researcher")
    chat = handler.start_chat("gpt-4o-mini", provider="openai", parent=agent)
    chat.set_usage(input_tokens=100 + i, output_tokens=10)
    chat.stop()
    agent.stop()


def _calls(handler: llmtrace.TelemetryHandler, first: int, count: int, latencies: list[int]) -> None:
    """Traced calls; any exception escaping one fails the test."""
    clock = time.perf_counter_ns
    for i in range(first, first + count):
        before = clock()
        _call(handler, i)
        latencies.append(clock() - before)


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in ("spans", "usage", "traces")
        }


def _balanced(snap: WriterSnapshot) -> WriterSnapshot:
    assert snap.accepted == snap.written + snap.dropped + snap.pending
    assert snap.dropped == sum(snap.dropped_by_reason.values())
    assert snap.written == snap.written_spans + snap.written_usage
    return snap


def _check_latency(latencies: list[int], label: str, max_ms: float = MAX_CALL_MS) -> None:
    median_us = statistics.median(latencies) / 1000
    worst_ms = max(latencies) / 1e6
    p999_ms = sorted(latencies)[int(len(latencies) * 0.999)] / 1e6
    print(f"{label}: median {median_us:.0f} µs, p99.9 {p999_ms:.1f} ms, max {worst_ms:.1f} ms")
    assert median_us < 2_000
    assert worst_ms < max_ms


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# --------------------------------------------------------------------------------------
def test_a_restarted_server_loses_nothing_below_capacity(server: PgServer, db_url: str) -> None:
    before, during, after = 300, 600, 300
    total = before + during + after
    pipeline = _pipeline(db_url, shutdown_timeout_s=20)
    writer = pipeline.store_writer
    assert writer is not None
    handler = _handler(pipeline)
    latencies: list[int] = []

    _calls(handler, 0, before, latencies)
    assert writer.flush(10)
    assert _counts(db_url) == {"spans": before * SPANS_PER_CALL, "usage": before, "traces": before}

    outage_started = time.monotonic()
    server.stop("fast")  # kills the writer's open connection; new ones are refused
    outage: list[int] = []
    for part in range(10):  # the application keeps running for ~2 s without its database
        _calls(handler, before + part * (during // 10), during // 10, outage)
        time.sleep(0.2)
    assert _wait_for(lambda: writer.snapshot().write_failures["connection"] >= 2, 5)
    mid = _balanced(writer.snapshot())
    assert mid.pending > 0 and mid.dropped == 0
    server.start()
    outage_s = time.monotonic() - outage_started
    _calls(handler, before + during, after, latencies)

    started = time.perf_counter()
    pipeline.shutdown()
    shutdown_s = time.perf_counter() - started

    snap = _balanced(writer.snapshot())
    print(f"outage {outage_s:.1f} s, shutdown {shutdown_s:.2f} s, {snap}")
    assert snap.state == "stopped" and snap.pending == 0
    assert snap.dropped == 0, snap.dropped_by_reason
    assert snap.accepted == total * (SPANS_PER_CALL + USAGE_PER_CALL)
    assert snap.written_spans == total * SPANS_PER_CALL and snap.written_usage == total * USAGE_PER_CALL
    assert snap.write_failures["connection"] >= 2 and snap.retries >= 2
    assert sum(snap.write_failures.values()) == snap.write_failures["connection"]  # nothing misread
    assert snap.last_error_class == "connection"
    assert _counts(db_url) == {"spans": total * SPANS_PER_CALL, "usage": total, "traces": total}
    assert shutdown_s < 10
    _check_latency(outage, "calls while the server was down")
    _check_latency(latencies, "calls while it was up")


@pytest.mark.parametrize("down_from_the_start", [False, True], ids=["dies", "never-up"])
def test_a_dead_server_never_raises_and_shutdown_is_bounded(
    server: PgServer, db_url: str, down_from_the_start: bool
) -> None:
    written_calls, lost_calls, bound_s = (0 if down_from_the_start else 200), 300, 1.5
    if down_from_the_start:
        server.stop("fast")
    pipeline = _pipeline(db_url, shutdown_timeout_s=bound_s)  # configure() does not touch the database
    writer = pipeline.store_writer
    assert writer is not None
    handler = _handler(pipeline)
    latencies: list[int] = []
    _calls(handler, 0, written_calls, latencies)
    if written_calls:
        assert writer.flush(10)
        server.stop("fast")
    _calls(handler, written_calls, lost_calls, latencies)
    assert writer.flush(0.5) is False  # nothing can be written now; flush says so, within its bound

    started = time.perf_counter()
    pipeline.shutdown()
    shutdown_s = time.perf_counter() - started
    _call(handler, 10_000)  # after shutdown: its spans are refused and counted, never raised
    # (its usage record does not reach the writer: shutdown removed the pipeline's usage sink)

    snap = _balanced(writer.snapshot())
    print(f"shutdown {shutdown_s:.2f} s, {snap}")
    assert shutdown_s < bound_s + 1.5
    assert snap.state == "stopped" and snap.pending == 0
    assert snap.written_spans == written_calls * SPANS_PER_CALL and snap.written_usage == written_calls
    lost = lost_calls * (SPANS_PER_CALL + USAGE_PER_CALL)
    assert snap.dropped_by_reason == {
        "queue_full": 0,
        "write_failed": 0,
        "invalid": 0,
        "shutdown": lost + SPANS_PER_CALL,  # the pending ones, and the late call's spans
    }
    assert snap.write_failures["connection"] >= 1 and snap.retries >= 1
    assert sum(snap.write_failures.values()) == snap.write_failures["connection"]
    assert snap.last_error_class == "connection" and snap.last_error
    _check_latency(latencies, "calls against a dead server")

    server.start()  # what was reported written is there, and nothing else
    if written_calls:
        assert _counts(db_url) == {
            "spans": written_calls * SPANS_PER_CALL,
            "usage": written_calls,
            "traces": written_calls,
        }


def test_10k_items_from_8_threads_finish_while_the_table_is_locked(db_url: str) -> None:
    threads, per_thread = 8, 625  # 5,000 calls: 10,000 spans and 5,000 usage records
    total = threads * per_thread
    pipeline = _pipeline(db_url, shutdown_timeout_s=20, store_queue_size=20_000)
    writer = pipeline.store_writer
    assert writer is not None
    handler = _handler(pipeline)
    _call(handler, -1)  # the writer has opened (and created) the store before the lock is taken
    assert writer.flush(10)

    locked = threading.Event()
    lock_info: dict[str, Any] = {}

    def hold_lock() -> None:
        with psycopg.connect(db_url) as conn:  # a transaction: the lock is held until it ends
            conn.execute("LOCK TABLE spans IN ACCESS EXCLUSIVE MODE")
            lock_info["written_spans"] = writer.snapshot().written_spans
            locked.set()
            time.sleep(LOCK_S)
            lock_info["before_release"] = _balanced(writer.snapshot())
            lock_info["released_at"] = time.perf_counter()

    locker = threading.Thread(target=hold_lock)
    locker.start()
    assert locked.wait(10)
    latencies: list[list[int]] = [[] for _ in range(threads)]
    gate = threading.Barrier(threads)

    def produce(index: int) -> None:
        gate.wait()
        _calls(handler, index * per_thread, per_thread, latencies[index])

    producers = [threading.Thread(target=produce, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join()
    produced_at = time.perf_counter()
    produced_in = produced_at - started
    locker.join()

    while_locked: WriterSnapshot = lock_info["before_release"]
    assert while_locked.written_spans == lock_info["written_spans"]  # the lock really held the writer
    assert while_locked.pending > 0
    started = time.perf_counter()
    pipeline.shutdown()
    shutdown_s = time.perf_counter() - started

    snap = _balanced(writer.snapshot())
    print(f"produced in {produced_in:.2f} s, shutdown {shutdown_s:.2f} s, {snap}")
    assert snap.dropped == 0 and snap.pending == 0
    assert snap.accepted == (total + 1) * (SPANS_PER_CALL + USAGE_PER_CALL)
    assert _counts(db_url) == {"spans": (total + 1) * SPANS_PER_CALL, "usage": total + 1, "traces": total + 1}
    assert snap.high_water_mark > 0
    # The application never waited for the database: every call of every thread returned while the
    # table was still locked. (Single-call maxima across 9 threads on 2 CPUs measure the scheduler.)
    assert produced_at < lock_info["released_at"], (produced_in, LOCK_S)
    all_calls = [x for per_thread in latencies for x in per_thread]
    # and no call waited for it (a call blocked by the lock would take seconds; 8 threads on 2
    # cores make the median a few ms of scheduling, more on a loaded machine)
    assert statistics.median(all_calls) / 1e6 < 100


def test_classification_of_real_psycopg_failures(server: PgServer, db_url: str) -> None:
    """What psycopg really raises when the server goes away, is not there, or is locked."""
    conn = psycopg.connect(db_url, autocommit=True)
    server.stop("fast")
    with pytest.raises(psycopg.Error) as killed:
        conn.execute("SELECT 1")
    conn.close()
    assert classify_failure(killed.value) == "connection"
    with pytest.raises(psycopg.Error) as refused:
        psycopg.connect(db_url, connect_timeout=2)
    assert classify_failure(refused.value) == "connection"
    server.start()
    with psycopg.connect(db_url) as holder, psycopg.connect(db_url, autocommit=True) as other:
        other.execute("CREATE TABLE t (x int)")
        holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        other.execute("SET lock_timeout = '50ms'")
        with pytest.raises(psycopg.Error) as lock_timeout:
            other.execute("SELECT * FROM t")
        other.execute("SET lock_timeout = 0; SET statement_timeout = '50ms'")
        with pytest.raises(psycopg.Error) as statement_timeout:
            other.execute("SELECT pg_sleep(1)")
    assert classify_failure(lock_timeout.value) == "contention"
    assert classify_failure(statement_timeout.value) == "timeout"


# -------------------------------------------------------------------------------------- bugs found
def test_connection_failures_are_classified_by_type_not_by_the_urls_text(
    server: PgServer, db_url: str
) -> None:
    """A connection failure used to be read as ``timeout`` or ``contention`` when the URL (quoted in
    the error message) said ``connect_timeout`` or named a database ``deadlock_...``."""
    server.stop("fast")
    for url in (f"{db_url}?connect_timeout=5", db_url.rsplit("/", 1)[0] + "/deadlock_lock_timeout"):
        with pytest.raises(StoreError) as refused:
            open_store(url)
        assert isinstance(refused.value, ConnectionError)
        assert classify_failure(refused.value) == "connection", str(refused.value)
    writer = store_writer(lambda: open_store(f"{db_url}?connect_timeout=5"), flush_interval_s=0.01)
    writer.submit_span(span(1))
    assert _wait_for(lambda: writer.snapshot().retries >= 2, 5)
    writer.shutdown(0.1)
    snap = _balanced(writer.snapshot())
    assert snap.write_failures["connection"] >= 2
    assert sum(snap.write_failures.values()) == snap.write_failures["connection"]


def test_a_write_waiting_on_a_lock_past_the_shutdown_deadline_is_cancelled_and_counted(db_url: str) -> None:
    """Shutdown used to return at its bound with the write still waiting (``pending``, state
    ``stopping``, no error): the thread went on and wrote after shutdown had returned."""
    bound_s = 1.0
    pipeline = _pipeline(db_url, shutdown_timeout_s=bound_s)
    writer = pipeline.store_writer
    assert writer is not None
    handler = _handler(pipeline)
    _call(handler, -1)
    assert writer.flush(10)
    with psycopg.connect(db_url) as holder:
        holder.execute("LOCK TABLE spans IN ACCESS EXCLUSIVE MODE")  # held for longer than the bound
        latencies: list[int] = []
        _calls(handler, 0, 200, latencies)
        time.sleep(writer.flush_interval_s + 0.3)  # the writer has taken a batch: it waits on the lock
        started = time.perf_counter()
        pipeline.shutdown()
        shutdown_s = time.perf_counter() - started
        snap = _balanced(writer.snapshot())
        holder.rollback()
    print(f"shutdown {shutdown_s:.2f} s, {snap}")
    assert shutdown_s < bound_s + 1.0
    assert snap.state == "stopped" and snap.pending == 0
    assert snap.written_spans == SPANS_PER_CALL  # the call before the lock
    assert snap.dropped == snap.dropped_by_reason["shutdown"] > 0
    assert snap.write_failures["timeout"] >= 1 and "QueryCanceled" in (snap.last_error or "")
    assert _counts(db_url) == {"spans": snap.written_spans, "usage": snap.written_usage, "traces": 1}
    _check_latency(latencies, "calls while the table was locked")


def test_a_store_that_fails_to_open_closes_its_connection(server: PgServer, db_url: str) -> None:
    """A connection whose schema migration failed used to stay open (one more on every retry)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE no_create LOGIN")
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    url = db_url.replace("postgres@", "no_create@")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(StoreError, match="permission denied"):
            open_store(url)
        gc.collect()
    assert not [w for w in caught if "still open" in str(w.message)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'no_create'").fetchone()
        assert left is not None and left[0] == 0
        conn.execute("DROP ROLE no_create")
