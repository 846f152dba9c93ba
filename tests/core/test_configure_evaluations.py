"""configure() keeps evaluation events in the local store whenever the store is on (M4), and
``exporters_by_signal`` lists what is exported, not what was asked for (M6). Also the exporters of
the SDK's own configuration (``OTEL_TRACES_EXPORTER=store``, ``OTEL_LOGS_EXPORTER=store``): one
shared writer."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry._logs import LogRecord as APILogRecord
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

import llmtrace
from llmtrace import _exporters
from llmtrace import semconv as sc
from llmtrace._settings import settings
from tests.otlp_receivers import HttpReceiver

from .test_configure import _agent_trace, _handler, _run_python

OTEL_PREFIXES = ("OTEL_", "LLMTRACE_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(OTEL_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setattr(settings, "disabled", settings.disabled)
    yield


def _evaluations(db: Path) -> list[tuple[str, str, str, float | None, str | None, str | None]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT trace_id, span_id, name, score, label, service FROM evaluations ORDER BY time_ns"
        ).fetchall()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def test_the_default_pipeline_keeps_evaluations_in_the_store(tmp_path, monkeypatch):
    db = tmp_path / "traces.db"
    monkeypatch.setenv("LLMTRACE_STORE", str(db))
    pipeline = llmtrace.configure(service_name="evals", set_global=False)
    assert pipeline.exporters_by_signal == {"traces": ("store",), "metrics": (), "logs": ("store",)}
    handler = _handler(pipeline)
    monkeypatch.setattr("llmtrace._manual._handler", handler)
    trace_id, span_id = _agent_trace(handler)
    llmtrace.record_evaluation("relevance", score=0.75, trace_id=trace_id, span_id=span_id)  # later
    with handler.tracer.start_as_current_span("live") as live:
        llmtrace.record_evaluation("tone", label="polite")  # the active span
    pipeline.shutdown()
    assert pipeline.store_writer is not None
    assert pipeline.store_writer.snapshot().written_evaluations == 2
    live_ids = (
        format(live.get_span_context().trace_id, "032x"),
        format(live.get_span_context().span_id, "016x"),
    )
    assert _evaluations(db) == [
        (trace_id, span_id, "relevance", 0.75, None, "evals"),
        (*live_ids, "tone", None, "polite", "evals"),
    ]


def test_evaluations_go_to_the_store_and_wherever_else_events_go(tmp_path, monkeypatch):
    db, jsonl = tmp_path / "traces.db", tmp_path / "events.jsonl"
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "jsonl")
    pipeline = llmtrace.configure(store=str(db), jsonl_path=str(jsonl), set_global=False)
    assert pipeline.exporters_by_signal["logs"] == ("jsonl", "store")
    handler = _handler(pipeline)
    monkeypatch.setattr("llmtrace._manual._handler", handler)
    llmtrace.record_evaluation("relevance", score=1.0, trace_id="ab" * 16, span_id="cd" * 8)
    pipeline.shutdown()
    (line,) = [json.loads(text) for text in jsonl.read_text().splitlines()]
    assert line["event_name"] == sc.EVENT_EVALUATION_RESULT
    assert _evaluations(db) == [("ab" * 16, "cd" * 8, "relevance", 1.0, None, "llmtrace-app")]


def test_without_the_store_nothing_is_listed_for_it(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LLMTRACE_STORE", "off")
    pipeline = llmtrace.configure(set_global=False)
    assert pipeline.exporters_by_signal == {"traces": (), "metrics": (), "logs": ()}
    pipeline.shutdown()
    # OTEL_LOGS_EXPORTER=store (the SDK's own configuration) asks for the store, which is off here
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "store")
    with caplog.at_level(logging.WARNING, logger="llmtrace"):
        pipeline = llmtrace.configure(store=False, set_global=False)
    pipeline.shutdown()
    assert pipeline.exporters_by_signal["logs"] == ()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "OTEL_LOGS_EXPORTER='store'" in warning and "the store is off" in warning
    # with the store on, the variable is accepted as it is (no warning) and changes nothing
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llmtrace"):
        pipeline = llmtrace.configure(store=str(tmp_path / "t.db"), set_global=False)
    pipeline.shutdown()
    assert pipeline.exporters_by_signal["logs"] == ("store",)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_logger_provider_already_installed_gets_nothing(tmp_path):
    """As with every exporter: llmtrace adds nothing to a provider it did not create."""
    db = tmp_path / "traces.db"
    result = _run_python(
        """
        from opentelemetry import _logs
        from opentelemetry.sdk._logs import LoggerProvider
        import llmtrace

        mine = LoggerProvider()
        _logs.set_logger_provider(mine)
        pipeline = llmtrace.configure()
        processors = mine._multi_log_record_processor._log_record_processors
        print(pipeline.exporters_by_signal["logs"], len(processors))
        llmtrace.record_evaluation("relevance", score=1.0, trace_id="ab" * 16, span_id="cd" * 8)
        llmtrace.TelemetryHandler().start_chat("gpt-4o", provider="openai").stop()  # a span: the store
        """,
        {"LLMTRACE_STORE": str(db)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["()", "0"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM spans").fetchone() == (1,)
    assert _evaluations(db) == []


# --------------------------------------------------------------------------------------
# M6: exporters_by_signal says what is exported
# --------------------------------------------------------------------------------------
def test_a_signal_left_out_for_want_of_an_endpoint_is_not_listed(tmp_path, monkeypatch, caplog):
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rx.endpoint + "/v1/traces")
        with caplog.at_level(logging.WARNING, logger="llmtrace"):
            pipeline = llmtrace.configure(exporters="otlp", set_global=False)
        pipeline.shutdown()
        assert pipeline.exporters_by_signal == {"traces": ("otlp",), "metrics": (), "logs": ()}
        assert pipeline.exporters == ("otlp",)
        assert any("no OTLP endpoint is set for them" in r.getMessage() for r in caplog.records)
        pipeline = llmtrace.configure(
            exporters=["store", "otlp"], store=str(tmp_path / "t.db"), set_global=False
        )
        pipeline.shutdown()
        assert pipeline.exporters_by_signal == {
            "traces": ("store", "otlp"),
            "metrics": (),
            "logs": ("store",),
        }
        assert pipeline.exporters == ("store", "otlp")


# --------------------------------------------------------------------------------------
# The SDK's own configuration (opentelemetry-instrument)
# --------------------------------------------------------------------------------------
def _evaluation_event(name: str) -> ReadableLogRecord:
    context = set_span_in_context(
        NonRecordingSpan(SpanContext(0xAB, 0xCD, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)))
    )
    record = APILogRecord(
        timestamp=1_700_000_000_000_000_000,
        context=context,
        event_name=name,
        attributes={sc.GEN_AI_EVALUATION_NAME: "relevance", sc.GEN_AI_EVALUATION_SCORE_VALUE: 0.5},
    )
    return ReadableLogRecord(record, resource=Resource.create({sc.SERVICE_NAME: "instrumented"}))


def test_the_env_span_and_log_exporters_share_one_writer(tmp_path, monkeypatch):
    db = tmp_path / "traces.db"
    monkeypatch.setenv("LLMTRACE_STORE", str(db))
    spans = _exporters.EnvStoreSpanExporter()
    events = _exporters.EnvStoreLogExporter()
    writer = spans.writer
    try:
        assert events.writer is writer
        events.export([_evaluation_event(sc.EVENT_EVALUATION_RESULT), _evaluation_event("app.other")])
        spans.shutdown()  # the writer stays open for the events
        spans.shutdown()
        assert writer.snapshot().state == "running"
        events.export([_evaluation_event(sc.EVENT_EVALUATION_RESULT)])
        assert events.force_flush(5000)
    finally:
        events.shutdown()
    snap = writer.snapshot()
    assert (snap.state, snap.written_evaluations, snap.dropped) == ("stopped", 2, 0)
    assert _evaluations(db) == [(f"{0xAB:032x}", f"{0xCD:016x}", "relevance", 0.5, None, "instrumented")] * 2
    assert _exporters._env_stores == []
    again = _exporters.EnvStoreLogExporter()  # a new writer once the last one is shut down
    assert again.writer is not writer
    again.shutdown()
