"""``structured_predict`` and ``predict_and_call``: one model span, and one trace per call.

``FunctionCallingProgram`` (behind ``structured_predict`` of every function-calling LLM) turns the
output class into a function tool and runs it through ``predict_and_call``: building the output
object is response parsing, not a tool execution. ``predict_and_call`` called outside any traced
operation is ``invoke_workflow predict_and_call``, with its model call and the tools it ran.
"""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.llms import MockFunctionCallingLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from llmtrace import semconv
from llmtrace.testing import metric_points
from tests.llama_index.conftest import is_child, one, open_runs, steps, tree
from tests.llama_index.test_agent import scripted


class Invoice(BaseModel):
    total: int


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def _structured_predict(llm: MockFunctionCallingLLM, mode: str) -> Invoice:
    prompt = PromptTemplate("extract the invoice from {text}")
    if mode == "sync":
        return llm.structured_predict(Invoice, prompt, text="total: 3")
    return asyncio.run(llm.astructured_predict(Invoice, prompt, text="total: 3"))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_structured_predict_is_one_model_span(instrumentor, span_exporter, metric_reader, mode):
    llm = MockFunctionCallingLLM(response_generator=scripted([("c1", "Invoice", {"total": 3})]))
    assert _structured_predict(llm, mode) == Invoice(total=3)
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["chat"]  # no execute_tool Invoice: the output class is parsed, not executed
    chat = spans[0]
    assert chat.parent is None
    assert chat.kind is SpanKind.CLIENT
    assert chat.attributes[semconv.GEN_AI_OPERATION_NAME] == semconv.OP_CHAT
    assert metric_points(metric_reader, semconv.METRIC_EXECUTE_TOOL_DURATION) == []
    assert metric_points(metric_reader, semconv.METRIC_WORKFLOW_DURATION) == []
    assert [p.count for p in metric_points(metric_reader, semconv.METRIC_CLIENT_OPERATION_DURATION)] == [1]
    assert len(open_runs()) == 0


def test_structured_predict_validation_error_fails_only_the_call(instrumentor, span_exporter):
    """An output the class rejects: structured_predict raises; no tool span fails, nothing stays open."""
    llm = MockFunctionCallingLLM(response_generator=scripted([("c1", "Invoice", {"total": "many"})]))
    with pytest.raises(ValueError, match="Structured output extraction failed"):
        _structured_predict(llm, "sync")
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["chat"]
    assert spans[0].status.status_code is StatusCode.UNSET  # the model call itself succeeded
    assert len(open_runs()) == 0


def _predict_and_call(llm: MockFunctionCallingLLM, mode: str) -> str:
    tools = [FunctionTool.from_defaults(add)]
    if mode == "sync":
        return str(llm.predict_and_call(tools, "1 + 2?"))
    return str(asyncio.run(llm.apredict_and_call(tools, "1 + 2?")))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_predict_and_call_is_one_trace(instrumentor, span_exporter, metric_reader, mode):
    llm = MockFunctionCallingLLM(response_generator=scripted([("call_7", "add", {"a": 1, "b": 2})]))
    assert _predict_and_call(llm, mode) == "3"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_workflow predict_and_call", "  chat", "  execute_tool add"]
    root = one(spans, "invoke_workflow predict_and_call")
    assert root.parent is None
    assert root.attributes[semconv.GEN_AI_OPERATION_NAME] == semconv.OP_INVOKE_WORKFLOW
    assert root.attributes[semconv.GEN_AI_WORKFLOW_NAME] == "predict_and_call"
    assert root.status.status_code is StatusCode.UNSET
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    chat, tool = one(spans, "chat"), one(spans, "execute_tool add")
    assert is_child(chat, root) and is_child(tool, root)
    assert tool.attributes[semconv.GEN_AI_TOOL_CALL_ID] == "call_7"  # the model's call id
    assert tool.attributes[semconv.GEN_AI_TOOL_NAME] == "add"
    assert chat.end_time <= tool.start_time and tool.end_time <= root.end_time
    [workflow] = metric_points(metric_reader, semconv.METRIC_WORKFLOW_DURATION)
    assert dict(workflow.attributes) == {semconv.GEN_AI_WORKFLOW_NAME: "predict_and_call"}
    [tool_duration] = metric_points(metric_reader, semconv.METRIC_EXECUTE_TOOL_DURATION)
    assert tool_duration.attributes[semconv.GEN_AI_TOOL_NAME] == "add"
    assert tool_duration.count == 1
    assert len(open_runs()) == 0


def test_predict_and_call_content(instrumentor, capture, span_exporter):
    llm = MockFunctionCallingLLM(response_generator=scripted([("call_7", "add", {"a": 1, "b": 2})]))
    assert _predict_and_call(llm, "sync") == "3"
    root = one(span_exporter.get_finished_spans(), "invoke_workflow predict_and_call")
    assert root.attributes[semconv.GEN_AI_INPUT_MESSAGES] == (
        '[{"role":"user","parts":[{"type":"text","content":"1 + 2?"}]}]'
    )
    assert root.attributes[semconv.GEN_AI_OUTPUT_MESSAGES] == (
        '[{"role":"assistant","parts":[{"type":"text","content":"3"}],"finish_reason":"stop"}]'
    )


async def research(q: str) -> str:
    """Looks things up with a model of its own."""
    llm = MockFunctionCallingLLM(
        response_generator=scripted(
            [("inner_1", "add", {"a": 2, "b": 2})], [("inner_2", "Invoice", {"total": "many"})]
        )
    )
    answer = await llm.apredict_and_call([FunctionTool.from_defaults(add)], q)
    try:
        await llm.astructured_predict(Invoice, PromptTemplate("extract"))
    except ValueError:
        return f"{answer} and no invoice"
    return str(answer)


def test_predict_inside_an_agent_tool(instrumentor, span_exporter, metric_reader):
    """Inside a traced operation predict_and_call is plumbing; the tool it runs is a tool execution of
    its own (with the model's call id); a structured output the class rejects fails no tool."""
    turns = scripted([("outer_1", "research", {"q": "2+2?"})], "done")
    llm = MockFunctionCallingLLM(response_generator=turns)
    agent = FunctionAgent(name="researcher", tools=[research], llm=llm)

    async def main():
        return await agent.run("go")

    assert str(asyncio.run(main())) == "done"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        "invoke_agent researcher",
        "  chat",
        "  execute_tool research",
        "    chat",
        "    execute_tool add",
        "    chat",
        "  chat",
    ]
    outer = one(spans, "execute_tool research")
    assert outer.status.status_code is StatusCode.UNSET
    assert outer.attributes[semconv.GEN_AI_TOOL_CALL_ID] == "outer_1"
    assert one(spans, "execute_tool add").attributes[semconv.GEN_AI_TOOL_CALL_ID] == "inner_1"
    durations = metric_points(metric_reader, semconv.METRIC_EXECUTE_TOOL_DURATION)
    assert sorted(p.attributes[semconv.GEN_AI_TOOL_NAME] for p in durations) == ["add", "research"]
    assert len(open_runs()) == 0


class Out(BaseModel):
    answer: str


def test_agent_structured_output_is_not_a_tool_call(instrumentor, span_exporter, metric_reader):
    """An agent with ``output_cls`` makes one more model call for its structured output (through
    ``StructuredLLM`` -> ``structured_predict``): a model span, no tool span, no tool call counted."""
    llm = MockFunctionCallingLLM(
        response_generator=scripted(
            [("call_1", "add", {"a": 1, "b": 2})], "3", [("s1", "Out", {"answer": "three"})]
        )
    )
    agent = FunctionAgent(name="structured", tools=[add], llm=llm, output_cls=Out)

    async def main():
        return await agent.run("1 + 2?")

    result = asyncio.run(main())
    assert result.structured_response == {"answer": "three"}
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        "invoke_agent structured",
        "  chat",
        "  execute_tool add",
        "  chat",
        "  chat",
    ]
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)
    agent_span = one(spans, "invoke_agent structured")
    assert [kind for _, kind, *_ in steps(agent_span)] == [
        semconv.STEP_ACTION,
        semconv.STEP_OBSERVATION,
        semconv.STEP_FINAL,
    ]
    [tool_calls] = metric_points(metric_reader, semconv.METRIC_INVOKE_AGENT_TOOL_CALLS)
    assert tool_calls.sum == 1
    [tool_duration] = metric_points(metric_reader, semconv.METRIC_EXECUTE_TOOL_DURATION)
    assert tool_duration.attributes[semconv.GEN_AI_TOOL_NAME] == "add"
    assert len(open_runs()) == 0
