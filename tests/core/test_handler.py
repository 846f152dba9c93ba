"""The telemetry handler: span names, kinds, attributes, errors, usage, cost and metrics."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

import llmtrace
from llmtrace import semconv as sc
from llmtrace._content import CaptureMode, ContentPolicy
from llmtrace._usage import UsageRecord
from llmtrace.testing import metric_points

USAGE_AND_COST_KEYS = {
    sc.GEN_AI_USAGE_INPUT_TOKENS,
    sc.GEN_AI_USAGE_OUTPUT_TOKENS,
    sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    sc.GEN_AI_USAGE_COST_AMOUNT,
    sc.GEN_AI_USAGE_COST_CURRENCY,
    sc.GEN_AI_USAGE_COST_SOURCE,
    sc.LLMTRACE_COST_UNPRICED,
}


def test_chat_span_name_kind_and_attributes(telemetry_handler, span_exporter):
    inv = telemetry_handler.start_chat(
        "gpt-4o", provider=sc.PROVIDER_OPENAI, server_address="127.0.0.1", server_port=8080
    )
    inv.temperature = 0.2
    inv.max_tokens = 100
    inv.top_k = 5
    inv.stop_sequences = ["\n"]
    inv.response_id = "chatcmpl-1"
    inv.response_model = "gpt-4o-2024-08-06"
    inv.finish_reasons = ["stop"]
    inv.set_usage(input_tokens=1000, output_tokens=500, cache_read_tokens=200)
    inv.stop()
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "chat gpt-4o"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    attrs = dict(span.attributes)
    cost = attrs.pop(sc.GEN_AI_USAGE_COST_AMOUNT)
    # gpt-4o: $2.50 / 1M input, $1.25 / 1M cached input, $10 / 1M output
    assert cost == pytest.approx(800 * 2.5e-6 + 200 * 1.25e-6 + 500 * 10e-6)
    assert attrs == {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
        sc.SERVER_ADDRESS: "127.0.0.1",
        sc.SERVER_PORT: 8080,
        sc.GEN_AI_REQUEST_TEMPERATURE: 0.2,
        sc.GEN_AI_REQUEST_MAX_TOKENS: 100,
        sc.GEN_AI_REQUEST_TOP_K: 5,
        sc.GEN_AI_REQUEST_STOP_SEQUENCES: ("\n",),
        sc.GEN_AI_RESPONSE_ID: "chatcmpl-1",
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
        sc.GEN_AI_USAGE_INPUT_TOKENS: 1000,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 500,
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 200,
        sc.GEN_AI_USAGE_COST_CURRENCY: "USD",
        sc.GEN_AI_USAGE_COST_SOURCE: "local",
    }


def test_chat_metrics(telemetry_handler, metric_reader):
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
    inv.set_usage(input_tokens=1000, output_tokens=500)
    inv.stop()
    tokens = metric_points(metric_reader, sc.METRIC_CLIENT_TOKEN_USAGE)
    by_type = {p.attributes[sc.GEN_AI_TOKEN_TYPE]: p for p in tokens}
    assert by_type["input"].sum == 1000 and by_type["output"].sum == 500
    assert by_type["input"].attributes == {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
        sc.GEN_AI_TOKEN_TYPE: "input",
    }
    assert tuple(by_type["input"].explicit_bounds) == tuple(float(b) for b in sc.TOKEN_BUCKETS)
    (duration,) = metric_points(metric_reader, sc.METRIC_CLIENT_OPERATION_DURATION)
    assert duration.count == 1
    assert tuple(duration.explicit_bounds) == sc.DURATION_BUCKETS
    (cost,) = metric_points(metric_reader, sc.METRIC_USAGE_COST)
    assert cost.value == pytest.approx(1000 * 2.5e-6 + 500 * 10e-6)


def test_unknown_model_is_unpriced_never_zero(telemetry_handler, span_exporter, metric_reader):
    inv = telemetry_handler.start_chat("my-private-model", provider="openai")
    inv.set_usage(input_tokens=10, output_tokens=5)
    inv.stop()
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes[sc.LLMTRACE_COST_UNPRICED] is True
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in span.attributes
    assert sc.GEN_AI_USAGE_COST_CURRENCY not in span.attributes
    assert metric_points(metric_reader, sc.METRIC_USAGE_COST) == []


def test_no_usage_reported_is_said_not_guessed(telemetry_handler, span_exporter, metric_reader):
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai", stream=True)
    inv.chunk()
    inv.chunk()
    inv.stop()
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes[sc.LLMTRACE_USAGE_REPORTED] is False
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in span.attributes
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in span.attributes
    assert sc.LLMTRACE_COST_UNPRICED not in span.attributes
    assert span.attributes[sc.GEN_AI_REQUEST_STREAM] is True
    assert span.attributes[sc.LLMTRACE_STREAM_CHUNKS] == 2
    ttfc = span.attributes[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert 0 <= ttfc < 1
    (point,) = metric_points(metric_reader, sc.METRIC_CLIENT_TIME_TO_FIRST_CHUNK)
    assert point.count == 1 and point.sum == pytest.approx(ttfc)
    assert metric_points(metric_reader, sc.METRIC_CLIENT_TOKEN_USAGE) == []


def test_cache_hit_costs_zero_and_bills_no_tokens(telemetry_handler, span_exporter, metric_reader):
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
    inv.cache_hit = True
    inv.cache_source = "InMemoryCache"
    inv.set_usage(input_tokens=1000, output_tokens=500)  # the cached response's original usage
    inv.stop()
    miss = telemetry_handler.start_chat("gpt-4o", provider="openai")
    miss.cache_hit = False
    miss.cache_source = "InMemoryCache"
    miss.set_usage(input_tokens=10, output_tokens=5)
    miss.stop()
    hit_span, miss_span = span_exporter.get_finished_spans()
    assert hit_span.attributes[sc.LLMTRACE_CACHE_HIT] is True
    assert hit_span.attributes[sc.LLMTRACE_CACHE_SOURCE] == "InMemoryCache"
    assert hit_span.attributes[sc.GEN_AI_USAGE_COST_AMOUNT] == 0.0
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in hit_span.attributes
    assert miss_span.attributes[sc.LLMTRACE_CACHE_HIT] is False
    assert miss_span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 10
    token_sums = sorted(p.sum for p in metric_points(metric_reader, sc.METRIC_CLIENT_TOKEN_USAGE))
    assert token_sums == [5, 10]  # only the miss was billed
    lookups = {
        p.attributes[sc.LLMTRACE_CACHE_HIT]: p.value
        for p in metric_points(metric_reader, sc.METRIC_CACHE_LOOKUPS)
    }
    assert lookups == {True: 1, False: 1}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        (-5, None),
        ("abc", None),
        (float("nan"), None),
        (12.0, 12),
        ("12", 12),
        (True, None),
        (10**15, None),
    ],
)
def test_malformed_token_counts(telemetry_handler, span_exporter, raw, expected):
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
    inv.set_usage(input_tokens=raw, output_tokens=3)
    inv.stop()
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes.get(sc.GEN_AI_USAGE_INPUT_TOKENS) == expected
    assert span.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 3


@pytest.mark.parametrize("model", ["", None])
def test_empty_model(telemetry_handler, span_exporter, model):
    inv = telemetry_handler.start_chat(model, provider="openai")
    inv.set_usage(input_tokens=1, output_tokens=1)
    inv.stop()
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "chat"
    assert sc.GEN_AI_REQUEST_MODEL not in span.attributes
    assert span.attributes[sc.LLMTRACE_COST_UNPRICED] is True


def test_error_status_and_type(telemetry_handler, span_exporter, metric_reader):
    import httpx
    import openai

    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    error = openai.RateLimitError("slow down", response=httpx.Response(429, request=request), body=None)
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
    inv.fail(error)
    inv.fail(ValueError("second end is ignored"))
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is None  # messages are content: not recorded by default
    assert span.attributes[sc.ERROR_TYPE] == "rate_limit"
    (event,) = span.events
    assert event.name == "exception"
    assert dict(event.attributes) == {sc.EXCEPTION_TYPE: "RateLimitError"}
    (duration,) = metric_points(metric_reader, sc.METRIC_CLIENT_OPERATION_DURATION)
    assert duration.attributes[sc.ERROR_TYPE] == "rate_limit"


PROMPT_ECHO = "422: {'input': 'my SSN is 123-45-6789', 'key': 'sk-proj-abcdefghijklmnopqrstuvwxyz123456'}"


def _failed_span(telemetry_handler, span_exporter) -> Any:
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
    inv.fail(ValueError(PROMPT_ECHO))
    (span,) = span_exporter.get_finished_spans()
    return span


def _recorded_text(span) -> str:
    return json.dumps(
        [span.status.description, dict(span.attributes), [dict(e.attributes) for e in span.events]]
    )


def test_exception_messages_are_content_and_not_recorded_by_default(telemetry_handler, span_exporter):
    """A provider or framework error may quote the prompt or the arguments (a 422 echoing its input)."""
    span = _failed_span(telemetry_handler, span_exporter)
    assert "123-45-6789" not in _recorded_text(span) and "abcdefghijklmnop" not in _recorded_text(span)
    assert span.status.description is None
    assert [dict(e.attributes) for e in span.events] == [{sc.EXCEPTION_TYPE: "ValueError"}]
    assert span.attributes[sc.ERROR_TYPE] == "ValueError"


@pytest.mark.parametrize("how", ["capture on spans", "error messages switched on"])
def test_exception_messages_when_recorded_are_masked_and_redacted(
    telemetry_handler, span_exporter, content_capture, how
):
    def hook(key: str, value: Any) -> Any:
        return value.replace("123-45-6789", "<ssn>") if key == sc.EXCEPTION_MESSAGE else value

    if how == "capture on spans":
        content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_ONLY, redact=hook)
    else:
        content_capture.content = ContentPolicy(redact=hook)
        content_capture.error_messages = True
    span = _failed_span(telemetry_handler, span_exporter)
    assert span.status.description == "422: {'input': 'my SSN is <ssn>', 'key': '[REDACTED]'}"
    (event,) = span.events
    assert event.attributes[sc.EXCEPTION_MESSAGE] == span.status.description
    assert "123-45-6789" not in _recorded_text(span) and "abcdefghijklmnop" not in _recorded_text(span)


def test_exception_messages_on_events_only_mode_stay_off_spans(
    telemetry_handler, span_exporter, content_capture
):
    content_capture.content = ContentPolicy(mode=CaptureMode.EVENT_ONLY)
    span = _failed_span(telemetry_handler, span_exporter)
    assert span.status.description is None


def test_embeddings_span(telemetry_handler, span_exporter):
    inv = telemetry_handler.start_embeddings("text-embedding-3-small", provider="openai")
    inv.dimension_count = 1536
    inv.input_count = 3
    inv.set_usage(input_tokens=30)
    inv.stop()
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "embeddings text-embedding-3-small"
    assert span.kind is SpanKind.CLIENT
    assert span.attributes[sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 1536
    assert span.attributes[sc.LLMTRACE_EMBEDDINGS_INPUT_COUNT] == 3
    # text-embedding-3-small: $0.02 / 1M tokens
    assert span.attributes[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(30 * 0.02e-6)


def test_agent_tool_and_model_tree(telemetry_handler, span_exporter, metric_reader):
    workflow = telemetry_handler.start_workflow("support")
    agent = telemetry_handler.start_agent("researcher", parent=workflow)
    chat = telemetry_handler.start_chat("gpt-4o", provider="openai", parent=agent)
    chat.set_usage(input_tokens=10, output_tokens=2)
    chat.stop()
    agent.step("action", tool_name="search", tool_call_id="call_1")
    tool = telemetry_handler.start_tool("search", call_id="call_1", description="web search", parent=agent)
    tool.stop()
    agent.step("observation", tool_name="search", tool_call_id="call_1")
    retrieval = telemetry_handler.start_retrieval("docs-index", top_k=2, parent=agent)
    retrieval.documents = [{"id": "d1", "score": 0.9, "content": "secret text"}, {"id": "d2", "score": 0.5}]
    retrieval.stop()
    agent.step("final")
    agent.stop()
    workflow.stop()

    spans = {s.name: s for s in span_exporter.get_finished_spans()}
    assert set(spans) == {
        "invoke_workflow support",
        "invoke_agent researcher",
        "chat gpt-4o",
        "execute_tool search",
        "retrieval docs-index",
    }
    wf, ag = spans["invoke_workflow support"], spans["invoke_agent researcher"]
    assert wf.parent is None
    assert ag.parent.span_id == wf.context.span_id
    for child in ("chat gpt-4o", "execute_tool search", "retrieval docs-index"):
        assert spans[child].parent.span_id == ag.context.span_id
        assert spans[child].context.trace_id == wf.context.trace_id
    assert ag.kind is SpanKind.INTERNAL and wf.kind is SpanKind.INTERNAL
    assert spans["execute_tool search"].kind is SpanKind.INTERNAL
    assert dict(spans["execute_tool search"].attributes) == {
        sc.GEN_AI_OPERATION_NAME: "execute_tool",
        sc.GEN_AI_TOOL_NAME: "search",
        sc.GEN_AI_TOOL_TYPE: "function",
        sc.GEN_AI_TOOL_CALL_ID: "call_1",
        sc.GEN_AI_TOOL_DESCRIPTION: "web search",
        sc.GEN_AI_AGENT_NAME: "researcher",
    }
    # only model-call spans carry usage and cost
    for name in ("invoke_workflow support", "invoke_agent researcher", "execute_tool search"):
        assert not USAGE_AND_COST_KEYS & set(spans[name].attributes)
    steps = [dict(e.attributes) for e in ag.events if e.name == sc.LLMTRACE_AGENT_STEP_EVENT]
    assert steps == [
        {
            sc.LLMTRACE_AGENT_STEP_INDEX: 1,
            sc.LLMTRACE_AGENT_STEP_KIND: "action",
            sc.GEN_AI_AGENT_NAME: "researcher",
            sc.GEN_AI_TOOL_NAME: "search",
            sc.GEN_AI_TOOL_CALL_ID: "call_1",
        },
        {
            sc.LLMTRACE_AGENT_STEP_INDEX: 2,
            sc.LLMTRACE_AGENT_STEP_KIND: "observation",
            sc.GEN_AI_AGENT_NAME: "researcher",
            sc.GEN_AI_TOOL_NAME: "search",
            sc.GEN_AI_TOOL_CALL_ID: "call_1",
        },
        {
            sc.LLMTRACE_AGENT_STEP_INDEX: 3,
            sc.LLMTRACE_AGENT_STEP_KIND: "final",
            sc.GEN_AI_AGENT_NAME: "researcher",
        },
    ]
    ret = spans["retrieval docs-index"]
    assert ret.kind is SpanKind.CLIENT
    assert ret.attributes[sc.LLMTRACE_RETRIEVAL_DOCUMENT_COUNT] == 2
    assert ret.attributes[sc.GEN_AI_RETRIEVAL_TOP_K] == 2
    assert json.loads(ret.attributes[sc.GEN_AI_RETRIEVAL_DOCUMENTS]) == [
        {"id": "d1", "score": 0.9},
        {"id": "d2", "score": 0.5},
    ]  # no content without opt-in

    (calls,) = metric_points(metric_reader, sc.METRIC_INVOKE_AGENT_INFERENCE_CALLS)
    assert calls.sum == 1 and calls.attributes == {sc.GEN_AI_AGENT_NAME: "researcher"}
    (tools,) = metric_points(metric_reader, sc.METRIC_INVOKE_AGENT_TOOL_CALLS)
    assert tools.sum == 1
    (agent_duration,) = metric_points(metric_reader, sc.METRIC_INVOKE_AGENT_DURATION)
    assert tuple(agent_duration.explicit_bounds) == sc.AGENT_DURATION_BUCKETS
    (tool_duration,) = metric_points(metric_reader, sc.METRIC_EXECUTE_TOOL_DURATION)
    assert tool_duration.attributes == {
        sc.GEN_AI_TOOL_NAME: "search",
        sc.GEN_AI_AGENT_NAME: "researcher",
        sc.GEN_AI_TOOL_TYPE: "function",
    }
    (wf_duration,) = metric_points(metric_reader, sc.METRIC_WORKFLOW_DURATION)
    assert wf_duration.attributes == {sc.GEN_AI_WORKFLOW_NAME: "support"}
    assert tuple(wf_duration.explicit_bounds) == tuple(float(b) for b in sc.WORKFLOW_DURATION_BUCKETS)


def test_root_span_is_child_of_callers_active_span(telemetry_handler, tracer_provider, span_exporter):
    tracer = tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("request"):
        telemetry_handler.start_chat("gpt-4o", provider="openai").stop()
    chat, request = span_exporter.get_finished_spans()
    assert chat.parent.span_id == request.context.span_id


def test_handled_tool_error(telemetry_handler, span_exporter, metric_reader):
    tool = telemetry_handler.start_tool("lookup")
    tool.fail("ToolException")
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[sc.ERROR_TYPE] == "ToolException"
    (duration,) = metric_points(metric_reader, sc.METRIC_EXECUTE_TOOL_DURATION)
    assert duration.attributes[sc.ERROR_TYPE] == "ToolException"


def test_cancelled_call(telemetry_handler, span_exporter):
    records: list[UsageRecord] = []
    llmtrace.add_usage_sink(records.append)
    try:
        inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
        inv.fail(asyncio.CancelledError())
    finally:
        llmtrace.remove_usage_sink(records.append)
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes[sc.ERROR_TYPE] == "cancelled"
    assert [r.status for r in records] == ["cancelled"]


def test_usage_record_fields(telemetry_handler, span_exporter):
    records: list[UsageRecord] = []
    sink = records.append
    llmtrace.add_usage_sink(sink)
    try:
        with llmtrace.dimensions(user_tier="pro"):
            inv = telemetry_handler.start_chat("claude-sonnet-4-5", provider="anthropic", stream=True)
        inv.chunk()
        inv.response_model = "claude-sonnet-4-5-20250929"
        inv.set_usage(input_tokens=1300, output_tokens=100, cache_read_tokens=1000, cache_write_tokens=200)
        inv.stop()
    finally:
        llmtrace.remove_usage_sink(sink)
    (record,) = records
    (span,) = span_exporter.get_finished_spans()
    assert record.operation == "chat" and record.provider == "anthropic"
    assert record.request_model == "claude-sonnet-4-5"
    assert record.response_model == "claude-sonnet-4-5-20250929"
    assert (
        record.input_tokens,
        record.output_tokens,
        record.cache_read_tokens,
        record.cache_write_tokens,
    ) == (
        1300,
        100,
        1000,
        200,
    )
    # Sonnet 4.5: $3 input, $0.30 cache read, $3.75 cache write, $15 output per 1M
    assert record.cost == pytest.approx(100 * 3e-6 + 1000 * 0.3e-6 + 200 * 3.75e-6 + 100 * 15e-6)
    assert record.streamed is True and record.time_to_first_chunk_s is not None
    assert record.status == "success" and record.error_type is None
    assert record.trace_id == format(span.context.trace_id, "032x")
    assert record.span_id == format(span.context.span_id, "016x")
    assert record.dimensions == {"user_tier": "pro"}
    assert span.attributes[sc.LLMTRACE_DIMENSION_PREFIX + "user_tier"] == "pro"


def test_log_usage_sink_writes_json_without_content(telemetry_handler, caplog):
    from llmtrace._usage import LogUsageSink

    sink = LogUsageSink()
    llmtrace.add_usage_sink(sink)
    try:
        with caplog.at_level(logging.INFO, logger=sc.USAGE_LOGGER):
            inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
            inv.input_messages = [{"role": "user", "parts": [{"type": "text", "content": "PRIVATE"}]}]
            inv.set_usage(input_tokens=5, output_tokens=6)
            inv.stop()
    finally:
        llmtrace.remove_usage_sink(sink)
    (line,) = [r.getMessage() for r in caplog.records if r.name == sc.USAGE_LOGGER]
    data = json.loads(line)
    assert data["input_tokens"] == 5 and data["output_tokens"] == 6 and data["request_model"] == "gpt-4o"
    assert "PRIVATE" not in line


def test_failing_usage_sink_does_not_break_the_call(telemetry_handler, span_exporter, caplog):
    def broken(record):
        raise RuntimeError("sink down")

    llmtrace.add_usage_sink(broken)
    try:
        for _ in range(3):
            inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
            inv.set_usage(input_tokens=1, output_tokens=1)
            inv.stop()
    finally:
        llmtrace.remove_usage_sink(broken)
    assert len(span_exporter.get_finished_spans()) == 3
    assert sum("sink" in r.getMessage() for r in caplog.records) == 1  # logged once, not per call


def test_content_not_captured_by_default(telemetry_handler, span_exporter):
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
    inv.input_messages = [{"role": "user", "parts": [{"type": "text", "content": "hello"}]}]
    inv.output_messages = [
        {"role": "assistant", "parts": [{"type": "text", "content": "hi"}], "finish_reason": "stop"}
    ]
    inv.stop()
    tool = telemetry_handler.start_tool("t")
    tool.arguments = {"q": "private"}
    tool.result = "private result"
    tool.stop()
    for span in span_exporter.get_finished_spans():
        assert not {
            sc.GEN_AI_INPUT_MESSAGES,
            sc.GEN_AI_OUTPUT_MESSAGES,
            sc.GEN_AI_TOOL_CALL_ARGUMENTS,
            sc.GEN_AI_TOOL_CALL_RESULT,
        } & set(span.attributes)


def test_content_captured_on_opt_in_scrubbed_and_bounded(telemetry_handler, span_exporter, content_capture):
    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_ONLY, max_attribute_length=2048)
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
    inv.input_messages = [
        {"role": "user", "parts": [{"type": "text", "content": "x" * 50_000_000}]},
        {
            "role": "user",
            "parts": [{"type": "text", "content": "my key is sk-ant-abcdefghijklmnopqrstuvwxyz0123"}],
        },
    ]
    inv.stop()
    tool = telemetry_handler.start_tool("t")
    tool.arguments = {"q": object(), "api_key": "hunter2"}  # not JSON-serialisable, with a secret
    tool.result = {"answer": 42}
    tool.stop()
    chat_span, tool_span = span_exporter.get_finished_spans()
    text = chat_span.attributes[sc.GEN_AI_INPUT_MESSAGES]
    assert len(text) <= 2048
    messages = json.loads(text)  # still valid JSON
    assert messages[0]["role"] == "user"
    assert "abcdefghijklmnop" not in text
    assert chat_span.attributes[sc.LLMTRACE_CONTENT_TRUNCATED] == (sc.GEN_AI_INPUT_MESSAGES,)
    args = json.loads(tool_span.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS])
    assert args["api_key"] == "[REDACTED]"
    assert isinstance(args["q"], str)
    assert json.loads(tool_span.attributes[sc.GEN_AI_TOOL_CALL_RESULT]) == {"answer": 42}


def test_redaction_hook(telemetry_handler, span_exporter, content_capture):
    def redact(key, value):
        return [{"role": m["role"], "parts": [{"type": "text", "content": "[removed]"}]} for m in value]

    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_ONLY, redact=redact)
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
    inv.input_messages = [{"role": "user", "parts": [{"type": "text", "content": "my SSN is 123-45-6789"}]}]
    inv.stop()
    (span,) = span_exporter.get_finished_spans()
    assert json.loads(span.attributes[sc.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "[removed]"}]}
    ]


CONTENT_KEYS = {
    sc.GEN_AI_SYSTEM_INSTRUCTIONS,
    sc.GEN_AI_INPUT_MESSAGES,
    sc.GEN_AI_OUTPUT_MESSAGES,
    sc.GEN_AI_TOOL_DEFINITIONS,
}
SYSTEM = [{"type": "text", "content": "Be brief."}]
INPUT = [{"role": "user", "parts": [{"type": "text", "content": "hello"}]}]
OUTPUT = [{"role": "assistant", "parts": [{"type": "text", "content": "hi"}], "finish_reason": "stop"}]
TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]


def _plain(value: Any) -> Any:
    """Attribute values as JSON has them (the SDK keeps lists as tuples)."""
    return json.loads(json.dumps(value))


def test_inference_details_event_on_event_capture(
    telemetry_handler, span_exporter, log_exporter, content_capture
):
    content_capture.content = ContentPolicy(mode=CaptureMode.EVENT_ONLY)
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
    inv.input_messages = [{"role": "user", "parts": [{"type": "text", "content": "hello"}]}]
    inv.stop()
    (span,) = span_exporter.get_finished_spans()
    assert sc.GEN_AI_INPUT_MESSAGES not in span.attributes
    (log,) = log_exporter.get_finished_logs()
    record = log.log_record
    assert record.event_name == sc.EVENT_INFERENCE_DETAILS
    assert record.span_id == span.context.span_id
    assert _plain(dict(record.attributes)) == {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
        sc.LLMTRACE_USAGE_REPORTED: False,
        sc.GEN_AI_INPUT_MESSAGES: [{"role": "user", "parts": [{"type": "text", "content": "hello"}]}],
    }


def test_inference_details_event_follows_the_sampling_decision(
    span_exporter, meter_provider, logger_provider, log_exporter, content_capture
):
    """A call whose trace is sampled out exports no event (its prompt goes nowhere its spans do not);
    a call no tracer traces at all (a no-op tracer provider: no sampling decision) still has one."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    from llmtrace._handler import TelemetryHandler

    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_AND_EVENT)
    sampled_out = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    sampled_out.add_span_processor(SimpleSpanProcessor(span_exporter))
    for provider, model in ((sampled_out, "sampled-out"), (trace.NoOpTracerProvider(), "untraced")):
        handler = TelemetryHandler(
            tracer_provider=provider, meter_provider=meter_provider, logger_provider=logger_provider
        )
        inv = handler.start_chat(model, provider="openai")
        inv.input_messages = INPUT
        inv.stop()
    assert span_exporter.get_finished_spans() == ()
    assert [
        (log.log_record.event_name, log.log_record.attributes[sc.GEN_AI_REQUEST_MODEL])
        for log in log_exporter.get_finished_logs()
    ] == [(sc.EVENT_INFERENCE_DETAILS, "untraced")]


def test_inference_details_event_carries_every_attribute_of_the_span(
    telemetry_handler, span_exporter, log_exporter, content_capture
):
    """As the conventions say: every attribute of the inference span, content structured."""
    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_AND_EVENT)
    inv = telemetry_handler.start_chat(
        "gpt-4o", provider="openai", server_address="api.openai.com", server_port=443
    )
    inv.temperature, inv.max_tokens, inv.stop_sequences, inv.seed = 0.2, 100, ["\n"], 7
    inv.system_instructions, inv.input_messages, inv.tool_definitions = SYSTEM, INPUT, TOOLS
    inv.chunk()
    inv.output_messages = OUTPUT
    inv.response_id, inv.response_model, inv.finish_reasons = "chatcmpl-1", "gpt-4o-2024-08-06", ["stop"]
    inv.set_usage(input_tokens=10, output_tokens=5)
    inv.stop()
    (span,) = span_exporter.get_finished_spans()
    (log,) = log_exporter.get_finished_logs()
    event = _plain(dict(log.log_record.attributes))
    on_span = _plain(dict(span.attributes))
    assert (
        set(event)
        == set(on_span)
        == {
            sc.GEN_AI_OPERATION_NAME,
            sc.GEN_AI_PROVIDER_NAME,
            sc.GEN_AI_REQUEST_MODEL,
            sc.GEN_AI_REQUEST_STREAM,
            sc.SERVER_ADDRESS,
            sc.SERVER_PORT,
            sc.GEN_AI_REQUEST_TEMPERATURE,
            sc.GEN_AI_REQUEST_MAX_TOKENS,
            sc.GEN_AI_REQUEST_SEED,
            sc.GEN_AI_REQUEST_STOP_SEQUENCES,
            sc.GEN_AI_RESPONSE_ID,
            sc.GEN_AI_RESPONSE_MODEL,
            sc.GEN_AI_RESPONSE_FINISH_REASONS,
            sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
            sc.LLMTRACE_STREAM_CHUNKS,
            sc.GEN_AI_USAGE_INPUT_TOKENS,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS,
            sc.GEN_AI_USAGE_COST_AMOUNT,
            sc.GEN_AI_USAGE_COST_CURRENCY,
            sc.GEN_AI_USAGE_COST_SOURCE,
            *CONTENT_KEYS,
        }
    )
    # the same values; content as JSON text on the span, structured on the event
    assert {k: v for k, v in event.items() if k not in CONTENT_KEYS} == {
        k: v for k, v in on_span.items() if k not in CONTENT_KEYS
    }
    assert {k: json.loads(on_span[k]) for k in CONTENT_KEYS} == {k: event[k] for k in CONTENT_KEYS}
    assert {k: event[k] for k in CONTENT_KEYS} == {
        sc.GEN_AI_SYSTEM_INSTRUCTIONS: SYSTEM,
        sc.GEN_AI_INPUT_MESSAGES: INPUT,
        sc.GEN_AI_OUTPUT_MESSAGES: OUTPUT,
        sc.GEN_AI_TOOL_DEFINITIONS: TOOLS,
    }
    assert (event[sc.SERVER_ADDRESS], event[sc.SERVER_PORT], event[sc.GEN_AI_REQUEST_STREAM]) == (
        "api.openai.com",
        443,
        True,
    )
    assert (event[sc.GEN_AI_RESPONSE_ID], event[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == (
        "chatcmpl-1",
        ["stop"],
    )
    assert (event[sc.GEN_AI_USAGE_INPUT_TOKENS], event[sc.GEN_AI_USAGE_OUTPUT_TOKENS]) == (10, 5)


def test_inference_details_event_of_a_failed_call_has_its_error_type(
    telemetry_handler, log_exporter, content_capture
):
    content_capture.content = ContentPolicy(mode=CaptureMode.EVENT_ONLY)
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
    inv.input_messages = INPUT
    inv.fail(TimeoutError("slow"))
    (log,) = log_exporter.get_finished_logs()
    assert _plain(dict(log.log_record.attributes)) == {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
        sc.LLMTRACE_USAGE_REPORTED: False,
        sc.GEN_AI_INPUT_MESSAGES: INPUT,
        sc.ERROR_TYPE: "timeout",
    }


@pytest.mark.parametrize("mode", [CaptureMode.EVENT_ONLY, CaptureMode.SPAN_AND_EVENT])
def test_inference_details_event_content_has_the_span_budget(
    telemetry_handler, span_exporter, log_exporter, content_capture, mode
):
    """Each content value is bounded, and all of them together too (OTLP/gRPC refuses 4 MiB)."""
    content_capture.content = ContentPolicy(mode=mode, max_attribute_length=100_000, max_span_content=150_000)
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
    inv.system_instructions = [{"type": "text", "content": "s" * 90_000}]
    inv.input_messages = [{"role": "user", "parts": [{"type": "text", "content": "i" * 90_000}]}]
    inv.output_messages = [{"role": "assistant", "parts": [{"type": "text", "content": "o" * 90_000}]}]
    inv.stop()
    (log,) = log_exporter.get_finished_logs()
    event = _plain(dict(log.log_record.attributes))
    sizes = {
        k: len(json.dumps(v, separators=(",", ":"), ensure_ascii=False))
        for k, v in event.items()
        if k in CONTENT_KEYS
    }
    assert sizes == {sc.GEN_AI_SYSTEM_INSTRUCTIONS: 90_030, sc.GEN_AI_INPUT_MESSAGES: 59_970}  # 150,000
    assert event[sc.LLMTRACE_CONTENT_TRUNCATED] == [sc.GEN_AI_INPUT_MESSAGES, sc.GEN_AI_OUTPUT_MESSAGES]
    assert event[sc.GEN_AI_INPUT_MESSAGES][0]["parts"][0]["content"].endswith("…[truncated 30110 chars]")
    (span,) = span_exporter.get_finished_spans()
    if mode.on_span:  # the same content on both
        assert {k: json.loads(v) for k, v in span.attributes.items() if k in CONTENT_KEYS} == {
            k: v for k, v in event.items() if k in CONTENT_KEYS
        }


def test_content_is_serialised_once_for_span_and_event(
    telemetry_handler, span_exporter, log_exporter, content_capture
):
    seen: list[str] = []

    def redact(key: str, value: Any) -> Any:
        seen.append(key)
        return value

    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_AND_EVENT, redact=redact)
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
    inv.system_instructions, inv.input_messages, inv.output_messages = SYSTEM, INPUT, OUTPUT
    inv.stop()
    assert seen == [sc.GEN_AI_SYSTEM_INSTRUCTIONS, sc.GEN_AI_INPUT_MESSAGES, sc.GEN_AI_OUTPUT_MESSAGES]
    (log,) = log_exporter.get_finished_logs()
    assert _plain(log.log_record.attributes[sc.GEN_AI_OUTPUT_MESSAGES]) == OUTPUT


def test_inference_details_event_of_an_untraced_call(logger_provider, log_exporter, content_capture):
    """Built from the call, not from its span: a call no tracer records (no tracing set up, so no
    sampling decision) still has the whole event (a sampled-out one has none: see above)."""
    content_capture.content = ContentPolicy(mode=CaptureMode.EVENT_ONLY)
    handler = llmtrace.TelemetryHandler(
        tracer_provider=trace.NoOpTracerProvider(), logger_provider=logger_provider
    )
    inv = handler.start_chat("gpt-4o", provider="openai", server_address="h", server_port=1)
    inv.input_messages = INPUT
    inv.set_usage(input_tokens=3, output_tokens=1)
    inv.stop()
    (log,) = log_exporter.get_finished_logs()
    event = _plain(dict(log.log_record.attributes))
    assert event[sc.SERVER_ADDRESS] == "h" and event[sc.GEN_AI_USAGE_INPUT_TOKENS] == 3
    assert event[sc.GEN_AI_INPUT_MESSAGES] == INPUT


def test_no_inference_details_event_for_embeddings(
    telemetry_handler, span_exporter, log_exporter, content_capture
):
    """The details event is defined for inference calls (chat, completion) only."""
    content_capture.content = ContentPolicy(mode=CaptureMode.EVENT_ONLY)
    telemetry_handler.start_embeddings("text-embedding-3-small", provider="openai").stop()
    chat = telemetry_handler.start_chat("gpt-4o", provider="openai")
    chat.stop()
    assert [s.name for s in span_exporter.get_finished_spans()] == [
        "embeddings text-embedding-3-small",
        "chat gpt-4o",
    ]
    (log,) = log_exporter.get_finished_logs()
    assert log.log_record.span_id == chat.span.get_span_context().span_id


def test_unsampled_spans_still_record_metrics(meter_provider, metric_reader):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    handler = llmtrace.TelemetryHandler(
        tracer_provider=TracerProvider(sampler=ALWAYS_OFF), meter_provider=meter_provider
    )
    inv = handler.start_chat("gpt-4o", provider="openai")
    assert not inv.span.is_recording()
    inv.set_usage(input_tokens=7, output_tokens=1)
    inv.stop()
    sums = sorted(p.sum for p in metric_points(metric_reader, sc.METRIC_CLIENT_TOKEN_USAGE))
    assert sums == [1, 7]


def test_evict_ends_span_with_reason(telemetry_handler, span_exporter):
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai", stream=True)
    inv.evict(sc.EVICTED_TTL)
    inv.stop()  # too late: already ended
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes[sc.LLMTRACE_EVICTED] == "ttl"
    assert span.attributes[sc.ERROR_TYPE] == sc.ERROR_TYPE_EVICTED
    assert span.status.status_code is StatusCode.ERROR


def test_internal_failure_never_raises(telemetry_handler, span_exporter, monkeypatch, caplog):
    from llmtrace import _invocation

    def boom(*args, **kwargs):
        raise RuntimeError("pricing exploded")

    monkeypatch.setattr(_invocation, "estimate_usage_cost", boom)
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
    inv.set_usage(input_tokens=1, output_tokens=1)
    inv.stop()  # must not raise
    (span,) = span_exporter.get_finished_spans()  # and the span still ends
    assert span.end_time is not None
    assert any("llmtrace internal error" in r.getMessage() for r in caplog.records)


def test_disabled_sdk_is_noop(monkeypatch, content_capture):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    pipeline = llmtrace.configure(exporters="console")
    assert pipeline.exporters == ()
    handler = llmtrace.TelemetryHandler()
    inv = handler.start_chat("gpt-4o", provider="openai")
    assert inv.span is trace.INVALID_SPAN or not inv.span.is_recording()
    inv.stop()
    assert llmtrace.instrument() == []


def test_sink_given_as_bound_method_is_removed(telemetry_handler):
    records: list[UsageRecord] = []
    llmtrace.add_usage_sink(records.append)
    llmtrace.remove_usage_sink(records.append)  # a new bound-method object, equal to the first
    telemetry_handler.start_chat("gpt-4o", provider="openai").stop()
    assert records == []


def test_first_chunk_marks_a_call_as_streamed(telemetry_handler, span_exporter):
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai")  # not known to stream at start
    inv.chunk()
    inv.stop()
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes[sc.GEN_AI_REQUEST_STREAM] is True
    assert span.attributes[sc.LLMTRACE_STREAM_CHUNKS] == 1


def test_rerank_span(telemetry_handler, span_exporter):
    inv = telemetry_handler.start_rerank("rerank-v3.5", provider=sc.PROVIDER_COHERE, top_n=2)
    inv.documents = [{"id": "n3", "score": 0.97}, {"id": "n1", "score": 0.41}]
    inv.stop()
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "rerank rerank-v3.5"
    assert span.kind is SpanKind.CLIENT
    assert span.attributes[sc.GEN_AI_OPERATION_NAME] == sc.OP_RERANK
    assert span.attributes[sc.LLMTRACE_RERANK_TOP_N] == 2
    assert span.attributes[sc.LLMTRACE_RETRIEVAL_DOCUMENT_COUNT] == 2
    assert json.loads(span.attributes[sc.GEN_AI_RETRIEVAL_DOCUMENTS])[0] == {"id": "n3", "score": 0.97}


def test_cancel_is_not_an_error(telemetry_handler, span_exporter):
    records: list[UsageRecord] = []
    llmtrace.add_usage_sink(records.append)
    try:
        inv = telemetry_handler.start_chat("gpt-4o", provider="openai", stream=True)
        inv.chunk()
        inv.cancel()
    finally:
        llmtrace.remove_usage_sink(records.append)
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET
    assert sc.ERROR_TYPE not in span.attributes
    assert [(r.status, r.error_type) for r in records] == [("cancelled", None)]


def test_run_map_bounds_follow_settings_live(telemetry_handler, content_capture):
    from llmtrace._runmap import RunMap

    runs: RunMap[int, object] = RunMap(lambda value, reason: None)
    assert runs.max_size == content_capture.max_open_runs
    llmtrace.configure(exporters="none", max_open_runs=7, run_ttl_s=3.5, set_global=False)
    assert (runs.max_size, runs.ttl_s) == (7, 3.5)


def test_all_content_of_one_span_is_bounded_together(telemetry_handler, span_exporter, content_capture):
    content_capture.content = ContentPolicy(
        mode=CaptureMode.SPAN_ONLY, max_attribute_length=4096, max_span_content=6000
    )
    inv = telemetry_handler.start_chat("gpt-4o", provider="openai")
    message = [{"role": "user", "parts": [{"type": "text", "content": "y" * 10_000}]}]
    inv.system_instructions = [{"type": "text", "content": "s" * 10_000}]
    inv.input_messages = message
    inv.output_messages = message
    inv.stop()
    (span,) = span_exporter.get_finished_spans()
    content_keys = [sc.GEN_AI_SYSTEM_INSTRUCTIONS, sc.GEN_AI_INPUT_MESSAGES, sc.GEN_AI_OUTPUT_MESSAGES]
    total = sum(len(span.attributes.get(key, "")) for key in content_keys)
    assert total <= 6000
    assert len(span.attributes[sc.GEN_AI_SYSTEM_INSTRUCTIONS]) <= 4096
    json.loads(span.attributes[sc.GEN_AI_INPUT_MESSAGES])  # the second one was cut to what was left
    assert sc.GEN_AI_OUTPUT_MESSAGES not in span.attributes  # nothing left for the third
    assert span.attributes[sc.LLMTRACE_CONTENT_TRUNCATED] == tuple(content_keys)


def test_error_type_given_as_text_is_bounded(telemetry_handler, span_exporter):
    tool = telemetry_handler.start_tool("t")
    tool.fail("x" * 3_000_000)  # a framework handing over a huge string instead of an exception
    (span,) = span_exporter.get_finished_spans()
    assert len(span.attributes[sc.ERROR_TYPE]) <= 256
    assert len(span.status.description) <= 1024


# ---- names on metrics stay bounded ---------------------------------------------------------------
def test_names_on_metrics_are_bounded_spans_keep_them(
    telemetry_handler, span_exporter, metric_reader, monkeypatch, caplog
):
    from llmtrace import _metrics

    monkeypatch.setattr(_metrics, "MAX_METRIC_NAMES", 2)
    with caplog.at_level(logging.WARNING, logger="llmtrace"):
        for i in range(4):
            workflow = telemetry_handler.start_workflow(f"request-{i}")
            agent = telemetry_handler.start_agent(f"agent-{i}", parent=workflow)
            telemetry_handler.start_tool(f"tool-{i}", parent=agent).stop()
            agent.stop()
            workflow.stop()
        telemetry_handler.start_tool("tool-0").stop()  # a name seen before the cap stays itself
    assert sorted(
        s.name for s in span_exporter.get_finished_spans() if s.name.startswith("execute_tool")
    ) == [
        "execute_tool tool-0",
        "execute_tool tool-0",
        "execute_tool tool-1",
        "execute_tool tool-2",
        "execute_tool tool-3",
    ]

    def counts(metric: str) -> dict[tuple[tuple[str, Any], ...], int]:
        return {tuple(sorted(p.attributes.items())): p.count for p in metric_points(metric_reader, metric)}

    assert counts(sc.METRIC_WORKFLOW_DURATION) == {
        ((sc.GEN_AI_WORKFLOW_NAME, "request-0"),): 1,
        ((sc.GEN_AI_WORKFLOW_NAME, "request-1"),): 1,
        ((sc.GEN_AI_WORKFLOW_NAME, "_OTHER"),): 2,
    }
    assert counts(sc.METRIC_INVOKE_AGENT_DURATION) == {
        ((sc.GEN_AI_AGENT_NAME, "agent-0"),): 1,
        ((sc.GEN_AI_AGENT_NAME, "agent-1"),): 1,
        ((sc.GEN_AI_AGENT_NAME, "_OTHER"),): 2,
    }
    tool_type = (sc.GEN_AI_TOOL_TYPE, sc.TOOL_TYPE_FUNCTION)
    assert counts(sc.METRIC_EXECUTE_TOOL_DURATION) == {
        ((sc.GEN_AI_AGENT_NAME, "agent-0"), (sc.GEN_AI_TOOL_NAME, "tool-0"), tool_type): 1,
        ((sc.GEN_AI_AGENT_NAME, "agent-1"), (sc.GEN_AI_TOOL_NAME, "tool-1"), tool_type): 1,
        ((sc.GEN_AI_AGENT_NAME, "_OTHER"), (sc.GEN_AI_TOOL_NAME, "_OTHER"), tool_type): 2,
        ((sc.GEN_AI_TOOL_NAME, "tool-0"), tool_type): 1,
    }
    warnings = [r.getMessage() for r in caplog.records if r.name == "llmtrace"]
    assert len(warnings) == 3  # once per attribute
    for key in (sc.GEN_AI_WORKFLOW_NAME, sc.GEN_AI_AGENT_NAME, sc.GEN_AI_TOOL_NAME):
        assert sum(key in w for w in warnings) == 1


# ---- an agent's system instructions -----------------------------------------------------------------
SYSTEM_PROMPT = [{"type": "text", "content": "be brief"}]


def test_agent_system_instructions_when_captured(telemetry_handler, span_exporter, content_capture):
    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_ONLY)
    agent = telemetry_handler.start_agent("helper")
    agent.system_instructions = SYSTEM_PROMPT
    agent.input_messages = [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    agent.stop()
    (span,) = span_exporter.get_finished_spans()
    assert json.loads(span.attributes[sc.GEN_AI_SYSTEM_INSTRUCTIONS]) == SYSTEM_PROMPT
    assert list(span.attributes).index(sc.GEN_AI_SYSTEM_INSTRUCTIONS) < list(span.attributes).index(
        sc.GEN_AI_INPUT_MESSAGES
    )


@pytest.mark.parametrize("mode", [CaptureMode.NO_CONTENT, CaptureMode.EVENT_ONLY])
def test_agent_system_instructions_not_on_spans_otherwise(
    telemetry_handler, span_exporter, content_capture, mode
):
    content_capture.content = ContentPolicy(mode=mode)
    agent = telemetry_handler.start_agent("helper")
    agent.system_instructions = SYSTEM_PROMPT
    agent.stop()
    (span,) = span_exporter.get_finished_spans()
    assert sc.GEN_AI_SYSTEM_INSTRUCTIONS not in span.attributes
