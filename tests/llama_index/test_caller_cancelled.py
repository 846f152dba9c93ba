"""The caller's task awaiting a workflow run is cancelled (a web client went away).

LlamaIndex cancels the run's own task, not its steps: a model call in flight goes on, and its tokens
are paid for. Its span must end when the call really ends, with its usage and cost; the workflow's
span records the caller's cancellation. A run cut off by its own timeout, which does cancel its
steps, still ends the model call as cancelled and the run as a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM, MockFunctionCallingLLM, MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step
from opentelemetry.trace import StatusCode

from llmtrace import semconv
from llmtrace.testing import metric_points
from tests.llama_index.conftest import by_name, is_child, one, open_runs, tree

# gpt-4o-mini: $0.15 / M input tokens, $0.60 / M output tokens
COST = (700 * 0.15 + 30 * 0.60) / 1e6


class HeldLLM(CustomLLM):
    """A priced model whose async call waits until the test releases it (never on a clock)."""

    model: str = "gpt-4o-mini"

    def model_post_init(self, context: Any) -> None:
        self._started = asyncio.Event()
        self._release = asyncio.Event()

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._started.set()
        await self._release.wait()
        usage = {"prompt_tokens": 700, "completion_tokens": 30}
        return CompletionResponse(text="late", raw={"id": "r-1", "model": self.model, "usage": usage})

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise NotImplementedError

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        raise NotImplementedError


class Answer(Workflow):
    def __init__(self, llm: HeldLLM, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.llm = llm
        self.answered = asyncio.Event()

    @step
    async def answer(self, ev: StartEvent) -> StopEvent:
        response = await self.llm.acomplete("question")
        self.answered.set()  # the model call's dispatcher span has returned
        return StopEvent(result=response.text)


def test_model_call_going_on_after_the_caller_gave_up_ends_with_its_usage(
    instrumentor, span_exporter, metric_reader
):
    llm = HeldLLM()

    async def main() -> None:
        workflow = Answer(llm, timeout=60)

        async def request() -> Any:
            return await workflow.run()

        caller = asyncio.create_task(request())
        await llm._started.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert [s.name for s in span_exporter.get_finished_spans()] == ["invoke_workflow Answer"]
        llm._release.set()  # the model call goes on and answers
        await asyncio.wait_for(workflow.answered.wait(), timeout=30)

    asyncio.run(main())
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_workflow Answer", "  text_completion gpt-4o-mini"]
    workflow = one(spans, "invoke_workflow Answer")
    model = one(spans, "text_completion gpt-4o-mini")
    assert workflow.status.status_code is StatusCode.ERROR
    assert workflow.attributes[semconv.ERROR_TYPE] == "cancelled"
    assert is_child(model, workflow)
    assert model.end_time > workflow.end_time  # ended when the call did, not with the caller
    assert model.status.status_code is StatusCode.UNSET
    assert semconv.ERROR_TYPE not in model.attributes
    assert model.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 700
    assert model.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 30
    assert model.attributes[semconv.GEN_AI_RESPONSE_ID] == "r-1"
    assert model.attributes[semconv.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(COST)
    (cost,) = metric_points(metric_reader, semconv.METRIC_USAGE_COST)
    assert cost.value == pytest.approx(COST)
    (duration,) = [
        p
        for p in metric_points(metric_reader, semconv.METRIC_CLIENT_OPERATION_DURATION)
        if p.attributes[semconv.GEN_AI_OPERATION_NAME] == "text_completion"
    ]
    assert duration.count == 1 and semconv.ERROR_TYPE not in duration.attributes
    assert len(open_runs()) == 0


def test_run_cut_off_by_its_timeout_cancels_the_model_call(instrumentor, span_exporter, metric_reader):
    llm = HeldLLM()  # never released: the workflow's timeout cancels the call

    async def main() -> None:
        await Answer(llm, timeout=0.2).run()

    with pytest.raises(Exception, match="timed out"):
        asyncio.run(main())
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_workflow Answer", "  text_completion gpt-4o-mini"]
    workflow = one(spans, "invoke_workflow Answer")
    model = one(spans, "text_completion gpt-4o-mini")
    assert workflow.attributes[semconv.ERROR_TYPE] == "timeout"
    assert model.status.status_code is StatusCode.ERROR
    assert model.attributes[semconv.ERROR_TYPE] == "cancelled"
    assert semconv.GEN_AI_USAGE_INPUT_TOKENS not in model.attributes
    (point,) = metric_points(metric_reader, semconv.METRIC_WORKFLOW_DURATION)
    assert point.attributes[semconv.ERROR_TYPE] == "timeout"
    assert len(open_runs()) == 0


def test_tool_waiting_for_an_event_ends_with_the_callers_cancellation(instrumentor, span_exporter):
    """A tool call waiting for a human has no dispatcher span of its own while it waits: it ends,
    cancelled, with the run whose caller gave up."""
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.llms import MockFunctionCallingLLM
    from llama_index.core.workflow import InputRequiredEvent

    from tests.llama_index.conftest import scripted
    from tests.llama_index.test_agent import approve

    llm = MockFunctionCallingLLM(response_generator=scripted([("call_1", "approve", {"a": 2})], "done"))
    agent = FunctionAgent(name="careful", tools=[approve], llm=llm)

    async def main() -> None:
        asked = asyncio.Event()

        async def request() -> Any:
            handler = agent.run("go")
            async for event in handler.stream_events():
                if isinstance(event, InputRequiredEvent):
                    asked.set()
            return await handler

        caller = asyncio.create_task(request())
        await asked.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller

    asyncio.run(main())
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_agent careful", "  chat", "  execute_tool approve"]
    for name in ("invoke_agent careful", "execute_tool approve"):
        span = one(spans, name)
        assert span.status.status_code is StatusCode.ERROR, name
        assert span.attributes[semconv.ERROR_TYPE] == "cancelled", name
    assert one(spans, "chat").status.status_code is StatusCode.UNSET
    assert len(open_runs()) == 0


class HeldAgentLLM(MockFunctionCallingLLM):
    """A priced function-calling model whose streamed answer waits until the test releases it (its
    call has returned the stream, as OpenAI's does, and is reading it)."""

    model: str = "gpt-4o-mini"

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        self._started = asyncio.Event()
        self._release = asyncio.Event()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        message = self._get_response_generator()(messages, **kwargs)

        async def gen() -> ChatResponseAsyncGen:
            self._started.set()
            await self._release.wait()
            usage = {"prompt_tokens": 700, "completion_tokens": 30}
            raw = {"id": "r-2", "model": self.model, "usage": usage}
            yield ChatResponse(message=message, delta=message.content or "", raw=raw)

        return gen()


def test_sub_agent_ends_with_the_callers_cancellation_and_its_model_call_when_it_does(
    instrumentor, span_exporter, metric_reader
):
    """The acting agent of an ``AgentWorkflow`` is part of the run the caller gave up: it ends with
    it, cancelled, as a single agent's run does (above), and not after it. Its model call goes on:
    it ends when it really does, under that agent, with its usage, and nothing stays open."""
    from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent

    from tests.llama_index.conftest import add, scripted

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

    def model_calls() -> list[Any]:
        return by_name(span_exporter.get_finished_spans(), "chat gpt-4o-mini")

    async def main() -> None:
        async def request() -> Any:
            return await workflow.run(user_msg="2+2?")

        caller = asyncio.create_task(request())
        await llm._started.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        ended = [s.name for s in span_exporter.get_finished_spans()]
        assert "invoke_agent math" in ended and "invoke_workflow AgentWorkflow" in ended
        assert model_calls() == []  # still running
        llm._release.set()  # the model call goes on and answers

        async def answered() -> None:
            while not model_calls():
                await asyncio.sleep(0.01)

        await asyncio.wait_for(answered(), timeout=30)

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
    for span in (run, agent):
        assert span.status.status_code is StatusCode.ERROR, span.name
        assert span.attributes[semconv.ERROR_TYPE] == "cancelled", span.name
    assert is_child(agent, run) and is_child(model, agent)  # the call keeps the agent that made it
    assert agent.end_time <= run.end_time  # the agent does not outlive the run it belongs to
    assert model.start_time < agent.end_time  # started by the agent while it ran...
    assert model.end_time > run.end_time  # ...ended when the call did, not with the caller
    assert model.status.status_code is StatusCode.UNSET
    assert semconv.ERROR_TYPE not in model.attributes
    assert model.attributes[semconv.GEN_AI_RESPONSE_ID] == "r-2"
    assert model.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 700
    assert model.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 30
    assert model.attributes[semconv.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(COST)
    (cost,) = metric_points(metric_reader, semconv.METRIC_USAGE_COST)
    assert cost.value == pytest.approx(COST)
    assert len(open_runs()) == 0


class AnswerTwice(Answer):
    """A step that makes a second model call once the first has answered."""

    @step
    async def answer(self, ev: StartEvent) -> StopEvent:
        response = await self.llm.acomplete("question")
        await MockLLM(max_tokens=2).acomplete("check")  # starts after the caller gave up
        self.answered.set()
        return StopEvent(result=response.text)


def test_model_call_started_after_the_caller_gave_up_is_still_the_runs(instrumentor, span_exporter):
    llm = HeldLLM()

    async def main() -> None:
        workflow = AnswerTwice(llm, timeout=60)

        async def request() -> Any:
            return await workflow.run()

        caller = asyncio.create_task(request())
        await llm._started.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        llm._release.set()
        await asyncio.wait_for(workflow.answered.wait(), timeout=30)

    asyncio.run(main())
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        "invoke_workflow AnswerTwice",
        "  text_completion gpt-4o-mini",
        "  text_completion",
    ]
    run = one(spans, "invoke_workflow AnswerTwice")
    late = one(spans, "text_completion")
    assert is_child(late, run)  # in the run's trace, not a trace of its own
    assert late.start_time > run.end_time
    assert late.status.status_code is StatusCode.UNSET
    assert len(open_runs()) == 0
