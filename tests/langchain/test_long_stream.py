"""A stream that keeps delivering chunks for longer than the run map's TTL is alive, and so are the
runs above it (the run map's clock is a fake one here: no waiting, no timing)."""

from __future__ import annotations

import time
import types
from collections.abc import Iterator
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from llmtrace_langchain import _handler as lc_handler

from llmtrace import _runmap, semconv

from .conftest import attrs, tree
from .fakes import ScriptedChatModel, answer

TTL_S = 300.0
CHUNKS = 10
CHUNK_EVERY_S = 100.0  # 1000 s of stream in all


class Clock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now


class LongStream(ScriptedChatModel):
    """Streams CHUNKS words, CHUNK_EVERY_S apart on ``clock``, calling ``sweep`` (what the run map's
    background sweeper does) before each."""

    clock: Any
    sweep: Any

    def _stream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[Any]:
        for i in range(CHUNKS):
            self.clock.now += CHUNK_EVERY_S
            self.sweep()
            yield ChatGenerationChunk(message=AIMessageChunk(content=f"w{i} "))


def test_a_stream_longer_than_the_ttl_is_not_evicted(handler, span_exporter, monkeypatch):
    clock = Clock()
    # the run map's clock, and the handler's copy of it for its per-chunk check
    monkeypatch.setattr(_runmap, "time", types.SimpleNamespace(monotonic=clock.monotonic, sleep=time.sleep))
    monkeypatch.setattr(lc_handler, "_monotonic", clock.monotonic)
    handler._runs.ttl_s = TTL_S
    model = LongStream(script=[answer("unused")], clock=clock, sweep=handler._runs.sweep)
    agent = create_agent(model, tools=[], name="writer")
    chunks = [
        message.content
        for message, _ in agent.stream(
            {"messages": [("user", "go")]}, config={"callbacks": [handler]}, stream_mode="messages"
        )
    ]
    assert "".join(chunks) == "".join(f"w{i} " for i in range(CHUNKS))
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [("chat gpt-4o-mini", "invoke_agent writer"), ("invoke_agent writer", None)]
    for span in spans:
        assert span.status.status_code.name == "UNSET", span.name
        assert semconv.LLMTRACE_EVICTED not in attrs(span)
    assert attrs(spans[0])[semconv.LLMTRACE_STREAM_CHUNKS] == CHUNKS
    assert handler.open_runs() == 0
