"""Agents, chains, tools and retrieval: exact span trees, step events, metrics."""

from __future__ import annotations

import json
import time
from typing import Annotated

import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManager
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import ToolMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import InjectedToolCallId, tool
from langchain_core.tools.retriever import create_retriever_tool
from langchain_core.vectorstores import InMemoryVectorStore
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command
from llmtrace_langchain import LLMTraceCallbackHandler
from typing_extensions import TypedDict

from llmtrace import semconv
from llmtrace.testing import metric_points

from .conftest import attrs, events, tree
from .fakes import ScriptedChatModel, answer, call


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def make_retriever_tool():
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_documents(
        [
            Document(page_content="Paris is in France", id="d1"),
            Document(page_content="Rome is in Italy", id="d2"),
        ]
    )
    return create_retriever_tool(
        store.as_retriever(search_kwargs={"k": 1}), "search_docs", "Search the docs."
    )


def react_agent(name: str = "helper"):
    script = [
        call(("add", {"a": 1, "b": 2}, "call_add"), ("weather", {"city": "Paris"}, "call_weather")),
        call(("search_docs", {"query": "Paris"}, "call_search")),
        answer("3, sunny, France"),
    ]
    return create_agent(
        ScriptedChatModel(script=script), tools=[add, weather, make_retriever_tool()], name=name
    )


def step(index: int, kind: str, tool: str | None = None, call_id: str | None = None):
    a = {
        semconv.LLMTRACE_AGENT_STEP_INDEX: index,
        semconv.LLMTRACE_AGENT_STEP_KIND: kind,
        semconv.GEN_AI_AGENT_NAME: "helper",
    }
    if tool:
        a[semconv.GEN_AI_TOOL_NAME] = tool
    if call_id:
        a[semconv.GEN_AI_TOOL_CALL_ID] = call_id
    return (semconv.LLMTRACE_AGENT_STEP_EVENT, a)


EXPECTED_TREE = [
    ("chat gpt-4o-mini", "invoke_agent helper"),
    ("execute_tool add", "invoke_agent helper"),
    ("execute_tool weather", "invoke_agent helper"),
    ("chat gpt-4o-mini", "invoke_agent helper"),
    ("retrieval InMemoryVectorStore", "execute_tool search_docs"),
    ("execute_tool search_docs", "invoke_agent helper"),
    ("chat gpt-4o-mini", "invoke_agent helper"),
    ("invoke_agent helper", None),
]


def check_agent_trace(spans) -> None:
    assert sorted(tree(spans)) == sorted(EXPECTED_TREE)
    assert len({s.context.trace_id for s in spans}) == 1
    agent = next(s for s in spans if s.name == "invoke_agent helper")
    assert attrs(agent)[semconv.GEN_AI_OPERATION_NAME] == semconv.OP_INVOKE_AGENT
    kinds = [
        (e[1][semconv.LLMTRACE_AGENT_STEP_KIND], e[1].get(semconv.GEN_AI_TOOL_CALL_ID)) for e in events(agent)
    ]
    assert kinds[:2] == [("action", "call_add"), ("action", "call_weather")]
    assert sorted(kinds[2:4]) == [("observation", "call_add"), ("observation", "call_weather")]
    assert kinds[4:] == [("action", "call_search"), ("observation", "call_search"), ("final", None)]
    assert [e[1][semconv.LLMTRACE_AGENT_STEP_INDEX] for e in events(agent)] == list(range(1, 8))


def test_react_agent_tree_steps_and_metrics(handler, span_exporter, metric_reader):
    result = react_agent().invoke({"messages": [("user", "go")]}, config={"callbacks": [handler]})
    assert result["messages"][-1].content == "3, sunny, France"
    spans = span_exporter.get_finished_spans()
    check_agent_trace(spans)
    agent = next(s for s in spans if s.name == "invoke_agent helper")
    assert events(agent)[0] == step(1, "action", "add", "call_add")
    assert events(agent)[-1] == step(7, "final")
    tool_span = next(s for s in spans if s.name == "execute_tool add")
    assert attrs(tool_span) == {
        semconv.GEN_AI_OPERATION_NAME: semconv.OP_EXECUTE_TOOL,
        semconv.GEN_AI_TOOL_NAME: "add",
        semconv.GEN_AI_TOOL_TYPE: semconv.TOOL_TYPE_FUNCTION,
        semconv.GEN_AI_TOOL_DESCRIPTION: "Add two integers.",
        semconv.GEN_AI_AGENT_NAME: "helper",
        semconv.GEN_AI_TOOL_CALL_ID: "call_add",
    }
    retrieval = next(s for s in spans if s.name.startswith("retrieval"))
    r = attrs(retrieval)
    assert r[semconv.GEN_AI_DATA_SOURCE_ID] == "InMemoryVectorStore"
    assert r[semconv.GEN_AI_REQUEST_MODEL] == "DeterministicFakeEmbedding"
    assert r[semconv.LLMTRACE_RETRIEVAL_DOCUMENT_COUNT] == 1
    assert json.loads(r[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])[0]["id"] in {"d1", "d2"}
    assert semconv.GEN_AI_RETRIEVAL_QUERY_TEXT not in r
    (inference,) = metric_points(metric_reader, semconv.METRIC_INVOKE_AGENT_INFERENCE_CALLS)
    (tools,) = metric_points(metric_reader, semconv.METRIC_INVOKE_AGENT_TOOL_CALLS)
    assert (inference.sum, tools.sum) == (3, 3)
    assert len(metric_points(metric_reader, semconv.METRIC_INVOKE_AGENT_DURATION)) == 1
    assert handler.open_runs() == 0


async def test_react_agent_async_and_astream_events(handler, span_exporter):
    await react_agent().ainvoke({"messages": [("user", "go")]}, config={"callbacks": [handler]})
    check_agent_trace(span_exporter.get_finished_spans())
    span_exporter.clear()
    async for _ in react_agent().astream_events(
        {"messages": [("user", "go")]}, config={"callbacks": [handler]}
    ):
        pass
    check_agent_trace(span_exporter.get_finished_spans())


def test_root_span_is_child_of_callers_span(handler, span_exporter, tracer_provider):
    with tracer_provider.get_tracer("app").start_as_current_span("request") as outer:
        react_agent().invoke({"messages": [("user", "go")]}, config={"callbacks": [handler]})
    agent = next(s for s in span_exporter.get_finished_spans() if s.name == "invoke_agent helper")
    assert agent.parent.span_id == outer.get_span_context().span_id


class State(TypedDict):
    text: str


def plain_graph():
    def upper(state: State) -> State:
        return {"text": state["text"].upper()}

    builder = StateGraph(State)
    builder.add_node("upper", upper)
    builder.add_edge(START, "upper")
    builder.add_edge("upper", END)
    return builder.compile()


def test_langgraph_graph_is_an_agent_named_from_the_graph(handler, span_exporter):
    assert plain_graph().invoke({"text": "a"}, config={"callbacks": [handler]}) == {"text": "A"}
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "invoke_agent LangGraph"
    assert events(span)[-1][1][semconv.LLMTRACE_AGENT_STEP_KIND] == "final"


def test_keep_chain_spans_keeps_graph_nodes(tracer_provider, span_exporter):
    handler = LLMTraceCallbackHandler(tracer_provider=tracer_provider, keep_chain_spans=True)
    plain_graph().invoke({"text": "a"}, config={"callbacks": [handler]})
    assert ("invoke_workflow upper", "invoke_agent LangGraph") in tree(span_exporter.get_finished_spans())


def test_root_chain_is_a_workflow_and_plumbing_is_skipped(handler, span_exporter):
    model = ScriptedChatModel(script=[answer("hi")])
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | model | RunnableLambda(lambda m: m.content)
    assert chain.invoke({"q": "x"}, config={"callbacks": [handler], "run_name": "qa"}) == "hi"
    assert tree(span_exporter.get_finished_spans()) == [
        ("chat gpt-4o-mini", "invoke_workflow qa"),
        ("invoke_workflow qa", None),
    ]


def test_keep_chain_spans_keeps_every_chain(tracer_provider, span_exporter):
    handler = LLMTraceCallbackHandler(tracer_provider=tracer_provider, keep_chain_spans=True)
    model = ScriptedChatModel(script=[answer("hi")])
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | model
    chain.invoke({"q": "x"}, config={"callbacks": [handler]})
    assert tree(span_exporter.get_finished_spans()) == [
        ("invoke_workflow ChatPromptTemplate", "invoke_workflow RunnableSequence"),
        ("chat gpt-4o-mini", "invoke_workflow RunnableSequence"),
        ("invoke_workflow RunnableSequence", None),
    ]


def test_tool_errors_raised_and_handled(handler, span_exporter):
    @tool
    def broken(x: int) -> int:
        """Always fails."""
        raise ValueError("nope")

    @tool
    def polite(x: int) -> int:
        """Fails politely."""
        from langchain_core.tools import ToolException

        raise ToolException("bad input")

    polite.handle_tool_error = True

    with pytest.raises(ValueError, match="nope"):
        broken.invoke({"x": 1}, config={"callbacks": [handler]})
    msg = polite.invoke(
        {"type": "tool_call", "name": "polite", "args": {"x": 1}, "id": "c9"}, config={"callbacks": [handler]}
    )
    assert isinstance(msg, ToolMessage) and msg.status == "error"
    raised, handled = span_exporter.get_finished_spans()
    assert (raised.status.status_code.name, attrs(raised)[semconv.ERROR_TYPE]) == ("ERROR", "ValueError")
    assert handled.status.status_code.name == "ERROR"
    assert attrs(handled)[semconv.ERROR_TYPE] == "tool_error"
    assert attrs(handled)[semconv.GEN_AI_TOOL_CALL_ID] == "c9"


def test_tool_content_only_when_captured(handler, span_exporter, content_capture):
    from llmtrace import CaptureMode
    from llmtrace._content import ContentPolicy

    add.invoke({"a": 1, "b": 2}, config={"callbacks": [handler]})
    assert semconv.GEN_AI_TOOL_CALL_ARGUMENTS not in attrs(span_exporter.get_finished_spans()[0])
    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_ONLY)
    add.invoke({"a": 1, "b": 2}, config={"callbacks": [handler]})
    a = attrs(span_exporter.get_finished_spans()[1])
    assert json.loads(a[semconv.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"a": 1, "b": 2}
    assert a[semconv.GEN_AI_TOOL_CALL_RESULT] in ("3", 3)


def test_legacy_agent_action_and_finish(handler, span_exporter):
    from langchain_core.agents import AgentAction, AgentFinish

    manager = CallbackManager(handlers=[handler], inheritable_handlers=[handler])
    run = manager.on_chain_start({"name": "AgentExecutor"}, {"input": "q"}, name="AgentExecutor")
    run.on_agent_action(AgentAction(tool="add", tool_input={"a": 1}, log=""))
    tool_run = run.get_child().on_tool_start({"name": "add"}, "{}")
    tool_run.on_tool_end("3")
    run.on_agent_finish(AgentFinish(return_values={"output": "3"}, log=""))
    run.on_chain_end({"output": "3"})
    tool_span, agent = span_exporter.get_finished_spans()
    assert agent.name == "invoke_agent AgentExecutor"
    assert [e[1][semconv.LLMTRACE_AGENT_STEP_KIND] for e in events(agent)] == [
        "action",
        "observation",
        "final",
    ]
    assert tool_span.parent.span_id == agent.context.span_id


def test_graph_interrupt_is_not_an_error(handler, span_exporter):
    from langgraph.errors import GraphInterrupt

    manager = CallbackManager(handlers=[handler])
    run = manager.on_chain_start(None, {}, name="LangGraph")
    run.on_chain_error(GraphInterrupt(()))
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code.name == "UNSET"


def test_thread_id_is_the_conversation_id(handler, span_exporter, metric_reader):
    """LangGraph copies configurable.thread_id into run metadata: it names the conversation on the
    agent and model spans (never on metrics: one value per conversation)."""
    from langgraph.checkpoint.memory import InMemorySaver

    agent = create_agent(
        ScriptedChatModel(script=[answer("hi")]), tools=[], checkpointer=InMemorySaver(), name="helper"
    )
    config = {"callbacks": [handler], "configurable": {"thread_id": "thread-42"}}
    for _ in range(2):  # the same conversation, resumed
        agent.invoke({"messages": [("user", "hi")]}, config=config)
    spans = span_exporter.get_finished_spans()
    assert [s.name for s in spans] == ["chat gpt-4o-mini", "invoke_agent helper"] * 2
    assert {attrs(s)[semconv.GEN_AI_CONVERSATION_ID] for s in spans} == {"thread-42"}
    data = metric_reader.get_metrics_data()
    assert "thread-42" not in data.to_json()


def test_session_metadata_is_the_conversation_id_and_absent_without_one(handler, span_exporter):
    model = ScriptedChatModel(script=[answer("hi")])
    model.invoke("hi", config={"callbacks": [handler], "metadata": {"session_id": "s-1"}})
    model.invoke("hi", config={"callbacks": [handler]})
    first, second = span_exporter.get_finished_spans()
    assert attrs(first)[semconv.GEN_AI_CONVERSATION_ID] == "s-1"
    assert semconv.GEN_AI_CONVERSATION_ID not in attrs(second)


# ---- agents used as tools, interrupts, agent input ------------------------------------------------
def _agent_as_tool(outer_name: str | None, inner_name: str | None):
    inner = create_agent(
        ScriptedChatModel(script=[call(("add", {"a": 1, "b": 2}, "inner_add")), answer("3")]),
        tools=[add],
        name=inner_name,
    )

    @tool
    def delegate(question: str) -> str:
        """Ask the helper agent."""
        return inner.invoke({"messages": [("user", question)]})["messages"][-1].content

    return create_agent(
        ScriptedChatModel(script=[call(("delegate", {"question": "1+2?"}, "outer_call")), answer("it is 3")]),
        tools=[delegate],
        name=outer_name,
    )


@pytest.mark.parametrize(
    ("outer_name", "inner_name", "outer_span", "inner_span"),
    [
        ("boss", "helper", "invoke_agent boss", "invoke_agent helper"),
        (None, None, "invoke_agent LangGraph", "invoke_agent LangGraph"),  # create_agent's default
        ("boss", None, "invoke_agent boss", "invoke_agent LangGraph"),  # inherits lc_agent_name=boss
        ("worker", "worker", "invoke_agent worker", "invoke_agent worker"),
    ],
)
def test_agent_called_by_a_tool_is_an_agent_of_its_own(
    handler, span_exporter, outer_name, inner_name, outer_span, inner_span
):
    """A graph run inside a tool inherits the enclosing graph node's metadata (langgraph_node,
    lc_agent_name): it must still be a nested agent, and its model and tool calls its own."""
    result = _agent_as_tool(outer_name, inner_name).invoke(
        {"messages": [("user", "go")]}, config={"callbacks": [handler]}
    )
    assert result["messages"][-1].content == "it is 3"
    spans = span_exporter.get_finished_spans()
    assert sorted(tree(spans), key=str) == sorted(
        [
            ("chat gpt-4o-mini", outer_span),
            ("execute_tool delegate", outer_span),
            (inner_span, "execute_tool delegate"),
            ("chat gpt-4o-mini", inner_span),
            ("execute_tool add", inner_span),
            ("chat gpt-4o-mini", inner_span),
            ("chat gpt-4o-mini", outer_span),
            (outer_span, None),
        ],
        key=str,
    )
    outer = next(s for s in spans if s.name == outer_span and s.parent is None)
    inner = next(s for s in spans if s.name == inner_span and s.parent is not None)
    inner_name_attr = inner_name or "LangGraph"
    assert attrs(inner)[semconv.GEN_AI_AGENT_NAME] == inner_name_attr
    assert (
        attrs(next(s for s in spans if s.name == "execute_tool add"))[semconv.GEN_AI_AGENT_NAME]
        == inner_name_attr
    )

    def step_calls(span):
        return [
            (e[1][semconv.LLMTRACE_AGENT_STEP_KIND], e[1].get(semconv.GEN_AI_TOOL_CALL_ID))
            for e in events(span)
        ]

    assert step_calls(outer) == [("action", "outer_call"), ("observation", "outer_call"), ("final", None)]
    assert step_calls(inner) == [("action", "inner_add"), ("observation", "inner_add"), ("final", None)]
    assert handler.open_runs() == 0


def test_plain_chain_in_a_tool_of_a_graph_stays_plumbing(handler, span_exporter):
    """The same inherited metadata on a chain that is not a graph: no span of its own."""
    model = ScriptedChatModel(script=[answer("inner answer")])
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | model

    @tool
    def ask(q: str) -> str:
        """Ask a chain."""
        return chain.invoke({"q": q}).content

    agent = create_agent(
        ScriptedChatModel(script=[call(("ask", {"q": "x"}, "c1")), answer("done")]),
        tools=[ask],
        name="helper",
    )
    agent.invoke({"messages": [("user", "go")]}, config={"callbacks": [handler]})
    spans = span_exporter.get_finished_spans()
    assert sorted(tree(spans)) == sorted(
        [
            ("chat gpt-4o-mini", "invoke_agent helper"),
            ("chat gpt-4o-mini", "execute_tool ask"),
            ("execute_tool ask", "invoke_agent helper"),
            ("chat gpt-4o-mini", "invoke_agent helper"),
            ("invoke_agent helper", None),
        ]
    )


def test_interrupted_run_records_no_final_step_and_no_tool_result(handler, span_exporter):
    """``interrupt()`` in a tool pauses the run: LangGraph ends the root normally, but the agent
    did not finish and the tool returned nothing (no ``final``, no ``observation``)."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command, interrupt

    @tool
    def transfer(amount: int) -> str:
        """Transfer money after a human approves."""
        return "approved" if interrupt({"amount": amount}) == "yes" else "refused"

    agent = create_agent(
        ScriptedChatModel(script=[call(("transfer", {"amount": 5}, "t1")), answer("sent")]),
        tools=[transfer],
        checkpointer=InMemorySaver(),
        name="bank",
    )
    config = {"callbacks": [handler], "configurable": {"thread_id": "t"}}
    paused = agent.invoke({"messages": [("user", "send 5")]}, config=config)
    assert "__interrupt__" in paused
    resumed = agent.invoke(Command(resume="yes"), config=config)
    assert resumed["messages"][-1].content == "sent"
    first, second = [s for s in span_exporter.get_finished_spans() if s.name == "invoke_agent bank"]
    for span in (first, second):
        assert span.status.status_code.name == "UNSET"
    kinds = [[e[1][semconv.LLMTRACE_AGENT_STEP_KIND] for e in events(s)] for s in (first, second)]
    assert kinds == [["action"], ["observation", "final"]]
    paused_tool = next(
        s
        for s in span_exporter.get_finished_spans()
        if s.name == "execute_tool transfer" and s.context.trace_id == first.context.trace_id
    )
    assert paused_tool.status.status_code.name == "UNSET"
    assert handler.open_runs() == 0


@pytest.mark.parametrize("named", [True, False])
@pytest.mark.parametrize(
    "message",
    [("user", "hello there"), {"role": "user", "content": "hello there"}, "hello there"],
    ids=["tuple", "dict", "str"],
)
def test_agent_input_messages_in_every_form_langchain_accepts(
    handler, span_exporter, content_capture, named, message
):
    from llmtrace import CaptureMode
    from llmtrace._content import ContentPolicy

    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_ONLY)
    agent = create_agent(ScriptedChatModel(script=[answer("hi")]), tools=[], name="helper" if named else None)
    agent.invoke({"messages": [message]}, config={"callbacks": [handler]})
    agent_span = next(s for s in span_exporter.get_finished_spans() if s.name.startswith("invoke_agent"))
    assert json.loads(attrs(agent_span)[semconv.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "hello there"}]}
    ]
    assert json.loads(attrs(agent_span)[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["parts"][0]["content"] == "hi"


# ---- long runs: busy is not abandoned ---------------------------------------------------------------
def test_busy_agent_outlives_the_ttl(handler, span_exporter):
    """A tool that works longer than the run map's TTL, calling a model now and then: the agent and
    the graph node around the tool see no callback of their own meanwhile, but they are alive (not
    evicted, no second agent span for the calls after the TTL)."""
    ttl_s, calls = 0.4, 8
    handler._runs.ttl_s = ttl_s
    inner = ScriptedChatModel(script=[answer(f"note {i}") for i in range(calls)])

    @tool
    def research(topic: str) -> str:
        """Research a topic at length."""
        for _ in range(calls):
            inner.invoke(topic)
            time.sleep(ttl_s / 4)
        return "notes"

    agent = create_agent(
        ScriptedChatModel(script=[call(("research", {"topic": "sky"}, "c1")), answer("done")]),
        tools=[research],
        name="boss",
    )
    agent.invoke({"messages": [("user", "go")]}, config={"callbacks": [handler]})
    spans = span_exporter.get_finished_spans()
    assert sorted(tree(spans)) == sorted(
        [("chat gpt-4o-mini", "invoke_agent boss")] * 2
        + [("execute_tool research", "invoke_agent boss")]
        + [("chat gpt-4o-mini", "execute_tool research")] * calls
        + [("invoke_agent boss", None)]
    )
    for span in spans:
        assert span.status.status_code.name == "UNSET", span.name
        assert semconv.LLMTRACE_EVICTED not in attrs(span)
    assert handler.open_runs() == 0


def test_tool_returning_a_command_records_its_tool_message(handler, span_exporter, content_capture):
    """A tool that updates the graph's state returns a ``Command``: its result is the ToolMessage
    inside, not the serialised command."""

    from langgraph.types import Command

    from llmtrace import CaptureMode
    from llmtrace._content import ContentPolicy

    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_ONLY)

    @tool
    def remember(fact: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
        """Remember a fact."""
        return Command(update={"messages": [ToolMessage(f"noted: {fact}", tool_call_id=tool_call_id)]})

    agent = create_agent(
        ScriptedChatModel(script=[call(("remember", {"fact": "sky is blue"}, "c1")), answer("ok")]),
        tools=[remember],
        name="helper",
    )
    agent.invoke({"messages": [("user", "go")]}, config={"callbacks": [handler]})
    tool_span = next(s for s in span_exporter.get_finished_spans() if s.name == "execute_tool remember")
    assert attrs(tool_span)[semconv.GEN_AI_TOOL_CALL_RESULT] == "noted: sky is blue"
    assert json.loads(attrs(tool_span)[semconv.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"fact": "sky is blue"}


def test_a_paused_tool_records_no_observation_a_handoff_does(handler, span_exporter):
    """An interrupt pauses the tool (no result yet, and the agent is not finished); a handoff
    (``ParentCommand``, a tool returning ``Command(graph=PARENT)``) is the tool's result."""
    from langgraph.errors import GraphInterrupt, ParentCommand

    def run_agent(error: BaseException) -> list[str]:
        manager = CallbackManager(handlers=[handler], inheritable_handlers=[handler])
        run = manager.on_chain_start({"name": "AgentExecutor"}, {"input": "q"}, name="AgentExecutor")
        tool_run = run.get_child().on_tool_start({"name": "transfer"}, "{}")
        tool_run.on_tool_error(error)
        run.on_chain_end({"output": ""})
        agent = span_exporter.get_finished_spans()[-1]
        span_exporter.clear()
        return [e[1][semconv.LLMTRACE_AGENT_STEP_KIND] for e in events(agent)]

    assert run_agent(GraphInterrupt(())) == []
    assert run_agent(ParentCommand(Command(graph=Command.PARENT, goto="other"))) == ["observation", "final"]
    assert handler.open_runs() == 0
