"""Model calls from llama_index.core LLM classes: chat, complete, predict, structured predict, streams."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from llama_index.core.base.llms.types import ToolCallBlock
from llama_index.core.llms import ChatMessage, MockFunctionCallingLLM, MockLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from llmtrace import semconv
from llmtrace.testing import metric_points
from tests.llama_index.conftest import UsageStreamLLM, assert_counted_once, one, open_runs, tree

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
    # a system message of the history is an input message, in the order sent: instructions given
    # apart from the history are gen_ai.system_instructions, and a LlamaIndex chat call has none
    assert json.loads(span.attributes[semconv.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
    ]
    assert semconv.GEN_AI_SYSTEM_INSTRUCTIONS not in span.attributes
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
    # structured_predict -> program -> predict_and_call -> chat: one model span; the output class,
    # called as a function tool, is response parsing (see test_predict.py)
    assert tree(spans) == ["chat"]
    assert [p.count for p in metric_points(metric_reader, semconv.METRIC_CLIENT_OPERATION_DURATION)] == [1]
    assert metric_points(metric_reader, semconv.METRIC_EXECUTE_TOOL_DURATION) == []


# ---- a model call made by another one's stream: counted once ----------------------------
async def _deltas(stream: AsyncIterator[Any]) -> list[str]:
    return [chunk.delta async for chunk in stream]


async def _in_same_task(stream: AsyncIterator[Any]) -> list[str]:
    return await _deltas(stream)


async def _in_another_task(stream: AsyncIterator[Any]) -> list[str]:
    return await asyncio.create_task(_deltas(stream))


async def _inside_a_traced_tool(stream: AsyncIterator[Any]) -> list[str]:
    async def read() -> str:
        return "|".join(await _deltas(stream))

    output = await FunctionTool.from_defaults(async_fn=read, name="read").acall()
    return output.content.split("|")


CONSUMERS: dict[str, Callable[[AsyncIterator[Any]], Awaitable[list[str]]]] = {
    "same_task": _in_same_task,
    "other_task": _in_another_task,
    "inside_tool": _inside_a_traced_tool,
}


@pytest.mark.parametrize("consumer", CONSUMERS)
@pytest.mark.parametrize(
    ("method", "name"), [("astream_chat", "chat"), ("astream_complete", "text_completion")]
)
def test_async_stream_of_custom_llm_counts_once(
    instrumentor, span_exporter, metric_reader, method, name, consumer
):
    # CustomLLM.astream_* -> (when iterated) stream_complete: one model span, one usage record
    llm = UsageStreamLLM()

    async def run() -> list[str]:
        argument: Any = MESSAGES if method == "astream_chat" else "x"
        stream = await getattr(llm, method)(argument)
        return await CONSUMERS[consumer](stream)

    assert asyncio.run(run()) == ["a", " b"]
    spans = span_exporter.get_finished_spans()
    # consumed inside a tool: still a root, the call was made before the tool ran
    assert tree(spans) == ([name, "execute_tool read"] if consumer == "inside_tool" else [name])
    assert_counted_once(one(spans, name), metric_reader)


def test_call_before_iterating_a_stream_is_its_own(instrumentor, span_exporter):
    # a model call of the same LLM, in the same task, while its stream is pending: not merged
    llm = UsageStreamLLM()

    async def run() -> tuple[str, list[str]]:
        stream = await llm.astream_complete("x")
        text = (await llm.acomplete("y")).text
        return text, await _deltas(stream)

    assert asyncio.run(run()) == ("y", ["a", " b"])
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["text_completion", "text_completion"]
    assert [s.attributes.get(semconv.GEN_AI_REQUEST_STREAM) for s in spans] == [None, True]
    assert len(open_runs()) == 0
    assert len(_streams()) == 0


def test_stack_walked_only_for_a_model_call_while_a_stream_is_pending(instrumentor, stack_walks):
    llm = UsageStreamLLM()
    llm.chat(MESSAGES)
    llm.complete("x")
    assert [c.delta for c in llm.stream_complete("x")] == ["a", " b"]
    assert [c.delta for c in llm.stream_chat(MESSAGES)] == ["a", " b"]  # stream_complete inside: merged
    assert stack_walks[0] == 0  # no stream pending when a model call starts: a length check, no walk

    async def run() -> list[str]:
        return await _in_same_task(await llm.astream_complete("x"))

    assert asyncio.run(run()) == ["a", " b"]
    assert stack_walks[0] == 1  # stream_complete, made by astream_complete's generator
    assert len(_streams()) == 0


def _streams() -> Any:
    from llama_index_instrumentation import get_dispatcher
    from llmtrace_llama_index._span_handler import LlamaIndexSpanHandler

    (handler,) = [h for h in get_dispatcher().span_handlers if isinstance(h, LlamaIndexSpanHandler)]
    return handler.runs.streams


# ---- completion prompts: captured when content capture is on ------------------------------
async def _complete(llm: MockLLM, how: str, method: str) -> str:
    call = getattr(llm, method)
    result = call("say hi") if how == "positional" else call(prompt="say hi")
    if method.startswith("a"):
        result = await result
    if method == "complete" or method == "acomplete":
        return str(result.text)
    if method == "stream_complete":
        return "".join(c.delta for c in result)
    return "".join([c.delta async for c in result])


COMPLETE_METHODS = ["complete", "acomplete", "stream_complete", "astream_complete"]


@pytest.mark.parametrize("how", ["positional", "keyword"])
@pytest.mark.parametrize("method", COMPLETE_METHODS)
def test_completion_prompt_captured(instrumentor, span_exporter, capture, method, how):
    text = asyncio.run(_complete(MockLLM(), how, method))
    assert text == "say hi"
    span = one(span_exporter.get_finished_spans(), "text_completion")
    assert json.loads(span.attributes[semconv.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "say hi"}]}
    ]


@pytest.mark.parametrize("method", COMPLETE_METHODS)
def test_completion_prompt_not_captured_by_default(instrumentor, span_exporter, method):
    assert asyncio.run(_complete(MockLLM(), "positional", method)) == "say hi"
    span = one(span_exporter.get_finished_spans(), "text_completion")
    assert semconv.GEN_AI_INPUT_MESSAGES not in span.attributes
    assert semconv.GEN_AI_OUTPUT_MESSAGES not in span.attributes
