from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    ToolCallBlock,
)
from llama_index.core.llms import MockFunctionCallingLLM, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llmtrace_llama_index import LlamaIndexInstrumentor
from llmtrace_llama_index._lazy import LazyStreams
from opentelemetry.sdk.trace import ReadableSpan

from llmtrace import semconv
from llmtrace._content import CaptureMode, ContentPolicy
from llmtrace._safety import reset_internal_errors
from llmtrace.testing import metric_points
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


class UsageStreamLLM(MockLLM):
    """A ``CustomLLM`` whose stream reports usage on its last chunk. Its ``astream_chat`` and
    ``astream_complete`` (``CustomLLM``'s) return a generator that calls the sync
    ``stream_complete`` only when first iterated, after their dispatcher span returned."""

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text="a", delta="a")
            usage = {"prompt_tokens": 5, "completion_tokens": 2}
            yield CompletionResponse(text="a b", delta=" b", raw={"id": "r-1", "usage": usage})

        return gen()


def assert_counted_once(span: ReadableSpan, metric_reader: Any) -> None:
    """The streamed model span of one ``UsageStreamLLM`` call, and its metrics recorded once."""
    assert span.attributes[semconv.GEN_AI_REQUEST_STREAM] is True
    assert span.attributes[semconv.LLMTRACE_STREAM_CHUNKS] == 2
    assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 5
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 2
    assert span.attributes[semconv.GEN_AI_RESPONSE_ID] == "r-1"
    operation = span.attributes[semconv.GEN_AI_OPERATION_NAME]

    def points(name: str) -> list[Any]:  # the model's (an embeddings call has its own)
        found = metric_points(metric_reader, name)
        return [p for p in found if p.attributes[semconv.GEN_AI_OPERATION_NAME] == operation]

    assert [p.count for p in points(semconv.METRIC_CLIENT_OPERATION_DURATION)] == [1]
    assert [p.count for p in points(semconv.METRIC_CLIENT_TIME_TO_FIRST_CHUNK)] == [1]
    tokens = points(semconv.METRIC_CLIENT_TOKEN_USAGE)
    assert sorted((p.attributes[semconv.GEN_AI_TOKEN_TYPE], p.count, p.sum) for p in tokens) == [
        (semconv.TOKEN_TYPE_INPUT, 1, 5),
        (semconv.TOKEN_TYPE_OUTPUT, 1, 2),
    ]
    assert len(open_runs()) == 0


@pytest.fixture
def stack_walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the lazy-stream matching walked the Python stack (``[count]``)."""
    walks = [0]
    find = LazyStreams.find

    def counting_find(self: LazyStreams) -> str | None:
        walks[0] += 1
        return find(self)

    monkeypatch.setattr(LazyStreams, "find", counting_find)
    return walks


def scripted(*turns: Any) -> Any:
    """A ``MockFunctionCallingLLM`` response generator answering each call with the next turn: a
    text, or a list of tool calls ``(call id, tool name, arguments)``."""
    queue = list(turns)

    def respond(messages: Any, **kwargs: Any) -> ChatMessage:
        turn = queue.pop(0)
        if isinstance(turn, str):
            return ChatMessage(role="assistant", content=turn)
        return ChatMessage(
            role="assistant",
            blocks=[ToolCallBlock(tool_call_id=c, tool_name=n, tool_kwargs=a) for c, n, a in turn],
        )

    return respond


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


HANDOFF_REASON = "numbers"


def handoff_workflow(*, front_prompt: str | None = None, math_prompt: str | None = None) -> AgentWorkflow:
    """Two agents: ``front`` hands over to ``math`` at once (call ``h1``), which calls ``add`` (call
    ``c1``, 2+2) and answers "4". Fresh scripted models each time (a script is used up by one run)."""
    front = FunctionAgent(
        name="front",
        description="routes",
        tools=[],
        can_handoff_to=["math"],
        system_prompt=front_prompt,
        llm=MockFunctionCallingLLM(
            response_generator=scripted([("h1", "handoff", {"to_agent": "math", "reason": HANDOFF_REASON})])
        ),
    )
    math = FunctionAgent(
        name="math",
        description="adds",
        tools=[add],
        system_prompt=math_prompt,
        llm=MockFunctionCallingLLM(response_generator=scripted([("c1", "add", {"a": 2, "b": 2})], "4")),
    )
    return AgentWorkflow(agents=[front, math], root_agent="front")
