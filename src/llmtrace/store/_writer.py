"""The asynchronous store writer: a bounded queue, batched writes on one background thread.

The application only ever appends to an in-memory queue (a lock held for a few hundred
nanoseconds); one daemon thread takes batches off it and writes them to the store in one
transaction each. Nothing the database does (locks, restarts, hangs, refusals) raises into
the application or makes it wait.

Accounting is exact at every moment: ``accepted == written + dropped + pending``, where
``accepted`` counts every item handed to the writer (also the ones refused at once because
the queue was full), ``pending`` the items queued or being written, and ``dropped`` is split
by reason:

- ``queue_full``: refused because ``max_queue_size`` items were already pending;
- ``write_failed``: the store rejected the item for a non-transient reason (a constraint,
  an unknown error), after the batch was split to isolate it;
- ``invalid``: the item could not be converted to a store record;
- ``shutdown``: still pending when the shutdown deadline passed, or handed over after shutdown.

Transient failures (``connection``, ``timeout``, ``contention``, ``disk_full``) are retried with
bounded exponential backoff while the queue holds the items (a full disk is not a bad item: the
batch is kept whole until space returns, and items beyond the queue are dropped as
``queue_full``); a connection failure also reopens the store when the writer was given a way to
open it.

With a retention (``retention_s``), the writer also deletes what is older than that, on its own
thread: when it starts, then every :data:`RETENTION_INTERVAL_S`, one short batch at a time between
its writes (:mod:`llmtrace.store._retention`, the code ``llmtrace prune`` runs). A failed pass is
logged once, counted (``prune_failures``) and tried again later; it never touches the items.

A SQLite store file deleted or replaced while the writer has it open is noticed within
:data:`FILE_CHECK_INTERVAL_S` of writing (a few ``stat`` calls): the writer warns once and reopens the
store at its path (creating it afresh), so what it writes next lands where the command line reads.

In a forked child every writer starts afresh (an at-fork hook, :func:`llmtrace._fork.each_in_child`): new
locks, an empty queue and zeroed counters (the parent writes what it had queued; the child's
books cover its own items), a thread of its own started with the first item, and a status
file named after the child's pid. The stores open connections of their own there.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from llmtrace import _fork, semconv
from llmtrace._safety import report_internal_error
from llmtrace._usage import UsageRecord
from llmtrace.store._api import EvaluationRecord, SpanRecord, Store, redact_url

logger = logging.getLogger("llmtrace")

FailureClass = Literal["connection", "timeout", "contention", "disk_full", "constraint", "unknown"]
Pressure = Literal["ok", "elevated", "high", "saturated"]
DropReason = Literal["queue_full", "write_failed", "invalid", "shutdown"]

FAILURE_CLASSES: Final[tuple[FailureClass, ...]] = (
    "connection",
    "timeout",
    "contention",
    "disk_full",
    "constraint",
    "unknown",
)
TRANSIENT_FAILURES: Final = frozenset({"connection", "timeout", "contention", "disk_full"})
DROP_REASONS: Final[tuple[DropReason, ...]] = ("queue_full", "write_failed", "invalid", "shutdown")

DEFAULT_MAX_QUEUE_SIZE: Final = 10_000
DEFAULT_MAX_BATCH_SIZE: Final = 512
DEFAULT_FLUSH_INTERVAL_S: Final = 0.5
DEFAULT_SHUTDOWN_TIMEOUT_S: Final = 10.0
MIN_BACKOFF_S: Final = 0.02
MAX_BACKOFF_S: Final = 1.0
SHUTDOWN_GRACE_S: Final = 1.0
"""How long shutdown waits past its deadline for a cancelled write to give up."""
STATUS_INTERVAL_S: Final = 2.0
FILE_CHECK_INTERVAL_S: Final = 2.0
"""How often, at most, the writer checks that a SQLite store's file is still the one it writes."""
RETENTION_INTERVAL_S: Final = 3600.0
"""Between two retention passes (the first runs when the writer starts)."""
RETENTION_RETRY_S: Final = 60.0
"""Until the next pass after one that failed for a transient reason (a busy store, a lost connection)."""
RETENTION_BATCH_SPANS: Final = 500
"""Spans one retention batch deletes at most (one short transaction)."""
RETENTION_PAUSE_S: Final = 0.05
"""While a retention pass has more to delete, the writer's loop waits this long, not the flush interval."""
STATUS_MAX_AGE_S: Final = 7 * 24 * 3600

_SPAN: Final = 0
_USAGE: Final = 1
_EVALUATION: Final = 2


# --------------------------------------------------------------------------------------
# Failure classification (no driver imports: types are matched by name, codes and messages)
# --------------------------------------------------------------------------------------
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 5, 6, 10, 13, 14
_SQLITE_CONSTRAINT = 19

_MESSAGE_RULES: Final[tuple[tuple[FailureClass, tuple[str, ...]], ...]] = (
    (
        "disk_full",
        (
            "database or disk is full",
            "no space left on device",
            "could not extend file",
            "disk quota exceeded",
            "disk full",
        ),
    ),
    (
        "contention",
        (
            "database is locked",
            "database table is locked",
            "is locked",
            "database is busy",
            "sqlite_busy",
            "deadlock",
            "could not serialize",
            "lock not available",
            "could not obtain lock",
            "lock timeout",
        ),
    ),
    ("timeout", ("timeout", "timed out", "canceling statement")),
    (
        "constraint",
        ("constraint", "duplicate key", "unique violation", "violates", "foreign key", "not null"),
    ),
    (
        "connection",
        (
            "connection",
            "could not connect",
            "connect to server",
            "server closed",
            "terminating",
            "network",
            "unable to open database",
            "disk i/o error",
            "broken pipe",
            "the database system is",
            "no route to host",
            "name or service not known",
        ),
    ),
)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _by_code(exc: BaseException) -> FailureClass | None:
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)  # psycopg 3 / 2
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        if sqlstate in ("40001", "40P01", "55P03"):
            return "contention"
        if sqlstate == "53100":  # disk_full
            return "disk_full"
        if sqlstate == "57014":
            return "timeout"
        if sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03"):
            return "connection"
        if sqlstate.startswith("23"):
            return "constraint"
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
        if isinstance(code, int):
            primary = code & 0xFF
            if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
                return "contention"
            if primary == _SQLITE_FULL:
                return "disk_full"
            if primary == _SQLITE_CONSTRAINT:
                return "constraint"
            if primary in (_SQLITE_IOERR, _SQLITE_CANTOPEN):
                return "connection"
        if isinstance(exc, sqlite3.IntegrityError):
            return "constraint"
    return None


def _by_type(exc: BaseException) -> FailureClass | None:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk_full"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, (ConnectionError, BrokenPipeError)):
        return "connection"
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"IntegrityError", "UniqueViolation", "ForeignKeyViolation", "NotNullViolation"}:
        return "constraint"
    if names & {"SerializationFailure", "DeadlockDetected", "LockNotAvailable"}:
        return "contention"
    if names & {"QueryCanceled", "ConnectionTimeout", "PoolTimeout"}:
        return "timeout"
    return None


def _by_message(exc: BaseException) -> FailureClass | None:
    message = str(exc).lower()
    for failure, needles in _MESSAGE_RULES:
        if any(needle in message for needle in needles):
            return failure
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"OperationalError", "InterfaceError"} and "sqlite" not in type(exc).__module__:
        return "connection"  # a DB-API driver's generic "the server went away"
    return None


def classify_failure(exc: BaseException) -> FailureClass:
    """The class of a store write failure, from the exception and its causes.

    ``contention`` (SQLite busy/locked, PostgreSQL serialization failures, deadlocks, lock
    timeouts), ``disk_full``, ``connection``, ``timeout`` and ``constraint`` are recognised from SQLSTATE
    codes, SQLite error codes, exception type names and messages, without importing any
    database driver; anything else is ``unknown``.
    """
    chain = list(_causes(exc))
    for rule in (_by_code, _by_type, _by_message):
        for item in chain:
            found = rule(item)
            if found is not None:
                return found
    return "unknown"


def pressure_level(depth: int, capacity: int) -> Pressure:
    """``ok`` below half full, ``elevated`` below 80 %, ``high`` below full, else ``saturated``."""
    if capacity <= 0 or depth >= capacity:
        return "saturated"
    fill = depth / capacity
    if fill < 0.5:
        return "ok"
    if fill < 0.8:
        return "elevated"
    return "high"


def status_dir_for(url: str) -> Path:
    """Where writers of the store at ``url`` keep their snapshot files (``llmtrace diagnostics``).

    Next to a SQLite database (``traces.db`` -> ``traces.db.writers/``); for a server database,
    ``.llmtrace/writers-<hash of the URL>/`` under the working directory.
    """
    if url.startswith(("postgresql://", "postgres://")):
        digest = hashlib.sha256(redact_url(url).encode()).hexdigest()[:12]
        return Path(".llmtrace").absolute() / f"writers-{digest}"
    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else url  # as open_store reads it
    return Path(os.path.abspath(os.path.expanduser(path)) + ".writers")


def status_path_for(url: str) -> Path | None:
    """This process's snapshot file for the store at ``url`` (None for in-memory stores)."""
    if ":memory:" in url:
        return None
    return status_dir_for(url) / f"writer-{os.getpid()}.json"


def _status_path_in_child(path: Path | None, parent_pid: int, pid: int) -> Path | None:
    """A forked child's own status file: ``writer-<parent pid>.json`` becomes ``writer-<pid>.json``
    (any other name gets ``-<pid>`` added), so parent and child never overwrite each other's."""
    if path is None:
        return None
    stem = path.stem.removesuffix(f"-{parent_pid}")
    return path.with_name(f"{stem}-{pid}{path.suffix}")


# --------------------------------------------------------------------------------------
# The snapshot
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WriterSnapshot:
    """The writer's counters at one moment (``accepted == written + dropped + pending``)."""

    store: str
    state: Literal["running", "stopping", "stopped"]
    accepted: int
    written: int
    dropped: int
    pending: int
    written_spans: int
    written_usage: int
    dropped_by_reason: dict[str, int]
    """Items (spans, usage records and evaluations alike) dropped, by reason."""
    write_failures: dict[str, int]
    """Failed write attempts (not items) by failure class."""
    retries: int
    batches: int
    last_error: str | None
    last_error_class: str | None
    last_error_time: float | None
    last_write_time: float | None
    queue_capacity: int
    queue_depth: int
    high_water_mark: int
    pressure: Pressure
    pid: int = field(default_factory=os.getpid)
    taken_at: float = field(default_factory=time.time)
    retention_s: float | None = None
    """How old data the writer deletes (None: it keeps everything)."""
    pruned_traces: int = 0
    pruned_spans: int = 0
    pruned_usage: int = 0
    prune_failures: int = 0
    """Failed retention batches (each is tried again at the next pass)."""
    last_prune_error: str | None = None
    last_prune_time: float | None = None
    """When the last retention pass finished (``time.time()``)."""
    store_reopened: int = 0
    """Times the SQLite store's file was found deleted or replaced, and opened afresh."""
    written_evaluations: int = 0
    """Evaluations written (``gen_ai.evaluation.result`` events)."""
    pruned_evaluations: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------
# The writer
# --------------------------------------------------------------------------------------
class StoreWriter:
    """Writes spans, usage records and evaluations to a :class:`~llmtrace.store.Store` from a
    background thread.

    Args:
        store: an open store, or a function that opens one (called on the writer thread, again
            after a connection failure, so a restarted database is reconnected).
        store_url: how the store is named in the snapshot (default: the store's ``url``).
        max_queue_size: items (spans, usage records and evaluations) that may be pending at once;
            beyond it, new items are dropped and counted, never waited for.
        max_batch_size: items per write transaction.
        flush_interval_s: longest time an item waits for a batch to fill.
        convert_span: turns what :meth:`submit_span` receives into a :class:`SpanRecord` (on the
            writer thread, so the application does not pay for it). Default: items already are.
        convert_evaluation: likewise, what :meth:`submit_evaluation` receives into an
            :class:`EvaluationRecord`. Default: items already are.
        status_path: a JSON file the writer keeps its snapshot in (every few seconds and at
            shutdown), for ``llmtrace diagnostics`` in another process. None: no file.
        retention_s: delete what is older than this many seconds (see the module's docstring).
            None: keep everything.
    """

    def __init__(
        self,
        store: Store | Callable[[], Store],
        *,
        store_url: str | None = None,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        convert_span: Callable[[Any], SpanRecord] | None = None,
        status_path: str | os.PathLike[str] | None = None,
        retention_s: float | None = None,
        convert_evaluation: Callable[[Any], EvaluationRecord] | None = None,
    ) -> None:
        if max_queue_size < 1:
            raise ValueError(f"max_queue_size must be at least 1, got {max_queue_size}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if flush_interval_s <= 0:
            raise ValueError(f"flush_interval_s must be positive, got {flush_interval_s}")
        if retention_s is not None and not 0 < retention_s < float("inf"):
            raise ValueError(f"retention_s must be positive, got {retention_s}")
        if callable(store) and not hasattr(store, "write"):
            self._opener: Callable[[], Store] | None = store
            self._store: Store | None = None
        else:
            self._opener = None
            self._store = store  # type: ignore[assignment]
        self.store_url = redact_url(store_url or str(getattr(self._store, "url", "") or "?"))
        self.usage_service: str | None = None
        """The ``service.name`` given (on this thread, not the caller's) to usage records and
        evaluations that have none."""
        self.capacity = max_queue_size
        self.batch_size = max_batch_size
        self.flush_interval_s = flush_interval_s
        self._convert_span = convert_span
        self._convert_evaluation = convert_evaluation
        self.retention_s = retention_s
        self._status_path = Path(status_path) if status_path is not None else None
        self._pid = os.getpid()
        self._closed = False
        self._deadline: float | None = None
        self._start_afresh()
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="llmtrace-store-writer", daemon=True
        )
        self._thread.start()
        _live.add(self)

    def _start_afresh(self) -> None:
        """New locks, an empty queue, zeroed counters (in ``__init__``, and in a forked child)."""
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._queue: deque[tuple[int, Any]] = deque()
        # The application side takes no lock (a lock contended by many threads under the GIL
        # makes some calls wait for milliseconds): it appends to the deque (atomic) and counts
        # refusals in per-thread counters. Everything else is the writer's, under _lock, and
        # ``accepted`` is derived (taken + queued + refused), so the books always balance.
        self._refused_full: dict[int, int] = {}
        self._refused_closed: dict[int, int] = {}
        self._inflight = 0
        self._taken = 0  # items the writer took off the queue
        self._finished = 0  # of those: written or dropped
        self._written = [0, 0, 0]  # spans, usage, evaluations
        self._dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._failures: dict[str, int] = dict.fromkeys(FAILURE_CLASSES, 0)
        self._retries = 0
        self._batches = 0
        self._high_water = 0
        self._saturated = False
        self._last_error: str | None = None
        self._last_error_class: str | None = None
        self._last_error_time: float | None = None
        self._last_write_time: float | None = None
        self._logged_classes: set[str] = set()
        self._stopping = False
        # the writer thread has done its last write (set in _run's finally), or a writer that was
        # shut down before a fork has nothing to do in the child
        self._stopped = self._closed
        if not self._closed:
            self._deadline = None
        self._status_written = 0.0
        self._file_checked = time.monotonic()  # the store was just opened (or is opened with the first write)
        self._store_reopened = 0
        self._pruned = [0, 0, 0, 0]  # traces, spans, usage, evaluations
        self._prune_failures = 0
        self._last_prune_error: str | None = None
        self._last_prune_time: float | None = None
        self._prune_pass: tuple[int, int] | None = None  # (cutoff, now) of the pass in progress
        self._next_prune = 0.0  # monotonic: the first pass runs when the writer starts

    def _start_afresh_in_child(self) -> None:
        """In a forked child (the at-fork hook; nothing here blocks or raises).

        The parent's thread is gone and its locks may be held for ever: everything starts again,
        empty. What the parent had queued is the parent's to write (the child would write it twice),
        so the child's counters cover its own items only. A writer shut down before the fork stays
        shut down. The thread starts with the child's first item (a child that writes nothing, or
        only execs, starts none); the store opens its own connection (its own at-fork hook)."""
        parent_pid, self._pid = self._pid, os.getpid()
        self._thread = None
        self._start_afresh()
        self._next_prune = time.monotonic() + RETENTION_INTERVAL_S  # the parent's writer prunes now
        self._status_path = _status_path_in_child(self._status_path, parent_pid, self._pid)

    def _start_thread(self) -> None:
        """Start the writer thread of a forked child, once (never raises)."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name="llmtrace-store-writer", daemon=True)
            try:
                thread.start()
            except Exception as exc:  # at interpreter shutdown (Python 3.12+), or out of threads
                report_internal_error(f"{__name__}.StoreWriter.start", exc)
                return  # the items wait; the next one tries again, shutdown drops them
            self._thread = thread

    # ---------------------------------------------------------------- application side
    def submit_span(self, span: Any) -> bool:
        """Queue one finished span (a SpanRecord, or what ``convert_span`` takes). Never blocks."""
        return self._submit(((_SPAN, span),)) == 1

    def submit_spans(self, spans: Iterable[Any]) -> int:
        """Queue many spans under one lock; returns how many were accepted into the queue."""
        return self._submit([(_SPAN, span) for span in spans])

    def submit_usage(self, record: UsageRecord) -> bool:
        """Queue one usage record. Never blocks."""
        return self._submit(((_USAGE, record),)) == 1

    def submit_evaluation(self, evaluation: Any) -> bool:
        """Queue one evaluation (an EvaluationRecord, or what ``convert_evaluation`` takes). Never blocks."""
        return self._submit(((_EVALUATION, evaluation),)) == 1

    def _submit(self, items: Sequence[tuple[int, Any]]) -> int:
        thread = threading.get_ident()
        if self._closed:
            refused = self._refused_closed
            refused[thread] = refused.get(thread, 0) + len(items)  # only this thread writes its key
            return 0
        queue = self._queue
        queued = 0
        for item in items:
            # Several threads may pass this check at once: the queue can exceed its capacity by
            # at most the number of threads submitting at that moment.
            if len(queue) + self._inflight >= self.capacity:
                self._saturated = True
                refused = self._refused_full
                refused[thread] = refused.get(thread, 0) + 1
                continue
            queue.append(item)
            queued += 1
        if self._thread is None and queued:
            self._start_thread()  # in a forked child, with its first item
        if queued and len(queue) >= self.batch_size and not self._wake.is_set():
            self._wake.set()
        return queued

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued before the call is written or dropped (at most ``timeout_s``)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            target = self._taken + len(self._queue)
        if self._thread is None and target > 0:
            self._start_thread()
        self._wake.set()
        with self._done:
            while self._finished < target:
                remaining = deadline - time.monotonic()
                thread = self._thread
                if remaining <= 0 or thread is None or not thread.is_alive():
                    return False
                self._done.wait(min(remaining, 0.1))
        return True

    def shutdown(self, timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S) -> bool:
        """Stop accepting, write everything pending (retrying through brief outages) within
        ``timeout_s``; what is still pending then is dropped as ``shutdown``. Idempotent.

        Returns True if nothing was left behind."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._stopping = True
                self._deadline = time.monotonic() + max(0.0, timeout_s)
            deadline = self._deadline
            thread = self._thread  # None: a forked child's writer that never started (nothing to write)
        self._wake.set()
        assert deadline is not None
        if thread is None:
            self._drop_what_is_left()
            self._maybe_write_status(force=True)
        else:
            self._join(thread, deadline)
        if thread is None or not thread.is_alive():
            self._close_store()
        snap = self.snapshot()
        return snap.pending == 0 and snap.dropped_by_reason["shutdown"] == 0

    def _join(self, thread: threading.Thread, deadline: float) -> None:
        thread.join(max(0.0, deadline - time.monotonic()))
        # A write still waiting at the deadline (a table lock, a hung server) is cancelled, if the
        # store can do that, so it fails, is counted as dropped, and the thread ends in time.
        # (On a thread of its own: a cancel request opens a connection, which can hang too.)
        grace_end = max(time.monotonic(), deadline) + SHUTDOWN_GRACE_S
        canceller: threading.Thread | None = None
        while thread.is_alive() and time.monotonic() < grace_end:
            if canceller is None or not canceller.is_alive():  # again: a cancel between statements is lost
                canceller = threading.Thread(
                    target=self._cancel_write, name="llmtrace-store-cancel", daemon=True
                )
                try:
                    canceller.start()
                except RuntimeError:  # at interpreter shutdown (Python 3.12+): cancel from here
                    self._cancel_write()
            thread.join(min(0.2, max(0.0, grace_end - time.monotonic())))

    # ---------------------------------------------------------------- observability
    def snapshot(self) -> WriterSnapshot:
        with self._lock:
            queued = len(self._queue)
            pending = queued + self._inflight
            dropped_by_reason = dict(self._dropped)
            dropped_by_reason["queue_full"] += sum(list(self._refused_full.values()))
            dropped_by_reason["shutdown"] += sum(list(self._refused_closed.values()))
            written = sum(self._written)
            dropped = sum(dropped_by_reason.values())
            self._high_water = max(self._high_water, pending)
            if self._saturated:
                self._high_water = max(self._high_water, self.capacity)
            thread = self._thread
            state: Literal["running", "stopping", "stopped"] = (
                "running"
                if not self._closed
                else "stopped"
                if self._stopped or thread is None or not thread.is_alive()
                else "stopping"
            )
            return WriterSnapshot(
                store=self.store_url,
                state=state,
                accepted=written + dropped + pending,
                written=written,
                dropped=dropped,
                pending=pending,
                written_spans=self._written[0],
                written_usage=self._written[1],
                dropped_by_reason=dropped_by_reason,
                write_failures=dict(self._failures),
                retries=self._retries,
                batches=self._batches,
                last_error=self._last_error,
                last_error_class=self._last_error_class,
                last_error_time=self._last_error_time,
                last_write_time=self._last_write_time,
                queue_capacity=self.capacity,
                queue_depth=pending,
                high_water_mark=self._high_water,
                pressure=pressure_level(pending, self.capacity),
                retention_s=self.retention_s,
                pruned_traces=self._pruned[0],
                pruned_spans=self._pruned[1],
                pruned_usage=self._pruned[2],
                pruned_evaluations=self._pruned[3],
                prune_failures=self._prune_failures,
                last_prune_error=self._last_prune_error,
                last_prune_time=self._last_prune_time,
                store_reopened=self._store_reopened,
                written_evaluations=self._written[2],
            )

    def register_metrics(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        """Report the counters as OTel observable instruments (read when metrics are collected)."""
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(semconv.INSTRUMENTATION_SCOPE)
        meter.create_observable_counter(
            semconv.METRIC_STORE_ITEMS,
            callbacks=[self._observe_items],
            unit="{item}",
            description="Spans, usage records and evaluations the store writer accepted, wrote or dropped",
        )
        meter.create_observable_counter(
            semconv.METRIC_STORE_WRITE_FAILURES,
            callbacks=[self._observe_failures],
            unit="{attempt}",
            description="Failed store write attempts by failure class",
        )
        meter.create_observable_gauge(
            semconv.METRIC_STORE_QUEUE_DEPTH,
            callbacks=[self._observe_depth],
            unit="{item}",
            description="Items pending in the store writer's queue",
        )
        meter.create_observable_gauge(
            semconv.METRIC_STORE_QUEUE_HIGH_WATER,
            callbacks=[self._observe_high_water],
            unit="{item}",
            description="Largest store writer queue depth seen",
        )

    def _observe_items(self, options: CallbackOptions) -> Iterable[Observation]:
        snap = self.snapshot()
        yield Observation(snap.accepted, {semconv.LLMTRACE_STORE_OUTCOME: "accepted"})
        yield Observation(snap.written, {semconv.LLMTRACE_STORE_OUTCOME: "written"})
        for reason, count in snap.dropped_by_reason.items():
            yield Observation(count, {semconv.LLMTRACE_STORE_OUTCOME: f"dropped_{reason}"})

    def _observe_failures(self, options: CallbackOptions) -> Iterable[Observation]:
        for failure, count in self.snapshot().write_failures.items():
            yield Observation(count, {semconv.ERROR_TYPE: failure})

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self.snapshot().queue_depth)

    def _observe_high_water(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self.snapshot().high_water_mark)

    # ---------------------------------------------------------------- writer thread
    def _run(self) -> None:
        try:
            self._prune_status_files()
            while True:
                self._wake.wait(RETENTION_PAUSE_S if self._prune_pass is not None else self.flush_interval_s)
                self._wake.clear()
                while not self._past_deadline():
                    batch = self._take()
                    if not batch:
                        break
                    self._write(batch)
                    self._maybe_write_status()
                if not self._stopping:
                    self._maybe_prune()
                self._maybe_write_status()
                with self._lock:
                    if self._stopping and (not self._queue or self._past_deadline()):
                        break  # what is left past the deadline is dropped (below)
        except BaseException as exc:  # never seen in practice; keep the accounting honest anyway
            logger.error("llmtrace store writer stopped unexpectedly", exc_info=exc)
            with self._lock:
                self._stopping = True
        finally:
            self._drop_what_is_left()
            self._maybe_write_status(force=True)

    def _drop_what_is_left(self) -> None:
        with self._lock:
            self._closed = True
            left = len(self._queue)
            self._queue.clear()
            self._dropped["shutdown"] += left
            self._taken += left
            self._finished += left
            self._stopped = True  # its last write is done: the snapshot saved next is the final one
            self._done.notify_all()

    def _take(self) -> list[tuple[int, Any]]:
        with self._lock:
            queue = self._queue
            depth = len(queue) + self._inflight
            if depth > self._high_water:
                self._high_water = depth
            count = min(len(queue), self.batch_size)
            batch = [queue.popleft() for _ in range(count)]
            self._inflight += count
            self._taken += count
            return batch

    def _past_deadline(self) -> bool:
        deadline = self._deadline
        return deadline is not None and time.monotonic() >= deadline

    def _write(self, batch: list[tuple[int, Any]]) -> None:
        spans: list[SpanRecord] = []
        usage: list[UsageRecord] = []
        evaluations: list[EvaluationRecord] = []
        invalid = 0
        service = self.usage_service
        for kind, item in batch:
            if kind == _USAGE:
                if service is not None and item.service is None:
                    item = replace(item, service=service)  # a copy: other sinks saw the call's own record
                usage.append(item)
                continue
            try:
                if kind == _EVALUATION:
                    record = self._convert_evaluation(item) if self._convert_evaluation is not None else item
                    if service is not None and record.service is None:
                        record = replace(record, service=service)
                    evaluations.append(record)
                else:
                    spans.append(self._convert_span(item) if self._convert_span is not None else item)
            except Exception as exc:
                invalid += 1
                what = "an evaluation" if kind == _EVALUATION else "a span"
                self._log_once("invalid", f"llmtrace store writer: could not convert {what}", exc)
        if invalid:
            self._finish(0, 0, "invalid", invalid)
        self._write_records(spans, usage, evaluations)

    def _write_records(
        self, spans: list[SpanRecord], usage: list[UsageRecord], evaluations: list[EvaluationRecord]
    ) -> None:
        """Write with retries of transient failures; split the batch on other failures."""
        size = len(spans) + len(usage) + len(evaluations)
        if not size:
            return
        backoff = MIN_BACKOFF_S
        while True:
            if self._past_deadline():
                self._finish(0, 0, "shutdown", size)
                return
            try:
                store = self._open()
                self._check_file(store)
                if evaluations:
                    store.write(spans, usage, evaluations)
                else:  # as before evaluations were kept (stores of other makers)
                    store.write(spans, usage)
            except Exception as exc:
                failure = classify_failure(exc)
                self._note_failure(failure, exc)
                if failure in TRANSIENT_FAILURES:
                    if failure == "connection":
                        self._close_store()
                    if self._past_deadline():
                        self._finish(0, 0, "shutdown", size)
                        return
                    delay = backoff
                    if self._deadline is not None:
                        delay = min(delay, max(0.0, self._deadline - time.monotonic()))
                    time.sleep(delay)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    with self._lock:
                        self._retries += 1
                    continue
                if size == 1:
                    self._finish(0, 0, "write_failed", 1)
                    return
                # isolate the bad item(s): write each half on its own
                items: list[tuple[int, Any]] = (
                    [(_SPAN, s) for s in spans]
                    + [(_USAGE, u) for u in usage]
                    + [(_EVALUATION, e) for e in evaluations]
                )
                half = size // 2
                for part in (items[:half], items[half:]):
                    self._write_records(
                        [i for k, i in part if k == _SPAN],
                        [i for k, i in part if k == _USAGE],
                        [i for k, i in part if k == _EVALUATION],
                    )
                return
            else:
                self._finish(len(spans), len(usage), None, 0, evaluations=len(evaluations))
                return

    def _open(self) -> Store:
        store = self._store
        if store is None:
            if self._opener is None:
                raise ConnectionError("the store is closed")
            store = self._store = self._opener()
            if self.store_url == "?":
                self.store_url = redact_url(str(getattr(store, "url", "?")))
        return store

    def _check_file(self, store: Store) -> None:
        """Every FILE_CHECK_INTERVAL_S at most: reopen a SQLite store whose file was deleted or
        replaced (a ``stat``). Raises like opening the store (checked again on the retry)."""
        now = time.monotonic()
        if now - self._file_checked < FILE_CHECK_INTERVAL_S:
            return
        reopen = getattr(store, "reopen_if_moved", None)
        how = reopen() if callable(reopen) else None
        self._file_checked = now
        if how is None:
            return
        with self._lock:
            self._store_reopened += 1
        if "reopened" not in self._logged_classes:
            self._logged_classes.add("reopened")
            logger.warning(
                "llmtrace store writer: the store file %s was %s while this process had it open; the "
                "store is open at that path again (created afresh if it was gone). What was written "
                "since (at most %g s of writes) is lost with the old file: stop the programs that write "
                "a store before deleting or replacing it. Further ones are counted (store_reopened), "
                "not logged",
                getattr(store, "url", self.store_url),
                how,
                FILE_CHECK_INTERVAL_S,
            )

    def _maybe_prune(self) -> None:
        """One retention batch when a pass is due or in progress (on the writer's thread)."""
        retention = self.retention_s
        if retention is None:
            return
        now = time.monotonic()
        if self._prune_pass is None:
            if now < self._next_prune:
                return
            wall = time.time_ns()
            self._prune_pass = (wall - int(retention * 1e9), wall)
        cutoff, wall = self._prune_pass
        try:
            pruned = self._open().prune_batch(cutoff, now_ns=wall, max_spans=RETENTION_BATCH_SPANS)
        except Exception as exc:
            failure = classify_failure(exc)
            with self._lock:
                self._prune_failures += 1
                self._last_prune_error = f"{type(exc).__name__}: {exc}"[:500]
            if failure == "connection":
                self._close_store()
            transient = failure in TRANSIENT_FAILURES
            self._prune_pass = None
            self._next_prune = now + (RETENTION_RETRY_S if transient else RETENTION_INTERVAL_S)
            if "retention" not in self._logged_classes:
                self._logged_classes.add("retention")
                logger.warning(
                    "llmtrace store writer: deleting data older than the retention failed (%s: %s); "
                    "trying again in %g s; further failures are counted (prune_failures), not logged",
                    type(exc).__name__,
                    exc,
                    RETENTION_RETRY_S if transient else RETENTION_INTERVAL_S,
                )
            return
        with self._lock:
            self._pruned[0] += pruned.traces
            self._pruned[1] += pruned.spans
            self._pruned[2] += pruned.usage
            self._pruned[3] += pruned.evaluations
            if not pruned.more:
                self._last_prune_time = time.time()
        if not pruned.more:
            self._prune_pass = None
            self._next_prune = now + RETENTION_INTERVAL_S

    def _cancel_write(self) -> None:
        """Ask the store to cancel the write in progress (stores with a ``cancel()`` method)."""
        cancel = getattr(self._store, "cancel", None)
        if callable(cancel):
            try:
                cancel()
            except Exception:
                logger.debug("llmtrace store writer: cancelling the write failed", exc_info=True)

    def _close_store(self) -> None:
        if self._opener is None:
            return  # not ours to reopen: keep using it
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()

    def _finish(
        self, spans: int, usage: int, reason: str | None, dropped: int, *, evaluations: int = 0
    ) -> None:
        with self._lock:
            done = spans + usage + evaluations + dropped
            self._inflight -= done
            self._finished += done
            self._written[0] += spans
            self._written[1] += usage
            self._written[2] += evaluations
            if spans or usage or evaluations:
                self._batches += 1
                self._last_write_time = time.time()
            if reason is not None:
                self._dropped[reason] += dropped
            self._done.notify_all()

    def _note_failure(self, failure: FailureClass, exc: BaseException) -> None:
        with self._lock:
            self._failures[failure] += 1
            self._last_error = f"{type(exc).__name__}: {exc}"[:500]
            self._last_error_class = failure
            self._last_error_time = time.time()
        self._log_once(failure, f"llmtrace store writer: {failure} failure writing to the store", exc)

    def _log_once(self, key: str, message: str, exc: BaseException) -> None:
        if key in self._logged_classes:
            return
        self._logged_classes.add(key)
        transient = key in TRANSIENT_FAILURES
        logger.warning(
            "%s (%s: %s); %s; further ones are counted, not logged",
            message,
            type(exc).__name__,
            exc,
            "retrying" if transient else "the items are dropped",
        )

    # ---------------------------------------------------------------- status file
    def _maybe_write_status(self, force: bool = False) -> None:
        path = self._status_path
        if path is None or (
            self._taken == 0
            and not self._refused_full
            and not self._refused_closed
            and self._last_prune_time is None
            and not self._prune_failures
        ):
            return  # nothing to report yet: leave no file behind
        now = time.monotonic()
        if not force and now - self._status_written < STATUS_INTERVAL_S:
            return
        self._status_written = now
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            # readable by its owner only, like the store it describes
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(self.snapshot().to_dict(), indent=1))
            os.replace(tmp, path)
        except OSError:
            logger.debug("llmtrace store writer: could not write %s", path, exc_info=True)

    def _prune_status_files(self) -> None:
        path = self._status_path
        if path is None or not path.parent.is_dir():
            return
        cutoff = time.time() - STATUS_MAX_AGE_S
        with contextlib.suppress(OSError):
            for old in path.parent.glob("writer-*.json"):
                if old.stat().st_mtime < cutoff:
                    old.unlink()


_live: weakref.WeakSet[StoreWriter] = weakref.WeakSet()
_fork.each_in_child(f"{__name__}.StoreWriter", _live, StoreWriter._start_afresh_in_child)
