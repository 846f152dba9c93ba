"""What the read commands do to the file they are pointed at: nothing (README: "none of them writes")."""

from __future__ import annotations

import inspect
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmtrace.cli import cli
from llmtrace.store._sqlite import SqliteStore
from tests.cli.test_cli import cli_runner
from tests.store.dataset import write_dataset

COMMANDS = (("traces",), ("stats", "--json"), ("show", "a" * 32), ("export", "a" * 32), ("diagnostics",))


def _cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMTRACE_"))}
    return subprocess.run(
        [sys.executable, "-c", "from llmtrace.cli import main; main()", "--store", str(store), *args],
        env=env,
        cwd=store.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)}


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_a_read_command_refuses_another_applications_database(tmp_path: Path, args: tuple[str, ...]) -> None:
    app = tmp_path / "some_app.db"
    conn = sqlite3.connect(app)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users VALUES (1, 'alice')")
    conn.commit()
    conn.close()
    before = _files(app)
    result = _cli(app, *args)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"error: {app} is not an llmtrace store\n",
    )
    assert _files(app) == before  # no llmtrace tables, still in rollback-journal mode
    conn = sqlite3.connect(app)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()


def test_a_read_command_leaves_an_empty_file_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    result = _cli(empty, "traces")
    assert (result.returncode, result.stderr) == (1, f"error: {empty} is not an llmtrace store\n")
    assert _files(empty) == {"empty.db": b""}


def _timed_traces(store: Path) -> tuple[float, tuple[int, str, str]]:
    """``llmtrace --store STORE traces --json`` in this process, and how long it took (s)."""
    started = time.monotonic()
    result = cli_runner().invoke(cli, ["--store", str(store), "traces", "--json"], prog_name="llmtrace")
    return time.monotonic() - started, (result.exit_code, result.stdout, result.stderr)


def test_a_read_command_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    """A writer holding the store's write lock (for longer than SQLite's busy timeout) does not
    make a read command wait or fail.

    A reader that waited would take the whole busy timeout (5 s) longer than the same command
    without the lock. The command runs in this process (another connection: SQLite locks alike),
    so the interpreter's start-up, which a loaded machine stretches by seconds, is not measured,
    and it is compared with the same command run again once the lock is gone."""
    busy_timeout_s = inspect.signature(SqliteStore).parameters["busy_timeout_ms"].default / 1000
    path = tmp_path / "traces.db"
    writer = SqliteStore(path)
    write_dataset(writer)
    writer.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO meta (key, value) VALUES ('held', 'by a writer')")
    try:
        locked_s, locked = _timed_traces(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    free_s, free = _timed_traces(path)
    assert locked[0] == 0, locked[2]
    assert len(locked[1].splitlines()) == 5
    assert locked == free
    assert locked_s - free_s < busy_timeout_s / 2, (locked_s, free_s)
