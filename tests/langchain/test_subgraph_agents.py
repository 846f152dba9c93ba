"""A graph run as a node of another graph (added as a node, a ``Send()`` target, or invoked by a node)
is an agent of its own, with or without a name; a node or a functional API task is not."""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.func import entrypoint, task
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Send

from llmtrace import semconv

from .conftest import attrs, tree
from .fakes import ScriptedChatModel, answer, call


@tool
def echo(text: str) -> str:
    """Echo the text."""
    return text


def _fan_out_to(sub: Any, name: str = "outer") -> Any:
    graph = StateGraph(MessagesState)
    graph.add_node("agent", sub)
    graph.add_conditional_edges(
        START,
        lambda state: [Send("agent", {"messages": [("user", f"job {i}")]}) for i in range(2)],
        ["agent"],
    )
    graph.add_edge("agent", END)
    return graph.compile(name=name)


def _worker(name: str | None) -> Any:
    model = ScriptedChatModel(script=[call(("echo", {"text": "x"}, "c1")), answer("done")])
    return create_agent(model, tools=[echo], name=name)


def _one_worker_tree(agent_span: str) -> list[tuple[str, str | None]]:
    return [
        ("chat gpt-4o-mini", agent_span),
        ("execute_tool echo", agent_span),
        ("chat gpt-4o-mini", agent_span),
        (agent_span, "invoke_agent outer"),
    ]


def test_send_to_unnamed_agents_gives_each_its_agent_span(handler, span_exporter):
    """An unnamed create_agent added as a node is named after its node; two Send() targets running
    side by side are two agents, not folded into the outer one."""
    _fan_out_to(_worker(None)).invoke({"messages": []}, config={"callbacks": [handler]})
    spans = span_exporter.get_finished_spans()
    assert sorted(tree(spans), key=str) == sorted(
        _one_worker_tree("invoke_agent agent") * 2 + [("invoke_agent outer", None)], key=str
    )
    workers = [s for s in spans if s.name == "invoke_agent agent"]
    assert [attrs(s)[semconv.GEN_AI_AGENT_NAME] for s in workers] == ["agent", "agent"]
    by_id = {s.context.span_id: s for s in spans}
    tool_parents = {by_id[s.parent.span_id].context.span_id for s in spans if s.name == "execute_tool echo"}
    assert tool_parents == {s.context.span_id for s in workers}  # each worker its own tool call
    assert all(attrs(s)[semconv.GEN_AI_AGENT_NAME] == "agent" for s in spans if s.name == "execute_tool echo")
    assert handler.open_runs() == 0


def test_send_to_an_agent_named_as_the_outer_one(handler, span_exporter):
    _fan_out_to(_worker("same"), name="same").invoke({"messages": []}, config={"callbacks": [handler]})
    assert sorted(tree(span_exporter.get_finished_spans()), key=str) == sorted(
        [
            (n, "invoke_agent same" if p == "invoke_agent outer" else p)
            for n, p in _one_worker_tree("invoke_agent same")
        ]
        * 2
        + [("invoke_agent same", None)],
        key=str,
    )


def test_state_graph_subgraph_as_a_node_and_invoked_by_a_node(handler, span_exporter):
    model = ScriptedChatModel(script=[answer("text")])

    def write(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    sub = StateGraph(MessagesState)
    sub.add_node("write", write)
    sub.add_edge(START, "write")
    sub.add_edge("write", END)
    named, unnamed = sub.compile(name="writer"), sub.compile()

    def calls_a_graph(state: MessagesState) -> dict[str, Any]:
        return {"messages": unnamed.invoke(state)["messages"][-1:]}

    graph = StateGraph(MessagesState)
    graph.add_node("draft", named)
    graph.add_node("review", calls_a_graph)
    graph.add_edge(START, "draft")
    graph.add_edge("draft", "review")
    graph.add_edge("review", END)
    graph.compile(name="outer").invoke({"messages": [("user", "go")]}, config={"callbacks": [handler]})
    assert tree(span_exporter.get_finished_spans()) == [
        ("chat gpt-4o-mini", "invoke_agent writer"),
        ("invoke_agent writer", "invoke_agent outer"),
        ("chat gpt-4o-mini", "invoke_agent review"),  # unnamed: named after the node that runs it
        ("invoke_agent review", "invoke_agent outer"),
        ("invoke_agent outer", None),
    ]


def test_functional_api_tasks_are_not_agents(handler, span_exporter):
    model = ScriptedChatModel(script=[answer("essay")])

    @task
    def write(topic: str) -> str:
        return str(model.invoke(f"write about {topic}").content)

    @entrypoint()
    def workflow(topics: list[str]) -> list[str]:
        return [f.result() for f in [write(t) for t in topics]]

    assert workflow.invoke(["a", "b"], config={"callbacks": [handler]}) == ["essay", "essay"]
    assert tree(span_exporter.get_finished_spans()) == [
        ("chat gpt-4o-mini", "invoke_agent LangGraph"),
        ("chat gpt-4o-mini", "invoke_agent LangGraph"),
        ("invoke_agent LangGraph", None),
    ]
