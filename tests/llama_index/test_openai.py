"""llama-index-llms-openai against a local server speaking the OpenAI wire format."""

from __future__ import annotations

import asyncio

import openai
import pytest
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai import OpenAI
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.trace import StatusCode

from llmtrace import semconv
from llmtrace.testing import metric_points
from tests.llama_index.conftest import is_child, one, tree
from tests.llama_index.openai_server import MODEL

USER = [ChatMessage(role="user", content="hi")]


@pytest.fixture
def httpx_spans(tracer_provider):
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield
    instrumentor.uninstrument()


def _llm(server, **kwargs) -> OpenAI:
    return OpenAI(
        api_base=server.base_url,
        api_key="test",
        model="gpt-4o-mini",
        max_retries=0,
        temperature=0.2,
        **kwargs,
    )


def test_chat_usage_cached_tokens_and_http_nesting(
    instrumentor, openai_server, httpx_spans, span_exporter, metric_reader
):
    openai_server.replies = [
        {
            "text": "Hello there!",
            "prompt_tokens": 100,
            "completion_tokens": 7,
            "cached": 64,
            "reasoning": 3,
            "id": "chatcmpl-abc",
        }
    ]
    response = _llm(openai_server).chat(USER)
    assert response.message.content == "Hello there!"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["chat gpt-4o-mini", "  POST"]
    chat = one(spans, "chat gpt-4o-mini")
    http = one(spans, "POST")
    assert is_child(http, chat)  # the provider's HTTP call nests under the model span
    attrs = chat.attributes
    assert attrs[semconv.GEN_AI_PROVIDER_NAME] == semconv.PROVIDER_OPENAI
    assert attrs[semconv.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert attrs[semconv.GEN_AI_RESPONSE_MODEL] == MODEL
    assert attrs[semconv.GEN_AI_RESPONSE_ID] == "chatcmpl-abc"
    assert attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attrs[semconv.GEN_AI_REQUEST_TEMPERATURE] == 0.2
    assert attrs[semconv.SERVER_ADDRESS] == "127.0.0.1"
    assert attrs[semconv.SERVER_PORT] == openai_server.port
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 100
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 7
    assert attrs[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 64
    assert attrs[semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 3
    assert attrs[semconv.GEN_AI_USAGE_COST_AMOUNT] > 0
    tokens = metric_points(metric_reader, semconv.METRIC_CLIENT_TOKEN_USAGE)
    assert sorted(p.sum for p in tokens) == [7, 100]


def test_json_mode_sets_output_type(instrumentor, openai_server, span_exporter):
    openai_server.replies = [{"text": '{"answer": 42}'}]
    llm = _llm(openai_server, additional_kwargs={"response_format": {"type": "json_object"}})
    assert llm.chat(USER).message.content == '{"answer": 42}'
    chat = one(span_exporter.get_finished_spans(), "chat gpt-4o-mini")
    assert chat.attributes[semconv.GEN_AI_OUTPUT_TYPE] == semconv.OUTPUT_TYPE_JSON


def test_stream_carries_last_chunk_usage(instrumentor, openai_server, span_exporter, metric_reader):
    openai_server.replies = [{"text": "one two three", "prompt_tokens": 20, "completion_tokens": 3}]
    llm = _llm(openai_server, additional_kwargs={"stream_options": {"include_usage": True}})
    text = "".join(chunk.delta or "" for chunk in llm.stream_chat(USER))
    assert text == "one two three"
    chat = one(span_exporter.get_finished_spans(), "chat gpt-4o-mini")
    attrs = chat.attributes
    assert attrs[semconv.GEN_AI_REQUEST_STREAM] is True
    assert attrs[semconv.LLMTRACE_STREAM_CHUNKS] == 5  # 3 words, the finish chunk, the usage chunk
    assert attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 20
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    ttfc = metric_points(metric_reader, semconv.METRIC_CLIENT_TIME_TO_FIRST_CHUNK)
    assert [p.count for p in ttfc] == [1]


def test_async_stream_with_tool_calls(instrumentor, openai_server, span_exporter):
    openai_server.replies = [{"tool_calls": [{"id": "call_1", "name": "add", "arguments": {"a": 1, "b": 2}}]}]

    async def run():
        llm = _llm(openai_server, additional_kwargs={"stream_options": {"include_usage": True}})
        stream = await llm.astream_chat(USER)
        return [chunk async for chunk in stream]

    chunks = asyncio.run(run())
    assert chunks[-1].message.additional_kwargs["tool_calls"][0].function.name == "add"
    chat = one(span_exporter.get_finished_spans(), "chat gpt-4o-mini")
    # OpenAI's "tool_calls", as the conventions name it
    assert chat.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_call",)
    assert chat.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 12


def test_tool_call_content(instrumentor, openai_server, span_exporter, capture):
    openai_server.replies = [{"tool_calls": [{"id": "call_1", "name": "add", "arguments": {"a": 1, "b": 2}}]}]
    _llm(openai_server).chat(USER)
    chat = one(span_exporter.get_finished_spans(), "chat gpt-4o-mini")
    import json

    output = json.loads(chat.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert output == [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "call_1", "name": "add", "arguments": {"a": 1, "b": 2}}],
            "finish_reason": "tool_call",
        }
    ]


@pytest.mark.parametrize(("status", "error_type"), [(429, "rate_limit"), (500, "server_error")])
def test_http_errors_end_span_with_error(
    instrumentor, openai_server, span_exporter, metric_reader, status, error_type
):
    openai_server.replies = [{"status": status}]
    with pytest.raises(Exception) as raised:
        _llm(openai_server).chat(USER)
    assert getattr(raised.value, "status_code", None) == status
    chat = one(span_exporter.get_finished_spans(), "chat gpt-4o-mini")
    assert chat.status.status_code is StatusCode.ERROR
    assert chat.attributes[semconv.ERROR_TYPE] == error_type
    durations = metric_points(metric_reader, semconv.METRIC_CLIENT_OPERATION_DURATION)
    assert [p.attributes[semconv.ERROR_TYPE] for p in durations] == [error_type]


def test_async_chat_error(instrumentor, openai_server, span_exporter):
    openai_server.replies = [{"status": 500}]
    with pytest.raises(openai.InternalServerError):
        asyncio.run(_llm(openai_server).achat(USER))
    chat = one(span_exporter.get_finished_spans(), "chat gpt-4o-mini")
    assert chat.status.status_code is StatusCode.ERROR


def _add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@pytest.mark.parametrize("include_usage", [False, True], ids=["default", "include_usage"])
def test_function_agent_streams_usage_only_when_asked(
    instrumentor, openai_server, span_exporter, include_usage
):
    """``FunctionAgent`` streams its model calls, and llama-index-llms-openai asks for no stream usage:
    the documented workaround (docs/limitations.md) is ``stream_options.include_usage``."""
    from llama_index.core.agent.workflow import FunctionAgent

    openai_server.replies = [
        {"tool_calls": [{"id": "c1", "name": "_add", "arguments": {"a": 1, "b": 2}}]},
        {"text": "3", "prompt_tokens": 30, "completion_tokens": 2},
    ]
    extra = {"additional_kwargs": {"stream_options": {"include_usage": True}}} if include_usage else {}
    agent = FunctionAgent(name="adder", tools=[_add], llm=_llm(openai_server, **extra))

    async def main() -> str:
        return str(await agent.run("1+2?"))

    assert asyncio.run(main()) == "3"
    spans = span_exporter.get_finished_spans()
    chat = "  chat gpt-4o-mini"
    assert tree(spans) == ["invoke_agent adder", chat, "  execute_tool _add", chat]
    chats = sorted((s for s in spans if s.name == "chat gpt-4o-mini"), key=lambda s: s.start_time)
    for chat in chats:
        assert chat.attributes[semconv.GEN_AI_REQUEST_STREAM] is True
    usage = [
        (
            chat.attributes.get(semconv.GEN_AI_USAGE_INPUT_TOKENS),
            chat.attributes.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
            chat.attributes.get(semconv.LLMTRACE_USAGE_REPORTED),
        )
        for chat in chats
    ]
    assert usage == ([(12, 5, None), (30, 2, None)] if include_usage else [(None, None, False)] * 2)
    costs = [semconv.GEN_AI_USAGE_COST_AMOUNT in chat.attributes for chat in chats]
    assert costs == [include_usage, include_usage]
