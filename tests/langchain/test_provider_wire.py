"""ChatOpenAI (Chat Completions and Responses API) and ChatAnthropic against the local wire server,
answering as each test scripts it: Responses finish reasons, request parameters given the
providers' own way, errors sent inside a stream, streams and the LLM cache, ``with_retry``
attempts and rate limiters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.caches import InMemoryCache
from langchain_core.globals import set_llm_cache
from langchain_core.messages import HumanMessage
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from opentelemetry.sdk.trace import ReadableSpan

from llmtrace import semconv
from llmtrace._content import CaptureMode, ContentPolicy
from llmtrace.testing import metric_points

from .conftest import attrs
from .wire_server import WireServer

MODEL = "gpt-4o-2024-08-06"


@pytest.fixture(scope="module")
def server() -> Iterator[WireServer]:
    s = WireServer()
    yield s
    s.close()


@pytest.fixture
def captured(content_capture: Any) -> None:
    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_ONLY)


def chat_openai(server: WireServer, **kw: Any) -> ChatOpenAI:
    # fresh httpx clients: langchain-openai caches its default ones across tests
    return ChatOpenAI(
        model="gpt-4o",
        base_url=server.url + "/v1",
        api_key="test",
        max_retries=0,
        http_client=httpx.Client(),
        http_async_client=httpx.AsyncClient(),
        **kw,
    )


def chat_anthropic(server: WireServer, **kw: Any) -> ChatAnthropic:
    return ChatAnthropic(
        model="claude-3-5-haiku-20241022", base_url=server.url, api_key="test", max_retries=0, **kw
    )


def chat_span(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> ReadableSpan:
    (span,) = [s for s in spans if s.name.startswith("chat")]
    return span


# ---- OpenAI Responses API payloads ---------------------------------------------------------------------
RESPONSES_USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 7,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 19,
}


def message_item(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "msg_1",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def call_item(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": json.dumps(args),
        "status": "completed",
    }


def response(
    output: list[dict[str, Any]],
    *,
    status: str = "completed",
    incomplete: str | None = None,
    response_id: str = "resp_1",
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": 1741476542,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": None,
        "max_output_tokens": None,
        "model": MODEL,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": RESPONSES_USAGE,
        "user": None,
        "metadata": {},
    }


def response_events(final: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The server-sent events of a streamed response that ends as ``final``."""
    events: list[dict[str, Any]] = []
    started = {**final, "status": "in_progress", "output": [], "usage": None}
    events.append({"type": "response.created", "response": started})
    for index, item in enumerate(final["output"]):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "status": "in_progress", "content": []},
                }
            )
            events.append(
                {
                    "type": "response.content_part.added",
                    "item_id": item["id"],
                    "output_index": index,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                }
            )
            events.append(
                {
                    "type": "response.output_text.delta",
                    "item_id": item["id"],
                    "output_index": index,
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                }
            )
        else:
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "arguments": "", "status": "in_progress"},
                }
            )
            events.append(
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": item["id"],
                    "output_index": index,
                    "delta": item["arguments"],
                }
            )
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    end = "response.completed" if final["status"] == "completed" else f"response.{final['status']}"
    events.append({"type": end, "response": final})
    return [(e["type"], {**e, "sequence_number": i}) for i, e in enumerate(events)]


def responses_script(answer: dict[str, Any]) -> Any:
    def script(path: str, body: dict[str, Any]) -> tuple[int, Any] | None:
        if not path.endswith("/responses"):
            return None
        return 200, response_events(answer) if body.get("stream") else answer

    return script


@tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    return "sunny"


def responses_model(server: WireServer, output_version: str, **kw: Any) -> ChatOpenAI:
    try:
        return chat_openai(server, use_responses_api=True, output_version=output_version, **kw)
    except ValueError:  # pydantic's ValidationError; langchain-openai < 1.0 has no "v1"
        pytest.skip(f"this langchain-openai has no output_version={output_version!r}")


# ---- 1. Responses API: finish reasons from the response's status -------------------------------------
RESPONSES_ENDS = {
    "completed text": (response([message_item("Paris.")]), "stop"),
    "completed tool calls": (
        response([call_item("get_weather", {"city": "Paris"}, "call_1")]),
        "tool_call",
    ),
    "max_output_tokens": (
        response([message_item("Par")], status="incomplete", incomplete="max_output_tokens"),
        "length",
    ),
    "content_filter": (
        response([message_item("")], status="incomplete", incomplete="content_filter"),
        "content_filter",
    ),
}


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
@pytest.mark.parametrize("output_version", ["v0", "responses/v1", "v1"])
@pytest.mark.parametrize("end", list(RESPONSES_ENDS))
def test_responses_finish_reason_from_status(
    server, handler, span_exporter, captured, end, output_version, stream
):
    answer, expected = RESPONSES_ENDS[end]
    model = responses_model(server, output_version).bind_tools([get_weather])
    config: Any = {"callbacks": [handler]}
    with server.scripted(responses_script(answer)):
        if stream:
            chunks = list(model.stream("weather in Paris?", config=config))
            message = chunks[0]
            for chunk in chunks[1:]:
                message += chunk
        else:
            message = model.invoke("weather in Paris?", config=config)
    if "status" not in message.response_metadata:  # older langchain-openai: not in a stream's metadata
        pytest.skip("this langchain-openai keeps no status of a streamed response that ended so")
    a = attrs(chat_span(span_exporter.get_finished_spans()))
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == (expected,)
    (output,) = json.loads(a[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert output["finish_reason"] == expected


# ---- 2. streams consult no LLM cache ---------------------------------------------------------------------
@pytest.fixture(params=["handler", "instrumented"])
def tracing(request) -> Any:
    """The call config: a hand-registered handler, or none under the instrumentor."""
    if request.param == "handler":
        return {"callbacks": [request.getfixturevalue("handler")]}
    request.getfixturevalue("instrumented")
    return {}


async def test_streams_with_a_global_cache_record_no_lookup(server, tracing, span_exporter, metric_reader):
    set_llm_cache(InMemoryCache())
    model = chat_openai(server, stream_usage=True)
    before = len(server.requests)
    assert "".join(str(c.content) for c in model.stream("hi", config=tracing)) == "hello from openai"
    assert "".join([str(c.content) async for c in model.astream("hi", config=tracing)]) == "hello from openai"
    assert len(server.requests) - before == 2  # LangChain looks in no cache for a stream
    streamed = span_exporter.get_finished_spans()
    assert len(streamed) == 2
    for span in streamed:
        a = attrs(span)
        assert a[semconv.GEN_AI_REQUEST_STREAM] is True
        assert semconv.LLMTRACE_CACHE_HIT not in a
        assert semconv.LLMTRACE_CACHE_SOURCE not in a
    assert metric_points(metric_reader, semconv.METRIC_CACHE_LOOKUPS) == []
    # invoke does look: a miss, then a hit (and only those are counted)
    span_exporter.clear()
    assert model.invoke("hi", config=tracing).content == "hello from openai"
    assert (await model.ainvoke("hi", config=tracing)).content == "hello from openai"
    assert len(server.requests) - before == 3
    miss, hit = span_exporter.get_finished_spans()
    assert (attrs(miss)[semconv.LLMTRACE_CACHE_HIT], attrs(miss)[semconv.LLMTRACE_CACHE_SOURCE]) == (
        False,
        "InMemoryCache",
    )
    assert (attrs(hit)[semconv.LLMTRACE_CACHE_HIT], attrs(hit)[semconv.LLMTRACE_CACHE_SOURCE]) == (
        True,
        "InMemoryCache",
    )
    lookups = metric_points(metric_reader, semconv.METRIC_CACHE_LOOKUPS)
    assert sorted((p.attributes[semconv.LLMTRACE_CACHE_HIT], p.value) for p in lookups) == [
        (False, 1),
        (True, 1),
    ]


# ---- 3. Anthropic reasoning effort given on the model ---------------------------------------------------
def _needs_anthropic_effort() -> None:
    fields = ChatAnthropic.model_fields
    if "output_config" not in fields or "reasoning_effort" not in fields:  # e.g. 0.3.21, the floor
        pytest.skip("this langchain-anthropic has no effort / output_config")


@pytest.mark.parametrize(
    ("model_kw", "call_kw", "expected"),
    [
        ({"effort": "high"}, {}, "high"),
        ({"output_config": {"effort": "low"}}, {}, "low"),
        ({"effort": "high"}, {"output_config": {"effort": "medium"}}, "medium"),  # the call's wins
        ({"output_config": {"effort": "low"}}, {"reasoning_effort": "max"}, "max"),
    ],
)
def test_anthropic_effort_on_the_model(server, handler, span_exporter, model_kw, call_kw, expected):
    _needs_anthropic_effort()
    model = chat_anthropic(server, **model_kw)
    assert model.invoke("hi", config={"callbacks": [handler]}, **call_kw).content == "hello from anthropic"
    assert server.requests[-1][1]["output_config"]["effort"] == expected  # what was sent
    a = attrs(chat_span(span_exporter.get_finished_spans()))
    assert a[semconv.GEN_AI_REQUEST_REASONING_LEVEL] == expected


# ---- 4. errors sent inside a stream that started with HTTP 200 -----------------------------------------
def anthropic_overloaded_midstream(path: str, body: dict[str, Any]) -> tuple[int, Any] | None:
    if not path.endswith("/messages"):
        return None
    message = {
        "id": "msg_s1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-20241022",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }
    return 200, [
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "par"}},
        ),
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ]


def openai_error_chunk(path: str, body: dict[str, Any]) -> tuple[int, Any] | None:
    if not path.endswith("/chat/completions"):
        return None
    first = {
        "id": "chatcmpl-s1",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "par"}, "finish_reason": None}],
    }
    return 200, [first, {"error": {"message": "The server had an error", "type": "server_error"}}]


def test_anthropic_overloaded_inside_a_stream_is_a_server_error(server, handler, span_exporter):
    import anthropic

    with server.scripted(anthropic_overloaded_midstream), pytest.raises(anthropic.APIStatusError):
        list(chat_anthropic(server).stream("hi", config={"callbacks": [handler]}))
    span = chat_span(span_exporter.get_finished_spans())
    assert span.status.status_code.name == "ERROR"
    assert attrs(span)[semconv.ERROR_TYPE] == "server_error"


def test_openai_error_chunk_inside_a_stream_is_a_server_error(server, handler, span_exporter):
    import openai

    with server.scripted(openai_error_chunk), pytest.raises(openai.APIError):
        list(chat_openai(server).stream("hi", config={"callbacks": [handler]}))
    span = chat_span(span_exporter.get_finished_spans())
    assert span.status.status_code.name == "ERROR"
    assert attrs(span)[semconv.ERROR_TYPE] == "server_error"


# ---- 5. the Responses API's own output format ----------------------------------------------------------
SCHEMA_FORMAT = {
    "type": "json_schema",
    "name": "person",
    "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
}


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
@pytest.mark.parametrize(("text_format", "expected"), [(SCHEMA_FORMAT, "json"), ({"type": "text"}, "text")])
def test_responses_text_format_sets_output_type(
    server, handler, span_exporter, text_format, expected, stream
):
    model = chat_openai(server, use_responses_api=True).bind(text={"format": text_format})
    config: Any = {"callbacks": [handler]}
    with server.scripted(responses_script(response([message_item('{"name": "Ada"}')]))):
        if stream:
            list(model.stream("who?", config=config))
        else:
            model.invoke("who?", config=config)
    assert server.requests[-1][1]["text"]["format"]["type"] == text_format["type"]
    a = attrs(chat_span(span_exporter.get_finished_spans()))
    assert a[semconv.GEN_AI_OUTPUT_TYPE] == expected


# ---- 6. previous_response_id -------------------------------------------------------------------------
def numbered_responses() -> Any:
    count = [0]

    def script(path: str, body: dict[str, Any]) -> tuple[int, Any] | None:
        if not path.endswith("/responses"):
            return None
        count[0] += 1
        return 200, response([message_item("ok")], response_id=f"resp_{count[0]}")

    return script


def test_previous_response_id_of_use_previous_response_id(server, handler, span_exporter):
    model = chat_openai(server, use_responses_api=True, use_previous_response_id=True)
    config: Any = {"callbacks": [handler]}
    with server.scripted(numbered_responses()):
        first = model.invoke("hi", config=config)
        model.invoke([HumanMessage("hi"), first, HumanMessage("more")], config=config)
    assert server.requests[-1][1]["previous_response_id"] == "resp_1"  # what langchain-openai sent
    opening, chained = span_exporter.get_finished_spans()
    assert semconv.GEN_AI_REQUEST_PREVIOUS_RESPONSE_ID not in attrs(opening)
    assert attrs(chained)[semconv.GEN_AI_REQUEST_PREVIOUS_RESPONSE_ID] == "resp_1"


def test_previous_response_id_given_with_the_call(server, handler, span_exporter):
    model = chat_openai(server, use_responses_api=True)
    with server.scripted(numbered_responses()):
        model.invoke("more", config={"callbacks": [handler]}, previous_response_id="resp_abc")
    assert server.requests[-1][1]["previous_response_id"] == "resp_abc"
    a = attrs(chat_span(span_exporter.get_finished_spans()))
    assert a[semconv.GEN_AI_REQUEST_PREVIOUS_RESPONSE_ID] == "resp_abc"


# ---- 7. with_retry: the attempt number of a retried call --------------------------------------------
def failing_first() -> Any:
    count = [0]

    def script(path: str, body: dict[str, Any]) -> tuple[int, Any] | None:
        if not path.endswith("/chat/completions"):
            return None
        count[0] += 1
        if count[0] == 1:
            return 500, {"error": {"message": "The server had an error", "type": "server_error"}}
        return None  # the wire server's usual answer

    return script


async def test_with_retry_marks_the_retried_call(server, tracing, span_exporter):
    import openai

    model = chat_openai(server).with_retry(
        stop_after_attempt=3, wait_exponential_jitter=False, retry_if_exception_type=(openai.APIError,)
    )
    for call in ("invoke", "ainvoke"):
        span_exporter.clear()
        with server.scripted(failing_first()):
            if call == "invoke":
                answer = model.invoke("hi", config=tracing)
            else:
                answer = await model.ainvoke("hi", config=tracing)
        assert answer.content == "hello from openai"
        failed, retried = [s for s in span_exporter.get_finished_spans() if s.name.startswith("chat")]
        assert failed.status.status_code.name == "ERROR"
        assert attrs(failed)[semconv.ERROR_TYPE] == "server_error"
        assert semconv.LLMTRACE_RETRY_ATTEMPT not in attrs(failed)  # the first attempt
        assert retried.status.status_code.name == "UNSET"
        assert attrs(retried)[semconv.LLMTRACE_RETRY_ATTEMPT] == 2


# ---- 8. rate limiters: the wait is recorded, and is not time to first chunk ----------------------------
def limiter() -> InMemoryRateLimiter:
    # an empty bucket that fills every 0.25 s: each call waits about that long
    return InMemoryRateLimiter(requests_per_second=4, check_every_n_seconds=0.01, max_bucket_size=1)


WAIT = 0.2


def assert_waited(span: ReadableSpan, streamed: bool) -> None:
    a = attrs(span)
    wait = a[semconv.LLMTRACE_RATE_LIMIT_WAIT]
    assert wait >= WAIT
    assert span.end_time is not None and span.start_time is not None
    duration = (span.end_time - span.start_time) / 1e9
    assert wait <= duration
    if streamed:  # measured from the request: the wait, then the first chunk, within the call
        assert 0 <= a[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] <= duration - wait + 1e-3


async def test_rate_limiter_wait_when_instrumented(server, instrumented, span_exporter):
    model = chat_openai(server, rate_limiter=limiter(), stream_usage=True)
    model.invoke("hi")
    list(model.stream("hi"))
    await model.ainvoke("hi")
    [c async for c in model.astream("hi")]
    spans = span_exporter.get_finished_spans()
    assert [attrs(s).get(semconv.GEN_AI_REQUEST_STREAM, False) for s in spans] == [False, True, False, True]
    for span in spans:
        assert_waited(span, streamed=bool(attrs(span).get(semconv.GEN_AI_REQUEST_STREAM)))


def test_rate_limiter_wait_of_each_call_of_a_generate(server, instrumented, span_exporter):
    model = chat_openai(server, rate_limiter=limiter())
    model.generate([[HumanMessage("a")], [HumanMessage("b")]])  # both runs start, then each call acquires
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 2
    for span in spans:
        assert_waited(span, streamed=False)
