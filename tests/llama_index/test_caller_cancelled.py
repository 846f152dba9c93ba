"""The caller's task awaiting a workflow run is cancelled (a web client went away).

LlamaIndex cancels the run's own task, not its steps: a model call in flight goes on, and its tokens
are paid for. Its span must end when the call really ends, with its usage and cost; the workflow's
span records the caller's cancellation. A run cut off by its own timeout, which does cancel its
steps, still ends the model call as cancelled and the run as a timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step
from opentelemetry.trace import StatusCode

from llmtrace import semconv
from llmtrace.testing import metric_points
from tests.llama_index.conftest import is_child, one, open_runs, tree

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
