"""One-hour cache writes and service tiers through the real provider integrations: langchain-anthropic's
ChatAnthropic and langchain-openai's ChatOpenAI (chat completions and Responses API) against a local
server that answers each request with the next scripted reply. Costs are computed by hand from the
bundled prices.json."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import Generation, LLMResult
from langchain_openai import ChatOpenAI
from llmtrace_langchain import _extract

from llmtrace import semconv as sc
from llmtrace.testing import metric_points

from .conftest import attrs

CLAUDE = "claude-haiku-4-5-20251001"


def _reports_openai_cache_writes() -> bool:
    """Whether this langchain-openai puts OpenAI's ``cache_write_tokens`` in usage_metadata (as
    ``cache_creation``); older releases drop them (the cost is the same: no write price)."""
    import inspect

    from langchain_openai.chat_models import base

    return "cache_write_tokens" in inspect.getsource(base)


OPENAI_WRITES = 100 if _reports_openai_cache_writes() else None


class ScriptedServer:
    """Each POST is answered with the next reply: ``("json", body)`` or ``("sse", [(event, data)])``
    (an event name of None gives a bare ``data:`` line, and the stream then ends with ``[DONE]``)."""

    def __init__(self) -> None:
        self.replies: list[tuple[str, Any]] = []
        self.bodies: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                server.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                kind, payload = server.replies.pop(0)
                if kind == "json":
                    raw, content_type = json.dumps(payload).encode(), "application/json"
                else:
                    parts = [
                        (f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n"
                        for name, data in payload
                    ]
                    if any(name is None for name, _ in payload):
                        parts.append("data: [DONE]\n\n")
                    raw, content_type = "".join(parts).encode(), "text/event-stream"
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer()
    yield s
    s.close()


def _model_span(span_exporter) -> dict[str, Any]:
    (span,) = [s for s in span_exporter.get_finished_spans() if s.name.startswith("chat")]
    return attrs(span)


def _token_points(metric_reader) -> dict[str, tuple[int, dict[str, Any]]]:
    return {
        p.attributes[sc.GEN_AI_TOKEN_TYPE]: (p.sum, dict(p.attributes))
        for p in metric_points(metric_reader, sc.METRIC_CLIENT_TOKEN_USAGE)
    }


# --------------------------------------------------------------------------------------
# Anthropic
# --------------------------------------------------------------------------------------
def _claude(server: ScriptedServer) -> ChatAnthropic:
    return ChatAnthropic(model=CLAUDE, base_url=server.url, api_key="test", max_retries=0)


def _message(usage: dict[str, Any]) -> tuple[str, Any]:
    return (
        "json",
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": CLAUDE,
            "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        },
    )


CACHED = {
    "input_tokens": 10,
    "cache_read_input_tokens": 5000,
    "cache_creation_input_tokens": 2000,
    "output_tokens": 300,
}


def test_anthropic_one_hour_writes_and_tier(server, instrumented, span_exporter, metric_reader, records):
    lifetimes = {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 500}
    server.replies.append(_message({**CACHED, "cache_creation": lifetimes, "service_tier": "standard"}))
    assert _claude(server).invoke("hi").content == "hi"
    # claude-haiku-4-5: $1 input, $0.10 cache read, $1.25 5m write, $2 1h write, $5 output
    cost = (10 * 1 + 5000 * 0.1 + 1500 * 1.25 + 500 * 2 + 300 * 5) / 1e6
    assert cost == pytest.approx(0.004885)
    a = _model_span(span_exporter)
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == 7010
    assert a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 5000
    assert a[sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 2000  # langchain-anthropic says 0 here
    assert a[sc.LLMTRACE_USAGE_CACHE_WRITE_1H_INPUT_TOKENS] == 500
    assert a[sc.LLMTRACE_RESPONSE_SERVICE_TIER] == "standard"
    assert sc.OPENAI_RESPONSE_SERVICE_TIER not in a
    assert a[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(cost)
    (record,) = records
    assert (record.input_tokens, record.cache_write_tokens, record.cache_write_1h_tokens) == (7010, 2000, 500)
    assert (record.service_tier, record.unpriced_reason) == ("standard", None)
    assert record.cost == pytest.approx(cost)
    points = _token_points(metric_reader)
    assert {t: s for t, (s, _) in points.items()} == {"input": 7010, "output": 300}
    assert all(sc.OPENAI_RESPONSE_SERVICE_TIER not in p for _, p in points.values())
    (cost_point,) = metric_points(metric_reader, sc.METRIC_USAGE_COST)
    assert cost_point.value == pytest.approx(cost)


def test_anthropic_five_minute_writes_reported_by_lifetime_are_not_lost(server, instrumented, span_exporter):
    """Today's API always splits the writes by lifetime; langchain-anthropic then zeroes its total."""
    lifetimes = {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 0}
    server.replies.append(_message({**CACHED, "cache_creation": lifetimes}))
    _claude(server).invoke("hi")
    a = _model_span(span_exporter)
    assert a[sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 2000
    assert a[sc.LLMTRACE_USAGE_CACHE_WRITE_1H_INPUT_TOKENS] == 0
    assert a[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(
        (10 * 1 + 5000 * 0.1 + 2000 * 1.25 + 300 * 5) / 1e6
    )
    assert sc.LLMTRACE_RESPONSE_SERVICE_TIER not in a  # the response named no tier


def test_anthropic_tier_without_a_price_is_unpriced(server, instrumented, span_exporter, records):
    server.replies.append(_message({"input_tokens": 100, "output_tokens": 10, "service_tier": "priority"}))
    _claude(server).invoke("hi")
    a = _model_span(span_exporter)
    assert a[sc.LLMTRACE_RESPONSE_SERVICE_TIER] == "priority"
    assert a[sc.LLMTRACE_COST_UNPRICED] is True
    assert a[sc.LLMTRACE_COST_UNPRICED_REASON] == sc.UNPRICED_SERVICE_TIER
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in a
    assert [(r.cost, r.service_tier, r.unpriced_reason) for r in records] == [
        (None, "priority", sc.UNPRICED_SERVICE_TIER)
    ]


# --------------------------------------------------------------------------------------
# OpenAI chat completions
# --------------------------------------------------------------------------------------
def _openai(server: ScriptedServer, model: str, **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model=model,
        base_url=server.url + "/v1",
        api_key="test",
        max_retries=0,
        http_client=httpx.Client(),
        http_async_client=httpx.AsyncClient(),
        **kw,
    )


COMPLETION_USAGE = {
    "prompt_tokens": 10000,
    "completion_tokens": 2000,
    "total_tokens": 12000,
    "prompt_tokens_details": {"cached_tokens": 8000, "cache_write_tokens": 100},
    "completion_tokens_details": {"reasoning_tokens": 1500},
}


def _completion(tier: str) -> tuple[str, Any]:
    return (
        "json",
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "o3-2025-04-16",
            "service_tier": tier,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            ],
            "usage": COMPLETION_USAGE,
        },
    )


def test_openai_flex_call_keeps_cached_reasoning_and_write_tokens(
    server, instrumented, span_exporter, metric_reader, records
):
    """langchain-openai names a flex call's details flex_cache_read, flex_reasoning ..."""
    server.replies.append(_completion("flex"))
    _openai(server, "o3", service_tier="flex").invoke("hi")
    assert server.bodies[-1]["service_tier"] == "flex"
    a = _model_span(span_exporter)
    assert a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 8000
    assert a.get(sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS) == OPENAI_WRITES
    assert a[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 1500
    assert a[sc.OPENAI_RESPONSE_SERVICE_TIER] == "flex"
    assert sc.LLMTRACE_RESPONSE_SERVICE_TIER not in a
    # o3 flex: $1 input (cache writes too: no write price), $0.25 cached, $4 output
    cost = (1900 * 1 + 100 * 1 + 8000 * 0.25 + 2000 * 4) / 1e6
    assert a[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(cost) == pytest.approx(0.012)
    (record,) = records
    writes = record.cache_write_tokens
    assert (record.cache_read_tokens, writes, record.reasoning_tokens) == (8000, OPENAI_WRITES, 1500)
    assert record.service_tier == "flex" and record.cost == pytest.approx(cost)
    points = _token_points(metric_reader)
    assert {t: (s, p[sc.OPENAI_RESPONSE_SERVICE_TIER]) for t, (s, p) in points.items()} == {
        "input": (10000, "flex"),
        "output": (2000, "flex"),
    }


def test_openai_streamed_priority_call(server, instrumented, span_exporter, records):
    base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "o3-2025-04-16"}
    base["service_tier"] = "priority"
    chunks = [
        {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}],
        },
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": COMPLETION_USAGE},
    ]
    server.replies.append(("sse", [(None, c) for c in chunks]))
    assert "".join(str(c.content) for c in _openai(server, "o3", stream_usage=True).stream("hi")) == "hi"
    a = _model_span(span_exporter)
    assert (a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS], a[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS]) == (
        8000,
        1500,
    )
    assert a[sc.OPENAI_RESPONSE_SERVICE_TIER] == "priority"
    # o3 priority: $3.50 input, $0.875 cached, $14 output
    cost = (2000 * 3.5 + 8000 * 0.875 + 2000 * 14) / 1e6
    assert a[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(cost) == pytest.approx(0.042)
    assert records[0].service_tier == "priority"


# --------------------------------------------------------------------------------------
# OpenAI Responses API
# --------------------------------------------------------------------------------------
RESPONSE_USAGE = {
    "input_tokens": 10000,
    "input_tokens_details": {"cached_tokens": 8000, "cache_write_tokens": 100},
    "output_tokens": 2000,
    "output_tokens_details": {"reasoning_tokens": 1500},
    "total_tokens": 12000,
}


def _response(tier: str, done: bool = True) -> dict[str, Any]:
    message = {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "hi", "annotations": []}],
    }
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": "o4-mini-2025-04-16",
        "status": "completed" if done else "in_progress",
        "output": [message] if done else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "temperature": 1.0,
        "top_p": 1.0,
        "service_tier": tier,
        "usage": RESPONSE_USAGE if done else None,
    }


def test_openai_responses_priority_call(server, instrumented, span_exporter, records):
    server.replies.append(("json", _response("priority")))
    _openai(server, "o4-mini", use_responses_api=True, service_tier="priority").invoke("hi")
    a = _model_span(span_exporter)
    assert a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 8000
    assert a.get(sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS) == OPENAI_WRITES
    assert a[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 1500
    assert a[sc.OPENAI_RESPONSE_SERVICE_TIER] == "priority"
    # o4-mini priority: $2 input (and cache writes), $0.50 cached, $8 output
    cost = (2000 * 2 + 8000 * 0.5 + 2000 * 8) / 1e6
    assert a[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(cost) == pytest.approx(0.024)
    assert (records[0].service_tier, records[0].cost) == ("priority", pytest.approx(cost))


def test_openai_responses_streamed_flex_call(server, instrumented, span_exporter, records):
    created, final = _response("flex", done=False), _response("flex")
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events = [
        {"type": "response.created", "response": created},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**final["output"][0], "content": []},
        },
        {
            "type": "response.content_part.added",
            **where,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
        {"type": "response.output_text.delta", **where, "delta": "hi", "logprobs": []},
        {"type": "response.output_text.done", **where, "text": "hi", "logprobs": []},
        {"type": "response.output_item.done", "output_index": 0, "item": final["output"][0]},
        {"type": "response.completed", "response": final},
    ]
    for number, event in enumerate(events):
        event["sequence_number"] = number
    server.replies.append(("sse", [(e["type"], e) for e in events]))
    chunks = list(_openai(server, "o4-mini", use_responses_api=True, service_tier="flex").stream("hi"))
    assert chunks
    a = _model_span(span_exporter)
    assert (a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS], a[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS]) == (
        8000,
        1500,
    )
    assert a[sc.OPENAI_RESPONSE_SERVICE_TIER] == "flex"
    # o4-mini flex: $0.55 input, $0.1375 cached, $2.20 output
    cost = (2000 * 0.55 + 8000 * 0.1375 + 2000 * 2.2) / 1e6
    assert a[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(cost) == pytest.approx(0.0066)
    assert records[0].service_tier == "flex"


# --------------------------------------------------------------------------------------
# Shapes without the provider packages
# --------------------------------------------------------------------------------------
def test_tier_inferred_from_prefixed_details(instrumented, span_exporter):
    """A message whose metadata names no tier: the flex_ keys say it."""
    usage = {
        "input_tokens": 1000,
        "output_tokens": 100,
        "total_tokens": 1100,
        "input_token_details": {"flex_cache_read": 400, "flex": 600},
        "output_token_details": {"flex_reasoning": 50, "flex": 50},
    }
    model = GenericFakeChatModel(messages=iter([AIMessage(content="x", usage_metadata=usage)]))
    model.invoke("hi")
    a = _model_span(span_exporter)
    assert (a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS], a[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS]) == (
        400,
        50,
    )
    assert a[sc.LLMTRACE_RESPONSE_SERVICE_TIER] == "flex"  # a fake model: not an OpenAI provider


def test_llm_output_shapes():
    """Text-completion results: OpenAI's token_usage with cache writes and the tier beside it,
    Anthropic's raw usage with the writes by lifetime."""
    openai_style = LLMResult(
        generations=[[Generation(text="x")]],
        llm_output={"token_usage": COMPLETION_USAGE, "service_tier": "flex"},
    )
    assert _extract.usage(openai_style, _extract.generations(openai_style)) == (
        10000,
        2000,
        8000,
        100,
        1500,
        None,
        "flex",
    )
    lifetimes = {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 500}
    anthropic_style = LLMResult(
        generations=[[Generation(text="x")]],
        llm_output={"usage": {**CACHED, "cache_creation": lifetimes, "service_tier": "batch"}},
    )
    assert _extract.usage(anthropic_style, _extract.generations(anthropic_style)) == (
        7010,
        300,
        5000,
        2000,
        None,
        500,
        "batch",
    )
