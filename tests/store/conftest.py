"""Fixtures: every store test runs against SQLite (a file in tmp_path) and a real PostgreSQL server.

PostgreSQL comes from ``LLMTRACE_TEST_POSTGRES_URL`` (``.ci/run`` starts a server and sets it);
without it, a throwaway cluster is started here (``tests.pg_server.PgServer``: ``initdb`` +
``pg_ctl`` in a temporary directory, on 127.0.0.1, as the ``postgres`` user when running as root).
If that is impossible the PostgreSQL tests skip with the reason, except under ``CI=true``, where
they fail.
Each test gets its own PostgreSQL schema (via ``search_path``), so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from llmtrace.store import Store, open_store
from tests.pg_server import ENV_URL, PgServer, unavailable


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    try:
        server = PgServer()
    except Exception as exc:
        unavailable(f"PostgreSQL: no {ENV_URL} and no server could be started here: {exc}")
    try:
        yield server.url
    finally:
        server.destroy()


def _with_schema(url: str, schema: str) -> str:
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options={quote(f'-c search_path={schema}')}"


@pytest.fixture
def new_postgres_url(postgres_url: str) -> Callable[[], str]:
    """Makes URLs whose tables live in a new, empty schema (one per call)."""
    import psycopg

    def make() -> str:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return _with_schema(postgres_url, schema)

    return make


@pytest.fixture
def fresh_postgres_url(new_postgres_url: Callable[[], str]) -> str:
    """A URL whose tables live in a new, empty schema."""
    return new_postgres_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "traces.db")
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()
