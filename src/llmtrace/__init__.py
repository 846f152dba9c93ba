"""llmtrace: OpenTelemetry GenAI tracing for LangChain, LangGraph and LlamaIndex agents.

Quickstart::

    import llmtrace
    llmtrace.configure(service_name="my-agent")   # exporters from OTEL_* variables
    llmtrace.instrument()                          # every installed framework

Everything public is importable from here; modules starting with ``_`` are private.
"""

from __future__ import annotations

from llmtrace._config import Pipeline, configure, export_stats, shutdown
from llmtrace._content import CaptureMode
from llmtrace._handler import TelemetryHandler
from llmtrace._instrument import instrument, uninstrument
from llmtrace._invocation import (
    AgentInvocation,
    Invocation,
    ModelInvocation,
    RerankInvocation,
    RetrievalInvocation,
    ToolInvocation,
    WorkflowInvocation,
)
from llmtrace._manual import agent_span, record_agent_step, record_evaluation, tool_span
from llmtrace._pricing import ModelPrice, estimate_cost, lookup_price, map_deployment, set_price
from llmtrace._usage import UsageRecord, add_usage_sink, dimensions, remove_usage_sink
from llmtrace.version import __version__

__all__ = [
    "AgentInvocation",
    "CaptureMode",
    "Invocation",
    "ModelInvocation",
    "ModelPrice",
    "Pipeline",
    "RerankInvocation",
    "RetrievalInvocation",
    "TelemetryHandler",
    "ToolInvocation",
    "UsageRecord",
    "WorkflowInvocation",
    "__version__",
    "add_usage_sink",
    "agent_span",
    "configure",
    "dimensions",
    "estimate_cost",
    "export_stats",
    "instrument",
    "lookup_price",
    "map_deployment",
    "record_agent_step",
    "record_evaluation",
    "remove_usage_sink",
    "set_price",
    "shutdown",
    "tool_span",
    "uninstrument",
]
