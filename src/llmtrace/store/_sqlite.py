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

    With ``create=False`` (readers such as the CLI) a file the process may not write is opened
    read-only (``read_only`` is then True): nothing is migrated, and writes fail.

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
        # A reader (create=False) of a file it may not write opens it read-only: no journal-mode
        # switch, no migration, no write lock (a store written by another account stays readable).
        self.read_only = not create and not os.access(self.path, os.W_OK)
        try:
            if self.read_only:
                self._conn = self._connect_read_only(busy_timeout_ms)
            else:
                self._conn = sqlite3.connect(
                    self.path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store {self.path}: {exc}") from exc
        self._lock = threading.RLock()
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if self.read_only:
                self._store_id = self._read_only_identity()
            else:
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
                with self._transaction() as tx:
                    self._store_id = _schema.migrate(tx.execute, "sqlite")
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            hint = " (opened read-only: you may read but not write this file)" if self.read_only else ""
            raise StoreError(f"{self.path} is not a usable llmtrace store{hint}: {exc}") from exc
        except StoreError:
            self._conn.close()
            raise

    def _connect_read_only(self, busy_timeout_ms: int) -> sqlite3.Connection:
        def connect(options: str) -> sqlite3.Connection:
            return sqlite3.connect(
                f"{self.path.as_uri()}?{options}",
                uri=True,
                timeout=busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )

        conn = connect("mode=ro")
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
        except sqlite3.OperationalError:
            # A WAL store needs its -shm file, which a reader cannot create in a directory it may
            # not write. With no -wal file no writer is connected and the file holds everything:
            # read it as immutable (no locks, no shared memory).
            conn.close()
            if any(Path(f"{self.path}{suffix}").exists() for suffix in ("-wal", "-shm")):
                raise
            conn = connect("mode=ro&immutable=1")
        return conn

    def _read_only_identity(self) -> str:
        """The store id of a store opened read-only, whose schema must already be current."""
        tables = {r[0] for r in self._read("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = _schema.schema_version(self._read) if "schema_version" in tables else 0
        if version > _schema.CURRENT_VERSION:
            raise StoreError(
                f"the store's schema is version {version}, newer than this llmtrace supports "
                f"({_schema.CURRENT_VERSION}); upgrade llmtrace to read it"
            )
        if version < _schema.CURRENT_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, older than this llmtrace reads "
                f"({_schema.CURRENT_VERSION}), and you may not write it to upgrade it: run llmtrace once "
                "as a user who may write the file (any command upgrades it)"
            )
        rows = self._read("SELECT value FROM meta WHERE key = 'store_id'")
        if not rows:
            raise StoreError(f"{self.path} is not a usable llmtrace store: it has no store id")
        return str(rows[0][0])

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
