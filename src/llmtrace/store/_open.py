"""``open_store``: a store from a URL or path (or ``LLMTRACE_STORE``, or the default SQLite file)."""

from __future__ import annotations

import os
from pathlib import Path

from llmtrace.store._api import Store

ENV_VAR = "LLMTRACE_STORE"
DEFAULT_PATH = Path(".llmtrace") / "traces.db"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


OFF = frozenset({"0", "false", "no", "off", "none"})
"""``LLMTRACE_STORE`` values that switch the store off (for ``llmtrace.configure()``)."""
ON = frozenset({"1", "true", "yes", "on"})
"""``LLMTRACE_STORE`` values that mean the default location, as ``configure(store=True)``."""
SQLITE_PREFIX = "sqlite:///"


def env_store() -> str | None:
    """Where ``LLMTRACE_STORE`` puts the store: None when it is unset, empty, an ``OFF`` value or
    an ``ON`` value (case-insensitive; the default location)."""
    value = os.environ.get(ENV_VAR, "").strip()
    return value if value and value.lower() not in OFF | ON else None


def env_store_off() -> bool:
    return os.environ.get(ENV_VAR, "").strip().lower() in OFF


def default_store_url() -> str:
    """``LLMTRACE_STORE`` when it names a store, else ``.llmtrace/traces.db`` under the working
    directory (a store switched off with ``LLMTRACE_STORE=off`` is still read from there)."""
    return env_store() or str(Path.cwd() / DEFAULT_PATH)


def open_store(
    url: str | os.PathLike[str] | None = None, *, create: bool = True, write: bool | None = None
) -> Store:
    """Open (and create or migrate) a store.

    ``url`` is ``postgresql://...`` / ``postgres://...`` for PostgreSQL, anything else a SQLite
    file path (``sqlite:///path`` is accepted too); None means ``LLMTRACE_STORE`` or the default.
    With ``create=False`` (a reader) nothing is created, upgraded or written: a missing SQLite file
    or a database without an llmtrace store raises :class:`StoreError`, and a store of an older
    schema version is read as it is. ``write=True`` with ``create=False`` (maintenance:
    ``llmtrace prune``) opens an existing store to write it, creating and upgrading nothing.
    """
    target = default_store_url() if url is None else os.fspath(url)
    if target.startswith(_POSTGRES_SCHEMES):
        from llmtrace.store._postgres import PostgresStore  # psycopg is an optional dependency

        return PostgresStore(target, create=create, write=write)
    if target.startswith(SQLITE_PREFIX):
        target = target[len(SQLITE_PREFIX) :] or str(DEFAULT_PATH)
    from llmtrace.store._sqlite import SqliteStore

    return SqliteStore(target, create=create, write=write)
