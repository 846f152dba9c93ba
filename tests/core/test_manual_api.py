"""tool_span, agent_span, record_agent_step, record_evaluation."""

from __future__ import annotations

import json

import pytest
from opentelemetry.trace import StatusCode

import llmtrace
from llmtrace import semconv as sc
from llmtrace._content import CaptureMode, ContentPolicy
from llmtrace.testing import metric_points


@pytest.fixture(autouse=True)
def manual_handler(telemetry_handler, monkeypatch):
    monkeypatch.setattr("llmtrace._manual._handler", telemetry_handler)
    return telemetry_handler


def test_tool_span_records_result_and_nests(span_exporter, tracer_provider, content_capture):
    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_ONLY)
    tracer = tracer_provider.get_tracer("app")
    with (
        tracer.start_as_current_span("request"),
        llmtrace.tool_span("lookup", call_id="c1", arguments='{"id": 7}', description="db") as tool,
    ):
        with tracer.start_as_current_span("db query"):
            pass
        tool.result = {"name": "Ada"}
    db, tool_span, request = span_exporter.get_finished_spans()
    assert tool_span.name == "execute_tool lookup"
    assert tool_span.parent.span_id == request.context.span_id
    assert db.parent.span_id == tool_span.context.span_id  # the tool span is active inside the block
    assert tool_span.attributes[sc.GEN_AI_TOOL_CALL_ID] == "c1"
    assert tool_span.attributes[sc.GEN_AI_TOOL_DESCRIPTION] == "db"
    assert json.loads(tool_span.attributes[sc.GEN_AI_TOOL_CALL_RESULT]) == {"name": "Ada"}


def test_tool_span_error_is_recorded_and_reraised(span_exporter):
    with pytest.raises(KeyError), llmtrace.tool_span("lookup"):
        raise KeyError("missing")
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[sc.ERROR_TYPE] == "KeyError"


def test_agent_span_steps_and_counts(span_exporter, metric_reader, manual_handler):
    with llmtrace.agent_span("planner") as agent:
        llmtrace.record_agent_step("thought")
        manual_handler.start_chat("gpt-4o", provider="openai", parent=agent).stop()
        llmtrace.record_agent_step("action", tool_name="search", tool_call_id="c1")
        with llmtrace.tool_span("search", call_id="c1"):
            pass
        llmtrace.record_agent_step("observation", tool_name="search", tool_call_id="c1")
        llmtrace.record_agent_step("final")
    spans = {s.name: s for s in span_exporter.get_finished_spans()}
    agent_span = spans["invoke_agent planner"]
    assert spans["execute_tool search"].parent.span_id == agent_span.context.span_id
    assert spans["execute_tool search"].attributes[sc.GEN_AI_AGENT_NAME] == "planner"
    kinds = [
        (e.attributes[sc.LLMTRACE_AGENT_STEP_INDEX], e.attributes[sc.LLMTRACE_AGENT_STEP_KIND])
        for e in agent_span.events
    ]
    assert kinds == [(1, "thought"), (2, "action"), (3, "observation"), (4, "final")]
    (tools,) = metric_points(metric_reader, sc.METRIC_INVOKE_AGENT_TOOL_CALLS)
    (calls,) = metric_points(metric_reader, sc.METRIC_INVOKE_AGENT_INFERENCE_CALLS)
    assert (tools.sum, calls.sum) == (1, 1)


def test_record_agent_step_validates_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        llmtrace.record_agent_step("dance")
    llmtrace.record_agent_step("final")  # outside an agent span: nothing happens, nothing raises


def test_evaluation_for_live_span(tracer_provider, log_exporter):
    with tracer_provider.get_tracer("app").start_as_current_span("chat") as span:
        llmtrace.record_evaluation(
            "relevance", score=0.8, label="relevant", explanation="on topic", response_id="chatcmpl-1"
        )
    (log,) = log_exporter.get_finished_logs()
    record = log.log_record
    assert record.event_name == sc.EVENT_EVALUATION_RESULT
    assert record.span_id == span.get_span_context().span_id
    assert dict(record.attributes) == {
        sc.GEN_AI_EVALUATION_NAME: "relevance",
        sc.GEN_AI_EVALUATION_SCORE_VALUE: 0.8,
        sc.GEN_AI_EVALUATION_SCORE_LABEL: "relevant",
        sc.GEN_AI_EVALUATION_EXPLANATION: "on topic",
        sc.GEN_AI_RESPONSE_ID: "chatcmpl-1",
    }


def test_delayed_evaluation_for_ended_trace(log_exporter):
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    llmtrace.record_evaluation("helpfulness", label="fail", trace_id=trace_id, span_id=span_id)
    (log,) = log_exporter.get_finished_logs()
    assert format(log.log_record.trace_id, "032x") == trace_id
    assert format(log.log_record.span_id, "016x") == span_id


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "score, a label"),
        ({"score": 1, "trace_id": "abc"}, "both trace_id and span_id"),
        ({"score": 1, "trace_id": "xyz", "span_id": "1"}, "32 hex digits"),
    ],
)
def test_evaluation_argument_errors_are_clear(kwargs, message):
    with pytest.raises(ValueError, match=message):
        llmtrace.record_evaluation("relevance", **kwargs)


KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz123456"


def test_evaluation_text_is_masked_and_redacted(tracer_provider, log_exporter, content_capture):
    """A judge's explanation may quote a key or the user's data: masked as content is, whatever the mode."""
    content_capture.content = ContentPolicy(redact=lambda key, value: value.replace("Ada", "<name>"))
    with tracer_provider.get_tracer("app").start_as_current_span("chat"):
        llmtrace.record_evaluation(
            "relevance",
            label=f"leaked {KEY}",
            explanation=f"Answer to Ada used key {KEY}; Bearer abcdefghijklmnop",
        )
    (log,) = log_exporter.get_finished_logs()
    attributes = dict(log.log_record.attributes)
    assert attributes[sc.GEN_AI_EVALUATION_SCORE_LABEL] == "leaked [REDACTED]"
    explanation = attributes[sc.GEN_AI_EVALUATION_EXPLANATION]
    assert explanation == "Answer to <name> used key [REDACTED]; Bearer [REDACTED]"


def test_evaluation_name_and_response_id_are_bounded(tracer_provider, log_exporter):
    with tracer_provider.get_tracer("app").start_as_current_span("chat"):
        llmtrace.record_evaluation("n" * 10_000, score=1.0, response_id="r" * 100_000)
    (log,) = log_exporter.get_finished_logs()
    attributes = dict(log.log_record.attributes)
    assert attributes[sc.GEN_AI_EVALUATION_NAME] == "n" * 256
    assert attributes[sc.GEN_AI_RESPONSE_ID] == "r" * 1024
