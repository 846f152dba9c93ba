"""Model calls from llama_index.core LLM classes: chat, complete, predict, structured predict, streams."""

from __future__ import annotations

import asyncio
import gc
import json

import pytest
from llama_index.core.base.llms.types import ToolCallBlock
from llama_index.core.llms import ChatMessage, MockFunctionCallingLLM, MockLLM
from llama_index.core.prompts import PromptTemplate
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from llmtrace import semconv
from llmtrace.testing import metric_points
from tests.llama_index.conftest import one, open_runs, tree

MESSAGES = [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi")]


def _model_attrs(span):
    return {k: v for k, v in span.attributes.items() if not k.startswith(semconv.LLMTRACE_DIMENSION_PREFIX)}


def test_chat_is_one_model_span(instrumentor, span_exporter, metric_reader):
    response = MockLLM(max_tokens=3).chat(MESSAGES)
    assert response.message.content == "text text text"
    spans = span_exporter.get_finished_spans()
    # MockLLM.chat calls complete internally: merged into one model span
    assert tree(spans) == ["chat"]
    span = spans[0]
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert _model_attrs(span) == {
        semconv.GEN_AI_OPERATION_NAME: semconv.OP_CHAT,
        semconv.GEN_AI_PROVIDER_NAME: "mock",
        semconv.GEN_AI_REQUEST_MAX_TOKENS: 3,
        semconv.LLMTRACE_FRAMEWORK: "llama_index",
        semconv.LLMTRACE_USAGE_REPORTED: False,
    }
    durations = metric_points(metric_reader, semconv.METRIC_CLIENT_OPERATION_DURATION)
    assert [p.count for p in durations] == [1]
    assert metric_points(metric_reader, semconv.METRIC_CLIENT_TOKEN_USAGE) == []


def test_complete_and_predict_count_once(instrumentor, span_exporter, metric_reader):
    llm = MockLLM()
    assert llm.complete("hello").text == "hello"
    assert llm.predict(PromptTemplate("say {x}"), x="y") == "say y"
    spans = span_exporter.get_finished_spans()
    # predict is no span of its own: the completion it makes is the model span
    assert tree(spans) == ["text_completion", "text_completion"]
    assert {s.attributes[semconv.GEN_AI_OPERATION_NAME] for s in spans} == {semconv.OP_TEXT_COMPLETION}
    assert [p.count for p in metric_points(metric_reader, semconv.METRIC_CLIENT_OPERATION_DURATION)] == [2]


def test_content_only_when_captured(instrumentor, span_exporter, capture):
    MockLLM().chat(MESSAGES)
    span = span_exporter.get_finished_spans()[0]
    assert json.loads(span.attributes[semconv.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]}
    ]
    assert json.loads(span.attributes[semconv.GEN_AI_SYSTEM_INSTRUCTIONS]) == [
        {"type": "text", "content": "be brief"}
    ]
    output = json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert output[0]["role"] == "assistant" and output[0]["parts"][0]["type"] == "text"


def test_no_content_by_default(instrumentor, span_exporter):
    MockLLM().chat(MESSAGES)
    span = span_exporter.get_finished_spans()[0]
    for key in (
        semconv.GEN_AI_INPUT_MESSAGES,
        semconv.GEN_AI_OUTPUT_MESSAGES,
        semconv.GEN_AI_SYSTEM_INSTRUCTIONS,
    ):
        assert key not in span.attributes


def test_stream_ends_when_exhausted(instrumentor, span_exporter, metric_reader):
    stream = MockLLM(max_tokens=4).stream_chat(MESSAGES)
    assert span_exporter.get_finished_spans() == ()  # still open while the caller iterates
    chunks = list(stream)
    assert len(chunks) == 4
    span = one(span_exporter.get_finished_spans(), "chat")
    assert span.attributes[semconv.GEN_AI_REQUEST_STREAM] is True
    assert span.attributes[semconv.LLMTRACE_STREAM_CHUNKS] == 4
    assert span.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0
    assert span.status.status_code is StatusCode.UNSET
    assert [p.count for p in metric_points(metric_reader, semconv.METRIC_CLIENT_TIME_TO_FIRST_CHUNK)] == [1]


def test_async_stream(instrumentor, span_exporter):
    async def run():
        stream = await MockLLM(max_tokens=2).astream_complete("x")
        return [c.delta async for c in stream]

    assert asyncio.run(run()) == ["text ", "text"]
    span = one(span_exporter.get_finished_spans(), "text_completion")
    assert span.attributes[semconv.LLMTRACE_STREAM_CHUNKS] == 2


def test_stream_closed_early_ends_span(instrumentor, span_exporter):
    stream = MockLLM(max_tokens=10).stream_complete("x")
    next(stream)
    stream.close()
    span = one(span_exporter.get_finished_spans(), "text_completion")
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes[semconv.LLMTRACE_STREAM_CHUNKS] == 1


def test_stream_dropped_by_consumer_ends_span(instrumentor, span_exporter):
    stream = MockLLM(max_tokens=10).stream_complete("x")
    next(stream)
    del stream
    gc.collect()
    assert (
        one(span_exporter.get_finished_spans(), "text_completion").attributes[semconv.LLMTRACE_STREAM_CHUNKS]
        == 1
    )


def test_abandoned_stream_is_evicted(instrumentor, span_exporter):
    stream = MockLLM(max_tokens=10).stream_complete("x")  # never iterated, still referenced
    runs = open_runs()
    assert len(runs) == 1
    runs.ttl_s = 0.0
    assert runs.sweep() == 1
    span = one(span_exporter.get_finished_spans(), "text_completion")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[semconv.ERROR_TYPE] == semconv.ERROR_TYPE_EVICTED
    assert span.attributes[semconv.LLMTRACE_EVICTED] == semconv.EVICTED_TTL
    del stream


def test_error_ends_span(instrumentor, span_exporter, monkeypatch):
    llm = MockLLM()

    def boom(*args, **kwargs):
        raise ValueError("model broke")

    monkeypatch.setattr(MockLLM, "_generate_text", boom)
    llm.max_tokens = 2
    with pytest.raises(ValueError, match="model broke"):
        llm.chat(MESSAGES)
    span = one(span_exporter.get_finished_spans(), "chat")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[semconv.ERROR_TYPE] == "ValueError"
    assert [e.name for e in span.events] == [semconv.EVENT_EXCEPTION]
    assert len(open_runs()) == 0


class Answer(BaseModel):
    text: str


def test_structured_predict_counts_once(instrumentor, span_exporter, metric_reader):
    def respond(messages, **kwargs):
        call = ToolCallBlock(tool_call_id="c1", tool_name="Answer", tool_kwargs={"text": "ok"})
        return ChatMessage(role="assistant", blocks=[call])

    llm = MockFunctionCallingLLM(response_generator=respond)
    assert llm.structured_predict(Answer, PromptTemplate("q {x}"), x="1") == Answer(text="ok")
    spans = span_exporter.get_finished_spans()
    # structured_predict -> program -> predict_and_call -> chat: one model span; the
    # output class is called as a function tool
    assert tree(spans) == ["chat", "execute_tool Answer"]
    assert [p.count for p in metric_points(metric_reader, semconv.METRIC_CLIENT_OPERATION_DURATION)] == [1]
