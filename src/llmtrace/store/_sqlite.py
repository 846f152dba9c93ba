"""The SQLite store: the embedded default (stdlib ``sqlite3``, WAL mode, one connection per store)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmtrace.store import _schema
from llmtrace.store._api import StoreError
from llmtrace.store._sql import SqlStore, Tx


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)


class SqliteStore(SqlStore):
    """A store in one SQLite file. Thread-safe: one connection, used under a lock.

    ``busy_timeout_ms`` is how long a write waits for another process's lock before
    ``sqlite3.OperationalError('database is locked')`` is raised.
    """

    dialect = "sqlite"

    def __init__(
        self, path: str | os.PathLike[str], *, create: bool = True, busy_timeout_ms: int = 5000
    ) -> None:
        super().__init__()
        self.path = Path(path).expanduser().resolve()
        self.url = str(self.path)
        if not self.path.exists():
            if not create:
                raise StoreError(
                    f"no llmtrace store at {self.path}: run a program that calls llmtrace.configure() first, "
                    "or point LLMTRACE_STORE (or --store) at an existing store"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store {self.path}: {exc}") from exc
        self._lock = threading.RLock()
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            with self._transaction() as tx:
                self._store_id = _schema.migrate(tx.execute, "sqlite")
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"{self.path} is not a usable llmtrace store: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[Tx]:
        with self._lock:
            self._check_open()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            self._check_open()
            return self._conn.execute(sql, tuple(params)).fetchall()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self.url} is closed")

    def schema_version(self) -> int:
        return _schema.schema_version(self._read)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.url!r})"
