"""The PostgreSQL store: one database shared by many services (psycopg 3, JSONB attributes).

One connection for writes (under a lock; writers in other processes are serialised by a
transaction-level advisory lock, so trace summaries stay exact), one autocommit connection for
reads (under its own lock). A broken connection is replaced on the next call: a write that fails
because the server went away raises ``psycopg.OperationalError`` (the writer retries), and the
next write reconnects.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from llmtrace.store import _schema
from llmtrace.store._api import StoreError
from llmtrace.store._sql import SqlStore, Tx

_WRITE_LOCK_KEY = 0x6C6C6D7472616365  # "llmtrace": serialises writers (and migrations) across processes
_PLACEHOLDER = re.compile(r"\?")
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def _pg(sql: str) -> str:
    return _PLACEHOLDER.sub("%s", sql)  # the shared SQL never contains '?' or '%' otherwise


def redact(url: str) -> str:
    """The URL with its password hidden (for messages and ``Store.url``)."""
    return _PASSWORD.sub(r"\1***@", url)


class _PgTx:
    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(_pg(sql), tuple(params))
        return self._cur.fetchall() if self._cur.description is not None else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cur.executemany(_pg(sql), rows)


class PostgresStore(SqlStore):
    dialect = "postgresql"

    def __init__(self, url: str, *, connect_timeout_s: int = 10) -> None:
        super().__init__()
        self._dsn = url
        self.url = redact(url)
        self._connect_timeout_s = connect_timeout_s
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        try:
            self._wconn: psycopg.Connection[Any] = self._connect(autocommit=False)
            self._rconn: psycopg.Connection[Any] | None = None
            with self._transaction() as tx:
                self._store_id = _schema.migrate(tx.execute, "postgresql")
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the PostgreSQL store {self.url}: {exc}".strip()) from exc

    def _connect(self, *, autocommit: bool) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self._dsn,
            autocommit=autocommit,
            connect_timeout=self._connect_timeout_s,
            application_name="llmtrace",
        )

    @contextmanager
    def _transaction(self) -> Iterator[Tx]:
        with self._write_lock:
            self._check_open()
            if self._wconn.closed or self._wconn.broken:
                self._wconn = self._connect(autocommit=False)
            with self._wconn.transaction(), self._wconn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK_KEY,))
                yield _PgTx(cur)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock:
            self._check_open()
            for attempt in (1, 2):
                if self._rconn is None or self._rconn.closed or self._rconn.broken:
                    self._rconn = self._connect(autocommit=True)
                try:
                    with self._rconn.cursor() as cur:
                        cur.execute(_pg(sql), tuple(params))
                        return cur.fetchall()
                except psycopg.OperationalError:
                    if attempt == 2 or not self._rconn.broken:
                        raise
            raise AssertionError("unreachable")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self.url} is closed")

    def schema_version(self) -> int:
        return _schema.schema_version(self._read)

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            self._wconn.close()
            if self._rconn is not None:
                self._rconn.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"
