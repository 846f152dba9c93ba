"""Embeddings spans from the instrumentor: LangChain's embedding models fire no callbacks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import llmtrace_langchain._embeddings as embeddings_module
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings, FakeEmbeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langchain_core.vectorstores import InMemoryVectorStore, VectorStoreRetriever
from langgraph.graph import END, START, StateGraph
from llmtrace_langchain import LangChainInstrumentor, LLMTraceCallbackHandler
from llmtrace_langchain import _extract as extract
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from typing_extensions import TypedDict

from llmtrace import semconv
from llmtrace._content import CaptureMode, ContentPolicy
from llmtrace._handler import TelemetryHandler
from llmtrace._safety import internal_error_counts, reset_internal_errors
from llmtrace.testing import metric_points

from .conftest import attrs, tree

DOCS = [
    Document(page_content="Paris is in France", id="d1"),
    Document(page_content="Rome is in Italy", id="d2"),
]


def fake_attrs(dimension: int, inputs: int, provider: str = "deterministicfake") -> dict[str, Any]:
    """Every attribute of the span of a fake model (no model name, no server, no usage reported)."""
    return {
        semconv.GEN_AI_OPERATION_NAME: semconv.OP_EMBEDDINGS,
        semconv.GEN_AI_PROVIDER_NAME: provider,
        semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT: dimension,
        semconv.LLMTRACE_EMBEDDINGS_INPUT_COUNT: inputs,
        semconv.LLMTRACE_FRAMEWORK: "langchain",
        semconv.LLMTRACE_USAGE_REPORTED: False,
    }


def only(spans: tuple[ReadableSpan, ...]) -> ReadableSpan:
    (span,) = spans
    return span


def check_ok(span: ReadableSpan, name: str = "embeddings") -> None:
    assert span.name == name
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None


class AcmeEmbeddings(Embeddings):
    """A provider's model as integrations write them: a model field, both sync methods."""

    def __init__(self, model: str = "acme-embed-1", size: int = 5) -> None:
        self.model = model
        self.size = size
        self.calls: list[list[str]] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [[float(len(t))] * self.size for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class CachingEmbeddings(Embeddings):
    """A wrapper in the manner of CacheBackedEmbeddings: embeds only what it has not seen."""

    def __init__(self, underlying: Embeddings) -> None:
        self.underlying = underlying
        self.cache: dict[str, list[float]] = {}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        missing = [t for t in texts if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.underlying.embed_documents(missing), strict=True))
        return [self.cache[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.underlying.embed_query(text)


class QuotaExceeded(Exception):
    pass


class BrokenEmbeddings(DeterministicFakeEmbedding):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise QuotaExceeded(f"quota exceeded for {len(texts)} texts")


# ---- direct calls ---------------------------------------------------------------------------------------
def test_embed_documents_and_query(instrumented, span_exporter, metric_reader):
    model = DeterministicFakeEmbedding(size=8)
    vectors = model.embed_documents(["alpha", "beta", "gamma"])
    assert len(vectors) == 3 and all(len(v) == 8 for v in vectors)
    span = only(span_exporter.get_finished_spans())
    check_ok(span)
    assert attrs(span) == fake_attrs(8, 3)
    span_exporter.clear()

    assert model.embed_query("alpha") == vectors[0]
    span = only(span_exporter.get_finished_spans())
    check_ok(span)
    assert attrs(span) == fake_attrs(8, 1)
    # the duration metric, from the invocation's usage record
    points = metric_points(metric_reader, semconv.METRIC_CLIENT_OPERATION_DURATION)
    assert [(dict(p.attributes), p.count) for p in points] == [
        (
            {
                semconv.GEN_AI_OPERATION_NAME: semconv.OP_EMBEDDINGS,
                semconv.GEN_AI_PROVIDER_NAME: "deterministicfake",
            },
            2,
        )
    ]
    assert metric_points(metric_reader, semconv.METRIC_CLIENT_TOKEN_USAGE) == []


def test_fake_embeddings_and_a_model_with_a_model_name(instrumented, span_exporter):
    assert len(FakeEmbeddings(size=4).embed_query("x")) == 4
    assert attrs(only(span_exporter.get_finished_spans())) == fake_attrs(4, 1, provider="fake")
    span_exporter.clear()
    assert AcmeEmbeddings().embed_documents(["ab", "abc"]) == [[2.0] * 5, [3.0] * 5]
    span = only(span_exporter.get_finished_spans())
    check_ok(span, "embeddings acme-embed-1")
    assert attrs(span) == {**fake_attrs(5, 2, provider="acme"), semconv.GEN_AI_REQUEST_MODEL: "acme-embed-1"}


def test_vectors_and_texts_are_never_recorded(instrumented, span_exporter, content_capture):
    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_AND_EVENT)
    AcmeEmbeddings().embed_documents(["a secret sentence"])
    values = [str(v) for v in attrs(only(span_exporter.get_finished_spans())).values()]
    assert not any("secret" in v for v in values)
    assert attrs(only(span_exporter.get_finished_spans())) == {
        **fake_attrs(5, 1, provider="acme"),
        semconv.GEN_AI_REQUEST_MODEL: "acme-embed-1",
    }


def test_subclass_defined_after_instrument(instrumented, span_exporter):
    class Later(DeterministicFakeEmbedding):
        model: str = "later-1"

        def embed_query(self, text: str) -> list[float]:
            return super().embed_query(text.lower())  # the parent's (wrapped) method: still one span

    class Inheriting(Later):
        pass

    expected = DeterministicFakeEmbedding(size=6).embed_query("abc")
    span_exporter.clear()
    assert Later(size=6).embed_query("ABC") == expected
    span = only(span_exporter.get_finished_spans())
    check_ok(span, "embeddings later-1")
    assert attrs(span) == {**fake_attrs(6, 1, provider="later"), semconv.GEN_AI_REQUEST_MODEL: "later-1"}
    span_exporter.clear()
    assert Inheriting(size=6).embed_query("ABC") == expected
    assert attrs(only(span_exporter.get_finished_spans())) == {
        **fake_attrs(6, 1, provider="inheriting"),
        semconv.GEN_AI_REQUEST_MODEL: "later-1",
    }
    assert "embed_query" in vars(Later) and "embed_query" not in vars(Inheriting)


def test_methods_from_a_mixin_outside_the_hierarchy(instrumented, span_exporter):
    class Mixin:
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[1.0, 2.0] for _ in texts]

        def embed_query(self, text: str) -> list[float]:
            return [1.0, 2.0]

    class Mixed(Mixin, Embeddings):
        pass

    assert Mixed().embed_documents(["a"]) == [[1.0, 2.0]]
    assert attrs(only(span_exporter.get_finished_spans())) == fake_attrs(2, 1, provider="mixed")
    assert Mixin().embed_query("plain use of the mixin") == [1.0, 2.0]  # not an embeddings span
    assert len(span_exporter.get_finished_spans()) == 1


def test_a_wrapper_and_the_model_it_wraps_make_one_span(instrumented, span_exporter):
    inner = AcmeEmbeddings(model="acme-embed-2", size=3)
    cached = CachingEmbeddings(inner)
    assert cached.embed_documents(["a", "bb"]) == [[1.0] * 3, [2.0] * 3]
    assert cached.embed_documents(["a", "bb", "ccc"]) == [[1.0] * 3, [2.0] * 3, [3.0] * 3]
    assert inner.calls == [["a", "bb"], ["ccc"]]
    first, second = span_exporter.get_finished_spans()
    for span, count in ((first, 2), (second, 3)):
        check_ok(span, "embeddings acme-embed-2")  # the wrapper names no model: the wrapped one's
        assert attrs(span) == {
            **fake_attrs(3, count, provider="acme"),
            semconv.GEN_AI_REQUEST_MODEL: "acme-embed-2",
        }


# ---- nesting ---------------------------------------------------------------------------------------------
def store() -> InMemoryVectorStore:
    s = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    s.add_documents(DOCS)
    return s


RETRIEVAL_TREE = [
    ("embeddings", "retrieval InMemoryVectorStore"),
    ("retrieval InMemoryVectorStore", "invoke_workflow RunnableSequence"),
    ("invoke_workflow RunnableSequence", None),
]


def check_retrieval_trace(spans: tuple[ReadableSpan, ...]) -> None:
    assert tree(spans) == RETRIEVAL_TREE
    assert len({s.context.trace_id for s in spans}) == 1
    embedding = spans[0]
    assert embedding.kind is SpanKind.CLIENT
    assert embedding.status.status_code is StatusCode.UNSET
    assert attrs(embedding) == fake_attrs(8, 1)
    assert attrs(spans[1])[semconv.LLMTRACE_RETRIEVAL_DOCUMENT_COUNT] == 1


def test_retriever_query_embedding_nests_under_the_retrieval_span(instrumented, span_exporter):
    s = store()
    build = only(span_exporter.get_finished_spans())  # add_documents: outside any run
    check_ok(build)
    assert attrs(build) == fake_attrs(8, 2)
    span_exporter.clear()
    chain = RunnableLambda(lambda q: q) | s.as_retriever(search_kwargs={"k": 1})
    assert [d.id for d in chain.invoke("Paris is in France")] == ["d1"]
    check_retrieval_trace(span_exporter.get_finished_spans())


async def test_async_retriever_query_embedding_nests_under_the_retrieval_span(instrumented, span_exporter):
    s = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    await s.aadd_documents(DOCS)
    assert attrs(only(span_exporter.get_finished_spans())) == fake_attrs(8, 2)
    span_exporter.clear()
    chain = RunnableLambda(lambda q: q) | s.as_retriever(search_kwargs={"k": 1})
    assert [d.id for d in await chain.ainvoke("Rome is in Italy")] == ["d2"]
    check_retrieval_trace(span_exporter.get_finished_spans())


def test_retriever_under_a_hand_registered_handler(instrumented, tracer_provider, span_exporter):
    s = store()
    span_exporter.clear()
    mine = LLMTraceCallbackHandler(tracer_provider=tracer_provider)
    chain = RunnableLambda(lambda q: q) | s.as_retriever(search_kwargs={"k": 1})
    chain.invoke("Paris", config={"callbacks": [mine]})
    check_retrieval_trace(span_exporter.get_finished_spans())


def test_embedding_in_a_chain_step_and_in_a_tool_nests_under_the_run(instrumented, span_exporter):
    model = AcmeEmbeddings(size=2)

    @tool
    def embed(text: str) -> int:
        """Embed a text."""
        return len(model.embed_query(text))

    chain = RunnableLambda(lambda q: model.embed_documents([q, q])) | RunnableLambda(
        lambda vectors: embed.invoke({"text": "x"})
    )
    assert chain.invoke("q") == 2
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        ("embeddings acme-embed-1", "invoke_workflow RunnableSequence"),  # the lambda is plumbing
        ("embeddings acme-embed-1", "execute_tool embed"),
        ("execute_tool embed", "invoke_workflow RunnableSequence"),
        ("invoke_workflow RunnableSequence", None),
    ]
    assert [attrs(s)[semconv.LLMTRACE_EMBEDDINGS_INPUT_COUNT] for s in spans[:2]] == [2, 1]


class GraphState(TypedDict):
    text: str
    size: int


async def test_embedding_in_a_graph_node_nests_under_the_graph(instrumented, span_exporter):
    model = AcmeEmbeddings(size=7)

    def embed(state: GraphState) -> dict[str, int]:
        return {"size": len(model.embed_query(state["text"]))}

    async def aembed(state: GraphState) -> dict[str, int]:
        return {"size": len(await model.aembed_query(state["text"]))}

    for node in (embed, aembed):
        graph = StateGraph(GraphState)
        graph.add_node("embed", node)
        graph.add_edge(START, "embed")
        graph.add_edge("embed", END)
        app = graph.compile(name="indexer")
        span_exporter.clear()
        assert (await app.ainvoke({"text": "x", "size": 0}))["size"] == 7
        assert tree(span_exporter.get_finished_spans()) == [
            ("embeddings acme-embed-1", "invoke_agent indexer"),
            ("invoke_agent indexer", None),
        ]


def test_embedding_under_the_callers_span(instrumented, tracer_provider, span_exporter):
    with tracer_provider.get_tracer("app").start_as_current_span("request"):
        AcmeEmbeddings().embed_query("x")
    assert tree(span_exporter.get_finished_spans()) == [
        ("embeddings acme-embed-1", "request"),
        ("request", None),
    ]


# ---- async ------------------------------------------------------------------------------------------------
class NativeAsync(AcmeEmbeddings):
    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        await asyncio.sleep(0)
        return [[0.5] * self.size for _ in texts]

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.aembed_documents([text]))[0]


async def test_async_methods(instrumented, span_exporter):
    # the default aembed_* runs the sync method in a thread: one call, one span
    assert await AcmeEmbeddings(size=2).aembed_documents(["a", "bb"]) == [[1.0, 1.0], [2.0, 2.0]]
    assert await DeterministicFakeEmbedding(size=3).aembed_query("q") == DeterministicFakeEmbedding(
        size=3
    ).embed_query("q")
    assert await NativeAsync(size=4).aembed_query("q") == [0.5] * 4
    spans = span_exporter.get_finished_spans()
    assert [(s.name, s.parent) for s in spans] == [
        ("embeddings acme-embed-1", None),
        ("embeddings", None),
        ("embeddings", None),
        ("embeddings acme-embed-1", None),
    ]
    assert attrs(spans[0]) == {
        **fake_attrs(2, 2, provider="acme"),
        semconv.GEN_AI_REQUEST_MODEL: "acme-embed-1",
    }
    assert attrs(spans[1]) == fake_attrs(3, 1)
    assert attrs(spans[3]) == {
        **fake_attrs(4, 1, provider="nativeasync"),
        semconv.GEN_AI_REQUEST_MODEL: "acme-embed-1",
    }


async def test_concurrent_async_calls_each_get_their_span(instrumented, span_exporter):
    model = NativeAsync(size=2)
    results = await asyncio.gather(*(model.aembed_documents(["t"] * n) for n in range(1, 6)))
    assert [len(r) for r in results] == [1, 2, 3, 4, 5]
    spans = span_exporter.get_finished_spans()
    assert sorted(attrs(s)[semconv.LLMTRACE_EMBEDDINGS_INPUT_COUNT] for s in spans) == [1, 2, 3, 4, 5]
    assert all(s.parent is None for s in spans)


# ---- errors ---------------------------------------------------------------------------------------------
def test_error_is_recorded_and_propagates_unchanged(instrumented, span_exporter, metric_reader):
    model = BrokenEmbeddings(size=4)
    with pytest.raises(QuotaExceeded) as raised:
        model.embed_documents(["a", "b"])
    assert str(raised.value) == "quota exceeded for 2 texts"
    span = only(span_exporter.get_finished_spans())
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is None  # an exception's message is content: off by default
    error_type = f"{__name__}.QuotaExceeded"
    assert attrs(span) == {
        semconv.GEN_AI_OPERATION_NAME: semconv.OP_EMBEDDINGS,
        semconv.GEN_AI_PROVIDER_NAME: "broken",
        semconv.LLMTRACE_EMBEDDINGS_INPUT_COUNT: 2,
        semconv.LLMTRACE_FRAMEWORK: "langchain",
        semconv.LLMTRACE_USAGE_REPORTED: False,
        semconv.ERROR_TYPE: error_type,
    }
    assert [e.name for e in span.events] == [semconv.EVENT_EXCEPTION]
    (point,) = metric_points(metric_reader, semconv.METRIC_CLIENT_OPERATION_DURATION)
    assert dict(point.attributes)[semconv.ERROR_TYPE] == error_type


async def test_async_error_propagates_unchanged(instrumented, span_exporter):
    with pytest.raises(QuotaExceeded, match="quota exceeded for 1 texts"):
        await BrokenEmbeddings(size=4).aembed_documents(["a"])  # the default: embed_documents in a thread
    span = only(span_exporter.get_finished_spans())
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[semconv.ERROR_TYPE] == f"{__name__}.QuotaExceeded"


async def test_cancelled_call(instrumented, span_exporter):
    class Slow(AcmeEmbeddings):
        async def aembed_query(self, text: str) -> list[float]:
            await asyncio.sleep(10)
            return []

    task = asyncio.create_task(Slow().aembed_query("q"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    span = only(span_exporter.get_finished_spans())
    assert attrs(span)[semconv.ERROR_TYPE] == "cancelled"


# ---- instrumentor lifecycle -------------------------------------------------------------------------------
def own(cls: type, name: str) -> Any:
    return vars(cls).get(name)


PATCHED = [
    (DeterministicFakeEmbedding, "embed_documents"),
    (DeterministicFakeEmbedding, "embed_query"),
    (FakeEmbeddings, "embed_query"),
    (Embeddings, "aembed_documents"),
    (Embeddings, "aembed_query"),
    (AcmeEmbeddings, "embed_documents"),
    (VectorStoreRetriever, "_get_relevant_documents"),
    (VectorStoreRetriever, "_aget_relevant_documents"),
    (BaseRetriever, "_aget_relevant_documents"),
]


def test_uninstrument_restores_every_class(tracer_provider, span_exporter):
    originals = {(cls, name): own(cls, name) for cls, name in PATCHED}
    hook = own(BaseRetriever, "__init_subclass__")
    assert own(Embeddings, "__init_subclass__") is None
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        for (cls, name), original in originals.items():
            assert own(cls, name) is not original, (cls, name)
            assert own(cls, name).__wrapped__ is original
        assert own(Embeddings, "embed_documents") is not None  # abstract: left alone
        assert not hasattr(own(Embeddings, "embed_documents"), "__wrapped__")

        class During(DeterministicFakeEmbedding):
            def embed_query(self, text: str) -> list[float]:
                return [1.0]

        during = During.__dict__["embed_query"]
        assert during.__wrapped__.__qualname__.endswith("During.embed_query")
        During(size=1).embed_query("x")
        assert len(span_exporter.get_finished_spans()) == 1
    finally:
        instrumentor.uninstrument()
    for (cls, name), original in originals.items():
        assert own(cls, name) is original, (cls, name)
    assert own(During, "embed_query") is during.__wrapped__
    assert own(Embeddings, "__init_subclass__") is None
    assert own(BaseRetriever, "__init_subclass__") is hook
    assert embeddings_module.patched_count() == 0
    span_exporter.clear()

    class After(DeterministicFakeEmbedding):
        def embed_query(self, text: str) -> list[float]:
            return [2.0]

    assert not hasattr(own(After, "embed_query"), "__wrapped__")
    During(size=1).embed_query("x")
    After(size=1).embed_query("x")
    DeterministicFakeEmbedding(size=2).embed_documents(["x"])
    RunnableLambda(lambda q: q).pipe(store().as_retriever()).invoke("Paris")
    assert span_exporter.get_finished_spans() == ()


def test_a_retriever_defined_while_instrumented_keeps_langchains_checks(instrumented):
    class OldStyle(BaseRetriever):
        def _get_relevant_documents(self, query: str) -> list[Document]:  # type: ignore[override]
            return [Document(page_content=query)]

    class NewStyle(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return [Document(page_content=query)]

    assert (OldStyle._new_arg_supported, NewStyle._new_arg_supported) == (False, True)
    assert OldStyle().invoke("a")[0].page_content == "a"
    assert NewStyle().invoke("b")[0].page_content == "b"


async def test_a_retriever_defined_while_instrumented_async(instrumented, span_exporter):
    class NewStyle(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            AcmeEmbeddings().embed_query(query)
            return [Document(page_content=query)]

    assert (await NewStyle().ainvoke("b"))[0].page_content == "b"
    assert tree(span_exporter.get_finished_spans()) == [
        ("embeddings acme-embed-1", "retrieval newstyle"),  # LangChain's ls_retriever_name
        ("retrieval newstyle", None),
    ]


def test_instrument_twice_gives_one_span_per_call(tracer_provider, span_exporter):
    first, second = LangChainInstrumentor(), LangChainInstrumentor()
    first.instrument(tracer_provider=tracer_provider)
    count = embeddings_module.patched_count()
    try:
        second.instrument(tracer_provider=tracer_provider)
        embeddings_module.install(LangChainInstrumentor._handler)  # even past the instrumentor's guard
        assert embeddings_module.patched_count() == count
        DeterministicFakeEmbedding(size=2).embed_documents(["a"])
        assert len(span_exporter.get_finished_spans()) == 1
    finally:
        first.uninstrument()
    assert own(DeterministicFakeEmbedding, "embed_documents").__qualname__ == (
        "DeterministicFakeEmbedding.embed_documents"
    )
    assert not hasattr(own(DeterministicFakeEmbedding, "embed_documents"), "__wrapped__")


# ---- llmtrace failures never reach the caller ------------------------------------------------------------
def test_internal_failure_returns_the_same_vectors(instrumented, span_exporter, monkeypatch, caplog):
    model = DeterministicFakeEmbedding(size=8)
    expected_docs = model.embed_documents(["a", "b"])
    expected_query = model.embed_query("a")
    span_exporter.clear()

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("llmtrace bug")

    monkeypatch.setattr(TelemetryHandler, "start_embeddings", explode)
    reset_internal_errors()
    with caplog.at_level(logging.ERROR, logger="llmtrace"):
        for _ in range(2):
            assert model.embed_documents(["a", "b"]) == expected_docs
            assert model.embed_query("a") == expected_query
            assert asyncio.run(model.aembed_query("a")) == expected_query
            with pytest.raises(QuotaExceeded):
                BrokenEmbeddings(size=2).embed_documents(["a"])
    assert internal_error_counts() == {f"{embeddings_module.__name__}.embeddings_start": 10}
    logged = [r for r in caplog.records if r.name == "llmtrace" and "internal error" in r.getMessage()]
    assert len(logged) == 1
    assert span_exporter.get_finished_spans() == ()


def test_internal_failure_in_the_retrieval_scope(instrumented, span_exporter, monkeypatch):
    s = store()
    span_exporter.clear()
    monkeypatch.setattr(embeddings_module, "traced_invocation", lambda run_manager, kind: 1 / 0)
    reset_internal_errors()
    chain = RunnableLambda(lambda q: q) | s.as_retriever(search_kwargs={"k": 1})
    assert [d.id for d in chain.invoke("Paris is in France")] == ["d1"]
    # no scope: the embedding hangs under the run LangChain has current (the sequence)
    assert tree(span_exporter.get_finished_spans()) == [
        ("embeddings", "invoke_workflow RunnableSequence"),
        ("retrieval InMemoryVectorStore", "invoke_workflow RunnableSequence"),
        ("invoke_workflow RunnableSequence", None),
    ]
    assert internal_error_counts() == {f"{embeddings_module.__name__}.retrieval_scope": 1}


def test_odd_shapes_are_tolerated(instrumented, span_exporter):
    class Odd(Embeddings):
        @property
        def model(self) -> str:
            raise RuntimeError("no model configured")

        def embed_documents(self, texts: Any) -> Any:
            return iter([[1.0]])  # an iterator: never consumed by llmtrace

        def embed_query(self, text: str) -> Any:
            return "not a vector"

    out = Odd().embed_documents(t for t in ["a"])
    assert list(out) == [[1.0]]
    assert Odd().embed_query("a") == "not a vector"
    first, second = span_exporter.get_finished_spans()
    assert attrs(first) == {
        semconv.GEN_AI_OPERATION_NAME: semconv.OP_EMBEDDINGS,
        semconv.GEN_AI_PROVIDER_NAME: "odd",
        semconv.LLMTRACE_FRAMEWORK: "langchain",
        semconv.LLMTRACE_USAGE_REPORTED: False,
    }
    assert semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT not in attrs(second)
    assert attrs(second)[semconv.LLMTRACE_EMBEDDINGS_INPUT_COUNT] == 1


# ---- provider names ---------------------------------------------------------------------------------------
def fake_class(name: str, module: str) -> type:
    return type(name, (), {"__module__": module})


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        ([fake_class("OpenAIEmbeddings", "langchain_openai.embeddings.base")], semconv.PROVIDER_OPENAI),
        (
            [
                fake_class("AzureOpenAIEmbeddings", "langchain_openai.embeddings.azure"),
                fake_class("OpenAIEmbeddings", "langchain_openai.embeddings.base"),
            ],
            semconv.PROVIDER_AZURE_OPENAI,
        ),
        (
            [fake_class("GoogleGenerativeAIEmbeddings", "langchain_google_genai.embeddings")],
            semconv.PROVIDER_GCP_GEN_AI,
        ),
        ([fake_class("BedrockEmbeddings", "langchain_aws.embeddings.bedrock")], semconv.PROVIDER_AWS_BEDROCK),
        ([fake_class("MistralAIEmbeddings", "langchain_mistralai.embeddings")], semconv.PROVIDER_MISTRAL),
        ([fake_class("Embedder", "langchain_community.embeddings.cohere")], semconv.PROVIDER_COHERE),
        ([fake_class("OllamaEmbeddings", "langchain_ollama.embeddings")], "ollama"),
        (
            [
                fake_class("MyEmbeddings", "app.models"),
                fake_class("OpenAIEmbeddings", "langchain_openai.embeddings.base"),
            ],
            semconv.PROVIDER_OPENAI,
        ),
        ([fake_class("Embeddings", "app")], extract.UNKNOWN_PROVIDER),
        ([], extract.UNKNOWN_PROVIDER),
    ],
)
def test_class_provider(classes: list[type], expected: str) -> None:
    assert extract.class_provider(classes) == expected
