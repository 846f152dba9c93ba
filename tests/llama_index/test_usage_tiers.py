"""Cache writes, one-hour cache writes and service tiers in LlamaIndex responses: llama-index-llms-openai
(chat completions and Responses API) against the local server, and Anthropic raw responses built
with the anthropic SDK's own types. Costs are computed by hand from the bundled prices.json."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from anthropic.types import Message
from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai import OpenAI, OpenAIResponses
from llmtrace_llama_index import _extract

from llmtrace import semconv as sc
from llmtrace.testing import metric_points
from tests.llama_index.conftest import one

USER = [ChatMessage(role="user", content="hi")]
CACHED = {"prompt_tokens": 1000, "completion_tokens": 100, "cached": 400, "cache_write": 200}
# gpt-4o-mini: $0.15 input (cache writes too: no write price), $0.075 cached, $0.60 output
MINI_COST = (400 * 0.15 + 200 * 0.15 + 400 * 0.075 + 100 * 0.6) / 1e6
# gpt-4o-mini priority: $0.25 input, $0.125 cached, $1 output
MINI_PRIORITY_COST = (600 * 0.25 + 400 * 0.125 + 100 * 1) / 1e6


def _chat(server: Any) -> OpenAI:
    return OpenAI(model="gpt-4o-mini", api_base=server.base_url, api_key="test", max_retries=0)


def _responses(server: Any) -> OpenAIResponses:
    return OpenAIResponses(model="gpt-4o-mini", api_base=server.base_url, api_key="test", max_retries=0)


def _stream_with_usage(server: Any) -> list[ChatResponse]:
    llm = OpenAI(
        model="gpt-4o-mini",
        api_base=server.base_url,
        api_key="test",
        max_retries=0,
        additional_kwargs={"stream_options": {"include_usage": True}},
    )
    return list(llm.stream_chat(USER))


def _astream_responses(server: Any) -> list[ChatResponse]:
    async def run() -> list[ChatResponse]:
        return [chunk async for chunk in await _responses(server).astream_chat(USER)]

    return asyncio.run(run())


@pytest.mark.parametrize(
    "call",
    [
        lambda s: [_chat(s).chat(USER)],
        _stream_with_usage,
        lambda s: [_responses(s).chat(USER)],
        _astream_responses,
    ],
    ids=["chat", "stream_chat", "responses", "responses_astream"],
)
def test_openai_cache_writes_reach_the_span_and_the_cost(
    instrumentor, openai_server, span_exporter, metric_reader, call
):
    openai_server.replies = [CACHED]
    chunks = call(openai_server)
    (span,) = [s for s in span_exporter.get_finished_spans() if s.name == "chat gpt-4o-mini"]
    a = dict(span.attributes)
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == 1000
    assert a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 400
    assert a[sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 200
    assert a[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(MINI_COST)
    assert _extract.usage_from_response(chunks[-1]).cache_write_tokens == 200
    (cost_point,) = metric_points(metric_reader, sc.METRIC_USAGE_COST)
    assert cost_point.value == pytest.approx(MINI_COST)


@pytest.mark.parametrize(
    "call",
    [lambda s: [_chat(s).chat(USER)], _stream_with_usage, lambda s: [_responses(s).chat(USER)]],
    ids=["chat", "stream_chat", "responses"],
)
def test_openai_service_tier_read_from_the_raw_response(openai_server, call):
    openai_server.replies = [{**CACHED, "service_tier": "priority"}]
    chunks = call(openai_server)
    assert (
        openai_server.requests[0]["body"].get("service_tier") is None
    )  # the response's tier, not a request's
    assert _extract.usage_from_response(chunks[-1]) == _extract.UsageCounts(
        input_tokens=1000,
        output_tokens=100,
        cache_read_tokens=400,
        cache_write_tokens=200,
        reasoning_tokens=0,
        service_tier="priority",
    )


def test_openai_priority_call_priced_at_priority(instrumentor, openai_server, span_exporter, metric_reader):
    openai_server.replies = [{**CACHED, "service_tier": "priority"}]
    _chat(openai_server).chat(USER)
    a = dict(one(span_exporter.get_finished_spans(), "chat gpt-4o-mini").attributes)
    assert a[sc.OPENAI_RESPONSE_SERVICE_TIER] == "priority"
    assert a[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(MINI_PRIORITY_COST)
    tiers = {
        p.attributes[sc.OPENAI_RESPONSE_SERVICE_TIER]
        for p in metric_points(metric_reader, sc.METRIC_CLIENT_TOKEN_USAGE)
    }
    assert tiers == {"priority"}


# --------------------------------------------------------------------------------------
# Anthropic raw responses (llama-index-llms-anthropic keeps the SDK's message, or its dict, as raw)
# --------------------------------------------------------------------------------------
ANTHROPIC_USAGE = {
    "input_tokens": 10,
    "output_tokens": 300,
    "cache_read_input_tokens": 5000,
    "cache_creation_input_tokens": 2000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 500},
    "service_tier": "standard",
}


def _anthropic_message(usage: dict[str, Any]) -> Message:
    return Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
    )


@pytest.mark.parametrize("as_dict", [False, True], ids=["sdk_message", "dict"])
def test_anthropic_one_hour_writes_and_tier(as_dict):
    message = _anthropic_message(ANTHROPIC_USAGE)
    raw: Any = message.model_dump() if as_dict else message
    assert _extract.usage_from_raw(raw) == _extract.UsageCounts(
        input_tokens=7010,
        output_tokens=300,
        cache_read_tokens=5000,
        cache_write_tokens=2000,
        cache_write_1h_tokens=500,
        service_tier="standard",
    )


def test_anthropic_writes_by_lifetime_above_the_total_are_counted():
    """A total that says less than its parts (0, as langchain-anthropic rewrites it): the parts."""
    usage = {**ANTHROPIC_USAGE, "cache_creation_input_tokens": 0, "service_tier": "priority"}
    counts = _extract.usage_from_raw(_anthropic_message(usage))
    assert counts is not None
    assert (counts.input_tokens, counts.cache_write_tokens, counts.cache_write_1h_tokens) == (7010, 2000, 500)
    assert counts.service_tier == "priority"
