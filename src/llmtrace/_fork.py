"""Locks and state that stay usable in a forked child process.

Servers fork workers from a process that has already set llmtrace up (gunicorn ``--preload``,
Celery prefork, ``multiprocessing`` with the ``fork`` start method). A child has only the thread
that forked: a lock another thread held at that moment stays held forever in the child, and the
state a background thread owned (run maps, queues, open files) belongs to the parent. Locks made
here are reset in the child, and callbacks registered with :func:`in_child` then let each part
drop what the parent owns and start again.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_locks: weakref.WeakSet[Any] = weakref.WeakSet()
_callbacks: list[Callable[[], None]] = []
_kept: list[object] = []


def lock() -> threading.Lock:
    """A ``threading.Lock`` released again in a forked child."""
    made = threading.Lock()
    _locks.add(made)
    return made


def rlock() -> threading.RLock:
    """A ``threading.RLock`` released again in a forked child."""
    made = threading.RLock()
    _locks.add(made)
    return made


def in_child(callback: Callable[[], None]) -> None:
    """Run ``callback`` in every forked child, after the locks are reset (register at import: it is
    kept for the life of the process)."""
    _callbacks.append(callback)


def each_in_child(where: str, instances: weakref.WeakSet[T], start_afresh: Callable[[T], None]) -> None:
    """Call ``start_afresh(obj)`` in every forked child for each ``obj`` still in ``instances``
    (register once per module, at import; nothing is kept alive by the set). It must not block on
    anything of the parent's; what it raises is reported, never raised."""

    def hook() -> None:
        for obj in list(instances):
            try:
                start_afresh(obj)
            except Exception as exc:
                from llmtrace._safety import report_internal_error

                report_internal_error(f"{where} (after fork)", exc)

    in_child(hook)


def keep_forever(obj: object) -> None:
    """Never let ``obj`` (a database connection inherited from the parent) be finalized in this
    process: SQLite and libpq say a connection must be neither used nor closed in a child.

    A reference held here keeps it while the process runs; one more taken through the C API keeps
    it through interpreter finalization too, which otherwise clears this module and would run the
    connection's finalizer (a close) at the child's exit. Never raises."""
    _kept.append(obj)
    with contextlib.suppress(Exception):  # not CPython: the reference above holds until finalization
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def _after_fork_in_child() -> None:
    for made in list(_locks):
        with contextlib.suppress(Exception):  # not a CPython lock: leave it
            made._at_fork_reinit()
    for callback in list(_callbacks):
        try:
            callback()
        except Exception as exc:
            from llmtrace._safety import report_internal_error

            report_internal_error(f"{__name__}.after_fork", exc)


if hasattr(os, "register_at_fork"):  # not on Windows (no fork there)
    os.register_at_fork(after_in_child=_after_fork_in_child)
