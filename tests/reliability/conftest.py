from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmtrace._content import CaptureMode, ContentPolicy
from llmtrace._safety import reset_internal_errors

FUZZ_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
"""Shared by the fuzz tests: modest example counts, no deadline (payloads of MBs are slow to build)."""


@pytest.fixture
def capture_on(content_capture):  # type: ignore[no-untyped-def]
    """Content capture on spans and events, so every content path runs under the fuzzer."""
    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_AND_EVENT)
    return content_capture


class SpanTracker(SpanProcessor):
    """Counts every span started and every end reported, by span id (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started: dict[int, str] = {}
        self.ended: Counter[int] = Counter()

    def on_start(self, span: Span, parent_context: object = None) -> None:
        with self._lock:
            self.started[span.context.span_id] = span.name

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self.ended[span.context.span_id] += 1

    def open_spans(self) -> list[str]:
        with self._lock:
            return sorted(name for sid, name in self.started.items() if sid not in self.ended)

    def ended_twice(self) -> list[int]:
        with self._lock:
            return [sid for sid, n in self.ended.items() if n > 1]


@pytest.fixture
def tracker() -> SpanTracker:
    return SpanTracker()


@pytest.fixture
def tracked_provider(tracker: SpanTracker, span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """An SDK provider exporting to memory, with every span start and end counted."""
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(tracker)
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture(autouse=True)
def _clean_internal_errors() -> Iterator[None]:
    reset_internal_errors()
    yield
    reset_internal_errors()


def internal_error_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "llmtrace" and "internal error" in r.getMessage()
    ]
