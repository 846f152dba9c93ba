"""``llmtrace.dimensions()`` around a streamed engine call whose model call starts only when the
response is iterated, after the block (a web framework sending a streaming body does so): the model
call is the engine's, made for the request the dimensions describe."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding

import llmtrace
from llmtrace import semconv
from llmtrace.testing import metric_points
from tests.llama_index.conftest import UsageStreamLLM, is_child, one, open_runs, tree

DIMENSION = semconv.LLMTRACE_DIMENSION_PREFIX + "tenant"


@pytest.fixture
def index() -> VectorStoreIndex:
    docs = [Document(text="The sky is blue.", id_="sky")]
    return VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8))


def _check(spans, records, metric_reader) -> None:
    assert tree(spans) == [
        "invoke_workflow RetrieverQueryEngine",
        "  retrieval SimpleVectorStore",
        "    embeddings",
        "  text_completion",
    ]
    engine = one(spans, "invoke_workflow RetrieverQueryEngine")
    model = one(spans, "text_completion")
    assert is_child(model, engine)
    assert model.attributes[DIMENSION] == "acme"
    assert one(spans, "embeddings").attributes[DIMENSION] == "acme"  # made inside the block
    completion = [r for r in records if r.operation == "text_completion"]
    assert [(r.input_tokens, r.output_tokens, r.dimensions) for r in completion] == [
        (5, 2, {"tenant": "acme"})
    ]
    tokens = [
        p
        for p in metric_points(metric_reader, semconv.METRIC_CLIENT_TOKEN_USAGE)
        if p.attributes[semconv.GEN_AI_OPERATION_NAME] == "text_completion"
    ]
    assert sorted(
        (p.attributes[semconv.GEN_AI_TOKEN_TYPE], p.attributes[DIMENSION], p.sum) for p in tokens
    ) == [
        (semconv.TOKEN_TYPE_INPUT, "acme", 5),
        (semconv.TOKEN_TYPE_OUTPUT, "acme", 2),
    ]
    assert len(open_runs()) == 0


def test_streamed_query_iterated_after_the_block_keeps_its_dimensions(
    index, instrumentor, span_exporter, metric_reader, records
):
    with llmtrace.dimensions(tenant="acme"):
        response = index.as_query_engine(llm=UsageStreamLLM(), streaming=True).query("sky?")
    assert list(response.response_gen) == ["a", " b"]
    _check(span_exporter.get_finished_spans(), records, metric_reader)


def test_async_streamed_query_iterated_in_another_task_keeps_its_dimensions(
    index, instrumentor, span_exporter, metric_reader, records
):
    engine = index.as_query_engine(llm=UsageStreamLLM(), streaming=True)

    async def main() -> list[str]:
        with llmtrace.dimensions(tenant="acme"):
            response = await engine.aquery("sky?")

        async def send_body() -> list[str]:  # another task, outside the block
            return [token async for token in response.async_response_gen()]

        return await asyncio.create_task(send_body())

    assert asyncio.run(main()) == ["a", " b"]
    _check(span_exporter.get_finished_spans(), records, metric_reader)


def test_dimensions_of_the_consumer_win_over_the_engines(
    index, instrumentor, span_exporter, metric_reader, records
):
    with llmtrace.dimensions(tenant="acme", feature="search"):
        response = index.as_query_engine(llm=UsageStreamLLM(), streaming=True).query("sky?")
    with llmtrace.dimensions(tenant="other"):
        assert list(response.response_gen) == ["a", " b"]
    (record,) = [r for r in records if r.operation == "text_completion"]
    assert record.dimensions == {"tenant": "other", "feature": "search"}
    model = one(span_exporter.get_finished_spans(), "text_completion")
    assert model.attributes[DIMENSION] == "other"
    assert model.attributes[semconv.LLMTRACE_DIMENSION_PREFIX + "feature"] == "search"
