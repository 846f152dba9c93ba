"""llmtrace for LangChain and LangGraph: a callback handler and an OpenTelemetry instrumentor.

Manual::

    from llmtrace_langchain import LLMTraceCallbackHandler
    agent.invoke(inputs, config={"callbacks": [LLMTraceCallbackHandler()]})

Automatic (every callback manager gets one handler)::

    import llmtrace
    llmtrace.instrument()  # or LangChainInstrumentor().instrument()
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover
    raise ImportError("llmtrace_langchain needs LangChain: pip install langchain-core") from exc

from llmtrace_langchain._handler import LLMTraceCallbackHandler
from llmtrace_langchain._instrumentor import LangChainInstrumentor

__all__ = ["LLMTraceCallbackHandler", "LangChainInstrumentor"]
