"""``LlamaIndexInstrumentor``: registers llmtrace's handlers on LlamaIndex's root dispatcher."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from llama_index_instrumentation import get_dispatcher
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from llmtrace import TelemetryHandler, _fork, semconv
from llmtrace_llama_index import _parse
from llmtrace_llama_index._classify import clear_cache
from llmtrace_llama_index._event_handler import LlamaIndexEventHandler
from llmtrace_llama_index._runs import Runs
from llmtrace_llama_index._span_handler import LlamaIndexSpanHandler

FRAMEWORK = "llama_index"
_INSTRUMENTS = ("llama-index-core >= 0.14.25",)  # as the package requires (pyproject.toml)


class LlamaIndexInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Trace LlamaIndex LLMs, embeddings, retrievers, engines, agents and workflows.

    ``instrument(tracer_provider=, meter_provider=, logger_provider=)`` adds one span handler
    and one event handler to the root dispatcher (never twice, even if another instance of
    this class added them); ``uninstrument()`` removes them and ends every span still open.
    """

    _lock = _fork.lock()

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        handler = TelemetryHandler(
            tracer_provider=kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
            logger_provider=kwargs.get("logger_provider"),
            framework=FRAMEWORK,
        )
        runs = Runs(handler)
        runs.on_parse = lambda: _parse.install(runs)
        clear_cache()
        dispatcher = get_dispatcher()
        with self._lock:
            _remove_handlers(dispatcher)
            dispatcher.add_span_handler(LlamaIndexSpanHandler(runs))
            dispatcher.add_event_handler(LlamaIndexEventHandler(runs))

    def _uninstrument(self, **kwargs: Any) -> None:
        with self._lock:
            runs = _remove_handlers(get_dispatcher())
        _parse.uninstall()
        for each in runs:
            each.clear(semconv.EVICTED_SHUTDOWN)


def _remove_handlers(dispatcher: Any) -> list[Runs]:
    """Remove llmtrace's handlers from the dispatcher; returns their run maps."""
    runs = [h.runs for h in dispatcher.span_handlers if isinstance(h, LlamaIndexSpanHandler)]
    dispatcher.span_handlers = [
        h for h in dispatcher.span_handlers if not isinstance(h, LlamaIndexSpanHandler)
    ]
    dispatcher.event_handlers = [
        h for h in dispatcher.event_handlers if not isinstance(h, LlamaIndexEventHandler)
    ]
    return runs
