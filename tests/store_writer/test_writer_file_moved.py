"""A SQLite store file deleted or replaced under a running writer: the writer notices, warns once
and writes to the file at the path again (before, it went on writing to the deleted file)."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from llmtrace.store import _writer as writer_module
from llmtrace.store import open_store
from llmtrace.store._writer import StoreWriter
from tests.store_writer.test_writer_queue import span


def _trace_ids(path: Path) -> list[int]:
    """What a reader opening the path now finds (as ``llmtrace traces`` would)."""
    reader = open_store(str(path), create=False)
    try:
        return sorted(int(t.trace_id, 16) for t in reader.list_traces(limit=100).items)
    finally:
        reader.close()


def _delete_file(path: Path) -> None:
    path.unlink()


def _delete_with_journals(path: Path) -> None:
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        (path.parent / name).unlink(missing_ok=True)


def _delete_directory(path: Path) -> None:
    shutil.rmtree(path.parent)


@pytest.mark.parametrize("delete", [_delete_file, _delete_with_journals, _delete_directory])
def test_a_deleted_store_file_is_created_again(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    delete: Callable[[Path], None],
) -> None:
    monkeypatch.setattr(writer_module, "FILE_CHECK_INTERVAL_S", 0.0)
    caplog.set_level(logging.WARNING, logger="llmtrace")
    path = tmp_path / ".llmtrace" / "traces.db"
    writer = StoreWriter(lambda: open_store(str(path)), flush_interval_s=0.02)
    try:
        writer.submit_spans([span(1), span(2)])
        assert writer.flush(10)
        assert _trace_ids(path) == [1, 2]
        delete(path)
        writer.submit_spans([span(3), span(4)])
        assert writer.flush(10)
        assert path.exists() and oct(path.stat().st_mode & 0o777) == "0o600"
        assert _trace_ids(path) == [3, 4]  # the later spans are where users look
        writer.submit_span(span(5))
        assert writer.flush(10)
        assert _trace_ids(path) == [3, 4, 5]
        snap = writer.snapshot()
    finally:
        writer.shutdown(5)
    assert snap.store_reopened == 1 and snap.written == 5 and snap.dropped == 0
    assert sum(snap.write_failures.values()) == 0
    warnings = [r.getMessage() for r in caplog.records if "store file" in r.getMessage()]
    assert len(warnings) == 1 and f"the store file {path} was deleted" in warnings[0]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


def test_a_replaced_store_file_is_written_from_then_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``mv other.db traces.db`` under the writer: the writer writes into the file now at the path,
    and the journal files it leaves there (the old store's) do not leak into it."""
    monkeypatch.setattr(writer_module, "FILE_CHECK_INTERVAL_S", 0.0)
    caplog.set_level(logging.WARNING, logger="llmtrace")
    path = tmp_path / "traces.db"
    writer = StoreWriter(lambda: open_store(str(path)), flush_interval_s=0.02)
    try:
        writer.submit_spans([span(i) for i in range(1, 201)])
        assert writer.flush(10)
        other = open_store(str(tmp_path / "other.db"))
        other.write([span(1000)], [])
        other.close()
        assert Path(f"{path}-wal").exists()  # the writer's store has its write-ahead log open
        os.replace(tmp_path / "other.db", path)
        writer.submit_spans([span(2000)])
        assert writer.flush(10)
        snap = writer.snapshot()
    finally:
        writer.shutdown(5)
    assert _trace_ids(path) == [1000, 2000]
    assert snap.store_reopened == 1 and snap.dropped == 0
    warnings = [r.getMessage() for r in caplog.records if "store file" in r.getMessage()]
    assert len(warnings) == 1 and "was replaced" in warnings[0]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
