"""Retention: which traces are old, and deleting them in short batches.

The same code deletes for ``llmtrace prune`` and for the store writer's automatic retention
(``LLMTRACE_STORE_RETENTION``, ``configure(store_retention=...)``): :func:`delete_batch` runs one
short transaction (``Store.prune_batch``, under the lock every writer takes), which the command
repeats with a pause in between (:func:`prune`) and the writer runs one at a time between its
writes. A writer in another process therefore never waits for more than one batch.

What goes at a cutoff (a time; ``--older-than 7d`` is now minus seven days):

* a trace whose newest span ended before the cutoff, and whose root span (the span without a
  parent, which ends last) is stored: it is complete;
* a trace whose root span is not stored (it is still running, or its root is in another service
  or was lost) once its newest span ended before the cutoff and more than a day ago
  (:data:`ROOTLESS_QUIET_NS`): a trace still being written is never cut in half;
* with a trace, its spans, its usage records, its evaluations and its entries in the model and
  provider index;
* usage records of model calls whose trace is not stored (its spans were sampled out or dropped)
  when the call started before the cutoff and more than a day ago; evaluations whose trace is not
  stored alike, when they were recorded before the cutoff and more than a day ago.

Nothing is rewritten: the trace summaries of what stays are left as they are.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from llmtrace._env import env, warn_ignored
from llmtrace.store._api import Pruned, Store

if TYPE_CHECKING:
    from llmtrace.store._sql import Tx

ENV_VAR: Final = "LLMTRACE_STORE_RETENTION"
ROOTLESS_QUIET_NS: Final = 24 * 3600 * 1_000_000_000
"""How long a trace whose root span is not stored must have been quiet (no span ended) to go."""
BATCH_SPANS: Final = 1000
"""Spans (and usage records) one batch deletes at most: a few milliseconds of a writer's lock."""
_MAX_TRACES: Final = 500
_CHUNK: Final = 400
MIN_PAUSE_S: Final = 0.02
MAX_PAUSE_S: Final = 0.5
"""Between two batches of ``prune()``, as long as the batch took (within these bounds), so that
writers get the lock at least half of the time."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS: Final = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}

RetentionValue = float | int | timedelta
"""What ``configure(store_retention=...)`` takes: seconds, or a ``timedelta``."""


def parse_duration(text: str) -> float | None:
    """Seconds from ``90s``, ``15m``, ``1.5h``, ``7d``, ``2w`` (``sec`` and ``min`` too); None when
    ``text`` is not such a duration."""
    match = _DURATION.match(text)
    if match is None:
        return None
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def check_retention(value: RetentionValue | None) -> float | None:
    """The keyword's value in seconds (None: not given); raises ValueError for anything but a
    positive, finite number of seconds or ``timedelta``."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ValueError(
            f"store_retention must be a number of seconds or a datetime.timedelta, got {value!r}"
        )
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"store_retention must be positive and finite, got {value!r}")
    return seconds


def retention_seconds(value: RetentionValue | None) -> float | None:
    """How long the store keeps data: the keyword (checked), else ``LLMTRACE_STORE_RETENTION`` (a
    duration such as ``7d``, ``24h`` or ``30m``; a bad value is logged at WARNING and ignored),
    else None (keep everything)."""
    seconds = check_retention(value)
    if seconds is not None:
        return seconds
    raw = env(ENV_VAR)
    if raw is None:
        return None
    seconds = parse_duration(raw)
    if seconds is None:
        warn_ignored(ENV_VAR, raw, "is not a duration such as 7d, 24h or 30m")
        return None
    if seconds <= 0:
        warn_ignored(ENV_VAR, raw, "must be positive")
        return None
    return seconds


# --------------------------------------------------------------------------------------
# Deleting (one transaction) and counting
# --------------------------------------------------------------------------------------
def _trace_condition(cutoff_ns: int, now_ns: int, alias: str = "") -> tuple[str, list[Any]]:
    """The traces that go (``start_ns < cutoff`` lets the start index narrow the scan)."""
    quiet = min(cutoff_ns, now_ns - ROOTLESS_QUIET_NS)
    a = alias
    return (
        f"{a}start_ns < ? AND {a}end_ns < ? AND ({a}has_root = 1 OR {a}end_ns < ?)",
        [cutoff_ns, cutoff_ns, quiet],
    )


_ORPHANS = (
    "FROM usage u WHERE u.start_ns < ? AND NOT EXISTS (SELECT 1 FROM traces t WHERE t.trace_id = u.trace_id)"
)
_ORPHAN_EVALUATIONS = (
    "FROM evaluations e WHERE e.time_ns < ? "
    "AND NOT EXISTS (SELECT 1 FROM traces t WHERE t.trace_id = e.trace_id)"
)


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _keys(
    trace_id: str, request_model: Any, response_model: Any, provider: Any
) -> Iterator[tuple[str, str, str]]:
    """The ``trace_keys`` rows (kind, value, trace id) that a span or usage record added."""
    for kind, value in (("model", request_model), ("model", response_model), ("provider", provider)):
        if value:
            yield kind, value, trace_id


def _delete_keys(tx: Tx, keys: Iterable[tuple[str, str, str]]) -> None:
    rows = sorted(keys)
    if rows:
        tx.executemany("DELETE FROM trace_keys WHERE kind = ? AND value = ? AND trace_id = ?", rows)


def _delete_traces(tx: Tx, trace_ids: Sequence[str], evaluations: bool) -> tuple[int, int, int]:
    """Delete whole traces; returns how many spans, usage records and evaluations went with them
    (``evaluations``: the store has the table)."""
    spans = usage = evaluated = 0
    keys: set[tuple[str, str, str]] = set()
    for chunk in _chunks(trace_ids):
        marks = ", ".join("?" * len(chunk))
        for table in ("spans", "usage"):
            rows = tx.execute(
                f"SELECT trace_id, request_model, response_model, provider FROM {table} "
                f"WHERE trace_id IN ({marks})",
                chunk,
            )
            for row in rows:
                keys.update(_keys(*row))
            if table == "spans":
                spans += len(rows)
            else:
                usage += len(rows)
        if evaluations:
            (found,) = tx.execute(f"SELECT COUNT(*) FROM evaluations WHERE trace_id IN ({marks})", chunk)
            evaluated += int(found[0])
        for table in ("spans", "usage", "traces", *(("evaluations",) if evaluations else ())):
            tx.execute(f"DELETE FROM {table} WHERE trace_id IN ({marks})", chunk)
    _delete_keys(tx, keys)
    return spans, usage, evaluated


def _delete_some_spans(tx: Tx, trace_id: str, budget: int) -> int | None:
    """Delete ``budget`` spans of a trace that has more (its summary stays until its last batch);
    None when it has ``budget`` spans or fewer left (it can go whole)."""
    rows = tx.execute(
        "SELECT span_id, request_model, response_model, provider FROM spans WHERE trace_id = ? "
        "ORDER BY span_id LIMIT ?",
        (trace_id, budget + 1),
    )
    if len(rows) <= budget:
        return None
    rows = rows[:budget]
    for chunk in _chunks([r[0] for r in rows]):
        tx.execute(
            f"DELETE FROM spans WHERE trace_id = ? AND span_id IN ({', '.join('?' * len(chunk))})",
            (trace_id, *chunk),
        )
    # the trace is on its way out: its index entries go with its first spans
    _delete_keys(tx, {key for _, *models in rows for key in _keys(trace_id, *models)})
    return len(rows)


def _delete_orphan_usage(tx: Tx, quiet_ns: int, budget: int) -> tuple[int, bool]:
    """Delete usage records of calls whose trace is not stored; returns (deleted, more)."""
    rows = tx.execute(
        f"SELECT u.trace_id, u.span_id, u.request_model, u.response_model, u.provider {_ORPHANS} "
        "ORDER BY u.start_ns LIMIT ?",
        (quiet_ns, budget + 1),
    )
    more = len(rows) > budget
    rows = rows[:budget]
    if not rows:
        return 0, more
    tx.executemany("DELETE FROM usage WHERE trace_id = ? AND span_id = ?", [(r[0], r[1]) for r in rows])
    gone = {key for trace_id, _, *models in rows for key in _keys(trace_id, *models)}
    still: set[tuple[str, str, str]] = set()  # what the trace's other usage records keep indexed
    for chunk in _chunks(sorted({r[0] for r in rows})):
        for row in tx.execute(
            "SELECT trace_id, request_model, response_model, provider FROM usage "
            f"WHERE trace_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        ):
            still.update(_keys(*row))
    _delete_keys(tx, gone - still)
    return len(rows), more


def _delete_orphan_evaluations(tx: Tx, quiet_ns: int, budget: int) -> tuple[int, bool]:
    """Delete evaluations whose trace is not stored; returns (deleted, more)."""
    rows = tx.execute(
        f"SELECT e.trace_id, e.evaluation_id {_ORPHAN_EVALUATIONS} ORDER BY e.time_ns LIMIT ?",
        (quiet_ns, budget + 1),
    )
    more = len(rows) > budget
    rows = rows[:budget]
    if rows:
        tx.executemany("DELETE FROM evaluations WHERE trace_id = ? AND evaluation_id = ?", rows)
    return len(rows), more


def delete_batch(
    tx: Tx, cutoff_ns: int, now_ns: int, max_spans: int = BATCH_SPANS, *, evaluations: bool = True
) -> Pruned:
    """Delete some of what goes at ``cutoff_ns``: whole old traces, oldest first, up to about
    ``max_spans`` spans (a trace bigger than that loses ``max_spans`` of its spans per batch),
    then usage records and evaluations whose trace is not stored. ``more``: call again.
    ``evaluations``: the store has the evaluations table (schema version 6 on)."""
    budget = max(1, int(max_spans))
    condition, params = _trace_condition(cutoff_ns, now_ns)
    limit = min(budget, _MAX_TRACES)
    candidates = tx.execute(
        f"SELECT trace_id, span_count FROM traces WHERE {condition} ORDER BY start_ns, trace_id LIMIT ?",
        (*params, limit + 1),
    )
    whole: list[str] = []
    planned = 0
    for trace_id, span_count in candidates[:limit]:
        if whole and planned + int(span_count) > budget:
            break
        whole.append(trace_id)
        planned += int(span_count)
    if len(whole) == 1 and planned > budget:
        deleted = _delete_some_spans(tx, whole[0], budget)
        if deleted is not None:
            return Pruned(0, deleted, 0, more=True)
    traces = len(whole)
    spans, usage, evaluated = _delete_traces(tx, whole, evaluations) if whole else (0, 0, 0)
    if len(candidates) > traces:
        return Pruned(traces, spans, usage, more=True, evaluations=evaluated)
    left = budget - spans - usage - evaluated
    if left <= 0:
        return Pruned(traces, spans, usage, more=True, evaluations=evaluated)
    quiet = min(cutoff_ns, now_ns - ROOTLESS_QUIET_NS)
    orphans, more = _delete_orphan_usage(tx, quiet, left)
    left -= orphans
    if evaluations and not more:
        if left <= 0:
            return Pruned(traces, spans, usage + orphans, more=True, evaluations=evaluated)
        orphan_evaluations, more = _delete_orphan_evaluations(tx, quiet, left)
        evaluated += orphan_evaluations
    return Pruned(traces, spans, usage + orphans, more=more, evaluations=evaluated)


Read = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def count(read: Read, cutoff_ns: int, now_ns: int, *, evaluations: bool = True) -> Pruned:
    """What :func:`delete_batch`, repeated, would delete at ``cutoff_ns`` (reads only)."""
    condition, params = _trace_condition(cutoff_ns, now_ns)
    traces, spans = read(f"SELECT COUNT(*), SUM(span_count) FROM traces WHERE {condition}", params)[0]
    joined, joined_params = _trace_condition(cutoff_ns, now_ns, alias="t.")
    (usage,) = read(
        f"SELECT COUNT(*) FROM usage u JOIN traces t ON t.trace_id = u.trace_id WHERE {joined}", joined_params
    )[0]
    quiet = min(cutoff_ns, now_ns - ROOTLESS_QUIET_NS)
    (orphans,) = read(f"SELECT COUNT(*) {_ORPHANS}", (quiet,))[0]
    evaluated = 0
    if evaluations:
        (with_traces,) = read(
            f"SELECT COUNT(*) FROM evaluations e JOIN traces t ON t.trace_id = e.trace_id WHERE {joined}",
            joined_params,
        )[0]
        (orphan_evaluations,) = read(f"SELECT COUNT(*) {_ORPHAN_EVALUATIONS}", (quiet,))[0]
        evaluated = int(with_traces or 0) + int(orphan_evaluations or 0)
    return Pruned(
        int(traces or 0), int(spans or 0), int(usage or 0) + int(orphans or 0), evaluations=evaluated
    )


# --------------------------------------------------------------------------------------
# The command's loop
# --------------------------------------------------------------------------------------
def prune(
    store: Store,
    cutoff_ns: int,
    *,
    now_ns: int | None = None,
    max_spans: int = BATCH_SPANS,
    progress: Callable[[Pruned], None] | None = None,
) -> Pruned:
    """Delete everything that goes at ``cutoff_ns``, batch after batch, pausing between batches as
    long as the last one took (so writers of the store keep going); returns the totals.

    ``progress`` is called with the totals so far after each batch. An error (a busy store, a lost
    connection) propagates; the batches before it stay deleted."""
    now = time.time_ns() if now_ns is None else now_ns
    total = Pruned()
    while True:
        started = time.monotonic()
        batch = store.prune_batch(cutoff_ns, now_ns=now, max_spans=max_spans)
        total = total + batch
        if progress is not None:
            progress(total)
        if not batch.more:
            return total
        time.sleep(min(MAX_PAUSE_S, max(MIN_PAUSE_S, time.monotonic() - started)))
