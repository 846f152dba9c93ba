"""Message content in the conventions' shapes (capture on): roles, parts, finish reasons, tool
definitions; tool names the model makes up (capture off); the cost of long histories."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from llmtrace_langchain import _extract

from llmtrace import semconv
from llmtrace._content import MAX_ITEMS, CaptureMode, ContentPolicy
from llmtrace.testing import metric_points

from .conftest import attrs, events
from .fakes import ScriptedChatModel, answer, call

B64 = "iVBORw0KGgo="
"""A few bytes of base64: short enough to be recorded as they are (longer inline media is not)."""


@pytest.fixture
def capture(content_capture):
    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_ONLY)
    return content_capture


def chat_spans(span_exporter) -> list[Any]:
    return [s for s in span_exporter.get_finished_spans() if s.name.startswith("chat")]


def content(span, key: str) -> Any:
    return json.loads(attrs(span)[key])


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "content": value}


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class BindingChatModel(ScriptedChatModel):
    """Binds its tools as LangChain's provider models do (``bind(tools=...)``: they reach the
    callbacks in ``invocation_params["tools"]``)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


# ---- 1. system messages of the history stay in the history ----------------------------------------
def test_agent_system_prompt_is_the_first_input_message(handler, span_exporter, capture):
    agent = create_agent(ScriptedChatModel(script=[answer("hi")]), tools=[add], system_prompt="be brief")
    agent.invoke({"messages": [HumanMessage("hello")]}, config={"callbacks": [handler]})
    (chat,) = chat_spans(span_exporter)
    assert content(chat, semconv.GEN_AI_INPUT_MESSAGES) == [
        {"role": "system", "parts": [text("be brief")]},
        {"role": "user", "parts": [text("hello")]},
    ]
    assert semconv.GEN_AI_SYSTEM_INSTRUCTIONS not in attrs(chat)


def test_system_messages_keep_their_place_in_the_history(handler, span_exporter, capture):
    history = [
        SystemMessage("rules"),
        HumanMessage("q1"),
        AIMessage("a1"),
        SystemMessage("the user is now in French mode"),
        HumanMessage("q2"),
    ]
    ScriptedChatModel(script=[answer("ok")]).invoke(history, config={"callbacks": [handler]})
    (chat,) = chat_spans(span_exporter)
    assert [m["role"] for m in content(chat, semconv.GEN_AI_INPUT_MESSAGES)] == [
        "system",
        "user",
        "assistant",
        "system",
        "user",
    ]
    assert semconv.GEN_AI_SYSTEM_INSTRUCTIONS not in attrs(chat)


# ---- 1b. the agent's own system prompt: gen_ai.system_instructions on invoke_agent -------------------
def agent_span(span_exporter: Any) -> Any:
    (span,) = [s for s in span_exporter.get_finished_spans() if s.name.startswith("invoke_agent")]
    return span


def adding_agent(name: str | None = None, **kwargs: Any) -> Any:
    model = ScriptedChatModel(script=[call(("add", {"a": 1, "b": 2}, "c1")), answer("3")])
    return create_agent(model, tools=[add], name=name, **kwargs)


@pytest.mark.parametrize("name", ["calc", None], ids=["named", "unnamed"])
def test_agent_system_prompt_is_its_system_instructions(handler, span_exporter, capture, name):
    agent = adding_agent(name, system_prompt="be brief")
    agent.invoke({"messages": [HumanMessage("1+2?")]}, config={"callbacks": [handler]})
    span = agent_span(span_exporter)
    assert content(span, semconv.GEN_AI_SYSTEM_INSTRUCTIONS) == [text("be brief")]
    # the messages the agent was given: the system prompt is not one of them
    assert content(span, semconv.GEN_AI_INPUT_MESSAGES) == [{"role": "user", "parts": [text("1+2?")]}]
    # each model call is sent the prompt as its first message (and has no system instructions)
    for chat in chat_spans(span_exporter):
        assert content(chat, semconv.GEN_AI_INPUT_MESSAGES)[0] == {
            "role": "system",
            "parts": [text("be brief")],
        }
        assert semconv.GEN_AI_SYSTEM_INSTRUCTIONS not in attrs(chat)


def test_agent_system_message_with_content_blocks(handler, span_exporter, capture):
    prompt = SystemMessage(
        content=[{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind"}]
    )
    adding_agent(system_prompt=prompt).invoke(
        {"messages": [("user", "1+2?")]}, config={"callbacks": [handler]}
    )
    assert content(agent_span(span_exporter), semconv.GEN_AI_SYSTEM_INSTRUCTIONS) == [
        text("be brief"),
        text("be kind"),
    ]


def test_a_system_message_of_the_history_is_no_system_instruction(handler, span_exporter, capture):
    history = [SystemMessage("rules"), HumanMessage("1+2?")]
    adding_agent().invoke({"messages": history}, config={"callbacks": [handler]})
    span = agent_span(span_exporter)
    assert semconv.GEN_AI_SYSTEM_INSTRUCTIONS not in attrs(span)
    assert content(span, semconv.GEN_AI_INPUT_MESSAGES)[0] == {"role": "system", "parts": [text("rules")]}


def test_system_prompt_and_a_system_message_of_the_history(handler, span_exporter, capture):
    history = [SystemMessage("rules"), HumanMessage("1+2?")]
    adding_agent(system_prompt="be brief").invoke({"messages": history}, config={"callbacks": [handler]})
    span = agent_span(span_exporter)
    assert content(span, semconv.GEN_AI_SYSTEM_INSTRUCTIONS) == [text("be brief")]
    assert [m["role"] for m in content(span, semconv.GEN_AI_INPUT_MESSAGES)] == ["system", "user"]


def test_agent_system_prompt_only_when_captured(handler, span_exporter):
    adding_agent("calc", system_prompt="be brief").invoke(
        {"messages": [HumanMessage("1+2?")]}, config={"callbacks": [handler]}
    )
    for span in span_exporter.get_finished_spans():
        assert semconv.GEN_AI_SYSTEM_INSTRUCTIONS not in attrs(span)
        assert semconv.GEN_AI_INPUT_MESSAGES not in attrs(span)


# ---- 2. finish reasons -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        ("stop", "stop"),
        ("end_turn", "stop"),  # Anthropic
        ("stop_sequence", "stop"),
        ("STOP", "stop"),  # Gemini
        ("max_tokens", "length"),
        ("MAX_TOKENS", "length"),
        ("length", "length"),
        ("tool_calls", "tool_call"),  # OpenAI
        ("tool_use", "tool_call"),  # Anthropic
        ("content_filter", "content_filter"),
        ("SAFETY", "content_filter"),
        ("refusal", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "error"),
        ("pause_turn", "pause_turn"),  # unknown values are kept as they are
        ("FINISH_REASON_UNSPECIFIED", "FINISH_REASON_UNSPECIFIED"),
    ],
)
def test_finish_reasons_are_normalised(handler, span_exporter, capture, reported, expected):
    ScriptedChatModel(script=[answer("hi", finish_reason=reported)]).invoke(
        "q", config={"callbacks": [handler]}
    )
    (chat,) = chat_spans(span_exporter)
    assert attrs(chat)[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == (expected,)
    assert content(chat, semconv.GEN_AI_OUTPUT_MESSAGES) == [
        {"role": "assistant", "parts": [text("hi")], "finish_reason": expected}
    ]


def test_finish_reasons_normalised_with_capture_off(handler, span_exporter):
    ScriptedChatModel(script=[answer("hi", finish_reason="end_turn")]).invoke(
        "q", config={"callbacks": [handler]}
    )
    (chat,) = chat_spans(span_exporter)
    assert attrs(chat)[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)


def test_bedrock_stop_reason(handler, span_exporter, capture):
    reply = AIMessage(content="hi", response_metadata={"stopReason": "max_tokens"})
    ScriptedChatModel(script=[reply]).invoke("q", config={"callbacks": [handler]})
    (chat,) = chat_spans(span_exporter)
    assert attrs(chat)[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("length",)
    assert content(chat, semconv.GEN_AI_OUTPUT_MESSAGES)[0]["finish_reason"] == "length"


def test_finish_reason_derived_when_none_is_reported(handler, span_exporter, capture):
    """The conventions require one on every output message: a message calling tools ends for them to
    run (``tool_call``), any other complete answer is ``stop``. The span attribute keeps only what
    the provider reported."""
    calls = AIMessage(content="", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1"}])
    ScriptedChatModel(script=[calls]).invoke("q", config={"callbacks": [handler]})
    GenericFakeChatModel(messages=iter([AIMessage("plain")])).invoke("q", config={"callbacks": [handler]})
    with_calls, plain = chat_spans(span_exporter)
    assert content(with_calls, semconv.GEN_AI_OUTPUT_MESSAGES) == [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "c1", "name": "add", "arguments": {"a": 1, "b": 2}}],
            "finish_reason": "tool_call",
        }
    ]
    assert content(plain, semconv.GEN_AI_OUTPUT_MESSAGES) == [
        {"role": "assistant", "parts": [text("plain")], "finish_reason": "stop"}
    ]
    for span in (with_calls, plain):
        assert semconv.GEN_AI_RESPONSE_FINISH_REASONS not in attrs(span)


def test_agent_output_message_has_a_finish_reason(handler, span_exporter, capture):
    model = ScriptedChatModel(script=[call(("add", {"a": 1, "b": 2}, "c1")), answer("3")])
    create_agent(model, tools=[add], name="calc").invoke(
        {"messages": [HumanMessage("1+2?")]}, config={"callbacks": [handler]}
    )
    (agent,) = [s for s in span_exporter.get_finished_spans() if s.name == "invoke_agent calc"]
    assert content(agent, semconv.GEN_AI_INPUT_MESSAGES) == [{"role": "user", "parts": [text("1+2?")]}]
    assert content(agent, semconv.GEN_AI_OUTPUT_MESSAGES) == [
        {"role": "assistant", "parts": [text("3")], "name": "calc", "finish_reason": "stop"}
    ]


# ---- 3. ChatMessage roles ------------------------------------------------------------------------
def test_chat_message_roles_are_kept(handler, span_exporter, capture):
    history = [
        ChatMessage(role="system", content="s"),
        ChatMessage(role="assistant", content="a"),
        ChatMessage(role="critic", content="c"),
        ChatMessage(role="human", content="h"),
        ChatMessage(role="user", content="u"),
    ]
    ScriptedChatModel(script=[answer("ok")]).invoke(history, config={"callbacks": [handler]})
    (chat,) = chat_spans(span_exporter)
    assert content(chat, semconv.GEN_AI_INPUT_MESSAGES) == [
        {"role": "system", "parts": [text("s")]},
        {"role": "assistant", "parts": [text("a")]},
        {"role": "critic", "parts": [text("c")]},
        {"role": "user", "parts": [text("h")]},
        {"role": "user", "parts": [text("u")]},
    ]


# ---- 4. reasoning and untyped blocks ---------------------------------------------------------------
def test_reasoning_and_untyped_blocks(handler, span_exporter, capture):
    history = [
        HumanMessage("why?"),
        AIMessage(
            content=[
                {"type": "reasoning", "reasoning": "standard"},  # LangChain v1
                {"type": "thinking", "thinking": "anthropic", "signature": "sig"},
                {  # OpenAI Responses
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [
                        {"type": "summary_text", "text": "s1"},
                        {"type": "summary_text", "text": "s2"},
                    ],
                },
                {"type": "reasoning", "id": "rs_2", "summary": []},  # summarised away
                {"text": "untyped", "extra": 1},
                {"type": "text", "text": "because"},
            ]
        ),
        AIMessage(content="sure", additional_kwargs={"reasoning_content": "deepseek"}),
        HumanMessage("ok"),
    ]
    ScriptedChatModel(script=[answer("fine")]).invoke(history, config={"callbacks": [handler]})
    (chat,) = chat_spans(span_exporter)
    assert content(chat, semconv.GEN_AI_INPUT_MESSAGES) == [
        {"role": "user", "parts": [text("why?")]},
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "content": "standard"},
                {"type": "reasoning", "content": "anthropic"},
                {"type": "reasoning", "content": "s1\n\ns2"},
                {"type": "reasoning", "content": ""},
                text("untyped"),
                text("because"),
            ],
        },
        {"role": "assistant", "parts": [{"type": "reasoning", "content": "deepseek"}, text("sure")]},
        {"role": "user", "parts": [text("ok")]},
    ]


def test_reasoning_in_the_output(handler, span_exporter, capture):
    reply = AIMessage(
        content=[{"type": "thinking", "thinking": "let me see"}, {"type": "text", "text": "42"}],
        response_metadata={"stop_reason": "end_turn"},
    )
    ScriptedChatModel(script=[reply]).invoke("q", config={"callbacks": [handler]})
    (chat,) = chat_spans(span_exporter)
    assert content(chat, semconv.GEN_AI_OUTPUT_MESSAGES) == [
        {
            "role": "assistant",
            "parts": [{"type": "reasoning", "content": "let me see"}, text("42")],
            "finish_reason": "stop",
        }
    ]


# ---- 5. media parts --------------------------------------------------------------------------------
MEDIA_BLOCKS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    # OpenAI chat completions (LangChain v0)
    (
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        {"type": "uri", "modality": "image", "uri": "https://example.com/cat.png"},
    ),
    (
        {"type": "image_url", "image_url": f"data:image/png;base64,{B64}"},
        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": B64},
    ),
    (
        {"type": "input_audio", "input_audio": {"data": B64, "format": "wav"}},
        {"type": "blob", "modality": "audio", "mime_type": "audio/wav", "content": B64},
    ),
    (
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{B64}", "filename": "a.pdf"}},
        {"type": "blob", "modality": "document", "mime_type": "application/pdf", "content": B64},
    ),
    (
        {"type": "file", "file": {"file_id": "file-abc"}},
        {"type": "file", "modality": "document", "file_id": "file-abc"},
    ),
    # LangChain v1 standard blocks
    (
        {"type": "image", "base64": B64, "mime_type": "image/png"},
        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": B64},
    ),
    (
        {"type": "image", "file_id": "file-123", "mime_type": "image/jpeg"},
        {"type": "file", "modality": "image", "file_id": "file-123", "mime_type": "image/jpeg"},
    ),
    (
        {"type": "audio", "url": "https://example.com/a.mp3", "mime_type": "audio/mpeg"},
        {"type": "uri", "modality": "audio", "uri": "https://example.com/a.mp3", "mime_type": "audio/mpeg"},
    ),
    (
        {"type": "audio", "base64": B64, "mime_type": "audio/wav"},
        {"type": "blob", "modality": "audio", "mime_type": "audio/wav", "content": B64},
    ),
    (
        {"type": "video", "file_id": "vid-1"},
        {"type": "file", "modality": "video", "file_id": "vid-1"},
    ),
    (
        {"type": "file", "url": "https://example.com/doc.pdf", "mime_type": "application/pdf"},
        {
            "type": "uri",
            "modality": "document",
            "uri": "https://example.com/doc.pdf",
            "mime_type": "application/pdf",
        },
    ),
    (
        {"type": "file", "base64": B64, "mime_type": "application/pdf"},
        {"type": "blob", "modality": "document", "mime_type": "application/pdf", "content": B64},
    ),
    (
        {"type": "text-plain", "text": "notes", "mime_type": "text/plain"},
        text("notes"),
    ),
    # LangChain v0 multimodal blocks
    (
        {"type": "image", "source_type": "url", "url": "https://example.com/b.png"},
        {"type": "uri", "modality": "image", "uri": "https://example.com/b.png"},
    ),
    (
        {"type": "file", "source_type": "id", "id": "file-7"},
        {"type": "file", "modality": "document", "file_id": "file-7"},
    ),
    # Anthropic
    (
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}},
        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": B64},
    ),
    (
        {"type": "document", "source": {"type": "url", "url": "https://example.com/d.pdf"}},
        {"type": "uri", "modality": "document", "uri": "https://example.com/d.pdf"},
    ),
    (
        {"type": "image", "source": {"type": "file", "file_id": "file_011"}},
        {"type": "file", "modality": "image", "file_id": "file_011"},
    ),
    # OpenAI Responses
    (
        {"type": "input_image", "image_url": "https://example.com/r.png"},
        {"type": "uri", "modality": "image", "uri": "https://example.com/r.png"},
    ),
    (
        {"type": "input_file", "file_id": "file-r"},
        {"type": "file", "modality": "document", "file_id": "file-r"},
    ),
]


@pytest.mark.parametrize(("block", "part"), MEDIA_BLOCKS, ids=[str(i) for i in range(len(MEDIA_BLOCKS))])
def test_media_blocks_become_the_conventions_parts(handler, span_exporter, capture, block, part):
    message = HumanMessage(content=[{"type": "text", "text": "look"}, block])
    ScriptedChatModel(script=[answer("ok")]).invoke([message], config={"callbacks": [handler]})
    (chat,) = chat_spans(span_exporter)
    assert content(chat, semconv.GEN_AI_INPUT_MESSAGES) == [{"role": "user", "parts": [text("look"), part]}]


@pytest.mark.parametrize(("block", "part"), MEDIA_BLOCKS, ids=[str(i) for i in range(len(MEDIA_BLOCKS))])
def test_media_blocks_as_langchain_hands_them_over(block, part):
    """The same blocks as they are (LangChain rewrites some for the callbacks, not for an agent's state)."""
    assert _extract.message_to_json(HumanMessage(content=[block])) == {"role": "user", "parts": [part]}


def test_large_inline_media_is_a_blob_part(handler, span_exporter, capture):
    data = B64 * 1000
    message = HumanMessage(content=[{"type": "image", "base64": data, "mime_type": "image/png"}])
    ScriptedChatModel(script=[answer("ok")]).invoke([message], config={"callbacks": [handler]})
    (chat,) = chat_spans(span_exporter)
    (part,) = content(chat, semconv.GEN_AI_INPUT_MESSAGES)[0]["parts"]
    assert {k: v for k, v in part.items() if k != "content"} == {
        "type": "blob",
        "modality": "image",
        "mime_type": "image/png",
    }
    assert data not in attrs(chat)[semconv.GEN_AI_INPUT_MESSAGES]  # never recorded whole


def test_media_in_the_output(handler, span_exporter, capture):
    reply = AIMessage(content=[{"type": "image", "base64": B64, "mime_type": "image/png"}])
    ScriptedChatModel(script=[reply]).invoke("draw", config={"callbacks": [handler]})
    (chat,) = chat_spans(span_exporter)
    assert content(chat, semconv.GEN_AI_OUTPUT_MESSAGES) == [
        {
            "role": "assistant",
            "parts": [{"type": "blob", "modality": "image", "mime_type": "image/png", "content": B64}],
            "finish_reason": "stop",
        }
    ]


def test_tool_results_with_images_are_parts(handler, span_exporter, capture):
    history = [
        HumanMessage("screenshot please"),
        AIMessage(content="", tool_calls=[{"name": "shot", "args": {}, "id": "c1"}]),
        ToolMessage(
            content=[
                {"type": "text", "text": "here"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}},
            ],
            tool_call_id="c1",
        ),
        ToolMessage(content="plain result", tool_call_id="c2"),
    ]
    ScriptedChatModel(script=[answer("ok")]).invoke(history, config={"callbacks": [handler]})
    (chat,) = chat_spans(span_exporter)
    messages = content(chat, semconv.GEN_AI_INPUT_MESSAGES)
    assert messages[2:] == [
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
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c2", "response": "plain result"}]},
    ]


# ---- 6. tool definitions ------------------------------------------------------------------------------
def test_bound_tools_are_tool_definitions(handler, span_exporter, capture):
    model = BindingChatModel(script=[call(("add", {"a": 1, "b": 2}, "c1")), answer("3")])
    create_agent(model, tools=[add], name="calc").invoke(
        {"messages": [HumanMessage("1+2?")]}, config={"callbacks": [handler]}
    )
    for chat in chat_spans(span_exporter):
        assert content(chat, semconv.GEN_AI_TOOL_DEFINITIONS) == [
            {
                "type": "function",
                "name": "add",
                "description": "Add two integers.",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"],
                },
            }
        ]


def test_tool_definitions_only_when_captured(handler, span_exporter):
    BindingChatModel(script=[answer("3")]).bind_tools([add]).invoke("1+2?", config={"callbacks": [handler]})
    (chat,) = chat_spans(span_exporter)
    assert semconv.GEN_AI_TOOL_DEFINITIONS not in attrs(chat)


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        (  # Anthropic, with a server tool
            [
                {"name": "get", "description": "Get it.", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
            ],
            [
                {
                    "type": "function",
                    "name": "get",
                    "description": "Get it.",
                    "parameters": {"type": "object"},
                },
                {"type": "web_search_20250305", "name": "web_search"},
            ],
        ),
        (  # OpenAI Responses, with a built-in tool
            [{"type": "function", "name": "f", "parameters": {}}, {"type": "web_search_preview"}],
            [
                {"type": "function", "name": "f", "parameters": {}},
                {"type": "web_search_preview", "name": "web_search_preview"},
            ],
        ),
        (  # Gemini
            [{"function_declarations": [{"name": "g1", "description": "one"}, {"name": "g2"}]}],
            [{"type": "function", "name": "g1", "description": "one"}, {"type": "function", "name": "g2"}],
        ),
        (  # Bedrock Converse
            [{"toolSpec": {"name": "b", "inputSchema": {"json": {"type": "object"}}}}],
            [{"type": "function", "name": "b", "parameters": {"type": "object"}}],
        ),
    ],
)
def test_tool_definitions_of_provider_formats(tools, expected):
    assert _extract.tool_definitions(tools) == expected


# ---- 7. tool names the model makes up --------------------------------------------------------------
LEAK = "card 4111-1111-1111-1111 of alice@example.com"


def test_made_up_tool_names_are_not_recorded(handler, span_exporter, metric_reader):
    model = BindingChatModel(script=[call((LEAK, {}, "c1"), ("add", {"a": 1, "b": 2}, "c2")), answer("3")])
    create_agent(model, tools=[add], name="calc").invoke(
        {"messages": [HumanMessage("1+2?")]}, config={"callbacks": [handler]}
    )
    spans = span_exporter.get_finished_spans()
    (agent,) = [s for s in spans if s.name == "invoke_agent calc"]
    actions = [e for name, e in events(agent) if e[semconv.LLMTRACE_AGENT_STEP_KIND] == semconv.STEP_ACTION]
    assert [(e[semconv.GEN_AI_TOOL_NAME], e[semconv.GEN_AI_TOOL_CALL_ID]) for e in actions] == [
        ("_OTHER", "c1"),
        ("add", "c2"),
    ]
    for span in spans:
        assert LEAK not in span.name
        assert all(LEAK not in str(v) for v in attrs(span).values())
        assert all(LEAK not in str(e) for e in events(span))
    points = metric_points(metric_reader, semconv.METRIC_EXECUTE_TOOL_DURATION)
    assert [p.attributes[semconv.GEN_AI_TOOL_NAME] for p in points] == ["add"]


def test_tool_names_kept_when_the_declared_tools_are_not_known(handler, span_exporter):
    """A model that binds no tools (ScriptedChatModel.bind_tools returns the model itself): any name
    may be a tool's, so it is recorded (bounded, as every name)."""
    model = ScriptedChatModel(script=[call(("lookup", {}, "c1")), answer("done")])
    create_agent(model, tools=[add], name="calc").invoke(
        {"messages": [HumanMessage("hi")]}, config={"callbacks": [handler]}
    )
    (agent,) = [s for s in span_exporter.get_finished_spans() if s.name == "invoke_agent calc"]
    actions = [e for _, e in events(agent) if e[semconv.LLMTRACE_AGENT_STEP_KIND] == semconv.STEP_ACTION]
    assert [e[semconv.GEN_AI_TOOL_NAME] for e in actions] == ["lookup"]


# ---- 8. long histories ------------------------------------------------------------------------------
def long_history(count: int) -> list[Any]:
    return [HumanMessage(f"q{i}") if i % 2 == 0 else AIMessage(f"a{i}") for i in range(count)]


def test_only_the_newest_messages_are_converted(handler, span_exporter, capture, monkeypatch):
    converted: list[Any] = []
    to_json = _extract.message_to_json

    def counting(message: Any) -> dict[str, Any]:
        converted.append(message)
        return to_json(message)

    monkeypatch.setattr(_extract, "message_to_json", counting)
    history = long_history(MAX_ITEMS + 500)
    ScriptedChatModel(script=[answer("ok")]).invoke(history, config={"callbacks": [handler]})
    assert converted[: MAX_ITEMS - 1] == history[-(MAX_ITEMS - 1) :]
    assert len(converted) == MAX_ITEMS  # the newest, then the reply
    (chat,) = chat_spans(span_exporter)
    a = attrs(chat)
    assert list(a[semconv.LLMTRACE_CONTENT_TRUNCATED]) == [semconv.GEN_AI_INPUT_MESSAGES]
    messages = json.loads(a[semconv.GEN_AI_INPUT_MESSAGES])
    assert messages[0] == "[501 earlier messages truncated]"
    assert messages[1] == {"role": "assistant", "parts": [text("a501")]}  # history[501]


def test_a_history_within_the_limit_is_whole(handler, span_exporter, capture):
    history = long_history(MAX_ITEMS)
    ScriptedChatModel(script=[answer("ok")]).invoke(history, config={"callbacks": [handler]})
    (chat,) = chat_spans(span_exporter)
    messages = content(chat, semconv.GEN_AI_INPUT_MESSAGES)
    assert messages[0] == {"role": "user", "parts": [text("q0")]}


def test_messages_are_converted_before_the_span_starts(handler, span_exporter, capture, monkeypatch):
    """Their conversion is the instrumentation's cost, not the model's latency (span duration, time
    to first chunk)."""
    stamps: list[int] = []
    to_json = _extract.message_to_json

    def stamped(message: Any) -> dict[str, Any]:
        stamps.append(time.time_ns())
        return to_json(message)

    monkeypatch.setattr(_extract, "message_to_json", stamped)
    for _ in ScriptedChatModel(script=[answer("a b")]).stream(
        long_history(10), config={"callbacks": [handler]}
    ):
        pass
    (chat,) = chat_spans(span_exporter)
    inputs = stamps[:10]
    assert max(inputs) < chat.start_time
