"""Under ``instrument()``, spans a tool's own code starts (HTTP and database clients, the user's own)
nest under the tool's ``execute_tool`` span, in the agent's trace: the tool runs in the context
``set_config_context`` copies for it, where the instrumentor makes the tool's span current."""

from __future__ import annotations

import asyncio
import sys

import pytest
from langchain.agents import create_agent
from langchain_core.tools import tool
from opentelemetry import trace

from .conftest import tree
from .fakes import ScriptedChatModel, answer, call

pytestmark = pytest.mark.usefixtures("instrumented")


def _tools(tracer: trace.Tracer) -> list[object]:
    @tool
    def query_db(sql: str) -> str:
        """Run a query."""
        with tracer.start_as_current_span("db.query"), tracer.start_as_current_span("db.fetch"):
            return "2 rows"

    @tool
    async def fetch_page(url: str) -> str:
        """Fetch a page."""
        with tracer.start_as_current_span("http.get"):
            await asyncio.sleep(0)
            return "<html/>"

    return [query_db, fetch_page]


def _agent(tracer: trace.Tracer, *calls: tuple[str, dict[str, str], str]) -> object:
    script = [call(*calls), answer("done")]
    return create_agent(ScriptedChatModel(script=script), tools=_tools(tracer), name="helper")


def test_spans_inside_a_tool_nest_under_its_execute_tool_span(tracer_provider, span_exporter):
    tracer = tracer_provider.get_tracer("app")
    agent = _agent(tracer, ("query_db", {"sql": "select 1"}, "call_1"))
    agent.invoke({"messages": [("user", "how many?")]})  # no span around it: a worker, a CLI
    spans = span_exporter.get_finished_spans()
    assert ("db.query", "execute_tool query_db") in tree(spans)
    assert ("db.fetch", "db.query") in tree(spans)
    assert len({span.context.trace_id for span in spans}) == 1  # one trace, not two


def test_parallel_tool_calls_each_get_their_own_parent(tracer_provider, span_exporter):
    tracer = tracer_provider.get_tracer("app")
    agent = _agent(
        tracer, ("query_db", {"sql": "select 1"}, "call_1"), ("query_db", {"sql": "select 2"}, "call_2")
    )
    agent.invoke({"messages": [("user", "both")]})
    spans = span_exporter.get_finished_spans()
    tools = {s.context.span_id: s for s in spans if s.name == "execute_tool query_db"}
    queries = [s for s in spans if s.name == "db.query"]
    assert len(tools) == 2 and len(queries) == 2
    assert {q.parent.span_id for q in queries if q.parent} == set(tools)  # one under each tool span


def test_the_application_span_around_the_agent_stays_the_root(tracer_provider, span_exporter):
    tracer = tracer_provider.get_tracer("app")
    agent = _agent(tracer, ("query_db", {"sql": "select 1"}, "call_1"))
    with tracer.start_as_current_span("HTTP POST /chat"):
        agent.invoke({"messages": [("user", "how many?")]})
        assert trace.get_current_span().name == "HTTP POST /chat"  # nothing left attached here
    pairs = tree(span_exporter.get_finished_spans())
    assert ("db.query", "execute_tool query_db") in pairs
    assert ("invoke_agent helper", "HTTP POST /chat") in pairs


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="before 3.11 LangChain cannot run an async tool in its own context"
)
def test_spans_inside_an_async_tool_nest_under_its_execute_tool_span(tracer_provider, span_exporter):
    tracer = tracer_provider.get_tracer("app")
    agent = _agent(tracer, ("fetch_page", {"url": "http://127.0.0.1/"}, "call_1"))
    asyncio.run(agent.ainvoke({"messages": [("user", "fetch")]}))
    spans = span_exporter.get_finished_spans()
    assert ("http.get", "execute_tool fetch_page") in tree(spans)
    assert len({span.context.trace_id for span in spans}) == 1
