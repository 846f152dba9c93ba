"""ChatOpenAI, OpenAIEmbeddings and ChatAnthropic against a local server speaking their wire formats,
httpx instrumented."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from llmtrace import semconv

from .conftest import attrs
from .wire_server import EMBEDDING_DIMENSIONS, EMBEDDINGS_MODEL, WireServer

try:  # httpx2, the HTTP client of recent anthropic SDKs: instrumented since 0.65b0
    from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
except ImportError:  # older instrumentation (as at the OpenTelemetry floors), whose anthropic SDK uses httpx
    HTTPX2ClientInstrumentor = None


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
    instrumentors = [HTTPXClientInstrumentor()]
    if HTTPX2ClientInstrumentor is not None:
        instrumentors.append(HTTPX2ClientInstrumentor())
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=tracer_provider)
    yield
    for instrumentor in instrumentors:
        instrumentor.uninstrument()


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
    assert (a[semconv.SERVER_ADDRESS], a[semconv.SERVER_PORT]) == ("127.0.0.1", server.port)


def test_server_address_with_a_hand_registered_handler_only(server, span_exporter, handler):
    openai(server).invoke("hi", config={"callbacks": [handler]})
    (span,) = span_exporter.get_finished_spans()
    assert (attrs(span)[semconv.SERVER_ADDRESS], attrs(span)[semconv.SERVER_PORT]) == (
        "127.0.0.1",
        server.port,
    )


def test_openai_stream_with_usage(server, httpx_on, span_exporter):
    chunks = list(openai(server, stream_usage=True).stream("hi"))
    assert "".join(str(c.content) for c in chunks) == "hello from openai"
    a = attrs(model_and_http(span_exporter.get_finished_spans()))
    assert a[semconv.GEN_AI_REQUEST_STREAM] is True
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 50
    assert a[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 32
    assert a[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0
    # the server's 5 chunks (3 words, the finish reason, the usage), not LangChain's empty closing one
    assert a[semconv.LLMTRACE_STREAM_CHUNKS] == 5


async def test_openai_astream_with_usage(server, httpx_on, span_exporter):
    chunks = [c async for c in openai(server, stream_usage=True).astream("hi")]
    assert chunks
    a = attrs(model_and_http(span_exporter.get_finished_spans()))
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 8
    assert a[semconv.LLMTRACE_STREAM_CHUNKS] == 5


def test_openai_tool_call(server, httpx_on, span_exporter):
    msg = openai(server).invoke("use a tool")
    assert msg.tool_calls[0]["id"] == "call_abc"
    a = attrs(model_and_http(span_exporter.get_finished_spans()))
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_call",)  # OpenAI's tool_calls, normalised


class Person(BaseModel):
    name: str
    age: int


@pytest.mark.parametrize("method", ["json_schema", "json_mode"])
def test_openai_structured_output_sets_output_type(server, httpx_on, span_exporter, method):
    person = openai(server).with_structured_output(Person, method=method).invoke("who? answer in JSON")
    assert person == Person(name="Ada", age=36)
    a = attrs(model_and_http(span_exporter.get_finished_spans()))
    assert a[semconv.GEN_AI_OUTPUT_TYPE] == semconv.OUTPUT_TYPE_JSON


def test_openai_without_an_output_format_has_no_output_type(server, httpx_on, span_exporter):
    openai(server).invoke("hi")
    assert semconv.GEN_AI_OUTPUT_TYPE not in attrs(model_and_http(span_exporter.get_finished_spans()))


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
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)  # Anthropic's end_turn, normalised
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 130
    assert a[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 100
    assert a[semconv.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 20
    assert (a[semconv.SERVER_ADDRESS], a[semconv.SERVER_PORT]) == ("127.0.0.1", server.port)


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


# ---- OpenAIEmbeddings (langchain-openai) --------------------------------------------------------------
def openai_embeddings(server: WireServer, cls: type[OpenAIEmbeddings] = OpenAIEmbeddings) -> OpenAIEmbeddings:
    return cls(
        model=EMBEDDINGS_MODEL,
        base_url=server.url + "/v1",
        api_key="test",
        max_retries=0,
        check_embedding_ctx_length=False,  # the texts go as they are (no tiktoken download)
        http_client=httpx.Client(),
        http_async_client=httpx.AsyncClient(),
    )


def embeddings_and_http(spans, server: WireServer, input_count: int) -> None:
    (span,) = [s for s in spans if s.name.startswith("embeddings")]
    (http,) = [s for s in spans if s.name.startswith("POST")]
    assert http.parent.span_id == span.context.span_id  # the SDK's request nests under the model call
    assert span.name == f"embeddings {EMBEDDINGS_MODEL}"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    # LangChain keeps only the vectors of the response: its model and its usage
    # ("usage": {"prompt_tokens": ...}) are discarded, so usage is flagged as not reported
    assert attrs(span) == {
        semconv.GEN_AI_OPERATION_NAME: semconv.OP_EMBEDDINGS,
        semconv.GEN_AI_PROVIDER_NAME: semconv.PROVIDER_OPENAI,
        semconv.GEN_AI_REQUEST_MODEL: EMBEDDINGS_MODEL,
        semconv.SERVER_ADDRESS: "127.0.0.1",
        semconv.SERVER_PORT: server.server.server_address[1],
        semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT: EMBEDDING_DIMENSIONS,
        semconv.LLMTRACE_EMBEDDINGS_INPUT_COUNT: input_count,
        semconv.LLMTRACE_FRAMEWORK: "langchain",
        semconv.LLMTRACE_USAGE_REPORTED: False,
    }


def test_openai_embeddings_documents_and_query(server, httpx_on, span_exporter):
    vectors = openai_embeddings(server).embed_documents(["first", "second"])
    assert vectors == [[0.0, 0.5, -1.0], [1.0, 1.5, -1.0]]
    embeddings_and_http(span_exporter.get_finished_spans(), server, 2)
    span_exporter.clear()
    # embed_query calls embed_documents([text]): one call, one span
    assert openai_embeddings(server).embed_query("question") == [0.0, 0.5, -1.0]
    embeddings_and_http(span_exporter.get_finished_spans(), server, 1)


async def test_openai_embeddings_async(server, httpx_on, span_exporter):
    assert await openai_embeddings(server).aembed_query("question") == [0.0, 0.5, -1.0]
    embeddings_and_http(span_exporter.get_finished_spans(), server, 1)
    span_exporter.clear()
    assert len(await openai_embeddings(server).aembed_documents(["a", "b", "c"])) == 3
    embeddings_and_http(span_exporter.get_finished_spans(), server, 3)


def test_openai_embeddings_subclass_defined_after_instrument(server, httpx_on, span_exporter):
    class TeamEmbeddings(OpenAIEmbeddings):
        def embed_documents(self, texts: list[str], chunk_size: int | None = None, **kw) -> list[list[float]]:
            return super().embed_documents([t.strip() for t in texts], chunk_size, **kw)

    assert openai_embeddings(server, TeamEmbeddings).embed_documents([" x "]) == [[0.0, 0.5, -1.0]]
    embeddings_and_http(span_exporter.get_finished_spans(), server, 1)  # provider openai, one span


def test_openai_embeddings_server_error(server, httpx_on, span_exporter):
    import openai as openai_sdk

    with pytest.raises(openai_sdk.InternalServerError, match="embedding backend down"):
        openai_embeddings(server).embed_documents(["please fail"])
    (span,) = [s for s in span_exporter.get_finished_spans() if s.name.startswith("embeddings")]
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[semconv.ERROR_TYPE] == "server_error"
    assert semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT not in attrs(span)
