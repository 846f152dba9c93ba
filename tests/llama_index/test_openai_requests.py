"""llama-index-llms-openai against the local server: structured outputs of ``OpenAIResponses`` (its own
``responses.parse`` call), Responses that report a failure instead of raising, and request parameters
recorded as they were sent."""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.llms import ChatMessage
from llama_index.core.prompts import PromptTemplate
from llama_index.llms.openai import OpenAI, OpenAIResponses
from opentelemetry.trace import StatusCode
from pydantic import BaseModel

from llmtrace import semconv
from llmtrace._safety import internal_error_counts
from tests.llama_index.conftest import is_child, one, open_runs, tree
from tests.llama_index.openai_server import MODEL

USER = [ChatMessage(role="user", content="hi")]
CITY_JSON = '{"name": "Paris", "population": 42}'
PARSED = {"text": CITY_JSON, "prompt_tokens": 1000, "completion_tokens": 20, "id": "resp_p1"}
CHAT = "chat gpt-4.1-mini"


def _calls_parse() -> bool:
    try:
        return ".parse(" in inspect.getsource(OpenAIResponses.structured_predict)
    except (OSError, TypeError):
        return False


parses = pytest.mark.skipif(
    not _calls_parse(),
    reason="this llama-index-llms-openai's OpenAIResponses.structured_predict goes through chat (tool calls)",
)
"""For the tests of ``OpenAIResponses.structured_predict`` calling ``responses.parse`` itself (later
llama-index-llms-openai releases; earlier ones are a chat call, traced as any)."""


class City(BaseModel):
    name: str
    population: int


def _responses(server: Any, **kwargs: Any) -> OpenAIResponses:
    return OpenAIResponses(
        model="gpt-4.1-mini", api_base=server.base_url, api_key="test", max_retries=0, **kwargs
    )


def _assert_parsed(span: Any) -> None:
    attrs = span.attributes
    assert span.status.status_code is StatusCode.UNSET
    assert attrs[semconv.GEN_AI_OPERATION_NAME] == semconv.OP_CHAT
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 1000
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 20
    # priced as the model that answered (the server says gpt-4o-mini)
    assert attrs[semconv.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx((1000 * 0.15 + 20 * 0.6) / 1e6)
    assert attrs[semconv.GEN_AI_RESPONSE_ID] == "resp_p1"
    assert attrs[semconv.GEN_AI_RESPONSE_MODEL] == MODEL
    assert attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attrs[semconv.GEN_AI_OUTPUT_TYPE] == semconv.OUTPUT_TYPE_JSON
    # responses.parse sends the model's fields none of its sampling parameters
    assert semconv.GEN_AI_REQUEST_TEMPERATURE not in attrs
    assert semconv.GEN_AI_REQUEST_TOP_P not in attrs


# ---- OpenAIResponses.structured_predict: one billed responses.parse call --------------------------
@parses
@pytest.mark.parametrize("how", ["sync", "async"])
def test_responses_structured_predict_is_one_model_span(
    instrumentor, openai_server, span_exporter, records, capture, how
):
    openai_server.replies = [dict(PARSED)]
    llm = _responses(openai_server, temperature=0.3)
    prompt = PromptTemplate("biggest city in {country}")
    kwargs: dict[str, Any] = {"llm_kwargs": {"max_output_tokens": 50}, "country": "France"}
    if how == "sync":
        city = llm.structured_predict(City, prompt, **kwargs)
    else:
        city = asyncio.run(llm.astructured_predict(City, prompt, **kwargs))
    assert city == City(name="Paris", population=42)
    sent = openai_server.requests[-1]["body"]
    assert sent["max_output_tokens"] == 50 and "temperature" not in sent
    span = one(span_exporter.get_finished_spans(), CHAT)
    _assert_parsed(span)
    assert span.attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 50
    assert json.loads(span.attributes[semconv.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "biggest city in France"}]}
    ]
    assert json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": CITY_JSON}], "finish_reason": "stop"}
    ]
    assert [(r.status, r.input_tokens, r.output_tokens) for r in records] == [("success", 1000, 20)]
    assert len(open_runs()) == 0
    assert not internal_error_counts()


@parses
def test_responses_structured_predict_error(instrumentor, openai_server, span_exporter):
    openai_server.replies = [{"status": 500}]
    with pytest.raises(Exception) as raised:
        _responses(openai_server).structured_predict(City, PromptTemplate("x"))
    assert getattr(raised.value, "status_code", None) == 500
    span = one(span_exporter.get_finished_spans(), CHAT)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[semconv.ERROR_TYPE] == "server_error"


@parses
def test_responses_structured_llm_chat_has_the_parse_usage(instrumentor, openai_server, span_exporter):
    openai_server.replies = [dict(PARSED)]
    response = _responses(openai_server).as_structured_llm(City).chat(USER)
    assert json.loads(str(response.message.content)) == {"name": "Paris", "population": 42}
    _assert_parsed(one(span_exporter.get_finished_spans(), CHAT))


@parses
def test_function_agent_output_class_on_responses(instrumentor, openai_server, span_exporter):
    openai_server.replies = [{"text": "Paris, 42 people.", "id": "resp_a"}, dict(PARSED)]
    agent = FunctionAgent(name="geo", tools=[], llm=_responses(openai_server), output_cls=City)

    async def main() -> Any:
        return await agent.run("biggest city in France?")

    assert asyncio.run(main()).structured_response == {"name": "Paris", "population": 42}
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_agent geo", f"  {CHAT}", f"  {CHAT}"]
    answer, structured = sorted((s for s in spans if s.name == CHAT), key=lambda s: s.start_time)
    assert answer.attributes[semconv.GEN_AI_RESPONSE_ID] == "resp_a"
    _assert_parsed(structured)
    assert is_child(structured, one(spans, "invoke_agent geo"))


@parses
def test_parse_calls_outside_llama_index_are_not_traced(instrumentor, openai_server, span_exporter):
    """The wrapped ``responses.parse`` passes other callers' calls through: no span, same result."""
    openai_server.replies = [dict(PARSED)]
    _responses(openai_server).structured_predict(City, PromptTemplate("x"))  # wraps openai's parse
    span_exporter.clear()
    import openai

    openai_server.replies = [dict(PARSED)]
    client = openai.OpenAI(base_url=openai_server.base_url, api_key="test", max_retries=0)
    parsed = client.responses.parse(model="gpt-4.1-mini", input="x", text_format=City)
    assert parsed.output_parsed == City(name="Paris", population=42)
    assert span_exporter.get_finished_spans() == ()


@parses
def test_uninstrument_restores_openai_parse(tracer_provider, openai_server):
    from llmtrace_llama_index import LlamaIndexInstrumentor
    from openai.resources.responses import AsyncResponses, Responses

    original, aoriginal = vars(Responses)["parse"], vars(AsyncResponses)["parse"]
    instrumentor = LlamaIndexInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        openai_server.replies = [dict(PARSED)]
        _responses(openai_server).structured_predict(City, PromptTemplate("x"))
        assert vars(Responses)["parse"] is not original
    finally:
        instrumentor.uninstrument()
    assert vars(Responses)["parse"] is original
    assert vars(AsyncResponses)["parse"] is aoriginal


# ---- Responses that report a failure instead of raising --------------------------------------------
def test_failed_response_stream_is_an_error(instrumentor, openai_server, span_exporter, records):
    openai_server.replies = [{"failed": "server_error", "prompt_tokens": 30, "completion_tokens": 4}]
    chunks = list(_responses(openai_server).stream_chat(USER))  # the caller gets no exception
    assert chunks[-1].raw.type == "response.failed"
    span = one(span_exporter.get_finished_spans(), CHAT)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[semconv.ERROR_TYPE] == "server_error"
    assert span.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("error",)
    assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 30  # billed all the same
    assert [(r.status, r.error_type) for r in records] == [("error", "server_error")]


def test_error_event_mid_stream_is_an_error(instrumentor, openai_server, span_exporter, capture):
    openai_server.replies = [{"text": "one two three", "error_event": "rate_limit_exceeded"}]
    chunks = list(_responses(openai_server).stream_chat(USER))
    assert chunks[-1].raw.type == "error"
    span = one(span_exporter.get_finished_spans(), CHAT)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[semconv.ERROR_TYPE] == "rate_limit"
    assert span.attributes[semconv.LLMTRACE_STREAM_CHUNKS] == 1  # the one delta: the error event is none
    output = json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert [message["finish_reason"] for message in output] == ["error"]  # not an invented "stop"


def test_failed_response_with_an_unknown_code(instrumentor, openai_server, span_exporter):
    openai_server.replies = [{"failed": "invalid_prompt"}]
    _responses(openai_server).chat(USER)
    span = one(span_exporter.get_finished_spans(), CHAT)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[semconv.ERROR_TYPE] == "invalid_prompt"


# ---- request parameters as sent --------------------------------------------------------------------
def _sent_and_recorded(server: Any, span_exporter: Any, name: str) -> tuple[dict[str, Any], Any]:
    return server.requests[-1]["body"], one(span_exporter.get_finished_spans(), name).attributes


def test_responses_request_parameters(instrumentor, openai_server, span_exporter):
    llm = OpenAIResponses(
        model="o4-mini",
        api_base=openai_server.base_url,
        api_key="test",
        max_retries=0,
        max_output_tokens=100,
        reasoning_options={"effort": "high"},
    )
    llm.chat(USER)
    sent, attrs = _sent_and_recorded(openai_server, span_exporter, "chat o4-mini")
    assert (sent["max_output_tokens"], sent["reasoning"]) == (100, {"effort": "high"})
    assert attrs[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 100
    assert attrs[semconv.GEN_AI_REQUEST_REASONING_LEVEL] == "high"
    # what was sent, whichever it is: recent releases send no sampling parameters with reasoning
    # options, older ones send their defaults
    assert attrs.get(semconv.GEN_AI_REQUEST_TEMPERATURE) == sent.get("temperature")
    assert attrs.get(semconv.GEN_AI_REQUEST_TOP_P) == sent.get("top_p")


def test_chat_completions_request_parameters(instrumentor, openai_server, span_exporter):
    llm = OpenAI(
        model="o3-mini",
        api_base=openai_server.base_url,
        api_key="test",
        max_retries=0,
        reasoning_effort="low",
        max_tokens=64,
    )
    llm.chat(USER, max_tokens=5)
    sent, attrs = _sent_and_recorded(openai_server, span_exporter, "chat o3-mini")
    assert (sent["reasoning_effort"], sent["max_completion_tokens"]) == ("low", 64)
    assert attrs[semconv.GEN_AI_REQUEST_REASONING_LEVEL] == "low"
    assert attrs[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 64  # the field wins over the call's
    span_exporter.clear()
    plain = OpenAI(
        model="gpt-4o-mini",
        api_base=openai_server.base_url,
        api_key="test",
        max_retries=0,
        additional_kwargs={"temperature": 0.2},
    )
    plain.chat(USER, temperature=0.9)
    sent, attrs = _sent_and_recorded(openai_server, span_exporter, "chat gpt-4o-mini")
    assert sent["temperature"] == attrs[semconv.GEN_AI_REQUEST_TEMPERATURE] == 0.2


@pytest.mark.parametrize("captured", [True, False], ids=["capture", "no_capture"])
def test_responses_instructions_and_previous_response(
    instrumentor, openai_server, span_exporter, content_capture, captured
):
    from llmtrace._content import CaptureMode, ContentPolicy

    if captured:
        content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_ONLY)
    openai_server.replies = [{"id": "resp_first"}, {"id": "resp_second"}]
    llm = _responses(openai_server, instructions="Answer in French.", track_previous_responses=True)
    llm.chat(USER)
    llm.chat(USER)
    assert openai_server.requests[-1]["body"]["previous_response_id"] == "resp_first"
    first, second = sorted(span_exporter.get_finished_spans(), key=lambda s: s.start_time)
    assert semconv.GEN_AI_REQUEST_PREVIOUS_RESPONSE_ID not in first.attributes
    assert second.attributes[semconv.GEN_AI_REQUEST_PREVIOUS_RESPONSE_ID] == "resp_first"
    instructions = second.attributes.get(semconv.GEN_AI_SYSTEM_INSTRUCTIONS)
    if captured:
        assert json.loads(instructions) == [{"type": "text", "content": "Answer in French."}]
    else:
        assert instructions is None


def test_structured_llm_on_chat_completions_sets_output_type(instrumentor, openai_server, span_exporter):
    openai_server.replies = [{"text": CITY_JSON}]
    llm = OpenAI(model="gpt-4o-mini", api_base=openai_server.base_url, api_key="test", max_retries=0)
    try:
        llm.as_structured_llm(City).chat(USER)
    except ValueError:  # the server answered text to a forced tool call
        assert "tools" in openai_server.requests[-1]["body"]
        pytest.skip("this llama-index-llms-openai's as_structured_llm calls a tool, not response_format")
    assert openai_server.requests[-1]["body"]["response_format"]["type"] == "json_schema"
    attrs = one(span_exporter.get_finished_spans(), "chat gpt-4o-mini").attributes
    assert attrs[semconv.GEN_AI_OUTPUT_TYPE] == semconv.OUTPUT_TYPE_JSON


@parses
@pytest.mark.parametrize("place", ["_describe", "_apply_response"])
def test_a_failure_in_the_parse_wrapper_leaves_structured_predict_alone(
    instrumentor, openai_server, span_exporter, monkeypatch, place
):
    # the wrapper sits inside openai's client: whatever llmtrace's part of it raises, the user
    # gets the parsed object, and the failure is counted
    from llmtrace_llama_index import _parse

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected")

    if place == "_describe":
        monkeypatch.setattr(_parse.LlamaIndexSpanHandler, "_describe_model", broken)
    else:
        monkeypatch.setattr(_parse, "_apply_response", broken)
    openai_server.replies = [dict(PARSED)]
    city = _responses(openai_server).structured_predict(
        City, PromptTemplate("biggest city in {c}"), c="France"
    )
    assert city == City(name="Paris", population=42)
    assert any(where.startswith("llmtrace_llama_index._parse.") for where in internal_error_counts())
    assert len(open_runs()) == 0
