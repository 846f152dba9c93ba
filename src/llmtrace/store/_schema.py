"""The store's schema: one logical schema, versioned migrations, rendered for SQLite or PostgreSQL.

Each migration is a list of DDL/DML templates. ``{bigint}``, ``{real}``, ``{json}``, ``{flag}`` and
``{key}`` are replaced by the backend's column types, so both backends get the same tables,
columns and indexes. Applied migrations are recorded in ``schema_version`` (one row per version);
:func:`migrate` brings a database from any older version to :data:`CURRENT_VERSION` inside one
transaction that the caller holds exclusively (SQLite ``BEGIN IMMEDIATE``, PostgreSQL advisory lock).
Only writers migrate. Readers find the version with :func:`stored_version`, which only reads (and
refuses a database that holds no llmtrace store), and read any version from
:data:`MIN_READABLE_VERSION` on as it is: every migration adds nullable columns, tables or indexes,
so a query of an older version leaves out (or stands NULL for) what it lacks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llmtrace.store._api import StoreError

Dialect = Literal["sqlite", "postgresql"]

_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"bigint": "INTEGER", "real": "REAL", "json": "TEXT", "flag": "INTEGER", "key": "TEXT"},
    "postgresql": {
        "bigint": "BIGINT",
        "real": "DOUBLE PRECISION",
        "json": "JSONB",
        "flag": "SMALLINT",
        "key": 'TEXT COLLATE "C"',  # ids compare bytewise on both backends (keyset pagination)
    },
}


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: Sequence[str]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "spans, traces summary, usage records, store identity",
        (
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            """CREATE TABLE spans (
                trace_id {key} NOT NULL,
                span_id {key} NOT NULL,
                parent_span_id {key},
                name TEXT NOT NULL,
                kind TEXT NOT NULL,
                start_ns {bigint} NOT NULL,
                end_ns {bigint} NOT NULL,
                status_code TEXT NOT NULL,
                status_message TEXT NOT NULL,
                attributes {json} NOT NULL,
                events {json} NOT NULL,
                links {json} NOT NULL,
                resource {json} NOT NULL,
                scope TEXT NOT NULL,
                service TEXT,
                operation TEXT,
                request_model TEXT,
                response_model TEXT,
                provider TEXT,
                error_type TEXT,
                input_tokens {bigint},
                output_tokens {bigint},
                cost {real},
                PRIMARY KEY (trace_id, span_id)
            )""",
            "CREATE INDEX spans_start ON spans (start_ns)",
            """CREATE TABLE traces (
                trace_id {key} PRIMARY KEY,
                service TEXT,
                root_name TEXT NOT NULL,
                root_start_ns {bigint} NOT NULL,
                has_root {flag} NOT NULL,
                start_ns {bigint} NOT NULL,
                end_ns {bigint} NOT NULL,
                duration_ns {bigint} NOT NULL,
                span_count {bigint} NOT NULL,
                input_tokens {bigint} NOT NULL,
                output_tokens {bigint} NOT NULL,
                cost {real},
                error_spans {bigint} NOT NULL,
                status TEXT NOT NULL
            )""",
            "CREATE INDEX traces_start ON traces (start_ns, trace_id)",
            "CREATE INDEX traces_service ON traces (service, start_ns)",
            """CREATE TABLE usage (
                trace_id {key} NOT NULL,
                span_id {key} NOT NULL,
                operation TEXT NOT NULL,
                provider TEXT NOT NULL,
                request_model TEXT,
                response_model TEXT,
                framework TEXT,
                input_tokens {bigint},
                output_tokens {bigint},
                cache_read_tokens {bigint},
                cache_write_tokens {bigint},
                reasoning_tokens {bigint},
                cost {real},
                duration_s {real} NOT NULL,
                time_to_first_chunk_s {real},
                streamed {flag} NOT NULL,
                status TEXT NOT NULL,
                error_type TEXT,
                cache_hit {flag},
                start_ns {bigint} NOT NULL,
                dimensions {json} NOT NULL,
                PRIMARY KEY (trace_id, span_id)
            )""",
            "CREATE INDEX usage_start ON usage (start_ns)",
        ),
    ),
    Migration(
        2,
        "trace_keys (models and providers per trace) for list filters; analytics indexes",
        (
            """CREATE TABLE trace_keys (
                kind TEXT NOT NULL,
                value TEXT NOT NULL,
                trace_id {key} NOT NULL,
                PRIMARY KEY (kind, value, trace_id)
            )""",
            """INSERT INTO trace_keys (kind, value, trace_id)
               SELECT 'model', request_model, trace_id FROM spans WHERE request_model IS NOT NULL
               UNION SELECT 'model', response_model, trace_id FROM spans WHERE response_model IS NOT NULL
               UNION SELECT 'provider', provider, trace_id FROM spans WHERE provider IS NOT NULL
               UNION SELECT 'model', request_model, trace_id FROM usage WHERE request_model IS NOT NULL
               UNION SELECT 'model', response_model, trace_id FROM usage WHERE response_model IS NOT NULL
               UNION SELECT 'provider', provider, trace_id FROM usage""",
            "CREATE INDEX usage_request_model ON usage (request_model, start_ns)",
            "CREATE INDEX usage_response_model ON usage (response_model, start_ns)",
            "CREATE INDEX usage_provider ON usage (provider, start_ns)",
        ),
    ),
    Migration(
        3,
        "what OTLP export needs besides: scope version, schema URL and attributes, resource schema URL, "
        "trace state, span flags, dropped attribute/event/link counts",
        # Nullable columns without defaults: a metadata-only change on both backends, and writers
        # of older versions that are still running keep inserting (their rows get NULLs).
        tuple(
            f"ALTER TABLE spans ADD COLUMN {column}"
            for column in (
                "scope_version TEXT",
                "scope_schema_url TEXT",
                "scope_attributes {json}",
                "resource_schema_url TEXT",
                "trace_state TEXT",
                "flags {bigint}",
                "dropped_attributes {bigint}",
                "dropped_events {bigint}",
                "dropped_links {bigint}",
            )
        ),
    ),
    Migration(
        4,
        "usage records keep their own service (sampled-out spans no longer take it away); "
        "cost and duration indexes for filtered trace listings",
        # A nullable column (metadata only, older writers keep inserting: their rows get NULL and
        # take their service from their span or trace, as before) and two small indexes.
        (
            "ALTER TABLE usage ADD COLUMN service TEXT",
            "CREATE INDEX traces_cost ON traces (cost)",
            "CREATE INDEX traces_duration ON traces (duration_ns)",
        ),
    ),
    Migration(
        5,
        "usage records keep their one-hour cache writes, service tier and why they are unpriced; "
        "model-call spans why they are unpriced",
        # Nullable columns only (metadata only, older writers keep inserting: their rows get NULL,
        # which the queries count as no one-hour writes, no tier known and no reason recorded).
        (
            "ALTER TABLE usage ADD COLUMN cache_write_1h_tokens {bigint}",
            "ALTER TABLE usage ADD COLUMN service_tier TEXT",
            "ALTER TABLE usage ADD COLUMN unpriced_reason TEXT",
            "ALTER TABLE spans ADD COLUMN unpriced_reason TEXT",
        ),
    ),
    Migration(
        6,
        "evaluations (gen_ai.evaluation.result events) of the traces' spans",
        # A new table (older writers, which know nothing of it, keep writing the others); its
        # primary key starts with the trace id, so a trace's evaluations are one index range.
        (
            """CREATE TABLE evaluations (
                trace_id {key} NOT NULL,
                evaluation_id {key} NOT NULL,
                span_id {key} NOT NULL,
                time_ns {bigint} NOT NULL,
                name TEXT NOT NULL,
                score {real},
                label TEXT,
                explanation TEXT,
                response_id TEXT,
                service TEXT,
                PRIMARY KEY (trace_id, evaluation_id)
            )""",
            "CREATE INDEX evaluations_time ON evaluations (time_ns)",
        ),
    ),
)

CURRENT_VERSION = MIGRATIONS[-1].version
MIN_READABLE_VERSION = 2
"""The oldest schema a reader reads as it is, without upgrading it (version 2 added trace_keys)."""

_STORE_TABLES = ("meta", "schema_version", "spans", "traces", "trace_keys", "usage", "evaluations")
STORE_TABLES = _STORE_TABLES
"""Every table of the store (for maintenance: sizes, ``VACUUM``)."""
_ADDED_IN = {"trace_keys": 2, "evaluations": 6}
"""Tables that later versions added (the others are there from version 1 on)."""


def tables_of(version: int) -> tuple[str, ...]:
    """The store's tables in a store of schema ``version``."""
    return tuple(t for t in _STORE_TABLES if _ADDED_IN.get(t, 1) <= version)


def render(statement: str, dialect: Dialect) -> str:
    return statement.format(**_TYPES[dialect])


Execute = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
"""Runs one statement (``?`` placeholders) in the caller's transaction and returns its rows, if any."""


def migrate(execute: Execute, dialect: Dialect, *, target: int = CURRENT_VERSION) -> str:
    """Bring the schema to ``target`` (inside the caller's exclusive transaction); return the store id."""
    execute(
        render(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_ns {bigint} NOT NULL, description TEXT NOT NULL)",
            dialect,
        ),
        (),
    )
    rows = execute("SELECT MAX(version) FROM schema_version", ())
    current = int(rows[0][0]) if rows and rows[0][0] is not None else 0
    if current > CURRENT_VERSION:
        raise StoreError(
            f"the store's schema is version {current}, newer than this llmtrace supports "
            f"({CURRENT_VERSION}); upgrade llmtrace to read it"
        )
    for migration in MIGRATIONS:
        if current < migration.version <= target:
            for statement in migration.statements:
                execute(render(statement, dialect), ())
            execute(
                "INSERT INTO schema_version (version, applied_ns, description) VALUES (?, ?, ?)",
                (migration.version, time.time_ns(), migration.description),
            )
    execute(
        "INSERT INTO meta (key, value) VALUES ('store_id', ?) ON CONFLICT (key) DO NOTHING",
        (uuid.uuid4().hex,),
    )
    return str(execute("SELECT value FROM meta WHERE key = 'store_id'", ())[0][0])


def schema_version(execute: Execute) -> int:
    rows = execute("SELECT MAX(version) FROM schema_version", ())
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


class NotAStore(StoreError):
    """The database holds no llmtrace store (an empty file, another application's database)."""


def _tables(execute: Execute, dialect: Dialect) -> set[str]:
    """Which of the store's tables the database has (as the store's statements would find them)."""
    if dialect == "sqlite":
        return {str(r[0]) for r in execute("SELECT name FROM sqlite_master WHERE type = 'table'", ())}
    # resolved through the search path, like every statement of the store
    row = execute("SELECT " + ", ".join(f"to_regclass('{t}') IS NOT NULL" for t in _STORE_TABLES), ())[0]
    return {table for table, present in zip(_STORE_TABLES, row, strict=True) if present}


def stored_version(execute: Execute, dialect: Dialect, name: str) -> int:
    """The schema version of the llmtrace store in a database, found by reading only.

    Raises :class:`NotAStore` when the database holds no llmtrace store (version 1 had no
    ``trace_keys`` table: it counts as a store too), :class:`StoreError` when its schema is newer
    than this llmtrace supports."""
    tables = _tables(execute, dialect)
    required = set(tables_of(1))
    version = schema_version(execute) if required <= tables else 0
    if version >= 1 and not set(tables_of(min(version, CURRENT_VERSION))) <= tables:
        version = 0
    if version < 1 or not execute("SELECT value FROM meta WHERE key = 'store_id'", ()):
        raise NotAStore(f"{name} is not an llmtrace store")
    if version > CURRENT_VERSION:
        raise StoreError(
            f"the store's schema is version {version}, newer than this llmtrace supports "
            f"({CURRENT_VERSION}); upgrade llmtrace to read it"
        )
    return version


def too_old_to_read(name: str, version: int) -> StoreError:
    return StoreError(
        f"{name} has schema version {version}, older than this llmtrace reads "
        f"({MIN_READABLE_VERSION} to {CURRENT_VERSION}): a program that writes it with this llmtrace "
        "(llmtrace.configure()) upgrades it"
    )
