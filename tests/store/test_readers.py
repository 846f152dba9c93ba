"""Readers (``open_store(create=False)``, what the CLI opens): they never write, never take the
write lock, refuse databases that hold no llmtrace store, and read older schemas as they are."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmtrace.store import StoreError, TraceFilter, _schema, _sql, open_store
from llmtrace.store._sqlite import SqliteStore

from .dataset import TRACE_C, TRACE_D, TRACES, all_spans, all_usage, write_dataset

SIDE_FILES = ("-wal", "-shm", "-journal")


def _files(path: Path) -> dict[str, bytes]:
    """The database file and whatever SQLite files sit next to it, with their contents."""
    return {p.name: p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)}


@pytest.fixture
def foreign(tmp_path: Path) -> Path:
    """Another application's SQLite database (rollback journal, as SQLite makes it)."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users VALUES (1, 'alice')")
    conn.commit()
    conn.close()
    return path


def test_a_reader_refuses_another_applications_database_untouched(foreign: Path) -> None:
    before = _files(foreign)
    with pytest.raises(StoreError) as caught:
        open_store(foreign, create=False)
    assert str(caught.value) == f"{foreign} is not an llmtrace store"
    assert _files(foreign) == before  # no tables added, no WAL switch, no journal files left
    conn = sqlite3.connect(foreign)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("users",)]
    conn.close()


def test_a_reader_refuses_an_empty_file_and_leaves_it_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(StoreError, match=f"^{path} is not an llmtrace store$"):
        open_store(path, create=False)
    assert _files(path) == {"empty.db": b""}


def test_a_reader_refuses_a_file_that_is_no_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database\n" * 100)
    with pytest.raises(StoreError, match="is not an llmtrace store: file is not a database"):
        open_store(path, create=False)
    assert path.read_text() == "not a database\n" * 100


def test_a_reader_leaves_a_current_store_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    writer = open_store(path)
    write_dataset(writer)
    writer.close()  # the last connection: the WAL is checkpointed into the file and removed
    before = path.read_bytes()
    reader = open_store(path, create=False)
    try:
        assert reader.read_only  # type: ignore[attr-defined]
        assert reader.usage_summary().calls == 9
        with pytest.raises(StoreError, match="opened for reading only"):
            reader.write(all_spans()[:1], [])
    finally:
        reader.close()
    assert path.read_bytes() == before


def test_a_reader_takes_no_lock_while_a_writer_holds_it(tmp_path: Path) -> None:
    """A writer in another process holding the write lock for long does not delay a reader."""
    path = tmp_path / "traces.db"
    writer = open_store(path)
    write_dataset(writer)
    writer.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO meta (key, value) VALUES ('held', 'by a writer')")
    try:
        started = time.monotonic()
        reader = SqliteStore(path, create=False, busy_timeout_ms=2000)
        assert [t.trace_id for t in reader.list_traces(limit=2).items] == [
            TRACES[-1].trace_id,
            TRACES[-2].trace_id,
        ]
        assert reader.usage_summary(TraceFilter(service="search")).calls == 4
        reader.close()
        assert time.monotonic() - started < 1.5  # nothing waited for the lock
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_reader_that_waits_too_long_says_the_store_is_busy(tmp_path: Path) -> None:
    """Where a reader must wait (a store in rollback-journal mode while a writer commits), the
    error says the store is busy, not that it is unusable."""
    path = tmp_path / "traces.db"
    writer = open_store(path)
    write_dataset(writer)
    writer.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("BEGIN EXCLUSIVE")  # what a rollback-journal writer holds while it commits
    try:
        with pytest.raises(
            StoreError, match=r"^the store .* is busy: another process held its lock for more"
        ):
            SqliteStore(path, create=False, busy_timeout_ms=100)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_writer_that_cannot_upgrade_for_a_lock_says_the_store_is_busy(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")

    def execute(sql: str, params: Any = ()) -> list[Any]:
        return conn.execute(sql, tuple(params)).fetchall()

    _schema.migrate(execute, "sqlite", target=3)
    conn.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="is busy"):
            SqliteStore(path, busy_timeout_ms=100)
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    SqliteStore(path).close()  # upgraded once the lock is free


# --------------------------------------------------------------------------------------
# Older schemas: read as they are
# --------------------------------------------------------------------------------------
def _raw(url: str) -> tuple[Callable[..., list[tuple[Any, ...]]], Callable[[], None]]:
    if url.startswith("postgresql://"):
        import psycopg

        from llmtrace.store._postgres import _PgTx

        conn = psycopg.connect(url, autocommit=True)
        return _PgTx(conn.cursor()).execute, conn.close
    lite = sqlite3.connect(url, isolation_level=None)
    return (lambda sql, params=(): lite.execute(sql, tuple(params)).fetchall()), lite.close


def _old_store(url: str, version: int) -> None:
    """A store that an llmtrace of schema ``version`` created and filled."""
    execute, close = _raw(url)
    try:
        if not url.startswith("postgresql://"):
            execute("PRAGMA journal_mode = WAL")
        _schema.migrate(
            execute, "postgresql" if url.startswith("postgresql://") else "sqlite", target=version
        )
    finally:
        close()
    # the rows as that version's writer wrote them: the columns it knew
    span_columns = _sql._SPAN_COLUMNS if version >= 3 else _sql._SPAN_COLUMNS_V1
    spans = all_spans()
    execute, close = _raw(url)
    try:
        for span in spans:
            row = _sql._span_facts(span).row[: span_columns.count(",") + 1]
            execute(f"INSERT INTO spans ({span_columns}) VALUES ({', '.join('?' * len(row))})", row)
        usage_columns = _sql._USAGE_COLUMNS_V4 if version >= 4 else _sql._USAGE_COLUMNS_V1
        for record in all_usage():
            row = _sql._usage_row(record)[: usage_columns.count(",") + 1]
            execute(f"INSERT INTO usage ({usage_columns}) VALUES ({', '.join('?' * len(row))})", row)
        for trace in TRACES:  # the summaries and keys the writer keeps
            facts = [_sql._span_facts(s) for s in spans if s.trace_id == trace.trace_id]
            state = _sql._TraceState.first(facts[0])
            for f in facts[1:]:
                state.add(f)
            columns = _sql._TRACE_COLUMNS
            execute(
                f"INSERT INTO traces ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                state.row(),
            )
            for f in facts:
                for kind, value in (("model", f.request_model), ("provider", f.provider)):
                    if value:
                        execute(_sql._INSERT_KEY, (kind, value, f.trace_id))
    finally:
        close()


def _versions(url: str) -> list[int]:
    execute, close = _raw(url)
    try:
        return [int(r[0]) for r in execute("SELECT version FROM schema_version ORDER BY version")]
    finally:
        close()


@pytest.mark.parametrize("version", [2, 3, 4])
def test_a_reader_reads_an_older_store_without_upgrading_it(store_url: str, version: int) -> None:
    _old_store(store_url, version)
    before = Path(store_url).read_bytes() if not store_url.startswith("postgresql://") else b""
    reader = open_store(store_url, create=False)
    try:
        assert reader.schema_version() == version  # type: ignore[attr-defined]
        assert [t.trace_id for t in reader.list_traces(TraceFilter(provider="anthropic")).items] == [
            TRACE_D.trace_id,
            TRACE_C.trace_id,
        ]
        trace = reader.get_trace(TRACE_C.trace_id)
        assert len(trace.spans) == 3 and trace.spans[0].scope_version is None
        # usage rows of these versions have no service: their span's
        assert reader.usage_summary(TraceFilter(service="search")).calls == 4
        assert reader.usage_summary(TraceFilter(min_cost=0.02)).calls == 2
        assert reader.list_traces(TraceFilter(min_cost=0.02)).items[0].trace_id == TRACE_C.trace_id
        assert {p.group for p in reader.usage_series(group_by="service", bucket="day")} == {
            "checkout",
            "search",
        }
        assert [u.service for u in reader.get_usage(TRACE_C.trace_id)] == [None, None]  # type: ignore[attr-defined]
        # what version 5 adds is not there: no one-hour writes, no tier, R6 unpriced for no known reason
        (r5,) = [u for u in reader.get_usage(TRACE_C.trace_id) if u.input_tokens]  # type: ignore[attr-defined]
        assert (r5.cache_write_tokens, r5.cache_write_1h_tokens, r5.service_tier) == (50, None, None)
        summary = reader.usage_summary()
        assert (summary.cache_write_1h_tokens, summary.unpriced_by_reason) == (0, {"unknown": 1})
        series = reader.usage_series(group_by="service_tier", bucket="day")
        assert [(p.group, p.calls) for p in series] == [("", 2), ("", 5), ("", 2)]
        (listed,) = reader.list_traces(TraceFilter(provider="ollama")).items
        assert (listed.unpriced_calls, listed.unpriced_by_reason) == (1, {"unknown": 1})
    finally:
        reader.close()
    assert _versions(store_url) == list(range(1, version + 1))
    if before:
        assert Path(store_url).read_bytes() == before


def test_a_reader_refuses_a_store_too_old_to_read(store_url: str) -> None:
    execute, close = _raw(store_url)
    _schema.migrate(execute, "postgresql" if store_url.startswith("postgresql://") else "sqlite", target=1)
    close()
    with pytest.raises(StoreError, match="has schema version 1, older than this llmtrace reads"):
        open_store(store_url, create=False)
    assert _versions(store_url) == [1]
    open_store(store_url).close()  # a writer upgrades it
    assert _versions(store_url) == list(range(1, _schema.CURRENT_VERSION + 1))


# --------------------------------------------------------------------------------------
# PostgreSQL readers
# --------------------------------------------------------------------------------------
def test_a_postgres_reader_creates_nothing_in_a_database_without_a_store(fresh_postgres_url: str) -> None:
    with pytest.raises(StoreError, match="is not an llmtrace store"):
        open_store(fresh_postgres_url, create=False)
    execute, close = _raw(fresh_postgres_url)
    try:
        assert execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()") == [(0,)]
    finally:
        close()


@pytest.fixture
def advisory_lock_held(fresh_postgres_url: str) -> Iterator[str]:
    """The writers' lock, held by another session (a writer in the middle of a long batch)."""
    import psycopg

    from llmtrace.store._postgres import _WRITE_LOCK_KEY

    open_store(fresh_postgres_url).close()
    holder = psycopg.connect(fresh_postgres_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (_WRITE_LOCK_KEY,))
    try:
        # and a reader that would wait for it gives up after 3 s
        yield fresh_postgres_url.replace("options=", "options=-c%20lock_timeout%3D3000%20")
    finally:
        holder.close()


def test_a_postgres_reader_takes_no_lock(advisory_lock_held: str) -> None:
    result: list[Any] = []

    def read() -> None:
        try:
            store = open_store(advisory_lock_held, create=False)
            result.append(store.usage_summary().calls)
            store.close()
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=read)
    started = time.monotonic()
    thread.start()
    thread.join(30)
    assert result == [0]
    assert time.monotonic() - started < 2.5
