"""llama-index-llms-openai's ``OpenAIResponses`` (the Responses API) against the local server, and
the provider of a user's subclass of a provider's class."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.llms.openai import OpenAI, OpenAIResponses
from llmtrace_llama_index import _extract
from openai.types.responses import ResponseUsage
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from llmtrace import semconv
from llmtrace._safety import internal_error_counts
from llmtrace.testing import metric_points
from tests.llama_index.conftest import one

USER = [ChatMessage(role="user", content="hi")]
SNAPSHOT = "o4-mini-2025-04-16"
REPLY = {
    "text": "Hello there!",
    "prompt_tokens": 10000,
    "completion_tokens": 2000,
    "cached": 8000,
    "reasoning": 1500,
    "id": "resp_abc",
    "model": SNAPSHOT,
}
COST = (2000 * 1.1 + 8000 * 0.275 + 2000 * 4.4) / 1e6  # o4-mini: uncached input, cache reads, output


def _llm(server: Any) -> OpenAIResponses:
    return OpenAIResponses(model="o4-mini", api_base=server.base_url, api_key="test", max_retries=0)


def _stream(llm: OpenAIResponses) -> list[ChatResponse]:
    return list(llm.stream_chat(USER))


def _astream(llm: OpenAIResponses) -> list[ChatResponse]:
    async def run() -> list[ChatResponse]:
        return [chunk async for chunk in await llm.astream_chat(USER)]

    return asyncio.run(run())


def _assert_usage_and_response(span: Any, metric_reader: Any) -> None:
    attrs = span.attributes
    assert attrs[semconv.GEN_AI_PROVIDER_NAME] == semconv.PROVIDER_OPENAI
    assert attrs[semconv.GEN_AI_REQUEST_MODEL] == "o4-mini"
    assert attrs[semconv.GEN_AI_RESPONSE_MODEL] == SNAPSHOT
    assert attrs[semconv.GEN_AI_RESPONSE_ID] == "resp_abc"
    assert attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 10000
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 2000
    assert attrs[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 8000
    assert attrs[semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 1500
    assert semconv.LLMTRACE_USAGE_REPORTED not in attrs  # only set (false) when usage is missing
    assert attrs[semconv.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(COST)
    tokens = metric_points(metric_reader, semconv.METRIC_CLIENT_TOKEN_USAGE)
    assert sorted(p.sum for p in tokens) == [2000, 10000]
    assert not internal_error_counts()


@pytest.mark.parametrize("call", [_stream, _astream], ids=["stream_chat", "astream_chat"])
def test_streamed_responses_report_usage_cost_model_and_id(
    instrumentor, openai_server, span_exporter, metric_reader, call
):
    openai_server.replies = [REPLY]
    chunks = call(_llm(openai_server))
    assert openai_server.requests[0]["path"] == "/v1/responses"
    assert openai_server.requests[0]["body"]["stream"] is True
    # the deltas: how the last chunk's message carries the text varies across llama-index-llms-openai
    assert "".join(chunk.delta or "" for chunk in chunks) == "Hello there!"
    span = one(span_exporter.get_finished_spans(), "chat o4-mini")
    assert len(chunks) == 10  # one a server-sent event
    assert span.attributes[semconv.LLMTRACE_STREAM_CHUNKS] == 3  # the two words, the final event
    _assert_usage_and_response(span, metric_reader)


CALL = {"id": "call_1", "name": "add", "arguments": {"a": 1, "b": 2}}


@pytest.mark.parametrize(
    ("reply", "events", "counted"),
    [
        # created, in_progress, message added, part added, 3 deltas, text done, part done, item done,
        # completed: the deltas and the final event (usage, finish reason) count
        ({"text": "one two three"}, 11, 4),
        # the reasoning item's 7 events (2 summary deltas) before the message's 6 (1 delta)
        ({"summary": ["Let me", " think"], "text": "Hi"}, 16, 4),
        # the call's start (its name and id), its 2 argument deltas, the final event
        ({"tool_calls": [CALL]}, 8, 4),
    ],
    ids=["text", "reasoning", "tool_call"],
)
@pytest.mark.parametrize("call", [_stream, _astream], ids=["stream_chat", "astream_chat"])
def test_stream_counts_the_events_that_carry_the_answer(
    instrumentor, openai_server, span_exporter, metric_reader, call, reply, events, counted
):
    """As for a chat-completions stream (a chunk per delta, then the finish and usage): the events
    that only frame the answer (``response.created``, ``content_part.added``, ``*.done``...) are no
    chunks."""
    openai_server.replies = [reply]
    chunks = call(_llm(openai_server))
    assert len(chunks) == events
    assert chunks[-1].raw.type == "response.completed"
    attrs = one(span_exporter.get_finished_spans(), "chat o4-mini").attributes
    assert attrs[semconv.LLMTRACE_STREAM_CHUNKS] == counted
    assert attrs[semconv.GEN_AI_REQUEST_STREAM] is True
    assert attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == (
        ("tool_call",) if "tool_calls" in reply else ("stop",)
    )
    assert [p.count for p in metric_points(metric_reader, semconv.METRIC_CLIENT_TIME_TO_FIRST_CHUNK)] == [1]


PAUSE = 0.3


@pytest.mark.parametrize("call", [_stream, _astream], ids=["stream_chat", "astream_chat"])
def test_time_to_first_chunk_is_the_first_delta_not_the_first_event(
    instrumentor, openai_server, span_exporter, metric_reader, call
):
    """The server sends ``response.created`` ... ``content_part.added`` at once, then waits before
    the first delta: the time to first chunk is at least that wait."""
    openai_server.replies = [{**REPLY, "pause": PAUSE}]
    call(_llm(openai_server))
    attrs = one(span_exporter.get_finished_spans(), "chat o4-mini").attributes
    assert attrs[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= PAUSE
    assert attrs[semconv.LLMTRACE_STREAM_CHUNKS] == 3
    (point,) = metric_points(metric_reader, semconv.METRIC_CLIENT_TIME_TO_FIRST_CHUNK)
    assert point.count == 1 and point.sum >= PAUSE


def test_which_responses_events_count_as_chunks() -> None:
    """Every chunk of other providers counts; of a Responses stream, what carries the answer."""

    def counts(raw: Any) -> bool:
        return _extract.counts_as_chunk(ChatResponse(message=ChatMessage(role="assistant"), raw=raw))

    assert counts(None) and counts({"id": "chatcmpl-1", "choices": []})
    assert counts({"type": "content_block_delta"})  # Anthropic's events are not the Responses API's
    for kind in (
        "response.output_text.delta",
        "response.refusal.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
        "response.function_call_arguments.delta",
        "response.audio.delta",
    ):
        assert counts({"type": kind, "delta": "x"}), kind
    assert not counts({"type": "response.output_text.delta", "delta": ""})  # nothing in it
    for kind in ("response.completed", "response.incomplete", "response.failed"):
        assert counts({"type": kind, "response": {}}), kind
    assert counts({"type": "response.image_generation_call.partial_image", "partial_image_b64": "AA=="})
    assert counts({"type": "response.output_item.added", "item": {"type": "function_call"}})
    assert not counts({"type": "response.output_item.added", "item": {"type": "message"}})
    assert not counts({"type": "response.output_item.added", "item": {"type": "reasoning"}})
    for kind in (
        "response.created",
        "response.in_progress",
        "response.queued",
        "response.content_part.added",
        "response.output_text.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_text.annotation.added",
        "response.web_search_call.searching",
    ):
        assert not counts({"type": kind}), kind


def test_unstreamed_response_reports_the_same(instrumentor, openai_server, span_exporter, metric_reader):
    openai_server.replies = [REPLY]
    assert _llm(openai_server).chat(USER).message.content == "Hello there!"
    assert openai_server.requests[0]["path"] == "/v1/responses"
    _assert_usage_and_response(one(span_exporter.get_finished_spans(), "chat o4-mini"), metric_reader)


def test_incomplete_streamed_response_keeps_usage_and_says_why(instrumentor, openai_server, span_exporter):
    """The last event is ``response.incomplete``, whose usage LlamaIndex does not copy anywhere."""
    openai_server.replies = [{**REPLY, "incomplete": "max_output_tokens"}]
    chunks = _stream(_llm(openai_server))
    assert chunks[-1].additional_kwargs.get("usage") is None
    attrs = one(span_exporter.get_finished_spans(), "chat o4-mini").attributes
    assert attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("length",)
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 10000
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 2000
    assert attrs[semconv.GEN_AI_RESPONSE_ID] == "resp_abc"


def test_usage_object_in_additional_kwargs_without_raw() -> None:
    usage = ResponseUsage(
        input_tokens=300,
        input_tokens_details=InputTokensDetails(cached_tokens=100, cache_write_tokens=0),
        output_tokens=40,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=30),
        total_tokens=340,
    )
    response = ChatResponse(
        message=ChatMessage(role="assistant", content="x"), additional_kwargs={"usage": usage}
    )
    assert _extract.usage_from_response(response) == _extract.UsageCounts(
        input_tokens=300, output_tokens=40, cache_read_tokens=100, cache_write_tokens=0, reasoning_tokens=30
    )
    as_dict = ChatResponse(
        message=ChatMessage(role="assistant", content="x"), additional_kwargs={"usage": usage.model_dump()}
    )
    assert _extract.usage_from_response(as_dict) == _extract.usage_from_response(response)


def test_in_progress_event_gives_id_and_model_but_no_finish_reason(openai_server) -> None:
    """The status of a response still streaming (``in_progress``) is no finish reason."""
    openai_server.replies = [REPLY]
    chunks = _stream(_llm(openai_server))
    first = _extract.response_info(chunks[0])  # response.created
    assert (first.response_id, first.response_model, first.finish_reasons) == ("resp_abc", SNAPSHOT, None)
    assert _extract.usage_from_response(chunks[0]) is None
    assert _extract.response_info(chunks[-1]).finish_reasons == ["stop"]


# --------------------------------------------------------------------------------------
# Provider of a subclass
# --------------------------------------------------------------------------------------
class Acme(OpenAI):
    """A user's subclass whose own name names no provider."""


class AcmeTool(MockLLM):
    """A subclass of a class that names no provider either."""


LiteLLM = type("LiteLLM", (MockLLM,), {})  # stands in for llama-index-llms-litellm's class


class Gateway(LiteLLM):  # type: ignore[misc,valid-type]
    pass


class AnthropicProxy(OpenAI):
    """Its own name names a provider: that one wins over its base's."""


def test_subclass_provider_is_the_first_class_in_the_mro_that_names_one() -> None:
    acme = Acme(model="gpt-4o-mini", api_key="test")  # no network
    assert _extract.provider_name(acme) == semconv.PROVIDER_OPENAI
    assert _extract.known_provider(acme) == semconv.PROVIDER_OPENAI
    assert _extract.provider_name(AnthropicProxy(model="gpt-4o-mini", api_key="test")) == (
        semconv.PROVIDER_ANTHROPIC
    )
    assert _extract.provider_name(Gateway()) == "litellm"  # a product the conventions have no value for
    assert _extract.known_provider(Gateway()) is None
    assert _extract.provider_name(AcmeTool()) == "acmetool"  # no class names one: its own name, as before
    assert _extract.provider_name(MockLLM()) == "mock"
    assert _extract._providers[Acme] == (semconv.PROVIDER_OPENAI, semconv.PROVIDER_OPENAI)  # cached


def test_subclass_model_span_names_its_base_provider(instrumentor, openai_server, span_exporter):
    llm = Acme(model="gpt-4o-mini", api_base=openai_server.base_url, api_key="test", max_retries=0)
    assert llm.chat(USER).message.content == "Hello there!"
    span = one(span_exporter.get_finished_spans(), "chat gpt-4o-mini")
    assert span.attributes[semconv.GEN_AI_PROVIDER_NAME] == semconv.PROVIDER_OPENAI
