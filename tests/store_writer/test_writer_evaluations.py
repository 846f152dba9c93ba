"""Evaluation events through the store's log processor and writer into a real SQLite store: the same
bounded queue and books as spans and usage records, and nothing raised into record_evaluation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

import llmtrace
from llmtrace import semconv as sc
from llmtrace._safety import internal_error_counts, reset_internal_errors
from llmtrace.store._exporter import StoreEvaluationProcessor, store_writer
from llmtrace.store._sqlite import SqliteStore
from llmtrace.store._writer import StoreWriter

from .test_writer_queue import balanced
from .test_writer_sqlite import _lock_database

TRACE_ID, SPAN_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "traces.db")


@pytest.fixture
def providers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TracerProvider, LoggerProvider]]:
    """A tracer and logger provider of service ``evals``, which record_evaluation uses."""
    resource = Resource.create({sc.SERVICE_NAME: "evals"})
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    handler = llmtrace.TelemetryHandler(tracer_provider=tracer_provider, logger_provider=logger_provider)
    monkeypatch.setattr("llmtrace._manual._handler", handler)
    yield tracer_provider, logger_provider
    logger_provider.shutdown()
    tracer_provider.shutdown()


def _writer(db: str, logger_provider: LoggerProvider, **kwargs: int) -> StoreWriter:
    writer = store_writer(lambda: SqliteStore(db), store_url=db, flush_interval_s=0.02, **kwargs)
    logger_provider.add_log_record_processor(StoreEvaluationProcessor(writer))
    return writer


def test_evaluation_events_are_written_and_counted(db: str, providers) -> None:
    tracer_provider, logger_provider = providers
    writer = _writer(db, logger_provider)
    with tracer_provider.get_tracer("app").start_as_current_span("chat") as span:
        llmtrace.record_evaluation("relevance", score=0.8, label="relevant", explanation="on topic")
    llmtrace.record_evaluation(
        "helpfulness", label="fail", trace_id=TRACE_ID, span_id=SPAN_ID, response_id="r-1"
    )
    llmtrace.record_evaluation("no span", score=1)  # nothing to attach it to: not the store's
    logger_provider.get_logger("app").emit(event_name="app.other", attributes={"x": 1})  # not an evaluation
    assert writer.flush(5)
    snap = balanced(writer)
    assert (snap["accepted"], snap["written"], snap["written_evaluations"]) == (2, 2, 2)
    writer.shutdown(5)
    store = SqliteStore(db, create=False)
    try:
        live_trace = format(span.get_span_context().trace_id, "032x")
        (live,) = store.get_trace(live_trace).evaluations
        assert (live.span_id, live.name, live.score, live.label, live.explanation, live.service) == (
            format(span.get_span_context().span_id, "016x"),
            "relevance",
            0.8,
            "relevant",
            "on topic",
            "evals",
        )
        (late,) = store.get_trace(TRACE_ID).evaluations
        assert (late.span_id, late.name, late.score, late.label, late.response_id) == (
            SPAN_ID,
            "helpfulness",
            None,
            "fail",
            "r-1",
        )
        assert len(late.evaluation_id) == 16 and late.time_ns > 0
    finally:
        store.close()


def test_a_full_queue_drops_evaluations_and_counts_them(db: str, providers) -> None:
    _, logger_provider = providers
    SqliteStore(db).close()  # created before its lock is taken
    writer = _writer(db, logger_provider, max_queue_size=10, max_batch_size=10)
    locked = threading.Event()
    holder = _lock_database(db, 1.0, locked)  # the writer's write waits (and retries) meanwhile
    assert locked.wait(5)
    for i in range(15):
        llmtrace.record_evaluation(f"eval {i}", score=i, trace_id=TRACE_ID, span_id=SPAN_ID)
    snap = balanced(writer)
    assert snap["dropped_by_reason"]["queue_full"] == 5 and snap["accepted"] == 15
    holder.join()
    assert writer.flush(10)
    snap = balanced(writer)
    assert (snap["written"], snap["written_evaluations"], snap["dropped"]) == (10, 10, 5)
    writer.shutdown(5)
    store = SqliteStore(db, create=False)
    try:
        assert [e.name for e in store.get_trace(TRACE_ID).evaluations] == [f"eval {i}" for i in range(10)]
    finally:
        store.close()


def test_an_event_that_is_no_evaluation_the_store_can_keep_is_dropped_as_invalid(db: str, providers) -> None:
    """A ``gen_ai.evaluation.result`` event of another emitter without ``gen_ai.evaluation.name``."""
    tracer_provider, logger_provider = providers
    writer = _writer(db, logger_provider)
    with tracer_provider.get_tracer("app").start_as_current_span("chat"):
        logger = logger_provider.get_logger("other")
        logger.emit(event_name=sc.EVENT_EVALUATION_RESULT, attributes={sc.GEN_AI_EVALUATION_SCORE_VALUE: 1.0})
        llmtrace.record_evaluation("relevance", score=1.0)
    assert writer.flush(5)
    snap = balanced(writer)
    assert (snap["dropped_by_reason"]["invalid"], snap["written_evaluations"]) == (1, 1)
    writer.shutdown(5)


def test_a_failing_processor_never_raises_into_record_evaluation(
    db: str, providers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the processor runs on the caller's thread."""
    _, logger_provider = providers
    writer = _writer(db, logger_provider)

    def broken(item: object) -> bool:
        raise RuntimeError("injected")

    monkeypatch.setattr(writer, "submit_evaluation", broken)
    reset_internal_errors()
    llmtrace.record_evaluation("relevance", score=1.0, trace_id=TRACE_ID, span_id=SPAN_ID)
    llmtrace.record_evaluation("relevance", score=0.5, trace_id=TRACE_ID, span_id=SPAN_ID)
    assert internal_error_counts() == {"llmtrace.store._exporter.StoreEvaluationProcessor.on_emit": 2}
    writer.shutdown(5)
