"""``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` on the TracerProvider configure() creates
(the SDK's TracerProvider reads them when given no sampler), and what unsampled work leaves: no
exported span, no stored span row, no event; the usage record and the metrics stay, as
docs/attributes.md and docs/configuration.md say."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import llmtrace
from llmtrace import semconv as sc
from llmtrace._settings import settings
from tests.core.test_configure import _agent_trace, _handler
from tests.otlp_receivers import HttpReceiver

RATIO_ZERO = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("OTEL_", "LLMTRACE_")):
            monkeypatch.delenv(name)
    monkeypatch.setattr(settings, "disabled", settings.disabled)
    monkeypatch.setattr(settings, "content", settings.content)
    yield


def _rows(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ("spans", "usage")
        }


@pytest.mark.parametrize(
    ("variables", "sampled"),
    [
        (RATIO_ZERO, False),
        ({"OTEL_TRACES_SAMPLER": "always_off"}, False),
        ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1"}, True),
        ({}, True),
    ],
    ids=["ratio-0", "always-off", "ratio-1", "default"],
)
def test_the_sampler_variables_decide(monkeypatch, tmp_path, variables, sampled):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    store = tmp_path / "traces.db"
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        pipeline = llmtrace.configure(store=store, set_global=False)
        assert pipeline.exporters_by_signal["traces"] == ("store", "otlp")
        _agent_trace(_handler(pipeline))
        assert pipeline.force_flush(10_000)
        pipeline.shutdown()
        assert rx.call_count("traces") == (1 if sampled else 0)
        assert rx.call_count("logs") == 0  # no event without content capture, sampled or not
        # metrics count every call, sampled or not
        assert rx.wait_for_metric(sc.METRIC_USAGE_COST)[-1].value == pytest.approx(0.00725)
    assert _rows(store) == {"spans": 3 if sampled else 0, "usage": 1}  # usage: for cost, always
    stats = pipeline.stats.snapshot()
    assert (stats["exported"], stats["dropped"], stats["pending"]) == (3 if sampled else 0, 0, 0)
    assert pipeline.store_writer is not None
    assert pipeline.store_writer.snapshot().accepted == (4 if sampled else 1)


def test_ratio_zero_is_parent_based(monkeypatch):
    """``parentbased_traceidratio`` with 0 keeps a call whose remote parent was sampled (a request
    that came in traced), and only those."""
    monkeypatch.setenv("LLMTRACE_STORE", "off")
    for name, value in RATIO_ZERO.items():
        monkeypatch.setenv(name, value)
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        pipeline = llmtrace.configure(set_global=False)
        assert pipeline.tracer_provider.sampler.get_description().startswith(  # type: ignore[attr-defined]
            "ParentBased{root:TraceIdRatioBased{0.0}"
        )
        handler = _handler(pipeline)
        trace_id, parent_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
        for flags in (TraceFlags.SAMPLED, TraceFlags.DEFAULT):
            remote = SpanContext(trace_id, parent_id, is_remote=True, trace_flags=TraceFlags(flags))
            parent = trace.set_span_in_context(NonRecordingSpan(remote))
            handler.start_chat("gpt-4o", provider="openai", parent=parent).stop()
        handler.start_chat("gpt-4o", provider="openai").stop()  # a root: ratio 0
        assert pipeline.force_flush(10_000)
        pipeline.shutdown()
        (span,) = rx.spans()
    assert (span.name, span.trace_id, span.parent_span_id) == (
        "chat gpt-4o",
        format(trace_id, "032x"),
        format(parent_id, "016x"),
    )


def test_no_content_event_for_a_sampled_out_call(monkeypatch):
    monkeypatch.setenv("LLMTRACE_STORE", "off")
    for name, value in RATIO_ZERO.items():
        monkeypatch.setenv(name, value)
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        pipeline = llmtrace.configure(capture_content="EVENT_ONLY", set_global=False)
        _agent_trace(_handler(pipeline))
        assert pipeline.force_flush(10_000)
        pipeline.shutdown()
        assert rx.call_count("traces") == 0
        assert [log.event_name for log in rx.logs()] == []
