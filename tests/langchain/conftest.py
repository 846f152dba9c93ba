from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llmtrace_langchain import LangChainInstrumentor, LLMTraceCallbackHandler
from opentelemetry.sdk.trace import ReadableSpan


@pytest.fixture
def handler(tracer_provider, meter_provider) -> LLMTraceCallbackHandler:
    return LLMTraceCallbackHandler(tracer_provider=tracer_provider, meter_provider=meter_provider)


@pytest.fixture
def instrumented(tracer_provider, meter_provider) -> Iterator[LangChainInstrumentor]:
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture(autouse=True)
def _no_detach_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    assert "Failed to detach context" not in caplog.text


@pytest.fixture(autouse=True)
def _no_global_cache() -> Iterator[None]:
    from langchain_core.globals import set_llm_cache

    yield
    set_llm_cache(None)


def tree(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> list[tuple[str, str | None]]:
    """(span name, parent span name) pairs, in end order."""
    names = {s.context.span_id: s.name for s in spans}
    return [(s.name, names.get(s.parent.span_id) if s.parent else None) for s in spans]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def events(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    return [(e.name, dict(e.attributes or {})) for e in span.events]
