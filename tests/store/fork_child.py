"""Run by test_fork.py: a traced parent forks while its store writer's locks are held.

``python fork_child.py STORE_URL WATCHDOG_S``; ``FORK_CHILD_FOREIGN_CLOSES`` names a file where a
SQLite connection closed or finalized by a process that did not open it is noted.

The parent configures llmtrace, makes two traced calls, then forks while another thread holds the
writer's lock and the store's (as the writer thread does mid-write), with a third call of its own
pending. The child makes three calls and ends with ``sys.exit``, so its at-exit shutdown runs. The
parent waits for it (killing it after WATCHDOG_S), lets go of the locks, flushes, and prints what
happened as one JSON line.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import sys
import threading
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import llmtrace
from llmtrace.store._writer import status_dir_for

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run by path: the checkout's tests/
from tests.forking import wait_or_kill

FOREIGN_CLOSES = os.environ.get("FORK_CHILD_FOREIGN_CLOSES", os.devnull)


class TrackedConnection(sqlite3.Connection):
    """Notes (in FOREIGN_CLOSES) a connection closed or finalized by a process that did not open it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = os.getpid()

    def close(self) -> None:
        self.note("closed")
        super().close()

    def __del__(self) -> None:
        self.note("finalized")

    def note(self, what: str, getpid: Any = os.getpid, append: Any = open) -> None:  # usable at exit
        if getpid() != self.owner:
            with append(FOREIGN_CLOSES, "a") as log:
                log.write(f"a connection of {self.owner} {what} in {getpid()}\n")


sqlite3.connect = functools.partial(sqlite3.connect, factory=TrackedConnection)  # type: ignore[assignment]


def calls(handler: llmtrace.TelemetryHandler, origin: str, count: int) -> None:
    for _ in range(count):
        agent = handler.start_agent(origin)
        chat = handler.start_chat(f"{origin}-model", provider="openai", parent=agent)
        chat.set_usage(input_tokens=10, output_tokens=1)
        chat.stop()
        agent.stop()


def main(url: str, watchdog_s: float) -> None:
    pipeline = llmtrace.configure(store=url, exporters="store", service_name="fork")
    handler = llmtrace.TelemetryHandler(
        tracer_provider=pipeline.tracer_provider,
        meter_provider=pipeline.meter_provider,
        logger_provider=pipeline.logger_provider,
    )
    writer = pipeline.store_writer
    assert writer is not None
    calls(handler, "parent", 2)
    assert writer.flush(10)
    store = writer._store
    locks = (writer._lock, getattr(store, "_write_lock", None) or store._lock)  # type: ignore[attr-defined]
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            taken.set()
            release.wait(60)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert taken.wait(10)
    calls(handler, "parent", 1)  # pending over the fork
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        calls(handler, "child", 3)
        sys.exit(0)  # atexit: llmtrace shuts the pipeline down
    code = wait_or_kill(pid, watchdog_s)
    took = time.monotonic() - started
    release.set()
    holder.join(10)
    assert writer.flush(10)
    print(
        json.dumps(
            {
                "parent": os.getpid(),
                "child": pid,
                "child_exit": code,
                "child_s": took,
                "status_dir": str(status_dir_for(url)),
                "parent_write_failures": sum(writer.snapshot().write_failures.values()),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
