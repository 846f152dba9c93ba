"""Streamed engine responses whose model call starts only when the caller iterates them.

``index.as_query_engine(streaming=True)`` and the ``context`` / ``condense_plus_context`` chat
engines return a stream from their response synthesizer that has not called the model yet. The
model span must still be a child of the engine's ``invoke_workflow`` span, and the engine span must
stay open until the stream ends.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.tools import FunctionTool
from llama_index_instrumentation import get_dispatcher
from llmtrace_llama_index import _runs, _span_handler
from llmtrace_llama_index._lazy import LazyStreams
from llmtrace_llama_index._span_handler import LlamaIndexSpanHandler
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from llmtrace import semconv
from llmtrace._runmap import _sweeper
from llmtrace._safety import internal_error_counts
from tests.llama_index.conftest import (
    UsageStreamLLM,
    assert_counted_once,
    by_name,
    is_child,
    one,
    open_runs,
    tree,
)

DOCS = [Document(text="The sky is blue.", id_="sky"), Document(text="Grass is green.", id_="grass")]
QUERY_TREE = [
    "invoke_workflow RetrieverQueryEngine",
    "  retrieval SimpleVectorStore",
    "    embeddings",
    "  text_completion",
]


class BrokenStreamLLM(MockLLM):
    """Streams one chunk, then fails (like a connection dropped mid-stream)."""

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text="text ", delta="text ")
            raise ConnectionError("stream dropped")

        return gen()


@pytest.fixture
def index() -> VectorStoreIndex:
    # built before instrumenting, so its embedding calls are not part of the traces under test
    return VectorStoreIndex.from_documents(DOCS, embed_model=MockEmbedding(embed_dim=8))


def lazy_streams() -> LazyStreams:
    (handler,) = [h for h in get_dispatcher().span_handlers if isinstance(h, LlamaIndexSpanHandler)]
    return handler.runs.lazy


def assert_nothing_open() -> None:
    assert len(open_runs()) == 0
    assert len(lazy_streams()) == 0


def assert_nested(spans: Any, engine_name: str, model_name: str = "text_completion") -> tuple[Any, Any]:
    """The engine span and its model span: the model is the engine's child and ended first."""
    engine, model = one(spans, engine_name), one(spans, model_name)
    assert is_child(model, engine)
    assert model.context.trace_id == engine.context.trace_id
    assert engine.end_time >= model.end_time  # the engine's span waited for its stream
    return engine, model


def ok(span: ReadableSpan) -> bool:
    return span.status.status_code is StatusCode.UNSET and semconv.ERROR_TYPE not in span.attributes


# ---- query engine ------------------------------------------------------------------------
def test_streamed_query_nests_model_span_under_engine(index, instrumentor, tracer_provider, span_exporter):
    engine = index.as_query_engine(llm=MockLLM(max_tokens=3), streaming=True)
    tracer = trace.get_tracer("app", tracer_provider=tracer_provider)
    with tracer.start_as_current_span("request") as request:
        response = engine.query("sky?")
    assert span_exporter.get_finished_spans()[-1].name == "request"  # the engine is still open
    assert len(open_runs()) == 1 and len(lazy_streams()) == 1
    with tracer.start_as_current_span("consumer"):  # iterated under another span: still the engine's
        assert list(response.response_gen) == ["text ", "text ", "text"]
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["request", *("  " + line for line in QUERY_TREE), "consumer"]
    workflow, completion = assert_nested(spans, "invoke_workflow RetrieverQueryEngine")
    assert workflow.parent.span_id == request.get_span_context().span_id
    assert workflow.end_time > one(spans, "request").end_time  # it ended with its stream, not on return
    assert ok(workflow) and ok(completion)
    assert completion.attributes[semconv.LLMTRACE_STREAM_CHUNKS] == 3
    assert_nothing_open()


def test_streamed_query_closed_early(index, instrumentor, span_exporter):
    engine = index.as_query_engine(llm=MockLLM(max_tokens=10), streaming=True)
    response = engine.query("sky?")
    stream = response.response_gen
    assert next(stream) == "text "
    assert next(stream) == "text "
    stream.close()
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == QUERY_TREE
    workflow, completion = assert_nested(spans, "invoke_workflow RetrieverQueryEngine")
    assert ok(workflow) and ok(completion)  # the consumer gave up: not an error
    assert completion.attributes[semconv.LLMTRACE_STREAM_CHUNKS] == 2
    assert_nothing_open()


def test_streamed_query_dropped_half_way_is_freed_and_ends(index, instrumentor, span_exporter):
    """The caller drops a response it read part of: llmtrace must not keep it (nor its generator and
    open model stream) alive; collecting it closes the stream, which ends both spans as a cancellation."""
    engine = index.as_query_engine(llm=MockLLM(max_tokens=10), streaming=True)
    response = engine.query("sky?")
    stream = response.response_gen
    assert next(stream) == "text "
    refs = (weakref.ref(response), weakref.ref(stream))
    del response, stream
    gc.collect()
    assert [ref() for ref in refs] == [None, None]
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == QUERY_TREE
    workflow, completion = assert_nested(spans, "invoke_workflow RetrieverQueryEngine")
    assert ok(workflow) and ok(completion)  # the consumer gave up: not an error, not an eviction
    assert semconv.LLMTRACE_EVICTED not in workflow.attributes
    assert completion.attributes[semconv.LLMTRACE_STREAM_CHUNKS] == 1
    assert_nothing_open()


def test_streamed_query_dropped_unread_ends_as_cancelled(index, instrumentor, span_exporter):
    """The caller drops a response it never read: no model call was made and nothing will report
    one; the engine span ends as a cancellation at the next sweep (at most SWEEP_INTERVAL_S later),
    dated when the stream was freed, not by the run's expiry 600 s later."""
    engine = index.as_query_engine(llm=MockLLM(max_tokens=3), streaming=True)
    response = engine.query("sky?")
    ref = weakref.ref(response.response_gen)
    with _sweeper._lock:  # holds off the background sweep (every 5 s), which would run the queued work
        dropped_after = time.time_ns()
        del response
        gc.collect()
        dropped_before = time.time_ns()
        assert ref() is None
        # nothing ended inside the GC callback: the work waits for the map's next sweep or insert
        assert by_name(span_exporter.get_finished_spans(), "invoke_workflow RetrieverQueryEngine") == []
    time.sleep(0.01)
    open_runs().sweep()
    spans = span_exporter.get_finished_spans()
    workflow = one(spans, "invoke_workflow RetrieverQueryEngine")
    assert ok(workflow)  # the consumer gave up: not an error, not an eviction
    assert semconv.LLMTRACE_EVICTED not in workflow.attributes
    assert workflow.end_time is not None and dropped_after <= workflow.end_time <= dropped_before
    assert by_name(spans, "text_completion") == []  # the model was never called
    assert_nothing_open()


def test_streamed_query_dropped_unread_ends_at_the_next_run(index, instrumentor, span_exporter):
    """Without a sweep, the next run llmtrace starts ends it too; its own trace is untouched."""
    engine = index.as_query_engine(llm=MockLLM(max_tokens=3), streaming=True)
    dropped = engine.query("sky?")
    del dropped
    gc.collect()
    second = engine.query("sea?")
    assert list(second.response_gen) == ["text ", "text ", "text"]
    spans = span_exporter.get_finished_spans()
    first, again = by_name(spans, "invoke_workflow RetrieverQueryEngine")
    assert ok(first) and ok(again)
    assert first.end_time is not None and again.start_time is not None
    assert first.end_time <= again.start_time
    assert first.context.trace_id != again.context.trace_id
    assert one(spans, "text_completion").parent.span_id == again.context.span_id
    assert_nothing_open()


def test_async_streamed_query_dropped_unread_ends_as_cancelled(index, instrumentor, span_exporter):
    engine = index.as_query_engine(llm=MockLLM(max_tokens=3), streaming=True)

    async def main() -> None:
        response = await engine.aquery("sky?")
        del response

    asyncio.run(main())
    gc.collect()
    open_runs().sweep()
    workflow = one(span_exporter.get_finished_spans(), "invoke_workflow RetrieverQueryEngine")
    assert ok(workflow) and semconv.LLMTRACE_EVICTED not in workflow.attributes
    assert_nothing_open()


def test_streamed_query_generator_kept_response_dropped_still_waits(index, instrumentor, span_exporter):
    """Only the response is dropped: the caller still holds its stream, so the engine waits for it."""
    engine = index.as_query_engine(llm=MockLLM(max_tokens=3), streaming=True)
    response = engine.query("sky?")
    stream = response.response_gen
    del response
    gc.collect()
    open_runs().sweep()
    assert by_name(span_exporter.get_finished_spans(), "invoke_workflow RetrieverQueryEngine") == []
    assert list(stream) == ["text ", "text ", "text"]
    spans = span_exporter.get_finished_spans()
    workflow, completion = assert_nested(spans, "invoke_workflow RetrieverQueryEngine")
    assert ok(workflow) and ok(completion)
    assert_nothing_open()


def test_streamed_query_failing_mid_stream(index, instrumentor, span_exporter):
    engine = index.as_query_engine(llm=BrokenStreamLLM(), streaming=True)
    response = engine.query("sky?")
    received: list[str] = []
    with pytest.raises(ConnectionError, match="stream dropped"):
        for token in response.response_gen:
            received.append(token)
    assert received == ["text "]
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == QUERY_TREE
    workflow, completion = assert_nested(spans, "invoke_workflow RetrieverQueryEngine")
    for span in (workflow, completion):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes[semconv.ERROR_TYPE] == "connection"  # llmtrace's class for ConnectionError
    assert_nothing_open()


def test_abandoned_streamed_query_is_evicted(index, instrumentor, span_exporter):
    engine = index.as_query_engine(llm=MockLLM(max_tokens=3), streaming=True)
    response = engine.query("sky?")  # never iterated, still referenced
    assert by_name(span_exporter.get_finished_spans(), "invoke_workflow RetrieverQueryEngine") == []
    runs = open_runs()
    runs.ttl_s = 0.0
    assert runs.sweep() == 1
    workflow = one(span_exporter.get_finished_spans(), "invoke_workflow RetrieverQueryEngine")
    assert workflow.status.status_code is StatusCode.ERROR
    assert workflow.attributes[semconv.ERROR_TYPE] == semconv.ERROR_TYPE_EVICTED
    assert workflow.attributes[semconv.LLMTRACE_EVICTED] == semconv.EVICTED_TTL
    assert_nothing_open()
    runs.ttl_s = 600.0
    # the app's stream is untouched; its model call, made after the engine ended, is a root
    assert list(response.response_gen) == ["text ", "text ", "text"]
    assert one(span_exporter.get_finished_spans(), "text_completion").parent is None
    assert_nothing_open()


def test_async_streamed_query(index, instrumentor, span_exporter):
    engine = index.as_query_engine(llm=MockLLM(max_tokens=3), streaming=True)

    async def main() -> list[str]:
        response = await engine.aquery("sky?")
        return [token async for token in response.async_response_gen()]

    assert asyncio.run(main()) == ["text ", "text ", "text"]
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == QUERY_TREE  # CustomLLM's astream_complete -> stream_complete: one span
    workflow, completion = assert_nested(spans, "invoke_workflow RetrieverQueryEngine")
    assert ok(workflow) and ok(completion)
    assert_nothing_open()


def test_empty_streamed_answer_ends_on_return(instrumentor, span_exporter):
    # nothing retrieved: the synthesizer streams a fixed text without calling the model
    engine = VectorStoreIndex([], embed_model=MockEmbedding(embed_dim=8)).as_query_engine(
        llm=MockLLM(max_tokens=3), streaming=True
    )
    response = engine.query("sky?")
    assert tree(span_exporter.get_finished_spans()) == [
        "invoke_workflow RetrieverQueryEngine",
        "  retrieval SimpleVectorStore",
        "    embeddings",
    ]
    assert_nothing_open()
    assert list(response.response_gen) == ["Empty Response"]


def test_stream_consumed_inside_a_tool_call(index, instrumentor, span_exporter):
    engine = index.as_query_engine(llm=MockLLM(max_tokens=2), streaming=True)
    response = engine.query("sky?")
    tool = FunctionTool.from_defaults(fn=lambda: "".join(response.response_gen), name="read_answer")
    assert tool.call().content == "text text"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [*QUERY_TREE, "execute_tool read_answer"]  # not under the tool: the engine's
    assert_nested(spans, "invoke_workflow RetrieverQueryEngine")
    assert_nothing_open()


def test_no_stack_walk_without_pending_streams(index, instrumentor, span_exporter, stack_walks):
    engine = index.as_query_engine(llm=MockLLM(max_tokens=2))
    assert str(engine.query("sky?")) == "text text"
    assert stack_walks[0] == 0  # nothing pending: a length check per span, no stack walk
    streamed = index.as_query_engine(llm=MockLLM(max_tokens=2), streaming=True).query("sky?")
    assert list(streamed.response_gen) == ["text ", "text"]
    assert stack_walks[0] == 2  # MockLLM.stream, then stream_complete under it (same engine: kept)
    assert len(tree(span_exporter.get_finished_spans())) == 8
    assert_nothing_open()


def test_streamed_query_with_an_openai_model(
    index, instrumentor, openai_server, tracer_provider, span_exporter
):
    from llama_index.llms.openai import OpenAI
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    openai_server.replies = [{"text": "blue it is", "prompt_tokens": 30, "completion_tokens": 3}]
    llm = OpenAI(
        api_base=openai_server.base_url,
        api_key="test",
        model="gpt-4o-mini",
        max_retries=0,
        additional_kwargs={"stream_options": {"include_usage": True}},
    )
    engine = index.as_query_engine(llm=llm, streaming=True)  # a chat model: LLM.stream -> stream_chat
    http = HTTPXClientInstrumentor()
    http.instrument(tracer_provider=tracer_provider)
    tracer = trace.get_tracer("app", tracer_provider=tracer_provider)
    try:
        response = engine.query("sky?")
        with tracer.start_as_current_span("consumer"):
            assert "".join(response.response_gen) == "blue it is"
    finally:
        http.uninstrument()
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        "invoke_workflow RetrieverQueryEngine",
        "  retrieval SimpleVectorStore",
        "    embeddings",
        "  chat gpt-4o-mini",
        "consumer",
        "  POST",  # the request is made when the consumer reads the stream (docs/limitations.md)
    ]
    _, chat = assert_nested(spans, "invoke_workflow RetrieverQueryEngine", "chat gpt-4o-mini")
    assert chat.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 30
    assert chat.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    assert_nothing_open()


# ---- chat engines ------------------------------------------------------------------------
def _assert_chat_engine_trace(spans, engine_name):
    """The engine's span, its retrieval with the query embedding, and the model call under the engine
    (ended by the stream, not when the engine returned); both OK. The model span."""
    assert tree(spans) == [
        f"invoke_workflow {engine_name}",
        "  retrieval SimpleVectorStore",
        "    embeddings",
        "  text_completion",
    ]
    workflow, completion = assert_nested(spans, f"invoke_workflow {engine_name}")
    assert ok(workflow) and ok(completion)
    return completion


@pytest.mark.parametrize(
    ("mode", "engine_name"),
    [("context", "ContextChatEngine"), ("condense_plus_context", "CondensePlusContextChatEngine")],
)
def test_streamed_chat_engine(index, instrumentor, span_exporter, mode, engine_name):
    engine = index.as_chat_engine(chat_mode=mode, llm=MockLLM(max_tokens=3))
    response = engine.stream_chat("hi")  # a thread of LlamaIndex's consumes the stream
    assert list(response.response_gen) == ["text ", "text ", "text"]  # joins that thread at the end
    completion = _assert_chat_engine_trace(span_exporter.get_finished_spans(), engine_name)
    assert completion.attributes[semconv.LLMTRACE_STREAM_CHUNKS] == 3
    assert_nothing_open()


@pytest.mark.parametrize(
    ("mode", "engine_name"),
    [("context", "ContextChatEngine"), ("condense_plus_context", "CondensePlusContextChatEngine")],
)
def test_async_streamed_chat_engine(index, instrumentor, span_exporter, mode, engine_name):
    # a plain memory: the default one's SQLite worker thread outlives this test's event loop
    engine = index.as_chat_engine(
        chat_mode=mode, llm=MockLLM(max_tokens=3), memory=ChatMemoryBuffer.from_defaults()
    )

    async def main() -> list[str]:
        response = await engine.astream_chat("hi")  # a task of LlamaIndex's consumes the stream
        return [token async for token in response.async_response_gen()]

    assert asyncio.run(main()) == ["text ", "text ", "text"]
    completion = _assert_chat_engine_trace(span_exporter.get_finished_spans(), engine_name)
    assert completion.attributes[semconv.LLMTRACE_STREAM_CHUNKS] == 3  # astream -> stream: one span
    assert_nothing_open()


RETRIEVAL = ["  retrieval SimpleVectorStore", "    embeddings"]
ENGINE_TREES = {
    "simple": ["invoke_workflow SimpleChatEngine", "  chat"],
    "context": ["invoke_workflow ContextChatEngine", *RETRIEVAL, "  text_completion"],
    "condense_plus_context": [
        "invoke_workflow CondensePlusContextChatEngine",
        *RETRIEVAL,
        "  text_completion",
    ],
    "condense_question": [
        "invoke_workflow CondenseQuestionChatEngine",
        *("  " + line for line in QUERY_TREE),
    ],
}


@pytest.mark.parametrize("streamed", ["stream_chat", "astream_chat"])
@pytest.mark.parametrize("mode", ENGINE_TREES)
def test_chat_engine_stream_counts_the_model_call_once(
    index, instrumentor, span_exporter, metric_reader, mode, streamed
):
    # astream_chat: CustomLLM.astream_* -> stream_complete, made in a task of LlamaIndex's: one span
    memory = ChatMemoryBuffer.from_defaults()
    engine = index.as_chat_engine(chat_mode=mode, llm=UsageStreamLLM(), memory=memory)

    async def consume() -> list[str]:
        response = await engine.astream_chat("hi")
        return [token async for token in response.async_response_gen()]

    if streamed == "stream_chat":
        assert list(engine.stream_chat("hi").response_gen) == ["a", " b"]
    else:
        assert asyncio.run(consume()) == ["a", " b"]
    spans = span_exporter.get_finished_spans()
    expected = ENGINE_TREES[mode]
    assert tree(spans) == expected
    engine_span = one(spans, expected[0])
    parent = engine_span if mode != "condense_question" else one(spans, QUERY_TREE[0])
    model = one(spans, expected[-1].strip())
    assert is_child(model, parent)
    assert engine_span.end_time >= model.end_time  # the engine waited for its stream
    assert ok(engine_span) and ok(model)
    assert_counted_once(model, metric_reader)
    assert_nothing_open()


def test_chat_engine_over_streamed_query_engine_waits_for_it(index, instrumentor, span_exporter):
    engine = index.as_chat_engine(chat_mode="condense_question", llm=MockLLM(max_tokens=2))
    response = engine.stream_chat("hi")
    assert list(response.response_gen) == ["text ", "text"]
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        "invoke_workflow CondenseQuestionChatEngine",
        *("  " + line for line in QUERY_TREE),
    ]
    outer = one(spans, "invoke_workflow CondenseQuestionChatEngine")
    inner, _ = assert_nested(spans, "invoke_workflow RetrieverQueryEngine")
    assert is_child(inner, outer)
    assert outer.end_time >= inner.end_time
    assert_nothing_open()


# ---- concurrency -------------------------------------------------------------------------
# Each question goes to its own engine, whose MockLLM streams a different number of tokens: the
# model span under an engine must carry that engine's max_tokens and chunk count.
def _engines(index: VectorStoreIndex, questions: list[str]) -> dict[str, Any]:
    return {
        q: index.as_query_engine(llm=MockLLM(max_tokens=i + 2), streaming=True)
        for i, q in enumerate(questions)
    }


def _tokens(n: int) -> list[str]:
    return ["text "] * (n - 1) + ["text"]


def _check_pairs(spans: Any, questions: list[str]) -> None:
    workflows = by_name(spans, "invoke_workflow RetrieverQueryEngine")
    assert len(workflows) == len(questions) == len(by_name(spans, "text_completion"))
    asked = set()
    for workflow in workflows:
        question = json.loads(workflow.attributes[semconv.GEN_AI_INPUT_MESSAGES])[0]["parts"][0]["content"]
        asked.add(question)
        (completion,) = [s for s in by_name(spans, "text_completion") if is_child(s, workflow)]
        expected = questions.index(question) + 2
        assert completion.attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS] == expected  # its own model call
        assert completion.attributes[semconv.LLMTRACE_STREAM_CHUNKS] == expected
        assert completion.context.trace_id == workflow.context.trace_id
        assert workflow.end_time >= completion.end_time
        assert ok(workflow) and ok(completion)
    assert asked == set(questions)
    assert len({s.context.trace_id for s in workflows}) == len(questions)


def test_interleaved_streams_in_one_thread(index, instrumentor, span_exporter, capture):
    questions = ["sky one?", "sky two?", "sky three?"]
    engines = _engines(index, questions)
    streams: list[Iterator[str]] = [engines[q].query(q).response_gen for q in questions]
    received: list[list[str]] = [[] for _ in questions]
    for _ in range(2):  # one token of each in turn: every model call starts while others are open
        for i, stream in enumerate(streams):
            received[i].append(next(stream))
    for i, stream in enumerate(streams):
        received[i].extend(stream)
    assert received == [_tokens(2), _tokens(3), _tokens(4)]
    _check_pairs(span_exporter.get_finished_spans(), questions)
    assert_nothing_open()


def test_streams_consumed_in_other_threads(index, instrumentor, span_exporter, capture):
    # a web server: the engines run in one thread, their streams are read in others, interleaved
    questions = ["sky a?", "sky b?"]
    engines = _engines(index, questions)
    responses = [engines[q].query(q) for q in questions]
    barrier = threading.Barrier(2)
    received: dict[str, list[str]] = {}

    def consume(question: str, response: Any) -> None:
        tokens = []
        for token in response.response_gen:
            tokens.append(token)
            if len(tokens) <= 2:
                barrier.wait(timeout=5)  # both model calls run at once, token by token
        received[question] = tokens

    threads = [threading.Thread(target=consume, args=pair) for pair in zip(questions, responses, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert received == {"sky a?": _tokens(2), "sky b?": _tokens(3)}
    _check_pairs(span_exporter.get_finished_spans(), questions)
    assert_nothing_open()


def test_concurrent_async_streams(index, instrumentor, span_exporter, capture):
    questions = [f"sky {i}?" for i in range(4)]
    engines = _engines(index, questions)

    async def ask(question: str) -> list[str]:
        response = await engines[question].aquery(question)
        tokens = []
        async for token in response.async_response_gen():
            tokens.append(token)
            await asyncio.sleep(0)  # let the other tasks' streams advance
        return tokens

    async def main() -> list[list[str]]:
        return await asyncio.gather(*(ask(q) for q in questions))

    assert asyncio.run(main()) == [_tokens(n) for n in (2, 3, 4, 5)]
    spans = span_exporter.get_finished_spans()
    _check_pairs(spans, questions)
    traces: dict[int, list[Any]] = {}
    for span in spans:
        traces.setdefault(span.context.trace_id, []).append(span)
    assert all(tree(members) == QUERY_TREE for members in traces.values())
    assert_nothing_open()


# ---- never breaks the app ----------------------------------------------------------------
def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("llmtrace bug")


def _streamed_workload(index: VectorStoreIndex) -> list[Any]:
    engine = index.as_query_engine(llm=MockLLM(max_tokens=3), streaming=True)
    out: list[Any] = [list(engine.query("sky?").response_gen)]
    closed = engine.query("sky?").response_gen
    out.append(next(closed))
    closed.close()
    with pytest.raises(ConnectionError) as raised:
        list(index.as_query_engine(llm=BrokenStreamLLM(), streaming=True).query("sky?").response_gen)
    out.append(str(raised.value))
    # a plain memory: the default one's SQLite worker thread outlives this test's event loops
    chat = index.as_chat_engine(
        chat_mode="context", llm=MockLLM(max_tokens=2), memory=ChatMemoryBuffer.from_defaults()
    )
    out.append(list(chat.stream_chat("hi").response_gen))

    async def astream() -> list[str]:
        response = await engine.aquery("sky?")
        return [token async for token in response.async_response_gen()]

    out.append(asyncio.run(astream()))
    return out


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (LazyStreams, "find"),
        (LazyStreams, "remember"),
        (LazyStreams, "__len__"),
        (_runs, "response_generator"),
        (_runs.Runs, "remember_stream"),
        (_runs.Runs, "open_lazy"),
        (_runs.Runs, "forget_lazy"),
        (_span_handler, "_lazy_host"),
    ],
)
def test_internal_failure_in_lazy_stream_tracing_changes_nothing(
    index, instrumentor, monkeypatch, owner, name
):
    instrumentor.uninstrument()
    expected = _streamed_workload(index)  # without instrumentation
    instrumentor.instrument()
    monkeypatch.setattr(owner, name, _boom)
    assert _streamed_workload(index) == expected
    assert _streamed_workload(index) == expected
    assert internal_error_counts()  # it failed, and was only counted


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_forgets_the_parents_open_stream_and_traces_its_own(index, instrumentor, span_exporter):
    """A worker forked while a streamed response of the parent waits unread (gunicorn --preload):
    the child neither ends nor walks for the parent's stream, and its own queries are traced."""
    from tests.core.test_fork import in_child

    engine = index.as_query_engine(llm=MockLLM(max_tokens=3), streaming=True)
    waiting = engine.query("parent's, never read")
    assert len(open_runs()) == 1 and len(lazy_streams()) == 1

    def child() -> object:
        forgotten = [len(open_runs()), len(lazy_streams())]
        before = len(span_exporter.get_finished_spans())  # the parent's, copied by the fork
        response = engine.query("child's")
        tokens = list(response.response_gen)
        names = [s.name for s in span_exporter.get_finished_spans()[before:]]
        return [forgotten, tokens, names, len(open_runs())]

    forgotten, tokens, names, still_open = in_child(child)  # type: ignore[misc]
    assert forgotten == [0, 0]
    assert tokens == ["text ", "text ", "text"]
    assert sorted(names) == sorted(
        [
            "embeddings",
            "retrieval SimpleVectorStore",
            "text_completion",
            "invoke_workflow RetrieverQueryEngine",
        ]
    )
    assert still_open == 0
    assert len(open_runs()) == 1 and waiting is not None  # the parent's stream is still the parent's
    assert list(waiting.response_gen) == ["text ", "text ", "text"]
    assert_nothing_open()
