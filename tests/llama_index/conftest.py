from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.llms import MockLLM
from llmtrace_llama_index import LlamaIndexInstrumentor
from opentelemetry.sdk.trace import ReadableSpan

from llmtrace._content import CaptureMode, ContentPolicy
from llmtrace._safety import reset_internal_errors
from tests.llama_index.openai_server import FakeOpenAI


@pytest.fixture
def instrumentor(tracer_provider, meter_provider, logger_provider) -> Iterator[LlamaIndexInstrumentor]:
    reset_internal_errors()
    instrumentor = LlamaIndexInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, logger_provider=logger_provider
    )
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture
def capture(content_capture):
    """Content capture on span attributes for this test."""
    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_ONLY)
    return content_capture


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def mock_llm() -> MockLLM:
    return MockLLM(max_tokens=3)


def tree(spans: Any) -> list[str]:
    """Finished spans as an indented outline in start order (children under their parents)."""
    spans = list(spans)
    by_id = {s.context.span_id: s for s in spans}
    children: dict[int | None, list[ReadableSpan]] = {}
    for s in spans:
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in by_id else None
        children.setdefault(parent, []).append(s)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: x.start_time or 0):
            lines.append("  " * depth + s.name)
            walk(s.context.span_id, depth + 1)

    walk(None, 0)
    return lines


def by_name(spans: Any, name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def one(spans: Any, name: str) -> ReadableSpan:
    found = by_name(spans, name)
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    return child.parent is not None and child.parent.span_id == parent.context.span_id


def steps(span: ReadableSpan) -> list[tuple[Any, ...]]:
    from llmtrace import semconv

    return [
        (
            e.attributes.get(semconv.LLMTRACE_AGENT_STEP_INDEX),
            e.attributes.get(semconv.LLMTRACE_AGENT_STEP_KIND),
            e.attributes.get(semconv.GEN_AI_TOOL_NAME),
            e.attributes.get(semconv.GEN_AI_TOOL_CALL_ID),
        )
        for e in span.events
        if e.name == semconv.LLMTRACE_AGENT_STEP_EVENT
    ]


def open_runs():
    """The run map of the installed llmtrace span handler (exactly one must be installed)."""
    from llama_index_instrumentation import get_dispatcher
    from llmtrace_llama_index._span_handler import LlamaIndexSpanHandler

    (handler,) = [h for h in get_dispatcher().span_handlers if isinstance(h, LlamaIndexSpanHandler)]
    return handler.runs.nodes
