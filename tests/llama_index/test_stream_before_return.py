"""A streamed chat engine whose model stream fails before the engine's dispatcher span returns.

Chat engines consume their model stream in a thread of their own (``write_response_to_history``),
started before ``stream_chat`` returns: the stream may fail before the engine's span returns (another
span handler that is slow to exit the span, a loaded machine). The caller still gets the error when
reading the response, so the engine's span must fail with it, as it does when the stream fails later.
The race is made deterministic by a span handler registered before llmtrace's that waits, when the
engine's span exits, for that thread to end.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.memory import ChatMemoryBuffer
from llama_index_instrumentation import get_dispatcher
from llama_index_instrumentation.span_handlers import SimpleSpanHandler
from opentelemetry.trace import StatusCode
from pydantic import Field

from llmtrace import semconv
from tests.llama_index.conftest import is_child, one, open_runs, tree

# LlamaIndex re-raises the stream's error in its history thread; older pytest (the floors) reports
# that as a warning even with the hook below replaced.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


class BrokenStreamLLM(MockLLM):
    """Streams one chunk, then fails (a connection dropped mid-stream)."""

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text="text ", delta="text ")
            raise ConnectionError("stream dropped")

        return gen()


class StreamEndsFirst(SimpleSpanHandler):
    """Another observability handler, registered first: when a chat engine's ``stream_chat`` span
    exits, it waits until the engine's history thread has consumed (and failed) the model stream."""

    def prepare_to_exit_span(
        self, id_: str, bound_args: Any, instance: Any = None, result: Any = None, **kwargs: Any
    ) -> Any:
        thread = getattr(result, "write_response_to_history_thread", None)
        if id_.split("-")[0].endswith("ChatEngine.stream_chat") and thread is not None:
            thread.join(timeout=30)
            self.joined.append(id_.split(".")[0])
            self.raised.append(getattr(result, "exception", None))  # what the thread failed with
        return super().prepare_to_exit_span(id_, bound_args, instance=instance, result=result, **kwargs)

    joined: list[str] = Field(default_factory=list)
    raised: list[BaseException | None] = Field(default_factory=list)


@pytest.fixture
def stream_ends_first(instrumentor, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BaseException | None]]:
    """The slow handler before llmtrace's; what the history thread failed with, once joined."""
    # LlamaIndex re-raises in the thread: kept quiet (older pytest replaces this hook during a test)
    monkeypatch.setattr(threading, "excepthook", lambda args: None)
    handler = StreamEndsFirst()
    dispatcher = get_dispatcher()
    dispatcher.span_handlers.insert(0, handler)
    try:
        yield handler.raised
    finally:
        dispatcher.span_handlers.remove(handler)
    assert handler.joined, "the engine span's exit did not wait for the stream"


@pytest.fixture
def index() -> VectorStoreIndex:
    docs = [Document(text="The sky is blue.", id_="sky")]
    return VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8))


RETRIEVAL = ["  retrieval SimpleVectorStore", "    embeddings"]
TREES = {
    "simple": ["invoke_workflow SimpleChatEngine", "  chat"],
    "context": ["invoke_workflow ContextChatEngine", *RETRIEVAL, "  text_completion"],
    "condense_plus_context": [
        "invoke_workflow CondensePlusContextChatEngine",
        *RETRIEVAL,
        "  text_completion",
    ],
    "condense_question": [
        "invoke_workflow CondenseQuestionChatEngine",
        "  invoke_workflow RetrieverQueryEngine",
        "  " + RETRIEVAL[0],
        "  " + RETRIEVAL[1],
        "    text_completion",
    ],
}


@pytest.mark.parametrize("mode", TREES)
def test_stream_failing_before_the_engine_returns_fails_the_engine(
    index, instrumentor, stream_ends_first, span_exporter, mode
):
    engine = index.as_chat_engine(
        chat_mode=mode, llm=BrokenStreamLLM(), memory=ChatMemoryBuffer.from_defaults()
    )
    response = engine.stream_chat("hi")
    assert [type(e) for e in stream_ends_first] == [ConnectionError]  # failed before stream_chat returned
    with pytest.raises(ConnectionError, match="stream dropped"):
        list(response.response_gen)
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == TREES[mode]
    model = one(spans, TREES[mode][-1].strip())
    engine = one(spans, TREES[mode][0])
    engines = [engine]
    if mode == "condense_question":
        engines.append(one(spans, TREES[mode][1].strip()))
        assert is_child(engines[1], engine)
    assert is_child(model, engines[-1])
    for span in (model, *engines):
        assert span.status.status_code is StatusCode.ERROR, span.name
        assert span.attributes[semconv.ERROR_TYPE] == "connection", span.name
    assert len(open_runs()) == 0


def test_stream_ending_before_the_engine_returns_ends_it_ok(
    index, instrumentor, stream_ends_first, span_exporter
):
    engine = index.as_chat_engine(
        chat_mode="simple", llm=MockLLM(max_tokens=2), memory=ChatMemoryBuffer.from_defaults()
    )
    response = engine.stream_chat("hi")
    assert list(response.response_gen) == ["text ", "text"]
    assert stream_ends_first == [None]  # joined, and it did not fail
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == TREES["simple"]
    for span in spans:
        assert span.status.status_code is StatusCode.UNSET, span.name
        assert semconv.ERROR_TYPE not in span.attributes
    assert len(open_runs()) == 0
