"""Names on spans and metrics: a ``run_name`` names a run's span, never a tool, and the names that
reach metric attributes stay bounded (real tools, chains, agents; a real SDK MeterProvider)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from llmtrace_langchain import LLMTraceCallbackHandler

from llmtrace import _metrics, semconv
from llmtrace.testing import metric_points

from .conftest import attrs, tree
from .fakes import ScriptedChatModel, answer, call


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def points(metric_reader: Any, name: str) -> list[tuple[dict[str, Any], int]]:
    """(attributes, count) of every point of the metric ``name``, sorted."""
    found = [(dict(p.attributes), p.count) for p in metric_points(metric_reader, name)]
    return sorted(found, key=lambda item: sorted(item[0].items()))


def adding_agent(name: str | None = None) -> Any:
    model = ScriptedChatModel(script=[call(("add", {"a": 1, "b": 2}, "call_add")), answer("3")])
    return create_agent(model, tools=[add], name=name)


TOOL_POINT = {semconv.GEN_AI_TOOL_NAME: "add", semconv.GEN_AI_TOOL_TYPE: semconv.TOOL_TYPE_FUNCTION}


# ---- tools: the declared name, whatever the run is called ------------------------------------------
def test_run_name_does_not_rename_a_tool(handler, span_exporter, metric_reader):
    assert add.invoke({"a": 1, "b": 2}, config={"callbacks": [handler], "run_name": "sum-for-user-7"}) == 3
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "execute_tool add"
    assert attrs(span)[semconv.GEN_AI_TOOL_NAME] == "add"
    assert points(metric_reader, semconv.METRIC_EXECUTE_TOOL_DURATION) == [(TOOL_POINT, 1)]


def test_a_tool_bound_with_a_run_name_keeps_its_name(handler, span_exporter, metric_reader):
    bound = add.with_config(run_name="adding step")
    for a in range(2):
        bound.invoke({"a": a, "b": 2}, config={"callbacks": [handler]})
    assert [s.name for s in span_exporter.get_finished_spans()] == ["execute_tool add"] * 2
    assert points(metric_reader, semconv.METRIC_EXECUTE_TOOL_DURATION) == [(TOOL_POINT, 2)]


# ---- workflows and agents: the run_name names the span; metrics stay bounded -------------------------
@pytest.fixture
def three_names(monkeypatch: pytest.MonkeyPatch) -> int:
    """At most three distinct values per name attribute on metrics (200 by default)."""
    monkeypatch.setattr(_metrics, "MAX_METRIC_NAMES", 3)
    return 3


def test_per_request_run_names_of_a_chain_are_bounded_on_metrics(
    handler, span_exporter, metric_reader, three_names, caplog
):
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | ScriptedChatModel(script=[answer("hi")])
    with caplog.at_level(logging.WARNING, logger="llmtrace"):
        for user in range(5):
            chain.invoke({"q": "x"}, config={"callbacks": [handler], "run_name": f"answer-{user}"})
    spans = span_exporter.get_finished_spans()
    # the span keeps the name the application chose for the run
    assert [s.name for s in spans if s.name.startswith("invoke_workflow")] == [
        f"invoke_workflow answer-{user}" for user in range(5)
    ]
    assert attrs(spans[-1])[semconv.GEN_AI_WORKFLOW_NAME] == "answer-4"
    name = semconv.GEN_AI_WORKFLOW_NAME
    assert points(metric_reader, semconv.METRIC_WORKFLOW_DURATION) == [
        ({name: "_OTHER"}, 2),
        ({name: "answer-0"}, 1),
        ({name: "answer-1"}, 1),
        ({name: "answer-2"}, 1),
    ]
    warned = [r.getMessage() for r in caplog.records if r.name == "llmtrace"]
    assert len(warned) == 1 and name in warned[0]


def test_a_fixed_run_name_is_one_metric_name(handler, metric_reader, three_names):
    chain = RunnableLambda(lambda q: q.upper()).with_config(run_name="shout")
    for _ in range(5):
        assert chain.invoke("x", config={"callbacks": [handler]}) == "X"
    assert points(metric_reader, semconv.METRIC_WORKFLOW_DURATION) == [
        ({semconv.GEN_AI_WORKFLOW_NAME: "shout"}, 5)
    ]


def test_per_request_run_names_of_an_agent_are_bounded_on_metrics(
    handler, span_exporter, metric_reader, three_names
):
    for user in range(4):
        adding_agent().invoke(
            {"messages": [("user", "1+2?")]}, config={"callbacks": [handler], "run_name": f"answer-{user}"}
        )
    spans = span_exporter.get_finished_spans()
    assert [s.name for s in spans if s.name.startswith("invoke_agent")] == [
        f"invoke_agent answer-{user}" for user in range(4)
    ]
    assert [s.name for s in spans if s.name.startswith("execute_tool")] == ["execute_tool add"] * 4
    agent = semconv.GEN_AI_AGENT_NAME
    expected = [
        ({agent: "_OTHER"}, 1),
        ({agent: "answer-0"}, 1),
        ({agent: "answer-1"}, 1),
        ({agent: "answer-2"}, 1),
    ]
    assert points(metric_reader, semconv.METRIC_INVOKE_AGENT_INFERENCE_CALLS) == expected
    assert points(metric_reader, semconv.METRIC_INVOKE_AGENT_TOOL_CALLS) == expected
    assert points(metric_reader, semconv.METRIC_INVOKE_AGENT_DURATION) == expected
    assert points(metric_reader, semconv.METRIC_EXECUTE_TOOL_DURATION) == [
        ({**TOOL_POINT, **a}, n) for a, n in expected
    ]


def _reports_agent_names() -> bool:
    """Whether this langchain's ``create_agent`` puts its name in the run metadata
    (``lc_agent_name``): the only place LangChain reports it once a ``run_name`` is given."""
    import inspect

    from langchain.agents import factory

    return "lc_agent_name" in inspect.getsource(factory)


@pytest.mark.skipif(
    not _reports_agent_names(),
    reason="this langchain's create_agent does not report its name (lc_agent_name): run_name names it",
)
def test_a_named_agent_keeps_its_name_under_a_run_name(handler, span_exporter, metric_reader):
    adding_agent("helper").invoke(
        {"messages": [("user", "1+2?")]}, config={"callbacks": [handler], "run_name": "answer-7"}
    )
    spans = span_exporter.get_finished_spans()
    assert ("invoke_agent helper", None) in tree(spans)
    helper = {semconv.GEN_AI_AGENT_NAME: "helper"}
    assert points(metric_reader, semconv.METRIC_INVOKE_AGENT_TOOL_CALLS) == [(helper, 1)]
    assert points(metric_reader, semconv.METRIC_EXECUTE_TOOL_DURATION) == [({**TOOL_POINT, **helper}, 1)]


def test_a_handler_per_request_is_bounded_too(tracer_provider, meter_provider, metric_reader, three_names):
    """Handlers made per request (``callbacks=[LLMTraceCallbackHandler()]`` in each call) share the
    bound: it is the meter provider's, not the handler's."""
    chain = RunnableLambda(lambda q: q.upper())
    for user in range(5):
        handler = LLMTraceCallbackHandler(tracer_provider=tracer_provider, meter_provider=meter_provider)
        chain.invoke("x", config={"callbacks": [handler], "run_name": f"answer-{user}"})
    names = [
        a[semconv.GEN_AI_WORKFLOW_NAME] for a, _ in points(metric_reader, semconv.METRIC_WORKFLOW_DURATION)
    ]
    assert names == ["_OTHER", "answer-0", "answer-1", "answer-2"]
