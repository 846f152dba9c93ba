"""The PostgreSQL store: one database shared by many services (psycopg 3, JSONB attributes).

One connection for writes (under a lock; writers in other processes are serialised by a
transaction-level advisory lock, so trace summaries stay exact), one autocommit connection for
reads (under its own lock). A broken connection is replaced on the next call: a write that fails
because the server went away raises ``psycopg.OperationalError`` (the writer retries), and the
next write reconnects. :meth:`PostgresStore.cancel` interrupts a write that waits (for a lock,
a slow server) from another thread, so the writer's shutdown deadline holds. In a forked child
both connections are opened anew when next needed; the parent's are neither used nor closed
there (closing one would end the parent's session: libpq sends the server a Terminate message).
"""

from __future__ import annotations

import contextlib
import re
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from llmtrace import _fork
from llmtrace.store import _schema
from llmtrace.store._api import StoreError, redact_url
from llmtrace.store._sql import SqlStore, Tx

_WRITE_LOCK_KEY = 0x6C6C6D7472616365  # "llmtrace": serialises writers (and migrations) across processes
_PLACEHOLDER = re.compile(r"\?")


class StoreConnectionError(StoreError, ConnectionError):
    """The server could not be reached (refused, gone, shutting down, bad credentials).

    A ``ConnectionError``, so the writer classifies it as ``connection`` from its type: its
    message quotes the URL, whose text (``?connect_timeout=5``, a database named ``deadlock``)
    must not decide the failure class."""


class StoreConnectTimeout(StoreError, TimeoutError):
    """The server did not answer within the connect timeout (classified ``timeout``)."""


def _pg(sql: str) -> str:
    return _PLACEHOLDER.sub("%s", sql)  # the shared SQL never contains '?' or '%' otherwise


class _PgTx:
    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(_pg(sql), tuple(params))
        return self._cur.fetchall() if self._cur.description is not None else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cur.executemany(_pg(sql), rows)


class PostgresStore(SqlStore):
    """A store in a PostgreSQL database (its tables in the first schema of the search path).

    ``create=True`` (writers) creates and upgrades the tables. ``create=False`` (readers such as
    the CLI) only reads: the database must hold an llmtrace store, which is read as it is (an
    older schema is not upgraded), and no lock is taken. ``write=True`` with ``create=False``
    (``llmtrace prune``) writes an existing store without creating or upgrading its tables."""

    dialect = "postgresql"

    def __init__(
        self, url: str, *, connect_timeout_s: int = 10, create: bool = True, write: bool | None = None
    ) -> None:
        super().__init__()
        self._dsn = url
        self.url = redact_url(url)
        self.read_only = not (create if write is None else write)
        self._connect_timeout_s = connect_timeout_s
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._rconn: psycopg.Connection[Any] | None = None
        message = f"cannot open the PostgreSQL store {self.url}"
        self._wconn: psycopg.Connection[Any] | None = None  # None: connected on next use (a forked child)
        try:
            first = self._connect(autocommit=self.read_only)
        except psycopg.errors.ConnectionTimeout as exc:
            raise StoreConnectTimeout(f"{message}: {exc}".strip()) from exc
        except psycopg.OperationalError as exc:
            raise StoreConnectionError(f"{message}: {exc}".strip()) from exc
        except psycopg.Error as exc:
            raise StoreError(f"{message}: {exc}".strip()) from exc
        try:
            if self.read_only or not create:
                if self.read_only:
                    self._rconn = first
                else:
                    self._wconn = first
                self._version = _schema.stored_version(self._read, "postgresql", self.url)
                if self._version < _schema.MIN_READABLE_VERSION:
                    raise _schema.too_old_to_read(self.url, self._version)
                self._store_id = str(self._read("SELECT value FROM meta WHERE key = 'store_id'")[0][0])
            else:
                self._wconn = first
                with self._transaction() as tx:
                    self._store_id = _schema.migrate(tx.execute, "postgresql")
        except BaseException as exc:
            first.close()  # never leak the connection of a store that did not open
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"{message}: {exc}".strip()) from exc
            raise
        _live.add(self)

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
            conn = self._wconn
            if conn is None or conn.closed or conn.broken:
                conn = self._wconn = self._connect(autocommit=False)
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK_KEY,))
                yield _PgTx(cur)

    def cancel(self) -> None:
        """Ask the server to cancel the write in progress, if any (from any thread; never raises).

        The waiting write then fails with ``QueryCanceled`` (a ``timeout``)."""
        conn = self._wconn
        if conn is None or conn.closed or conn.broken:
            return
        with contextlib.suppress(Exception):
            cancel_safe = getattr(conn, "cancel_safe", None)  # psycopg >= 3.2
            if cancel_safe is not None:
                cancel_safe(timeout=min(self._connect_timeout_s, 5))
            else:
                conn.cancel()

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

    def size_bytes(self) -> int | None:
        """The store's tables with their indexes and TOAST data."""
        tables = ", ".join(f"'{t}'" for t in _schema.STORE_TABLES)
        row = self._read(
            f"SELECT SUM(pg_total_relation_size(to_regclass(t))) FROM unnest(ARRAY[{tables}]) AS t"
        )
        return None if not row or row[0][0] is None else int(row[0][0])

    def reclaim_space(self) -> None:
        """``VACUUM ANALYZE`` of the store's tables: their free space is reused, and writers go on
        meanwhile (PostgreSQL gives space back to the file system only at the end of a table;
        ``VACUUM FULL``, which locks the tables, is the database administrator's call)."""
        if self.read_only:
            raise StoreError(f"the store {self.url} was opened for reading only")
        with self._read_lock:
            self._check_open()
            if self._rconn is None or self._rconn.closed or self._rconn.broken:
                self._rconn = self._connect(autocommit=True)
            with self._rconn.cursor() as cur:
                for table in _schema.tables_of(self._version):  # an older store lacks later tables
                    cur.execute(f"VACUUM (ANALYZE) {table}")

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            for conn in (self._wconn, self._rconn):
                if conn is not None:
                    conn.close()

    def _start_afresh_in_child(self) -> None:
        """In a forked child (at-fork hook): new locks, and the parent's connections abandoned."""
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        conns = (self._wconn, self._rconn)
        self._wconn = self._rconn = None
        for conn in conns:
            if conn is not None:
                _fork.keep_forever(conn)

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"


_live: weakref.WeakSet[PostgresStore] = weakref.WeakSet()
_fork.each_in_child(f"{__name__}.PostgresStore", _live, PostgresStore._start_afresh_in_child)
