"""Message content in the conventions' shapes (capture on): roles, parts, finish reasons, tool
definitions and results, agent inputs; tool names the model makes up (capture off); long histories."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent
from llama_index.core.base.llms.types import (
    AudioBlock,
    ChatMessage,
    CompletionResponse,
    DocumentBlock,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
    VideoBlock,
)
from llama_index.core.llms import MockFunctionCallingLLM, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.tools import FunctionTool
from llmtrace_llama_index import _extract

from llmtrace import semconv
from llmtrace._content import MAX_ITEMS
from llmtrace.testing import metric_points
from tests.llama_index.conftest import HANDOFF_REASON, handoff_workflow, one, scripted, steps

RAW = b"\x89PNG\r\n\x1a\n"
B64 = base64.b64encode(RAW).decode()  # short enough to be recorded as it is


def run(start: Any) -> Any:
    async def main() -> Any:
        return await start()

    return asyncio.run(main())


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "content": value}


def content(span: Any, key: str) -> Any:
    return json.loads(span.attributes[key])


def chat_spans(span_exporter: Any) -> list[Any]:
    return [s for s in span_exporter.get_finished_spans() if s.name.startswith("chat")]


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def raw_llm(raw: Any) -> MockLLM:
    """An LLM answering with the raw provider response ``raw``."""

    class RawLLM(MockLLM):
        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            return CompletionResponse(text="done", raw=raw)

    return RawLLM()


# ---- 1. system messages of the history stay in the history ----------------------------------------
def test_agent_system_prompt_is_the_first_input_message(instrumentor, span_exporter, capture):
    llm = MockFunctionCallingLLM(response_generator=scripted("hi"))
    agent = FunctionAgent(name="helper", tools=[add], system_prompt="be brief", llm=llm)
    run(lambda: agent.run(user_msg="hello"))
    (chat,) = chat_spans(span_exporter)
    assert content(chat, semconv.GEN_AI_INPUT_MESSAGES) == [
        {"role": "system", "parts": [text("be brief")]},
        {"role": "user", "parts": [text("hello")]},
    ]
    assert semconv.GEN_AI_SYSTEM_INSTRUCTIONS not in chat.attributes


# ---- 2. finish reasons -------------------------------------------------------------------------
def test_finish_reason_of_a_tool_call_message(instrumentor, span_exporter, capture):
    """A message calling tools whose provider reports no reason ends for the tools to run."""
    llm = MockFunctionCallingLLM(response_generator=scripted([("c1", "add", {"a": 1, "b": 2})]))
    llm.chat([ChatMessage(role="user", content="1+2?")])
    (chat,) = chat_spans(span_exporter)
    assert content(chat, semconv.GEN_AI_OUTPUT_MESSAGES) == [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "c1", "name": "add", "arguments": {"a": 1, "b": 2}}],
            "finish_reason": "tool_call",
        }
    ]
    assert semconv.GEN_AI_RESPONSE_FINISH_REASONS not in chat.attributes  # none was reported


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"stop_reason": "end_turn"}, "stop"),  # Anthropic
        ({"stop_reason": "max_tokens"}, "length"),
        ({"stop_reason": "tool_use"}, "tool_call"),
        ({"stop_reason": "refusal"}, "content_filter"),
        ({"stopReason": "guardrail_intervened"}, "content_filter"),  # Bedrock Converse
        ({"done_reason": "length"}, "length"),  # Ollama
        ({"candidates": [{"finish_reason": "MAX_TOKENS"}]}, "length"),  # Gemini
        ({"candidates": [{"finish_reason": "SAFETY"}]}, "content_filter"),
        ({"choices": [{"finish_reason": "function_call"}]}, "tool_call"),  # OpenAI (legacy)
        ({"object": "response", "status": "completed", "output": [{"type": "message"}]}, "stop"),
        ({"object": "response", "status": "completed", "output": [{"type": "function_call"}]}, "tool_call"),
        (
            {
                "object": "response",
                "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"},
            },
            "length",
        ),
        ({"stop_reason": "pause_turn"}, "pause_turn"),  # unknown values are kept
    ],
)
def test_finish_reasons_are_normalised(instrumentor, span_exporter, capture, raw, expected):
    raw_llm(raw).chat([ChatMessage(role="user", content="hi")])
    (chat,) = chat_spans(span_exporter)
    assert chat.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == (expected,)
    assert content(chat, semconv.GEN_AI_OUTPUT_MESSAGES)[0]["finish_reason"] == expected


# ---- 5. media parts --------------------------------------------------------------------------------
MEDIA_BLOCKS: list[tuple[Any, dict[str, Any]]] = [
    (
        ImageBlock(image=RAW, image_mimetype="image/png"),
        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": B64},
    ),
    (
        ImageBlock(url="https://example.com/cat.png"),
        {"type": "uri", "modality": "image", "uri": "https://example.com/cat.png", "mime_type": "image/png"},
    ),
    (
        ImageBlock(url=f"data:image/png;base64,{B64}"),
        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": B64},
    ),
    (
        AudioBlock(audio=RAW, format="wav"),
        {"type": "blob", "modality": "audio", "mime_type": "audio/wav", "content": B64},
    ),
    (
        VideoBlock(url="https://example.com/v.mp4", video_mimetype="video/mp4"),
        {"type": "uri", "modality": "video", "uri": "https://example.com/v.mp4", "mime_type": "video/mp4"},
    ),
    (
        DocumentBlock(data=RAW, document_mimetype="application/pdf"),
        {"type": "blob", "modality": "document", "mime_type": "application/pdf", "content": B64},
    ),
    (
        DocumentBlock(url="https://example.com/d.pdf", document_mimetype="application/pdf"),
        {
            "type": "uri",
            "modality": "document",
            "uri": "https://example.com/d.pdf",
            "mime_type": "application/pdf",
        },
    ),
]


@pytest.mark.parametrize(("block", "part"), MEDIA_BLOCKS, ids=[str(i) for i in range(len(MEDIA_BLOCKS))])
def test_media_blocks_become_the_conventions_parts(instrumentor, span_exporter, capture, block, part):
    message = ChatMessage(role="user", blocks=[TextBlock(text="what is"), block, TextBlock(text="this?")])
    MockLLM().chat([message])
    (chat,) = chat_spans(span_exporter)
    assert content(chat, semconv.GEN_AI_INPUT_MESSAGES) == [
        {"role": "user", "parts": [text("what is"), part, text("this?")]}
    ]


def test_a_file_path_is_a_file_uri(instrumentor, span_exporter, capture, tmp_path):
    """The file is not read: its path is its URI."""
    path = tmp_path / "cat.jpg"
    path.write_bytes(RAW)
    MockLLM().chat([ChatMessage(role="user", blocks=[ImageBlock(path=path)])])
    (chat,) = chat_spans(span_exporter)
    assert content(chat, semconv.GEN_AI_INPUT_MESSAGES) == [
        {
            "role": "user",
            "parts": [{"type": "uri", "modality": "image", "uri": path.as_uri(), "mime_type": "image/jpeg"}],
        }
    ]


def test_tool_results_with_images_are_parts(instrumentor, span_exporter, capture):
    history = [
        ChatMessage(role="user", content="screenshot please"),
        ChatMessage(
            role="assistant", blocks=[ToolCallBlock(tool_call_id="c1", tool_name="shot", tool_kwargs={})]
        ),
        ChatMessage(
            role="tool",
            blocks=[TextBlock(text="here"), ImageBlock(image=RAW, image_mimetype="image/png")],
            additional_kwargs={"tool_call_id": "c1"},
        ),
        ChatMessage(role="tool", content="plain", additional_kwargs={"tool_call_id": "c2"}),
    ]
    MockLLM().chat(history)
    (chat,) = chat_spans(span_exporter)
    assert content(chat, semconv.GEN_AI_INPUT_MESSAGES)[2:] == [
        {
            "role": "tool",
            "parts": [
                {
                    "type": "tool_call_response",
                    "id": "c1",
                    "response": [
                        text("here"),
                        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": B64},
                    ],
                }
            ],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c2", "response": "plain"}]},
    ]


def test_reasoning_comes_first_in_block_order(instrumentor, span_exporter, capture):
    history = [
        ChatMessage(role="user", content="why?"),
        ChatMessage(
            role="assistant", blocks=[ThinkingBlock(content="let me see"), TextBlock(text="because")]
        ),
        ChatMessage(role="user", content="ok"),
    ]
    MockLLM().chat(history)
    (chat,) = chat_spans(span_exporter)
    assert content(chat, semconv.GEN_AI_INPUT_MESSAGES)[1] == {
        "role": "assistant",
        "parts": [{"type": "reasoning", "content": "let me see"}, text("because")],
    }


# ---- 6. tool results, agent inputs, tool definitions -----------------------------------------------
def test_tool_result_is_json(instrumentor, span_exporter, capture):
    def measure(n: int) -> dict:
        """Measure."""
        return {"n": n, "ratio": float("nan"), "limit": float("inf"), "raw": b"\x00\x01", "ok": True}

    FunctionTool.from_defaults(measure).call(n=2)
    (span,) = span_exporter.get_finished_spans()
    assert content(span, semconv.GEN_AI_TOOL_CALL_RESULT) == {
        "n": 2,
        "ratio": "NaN",
        "limit": "Infinity",
        "raw": "AAE=",
        "ok": True,
    }


def test_tool_result_of_an_object_is_its_text(instrumentor, span_exporter, capture):
    class Report:
        def __str__(self) -> str:
            return "all good"

    def report() -> Report:
        """Report."""
        return Report()

    FunctionTool.from_defaults(report).call()
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes[semconv.GEN_AI_TOOL_CALL_RESULT] == "all good"


def test_agent_input_messages(instrumentor, span_exporter, capture):
    llm = MockFunctionCallingLLM(response_generator=scripted("3"))
    agent = FunctionAgent(name="calc", tools=[add], llm=llm)
    history = [ChatMessage(role="user", content="hello"), ChatMessage(role="assistant", content="hi")]
    run(lambda: agent.run(user_msg="1+2?", chat_history=history))
    span = one(span_exporter.get_finished_spans(), "invoke_agent calc")
    assert content(span, semconv.GEN_AI_INPUT_MESSAGES) == [
        {"role": "user", "parts": [text("hello")]},
        {"role": "assistant", "parts": [text("hi")]},
        {"role": "user", "parts": [text("1+2?")]},
    ]
    assert content(span, semconv.GEN_AI_OUTPUT_MESSAGES) == [
        {"role": "assistant", "parts": [text("3")], "finish_reason": "stop"}
    ]


def test_agent_workflow_input_messages(instrumentor, span_exporter, capture):
    """Each agent of an AgentWorkflow records the messages it was given: the agent handed over to
    gets the conversation so far, the hand-off included."""
    workflow = handoff_workflow()
    history = [ChatMessage(role="user", content="hello"), ChatMessage(role="assistant", content="hi")]
    assert str(run(lambda: workflow.run(user_msg="2+2?", chat_history=history))) == "4"
    spans = span_exporter.get_finished_spans()
    given = [
        {"role": "user", "parts": [text("hello")]},
        {"role": "assistant", "parts": [text("hi")]},
        {"role": "user", "parts": [text("2+2?")]},
    ]
    assert content(one(spans, "invoke_workflow AgentWorkflow"), semconv.GEN_AI_INPUT_MESSAGES) == given
    assert content(one(spans, "invoke_agent front"), semconv.GEN_AI_INPUT_MESSAGES) == given
    handoff = {"to_agent": "math", "reason": HANDOFF_REASON}
    assert content(one(spans, "invoke_agent math"), semconv.GEN_AI_INPUT_MESSAGES) == [
        *given,
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "h1", "name": "handoff", "arguments": handoff}],
        },
        {
            "role": "tool",
            "parts": [
                {
                    "type": "tool_call_response",
                    "id": "h1",
                    "response": "Agent math is now handling the request due to the following reason: "
                    f"{HANDOFF_REASON}.\nPlease continue with the current request.",
                }
            ],
        },
    ]
    # given once, when the agent starts: its next turns (after its add call) start no new span
    assert [s.name for s in spans if s.name.startswith("invoke_agent")] == [
        "invoke_agent front",
        "invoke_agent math",
    ]


# ---- the agent's own instructions: gen_ai.system_instructions on invoke_agent -----------------------
def test_agent_system_prompt_is_its_system_instructions(instrumentor, span_exporter, capture):
    llm = MockFunctionCallingLLM(response_generator=scripted("hi"))
    agent = FunctionAgent(name="helper", tools=[add], system_prompt="be brief", llm=llm)
    run(lambda: agent.run(user_msg="hello"))
    span = one(span_exporter.get_finished_spans(), "invoke_agent helper")
    assert content(span, semconv.GEN_AI_SYSTEM_INSTRUCTIONS) == [text("be brief")]
    # the messages it was given, not the system prompt put before them for the model
    assert content(span, semconv.GEN_AI_INPUT_MESSAGES) == [{"role": "user", "parts": [text("hello")]}]


def test_react_agent_system_prompt_is_its_system_instructions(instrumentor, span_exporter, capture):
    llm = MockFunctionCallingLLM(response_generator=scripted("Thought: I can answer.\nAnswer: hi"))
    agent = ReActAgent(name="reasoner", tools=[add], system_prompt="think twice", llm=llm)
    assert str(run(lambda: agent.run(user_msg="hello"))) == "hi"
    span = one(span_exporter.get_finished_spans(), "invoke_agent reasoner")
    assert content(span, semconv.GEN_AI_SYSTEM_INSTRUCTIONS) == [text("think twice")]


def test_each_workflow_agent_has_its_own_system_instructions(instrumentor, span_exporter, capture):
    workflow = handoff_workflow(front_prompt="route it", math_prompt="do the math")
    run(lambda: workflow.run(user_msg="2+2?"))
    spans = span_exporter.get_finished_spans()
    assert content(one(spans, "invoke_agent front"), semconv.GEN_AI_SYSTEM_INSTRUCTIONS) == [text("route it")]
    assert content(one(spans, "invoke_agent math"), semconv.GEN_AI_SYSTEM_INSTRUCTIONS) == [
        text("do the math")
    ]
    assert semconv.GEN_AI_SYSTEM_INSTRUCTIONS not in one(spans, "invoke_workflow AgentWorkflow").attributes


def test_agent_without_a_system_prompt_has_no_system_instructions(instrumentor, span_exporter, capture):
    run(lambda: handoff_workflow(math_prompt="do the math").run(user_msg="2+2?"))
    spans = span_exporter.get_finished_spans()
    assert semconv.GEN_AI_SYSTEM_INSTRUCTIONS not in one(spans, "invoke_agent front").attributes
    assert semconv.GEN_AI_SYSTEM_INSTRUCTIONS in one(spans, "invoke_agent math").attributes


def test_agent_content_only_when_captured(instrumentor, span_exporter):
    run(lambda: handoff_workflow(front_prompt="route it", math_prompt="do the math").run(user_msg="2+2?"))
    for span in span_exporter.get_finished_spans():
        for key in (semconv.GEN_AI_SYSTEM_INSTRUCTIONS, semconv.GEN_AI_INPUT_MESSAGES):
            assert key not in span.attributes, (span.name, key)


ADD_DEFINITION = {
    "type": "function",
    "name": "add",
    "description": "add(a: 'int', b: 'int') -> 'int'\nAdd two numbers.",  # (this module's annotations)
    "parameters": {
        "type": "object",
        "properties": {"a": {"title": "A", "type": "integer"}, "b": {"title": "B", "type": "integer"}},
        "required": ["a", "b"],
    },
}


def test_agent_tools_are_tool_definitions(instrumentor, span_exporter, capture):
    llm = MockFunctionCallingLLM(response_generator=scripted([("c1", "add", {"a": 1, "b": 2})], "3"))
    run(lambda: FunctionAgent(name="calc", tools=[add], llm=llm).run(user_msg="1+2?"))
    chats = chat_spans(span_exporter)
    assert len(chats) == 2
    for chat in chats:
        assert content(chat, semconv.GEN_AI_TOOL_DEFINITIONS) == [ADD_DEFINITION]


def test_openai_tools_are_tool_definitions(instrumentor, openai_server, span_exporter, capture):
    from llama_index.llms.openai import OpenAI

    openai_server.replies = [{"content": "3"}]
    llm = OpenAI(model="gpt-4o-mini", api_key="test", api_base=openai_server.base_url, max_retries=0)
    llm.chat_with_tools([FunctionTool.from_defaults(add)], user_msg="1+2?")
    (chat,) = chat_spans(span_exporter)
    definitions = content(chat, semconv.GEN_AI_TOOL_DEFINITIONS)
    assert [(d["type"], d["name"], d["description"]) for d in definitions] == [
        ("function", "add", ADD_DEFINITION["description"])
    ]
    assert definitions[0]["parameters"]["properties"] == ADD_DEFINITION["parameters"]["properties"]


def test_tool_definitions_only_when_captured(instrumentor, span_exporter):
    llm = MockFunctionCallingLLM(response_generator=scripted("3"))
    run(lambda: FunctionAgent(name="calc", tools=[add], llm=llm).run(user_msg="1+2?"))
    (chat,) = chat_spans(span_exporter)
    assert semconv.GEN_AI_TOOL_DEFINITIONS not in chat.attributes


# ---- 7. tool names the model makes up --------------------------------------------------------------
LEAK = "card 4111-1111-1111-1111 of alice@example.com"


def test_made_up_tool_names_are_not_recorded(instrumentor, span_exporter, metric_reader):
    llm = MockFunctionCallingLLM(
        response_generator=scripted([("c1", LEAK, {}), ("c2", "add", {"a": 1, "b": 2})], "3")
    )
    run(lambda: FunctionAgent(name="calc", tools=[add], llm=llm).run(user_msg="1+2?"))
    spans = span_exporter.get_finished_spans()
    made_up = one(spans, "execute_tool")
    assert made_up.attributes[semconv.GEN_AI_TOOL_NAME] == "_OTHER"
    assert made_up.attributes[semconv.GEN_AI_TOOL_CALL_ID] == "c1"
    assert semconv.GEN_AI_TOOL_DESCRIPTION not in made_up.attributes
    assert one(spans, "execute_tool add").attributes[semconv.GEN_AI_TOOL_NAME] == "add"
    assert [s[1:3] for s in steps(one(spans, "invoke_agent calc"))] == [
        (semconv.STEP_ACTION, "_OTHER"),
        (semconv.STEP_ACTION, "add"),
        (semconv.STEP_OBSERVATION, "_OTHER"),
        (semconv.STEP_OBSERVATION, "add"),
        (semconv.STEP_FINAL, None),
    ]
    for span in spans:
        assert LEAK not in span.name
        assert all(LEAK not in str(v) for v in span.attributes.values())
        assert all(LEAK not in str(e.attributes) for e in span.events)
    points = metric_points(metric_reader, semconv.METRIC_EXECUTE_TOOL_DURATION)
    assert sorted(p.attributes[semconv.GEN_AI_TOOL_NAME] for p in points) == ["_OTHER", "add"]


def test_tool_names_kept_when_the_tools_are_retrieved(instrumentor, span_exporter):
    """An agent whose tools come from a retriever: any name may be a tool's (bounded, as every name)."""
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.objects import ObjectIndex

    index = ObjectIndex.from_objects(
        [FunctionTool.from_defaults(add)], embed_model=MockEmbedding(embed_dim=8)
    )
    llm = MockFunctionCallingLLM(response_generator=scripted([("c1", "lookup", {})], "done"))
    agent = FunctionAgent(name="calc", tool_retriever=index.as_retriever(), llm=llm)
    run(lambda: agent.run(user_msg="hi"))
    span = one(span_exporter.get_finished_spans(), "execute_tool lookup")
    assert span.attributes[semconv.GEN_AI_TOOL_NAME] == "lookup"


# ---- 8. long histories ------------------------------------------------------------------------------
def long_history(count: int) -> list[ChatMessage]:
    return [ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"m{i}") for i in range(count)]


def test_only_the_newest_messages_are_converted(instrumentor, span_exporter, capture, monkeypatch):
    converted: list[Any] = []
    parts = _extract.message_parts

    def counting(message: Any) -> list[dict[str, Any]]:
        converted.append(message)
        return parts(message)

    monkeypatch.setattr(_extract, "message_parts", counting)
    history = long_history(MAX_ITEMS + 500)
    MockLLM().chat(history)
    assert converted[: MAX_ITEMS - 1] == history[-(MAX_ITEMS - 1) :]
    assert len(converted) == MAX_ITEMS  # and the answer
    (chat,) = chat_spans(span_exporter)
    assert list(chat.attributes[semconv.LLMTRACE_CONTENT_TRUNCATED]) == [semconv.GEN_AI_INPUT_MESSAGES]
    messages = content(chat, semconv.GEN_AI_INPUT_MESSAGES)
    assert messages[0] == "[501 earlier messages truncated]"
    assert messages[1] == {"role": "assistant", "parts": [text("m501")]}  # history[501]


def test_messages_are_converted_before_the_span_starts(instrumentor, span_exporter, capture, monkeypatch):
    stamps: list[int] = []
    parts = _extract.message_parts

    def stamped(message: Any) -> list[dict[str, Any]]:
        stamps.append(time.time_ns())
        return parts(message)

    monkeypatch.setattr(_extract, "message_parts", stamped)
    for _ in MockLLM(max_tokens=2).stream_chat(long_history(10)):
        pass
    (chat,) = chat_spans(span_exporter)
    assert max(stamps[:10]) < chat.start_time
