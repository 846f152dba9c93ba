"""``create_agent`` with middleware that call models of their own in the agent's model node (guardrails,
classifiers): the agent's system prompt and actions come from its own model call only. Structured
responses (``response_format``) are the agent's answer. A call LangGraph streams is flagged as
streamed even if it fails before its first chunk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelFallbackMiddleware, ModelResponse, wrap_model_call
from langchain.agents.structured_output import ProviderStrategy, ToolStrategy
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.tools import tool
from pydantic import BaseModel

from llmtrace import semconv
from llmtrace._content import CaptureMode, ContentPolicy

from .conftest import attrs, events
from .fakes import ScriptedChatModel, answer, call

PROMPT = "You are the billing assistant of ACME."
JUDGE_PROMPT = "You are a safety classifier. Answer SAFE or UNSAFE."


@pytest.fixture
def capture(content_capture):
    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_ONLY)
    return content_capture


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Verdict(BaseModel):
    """Safety verdict."""

    safe: bool


class Weather(BaseModel):
    city: str
    temp_c: float


def agent_span(span_exporter: Any) -> Any:
    (span,) = [s for s in span_exporter.get_finished_spans() if s.name.startswith("invoke_agent")]
    return span


def steps(span: Any) -> list[tuple[str, str | None, str | None]]:
    return [
        (
            e[semconv.LLMTRACE_AGENT_STEP_KIND],
            e.get(semconv.GEN_AI_TOOL_NAME),
            e.get(semconv.GEN_AI_TOOL_CALL_ID),
        )
        for name, e in events(span)
        if name == semconv.LLMTRACE_AGENT_STEP_EVENT
    ]


def content(span: Any, key: str) -> Any:
    return json.loads(attrs(span)[key])


def adding_model() -> ScriptedChatModel:
    return ScriptedChatModel(script=[call(("add", {"a": 1, "b": 2}, "c1")), answer("3")])


ADDING_STEPS = [("action", "add", "c1"), ("observation", "add", "c1"), ("final", None, None)]


# ---- the agent's system prompt, not a guardrail's (a model call of a middleware's own) ---------------
def guarded(before: bool, after: bool) -> Any:
    judge = ScriptedChatModel(script=[answer("SAFE")], model="judge")

    def ask(request: Any) -> None:
        verdict = judge.invoke([SystemMessage(JUDGE_PROMPT), request.messages[-1]])
        assert verdict.content == "SAFE"

    @wrap_model_call
    def guardrail(request: Any, handler: Any) -> Any:
        if before:  # an input guardrail
            ask(request)
        response = handler(request)
        if after:  # an output guardrail
            ask(request)
        return response

    return guardrail


@pytest.mark.parametrize(
    ("before", "after"), [(True, False), (False, True), (True, True)], ids=["input", "output", "both"]
)
def test_agent_system_prompt_is_not_a_guardrails(handler, span_exporter, capture, before, after):
    agent = create_agent(
        adding_model(), tools=[add], system_prompt=PROMPT, middleware=[guarded(before, after)]
    )
    agent.invoke({"messages": [HumanMessage("1+2?")]}, config={"callbacks": [handler]})
    span = agent_span(span_exporter)
    assert content(span, semconv.GEN_AI_SYSTEM_INSTRUCTIONS) == [{"type": "text", "content": PROMPT}]
    assert steps(span) == ADDING_STEPS
    # the guardrail's calls are there, with the prompt they were sent
    judged = [s for s in span_exporter.get_finished_spans() if s.name == "chat judge"]
    assert len(judged) == 2 * (int(before) + int(after))
    assert content(judged[0], semconv.GEN_AI_INPUT_MESSAGES)[0] == {
        "role": "system",
        "parts": [{"type": "text", "content": JUDGE_PROMPT}],
    }


def test_agent_without_system_prompt_gets_none_from_a_guardrail(handler, span_exporter, capture):
    agent = create_agent(adding_model(), tools=[add], middleware=[guarded(True, False)])
    agent.invoke({"messages": [HumanMessage("1+2?")]}, config={"callbacks": [handler]})
    span = agent_span(span_exporter)
    assert semconv.GEN_AI_SYSTEM_INSTRUCTIONS not in attrs(span)
    assert steps(span) == ADDING_STEPS


class FailingChatModel(ScriptedChatModel):
    """Fails before answering anything, called or streamed."""

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("provider down")

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        raise ConnectionError("provider down")


def test_fallback_model_call_gives_the_system_prompt(handler, span_exporter, capture):
    agent = create_agent(
        FailingChatModel(script=[answer("x")], model="primary"),
        tools=[add],
        system_prompt=PROMPT,
        middleware=[guarded(True, False), ModelFallbackMiddleware(adding_model())],
    )
    agent.invoke({"messages": [HumanMessage("1+2?")]}, config={"callbacks": [handler]})
    span = agent_span(span_exporter)
    assert content(span, semconv.GEN_AI_SYSTEM_INSTRUCTIONS) == [{"type": "text", "content": PROMPT}]
    assert steps(span) == ADDING_STEPS


# ---- actions: the agent's tool calls, not a middleware's structured output by tool calling ----------
def test_middleware_structured_output_call_is_no_agent_action(handler, span_exporter, metric_reader):
    judge = ScriptedChatModel(script=[call(("Verdict", {"safe": True}, "call_verdict"))], model="judge")
    structured = judge.with_structured_output(Verdict, method="function_calling")

    @wrap_model_call
    def guard(request: Any, handler_: Any) -> Any:
        verdict = structured.invoke([("user", str(request.messages[-1].content))])
        assert isinstance(verdict, Verdict) and verdict.safe
        return handler_(request)

    agent = create_agent(adding_model(), tools=[add], name="guarded", middleware=[guard])
    result = agent.invoke({"messages": [HumanMessage("1+2?")]}, config={"callbacks": [handler]})
    assert result["messages"][-1].content == "3"
    span = agent_span(span_exporter)
    assert steps(span) == ADDING_STEPS  # no "action Verdict"
    judged = [s for s in span_exporter.get_finished_spans() if s.name == "chat judge"]
    assert len(judged) == 2
    assert attrs(judged[0])[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_call",)


def test_actions_of_an_answer_a_middleware_edits(handler, span_exporter):
    """Guard: a middleware that copies the model's answer to edit it (the same message id) keeps the
    agent's actions; one that answers without the model adds none for a call it did not use."""

    @wrap_model_call
    def edit(request: Any, handler_: Any) -> Any:
        response = handler_(request)
        edited = [m.model_copy(update={"content": "edited"}) for m in response.result]
        return ModelResponse(result=edited, structured_response=response.structured_response)

    agent = create_agent(adding_model(), tools=[add], middleware=[edit])
    agent.invoke({"messages": [HumanMessage("1+2?")]}, config={"callbacks": [handler]})
    assert steps(agent_span(span_exporter)) == ADDING_STEPS


def test_answer_a_middleware_replaces_is_not_the_models(handler, span_exporter):
    """A middleware that asks the model, then answers with a message of its own: the model's tool call
    never reaches the state (no tool runs) and is no action of the agent."""

    @wrap_model_call
    def replace(request: Any, handler_: Any) -> Any:
        handler_(request)
        return answer("I cannot do that")

    agent = create_agent(adding_model(), tools=[add], middleware=[replace])
    agent.invoke({"messages": [HumanMessage("1+2?")]}, config={"callbacks": [handler]})
    spans = span_exporter.get_finished_spans()
    assert not [s for s in spans if s.name.startswith("execute_tool")]
    assert steps(agent_span(span_exporter)) == [("final", None, None)]


# ---- structured output: the agent's answer and gen_ai.output.type --------------------------------------
WEATHER = {"city": "Paris", "temp_c": 21.5}


def weather_agent(strategy: str) -> Any:
    if strategy == "tool":
        model = ScriptedChatModel(script=[call(("Weather", WEATHER, "call_sr"))])
        return create_agent(model, tools=[], name="wx", response_format=ToolStrategy(Weather))
    model = ScriptedChatModel(script=[answer(json.dumps(WEATHER))])
    return create_agent(model, tools=[], name="wx", response_format=ProviderStrategy(Weather))


@pytest.mark.parametrize("strategy", ["tool", "provider"])
def test_structured_response_is_the_agents_answer(handler, span_exporter, capture, strategy):
    agent = weather_agent(strategy)
    result = agent.invoke({"messages": [("user", "weather?")]}, config={"callbacks": [handler]})
    assert result["structured_response"] == Weather(city="Paris", temp_c=21.5)
    span = agent_span(span_exporter)
    assert attrs(span)[semconv.GEN_AI_OUTPUT_TYPE] == semconv.OUTPUT_TYPE_JSON
    assert content(span, semconv.GEN_AI_OUTPUT_MESSAGES) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": '{"city":"Paris","temp_c":21.5}'}],
            "finish_reason": "stop",
        }
    ]
    # ToolStrategy's tool call is answered in the model node itself: no tool is called for it
    assert steps(span) == [("final", None, None)]


@pytest.mark.parametrize("strategy", ["tool", "provider"])
def test_structured_output_type_without_content(handler, span_exporter, strategy):
    weather_agent(strategy).invoke({"messages": [("user", "weather?")]}, config={"callbacks": [handler]})
    span = agent_span(span_exporter)
    assert attrs(span)[semconv.GEN_AI_OUTPUT_TYPE] == semconv.OUTPUT_TYPE_JSON
    assert semconv.GEN_AI_OUTPUT_MESSAGES not in attrs(span)


def test_agent_without_response_format_has_no_output_type(handler, span_exporter, capture):
    create_agent(adding_model(), tools=[add]).invoke(
        {"messages": [("user", "1+2?")]}, config={"callbacks": [handler]}
    )
    span = agent_span(span_exporter)
    assert semconv.GEN_AI_OUTPUT_TYPE not in attrs(span)
    assert content(span, semconv.GEN_AI_OUTPUT_MESSAGES)[0]["parts"] == [{"type": "text", "content": "3"}]


# ---- gen_ai.request.stream on a call LangGraph streams that fails before its first chunk --------------
def fallback_agent() -> Any:
    primary = FailingChatModel(script=[answer("x")], model="primary")
    return create_agent(primary, tools=[], middleware=[ModelFallbackMiddleware(adding_model())])


def primary_span(span_exporter: Any) -> Any:
    (span,) = [s for s in span_exporter.get_finished_spans() if s.name == "chat primary"]
    assert attrs(span)[semconv.ERROR_TYPE] == "connection"
    return span


def test_call_streamed_by_langgraph_failing_before_its_first_chunk(handler, span_exporter):
    chunks: list[Any] = []
    for chunk in fallback_agent().stream(
        {"messages": [("user", "1+2?")]}, config={"callbacks": [handler]}, stream_mode="messages"
    ):
        chunks.append(chunk)
    assert chunks  # the fallback streamed
    assert attrs(primary_span(span_exporter))[semconv.GEN_AI_REQUEST_STREAM] is True


async def test_call_streamed_by_astream_events_failing_before_its_first_chunk(handler, span_exporter):
    async for _ in fallback_agent().astream_events(
        {"messages": [("user", "1+2?")]}, config={"callbacks": [handler]}, version="v2"
    ):
        pass
    assert attrs(primary_span(span_exporter))[semconv.GEN_AI_REQUEST_STREAM] is True


def test_call_not_streamed_failing_has_no_stream_flag(handler, span_exporter):
    fallback_agent().invoke({"messages": [("user", "1+2?")]}, config={"callbacks": [handler]})
    assert semconv.GEN_AI_REQUEST_STREAM not in attrs(primary_span(span_exporter))


def test_streamed_under_instrument(instrumented, span_exporter):
    for _ in fallback_agent().stream({"messages": [("user", "1+2?")]}, stream_mode="messages"):
        pass
    assert attrs(primary_span(span_exporter))[semconv.GEN_AI_REQUEST_STREAM] is True
