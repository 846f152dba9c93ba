"""Agents and workflows: FunctionAgent with tools, AgentWorkflow hand-offs, plain workflows."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent
from llama_index.core.llms import ChatMessage, MockFunctionCallingLLM, MockLLM
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import (
    Context,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)
from llama_index.core.workflow.errors import WorkflowCancelledByUser
from opentelemetry.trace import StatusCode

from llmtrace import semconv
from llmtrace.testing import metric_points
from tests.llama_index.conftest import (
    by_name,
    handoff_workflow,
    is_child,
    one,
    open_runs,
    scripted,
    steps,
    tree,
)


def run(start):
    """Run a workflow (``Workflow.run`` needs a running loop) and return its result."""

    async def main():
        return await start()

    return asyncio.run(main())


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


def broken(a: int) -> int:
    """Always fails."""
    raise RuntimeError("tool broke")


def test_function_agent_with_two_tools(instrumentor, span_exporter, metric_reader):
    llm = MockFunctionCallingLLM(
        response_generator=scripted(
            [("call_1", "add", {"a": 1, "b": 2}), ("call_2", "multiply", {"a": 3, "b": 4})], "3 and 12"
        )
    )
    agent = FunctionAgent(name="calculator", description="does math", tools=[add, multiply], llm=llm)
    result = run(lambda: agent.run("compute"))
    assert str(result) == "3 and 12"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        "invoke_agent calculator",
        "  chat",
        "  execute_tool add",
        "  execute_tool multiply",
        "  chat",
    ]
    agent_span = one(spans, "invoke_agent calculator")
    assert agent_span.parent is None
    assert agent_span.attributes[semconv.GEN_AI_OPERATION_NAME] == semconv.OP_INVOKE_AGENT
    assert agent_span.attributes[semconv.GEN_AI_AGENT_NAME] == "calculator"
    assert agent_span.attributes[semconv.GEN_AI_AGENT_DESCRIPTION] == "does math"
    assert agent_span.status.status_code is StatusCode.UNSET
    recorded = steps(agent_span)
    assert [index for index, *_ in recorded] == [1, 2, 3, 4, 5]
    assert recorded[:2] == [
        (1, semconv.STEP_ACTION, "add", "call_1"),
        (2, semconv.STEP_ACTION, "multiply", "call_2"),
    ]
    # the two tools run concurrently: their observations come in completion order
    assert sorted(r[1:] for r in recorded[2:4]) == [
        (semconv.STEP_OBSERVATION, "add", "call_1"),
        (semconv.STEP_OBSERVATION, "multiply", "call_2"),
    ]
    assert recorded[4] == (5, semconv.STEP_FINAL, None, None)
    tool = one(spans, "execute_tool add")
    assert is_child(tool, agent_span)
    assert tool.attributes[semconv.GEN_AI_TOOL_NAME] == "add"
    assert tool.attributes[semconv.GEN_AI_TOOL_CALL_ID] == "call_1"
    assert tool.attributes[semconv.GEN_AI_AGENT_NAME] == "calculator"
    # what the agent told the model about the tool (LlamaIndex puts the signature first)
    assert tool.attributes[semconv.GEN_AI_TOOL_DESCRIPTION].endswith(") -> 'int'\nAdd two numbers.")
    assert semconv.GEN_AI_TOOL_CALL_ARGUMENTS not in tool.attributes
    for chat in by_name(spans, "chat"):
        assert is_child(chat, agent_span)
        assert chat.attributes[semconv.GEN_AI_REQUEST_STREAM] is True
    [inference_calls] = metric_points(metric_reader, semconv.METRIC_INVOKE_AGENT_INFERENCE_CALLS)
    assert (inference_calls.count, inference_calls.sum) == (1, 2)
    [tool_calls] = metric_points(metric_reader, semconv.METRIC_INVOKE_AGENT_TOOL_CALLS)
    assert (tool_calls.count, tool_calls.sum) == (1, 2)
    [agent_duration] = metric_points(metric_reader, semconv.METRIC_INVOKE_AGENT_DURATION)
    assert agent_duration.count == 1
    tool_durations = metric_points(metric_reader, semconv.METRIC_EXECUTE_TOOL_DURATION)
    assert sorted(p.attributes[semconv.GEN_AI_TOOL_NAME] for p in tool_durations) == ["add", "multiply"]
    assert len(open_runs()) == 0


def test_tool_error_is_recorded_on_tool_span(instrumentor, span_exporter):
    llm = MockFunctionCallingLLM(response_generator=scripted([("c1", "broken", {"a": 1})], "sorry"))
    agent = FunctionAgent(name="fragile", tools=[broken], llm=llm)
    assert str(run(lambda: agent.run("go"))) == "sorry"
    spans = span_exporter.get_finished_spans()
    tool = one(spans, "execute_tool broken")
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.attributes[semconv.ERROR_TYPE] == "RuntimeError"
    assert one(spans, "invoke_agent fragile").status.status_code is StatusCode.UNSET


async def slow(a: int) -> int:
    """Takes its time."""
    await asyncio.sleep(5)
    return a


def test_tool_cut_off_by_the_workflow_timeout_is_cancelled(instrumentor, span_exporter, metric_reader):
    """The workflow cancels the running tool and its call_tool step returns nothing: not a success."""
    llm = MockFunctionCallingLLM(response_generator=scripted([("call_1", "slow", {"a": 1})], "done"))
    agent = FunctionAgent(name="slowpoke", tools=[slow], llm=llm, timeout=0.3)
    with pytest.raises(Exception, match="timed out"):
        run(lambda: agent.run("go"))
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_agent slowpoke", "  chat", "  execute_tool slow"]
    tool = one(spans, "execute_tool slow")
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.attributes[semconv.ERROR_TYPE] == "cancelled"
    assert tool.attributes[semconv.GEN_AI_TOOL_CALL_ID] == "call_1"
    assert (tool.end_time - tool.start_time) / 1e9 < 2  # ended when it was cut off
    (point,) = metric_points(metric_reader, semconv.METRIC_EXECUTE_TOOL_DURATION)
    assert point.attributes[semconv.ERROR_TYPE] == "cancelled"
    assert one(spans, "invoke_agent slowpoke").status.status_code is StatusCode.ERROR
    assert len(open_runs()) == 0


def test_agent_workflow_handoff_keeps_agents_under_workflow(instrumentor, span_exporter, metric_reader):
    workflow = handoff_workflow()
    assert str(run(lambda: workflow.run(user_msg="2+2?"))) == "4"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        "invoke_workflow AgentWorkflow",
        "  invoke_agent front",
        "    chat",
        "    execute_tool handoff",
        "  invoke_agent math",
        "    chat",
        "    execute_tool add",
        "    chat",
    ]
    front_span, math_span = one(spans, "invoke_agent front"), one(spans, "invoke_agent math")
    assert steps(front_span) == [
        (1, semconv.STEP_ACTION, "handoff", "h1"),
        (2, semconv.STEP_OBSERVATION, "handoff", "h1"),
    ]
    assert [s[1] for s in steps(math_span)] == [
        semconv.STEP_ACTION,
        semconv.STEP_OBSERVATION,
        semconv.STEP_FINAL,
    ]
    calls = {
        p.attributes[semconv.GEN_AI_AGENT_NAME]: p.sum
        for p in metric_points(metric_reader, semconv.METRIC_INVOKE_AGENT_INFERENCE_CALLS)
    }
    assert calls == {"front": 1, "math": 2}
    # the acting agent's own tool has its description; the workflow's handoff tool is no agent's
    add_span = one(spans, "execute_tool add")
    assert add_span.attributes[semconv.GEN_AI_TOOL_DESCRIPTION].endswith(") -> 'int'\nAdd two numbers.")
    assert semconv.GEN_AI_TOOL_DESCRIPTION not in one(spans, "execute_tool handoff").attributes


def test_react_agent(instrumentor, span_exporter):
    answers = iter(
        [
            'Thought: I need to add.\nAction: add\nAction Input: {"a": 1, "b": 1}',
            "Thought: I can answer.\nAnswer: 2",
        ]
    )

    def respond(messages, **kwargs):
        return ChatMessage(role="assistant", content=next(answers))

    agent = ReActAgent(name="reasoner", tools=[add], llm=MockFunctionCallingLLM(response_generator=respond))
    assert str(run(lambda: agent.run("1+1?"))) == "2"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_agent reasoner", "  chat", "  execute_tool add", "  chat"]
    assert [s[1] for s in steps(one(spans, "invoke_agent reasoner"))] == [
        semconv.STEP_ACTION,
        semconv.STEP_OBSERVATION,
        semconv.STEP_FINAL,
    ]


class Pipeline(Workflow):
    @step
    async def answer(self, ev: StartEvent) -> StopEvent:
        completion = await MockLLM().acomplete(ev.get("question"))
        return StopEvent(result=completion.text)


class Failing(Workflow):
    @step
    async def answer(self, ev: StartEvent) -> StopEvent:
        await MockLLM().acomplete("x")
        raise KeyError("missing")


def test_workflow_run(instrumentor, span_exporter, metric_reader):
    assert run(lambda: Pipeline().run(question="q")) == "q"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_workflow Pipeline", "  text_completion"]
    assert one(spans, "invoke_workflow Pipeline").status.status_code is StatusCode.UNSET
    [duration] = metric_points(metric_reader, semconv.METRIC_WORKFLOW_DURATION)
    assert dict(duration.attributes) == {semconv.GEN_AI_WORKFLOW_NAME: "Pipeline"}


def test_workflow_error_ends_spans_with_error(instrumentor, span_exporter):
    with pytest.raises(KeyError):
        run(lambda: Failing().run())
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_workflow Failing", "  text_completion"]
    workflow = one(spans, "invoke_workflow Failing")
    assert workflow.status.status_code is StatusCode.ERROR
    assert workflow.attributes[semconv.ERROR_TYPE] == "KeyError"
    assert len(open_runs()) == 0


def test_concurrent_agents(instrumentor, span_exporter):
    def make(i):
        llm = MockFunctionCallingLLM(
            response_generator=scripted([(f"c{i}", "add", {"a": i, "b": 1})], f"done {i}")
        )
        return FunctionAgent(name=f"agent{i}", tools=[add], llm=llm)

    async def main():
        return await asyncio.gather(*(make(i).run("go") for i in range(20)))

    results = asyncio.run(main())
    assert [str(r) for r in results] == [f"done {i}" for i in range(20)]
    spans = span_exporter.get_finished_spans()
    for i in range(20):
        agent = one(spans, f"invoke_agent agent{i}")
        members = [s for s in spans if s.context.trace_id == agent.context.trace_id]
        assert tree(members) == [f"invoke_agent agent{i}", "  chat", "  execute_tool add", "  chat"]
        assert [
            s.attributes.get(semconv.GEN_AI_TOOL_CALL_ID) for s in by_name(members, "execute_tool add")
        ] == [f"c{i}"]


# ---- long runs: busy is not abandoned ---------------------------------------------------------------
TTL_S = 0.4
CALLS = 8  # CALLS x PAUSE_S = 2 x TTL_S
PAUSE_S = TTL_S / 4


class Long(Workflow):
    """One step that calls the model now and then for longer than the run map's TTL."""

    @step
    async def go(self, ev: StartEvent) -> StopEvent:
        for i in range(CALLS):
            await MockLLM().acomplete(str(i))
            await asyncio.sleep(PAUSE_S)
        return StopEvent(result="ok")


async def research(topic: str) -> str:
    """Query the docs several times (longer than the TTL in all)."""
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    engine = VectorStoreIndex.from_documents(
        [Document(text="The sky is blue.")], embed_model=MockEmbedding(embed_dim=4)
    ).as_query_engine(llm=MockLLM(max_tokens=2))
    for i in range(CALLS):  # a span starts below the tool every PAUSE_S or so: a quarter of the TTL
        await engine.aquery(f"{topic} {i}")
        await asyncio.sleep(PAUSE_S)
    return "notes"


@pytest.fixture
def short_ttl(instrumentor):
    runs = open_runs()
    runs.ttl_s = TTL_S
    yield runs
    runs.ttl_s = None


def test_busy_workflow_outlives_the_ttl(short_ttl, span_exporter, metric_reader):
    """Spans keep starting below the run (under its step, a plumbing span): the run is alive, not
    abandoned, however long it takes; no span is evicted and no model call loses its usage."""
    assert run(lambda: Long(timeout=30).run()) == "ok"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_workflow Long"] + ["  text_completion"] * CALLS
    for span in spans:
        assert span.status.status_code is StatusCode.UNSET, span.name
        assert semconv.LLMTRACE_EVICTED not in span.attributes
    workflow = one(spans, "invoke_workflow Long")
    assert workflow.end_time - workflow.start_time > 1.5 * TTL_S * 1e9
    assert len(metric_points(metric_reader, semconv.METRIC_CLIENT_OPERATION_DURATION)) == 1
    (duration,) = metric_points(metric_reader, semconv.METRIC_CLIENT_OPERATION_DURATION)
    assert duration.count == CALLS and semconv.ERROR_TYPE not in duration.attributes
    assert len(short_ttl) == 0


def test_busy_agent_tool_outlives_the_ttl(short_ttl, span_exporter):
    """The agent, its call_tool step and the tool's engine runs sit several hosts above the spans
    that start: every one of them is kept alive."""
    llm = MockFunctionCallingLLM(response_generator=scripted([("c1", "research", {"topic": "sky"})], "done"))
    agent = FunctionAgent(name="researcher", tools=[research], llm=llm)
    assert str(run(lambda: agent.run("go"))) == "done"
    spans = span_exporter.get_finished_spans()
    for span in spans:
        assert span.status.status_code is StatusCode.UNSET, span.name
    agent_span = one(spans, "invoke_agent researcher")
    tool = one(spans, "execute_tool research")
    assert is_child(tool, agent_span)
    engines = by_name(spans, "invoke_workflow RetrieverQueryEngine")
    assert len(engines) == CALLS and all(is_child(e, tool) for e in engines)
    assert tool.end_time - tool.start_time > 1.5 * TTL_S * 1e9
    assert len(short_ttl) == 0


def test_run_children_are_pruned_as_they_end(instrumentor):
    from llmtrace_llama_index._classify import Kind
    from llmtrace_llama_index._runs import Node, RunState

    from llmtrace._handler import TelemetryHandler

    handler = TelemetryHandler()
    state = RunState(handler.start_workflow("w"))
    for _ in range(1000):
        call = handler.start_chat("m", provider="openai")
        state.adopt(Node(Kind.CHAT, call, state.invocation, None, state))
        call.stop()
    kept_open = Node(Kind.CHAT, handler.start_chat("open", provider="openai"), state.invocation, None, state)
    state.adopt(kept_open)
    assert len(state.children) < 64 * 2
    assert kept_open in state.children


# ---- human in the loop: a tool waiting for an event -----------------------------------------
async def approve(ctx: Context, a: int) -> str:
    """Asks a human first."""
    answer = await ctx.wait_for_event(
        HumanResponseEvent, waiter_id="approval", waiter_event=InputRequiredEvent(prefix="approve?")
    )
    return f"approved={answer.response} a={a}"


approve.__annotations__["ctx"] = Context  # LlamaIndex finds the Context parameter by its annotation object


HUMAN_DELAY_S = 0.2


async def _answering(handler, response: str | None = "yes"):
    """Consume a run's events, answering its input request after HUMAN_DELAY_S (or cancelling the
    run if ``response`` is None)."""
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            await asyncio.sleep(HUMAN_DELAY_S)
            if response is None:
                await handler.cancel_run()
                break
            handler.ctx.send_event(HumanResponseEvent(response=response))
    return await handler


def test_tool_waiting_for_an_event_is_one_tool_call(instrumentor, capture, span_exporter, metric_reader):
    """The workflow runs the call_tool step again once the event comes: one execute_tool span for the
    call, covering the wait, counted once."""
    llm = MockFunctionCallingLLM(response_generator=scripted([("call_1", "approve", {"a": 2})], "done"))
    agent = FunctionAgent(name="careful", tools=[approve], llm=llm)
    assert str(run(lambda: _answering(agent.run("go")))) == "done"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_agent careful", "  chat", "  execute_tool approve", "  chat"]
    tool = one(spans, "execute_tool approve")
    assert tool.status.status_code is StatusCode.UNSET
    assert tool.attributes[semconv.GEN_AI_TOOL_CALL_ID] == "call_1"
    assert tool.attributes[semconv.GEN_AI_TOOL_CALL_RESULT] == "approved=yes a=2"
    assert tool.end_time - tool.start_time >= HUMAN_DELAY_S * 1e9  # the wait is inside the call
    agent_span = one(spans, "invoke_agent careful")
    assert steps(agent_span) == [
        (1, semconv.STEP_ACTION, "approve", "call_1"),
        (2, semconv.STEP_OBSERVATION, "approve", "call_1"),
        (3, semconv.STEP_FINAL, None, None),
    ]
    [tool_calls] = metric_points(metric_reader, semconv.METRIC_INVOKE_AGENT_TOOL_CALLS)
    assert (tool_calls.count, tool_calls.sum) == (1, 1)
    [tool_duration] = metric_points(metric_reader, semconv.METRIC_EXECUTE_TOOL_DURATION)
    assert tool_duration.count == 1 and tool_duration.sum >= HUMAN_DELAY_S
    assert len(open_runs()) == 0


def test_tool_waiting_when_its_run_is_cancelled(instrumentor, span_exporter, metric_reader):
    """Nobody answers and the run is cancelled: the waiting tool call ends with its run, once."""
    llm = MockFunctionCallingLLM(response_generator=scripted([("call_1", "approve", {"a": 2})], "done"))
    agent = FunctionAgent(name="careful", tools=[approve], llm=llm)
    with pytest.raises(WorkflowCancelledByUser):
        run(lambda: _answering(agent.run("go"), response=None))
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_agent careful", "  chat", "  execute_tool approve"]
    tool = one(spans, "execute_tool approve")
    assert tool.end_time - tool.start_time >= HUMAN_DELAY_S * 1e9
    assert tool.end_time <= one(spans, "invoke_agent careful").end_time
    [tool_duration] = metric_points(metric_reader, semconv.METRIC_EXECUTE_TOOL_DURATION)
    assert tool_duration.count == 1
    assert len(open_runs()) == 0


# ---- return_direct: the tool's output is the answer ------------------------------------------
def lookup(a: int) -> str:
    """Looks up an answer the user gets verbatim."""
    return f"answer {a}"


def test_return_direct_tool_records_the_final_step(instrumentor, span_exporter):
    llm = MockFunctionCallingLLM(response_generator=scripted([("call_1", "lookup", {"a": 2})]))
    tool = FunctionTool.from_defaults(lookup, return_direct=True)
    agent = FunctionAgent(name="direct", tools=[tool], llm=llm)
    assert str(run(lambda: agent.run("go"))) == "answer 2"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_agent direct", "  chat", "  execute_tool lookup"]
    assert steps(one(spans, "invoke_agent direct")) == [
        (1, semconv.STEP_ACTION, "lookup", "call_1"),
        (2, semconv.STEP_OBSERVATION, "lookup", "call_1"),
        (3, semconv.STEP_FINAL, None, None),
    ]
    assert len(open_runs()) == 0
