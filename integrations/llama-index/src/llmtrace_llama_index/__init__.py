"""llmtrace for LlamaIndex: OpenTelemetry GenAI spans and metrics from LlamaIndex's dispatcher.

Usage::

    from llmtrace_llama_index import LlamaIndexInstrumentor
    LlamaIndexInstrumentor().instrument()   # or llmtrace.instrument("llama_index")
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover
    raise ImportError("llmtrace_llama_index needs LlamaIndex: pip install llama-index-core") from exc

from llmtrace_llama_index._instrumentor import LlamaIndexInstrumentor

__all__ = ["LlamaIndexInstrumentor"]
