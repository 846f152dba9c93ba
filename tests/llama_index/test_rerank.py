"""Rerank spans from node postprocessors that report ``ReRankStartEvent``/``ReRankEndEvent``."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from opentelemetry.trace import SpanKind, StatusCode

from llmtrace import semconv
from tests.llama_index.conftest import is_child, one, open_runs, tree

dispatcher = get_dispatcher(__name__)

DOCS = [
    Document(text="The sky is blue.", id_="sky"),
    Document(text="Grass is green.", id_="grass"),
    Document(text="The sea is blue too.", id_="sea"),
]


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


class WordOverlapRerank(BaseNodePostprocessor):
    """Scores nodes by words shared with the query; reports its work like LlamaIndex's rerankers
    (``StructuredLLMRerank``, the Cohere and SentenceTransformer packages) do."""

    top_n: int = 2
    model: str = "word-overlap-v1"
    fail: bool = False
    report_end: bool = True

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        dispatcher.event(
            ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n, model_name=self.model)
        )
        if self.fail:
            raise RuntimeError("reranker down")
        words = _words(query_bundle.query_str if query_bundle else "")
        scored = [
            NodeWithScore(node=n.node, score=float(len(words & _words(n.node.get_content())))) for n in nodes
        ]
        kept = sorted(scored, key=lambda n: (-(n.score or 0.0), n.node.node_id))[: self.top_n]
        if self.report_end:
            dispatcher.event(ReRankEndEvent(nodes=kept))
        return kept


class CohereRerank(WordOverlapRerank):
    """A class named like a provider's reranker (CLIENT span with the provider)."""


@pytest.fixture
def index() -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(DOCS, embed_model=MockEmbedding(embed_dim=8))


def nodes(*texts: str) -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=0.5) for i, t in enumerate(texts)]


def test_query_engine_with_reranker(index, instrumentor, span_exporter):
    engine = index.as_query_engine(
        llm=MockLLM(max_tokens=2), similarity_top_k=3, node_postprocessors=[WordOverlapRerank(top_n=2)]
    )
    response = engine.query("what is blue?")
    assert str(response) == "text text"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        "invoke_workflow RetrieverQueryEngine",
        "  retrieval SimpleVectorStore",
        "    embeddings",
        "  rerank word-overlap-v1",
        "  text_completion",
    ]
    workflow = one(spans, "invoke_workflow RetrieverQueryEngine")
    rerank = one(spans, "rerank word-overlap-v1")
    assert is_child(rerank, workflow)
    assert rerank.kind is SpanKind.INTERNAL  # an in-process reranker
    assert rerank.status.status_code is StatusCode.UNSET
    assert dict(rerank.attributes) == {
        semconv.GEN_AI_OPERATION_NAME: semconv.OP_RERANK,
        semconv.GEN_AI_REQUEST_MODEL: "word-overlap-v1",
        semconv.LLMTRACE_RERANK_TOP_N: 2,
        semconv.LLMTRACE_RETRIEVAL_DOCUMENT_COUNT: 2,
        semconv.GEN_AI_RETRIEVAL_DOCUMENTS: rerank.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS],
    }
    documents = json.loads(rerank.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])
    kept = {n.node.node_id: n.score for n in response.source_nodes}
    assert documents == [{"id": i, "score": s} for i, s in kept.items()]  # the kept nodes, new scores
    assert sorted(kept.values()) == [2.0, 2.0]  # "is" and "blue": the sky and the sea, not the grass
    texts = {n.node.get_content() for n in response.source_nodes}
    assert texts == {"The sky is blue.", "The sea is blue too."}
    assert len(open_runs()) == 0


def test_rerank_content_when_captured(instrumentor, span_exporter, capture):
    WordOverlapRerank(top_n=1).postprocess_nodes(nodes("grass is green", "sky is blue"), query_str="blue sky")
    rerank = one(span_exporter.get_finished_spans(), "rerank word-overlap-v1")
    assert rerank.parent is None  # a reranker called on its own still gets its span
    assert rerank.attributes[semconv.GEN_AI_RETRIEVAL_QUERY_TEXT] == "blue sky"
    assert json.loads(rerank.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS]) == [
        {"id": "n1", "score": 2.0, "content": "sky is blue"}
    ]


def test_rerank_without_capture_has_no_text(instrumentor, span_exporter):
    WordOverlapRerank(top_n=1).postprocess_nodes(nodes("grass is green", "sky is blue"), query_str="blue sky")
    rerank = one(span_exporter.get_finished_spans(), "rerank word-overlap-v1")
    assert semconv.GEN_AI_RETRIEVAL_QUERY_TEXT not in rerank.attributes
    assert json.loads(rerank.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS]) == [{"id": "n1", "score": 2.0}]


def test_provider_reranker_is_a_client_span(instrumentor, span_exporter):
    CohereRerank(model="rerank-v3.5", top_n=1).postprocess_nodes(nodes("a", "b"), query_str="a")
    rerank = one(span_exporter.get_finished_spans(), "rerank rerank-v3.5")
    assert rerank.kind is SpanKind.CLIENT
    assert rerank.attributes[semconv.GEN_AI_PROVIDER_NAME] == semconv.PROVIDER_COHERE


def test_rerank_without_end_event_ends_with_the_postprocessor(instrumentor, span_exporter):
    # StructuredLLMRerank returns [] early without a ReRankEndEvent for an empty node list
    result = WordOverlapRerank(report_end=False, top_n=1).postprocess_nodes(nodes("x y", "y"), query_str="y")
    rerank = one(span_exporter.get_finished_spans(), "rerank word-overlap-v1")
    assert json.loads(rerank.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS]) == [
        {"id": result[0].node.node_id, "score": 1.0}
    ]
    assert len(open_runs()) == 0


def test_failing_reranker_sets_error(index, instrumentor, span_exporter):
    engine = index.as_query_engine(
        llm=MockLLM(max_tokens=1), node_postprocessors=[WordOverlapRerank(fail=True)]
    )
    with pytest.raises(RuntimeError, match="reranker down"):
        engine.query("blue?")
    spans = span_exporter.get_finished_spans()
    rerank = one(spans, "rerank word-overlap-v1")
    assert rerank.status.status_code is StatusCode.ERROR
    assert rerank.attributes[semconv.ERROR_TYPE] == "RuntimeError"
    assert one(spans, "invoke_workflow RetrieverQueryEngine").status.status_code is StatusCode.ERROR
    assert len(open_runs()) == 0


def test_plain_postprocessor_gets_no_span(index, instrumentor, span_exporter):
    engine = index.as_query_engine(
        llm=MockLLM(max_tokens=1), node_postprocessors=[SimilarityPostprocessor(similarity_cutoff=-1.0)]
    )
    engine.query("blue?")
    assert [s.name for s in span_exporter.get_finished_spans() if s.name.startswith("rerank")] == []
    assert len(open_runs()) == 0


def test_async_query_with_reranker(index, instrumentor, span_exporter):
    engine = index.as_query_engine(
        llm=MockLLM(max_tokens=1), similarity_top_k=3, node_postprocessors=[WordOverlapRerank(top_n=1)]
    )

    async def main() -> list[Any]:
        return await asyncio.gather(*(engine.aquery(f"blue {i}") for i in range(5)))

    assert len(asyncio.run(main())) == 5
    spans = span_exporter.get_finished_spans()
    traces: dict[int, list[Any]] = {}
    for span in spans:
        traces.setdefault(span.context.trace_id, []).append(span)
    assert len(traces) == 5
    for members in traces.values():
        assert tree(members) == [
            "invoke_workflow RetrieverQueryEngine",
            "  retrieval SimpleVectorStore",
            "    embeddings",
            "  rerank word-overlap-v1",
            "  text_completion",
        ]
    assert len(open_runs()) == 0


class AsyncOverrideRerank(BaseNodePostprocessor):
    """Reports its rerank from an async ``_apostprocess_nodes`` override, as ``StructuredLLMRerank``
    does: no dispatcher span of its own, so its events carry the enclosing span's id."""

    top_n: int = 1
    model: str = "async-rerank"
    llm: Any = None
    pause: int = 0

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        raise NotImplementedError

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        dispatcher.event(
            ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n, model_name=self.model)
        )
        await asyncio.sleep(0)  # the other rerank starts
        await self.llm.acomplete("score these")  # a call made by this rerank
        for _ in range(self.pause):
            await asyncio.sleep(0)
        kept = nodes[: self.top_n]
        dispatcher.event(ReRankEndEvent(nodes=kept))
        return kept


class TwoReranks(CustomQueryEngine):
    """Runs two reranks concurrently inside its own dispatcher span."""

    first: AsyncOverrideRerank
    second: AsyncOverrideRerank

    def custom_query(self, query_str: str) -> str:
        raise NotImplementedError

    async def acustom_query(self, query_str: str) -> str:
        candidates = nodes("a", "b", "c")
        kept = await asyncio.gather(
            *(r.apostprocess_nodes(candidates, query_str=query_str) for r in (self.first, self.second))
        )
        return " | ".join(",".join(n.node.node_id for n in k) for k in kept)


def test_concurrent_reranks_in_one_span_end_their_own_spans(instrumentor, span_exporter):
    engine = TwoReranks(
        first=AsyncOverrideRerank(model="rerank-a", top_n=1, llm=MockLLM(max_tokens=1), pause=0),
        second=AsyncOverrideRerank(model="rerank-b", top_n=2, llm=MockLLM(max_tokens=2), pause=3),
    )
    assert str(asyncio.run(engine.aquery("which?"))) == "n0 | n0,n1"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        "invoke_workflow TwoReranks",
        "  rerank rerank-a",
        "    text_completion",
        "  rerank rerank-b",
        "    text_completion",
    ]
    workflow = one(spans, "invoke_workflow TwoReranks")
    first, second = one(spans, "rerank rerank-a"), one(spans, "rerank rerank-b")
    assert is_child(first, workflow) and is_child(second, workflow)
    assert second.start_time < first.end_time < second.end_time  # they overlapped; each ended itself
    for rerank, top_n in ((first, 1), (second, 2)):
        assert rerank.status.status_code is StatusCode.UNSET
        assert rerank.attributes[semconv.LLMTRACE_RERANK_TOP_N] == top_n
        assert rerank.attributes[semconv.LLMTRACE_RETRIEVAL_DOCUMENT_COUNT] == top_n  # its own end event
        (completion,) = [s for s in spans if s.name == "text_completion" and is_child(s, rerank)]
        assert completion.attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS] == top_n  # its own model call
    assert len(open_runs()) == 0
