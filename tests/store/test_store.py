"""Writes, trace reads, pagination, errors and schema migration, on every backend."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llmtrace import semconv
from llmtrace.cli._otlp import trace_to_request
from llmtrace.store import (
    InvalidCursor,
    InvalidFilter,
    SpanEvent,
    SpanLink,
    SpanRecord,
    Store,
    StoreError,
    TraceFilter,
    TraceNotFound,
    _schema,
    open_store,
)
from llmtrace.store._open import DEFAULT_PATH, ENV_VAR

from .dataset import TRACE_A, all_spans, all_usage, call_span, root_span, tool_span

S = 1_000_000_000
T0 = 1_710_000_000 * S


def span(trace: str, span_id: str, parent: str | None, start: int, end: int, **attrs: Any) -> SpanRecord:
    return SpanRecord(
        trace_id=trace,
        span_id=span_id,
        parent_span_id=parent,
        name=f"span {span_id[-2:]}",
        kind="INTERNAL",
        start_ns=start,
        end_ns=end,
        status_code="UNSET",
        status_message="",
        attributes=attrs,
        events=(),
        links=(),
        resource={semconv.SERVICE_NAME: "svc"},
        scope="test",
    )


def tid(n: int) -> str:
    return f"{n:032x}"


def sid(n: int) -> str:
    return f"{n:016x}"


# --------------------------------------------------------------------------------------
# Round trip, idempotency, out-of-order batches
# --------------------------------------------------------------------------------------
def test_whole_trace_round_trip(store: Store) -> None:
    attrs = {
        "str": "héllo \x00 wörld",
        "bool": True,
        "int": 2**53 + 1,
        "neg": -7,
        "float": 0.1,
        "whole_float": 3.0,
        "strs": ("a", "b"),
        "bools": (True, False),
        "ints": (1, 2, 3),
        "floats": (1.5, -2.25),
        "large_floats": (1e16, -1e300, 1.7976931348623157e308),  # JSONB gave these back as integers
        "empty": (),
        "nul\x00key": "a NUL in a key too",
        semconv.GEN_AI_OPERATION_NAME: semconv.OP_CHAT,
        semconv.GEN_AI_REQUEST_MODEL: "gpt-4o",
    }
    root = SpanRecord(
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        parent_span_id=None,
        name="invoke_agent planner",
        kind="SERVER",
        start_ns=T0,
        end_ns=T0 + 5 * S,
        status_code="ERROR",
        status_message="boom: it failed",
        attributes=attrs,
        events=(
            SpanEvent("exception", T0 + S, {"exception.type": "ValueError", "exception.message": "bad"}),
            SpanEvent("step", T0 + 2 * S, {"index": 1, "ratio": 0.5, "tags": ("x",)}),
        ),
        links=(SpanLink("1" * 32, "2" * 16, {"link.kind": "follows", "n": 2}),),
        resource={semconv.SERVICE_NAME: "planner", "host.ports": (80, 443), "pid": 42},
        scope="llmtrace-test",
    )
    child = replace(
        root,
        span_id="00f067aa0ba902b7",
        parent_span_id=root.span_id,
        start_ns=T0 + S,
        events=(),
        links=(),
        status_code="OK",
        status_message="",
        name="chat gpt-4o",
    )
    store.write([child, root], [])
    trace = store.get_trace(root.trace_id.upper())
    assert trace.trace_id == root.trace_id
    assert [s.span_id for s in trace.spans] == [root.span_id, child.span_id]  # by start time
    got = trace.spans[0]
    expected_attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()}
    expected_attrs["str"] = "héllo \ufffd wörld"  # NUL cannot be stored (PostgreSQL text/JSONB)
    expected_attrs["nul\ufffdkey"] = expected_attrs.pop("nul\x00key")
    assert dict(got.attributes) == expected_attrs
    assert type(got.attributes["whole_float"]) is float and type(got.attributes["int"]) is int
    assert [type(v) for v in got.attributes["large_floats"]] == [float, float, float]
    assert got.events == (
        SpanEvent("exception", T0 + S, {"exception.type": "ValueError", "exception.message": "bad"}),
        SpanEvent("step", T0 + 2 * S, {"index": 1, "ratio": 0.5, "tags": ["x"]}),
    )
    assert got.links == (SpanLink("1" * 32, "2" * 16, {"link.kind": "follows", "n": 2}),)
    assert dict(got.resource) == {semconv.SERVICE_NAME: "planner", "host.ports": [80, 443], "pid": 42}
    assert (got.name, got.kind, got.scope, got.parent_span_id) == (root.name, "SERVER", "llmtrace-test", None)
    assert (got.status_code, got.status_message, got.start_ns, got.end_ns) == (
        "ERROR",
        "boom: it failed",
        T0,
        T0 + 5 * S,
    )
    assert got.duration_ns == 5 * S
    assert trace.spans[1].parent_span_id == root.span_id


def test_usage_records_round_trip(store: Store) -> None:
    usage = all_usage()
    store.write([], usage)
    store.write([], usage)  # idempotent
    by_trace = {}
    for record in usage:
        by_trace.setdefault(record.trace_id, []).append(record)
    for trace_id, records in by_trace.items():
        assert store.get_usage(trace_id) == sorted(records, key=lambda r: r.start_time_unix_nano)  # type: ignore[attr-defined]
    assert store.usage_summary().calls == len(usage)


def test_usage_records_keep_their_service(store: Store) -> None:
    """A usage record's own service (the pipeline's ``service.name``) is stored with it and wins
    over its span's; its span need not be stored at all (sampled out, dropped)."""
    usage = [replace(r, service="billing") for r in all_usage()]
    store.write([], usage[:5])  # no span, no trace: only their own service
    store.write(all_spans(), usage[5:])  # their spans say checkout or search
    assert store.get_usage(TRACE_A.trace_id)[0].service == "billing"  # type: ignore[attr-defined]
    assert store.usage_summary(TraceFilter(service="billing")).calls == 9
    assert store.usage_summary(TraceFilter(service="search")).calls == 0
    assert {p.group for p in store.usage_series(group_by="service", bucket="day")} == {"billing"}


def test_sampled_out_calls_keep_their_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``configure()`` with head sampling: the spans of unsampled calls are not stored, their usage
    records are, and they count under the pipeline's service (not under no service)."""
    import llmtrace

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    path = tmp_path / "sampled.db"
    pipeline = llmtrace.configure(
        store=str(path), exporters="store", service_name="svc-sampled", set_global=False
    )
    try:
        handler = llmtrace.TelemetryHandler(
            tracer_provider=pipeline.tracer_provider,
            meter_provider=pipeline.meter_provider,
            logger_provider=pipeline.logger_provider,
        )
        for i in range(6):
            chat = handler.start_chat("gpt-4o-mini", provider="openai")
            chat.set_usage(input_tokens=100 + i, output_tokens=10)
            chat.stop()
        pipeline.force_flush()
    finally:
        pipeline.shutdown()
    store = open_store(path, create=False)
    try:
        assert store.list_traces().items == []  # no span was sampled
        assert store.usage_summary(TraceFilter(service="svc-sampled")).calls == 6
        series = store.usage_series(group_by="service", bucket="day")
        assert [(p.group, p.calls) for p in series] == [("svc-sampled", 6)]
    finally:
        store.close()


def test_children_before_root_and_rewrites(store: Store) -> None:
    root = root_span(TRACE_A)
    calls = [call_span(TRACE_A, i, c) for i, c in enumerate(TRACE_A.calls)]
    store.write([calls[1]], [])
    (first,) = store.list_traces().items
    # only R2 so far: it stands in for the root
    assert (first.root_name, first.span_count, first.input_tokens, first.cost) == (
        "chat gpt-4o",
        1,
        200,
        pytest.approx(0.02),
    )
    store.write([calls[0], tool_span(TRACE_A)], [])
    store.write([root], [])
    for _ in range(2):
        (summary,) = store.list_traces().items
        assert summary.root_name == "invoke_agent shopper"
        assert (summary.start_ns, summary.duration_ns) == (TRACE_A.start, TRACE_A.end - TRACE_A.start)
        assert (summary.span_count, summary.input_tokens, summary.output_tokens) == (4, 300, 70)
        assert summary.cost == pytest.approx(0.03)
        assert (summary.service, summary.status) == ("checkout", "ok")
        store.write([root, *calls, calls[0]], [])  # rewrites and duplicates within a batch change nothing
    assert len(store.get_trace(TRACE_A.trace_id).spans) == 4


def test_model_spans_of_other_instrumentations_are_not_counted_twice(store: Store) -> None:
    """A provider SDK's own GenAI span under llmtrace's model span (the anthropic SDK makes one per
    call) repeats the call's tokens: the trace counts llmtrace's."""
    call = call_span(TRACE_A, 0, TRACE_A.calls[0])
    sdk_span = replace(
        call,
        span_id="e" * 16,
        parent_span_id=call.span_id,
        name="anthropic.messages.create",
        scope="anthropic",
    )
    store.write([call, sdk_span], [])
    (summary,) = store.list_traces().items
    assert summary.span_count == 2
    assert (summary.input_tokens, summary.output_tokens) == (
        TRACE_A.calls[0].input_tokens,
        TRACE_A.calls[0].output_tokens,
    )
    assert len(store.get_trace(TRACE_A.trace_id).spans) == 2  # stored all the same


def test_trace_not_found(store: Store) -> None:
    with pytest.raises(TraceNotFound, match="f" * 32):
        store.get_trace("f" * 32)
    with pytest.raises(TraceNotFound):
        store.get_trace("")


def test_concurrent_writers_and_readers(store: Store) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                t = tid(n * 100 + i)
                store.write(
                    [span(t, sid(1), None, T0 + i, T0 + i + 10), span(t, sid(2), sid(1), T0 + i, T0 + i + 5)],
                    [],
                )
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(20):
                store.list_traces(limit=5)
                store.usage_summary()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    items = store.list_traces(limit=100).items
    assert len(items) == 40 and all(t.span_count == 2 for t in items)


# --------------------------------------------------------------------------------------
# Pagination
# --------------------------------------------------------------------------------------
def _fill_pages(store: Store) -> list[str]:
    # 25 traces; starts repeat (each start shared by up to 3 traces) to exercise the trace_id tie-break
    spans = [span(tid(i + 1), sid(1), None, T0 + (i // 3) * S, T0 + (i // 3) * S + 1) for i in range(25)]
    store.write(spans[:12], [])
    store.write(spans[12:], [])
    return [s.trace_id for s in sorted(spans, key=lambda s: (s.start_ns, s.trace_id), reverse=True)]


def test_pagination_walks_every_trace_once(store: Store) -> None:
    expected = _fill_pages(store)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = store.list_traces(limit=7, cursor=cursor)
        seen += [t.trace_id for t in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        if pages == 1:  # a newer trace arriving mid-walk neither shifts nor repeats later pages
            store.write([span(tid(999), sid(1), None, T0 + 100 * S, T0 + 101 * S)], [])
        cursor = page.next_cursor
    assert pages == 4
    assert seen == expected


def test_pagination_with_filter(store: Store) -> None:
    _fill_pages(store)
    flt = TraceFilter(since_ns=T0 + 2 * S)  # starts T0+2s .. T0+8s: traces 7..25
    first = store.list_traces(flt, limit=10)
    second = store.list_traces(flt, limit=10, cursor=first.next_cursor)
    assert len(first.items) == 10 and len(second.items) == 9 and second.next_cursor is None
    assert len({t.trace_id for t in [*first.items, *second.items]}) == 19


def test_a_cursor_keeps_the_time_window_of_its_first_page(store: Store) -> None:
    """The CLI resolves ``--since 1h`` anew on every call: a cursor must survive a moved bound,
    and later pages keep the first page's window (no drift, no gap, no repeat)."""
    _fill_pages(store)
    first = store.list_traces(TraceFilter(since_ns=T0 + 2 * S), limit=10)  # traces 7..25
    assert first.next_cursor is not None
    moved = TraceFilter(since_ns=T0 + 5 * S, until_ns=T0 + 6 * S)  # would match far fewer
    second = store.list_traces(moved, limit=10, cursor=first.next_cursor)
    assert len(second.items) == 9 and second.next_cursor is None
    assert min(t.start_ns for t in second.items) == T0 + 2 * S
    everything = [t.trace_id for t in store.list_traces(TraceFilter(since_ns=T0 + 2 * S), limit=100).items]
    assert [t.trace_id for t in [*first.items, *second.items]] == everything
    with pytest.raises(InvalidCursor, match="different filter"):  # other fields still count
        store.list_traces(TraceFilter(since_ns=T0 + 2 * S, status="error"), cursor=first.next_cursor)


def test_invalid_cursors(store: Store, tmp_path: Path) -> None:
    _fill_pages(store)
    cursor = store.list_traces(TraceFilter(service="svc"), limit=5).next_cursor
    assert cursor is not None
    with pytest.raises(InvalidCursor, match="different filter"):
        store.list_traces(TraceFilter(), limit=5, cursor=cursor)
    for garbage in ("garbage", "a.b.c", "!!!.???", "", cursor[:-3] + "xyz", "x" + cursor):
        with pytest.raises(InvalidCursor):
            store.list_traces(TraceFilter(service="svc"), cursor=garbage)
    other = open_store(tmp_path / "other.db")
    try:
        with pytest.raises(InvalidCursor, match="not issued by this store"):
            other.list_traces(TraceFilter(service="svc"), cursor=cursor)
    finally:
        other.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": -1}, "limit"),
        ({"limit": 0}, "limit"),
        ({"filter": TraceFilter(since_ns=10, until_ns=5)}, "since"),
        ({"filter": TraceFilter(min_duration_ns=-1)}, "min_duration"),
        ({"filter": TraceFilter(status="broken")}, "status"),  # type: ignore[arg-type]
        ({"filter": TraceFilter(service="")}, "service"),
        # beyond int64 nanoseconds (1677-2262): neither backend could bind them
        ({"filter": TraceFilter(until_ns=2**63)}, "until_ns is out of range"),
        ({"filter": TraceFilter(since_ns=-(2**63) - 1)}, "since_ns is out of range"),
        ({"filter": TraceFilter(min_duration_ns=10**30)}, "min_duration_ns is out of range"),
    ],
)
def test_invalid_filters(store: Store, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidFilter, match=message):
        store.list_traces(**kwargs)


# --------------------------------------------------------------------------------------
# Schema and opening
# --------------------------------------------------------------------------------------
def _raw_execute(url: str) -> tuple[Any, Any]:
    """(execute, close) on a raw connection, with ``?`` placeholders on both backends."""
    if url.startswith("postgresql://"):
        import psycopg

        from llmtrace.store._postgres import _PgTx

        conn = psycopg.connect(url, autocommit=True)
        return _PgTx(conn.cursor()).execute, conn.close
    lite = sqlite3.connect(url, isolation_level=None)
    return (lambda sql, params=(): lite.execute(sql, tuple(params)).fetchall()), lite.close


def test_older_schema_is_migrated(store_url: str) -> None:
    execute, close = _raw_execute(store_url)
    dialect = "postgresql" if store_url.startswith("postgresql://") else "sqlite"
    _schema.migrate(execute, dialect, target=1)
    execute(
        "INSERT INTO spans (trace_id, span_id, name, kind, start_ns, end_ns, status_code, status_message, "
        "attributes, events, links, resource, scope, request_model, provider) "
        "VALUES (?, ?, 'old', 'INTERNAL', 1, 2, 'UNSET', '', '{}', '[]', '[]', '{}', '', 'gpt-4o', 'openai')",
        (tid(7), sid(1)),
    )
    execute(
        "INSERT INTO traces (trace_id, service, root_name, root_start_ns, has_root, start_ns, end_ns, "
        "duration_ns, span_count, input_tokens, output_tokens, cost, error_spans, status) "
        "VALUES (?, 'svc', 'old', 1, 1, 1, 2, 1, 1, 0, 0, NULL, 0, 'ok')",
        (tid(7),),
    )
    assert _schema.schema_version(execute) == 1
    close()
    store = open_store(store_url)
    try:
        assert store.schema_version() == _schema.CURRENT_VERSION == 6  # type: ignore[attr-defined]
        # the v2 migration indexed the old trace's model and provider
        assert [
            t.trace_id for t in store.list_traces(TraceFilter(model="gpt-4o", provider="openai")).items
        ] == [tid(7)]
        assert store.get_trace(tid(7)).spans[0].name == "old"
    finally:
        store.close()
    assert _schema_versions(store_url) == [1, 2, 3, 4, 5, 6]


_V2_WRITER_INSERT = (  # what a writer of schema version 2 inserts (it knows no later column)
    "INSERT INTO spans (trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code, "
    "status_message, attributes, events, links, resource, scope) VALUES "
    "(?, ?, NULL, 'v2 span', 'INTERNAL', ?, ?, 'UNSET', '', '{}', '[[\"e\",5,{}]]', "
    "'[[\"" + "1" * 32 + '","' + "2" * 16 + "\",{}]]', '{}', 'old.lib')"
)


def _v2_writer(url: str, stop: threading.Event, written: list[int], errors: list[BaseException]) -> None:
    """An llmtrace of schema version 2 in another process, writing as its store does (exclusively)."""
    try:
        if url.startswith("postgresql://"):
            import psycopg

            from llmtrace.store._postgres import _WRITE_LOCK_KEY, _pg

            with psycopg.connect(url) as conn:
                while not stop.is_set():
                    n = len(written) + 1
                    with conn.transaction():
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK_KEY,))
                        conn.execute(_pg(_V2_WRITER_INSERT), (tid(77), sid(n), T0 + n, T0 + n + 1))
                    written.append(n)
                    time.sleep(0.002)
        else:
            lite = sqlite3.connect(url, isolation_level=None, timeout=10)
            try:
                while not stop.is_set():
                    n = len(written) + 1
                    lite.execute("BEGIN IMMEDIATE")
                    lite.execute(_V2_WRITER_INSERT, (tid(77), sid(n), T0 + n, T0 + n + 1))
                    lite.execute("COMMIT")
                    written.append(n)
                    time.sleep(0.002)
            finally:
                lite.close()
    except BaseException as exc:
        errors.append(exc)


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_version_3_upgrades_in_place_while_an_older_writer_writes(store_url: str) -> None:
    """Two stores (each with its own connections, as in two processes) upgrade a version-2 store at
    once while a version-2 writer keeps writing: the upgrade runs once, no write is lost or refused,
    and the old rows read and export without what version 3 adds."""
    execute, close = _raw_execute(store_url)
    if not store_url.startswith("postgresql://"):
        execute("PRAGMA journal_mode = WAL", ())  # as every SqliteStore left it
    _schema.migrate(execute, "postgresql" if store_url.startswith("postgresql://") else "sqlite", target=2)
    close()
    stop = threading.Event()
    written: list[int] = []
    errors: list[BaseException] = []
    writer = threading.Thread(target=_v2_writer, args=(store_url, stop, written, errors))
    writer.start()
    try:
        _wait_for(lambda: len(written) >= 5 or bool(errors), "the version-2 writer")
        opened: list[Store] = []

        def upgrade() -> None:
            try:
                opened.append(open_store(store_url))
            except BaseException as exc:
                errors.append(exc)

        upgraders = [threading.Thread(target=upgrade) for _ in range(2)]
        for thread in upgraders:
            thread.start()
        for thread in upgraders:
            thread.join()
        after_upgrade = len(written)
        _wait_for(lambda: len(written) >= after_upgrade + 5 or bool(errors), "writes after the upgrade")
    finally:
        stop.set()
        writer.join()
    assert errors == []
    for store in opened:
        store.close()
    store = open_store(store_url)
    try:
        assert store.schema_version() == _schema.CURRENT_VERSION  # type: ignore[attr-defined]
        spans = store.get_trace(tid(77)).spans
        assert sorted(s.span_id for s in spans) == sorted(sid(n) for n in written)
        old = spans[0]
        assert (old.scope, old.scope_version, old.scope_schema_url, dict(old.scope_attributes)) == (
            "old.lib",
            None,
            None,
            {},
        )
        assert (old.resource_schema_url, old.trace_state, old.flags) == (None, None, None)
        assert (old.dropped_attributes, old.dropped_events, old.dropped_links) == (0, 0, 0)
        assert old.events == (SpanEvent("e", 5, {}),)
        assert old.links == (SpanLink("1" * 32, "2" * 16, {}, dropped_attributes=0, flags=None),)
        (resource_spans,) = trace_to_request(store.get_trace(tid(77))).resource_spans
        (scope_spans,) = resource_spans.scope_spans
        assert (scope_spans.scope.name, scope_spans.scope.version, scope_spans.schema_url) == (
            "old.lib",
            "",
            "",
        )
        assert resource_spans.schema_url == "" and scope_spans.spans[0].flags == 0
        assert scope_spans.spans[0].links[0].flags == 0
        # a span written now keeps all of it, next to the old ones
        new = replace(
            span(tid(77), sid(999), None, T0, T0 + 1),
            scope_version="1.0",
            scope_schema_url="https://opentelemetry.io/schemas/1.26.0",
            scope_attributes={"tier": "gold"},
            resource_schema_url="https://opentelemetry.io/schemas/1.21.0",
            trace_state="k=v",
            flags=0x300,
            dropped_attributes=1,
            dropped_events=2,
            dropped_links=3,
            events=(SpanEvent("e", T0, {"a": 1}, dropped_attributes=4),),
            links=(SpanLink("3" * 32, "4" * 16, {"b": 2}, dropped_attributes=5, flags=0x100),),
        )
        store.write([new], [])
        (got,) = [s for s in store.get_trace(tid(77)).spans if s.span_id == sid(999)]
        assert got == new
    finally:
        store.close()
    assert _schema_versions(store_url) == [1, 2, 3, 4, 5, 6]


_V3_USAGE_INSERT = (  # what a writer of schema version 3 inserts into usage (no service)
    "INSERT INTO usage (trace_id, span_id, operation, provider, request_model, response_model, framework, "
    "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, duration_s, "
    "time_to_first_chunk_s, streamed, status, error_type, cache_hit, start_ns, dimensions) VALUES "
    "(?, ?, 'chat', 'openai', 'gpt-4o', NULL, NULL, 10, 2, NULL, NULL, NULL, 0.01, 1.0, NULL, 0, 'success', "
    "NULL, NULL, ?, '{}')"
)


def _v3_writer(url: str, stop: threading.Event, written: list[int], errors: list[BaseException]) -> None:
    """An llmtrace of schema version 3 in another process, writing spans and usage records."""

    def batch(execute: Callable[..., Any], n: int) -> None:
        execute(
            _V2_WRITER_INSERT.replace("'{}', 'old.lib'", "'{\"service.name\": \"v3-svc\"}', 'old.lib'"),
            (tid(78), sid(n), T0 + n, T0 + n + 1),
        )
        execute("UPDATE spans SET service = 'v3-svc' WHERE trace_id = ? AND span_id = ?", (tid(78), sid(n)))
        execute(_V3_USAGE_INSERT, (tid(78), sid(n), T0 + n))

    try:
        if url.startswith("postgresql://"):
            import psycopg

            from llmtrace.store._postgres import _WRITE_LOCK_KEY, _PgTx

            with psycopg.connect(url) as conn:
                while not stop.is_set():
                    n = len(written) + 1
                    with conn.transaction(), conn.cursor() as cur:
                        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK_KEY,))
                        batch(_PgTx(cur).execute, n)
                    written.append(n)
                    time.sleep(0.002)
        else:
            lite = sqlite3.connect(url, isolation_level=None, timeout=10)
            try:
                while not stop.is_set():
                    n = len(written) + 1
                    lite.execute("BEGIN IMMEDIATE")
                    batch(lambda sql, params=(): lite.execute(sql, tuple(params)).fetchall(), n)
                    lite.execute("COMMIT")
                    written.append(n)
                    time.sleep(0.002)
            finally:
                lite.close()
    except BaseException as exc:
        errors.append(exc)


def test_version_4_upgrades_in_place_while_a_version_3_writer_writes(store_url: str) -> None:
    """Usage records written by a version-3 writer, before and after the upgrade, have no service
    of their own: they take their span's, as before. Records written now keep theirs."""
    execute, close = _raw_execute(store_url)
    if not store_url.startswith("postgresql://"):
        execute("PRAGMA journal_mode = WAL", ())
    _schema.migrate(execute, "postgresql" if store_url.startswith("postgresql://") else "sqlite", target=3)
    close()
    stop = threading.Event()
    written: list[int] = []
    errors: list[BaseException] = []
    writer = threading.Thread(target=_v3_writer, args=(store_url, stop, written, errors))
    writer.start()
    try:
        _wait_for(lambda: len(written) >= 5 or bool(errors), "the version-3 writer")
        upgraded = open_store(store_url)
        after_upgrade = len(written)
        _wait_for(lambda: len(written) >= after_upgrade + 5 or bool(errors), "writes after the upgrade")
    finally:
        stop.set()
        writer.join()
    assert errors == []
    try:
        assert upgraded.schema_version() == _schema.CURRENT_VERSION == 6  # type: ignore[attr-defined]
        assert upgraded.usage_summary(TraceFilter(service="v3-svc")).calls == len(written)
        new = replace(all_usage()[0], trace_id=tid(79), span_id=sid(1), service="v4-svc")
        upgraded.write([], [new])
        series = upgraded.usage_series(group_by="service", bucket="day")
        assert sorted((p.group, p.calls) for p in series) == [("v3-svc", len(written)), ("v4-svc", 1)]
        assert [u.service for u in upgraded.get_usage(tid(78))][:1] == [None]  # type: ignore[attr-defined]
    finally:
        upgraded.close()
    assert _schema_versions(store_url) == [1, 2, 3, 4, 5, 6]


def _schema_versions(url: str) -> list[int]:
    execute, close = _raw_execute(url)
    try:
        return [r[0] for r in execute("SELECT version FROM schema_version ORDER BY version")]
    finally:
        close()


def _span_columns(url: str, table: str = "spans") -> list[tuple[str, bool]]:
    """(name, nullable) of each column of ``table``, in order."""
    execute, close = _raw_execute(url)
    try:
        if url.startswith("postgresql://"):
            rows = execute(
                "SELECT column_name, is_nullable FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
                (table,),
            )
            return [(name, nullable == "YES") for name, nullable in rows]
        return [(row[1], not row[3]) for row in execute(f"PRAGMA table_info({table})", ())]
    finally:
        close()


def test_both_backends_and_upgraded_stores_have_the_same_columns(
    tmp_path: Path, new_postgres_url: Callable[[], str]
) -> None:
    columns = []
    for url, upgraded in (
        (str(tmp_path / "fresh.db"), False),
        (str(tmp_path / "upgraded.db"), True),
        (new_postgres_url(), False),
        (new_postgres_url(), True),
    ):
        if upgraded:  # created by an llmtrace of schema version 2, then opened by this one
            execute, close = _raw_execute(url)
            _schema.migrate(execute, "postgresql" if url.startswith("postgresql://") else "sqlite", target=2)
            close()
        open_store(url).close()
        columns.append(_span_columns(url) + _span_columns(url, "usage"))
    assert columns[1] == columns[2] == columns[3] == columns[0]
    added = [
        "scope_version",
        "scope_schema_url",
        "scope_attributes",
        "resource_schema_url",
        "trace_state",
        "flags",
        "dropped_attributes",
        "dropped_events",
        "dropped_links",
    ]
    spans = columns[0][: -len(_span_columns(str(tmp_path / "fresh.db"), "usage"))]
    assert spans[-len(added) - 1 :] == [(name, True) for name in (*added, "unpriced_reason")]  # v3, v5
    assert columns[0][-4:] == [  # usage: schema versions 4 and 5
        ("service", True),
        ("cache_write_1h_tokens", True),
        ("service_tier", True),
        ("unpriced_reason", True),
    ]


def test_reopening_keeps_data_and_identity(store_url: str) -> None:
    first = open_store(store_url)
    first.write([span(tid(i), sid(1), None, T0 + i, T0 + i + 1) for i in range(1, 4)], [])
    cursor = first.list_traces(limit=1).next_cursor
    first.close()
    second = open_store(store_url)
    try:
        page = second.list_traces(limit=5, cursor=cursor)  # the store id survives reopening
        assert [t.trace_id for t in page.items] == [tid(2), tid(1)]
    finally:
        second.close()


def test_newer_schema_is_refused(store_url: str) -> None:
    open_store(store_url).close()
    execute, close = _raw_execute(store_url)
    execute("INSERT INTO schema_version (version, applied_ns, description) VALUES (99, 0, 'future')", ())
    close()
    with pytest.raises(StoreError, match="newer"):
        open_store(store_url)


def test_closed_store_raises(store: Store) -> None:
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.list_traces()


def test_open_store_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(StoreError, match="no llmtrace store"):
        open_store(create=False)
    default = open_store()
    assert default.url == str(tmp_path / DEFAULT_PATH)
    default.close()
    open_store(create=False).close()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env.db"))
    from_env = open_store()
    assert from_env.url == str(tmp_path / "env.db")
    from_env.close()
    explicit = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    assert explicit.url == str(tmp_path / "x.db")
    explicit.close()
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable"):
        open_store(tmp_path / "junk.db")


def test_sqlite_lock_errors_propagate(tmp_path: Path) -> None:
    from llmtrace.store._sqlite import SqliteStore

    path = tmp_path / "locked.db"
    store = SqliteStore(path, busy_timeout_ms=50)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store.write([span(tid(1), sid(1), None, T0, T0 + 1)], [])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.write([span(tid(1), sid(1), None, T0, T0 + 1)], [])  # works again once the lock is gone
    assert store.get_trace(tid(1)).spans[0].span_id == sid(1)
    store.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:s3cret@db:5432/x", "postgresql://user:***@db:5432/x"),
        ("postgresql://db/x", "postgresql://db/x"),
        ("postgresql://user@db/x", "postgresql://user@db/x"),
        ("/home/me/traces.db", "/home/me/traces.db"),
        # an @ inside the password (unencoded): the user's part stays, nothing of the password
        ("postgresql://user:pa@ss@db/x", "postgresql://user:***@db/x"),
        # libpq also takes the password as a parameter
        (
            "postgresql://db/x?password=s3cret&sslmode=require",
            "postgresql://db/x?password=***&sslmode=require",
        ),
        ("postgresql://db/x?sslpassword=k3y", "postgresql://db/x?sslpassword=***"),
        ("postgresql://[db/x", "postgresql://***"),  # unparsable: hidden past the scheme
    ],
)
def test_store_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    from llmtrace.store._api import redact_url

    assert redact_url(url) == shown


def test_a_new_sqlite_store_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """It may hold prompts (content capture on): not world-readable, whatever the umask; a store
    the user made readable to others keeps its mode."""
    from llmtrace.store._sqlite import SqliteStore

    path = tmp_path / "new" / "traces.db"
    store = SqliteStore(path)
    store.write([root_span(TRACE_A)], all_usage()[:1])
    assert (path.stat().st_mode & 0o777) == 0o600
    assert (Path(f"{path}-wal").stat().st_mode & 0o777) == 0o600  # SQLite's journal follows the file
    store.close()
    path.chmod(0o644)
    SqliteStore(path).close()
    assert (path.stat().st_mode & 0o777) == 0o644


def test_store_switched_off_is_still_read_from_the_default_place_and_sqlite_urls_are_anchored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LLMTRACE_STORE=off`` switches the writing store off: the command line then reads the
    default location (not a file named "off"); a relative ``sqlite:///`` URL given to configure()
    is made absolute at once, like a relative path (a later chdir does not move the store)."""
    from llmtrace._config import _store_url
    from llmtrace.store._open import default_store_url

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, "off")
    assert default_store_url() == str(tmp_path / DEFAULT_PATH)
    assert _store_url(None) == str(tmp_path / DEFAULT_PATH)
    assert _store_url("sqlite:///rel.db") == str(tmp_path / "rel.db")
    monkeypatch.setenv(ENV_VAR, "sqlite:///env.db")
    assert _store_url(None) == str(tmp_path / "env.db")
