"""Embeddings, retrieval, query engines and chat engines over a VectorStoreIndex."""

from __future__ import annotations

import asyncio
import json

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from opentelemetry import trace

from llmtrace import semconv
from llmtrace.testing import metric_points
from tests.llama_index.conftest import by_name, is_child, one, open_runs, tree

DOCS = [Document(text="The sky is blue.", id_="sky"), Document(text="Grass is green.", id_="grass")]


@pytest.fixture
def index():
    # built before instrumenting, so its embedding calls are not part of the traces under test
    return VectorStoreIndex.from_documents(DOCS, embed_model=MockEmbedding(embed_dim=8))


def test_embeddings_span(instrumentor, span_exporter):
    vectors = MockEmbedding(embed_dim=8).get_text_embedding_batch(["a", "b", "c"])
    assert len(vectors) == 3
    span = one(span_exporter.get_finished_spans(), "embeddings")
    assert span.attributes[semconv.GEN_AI_OPERATION_NAME] == semconv.OP_EMBEDDINGS
    assert span.attributes[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 8
    assert span.attributes[semconv.LLMTRACE_EMBEDDINGS_INPUT_COUNT] == 3
    assert span.attributes[semconv.LLMTRACE_USAGE_REPORTED] is False
    assert not any(isinstance(v, tuple) and len(v) == 8 for v in span.attributes.values())  # no vectors


def test_query_engine_trace(index, instrumentor, tracer_provider, span_exporter, metric_reader):
    engine = index.as_query_engine(llm=MockLLM(max_tokens=2), similarity_top_k=2)
    tracer = trace.get_tracer("app", tracer_provider=tracer_provider)
    with tracer.start_as_current_span("request") as request:
        response = engine.query("what color is the sky?")
    assert str(response) == "text text"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        "request",
        "  invoke_workflow RetrieverQueryEngine",
        "    retrieval SimpleVectorStore",
        "      embeddings",
        "    text_completion",
    ]
    workflow = one(spans, "invoke_workflow RetrieverQueryEngine")
    assert workflow.parent.span_id == request.get_span_context().span_id
    assert workflow.attributes[semconv.GEN_AI_OPERATION_NAME] == semconv.OP_INVOKE_WORKFLOW
    assert workflow.attributes[semconv.GEN_AI_WORKFLOW_NAME] == "RetrieverQueryEngine"
    assert semconv.GEN_AI_USAGE_INPUT_TOKENS not in workflow.attributes
    retrieval = one(spans, "retrieval SimpleVectorStore")
    assert retrieval.attributes[semconv.GEN_AI_DATA_SOURCE_ID] == "SimpleVectorStore"
    assert retrieval.attributes[semconv.GEN_AI_RETRIEVAL_TOP_K] == 2
    assert retrieval.attributes[semconv.LLMTRACE_RETRIEVAL_DOCUMENT_COUNT] == 2
    documents = json.loads(retrieval.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])
    assert sorted(d["id"] for d in documents) == sorted(n.node_id for n in response.source_nodes)
    assert all(set(d) == {"id", "score"} for d in documents)  # no text without capture
    assert semconv.GEN_AI_RETRIEVAL_QUERY_TEXT not in retrieval.attributes
    [workflow_duration] = metric_points(metric_reader, semconv.METRIC_WORKFLOW_DURATION)
    assert workflow_duration.count == 1
    assert dict(workflow_duration.attributes) == {semconv.GEN_AI_WORKFLOW_NAME: "RetrieverQueryEngine"}


def test_retrieval_content_when_captured(index, instrumentor, span_exporter, capture):
    index.as_retriever(similarity_top_k=1).retrieve("sky")
    retrieval = one(span_exporter.get_finished_spans(), "retrieval SimpleVectorStore")
    assert retrieval.attributes[semconv.GEN_AI_RETRIEVAL_QUERY_TEXT] == "sky"
    [document] = json.loads(retrieval.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])
    assert document["content"] in {"The sky is blue.", "Grass is green."}


def test_chat_engine_conversation(index, instrumentor, span_exporter):
    engine = index.as_chat_engine(chat_mode="condense_plus_context", llm=MockLLM(max_tokens=2))
    assert str(engine.chat("hello")) == "text text"
    assert str(engine.chat("and then?")) == "text text"
    spans = span_exporter.get_finished_spans()
    turn = [
        "invoke_workflow CondensePlusContextChatEngine",
        "  retrieval SimpleVectorStore",
        "    embeddings",
        "  text_completion",  # MockLLM is a completion model: the engine completes a prompt
    ]
    second_turn = [
        "invoke_workflow CondensePlusContextChatEngine",
        "  text_completion",  # condenses the question with the history
        "  retrieval SimpleVectorStore",
        "    embeddings",
        "  text_completion",
    ]
    assert tree(spans) == turn + second_turn
    workflows = by_name(spans, "invoke_workflow CondensePlusContextChatEngine")
    assert len({w.context.trace_id for w in workflows}) == 2


def test_streaming_chat_engine(index, instrumentor, span_exporter):
    engine = index.as_chat_engine(chat_mode="simple", llm=MockLLM(max_tokens=3))
    response = engine.stream_chat("hi")
    assert "".join(response.response_gen) == "text text text"
    chat = one(span_exporter.get_finished_spans(), "chat")
    assert chat.attributes[semconv.LLMTRACE_STREAM_CHUNKS] == 3


def test_200_concurrent_queries(index, instrumentor, span_exporter):
    engine = index.as_query_engine(llm=MockLLM(max_tokens=1), similarity_top_k=1)

    async def main():
        return await asyncio.gather(*(engine.aquery(f"question {i}") for i in range(200)))

    results = asyncio.run(main())
    assert len(results) == 200
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 800
    traces: dict[int, list] = {}
    for span in spans:
        traces.setdefault(span.context.trace_id, []).append(span)
    assert len(traces) == 200
    for members in traces.values():
        assert tree(members) == [
            "invoke_workflow RetrieverQueryEngine",
            "  retrieval SimpleVectorStore",
            "    embeddings",
            "  text_completion",
        ]
        workflow = one(members, "invoke_workflow RetrieverQueryEngine")
        assert workflow.parent is None
        retrieval = one(members, "retrieval SimpleVectorStore")
        assert is_child(retrieval, workflow)
        assert is_child(one(members, "text_completion"), workflow)
    assert len(open_runs()) == 0


def test_streaming_chat_engine_span_ends_with_its_stream(index, instrumentor, span_exporter):
    engine = index.as_chat_engine(chat_mode="simple", llm=MockLLM(max_tokens=3))
    response = engine.stream_chat("hi")
    assert "".join(response.response_gen) == "text text text"
    thread = response.write_response_to_history_thread
    if thread is not None:
        thread.join()
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == ["invoke_workflow SimpleChatEngine", "  chat"]
    workflow, chat = one(spans, "invoke_workflow SimpleChatEngine"), one(spans, "chat")
    assert workflow.end_time >= chat.end_time  # the engine's span waited for its stream
    assert len(open_runs()) == 0


def test_streamed_query_engine_with_capture_is_not_consumed_by_tracing(
    index, instrumentor, span_exporter, capture
):
    # regression: with content capture on, the engine's output was read with str(response), which
    # consumes a StreamingResponse's generator: the caller's response_gen then yielded nothing
    engine = index.as_query_engine(llm=MockLLM(max_tokens=3), streaming=True)
    response = engine.query("sky?")
    assert list(response.response_gen) == ["text ", "text ", "text"]
    spans = span_exporter.get_finished_spans()
    workflow, completion = one(spans, "invoke_workflow RetrieverQueryEngine"), one(spans, "text_completion")
    assert is_child(completion, workflow)
    # not known when the engine returned: taken from its model stream when that stream ended
    assert (
        workflow.attributes[semconv.GEN_AI_OUTPUT_MESSAGES]
        == completion.attributes[semconv.GEN_AI_OUTPUT_MESSAGES]
    )
    assert len(open_runs()) == 0
