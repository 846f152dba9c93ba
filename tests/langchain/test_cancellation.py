"""Runs abandoned mid-flight: a task cancelled while it awaits a model or a tool, a stream closed early.

LangChain reports a cancellation to the chains that were running (``on_chain_error``), never to
the model or tool they awaited; an async stream closed by its consumer raises ``GeneratorExit``
into every run. Every span must still end at that moment, with the right outcome, and no run may
stay open until the run map's expiry.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool
from llmtrace_langchain import LangChainInstrumentor
from llmtrace_langchain._handler import _key
from opentelemetry.trace import StatusCode

from llmtrace import semconv
from llmtrace._runmap import PRUNE_CHILDREN_AT
from llmtrace.testing import metric_points

from .conftest import attrs, tree
from .fakes import SLOW_S, ScriptedChatModel, SlowChatModel, answer, call

PROMPT = ChatPromptTemplate.from_messages([("user", "{q}")])


@tool
async def slow_lookup(query: str) -> str:
    """Looks something up, slowly."""
    await asyncio.sleep(SLOW_S)
    return query


def _cancelled(span: Any) -> None:
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[semconv.ERROR_TYPE] == "cancelled"
    assert semconv.LLMTRACE_EVICTED not in attrs(span)
    assert span.end_time - span.start_time < SLOW_S * 1e9 / 2  # ended at the cancellation


async def test_cancelled_task_ends_the_model_call_it_awaited(handler, span_exporter, metric_reader, records):
    chain = (PROMPT | SlowChatModel(script=[answer("late")])).with_config(run_name="slow")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(chain.ainvoke({"q": "hi"}, config={"callbacks": [handler]}), 0.1)
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [("chat gpt-4o-mini", "invoke_workflow slow"), ("invoke_workflow slow", None)]
    for span in spans:
        _cancelled(span)
    chat, workflow = spans
    assert chat.end_time <= workflow.end_time
    assert handler.open_runs() == 0
    (duration,) = metric_points(metric_reader, semconv.METRIC_CLIENT_OPERATION_DURATION)
    assert duration.attributes[semconv.ERROR_TYPE] == "cancelled"
    assert duration.sum < SLOW_S / 2
    assert [(r.status, r.error_type) for r in records] == [("cancelled", "cancelled")]


async def test_cancelled_model_call_without_a_chain_ends_with_the_instrumentor(instrumented, span_exporter):
    """No chain to report the cancellation: the instrumentor's call scope sees it instead."""
    model = SlowChatModel(script=[answer("late")])
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(model.ainvoke("hi"), 0.1)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(model.abatch(["a", "b"]), 0.1)
    spans = span_exporter.get_finished_spans()
    assert [s.name for s in spans] == ["chat gpt-4o-mini"] * 3
    for span in spans:
        _cancelled(span)
    assert LangChainInstrumentor._handler is not None
    assert LangChainInstrumentor._handler.open_runs() == 0


class SlowCompletionLLM(FakeListLLM):
    async def _acall(self, prompt: str, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
        await asyncio.sleep(SLOW_S)
        return "late"


async def test_cancelled_completion_calls_without_a_chain_end_too(instrumented, span_exporter):
    """Completion LLMs report a cancellation themselves (``on_llm_error``): kept here so that the
    chat-only fallback in the instrumentor's call scope is known to be enough."""
    llm = SlowCompletionLLM(responses=["late"])
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(llm.abatch(["a", "b"]), 0.1)  # one run manager per prompt
    spans = span_exporter.get_finished_spans()
    assert [s.name for s in spans] == ["text_completion"] * 2
    for span in spans:
        _cancelled(span)
    assert LangChainInstrumentor._handler is not None
    assert LangChainInstrumentor._handler.open_runs() == 0


async def test_timed_out_calls_inside_a_chain_that_goes_on_end_with_the_instrumentor(
    instrumented, span_exporter
):
    """A timeout around one call inside a chain that handles it and returns normally: no chain is
    cancelled, so only the instrumentor's call scopes see the cancellation (model and tool)."""
    model = SlowChatModel(script=[answer("late")])

    async def body(question: str, config: RunnableConfig) -> list[str]:
        gave_up = []
        try:
            await asyncio.wait_for(slow_lookup.ainvoke({"query": question}, config), 0.05)
        except asyncio.TimeoutError:
            gave_up.append("tool")
        try:
            await asyncio.wait_for(model.ainvoke(question, config), 0.05)
        except asyncio.TimeoutError:
            gave_up.append("model")
        return gave_up

    assert await RunnableLambda(body).ainvoke("q") == ["tool", "model"]
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        ("execute_tool slow_lookup", "invoke_workflow body"),
        ("chat gpt-4o-mini", "invoke_workflow body"),
        ("invoke_workflow body", None),
    ]
    tool_span, chat, workflow = spans
    _cancelled(tool_span)
    _cancelled(chat)
    assert workflow.status.status_code is StatusCode.UNSET
    assert LangChainInstrumentor._handler is not None
    assert LangChainInstrumentor._handler.open_runs() == 0


async def test_cancelled_tool_without_a_chain_ends_with_the_instrumentor(instrumented, span_exporter):
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(slow_lookup.ainvoke({"query": "q"}), 0.05)
    assert await slow_lookup.ainvoke({"query": "next"}) == "next"  # nothing left behind
    cancelled, finished = span_exporter.get_finished_spans()
    assert (cancelled.name, finished.name) == ("execute_tool slow_lookup", "execute_tool slow_lookup")
    _cancelled(cancelled)
    assert finished.status.status_code is StatusCode.UNSET and finished.parent is None
    assert LangChainInstrumentor._handler is not None
    assert LangChainInstrumentor._handler.open_runs() == 0


async def test_cancelled_agent_ends_the_tool_it_awaited(instrumented, span_exporter):
    model = ScriptedChatModel(script=[call(("slow_lookup", {"query": "q"}, "call_1")), answer("done")])
    agent = create_agent(model, tools=[slow_lookup], name="helper")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(agent.ainvoke({"messages": [("user", "go")]}), 0.2)
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        ("chat gpt-4o-mini", "invoke_agent helper"),
        ("execute_tool slow_lookup", "invoke_agent helper"),
        ("invoke_agent helper", None),
    ]
    chat, tool_span, agent_span = spans
    assert chat.status.status_code is StatusCode.UNSET  # it had answered before the cancellation
    _cancelled(tool_span)
    _cancelled(agent_span)
    assert attrs(tool_span)[semconv.GEN_AI_TOOL_CALL_ID] == "call_1"
    assert LangChainInstrumentor._handler is not None
    assert LangChainInstrumentor._handler.open_runs() == 0


async def test_stream_closed_by_its_consumer_is_cancelled_not_failed(handler, span_exporter, records):
    model = GenericFakeChatModel(messages=iter([AIMessage(content="one two three four five six")]))
    chain = PROMPT | model | StrOutputParser()
    stream = chain.astream({"q": "hi"}, config={"callbacks": [handler]})
    chunks = [await anext(stream), await anext(stream)]
    await stream.aclose()
    for _ in range(50):  # LangChain closes the inner streams in tasks of their own
        if handler.open_runs() == 0:
            break
        await asyncio.sleep(0.01)
    assert len(chunks) == 2
    spans = span_exporter.get_finished_spans()
    assert sorted(tree(spans)) == [
        ("chat", "invoke_workflow RunnableSequence"),
        ("invoke_workflow RunnableSequence", None),
    ]
    for span in spans:
        assert span.status.status_code is StatusCode.UNSET
        assert semconv.ERROR_TYPE not in attrs(span)
    assert [r.status for r in records] == ["cancelled"]
    assert handler.open_runs() == 0


def test_a_long_lived_parent_keeps_only_its_open_children(handler, span_exporter):
    model = ScriptedChatModel(script=[answer("ok")])
    kept: list[int] = []

    def many_calls(_: Any, config: RunnableConfig) -> None:
        root = handler._runs.peek(_key(config["callbacks"].parent_run_id))  # this lambda's own run
        for _ in range(300):
            model.invoke("hi", config=config)
            kept.append(len(root.children or ()))

    RunnableLambda(many_calls).with_config(run_name="loop").invoke(None, config={"callbacks": [handler]})
    assert len(span_exporter.get_finished_spans()) == 301
    assert kept[:3] == [1, 2, 3]
    assert max(kept) < 2 * PRUNE_CHILDREN_AT  # ended children are dropped: not one key per call ever made
    assert handler.open_runs() == 0
