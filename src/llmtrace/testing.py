"""pytest fixtures for testing code traced by llmtrace (registered as a pytest plugin).

Every fixture builds explicit providers and never touches the global ones::

    def test_my_agent(tracer_provider, meter_provider, span_exporter, metric_reader):
        handler = LLMTraceCallbackHandler(tracer_provider=tracer_provider, meter_provider=meter_provider)
        my_agent.invoke("hi", config={"callbacks": [handler]})
        spans = span_exporter.get_finished_spans()
        assert metric_points(metric_reader, "gen_ai.client.token.usage")
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmtrace._handler import TelemetryHandler
from llmtrace._settings import Settings, settings

__all__ = [
    "content_capture",
    "log_exporter",
    "logger_provider",
    "meter_provider",
    "metric_points",
    "metric_reader",
    "span_exporter",
    "spans_by_name",
    "telemetry_handler",
    "tracer_provider",
]


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(metric_reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[metric_reader], shutdown_on_exit=False)
    yield provider
    provider.shutdown()


@pytest.fixture
def log_exporter() -> InMemoryLogRecordExporter:
    return InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]


@pytest.fixture
def logger_provider(log_exporter: InMemoryLogRecordExporter) -> Iterator[LoggerProvider]:
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def telemetry_handler(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, logger_provider: LoggerProvider
) -> TelemetryHandler:
    """A handler bound to the in-memory providers above."""
    return TelemetryHandler(
        tracer_provider=tracer_provider, meter_provider=meter_provider, logger_provider=logger_provider
    )


@pytest.fixture
def content_capture() -> Iterator[Settings]:
    """The process-wide settings, restored after the test (set ``.content`` to capture content)."""
    saved = (
        settings.content,
        settings.run_ttl_s,
        settings.max_open_runs,
        settings.disabled,
        settings.error_messages,
    )
    yield settings
    (
        settings.content,
        settings.run_ttl_s,
        settings.max_open_runs,
        settings.disabled,
        settings.error_messages,
    ) = saved


def metric_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """All data points of the metric ``name`` collected so far."""
    data = reader.get_metrics_data()
    points: list[Any] = []
    if data is None:
        return points
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    points.extend(metric.data.data_points)
    return points


def spans_by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, ReadableSpan]:
    """Finished spans keyed by name (a name that occurs twice raises, to keep tests exact)."""
    result: dict[str, ReadableSpan] = {}
    for span in spans:
        if span.name in result:
            raise AssertionError(f"span name {span.name!r} occurs more than once")
        result[span.name] = span
    return result
