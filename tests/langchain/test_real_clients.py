"""ChatOpenAI and ChatAnthropic against a local server speaking their wire formats, httpx instrumented."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_openai import ChatOpenAI
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor, HTTPXClientInstrumentor

from llmtrace import semconv

from .conftest import attrs
from .wire_server import WireServer


@pytest.fixture(scope="module")
def server() -> Iterator[WireServer]:
    s = WireServer()
    yield s
    s.close()


@pytest.fixture
def httpx_on(tracer_provider, instrumented) -> Iterator[None]:
    from langchain_anthropic import _client_utils

    # langchain-anthropic caches its httpx clients across tests (and instrumentations)
    _client_utils._get_default_httpx_client.cache_clear()
    _client_utils._get_default_async_httpx_client.cache_clear()
    # the openai SDK uses httpx, the anthropic SDK its successor httpx2: instrument both
    HTTPXClientInstrumentor().instrument(tracer_provider=tracer_provider)
    HTTPX2ClientInstrumentor().instrument(tracer_provider=tracer_provider)
    yield
    HTTPXClientInstrumentor().uninstrument()
    HTTPX2ClientInstrumentor().uninstrument()


def openai(server: WireServer, **kw) -> ChatOpenAI:
    # fresh httpx clients: langchain-openai caches its default ones across tests (and instrumentations)
    return ChatOpenAI(
        model="gpt-4o",
        base_url=server.url + "/v1",
        api_key="test",
        max_retries=0,
        http_client=httpx.Client(),
        http_async_client=httpx.AsyncClient(),
        **kw,
    )


def model_and_http(spans):
    (model,) = [s for s in spans if s.name.startswith("chat")]
    http = [s for s in spans if s.name.startswith("POST")]
    assert http and all(h.parent.span_id == model.context.span_id for h in http), [s.name for s in spans]
    return model


def test_openai_plain_with_cached_tokens(server, httpx_on, span_exporter):
    assert openai(server, temperature=0.5).invoke("hi").content == "hello from openai"
    a = attrs(model_and_http(span_exporter.get_finished_spans()))
    assert a[semconv.GEN_AI_PROVIDER_NAME] == semconv.PROVIDER_OPENAI
    assert a[semconv.GEN_AI_REQUEST_MODEL] == "gpt-4o"
    assert a[semconv.GEN_AI_REQUEST_TEMPERATURE] == 0.5
    assert a[semconv.GEN_AI_RESPONSE_ID] == "chatcmpl-1"
    assert a[semconv.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-08-06"
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert (a[semconv.GEN_AI_USAGE_INPUT_TOKENS], a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]) == (50, 8)
    assert a[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 32
    assert a[semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 3
    assert a[semconv.GEN_AI_USAGE_COST_AMOUNT] > 0


def test_openai_stream_with_usage(server, httpx_on, span_exporter):
    chunks = list(openai(server, stream_usage=True).stream("hi"))
    assert "".join(str(c.content) for c in chunks) == "hello from openai"
    a = attrs(model_and_http(span_exporter.get_finished_spans()))
    assert a[semconv.GEN_AI_REQUEST_STREAM] is True
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 50
    assert a[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 32
    assert a[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0


async def test_openai_astream_with_usage(server, httpx_on, span_exporter):
    chunks = [c async for c in openai(server, stream_usage=True).astream("hi")]
    assert chunks
    a = attrs(model_and_http(span_exporter.get_finished_spans()))
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 8


def test_openai_tool_call(server, httpx_on, span_exporter):
    msg = openai(server).invoke("use a tool")
    assert msg.tool_calls[0]["id"] == "call_abc"
    a = attrs(model_and_http(span_exporter.get_finished_spans()))
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)


def test_openai_rate_limit(server, httpx_on, span_exporter):
    import openai as openai_sdk

    with pytest.raises(openai_sdk.RateLimitError):
        openai(server).invoke("rate me")
    span = model_and_http(span_exporter.get_finished_spans())
    assert span.status.status_code.name == "ERROR"
    assert attrs(span)[semconv.ERROR_TYPE] == "rate_limit"


def anthropic_model(server: WireServer, tracer_provider) -> ChatAnthropic:
    return ChatAnthropic(
        model="claude-3-5-haiku-20241022", base_url=server.url, api_key="test", max_retries=0
    )


def test_anthropic_with_cache_usage(server, httpx_on, span_exporter, tracer_provider):
    m = anthropic_model(server, tracer_provider)
    assert m.invoke("hi").content == "hello from anthropic"
    a = attrs(model_and_http(span_exporter.get_finished_spans()))
    assert a[semconv.GEN_AI_PROVIDER_NAME] == semconv.PROVIDER_ANTHROPIC
    assert a[semconv.GEN_AI_RESPONSE_ID] == "msg_1"
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 130
    assert a[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 100
    assert a[semconv.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 20


def test_anthropic_server_error(server, httpx_on, span_exporter, tracer_provider):
    import anthropic

    m = anthropic_model(server, tracer_provider)
    with pytest.raises(anthropic.InternalServerError):
        m.invoke("fail please")
    span = model_and_http(span_exporter.get_finished_spans())
    assert attrs(span)[semconv.ERROR_TYPE] == "server_error"


def test_anthropic_stream_with_usage(server, httpx_on, span_exporter, tracer_provider):
    m = anthropic_model(server, tracer_provider)
    text = "".join(str(chunk.content) for chunk in m.stream("hi"))
    assert text == "hello from anthropic"
    span = model_and_http(span_exporter.get_finished_spans())
    a = attrs(span)
    assert a[semconv.GEN_AI_REQUEST_STREAM] is True
    assert a[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0
    # the final message_delta carries the complete usage; input includes the cached parts
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 130
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 6
    assert a[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 100
    assert a[semconv.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 20


def test_anthropic_rate_limit(server, httpx_on, span_exporter, tracer_provider):
    import anthropic

    with pytest.raises(anthropic.RateLimitError):
        anthropic_model(server, tracer_provider).invoke("rate me")
    span = model_and_http(span_exporter.get_finished_spans())
    assert attrs(span)[semconv.ERROR_TYPE] == "rate_limit"
