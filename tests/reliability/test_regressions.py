"""Regressions: bugs the reliability suite found in the LangChain handler, fixed since."""

from __future__ import annotations

from uuid import uuid4

import pytest
from llmtrace_langchain import LLMTraceCallbackHandler

from .sizes import MAX_SPAN_BYTES, span_size


@pytest.fixture
def handler(tracked_provider):
    return LLMTraceCallbackHandler(tracer_provider=tracked_provider)


def test_identity_attributes_are_bounded(handler, span_exporter):
    run_id = uuid4()
    huge = "m" * 3_000_000
    handler.on_chat_model_start(
        {}, [[]], run_id=run_id, metadata={"ls_provider": huge, "ls_model_name": huge}
    )
    handler.on_llm_end(None, run_id=run_id)
    (span,) = span_exporter.get_finished_spans()
    assert span_size(span) < MAX_SPAN_BYTES


def test_duplicate_run_id_ends_the_first_span(handler, tracker):
    run_id = uuid4()
    handler.on_chat_model_start({}, [[]], run_id=run_id, metadata={"ls_model_name": "a"})
    handler.on_chat_model_start({}, [[]], run_id=run_id, metadata={"ls_model_name": "b"})
    handler.on_llm_end(None, run_id=run_id)
    handler.close()
    assert tracker.open_spans() == []


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("chat", "on_tool_end"),
        ("chat", "on_tool_error"),
        ("chat", "on_retriever_end"),
        ("tool", "on_llm_end"),
    ],
)
def test_end_of_another_kind_does_not_lose_the_span(handler, tracker, start, end):
    run_id = uuid4()
    if start == "chat":
        handler.on_chat_model_start({}, [[]], run_id=run_id)
    else:
        handler.on_tool_start({"name": "t"}, "{}", run_id=run_id)
    getattr(handler, end)(ValueError("x") if end.endswith("error") else None, run_id=run_id)
    handler.close()
    assert tracker.open_spans() == []
