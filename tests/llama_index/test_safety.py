"""Never break the host app; instrument once; uninstrument cleanly."""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import entry_points

import pytest
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index_instrumentation import get_dispatcher
from llmtrace_llama_index import LlamaIndexInstrumentor, _event_handler, _span_handler
from llmtrace_llama_index._event_handler import LlamaIndexEventHandler
from llmtrace_llama_index._span_handler import LlamaIndexSpanHandler
from opentelemetry.trace import StatusCode

import llmtrace
from llmtrace import semconv
from llmtrace._safety import internal_error_counts
from tests.llama_index.conftest import one

MESSAGES = [ChatMessage(role="user", content="hi")]


def _ours() -> tuple[int, int]:
    dispatcher = get_dispatcher()
    return (
        sum(isinstance(h, LlamaIndexSpanHandler) for h in dispatcher.span_handlers),
        sum(isinstance(h, LlamaIndexEventHandler) for h in dispatcher.event_handlers),
    )


def _boom(*args, **kwargs):
    raise RuntimeError("llmtrace bug")


def _internal_error_logs(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "llmtrace" and "internal error" in r.getMessage()]


def _workload():
    """Every handler method runs: chat (enter/exit/events), a stream (events) and a failing call (drop)."""
    llm = MockLLM(max_tokens=2)
    chat = llm.chat(MESSAGES).message.content
    stream = [c.delta for c in llm.stream_complete("x")]
    achat = asyncio.run(llm.achat(MESSAGES)).message.content
    with pytest.raises(ValueError) as raised:
        llm.complete()  # missing prompt: LlamaIndex raises inside the dispatcher span
    return chat, stream, achat, str(raised.value)


@pytest.mark.parametrize(
    ("module", "function", "where"),
    [
        (_span_handler, "classify", "new_span"),
        (_span_handler, "_finish", "prepare_to_exit_span"),
        (_span_handler, "is_control_flow", "prepare_to_drop_span"),
        (_event_handler, "_apply_response", "handle"),
    ],
)
def test_internal_failure_never_changes_the_result(
    instrumentor, monkeypatch, caplog, module, function, where
):
    instrumentor.uninstrument()
    expected = _workload()  # without instrumentation
    instrumentor.instrument()
    monkeypatch.setattr(module, function, _boom)
    with caplog.at_level(logging.ERROR, logger="llmtrace"):
        assert _workload() == expected
        assert _workload() == expected
    failures = {k: v for k, v in internal_error_counts().items() if k.endswith(where)}
    assert len(failures) == 1 and next(iter(failures.values())) >= 2, internal_error_counts()
    logged = _internal_error_logs(caplog)
    assert len(logged) == 1  # logged once, then counted
    assert where in logged[0].getMessage()


def test_instrument_registers_once_and_uninstrument_removes(tracer_provider, span_exporter):
    instrumentor = LlamaIndexInstrumentor()
    assert _ours() == (0, 0)
    instrumentor.instrument(tracer_provider=tracer_provider)
    instrumentor.instrument(tracer_provider=tracer_provider)  # BaseInstrumentor: a no-op
    assert _ours() == (1, 1)
    MockLLM().complete("x")
    assert len(span_exporter.get_finished_spans()) == 1
    instrumentor.uninstrument()
    assert _ours() == (0, 0)
    MockLLM().complete("x")
    assert len(span_exporter.get_finished_spans()) == 1  # nothing new


def test_uninstrument_ends_open_streams(tracer_provider, span_exporter):
    instrumentor = LlamaIndexInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    stream = MockLLM(max_tokens=5).stream_complete("x")
    next(stream)
    instrumentor.uninstrument()
    span = one(span_exporter.get_finished_spans(), "text_completion")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[semconv.LLMTRACE_EVICTED] == semconv.EVICTED_SHUTDOWN
    assert len(list(stream)) == 4  # the app's stream is untouched


def test_dispatcher_shutdown_ends_open_streams(tracer_provider, span_exporter):
    instrumentor = LlamaIndexInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        stream = MockLLM(max_tokens=5).stream_complete("x")
        next(stream)
        get_dispatcher().shutdown()
        span = one(span_exporter.get_finished_spans(), "text_completion")
        assert span.attributes[semconv.LLMTRACE_EVICTED] == semconv.EVICTED_SHUTDOWN
    finally:
        instrumentor.uninstrument()


def test_entry_points_and_llmtrace_instrument(tracer_provider, span_exporter):
    for group in ("opentelemetry_instrumentor", semconv.INSTRUMENTORS_ENTRY_POINT_GROUP):
        (ep,) = [ep for ep in entry_points(group=group) if ep.name == "llama_index"]
        assert ep.load() is LlamaIndexInstrumentor
    assert llmtrace.instrument("llama_index", tracer_provider=tracer_provider) == ["llama_index"]
    try:
        assert _ours() == (1, 1)
        MockLLM().complete("x")
        assert [s.name for s in span_exporter.get_finished_spans()] == ["text_completion"]
    finally:
        assert llmtrace.uninstrument("llama_index") == ["llama_index"]
    assert _ours() == (0, 0)
