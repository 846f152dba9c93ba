"""A forked child's store writer, on every backend (real ``os.fork``).

Servers fork workers from a process that already traces (gunicorn ``--preload``, Celery prefork,
``multiprocessing`` with ``fork``). The child must write its own spans and usage records, never
the parent's (the parent writes those), through a connection of its own, and exit promptly even
when the fork caught the parent's writer holding its locks.

The in-process tests fork the test process and end the child with ``os._exit`` (as
``multiprocessing`` does); the last test runs a small program whose child ends with ``sys.exit``,
so its at-exit shutdown runs. A watchdog kills a child that does not end in time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llmtrace.store import StoreWriter, open_store
from tests.forking import run_in_child
from tests.store_writer.test_writer_queue import span, usage

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")

WATCHDOG_S = 20.0
"""A child still running after this long is killed (and the test fails)."""
PROMPT_S = 5.0
"""How long a child may take, writing included, on a loaded 2-core machine (it needs ~0.1 s)."""
FORK_CHILD = Path(__file__).with_name("fork_child.py")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
_next_id = iter(range(1, 1_000_000))


def _write(writer: StoreWriter, origin: str, count: int) -> None:
    """``count`` one-span traces named ``origin``, each with a usage record of model ``<origin>-model``."""
    for _ in range(count):
        i = next(_next_id)
        writer.submit_span(replace(span(i), name=origin))
        record = usage(i)
        record.request_model = f"{origin}-model"
        writer.submit_usage(record)


def _stored(url: str) -> tuple[Counter[str], Counter[str]]:
    """Traces by root name and usage records by model, read through a store of the test's own."""
    store = open_store(url)
    try:
        names: Counter[str] = Counter()
        cursor = None
        while True:
            page = store.list_traces(limit=100, cursor=cursor)
            names.update(t.root_name for t in page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        models = Counter({m.model: m.calls for m in store.model_stats()})
        return names, models
    finally:
        store.close()


def _new_writer(url: str, tmp_path: Path) -> StoreWriter:
    """A writer as ``configure()`` makes one: it opens the store itself; status file named after the pid."""
    return StoreWriter(
        lambda: open_store(url),
        store_url=url,
        flush_interval_s=0.05,
        status_path=tmp_path / "writers" / f"writer-{os.getpid()}.json",
    )


def _store_lock(writer: StoreWriter) -> Any:
    """The lock the store holds while it writes (SQLite: its connection's; PostgreSQL: the write one's)."""
    store = writer._store
    assert store is not None, "the writer has not opened its store yet"
    return getattr(store, "_write_lock", None) or store._lock  # type: ignore[attr-defined]


@contextmanager
def _held_by_another_thread(*locks: Any) -> Iterator[None]:
    """Hold ``locks`` on a thread of their own (as the writer thread does mid-write) for the block."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            taken.set()
            release.wait(60)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert taken.wait(10), "could not take the writer's locks"
    try:
        yield
    finally:
        release.set()
        holder.join(10)


def _in_child(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``body`` in a forked child that ends with ``os._exit``; what it returned, plus ``pid`` and
    ``took_s``. Fails the test if the child raised, or was still running after WATCHDOG_S (killed)."""
    result, pid, took = run_in_child(body, WATCHDOG_S)
    return {**result, "pid": pid, "took_s": took}


def _balanced(snap: dict[str, Any]) -> dict[str, Any]:
    assert snap["accepted"] == snap["written"] + snap["dropped"] + snap["pending"]
    return snap


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------
def test_a_forked_child_writes_its_own_items_and_never_the_parents(store_url: str, tmp_path: Path) -> None:
    writer = _new_writer(store_url, tmp_path)
    try:
        _write(writer, "parent-before", 2)
        assert writer.flush(10)
        # The parent's next items stay pending over the fork: its writer cannot get at the store.
        with _held_by_another_thread(_store_lock(writer)):
            _write(writer, "parent-pending", 4)

            def child() -> dict[str, Any]:
                _write(writer, "child", 3)
                flushed = writer.flush(10)
                return {"flushed": flushed, "snapshot": writer.snapshot().to_dict()}

            result = _in_child(child)
            # The child wrote its items through its own connection, and none of the parent's.
            assert result["flushed"] is True
            assert _stored(store_url) == (
                Counter({"parent-before": 2, "child": 3}),
                Counter({"parent-before-model": 2, "child-model": 3}),
            )
        assert writer.flush(10)
        # The parent wrote its pending items once; the child changed nothing of the parent's.
        assert _stored(store_url) == (
            Counter({"parent-before": 2, "parent-pending": 4, "child": 3}),
            Counter({"parent-before-model": 2, "parent-pending-model": 4, "child-model": 3}),
        )
        child_snap = _balanced(result["snapshot"])
        assert (child_snap["accepted"], child_snap["written"], child_snap["pending"]) == (6, 6, 0)
        assert (child_snap["written_spans"], child_snap["written_usage"]) == (3, 3)
        assert child_snap["pid"] == result["pid"]
        parent_snap = _balanced(writer.snapshot().to_dict())
        assert (parent_snap["accepted"], parent_snap["written"], parent_snap["pending"]) == (12, 12, 0)
        assert parent_snap["write_failures"] == dict.fromkeys(parent_snap["write_failures"], 0)
    finally:
        writer.shutdown(5)


def test_a_child_forked_while_the_writer_holds_its_locks_exits_promptly(
    store_url: str, tmp_path: Path
) -> None:
    writer = _new_writer(store_url, tmp_path)
    try:
        _write(writer, "parent-before", 1)
        assert writer.flush(10)
        # The fork catches the writer's own lock and the store's held by a thread the child will not
        # have. The child then traces and shuts down, as it does at exit.
        with _held_by_another_thread(writer._lock, _store_lock(writer)):
            _write(writer, "parent-pending", 2)

            def child() -> dict[str, Any]:
                _write(writer, "child", 2)
                started = time.monotonic()
                clean = writer.shutdown(PROMPT_S)
                return {"clean": clean, "shutdown_s": time.monotonic() - started}

            result = _in_child(child)
        assert result["clean"] is True
        assert result["took_s"] < PROMPT_S, result
        # Its status file is its own, final, and counts its own items only.
        status = json.loads((tmp_path / "writers" / f"writer-{result['pid']}.json").read_text())
        assert (status["pid"], status["state"]) == (result["pid"], "stopped")
        assert (status["accepted"], status["written"], status["dropped"], status["pending"]) == (4, 4, 0, 0)
        assert writer.flush(10)
        assert _stored(store_url)[0] == Counter({"parent-before": 1, "parent-pending": 2, "child": 2})
        # The child closed only the connection it opened: the parent's still works, no reconnect.
        assert writer.snapshot().write_failures == dict.fromkeys(writer.snapshot().write_failures, 0)
    finally:
        writer.shutdown(5)


def test_a_child_forked_during_a_sqlite_write_transaction_can_write(tmp_path: Path) -> None:
    """SQLite keeps one table of locks per process: a child forked while the parent's connection held
    the write lock would inherit that lock, held for ever, and could never write. The fork waits
    for the write in progress to commit (briefly; at most ``FORK_WAIT_S``)."""
    url = str(tmp_path / "traces.db")
    writer = _new_writer(url, tmp_path)
    try:
        _write(writer, "parent-before", 1)
        assert writer.flush(10)
        store = writer._store
        in_transaction = threading.Event()

        def write_slowly() -> None:
            with store._transaction():  # type: ignore[union-attr]  # SQLite's write lock, held
                in_transaction.set()
                time.sleep(0.3)

        slow = threading.Thread(target=write_slowly)
        slow.start()
        assert in_transaction.wait(10)

        def child() -> dict[str, Any]:
            _write(writer, "child", 2)
            return {"flushed": writer.flush(8), "snapshot": writer.snapshot().to_dict()}

        result = _in_child(child)
        slow.join(10)
        assert result["flushed"] is True, result["snapshot"]
        assert result["snapshot"]["write_failures"]["contention"] == 0
        assert _stored(url)[0] == Counter({"parent-before": 1, "child": 2})
    finally:
        writer.shutdown(5)


def test_a_forked_child_that_exits_normally_writes_through_the_pipeline(
    store_url: str, tmp_path: Path
) -> None:
    """configure() in the parent; the child traces and ends with sys.exit (its at-exit shutdown runs)."""
    foreign_closes = tmp_path / "foreign-closes.txt"
    done = subprocess.run(
        [sys.executable, str(FORK_CHILD), store_url, str(WATCHDOG_S)],
        cwd=tmp_path,  # a PostgreSQL store's status files go under .llmtrace/ here
        env={**os.environ, "FORK_CHILD_FOREIGN_CLOSES": str(foreign_closes)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["child_exit"] == 0, f"the child did not exit in {WATCHDOG_S:.0f} s: {done.stderr}"
    assert result["child_s"] < PROMPT_S, result
    # The child's exit, finalizers included, left the parent's connection alone: the parent did not
    # have to reconnect (PostgreSQL), and no SQLite connection was closed by a process but its own.
    assert result["parent_write_failures"] == 0
    assert not foreign_closes.exists(), foreign_closes.read_text()

    store = open_store(store_url)
    try:
        traces = store.list_traces(limit=100).items
        assert Counter(t.root_name for t in traces) == Counter(
            {"invoke_agent parent": 3, "invoke_agent child": 3}
        )
        assert {t.span_count for t in traces} == {2}  # each an agent and its chat
        assert {m.model: m.calls for m in store.model_stats()} == {"parent-model": 3, "child-model": 3}
    finally:
        store.close()
    # one status file each, named after its own pid; each counts its own items only
    status_dir = Path(result["status_dir"])
    for pid in (result["parent"], result["child"]):
        status = json.loads((status_dir / f"writer-{pid}.json").read_text())
        assert (status["pid"], status["state"]) == (pid, "stopped")
        assert (status["accepted"], status["written"], status["dropped"]) == (9, 9, 0)
