"""The store's schema: one logical schema, versioned migrations, rendered for SQLite or PostgreSQL.

Each migration is a list of DDL/DML templates. ``{bigint}``, ``{real}``, ``{json}``, ``{flag}`` and
``{key}`` are replaced by the backend's column types, so both backends get the same tables,
columns and indexes. Applied migrations are recorded in ``schema_version`` (one row per version);
:func:`migrate` brings a database from any older version to :data:`CURRENT_VERSION` inside one
transaction that the caller holds exclusively (SQLite ``BEGIN IMMEDIATE``, PostgreSQL advisory lock).
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
)

CURRENT_VERSION = MIGRATIONS[-1].version


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
