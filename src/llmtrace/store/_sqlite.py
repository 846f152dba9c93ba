"""The SQLite store: the embedded default (stdlib ``sqlite3``, WAL mode, one connection per store)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from llmtrace import _fork
from llmtrace.store import _schema
from llmtrace.store._api import Pruned, StoreError
from llmtrace.store._retention import BATCH_SPANS
from llmtrace.store._sql import SqlStore, Tx

try:
    import fcntl
except ImportError:  # Windows: a file open there cannot be deleted anyway
    fcntl = None  # type: ignore[assignment]

FORK_WAIT_S: Final = 1.0
"""How long ``os.fork()`` waits, at most, for the SQLite stores' writes in progress to commit."""


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)


class SqliteStore(SqlStore):
    """A store in one SQLite file. Thread-safe: one connection, used under a lock.

    ``create=True`` (writers: ``configure()``) creates the file if need be, puts it in WAL mode and
    upgrades its schema. ``create=False`` (readers such as the CLI) only reads: the file is opened
    read-only (``read_only`` is True), whatever its permissions; it must hold an llmtrace store
    (an empty file or another application's database is refused, untouched); its journal mode is
    left as it is and no lock is taken but SQLite's shared read locks. A store of an older schema
    (from version ``MIN_READABLE_VERSION`` on) is read as it is, not upgraded: the program that
    writes it upgrades it when it runs a newer llmtrace.

    ``write=True`` with ``create=False`` (``llmtrace prune``) opens an existing store to write it,
    without creating or upgrading it: like a reader it must exist and hold an llmtrace store of a
    readable version, and the user must be allowed to write it.

    ``busy_timeout_ms`` is how long a statement waits for another process's lock before
    ``sqlite3.OperationalError('database is locked')`` is raised (a write) or :class:`StoreError`
    saying the store is busy (opening, reading, pruning).

    A writer calls :meth:`reopen_if_moved` now and then: when the file was deleted or replaced
    while the store had it open (what it writes would go to a file nobody sees), the store opens
    the file found at its path, or creates it afresh.

    In a forked child the store opens a connection of its own when it is next used; the one
    inherited from the parent is neither used nor closed there (SQLite forbids both). SQLite keeps
    one table of file locks per process, which the child inherits: a fork therefore waits (at most
    ``FORK_WAIT_S``) for a write in progress to commit, or the child would inherit the write lock,
    held for ever by a connection nobody uses, and could never write.
    """

    dialect = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        busy_timeout_ms: int = 5000,
        write: bool | None = None,
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
            self._create_file()
        self.read_only = not (create if write is None else write)
        if not self.read_only and not create:
            for target in (self.path, self.path.parent):  # SQLite needs the directory for its journals
                if not os.access(target, os.W_OK):
                    raise StoreError(
                        f"the store {self.path} is read-only for this user: cannot write "
                        f"{'it' if target == self.path else 'its directory'} {target}"
                    )
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None  # None: (re)opened on first use (a forked child)
        self._file_id: tuple[int, int] | None = None
        self._journals: dict[str, tuple[int, int]] = {}  # the -wal and -shm files last seen with it
        try:
            conn = self._conn = self._connect()
            self._file_id = self._stat_file()
        except sqlite3.Error as exc:
            if _is_busy(exc):
                raise self._busy_error(exc) from exc
            if _is_not_a_database(exc):
                raise StoreError(f"{self.path} is not an llmtrace store: {exc}") from exc
            raise StoreError(f"cannot open the SQLite store {self.path}: {exc}") from exc
        self._lock = threading.RLock()
        try:
            self._set_pragmas(conn)
            if self.read_only or not create:
                self._version = _schema.stored_version(self._read_raw, "sqlite", str(self.path))
                if self._version < _schema.MIN_READABLE_VERSION:
                    raise _schema.too_old_to_read(str(self.path), self._version)
                self._store_id = self._identity()
            elif self._current_version() == _schema.CURRENT_VERSION:
                self._store_id = self._identity()  # nothing to do: no write lock taken
            else:
                with self._transaction() as tx:  # creating or upgrading: exclusive
                    self._store_id = _schema.migrate(tx.execute, "sqlite")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if _is_busy(exc):
                raise self._busy_error(exc) from exc
            if self.read_only and _is_not_a_database(exc):
                raise StoreError(f"{self.path} is not an llmtrace store: {exc}") from exc
            raise StoreError(f"{self.path} is not a usable llmtrace store: {exc}") from exc
        except StoreError:
            conn.close()
            raise
        self.moved()  # notes the journal files that are its own
        _live.add(self)

    def _create_file(self, stale: Mapping[str, tuple[int, int]] | None = None) -> None:
        """Create the file (when it is missing), readable by its owner only (it may hold prompts;
        SQLite's journals follow it); if it cannot be created, connecting says what is wrong.

        ``-wal`` and ``-shm`` files left at the path belong to a database that is gone when the
        file is missing, or when they are the ``stale`` ones (a replaced file's): they are removed
        first, or the database at the path would read the old one's pages from them. Processes
        that create the file at the same moment take turns (a lock on the directory)."""
        with _directory_lock(self.path.parent):
            missing = not self.path.exists()
            for suffix in ("-wal", "-shm"):
                found = self._stat_file(suffix)
                if found is not None and (missing or (stale is not None and found == stale.get(suffix))):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{self.path}{suffix}")
            if missing:
                with contextlib.suppress(OSError):
                    os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))

    def _stat_file(self, suffix: str = "") -> tuple[int, int] | None:
        try:
            found = os.stat(f"{self.path}{suffix}")
        except OSError:
            return None
        return found.st_dev, found.st_ino

    def moved(self) -> str | None:
        """``deleted`` or ``replaced`` when the file at the store's path is no longer the one the
        store has open; None when it is (three ``stat`` calls: the file, and its ``-wal`` and
        ``-shm`` files, noted as the store's own), or cannot be told."""
        known = self._file_id
        if known is None or self.read_only:
            return None
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return "deleted"
        except OSError:
            return None
        if (found.st_dev, found.st_ino) != known:
            return "replaced"
        journals = {suffix: self._stat_file(suffix) for suffix in ("-wal", "-shm")}
        self._journals = {suffix: found_id for suffix, found_id in journals.items() if found_id is not None}
        return None

    def reopen_if_moved(self) -> str | None:
        """When :meth:`moved`, open the store at the path afresh (creating and initialising it when
        the file is gone) and say how it had moved; None when it had not (:meth:`moved`).

        The old connection is closed: SQLite neither checkpoints into nor deletes the journal of a
        database whose file has moved. The ``-wal`` and ``-shm`` files last seen with it, if still
        at the path, are removed (see ``_create_file``). Raises like opening does; the next call
        tries again."""
        how = self.moved()
        if how is None:
            return None
        with self._lock:
            self._check_open()
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._create_file(stale=self._journals)
            self._connection()
            file_id = self._stat_file()
            if self._current_version() != _schema.CURRENT_VERSION:
                with self._transaction() as tx:
                    self._store_id = _schema.migrate(tx.execute, "sqlite")
            else:
                self._store_id = self._identity()
            self._file_id = file_id
            self._journals = {}
        return how

    def _current_version(self) -> int | None:
        """The schema version found without taking the write lock; None: no llmtrace store yet."""
        try:
            return _schema.stored_version(self._read_raw, "sqlite", str(self.path))
        except _schema.NotAStore:
            return None

    def _identity(self) -> str:
        return str(self._read_raw("SELECT value FROM meta WHERE key = 'store_id'")[0][0])

    def _busy_error(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(
            f"the store {self.path} is busy: another process held its lock for more than "
            f"{self._busy_timeout_ms / 1000:g} s (a writer, a long transaction); try again ({exc})"
        )

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            return self._connect_read_only(self._busy_timeout_ms)
        return sqlite3.connect(
            self.path, timeout=self._busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
        )

    def _set_pragmas(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        if not self.read_only:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")

    def _connection(self) -> sqlite3.Connection:
        """The open connection (call under ``_lock``); a forked child opens its own on first use."""
        conn = self._conn
        if conn is None:
            try:
                conn = self._connect()
            except sqlite3.Error as exc:  # the cause keeps its SQLite error code for the writer
                raise StoreError(f"cannot open the SQLite store {self.path}: {exc}") from exc
            try:
                self._set_pragmas(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return conn

    def _start_afresh_in_child(self) -> None:
        """In a forked child (at-fork hook): a new lock, and the parent's connection abandoned."""
        self._lock = threading.RLock()
        conn, self._conn = self._conn, None
        if conn is not None:
            _fork.keep_forever(conn)

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
        except sqlite3.OperationalError as exc:
            # A WAL store needs its -shm file, which a reader cannot create in a directory it may
            # not write. With no -wal file no writer is connected and the file holds everything:
            # read it as immutable (no locks, no shared memory).
            conn.close()
            if _is_busy(exc) or any(Path(f"{self.path}{suffix}").exists() for suffix in ("-wal", "-shm")):
                raise
            conn = connect("mode=ro&immutable=1")
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[Tx]:
        with self._lock:
            self._check_open()
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._read_raw(sql, params)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):  # a reader waits only for a writer's exclusive lock (or a recovery)
                raise self._busy_error(exc) from exc
            raise

    def _read_raw(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            self._check_open()
            return self._connection().execute(sql, tuple(params)).fetchall()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self.url} is closed")

    def schema_version(self) -> int:
        return _schema.schema_version(self._read)

    def prune_batch(self, cutoff_ns: int, *, now_ns: int, max_spans: int = BATCH_SPANS) -> Pruned:
        try:
            return super().prune_batch(cutoff_ns, now_ns=now_ns, max_spans=max_spans)
        except sqlite3.OperationalError as exc:  # the cause keeps its SQLite error code (the writer)
            if _is_busy(exc):
                raise self._busy_error(exc) from exc
            raise

    def size_bytes(self) -> int | None:
        """The file and its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def reclaim_space(self) -> None:
        """``VACUUM`` (the file is rewritten without its free pages: writers wait meanwhile), then
        the write-ahead log is checkpointed and truncated."""
        if self.read_only:
            raise StoreError(f"the store {self.url} was opened for reading only")
        with self._lock:
            self._check_open()
            conn = self._connection()
            try:
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    raise self._busy_error(exc) from exc
                raise

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.url!r})"


@contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the directory (where there is one), held while a store file that
    was deleted is created again: writers of several processes reopen in turn."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = None
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fd = os.open(directory, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds a lock this one waited for."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in (5, 6)
    return "locked" in str(exc) or "busy" in str(exc)


def _is_not_a_database(exc: sqlite3.Error) -> bool:
    """SQLITE_NOTADB: the file is something else than an SQLite database (not a damaged one)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code == 26 if isinstance(code, int) else "file is not a database" in str(exc)


_live: weakref.WeakSet[SqliteStore] = weakref.WeakSet()
_fork.each_in_child(f"{__name__}.SqliteStore", _live, SqliteStore._start_afresh_in_child)
_held_over_fork: list[threading.RLock] = []


def _before_fork() -> None:
    """Take every store's lock (waiting at most FORK_WAIT_S in all), so no write is half done."""
    deadline = time.monotonic() + FORK_WAIT_S
    with contextlib.suppress(Exception):  # never fails a fork: at worst the child cannot write
        for store in list(_live):
            lock = store._lock
            if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                _held_over_fork.append(lock)


def _after_fork_in_parent() -> None:
    with contextlib.suppress(Exception):
        while _held_over_fork:
            _held_over_fork.pop().release()


def _after_fork_in_child() -> None:
    _held_over_fork.clear()  # the stores' locks are new in the child (SqliteStore._start_afresh_in_child)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )
