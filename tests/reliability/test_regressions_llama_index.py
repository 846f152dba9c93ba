"""Regressions: bugs the reliability suite found in the LlamaIndex handlers, fixed since."""

from __future__ import annotations

import pytest
from llama_index.core.tools import FunctionTool
from llmtrace_llama_index._event_handler import LlamaIndexEventHandler
from llmtrace_llama_index._runs import Runs
from llmtrace_llama_index._span_handler import LlamaIndexSpanHandler

from llmtrace import TelemetryHandler
from llmtrace._content import CaptureMode, ContentPolicy


@pytest.fixture
def handlers(tracked_provider):
    runs = Runs(TelemetryHandler(tracer_provider=tracked_provider, framework="llama_index"))
    return LlamaIndexSpanHandler(runs), LlamaIndexEventHandler(runs)


@pytest.mark.parametrize("bound_args", [[], {"kwargs": {}}, "x", object()])
def test_malformed_bound_args_after_start_do_not_leak_the_span(
    handlers, tracker, content_capture, bound_args
):
    # found by test_fuzz_llama_index: with content capture on, a tool's arguments were read from
    # bound_args.arguments after its span started; an AttributeError left the span open forever
    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_AND_EVENT)
    spans, _ = handlers
    tool = FunctionTool.from_defaults(fn=lambda x: x, name="echo")
    span_id = "FunctionTool.call-00000000-0000-4000-8000-000000000000"
    spans.new_span(span_id, bound_args, instance=tool)
    assert spans.runs.nodes.peek(span_id) is not None
    spans.prepare_to_exit_span(span_id, bound_args, result=None)
    assert tracker.open_spans() == []
    assert len(spans.runs.nodes) == 0


@pytest.mark.parametrize("messages", [False, 3, None, "text", {"role": "user"}])
def test_malformed_messages_do_not_leak_the_model_span(handlers, tracker, content_capture, messages):
    # found by test_fuzz_llama_index: with content capture on, chat messages were iterated after
    # the chat span started; a non-iterable value raised and left the span open forever
    import inspect

    from llama_index.core.llms import MockLLM

    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_AND_EVENT)
    spans, _ = handlers
    bound = inspect.signature(lambda self, messages, **kwargs: None).bind(None, messages)
    span_id = "MockLLM.chat-00000000-0000-4000-8000-000000000000"
    spans.new_span(span_id, bound, instance=MockLLM())
    assert spans.runs.nodes.peek(span_id) is not None
    spans.prepare_to_exit_span(span_id, bound, result=None)
    assert tracker.open_spans() == []
    assert len(spans.runs.nodes) == 0
