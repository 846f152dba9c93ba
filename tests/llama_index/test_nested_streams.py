"""Streams of a provider class's subclass that overrides the stream methods and calls ``super()``.

llama-index-llms-openai-like's ``OpenAILike`` (and Groq, DeepSeek, OpenRouter... its subclasses) do
this: LlamaIndex wraps the override in a dispatcher span of its own around the provider's, and the
provider's callback reports the stream's events (chunks, end, error) under the inner span's id. The
one model span must still end when the stream does, with its usage, response id and finish reason.
``Gateway`` below is ``OpenAILike``'s pattern on llama-index-llms-openai's ``OpenAI``, against the
127.0.0.1 server of ``openai_server``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.generic_utils import stream_completion_response_to_chat_response
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponseGen,
)
from llama_index.core.embeddings import MockEmbedding
from llama_index.llms.openai import OpenAI
from opentelemetry.trace import StatusCode

from llmtrace import semconv
from llmtrace.testing import metric_points
from tests.llama_index.conftest import is_child, one, open_runs, tree
from tests.llama_index.openai_server import MODEL

USER = [ChatMessage(role="user", content="hi")]
CHAT = "chat gpt-4o-mini"
USAGE = {"stream_options": {"include_usage": True}}


class Gateway(OpenAI):
    """As ``OpenAILike``: overrides the model methods and calls ``super()`` (LlamaIndex traces each
    override as a dispatcher span of its own, since the base method is traced)."""

    completion_model: bool = False
    """As ``OpenAILike(is_chat_model=False)``: ``stream_chat`` streams a completion."""

    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return super().chat(messages, **kwargs)

    def stream_chat(self, messages: Any, **kwargs: Any) -> ChatResponseGen:
        if self.completion_model:
            prompt = self.messages_to_prompt(messages)
            return stream_completion_response_to_chat_response(self.stream_complete(prompt, formatted=True))
        return super().stream_chat(messages, **kwargs)

    async def astream_chat(self, messages: Any, **kwargs: Any) -> ChatResponseAsyncGen:
        return await super().astream_chat(messages, **kwargs)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return super().stream_complete(prompt, formatted=formatted, **kwargs)


def _llm(server: Any, **kwargs: Any) -> Gateway:
    return Gateway(api_base=server.base_url, api_key="test", model="gpt-4o-mini", max_retries=0, **kwargs)


def _stream_chat(llm: Gateway) -> str:
    return "".join(chunk.delta or "" for chunk in llm.stream_chat(USER))


def _astream_chat(llm: Gateway) -> str:
    async def run() -> str:
        return "".join([chunk.delta or "" async for chunk in await llm.astream_chat(USER)])

    return asyncio.run(run())


def _stream_complete(llm: Gateway) -> str:
    return "".join(chunk.delta or "" for chunk in llm.stream_complete("hi"))


def _assert_streamed(span: Any, chunks: int) -> None:
    attrs = span.attributes
    assert span.status.status_code is StatusCode.UNSET
    assert attrs[semconv.GEN_AI_REQUEST_STREAM] is True
    assert attrs[semconv.LLMTRACE_STREAM_CHUNKS] == chunks
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 20
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    assert attrs[semconv.GEN_AI_RESPONSE_ID] == "chatcmpl-s1"
    assert attrs[semconv.GEN_AI_RESPONSE_MODEL] == MODEL
    assert attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attrs[semconv.GEN_AI_USAGE_COST_AMOUNT] > 0
    assert semconv.LLMTRACE_EVICTED not in attrs


REPLY = {"text": "one two three", "prompt_tokens": 20, "completion_tokens": 3, "id": "chatcmpl-s1"}


def test_stream_of_a_subclass_ends_with_the_stream(
    instrumentor, openai_server, span_exporter, metric_reader, records
):
    """Each stream method: one model span, ended (with usage) when the caller has read the stream."""
    methods = ((_stream_chat, CHAT), (_astream_chat, CHAT), (_stream_complete, "text_completion gpt-4o-mini"))
    for read, name in methods:
        span_exporter.clear()
        openai_server.replies = [dict(REPLY)]
        assert read(_llm(openai_server, additional_kwargs=USAGE)) == "one two three"
        spans = span_exporter.get_finished_spans()  # read at once: no eviction, no waiting
        assert [s.name for s in spans] == [name]
        _assert_streamed(spans[0], 5)  # 3 words, the finish chunk, the usage chunk
        assert len(open_runs()) == 0
    assert [(r.status, r.input_tokens, r.output_tokens, r.streamed) for r in records] == [
        ("success", 20, 3, True)
    ] * 3
    ttfc = metric_points(metric_reader, semconv.METRIC_CLIENT_TIME_TO_FIRST_CHUNK)
    assert sum(p.count for p in ttfc) == 3


def test_stream_of_a_completion_model_subclass(instrumentor, openai_server, span_exporter, capture):
    """``OpenAILike(is_chat_model=False).stream_chat``: three nested model calls (the chat, the
    subclass's ``stream_complete``, the provider's), one span; the output is captured once."""
    openai_server.replies = [dict(REPLY)]
    llm = _llm(openai_server, additional_kwargs=USAGE)
    llm.completion_model = True
    assert _stream_chat(llm) == "one two three"
    span = one(span_exporter.get_finished_spans(), CHAT)
    _assert_streamed(span, 5)
    output = json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    text = {"type": "text", "content": "one two three"}
    assert output == [{"role": "assistant", "parts": [text], "finish_reason": "stop"}]
    assert len(open_runs()) == 0


def test_stream_of_a_subclass_closed_early_is_cancelled(instrumentor, openai_server, span_exporter, records):
    openai_server.replies = [dict(REPLY)]
    stream = _llm(openai_server, additional_kwargs=USAGE).stream_chat(USER)
    assert next(stream).delta == "one"
    stream.close()
    span = one(span_exporter.get_finished_spans(), CHAT)
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes[semconv.LLMTRACE_STREAM_CHUNKS] == 1
    assert [r.status for r in records] == ["cancelled"]
    assert len(open_runs()) == 0


def test_chat_of_a_subclass_captures_its_output(instrumentor, openai_server, span_exporter, capture):
    """Not streamed: the provider's method reports the end, under its own span id."""
    openai_server.replies = [{"text": "Hello there!", "id": "chatcmpl-c1"}]
    assert _llm(openai_server).chat(USER).message.content == "Hello there!"
    span = one(span_exporter.get_finished_spans(), CHAT)
    assert span.attributes[semconv.GEN_AI_RESPONSE_ID] == "chatcmpl-c1"
    output = json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert output == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hello there!"}], "finish_reason": "stop"}
    ]


def test_streaming_query_engine_over_a_subclass(instrumentor, openai_server, span_exporter):
    index = VectorStoreIndex.from_documents(
        [Document(text="The sky is blue.")], embed_model=MockEmbedding(embed_dim=8)
    )
    span_exporter.clear()
    openai_server.replies = [dict(REPLY)]
    engine = index.as_query_engine(llm=_llm(openai_server, additional_kwargs=USAGE), streaming=True)
    assert "".join(engine.query("sky?").response_gen) == "one two three"
    spans = span_exporter.get_finished_spans()  # the engine ended with its stream
    assert tree(spans) == [
        "invoke_workflow RetrieverQueryEngine",
        "  retrieval SimpleVectorStore",
        "    embeddings",
        f"  {CHAT}",
    ]
    engine_span = one(spans, "invoke_workflow RetrieverQueryEngine")
    chat = one(spans, CHAT)
    assert engine_span.status.status_code is StatusCode.UNSET
    assert engine_span.end_time >= chat.end_time
    _assert_streamed(chat, 5)
    assert len(open_runs()) == 0


def _add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def test_function_agent_over_a_subclass(instrumentor, openai_server, span_exporter):
    """An agent streams every model call: each chat span ends with its stream, before the tool runs."""
    openai_server.replies = [
        {"tool_calls": [{"id": "c1", "name": "_add", "arguments": {"a": 1, "b": 2}}], "id": "chatcmpl-t"},
        dict(REPLY, text="3"),
    ]
    agent = FunctionAgent(name="adder", tools=[_add], llm=_llm(openai_server, additional_kwargs=USAGE))

    async def main() -> str:
        return str(await agent.run("1+2?"))

    assert asyncio.run(main()) == "3"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_agent adder", f"  {CHAT}", "  execute_tool _add", f"  {CHAT}"]
    first, second = sorted((s for s in spans if s.name == CHAT), key=lambda s: s.start_time)
    tool = one(spans, "execute_tool _add")
    agent_span = one(spans, "invoke_agent adder")
    assert is_child(first, agent_span) and is_child(second, agent_span)
    assert first.end_time <= tool.start_time  # ended with its stream, not with the run
    assert first.attributes[semconv.GEN_AI_RESPONSE_ID] == "chatcmpl-t"
    assert first.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_call",)
    assert first.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 12
    assert second.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 20
    assert second.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert len(open_runs()) == 0
