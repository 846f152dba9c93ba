"""Flush and shutdown of llmtrace's batch processors stay bounded when every export hangs."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from llmtrace import _exporters as exporters_module
from llmtrace._exporters import (
    BoundedBatchLogRecordProcessor,
    BoundedLogExporter,
    CountingBatchSpanProcessor,
    CountingSpanExporter,
    ExportDeadlines,
    ExportStats,
)

EXPORT_S = 0.2
"""How long each export of the fakes takes (a collector that answers after the timeout)."""
BATCHES = 20


class SlowSpanExporter(SpanExporter):
    def __init__(self, ok: bool) -> None:
        self.ok = ok
        self.calls = 0
        self.started = 0
        self.spans = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self.started += 1
        time.sleep(EXPORT_S)
        with self._lock:
            self.calls += 1
            self.spans += len(spans)
        return SpanExportResult.SUCCESS if self.ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass


class SlowLogExporter(LogRecordExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        time.sleep(EXPORT_S)
        self.calls += 1
        return LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _span_pipeline(
    ok: bool, export_timeout_s: float = EXPORT_S
) -> tuple[TracerProvider, SlowSpanExporter, ExportStats]:
    inner = SlowSpanExporter(ok)
    provider, stats = _pipeline_with(inner, export_timeout_s)
    return provider, inner, stats


def _pipeline_with(inner: SpanExporter, export_timeout_s: float) -> tuple[TracerProvider, ExportStats]:
    """``10 * BATCHES`` spans queued for ``inner``, batches of 10, nothing sent before a flush."""
    stats = ExportStats()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(
        CountingBatchSpanProcessor(
            CountingSpanExporter(inner, stats),
            stats,
            max_queue_size=2048,
            schedule_delay_millis=60_000,  # nothing leaves the queue before the flush
            max_export_batch_size=10,
            export_timeout_millis=export_timeout_s * 1000,
        )
    )
    tracer = provider.get_tracer("t")
    for _ in range(10 * BATCHES):
        with tracer.start_as_current_span("s"):
            pass
    return provider, stats


@pytest.mark.parametrize("flush", [False, True], ids=["shutdown", "force_flush"])
@pytest.mark.parametrize("slow", [False, True], ids=["two-quick-failures", "one-slow-failure"])
def test_failing_exports_are_given_up_once_the_collector_is_seen_down(flush, slow, monkeypatch):
    if slow:  # each fake export takes EXPORT_S: make that count as waiting on a dead collector
        monkeypatch.setattr(exporters_module, "SLOW_FAILURE_S", EXPORT_S / 2)
    deadline_s = 5 * EXPORT_S  # far enough for the first exports to start whatever the machine's load
    provider, inner, stats = _span_pipeline(ok=False, export_timeout_s=deadline_s)
    # the SDK's worker may already have started exporting a full batch before the flush
    early = inner.started
    started = time.perf_counter()
    if flush:
        assert not provider.force_flush(int(deadline_s * 1000))  # nothing was delivered
    else:
        provider.shutdown()
    took = time.perf_counter() - started
    provider.shutdown()
    assert took < deadline_s  # neither one wait per batch nor a wait for the deadline
    # an early export that fails inside the window counts towards "seen down" too
    assert (1 if slow else 2) <= inner.calls <= (1 if slow else 2) + early < BATCHES
    assert stats.snapshot() == {
        "exported": 0,
        "failed": 10 * BATCHES,
        "dropped_queue_full": 0,
        "dropped": 10 * BATCHES,
        "pending": 0,
    }


class RejectsFirstBatch(SpanExporter):
    """A collector that quickly rejects one batch (say, an oversized one) and takes the others."""

    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        return SpanExportResult.FAILURE if self.calls == 1 else SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@pytest.mark.parametrize("flush", [False, True], ids=["shutdown", "force_flush"])
def test_one_quickly_rejected_batch_does_not_give_up_the_others(flush):
    inner = RejectsFirstBatch()
    provider, stats = _pipeline_with(inner, export_timeout_s=5.0)
    if flush:
        provider.force_flush(5_000)
    provider.shutdown()
    assert inner.calls == BATCHES
    assert stats.snapshot() == {
        "exported": 10 * (BATCHES - 1),
        "failed": 10,
        "dropped_queue_full": 0,
        "dropped": 10,
        "pending": 0,
    }


def test_a_slow_healthy_collector_gets_until_the_deadline():
    provider, inner, stats = _span_pipeline(ok=True, export_timeout_s=5 * EXPORT_S)
    started = time.perf_counter()
    provider.shutdown()  # exports until the deadline; the one under way at it still ends
    took = time.perf_counter() - started
    assert took < 10 * EXPORT_S
    assert 1 <= inner.calls <= 6  # about 5
    snap = stats.snapshot()
    assert snap["exported"] == inner.spans and snap["failed"] == 10 * BATCHES - inner.spans
    assert snap["pending"] == 0


def test_a_flush_deadline_ends_with_the_flush():
    provider, inner, stats = _span_pipeline(ok=False)
    provider.force_flush(int(5 * EXPORT_S * 1000))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("after"):
        pass
    provider.force_flush(10_000)  # a new flush tries the collector again
    assert inner.calls == 3  # two in the first flush (two failures in a row), one in the second
    provider.shutdown()
    assert stats.snapshot()["failed"] == 10 * BATCHES + 1


def test_deadlines_open_and_close():
    deadlines = ExportDeadlines()
    deadlines.note(False, 10.0)
    assert not deadlines.give_up()  # no deadline open: failures do not count
    with deadlines.window(10):
        assert not deadlines.give_up()
        deadlines.note(True)
        deadlines.note(False)
        assert not deadlines.give_up()  # one quick failure: the next batch is still tried
        deadlines.note(True)
        deadlines.note(False)
        assert not deadlines.give_up()  # not two in a row
        deadlines.note(False)
        assert deadlines.give_up()
    assert not deadlines.give_up()
    with deadlines.window(10):
        deadlines.note(False, exporters_module.SLOW_FAILURE_S)
        assert deadlines.give_up()  # one slow failure: the collector is hanging or refusing
    with deadlines.window(0):
        assert deadlines.give_up()
    deadlines.close(10)
    assert not deadlines.give_up()
    deadlines.note(False)
    deadlines.note(False)
    assert deadlines.give_up()


def test_log_processor_shutdown_is_bounded():
    inner = SlowLogExporter()
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(
        BoundedBatchLogRecordProcessor(
            BoundedLogExporter(inner),
            max_queue_size=2048,
            schedule_delay_millis=60_000,
            max_export_batch_size=10,
            export_timeout_millis=5 * EXPORT_S * 1000,
        )
    )
    logger = provider.get_logger("t")
    for i in range(10 * BATCHES):
        logger.emit(body=f"event {i}")
    started = time.perf_counter()
    provider.shutdown()
    assert time.perf_counter() - started < 5 * EXPORT_S
    assert inner.calls == 2  # two failures in a row: the rest is given up


class HangingSpanExporter(SpanExporter):
    """An exporter whose every export outlives the export timeout (a longer exporter timeout)."""

    def __init__(self, hang_s: float) -> None:
        self.hang_s = hang_s
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        time.sleep(self.hang_s)
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass


def test_shutdown_waits_at_most_twice_the_export_timeout_for_an_export_under_way():
    """The SDK waits up to 30 s for the export under way; llmtrace's processor waits twice the
    export timeout, then gives up what is still queued (counted as failed, nothing left pending)."""
    inner = HangingSpanExporter(hang_s=10 * EXPORT_S)
    provider, stats = _pipeline_with(inner, export_timeout_s=EXPORT_S)
    started = time.perf_counter()
    provider.shutdown()
    took = time.perf_counter() - started
    assert took < 2 * EXPORT_S + 0.5
    assert inner.calls == 1
    snap = stats.snapshot()
    assert snap["pending"] == 0 and snap["exported"] == 0
    assert snap["failed"] == 10 * BATCHES - 10  # the batch in flight is counted when it ends
