"""Several llmtrace handlers in one call (hand-registered at two levels, or one under
``llmtrace.instrument()``'s): each run is traced once, by the first handler that sees it, in one
trace, under the span of its parent run whichever handler traces that."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from langchain.agents import create_agent
from langgraph.graph import END, START, MessagesState, StateGraph
from llmtrace_langchain import LLMTraceCallbackHandler
from llmtrace_langchain import _handler as lc_handler

from llmtrace import semconv
from llmtrace.testing import metric_points

from .conftest import tree
from .fakes import ScriptedChatModel, answer

EXPECTED = [
    ("chat gpt-4o-mini", "invoke_agent sub_agent"),
    ("invoke_agent sub_agent", "invoke_agent outer"),
    ("invoke_agent outer", None),
]


@pytest.fixture(autouse=True)
def left_over() -> Iterator[None]:
    """Runs other tests left open (on purpose) stay registered until evicted: each test here checks
    that the registry holds none of its own runs once they end, not that it is empty."""
    before = dict(lc_handler._owners)
    yield
    assert {k: h for k, h in lc_handler._owners.items() if before.get(k) is not h} == {}


def _owned_by(*handlers: Any) -> dict[Any, Any]:
    return {k: h for k, h in lc_handler._owners.items() if any(h is x for x in handlers)}


def _outer(sub_callbacks: list[Any]) -> Any:
    """A graph whose node invokes a sub-agent with callbacks of its own (as a module written for a
    per-call handler does)."""
    sub = create_agent(ScriptedChatModel(script=[answer("sub answer")]), tools=[], name="sub_agent")

    def node(state: MessagesState) -> dict[str, Any]:
        result = sub.invoke({"messages": state["messages"]}, config={"callbacks": sub_callbacks})
        return {"messages": result["messages"][-1:]}

    graph = StateGraph(MessagesState)
    graph.add_node("n", node)
    graph.add_edge(START, "n")
    graph.add_edge("n", END)
    return graph.compile(name="outer")


def _input_tokens(metric_reader) -> list[int]:
    return [
        p.sum
        for p in metric_points(metric_reader, semconv.METRIC_CLIENT_TOKEN_USAGE)
        if p.attributes[semconv.GEN_AI_TOKEN_TYPE] == "input"
    ]


def test_hand_registered_handlers_at_two_levels(
    tracer_provider, meter_provider, span_exporter, metric_reader
):
    outer_handler = LLMTraceCallbackHandler(tracer_provider=tracer_provider, meter_provider=meter_provider)
    sub_handler = LLMTraceCallbackHandler(tracer_provider=tracer_provider, meter_provider=meter_provider)
    result = _outer([sub_handler]).invoke(
        {"messages": [("user", "hi")]}, config={"callbacks": [outer_handler]}
    )
    assert result["messages"][-1].content == "sub answer"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == EXPECTED  # once, in one trace
    assert len({s.context.trace_id for s in spans}) == 1
    assert _input_tokens(metric_reader) == [10]  # one usage record, not one per handler
    assert outer_handler.open_runs() == sub_handler.open_runs() == 0


def test_a_hand_registered_handler_under_instrument(
    instrumented, tracer_provider, meter_provider, span_exporter, metric_reader
):
    """The instrumentor's handler makes way for the hand-registered one in the sub-agent's runs; that
    one hangs them under the node the instrumentor's handler traces."""
    hand = LLMTraceCallbackHandler(tracer_provider=tracer_provider, meter_provider=meter_provider)
    result = _outer([hand]).invoke({"messages": [("user", "hi")]})
    assert result["messages"][-1].content == "sub answer"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == EXPECTED
    assert len({s.context.trace_id for s in spans}) == 1
    assert _input_tokens(metric_reader) == [10]
    assert hand.open_runs() == 0


def test_two_handlers_in_one_call_trace_it_once(
    tracer_provider, meter_provider, span_exporter, metric_reader
):
    first = LLMTraceCallbackHandler(tracer_provider=tracer_provider, meter_provider=meter_provider)
    second = LLMTraceCallbackHandler(tracer_provider=tracer_provider, meter_provider=meter_provider)
    agent = create_agent(ScriptedChatModel(script=[answer("ok")]), tools=[], name="solo")
    agent.invoke({"messages": [("user", "hi")]}, config={"callbacks": [first, second]})
    assert tree(span_exporter.get_finished_spans()) == [
        ("chat gpt-4o-mini", "invoke_agent solo"),
        ("invoke_agent solo", None),
    ]
    assert _input_tokens(metric_reader) == [10]
    assert first.open_runs() == second.open_runs() == 0


def test_the_registry_forgets_ended_evicted_and_inherited_runs(handler):
    """Entries go with their runs: at their end, when their handler evicts them, and in a forked
    child (whose runs are the parent's)."""
    from tests.forking import run_in_child

    ended, left_open = uuid4(), uuid4()
    handler.on_chain_start({}, {}, run_id=ended, name="a")
    handler.on_chain_start({}, {}, run_id=left_open, name="b")
    assert _owned_by(handler) == {ended.int: handler, left_open.int: handler}
    handler.on_chain_end({}, run_id=ended)
    assert _owned_by(handler) == {left_open.int: handler}
    child_sees, _, _ = run_in_child(lambda: len(lc_handler._owners), timeout_s=30)
    assert child_sees == 0
    handler.close()  # evicts what is still open
    assert _owned_by(handler) == {}
