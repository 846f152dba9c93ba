"""Exporters llmtrace adds to the SDK's: a JSONL file sink, drop counting around any exporter, and
batch processors whose flush and shutdown are bounded even when the collector hangs."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from opentelemetry.context import Context
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, Span
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from llmtrace import _fork
from llmtrace._safety import report_internal_error


@dataclass
class _Queue:
    """Spans waiting in one batch processor's queue (its exporter takes them out)."""

    pending: int = 0


@dataclass
class ExportStats:
    """What happened to ended spans: exported, failed in export, or dropped because the queue was
    full. With several exporters each counts per destination (a span sent to two counts twice)."""

    exported: int = 0
    failed: int = 0
    """Spans in batches the exporter could not deliver (collector down, refusing, timing out),
    including batches given up because a flush or the shutdown ran out of time."""
    dropped_queue_full: int = 0
    """Spans a batch processor discarded because its queue was full."""
    _queues: list[_Queue] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=_fork.lock, repr=False)

    @property
    def dropped(self) -> int:
        """Every span that did not reach the collector."""
        return self.failed + self.dropped_queue_full

    def queue(self) -> _Queue:
        """A pending count for one more batch processor."""
        made = _Queue()
        with self._lock:
            self._queues.append(made)
        return made

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "exported": self.exported,
                "failed": self.failed,
                "dropped_queue_full": self.dropped_queue_full,
                "dropped": self.failed + self.dropped_queue_full,
                "pending": sum(queue.pending for queue in self._queues),
            }

    def reset(self) -> None:
        """Start counting again (a forked child: the SDK empties its processors' queues there, and
        what the parent exported is the parent's)."""
        with self._lock:
            self.exported = self.failed = self.dropped_queue_full = 0
            for queue in self._queues:
                queue.pending = 0


SLOW_FAILURE_S = 0.5
"""A failed export that took this long was waiting on the collector (hanging, or retrying a refused
connection or a 503 until its timeout): the next batch would wait as long."""


class ExportDeadlines:
    """Deadlines of the flushes and the shutdown in progress, for an exporter under a batch processor.

    The SDK's batch processor exports everything still queued at shutdown (and on force_flush)
    one batch after another, each batch waiting up to the export timeout when the collector
    hangs, whatever deadline was asked for (``export_timeout_millis`` is unused there): with a
    hung collector, shutting down a full queue took tens of seconds. While a deadline is open,
    a batch is given up at once (without reaching the exporter) when the deadline has passed, or
    when the collector has shown it is down since the deadline opened: one export failed slowly
    (``SLOW_FAILURE_S``), or two in a row failed. One quick failure (a batch the collector rejects,
    such as an oversized one) does not stop the batches after it.
    """

    def __init__(self) -> None:
        self._lock = _fork.lock()
        self._deadlines: list[float] = []
        self._failed = False
        self._failures_in_a_row = 0
        self.failures = 0
        """Batches that failed or were given up, ever (a flush compares it before and after)."""

    @contextmanager
    def window(self, timeout_s: float) -> Iterator[None]:
        """A deadline ``timeout_s`` from now, for the duration of a flush."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            self._deadlines.append(deadline)
        try:
            yield
        finally:
            with self._lock:
                self._deadlines.remove(deadline)
                if not self._deadlines:
                    self._failed = False
                    self._failures_in_a_row = 0

    def close(self, timeout_s: float) -> None:
        """A deadline ``timeout_s`` from now that never ends (shutdown)."""
        with self._lock:
            self._deadlines.append(time.monotonic() + max(0.0, timeout_s))

    def give_up(self) -> bool:
        """Whether the next batch should be failed without exporting it (then it counts as failed)."""
        with self._lock:
            if not self._deadlines:
                return False
            if self._failed or time.monotonic() >= min(self._deadlines):
                self.failures += 1
                return True
            return False

    def note(self, ok: bool, elapsed_s: float = 0.0) -> None:
        """Record the outcome of an export that took ``elapsed_s`` (it counts only while a deadline
        is open)."""
        with self._lock:
            if not ok:
                self.failures += 1
            if not self._deadlines:
                return
            if ok:
                self._failures_in_a_row = 0
                return
            self._failures_in_a_row += 1
            if self._failures_in_a_row >= 2 or elapsed_s >= SLOW_FAILURE_S:
                self._failed = True

    @contextmanager
    def timed(self) -> Iterator[list[bool]]:
        """Time an export; the caller appends its outcome (True when delivered) to the yielded list,
        and ``note`` gets it with the time taken (no outcome appended: failed)."""
        outcome: list[bool] = []
        started = time.monotonic()
        try:
            yield outcome
        finally:
            self.note(bool(outcome and outcome[0]), time.monotonic() - started)


class CountingSpanExporter(SpanExporter):
    """Wraps an exporter, counting delivered and failed spans; never lets an exception escape.

    Batches given up because a flush or the shutdown ran out of time (:class:`ExportDeadlines`)
    count as failed."""

    def __init__(self, inner: SpanExporter, stats: ExportStats) -> None:
        self.inner = inner
        self._stats = stats
        self.queue = stats.queue()
        self.deadlines = ExportDeadlines()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        count = len(spans)
        stats = self._stats
        queue = self.queue
        with stats._lock:
            queue.pending = max(0, queue.pending - count)
        if self.deadlines.give_up():
            result = SpanExportResult.FAILURE
        else:
            with self.deadlines.timed() as outcome:
                try:
                    result = self.inner.export(spans)
                except Exception as exc:
                    report_internal_error(f"{type(self.inner).__name__}.export", exc)
                    result = SpanExportResult.FAILURE
                outcome.append(result is SpanExportResult.SUCCESS)
        with stats._lock:
            if result is SpanExportResult.SUCCESS:
                stats.exported += count
            else:
                stats.failed += count
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _BoundedBatchProcessor:
    """The part the span and log batch processors share (listed before the SDK's processor in the
    bases): batch options checked the same way, and flush and shutdown bounded by the exporter's
    :class:`ExportDeadlines` (a flush without a timeout gets the export timeout).

    ``force_flush`` returns whether everything was delivered: False when a batch failed or was
    given up during the flush (the SDK's processor says True whatever happened). ``shutdown`` is
    idempotent and waits at most twice the export timeout (the SDK's waits up to 30 s for an export
    under way)."""

    def __init__(
        self,
        exporter: CountingSpanExporter | BoundedLogExporter,
        *,
        max_queue_size: int,
        schedule_delay_millis: float,
        max_export_batch_size: int,
        export_timeout_millis: float,
    ) -> None:
        super().__init__(  # type: ignore[call-arg]  # the SDK processor after this class in the MRO
            exporter,
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=min(max_export_batch_size, max_queue_size),
            export_timeout_millis=export_timeout_millis,
        )
        self._deadlines = exporter.deadlines
        self._export_timeout_s = export_timeout_millis / 1000
        self._shutdown_once = _fork.lock()
        self._shut_down = False

    @property
    def deadlines(self) -> ExportDeadlines:
        return self._deadlines

    def shutdown(self) -> None:
        with self._shutdown_once:
            if self._shut_down:
                return
            self._shut_down = True
        self._deadlines.close(self._export_timeout_s)
        batch_processor = getattr(self, "_batch_processor", None)
        if batch_processor is None:  # pragma: no cover - an SDK without the shared batch processor
            super().shutdown()  # type: ignore[misc]
            return
        batch_processor.shutdown(timeout_millis=2 * self._export_timeout_s * 1000)
        # The export under way outlived that (an exporter timeout longer than the export timeout):
        # the SDK leaves what is still queued there; it is given up (counted as failed) instead.
        queue = batch_processor._queue
        left = []
        while queue:
            try:
                left.append(queue.pop())
            except IndexError:
                break
        if left:
            batch_processor._exporter.export(left)

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        timeout_s = self._export_timeout_s if timeout_millis is None else timeout_millis / 1000
        failures = self._deadlines.failures
        with self._deadlines.window(timeout_s):
            flushed = bool(super().force_flush(timeout_millis))  # type: ignore[misc]
        return flushed and self._deadlines.failures == failures


class CountingBatchSpanProcessor(_BoundedBatchProcessor, BatchSpanProcessor):
    """A BatchSpanProcessor that counts the spans its full queue drops, and whose flush and
    shutdown end in about the export timeout even when the collector hangs.

    The SDK's batch processor discards a span when ``max_queue_size`` spans wait; this
    mirrors that rule with a pending count that the counting exporter decrements when a
    batch leaves the queue. At shutdown, what the collector cannot take within
    ``export_timeout_millis`` is counted as failed instead of being tried batch by batch.
    """

    def __init__(
        self,
        exporter: CountingSpanExporter,
        stats: ExportStats,
        *,
        max_queue_size: int,
        schedule_delay_millis: float,
        max_export_batch_size: int,
        export_timeout_millis: float,
    ) -> None:
        super().__init__(
            exporter,
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=max_export_batch_size,
            export_timeout_millis=export_timeout_millis,
        )
        self._stats = stats
        self._queue = exporter.queue
        self._max_queue = max_queue_size

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        stats = self._stats
        queue = self._queue
        with stats._lock:
            if queue.pending >= self._max_queue:
                stats.dropped_queue_full += 1
            else:
                queue.pending += 1
        super().on_end(span)


class _JsonlFile:
    """One append-only JSONL file shared by the span and log exporters (one line per item)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = _fork.lock()
        self._file: IO[str] | None = None
        _jsonl_files.add(self)

    def _after_fork_in_child(self) -> None:
        """The inherited file object may hold part of a line the parent was writing: never flush
        or close it here (that would write it twice); the child opens the file again."""
        if self._file is not None:
            _inherited_files.append(self._file)
            self._file = None

    def write_lines(self, lines: list[str]) -> None:
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # created readable by its owner only: it may hold prompts (content capture); a file
                # that already exists keeps its mode
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self._file = os.fdopen(fd, "a", encoding="utf-8")
            self._file.write("".join(line + "\n" for line in lines))
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class JsonlSpanExporter(SpanExporter):
    """Appends each span as one line of JSON (the SDK's span JSON) to a file."""

    def __init__(self, sink: _JsonlFile) -> None:
        self._sink = sink

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self._sink.write_lines([span.to_json(indent=None) for span in spans])
        except OSError as exc:
            report_internal_error(f"{__name__}.JsonlSpanExporter.export", exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._sink.close()


class JsonlLogExporter(LogRecordExporter):
    """Appends each log record or event (evaluations, inference details) as one JSON line."""

    def __init__(self, sink: _JsonlFile) -> None:
        self._sink = sink

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        try:
            self._sink.write_lines([record.to_json(indent=None) for record in batch])
        except OSError as exc:
            report_internal_error(f"{__name__}.JsonlLogExporter.export", exc)
            return LogRecordExportResult.FAILURE
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        self._sink.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class BoundedLogExporter(LogRecordExporter):
    """Wraps a log exporter so that flushes and shutdown give up in time (:class:`ExportDeadlines`)."""

    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner
        self.deadlines = ExportDeadlines()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if self.deadlines.give_up():
            return LogRecordExportResult.FAILURE
        with self.deadlines.timed() as outcome:
            result = self.inner.export(batch)  # an exception is the batch processor's to log
            outcome.append(result is LogRecordExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingMetricExporter(MetricExporter):
    """Wraps a metric exporter, counting failed exports (the SDK's metric reader drops the result,
    so a flush could not tell whether the metrics were delivered); never lets an exception escape."""

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self._lock = _fork.lock()
        self.failures = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:
            report_internal_error(f"{type(self.inner).__name__}.export", exc)
            result = MetricExportResult.FAILURE
        if result is not MetricExportResult.SUCCESS:
            with self._lock:
                self.failures += 1
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class BoundedBatchLogRecordProcessor(_BoundedBatchProcessor, BatchLogRecordProcessor):
    """A BatchLogRecordProcessor whose flush and shutdown end in about the export timeout
    (give it a :class:`BoundedLogExporter`)."""


_jsonl_files: weakref.WeakSet[_JsonlFile] = weakref.WeakSet()
_inherited_files: list[IO[str]] = []
"""Files a forked child inherited: kept so that their finalizers never flush them."""
_fork.each_in_child(f"{__name__}._JsonlFile", _jsonl_files, _JsonlFile._after_fork_in_child)


def jsonl_exporters(path: str | os.PathLike[str]) -> tuple[JsonlSpanExporter, JsonlLogExporter]:
    sink = _JsonlFile(path)
    return JsonlSpanExporter(sink), JsonlLogExporter(sink)


# --------------------------------------------------------------------------------------------
# The exporters' names in the SDK's own configuration (``opentelemetry-instrument``)
# --------------------------------------------------------------------------------------------
# The SDK's configurator looks every name of ``OTEL_<SIGNAL>_EXPORTER`` up in an entry-point
# group (``opentelemetry_traces_exporter``, ``opentelemetry_logs_exporter``), builds each class
# with no arguments and wraps it in its own batch processor. These classes build the exporter
# ``configure()`` would, from the same variables (pyproject.toml registers them).

_env_sinks: dict[str, _JsonlFile] = {}


def _env_jsonl_file() -> _JsonlFile:
    """The file of ``LLMTRACE_JSONL_PATH`` (else ``.llmtrace/traces.jsonl``), one per path: spans
    and events share it, as with ``configure()``."""
    from llmtrace._config import jsonl_file_path

    path = os.fspath(jsonl_file_path())
    return _env_sinks.setdefault(path, _JsonlFile(path))


class EnvJsonlSpanExporter(JsonlSpanExporter):
    """``OTEL_TRACES_EXPORTER=jsonl`` for the SDK: each span as a JSON line in
    ``LLMTRACE_JSONL_PATH`` (default ``.llmtrace/traces.jsonl``)."""

    def __init__(self) -> None:
        super().__init__(_env_jsonl_file())


class EnvJsonlLogExporter(JsonlLogExporter):
    """``OTEL_LOGS_EXPORTER=jsonl`` for the SDK: each event as a JSON line in the same file."""

    def __init__(self) -> None:
        super().__init__(_env_jsonl_file())


@dataclass
class _EnvStore:
    """The store's writer of the SDK's own configuration, shared by ``OTEL_TRACES_EXPORTER=store``
    and ``OTEL_LOGS_EXPORTER=store`` (one writer, one queue per process, as with ``configure()``)."""

    writer: Any
    shutdown_timeout_s: float
    """How long the writer's shutdown may take (``OTEL_BSP_EXPORT_TIMEOUT``, else 5 s; at least 1 s)."""
    sink: Any
    """Its usage sink (added already): usage records go to the store with the spans."""
    users: int = 0


_env_store_lock = _fork.lock()
_env_stores: list[_EnvStore] = []
"""The shared writer while an exporter uses it (at most one)."""


def _env_store() -> _EnvStore:
    """The store's writer as ``configure()`` makes it from the environment (``LLMTRACE_STORE``,
    else ``.llmtrace/traces.db``; ``LLMTRACE_STORE_RETENTION``), made by the first exporter that
    needs it and shared by the others until the last one shuts down (:func:`_release_env_store`)."""
    from opentelemetry.sdk.resources import Resource

    from llmtrace import semconv
    from llmtrace._config import DEFAULT_EXPORT_TIMEOUT_MS, open_store_writer, store_shutdown_s
    from llmtrace._env import env_timeout_ms
    from llmtrace._usage import add_usage_sink
    from llmtrace.store._exporter import StoreUsageSink

    with _env_store_lock:
        if _env_stores:
            shared = _env_stores[0]
        else:
            writer = open_store_writer()
            # the SDK's resource comes from the same variables (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES)
            service = Resource.create().attributes.get(semconv.SERVICE_NAME)
            sink = StoreUsageSink(writer, service=service)
            add_usage_sink(sink)
            writer.register_metrics()  # on the global MeterProvider, once the SDK installs it
            timeout_ms = env_timeout_ms("OTEL_BSP_EXPORT_TIMEOUT") or DEFAULT_EXPORT_TIMEOUT_MS
            shared = _EnvStore(writer, store_shutdown_s(timeout_ms), sink)
            _env_stores.append(shared)
        shared.users += 1
        return shared


def _release_env_store(shared: _EnvStore) -> None:
    """One exporter is done with the shared writer; the last one removes its usage sink and shuts
    it down (what is queued is written, within its shutdown time)."""
    from llmtrace._usage import remove_usage_sink

    with _env_store_lock:
        shared.users -= 1
        if shared.users > 0:
            return
        if shared in _env_stores:
            _env_stores.remove(shared)
    remove_usage_sink(shared.sink)
    shared.writer.shutdown(shared.shutdown_timeout_s)


class _EnvStoreUser:
    """Holds the shared writer from construction until ``shutdown()`` (once)."""

    def __init__(self) -> None:
        self._shared = _env_store()
        self.writer = self._shared.writer
        self._released = False
        self._release_lock = _fork.lock()

    def _release(self) -> None:
        with self._release_lock:
            if self._released:
                return
            self._released = True
        _release_env_store(self._shared)


class EnvStoreSpanExporter(_EnvStoreUser, SpanExporter):
    """``OTEL_TRACES_EXPORTER=store`` for the SDK: spans and usage records to the local store that
    ``configure()`` would use (``LLMTRACE_STORE``, else ``.llmtrace/traces.db``)."""

    def __init__(self) -> None:
        from llmtrace.store._exporter import StoreSpanExporter

        super().__init__()
        self._inner = StoreSpanExporter(self.writer, shutdown_timeout_s=self._shared.shutdown_timeout_s)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export(spans)

    def shutdown(self) -> None:
        self._release()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class EnvStoreLogExporter(_EnvStoreUser, LogRecordExporter):
    """``OTEL_LOGS_EXPORTER=store`` for the SDK: evaluation events (``gen_ai.evaluation.result``,
    ``llmtrace.record_evaluation``) to the local store, through the writer that
    ``OTEL_TRACES_EXPORTER=store`` uses; other events and log records are left alone."""

    def __init__(self) -> None:
        from llmtrace.store._exporter import StoreEvaluationExporter

        super().__init__()
        self._inner = StoreEvaluationExporter(self.writer)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return self._inner.export(batch)

    def shutdown(self) -> None:
        self._release()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
