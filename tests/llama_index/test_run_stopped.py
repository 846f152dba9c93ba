"""A workflow or agent run stopped while its steps are running.

``handler.cancel_run()`` stops a run with ``WorkflowCancelledByUser``: LlamaIndex cancels the tasks of
its steps and then returns from the run's dispatcher span normally (no result), after a
``SpanCancelledEvent``. The run ends ``cancelled`` as it does when its caller gave up
(``test_caller_cancelled``). A model call the step's cancellation reaches ends ``cancelled``; one it
cannot reach (a sync step's thread) goes on and ends when it really does, with its usage: never as
a success without usage when the run ends. The same holds for a run that finishes while another
of its steps is still making a call.

A workflow used as the tool of an outer agent whose caller gave up: LlamaIndex cancels the outer
run's tracked step tasks (the tool's), and the tool's ``await workflow.run()`` cancels the inner
run's task. The inner run's control loop cancels only the step tasks it has taken in: a step started
by the wait that the cancellation interrupts is not among them and goes on (its model call ends
with its usage); a step started before the loop last woke is cancelled (its call ends cancelled).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.llms import CustomLLM, MockFunctionCallingLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.workflow import InputRequiredEvent, StartEvent, StopEvent, Workflow, step
from llama_index.core.workflow.errors import WorkflowCancelledByUser
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from llmtrace import semconv
from llmtrace.testing import metric_points
from tests.llama_index.conftest import add, is_child, one, open_runs, scripted, tree
from tests.llama_index.test_caller_cancelled import COST, Answer, HeldAgentLLM, HeldLLM


def assert_cancelled(span: ReadableSpan) -> None:
    assert span.status.status_code is StatusCode.ERROR, span.name
    assert span.attributes[semconv.ERROR_TYPE] == "cancelled", span.name
    assert semconv.GEN_AI_USAGE_INPUT_TOKENS not in span.attributes, span.name


def assert_answered(model: ReadableSpan) -> None:
    """The model span of a held call that answered (700 input, 30 output tokens, id r-1)."""
    assert model.status.status_code is StatusCode.UNSET
    assert semconv.ERROR_TYPE not in model.attributes
    assert model.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 700
    assert model.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 30
    assert model.attributes[semconv.GEN_AI_RESPONSE_ID] == "r-1"
    assert model.attributes[semconv.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(COST)


async def cancel_run(handler: Any) -> None:
    """``handler.cancel_run()``, then await the run as a caller does (it raises the cancellation)."""
    await handler.cancel_run()
    with pytest.raises(WorkflowCancelledByUser):
        await handler


class ThreadHeldLLM(CustomLLM):
    """A priced model whose sync call blocks its thread until the test releases it."""

    model: str = "gpt-4o-mini"

    def model_post_init(self, context: Any) -> None:
        self._started = threading.Event()
        self._release = threading.Event()

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._started.set()
        self._release.wait(30)
        usage = {"prompt_tokens": 700, "completion_tokens": 30}
        return CompletionResponse(text="late", raw={"id": "r-1", "model": self.model, "usage": usage})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        raise NotImplementedError


class SyncAnswer(Workflow):
    """A sync step: LlamaIndex runs it in a thread, which cancelling its task does not stop."""

    def __init__(self, llm: ThreadHeldLLM, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.llm = llm
        self.answered = threading.Event()

    @step
    def answer(self, ev: StartEvent) -> StopEvent:
        response = self.llm.complete("question")
        self.answered.set()
        return StopEvent(result=response.text)


# ---- handler.cancel_run() ---------------------------------------------------------------------
def test_cancel_run_ends_the_run_and_the_model_call_it_stopped_cancelled(
    instrumentor, span_exporter, metric_reader
):
    llm = HeldLLM()  # never released: cancel_run cancels the step's task, and so the call

    async def main() -> None:
        handler = Answer(llm, timeout=60).run()
        await llm._started.wait()
        await cancel_run(handler)

    asyncio.run(main())
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_workflow Answer", "  text_completion gpt-4o-mini"]
    run = one(spans, "invoke_workflow Answer")
    model = one(spans, "text_completion gpt-4o-mini")
    assert_cancelled(run)
    assert_cancelled(model)
    assert is_child(model, run) and model.end_time <= run.end_time
    (point,) = metric_points(metric_reader, semconv.METRIC_WORKFLOW_DURATION)
    assert point.attributes[semconv.ERROR_TYPE] == "cancelled"
    assert len(open_runs()) == 0


def test_cancel_run_leaves_a_model_call_in_a_sync_step_to_end_with_its_usage(
    instrumentor, span_exporter, metric_reader
):
    llm = ThreadHeldLLM()
    workflow = SyncAnswer(llm, timeout=60)

    async def main() -> None:
        handler = workflow.run()
        await asyncio.to_thread(llm._started.wait, 30)
        await cancel_run(handler)
        ended = [s.name for s in span_exporter.get_finished_spans()]
        llm._release.set()  # the thread goes on: the call answers
        assert await asyncio.to_thread(workflow.answered.wait, 30)
        assert ended == ["invoke_workflow SyncAnswer"]

    asyncio.run(main())
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_workflow SyncAnswer", "  text_completion gpt-4o-mini"]
    run = one(spans, "invoke_workflow SyncAnswer")
    model = one(spans, "text_completion gpt-4o-mini")
    assert_cancelled(run)
    assert is_child(model, run)
    assert model.end_time > run.end_time  # ended when the call did, not with the run
    assert_answered(model)
    (cost,) = metric_points(metric_reader, semconv.METRIC_USAGE_COST)
    assert cost.value == pytest.approx(COST)
    assert len(open_runs()) == 0


def test_cancel_run_of_an_agent_workflow_ends_its_acting_agent_cancelled(
    instrumentor, span_exporter, metric_reader
):
    front = FunctionAgent(
        name="front",
        description="routes",
        tools=[],
        can_handoff_to=["math"],
        llm=MockFunctionCallingLLM(
            response_generator=scripted([("h1", "handoff", {"to_agent": "math", "reason": "sums"})])
        ),
    )
    llm = HeldAgentLLM(response_generator=scripted([("c1", "add", {"a": 2, "b": 2})]))
    math = FunctionAgent(name="math", description="adds", tools=[add], llm=llm)
    workflow = AgentWorkflow(agents=[front, math], root_agent="front", timeout=60)

    async def main() -> None:
        handler = workflow.run(user_msg="2+2?")
        await llm._started.wait()  # never released: the stream's reader is cancelled
        await cancel_run(handler)

    asyncio.run(main())
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        "invoke_workflow AgentWorkflow",
        "  invoke_agent front",
        "    chat",
        "    execute_tool handoff",
        "  invoke_agent math",
        "    chat gpt-4o-mini",
    ]
    run = one(spans, "invoke_workflow AgentWorkflow")
    agent = one(spans, "invoke_agent math")
    model = one(spans, "chat gpt-4o-mini")
    for span in (run, agent, model):
        assert_cancelled(span)
    assert one(spans, "invoke_agent front").status.status_code is StatusCode.UNSET
    assert is_child(agent, run) and is_child(model, agent)
    assert model.end_time <= agent.end_time <= run.end_time
    (point,) = metric_points(metric_reader, semconv.METRIC_WORKFLOW_DURATION)
    assert point.attributes[semconv.ERROR_TYPE] == "cancelled"
    agents = metric_points(metric_reader, semconv.METRIC_INVOKE_AGENT_DURATION)
    assert sorted(
        (p.attributes[semconv.GEN_AI_AGENT_NAME], p.attributes.get(semconv.ERROR_TYPE)) for p in agents
    ) == [
        ("front", None),
        ("math", "cancelled"),
    ]
    assert len(open_runs()) == 0


def test_cancel_run_ends_a_tool_waiting_for_an_event_cancelled(instrumentor, span_exporter):
    """A tool call waiting for a human has no dispatcher span while it waits: it ends with the run,
    cancelled, as when the run's caller gives up."""
    from tests.llama_index.test_agent import approve

    llm = MockFunctionCallingLLM(response_generator=scripted([("call_1", "approve", {"a": 2})], "done"))
    agent = FunctionAgent(name="careful", tools=[approve], llm=llm)

    async def main() -> None:
        handler = agent.run("go")
        async for event in handler.stream_events():
            if isinstance(event, InputRequiredEvent):
                break
        await cancel_run(handler)

    asyncio.run(main())
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_agent careful", "  chat", "  execute_tool approve"]
    assert_cancelled(one(spans, "invoke_agent careful"))
    assert_cancelled(one(spans, "execute_tool approve"))
    assert one(spans, "chat").status.status_code is StatusCode.UNSET
    assert len(open_runs()) == 0


# ---- a run that finishes while another step still makes a call --------------------------------
class Race(SyncAnswer):
    """Two steps start together: ``answer`` (sync, in a thread) calls the model, ``quick`` ends the
    run as soon as that call has started."""

    @step
    async def quick(self, ev: StartEvent) -> StopEvent:
        await asyncio.to_thread(self.llm._started.wait, 30)
        return StopEvent(result="quick")


def test_run_that_finishes_leaves_a_model_call_still_running_to_end_with_its_usage(
    instrumentor, span_exporter
):
    llm = ThreadHeldLLM()
    workflow = Race(llm, timeout=60)

    async def main() -> None:
        result = await workflow.run()
        ended = [s.name for s in span_exporter.get_finished_spans()]
        llm._release.set()
        assert await asyncio.to_thread(workflow.answered.wait, 30)
        assert str(result) == "quick"
        assert ended == ["invoke_workflow Race"]

    asyncio.run(main())
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_workflow Race", "  text_completion gpt-4o-mini"]
    run = one(spans, "invoke_workflow Race")
    model = one(spans, "text_completion gpt-4o-mini")
    assert run.status.status_code is StatusCode.UNSET and semconv.ERROR_TYPE not in run.attributes
    assert is_child(model, run) and model.end_time > run.end_time
    assert_answered(model)
    assert len(open_runs()) == 0


# ---- a workflow used as an outer agent's tool ---------------------------------------------------
class ParallelAnswer(Answer):
    """``answer`` starts with a step that ends at once: the control loop wakes up and takes the
    still-running ``answer`` task in, so cancelling the run cancels it."""

    @step
    async def note(self, ev: StartEvent) -> None:
        return None


def outer_agent(inner: Workflow) -> FunctionAgent:
    """An agent whose tool ``ask`` awaits a run of ``inner``."""

    async def ask(question: str) -> str:
        """Ask the expert."""
        return str(await inner.run())

    llm = MockFunctionCallingLLM(response_generator=scripted([("c1", "ask", {"question": "q"})], "done"))
    return FunctionAgent(name="outer", tools=[ask], llm=llm, timeout=60)


async def stop_outer(inner: Answer, llm: HeldLLM, *, how: str) -> None:
    """Run an outer agent whose tool runs ``inner``, stop it while the inner model call is held
    (``how``: the caller's task cancelled, or ``cancel_run``), release the call, and wait until the
    inner step is done (it answered, or its task was cancelled and nothing is left open)."""
    agent = outer_agent(inner)
    if how == "cancel_run":
        handler = agent.run(user_msg="go")
        await llm._started.wait()
        await cancel_run(handler)
    else:

        async def request() -> Any:
            return await agent.run(user_msg="go")

        caller = asyncio.create_task(request())
        await llm._started.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
    llm._release.set()

    async def done() -> None:
        while not inner.answered.is_set() and len(open_runs()):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(done(), timeout=30)


OUTER_TREE = [
    "invoke_agent outer",
    "  chat",
    "  execute_tool ask",
    "    invoke_workflow {}",
    "      text_completion gpt-4o-mini",
]


def outer_spans(spans: Any, inner: str) -> tuple[ReadableSpan, ...]:
    """(outer agent, tool, inner run, inner model call), checked to nest as ``OUTER_TREE``."""
    assert tree(spans) == [line.format(inner) for line in OUTER_TREE]
    agent = one(spans, "invoke_agent outer")
    tool = one(spans, "execute_tool ask")
    run = one(spans, f"invoke_workflow {inner}")
    model = one(spans, "text_completion gpt-4o-mini")
    assert is_child(tool, agent) and is_child(run, tool) and is_child(model, run)
    assert run.end_time <= tool.end_time <= agent.end_time
    assert one(spans, "chat").status.status_code is StatusCode.UNSET
    return agent, tool, run, model


def test_workflow_tool_of_a_cancelled_caller_whose_step_goes_on(instrumentor, span_exporter, metric_reader):
    """Guard. The inner run's only step is started by the wait its cancellation interrupts: LlamaIndex
    never cancels it, its model call answers after everything around it ended, with its usage."""
    llm = HeldLLM()
    inner = Answer(llm, timeout=60)
    asyncio.run(stop_outer(inner, llm, how="caller"))
    assert inner.answered.is_set()  # the step really went on
    agent, tool, run, model = outer_spans(span_exporter.get_finished_spans(), "Answer")
    for span in (agent, tool, run):
        assert_cancelled(span)
    assert model.end_time > agent.end_time
    assert_answered(model)
    (cost,) = metric_points(metric_reader, semconv.METRIC_USAGE_COST)
    assert cost.value == pytest.approx(COST)
    assert len(open_runs()) == 0


def test_workflow_tool_of_a_cancelled_caller_whose_step_is_cancelled(instrumentor, span_exporter):
    """Guard. The inner step's task was taken in by its control loop: cancelling the inner run cancels
    it, and its model call ends cancelled, before the run."""
    llm = HeldLLM()
    inner = ParallelAnswer(llm, timeout=60)
    asyncio.run(stop_outer(inner, llm, how="caller"))
    assert not inner.answered.is_set()  # the step was cancelled
    agent, tool, run, model = outer_spans(span_exporter.get_finished_spans(), "ParallelAnswer")
    for span in (agent, tool, run, model):
        assert_cancelled(span)
    assert model.end_time <= run.end_time
    assert len(open_runs()) == 0


def test_workflow_tool_of_an_agent_stopped_by_cancel_run(instrumentor, span_exporter):
    """``cancel_run()`` on the outer agent: the outer agent ends cancelled too; the inner step goes on
    as above and its model call ends with its usage."""
    llm = HeldLLM()
    inner = Answer(llm, timeout=60)
    asyncio.run(stop_outer(inner, llm, how="cancel_run"))
    assert inner.answered.is_set()
    agent, tool, run, model = outer_spans(span_exporter.get_finished_spans(), "Answer")
    for span in (agent, tool, run):
        assert_cancelled(span)
    assert model.end_time > agent.end_time
    assert_answered(model)
    assert len(open_runs()) == 0
