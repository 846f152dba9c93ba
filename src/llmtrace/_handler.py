"""The telemetry handler: the one place integrations turn framework events into GenAI telemetry."""

from __future__ import annotations

import time

from opentelemetry import _logs, metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind
from opentelemetry.util.types import AttributeValue

from llmtrace import semconv
from llmtrace._content import mask_name
from llmtrace._invocation import (
    MAX_NAME_LENGTH,
    AgentInvocation,
    Invocation,
    ModelInvocation,
    RerankInvocation,
    RetrievalInvocation,
    ToolInvocation,
    WorkflowInvocation,
    model_request_attributes,
)
from llmtrace._metrics import Instruments
from llmtrace._safety import report_internal_error
from llmtrace._settings import settings
from llmtrace.version import __version__

Parent = Invocation | Context | None


def _perf_start(start_time_ns: int | None) -> float:
    """The ``perf_counter`` reading at ``start_time_ns`` (now if None): an invocation started late
    with its operation's earlier start time measures its duration from that start too."""
    now = time.perf_counter()
    if start_time_ns is None:
        return now
    return now - max(0, time.time_ns() - start_time_ns) / 1e9


def _name(value: str | None) -> str | None:
    """Names and identifiers (models, providers, agents, tools, data sources) come from framework
    metadata, which nothing bounds, and make up span names: cut to MAX_NAME_LENGTH."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    return value[:MAX_NAME_LENGTH]


def _model_name(value: str | None) -> str | None:
    """A model's name or a server's address, cut as any name, without credentials: a model given as
    a URL with a token in it (``https://user:token@host/model``, ``...?api_key=...``) would put it in
    span names, attributes, metrics and the store. A plain name costs one cache look-up."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    return mask_name(value, MAX_NAME_LENGTH)


class TelemetryHandler:
    """Starts invocations for every GenAI operation.

    Each ``start_*`` takes the attributes that matter for sampling, starts the span with the
    standard name and kind, and returns an invocation. The caller sets plain fields on it
    and calls ``stop()`` or ``fail(error)``. ``parent`` is the parent invocation (from the
    framework's run ids), an OTel context, or None for the caller's active span.

    Never raises: if starting a span fails, the invocation wraps a non-recording span.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        logger_provider: _logs.LoggerProvider | None = None,
        framework: str | None = None,
    ) -> None:
        self.framework = framework
        self.disabled = settings.disabled
        if self.disabled:
            tracer_provider = trace.NoOpTracerProvider()
            meter_provider = metrics.NoOpMeterProvider()
            logger_provider = _logs.NoOpLoggerProvider()
        self.tracer = trace.get_tracer(
            semconv.INSTRUMENTATION_SCOPE, __version__, tracer_provider, schema_url=semconv.SCHEMA_URL
        )
        meter = metrics.get_meter(
            semconv.INSTRUMENTATION_SCOPE, __version__, meter_provider, schema_url=semconv.SCHEMA_URL
        )
        self.instruments = Instruments(meter)
        self.logger = _logs.get_logger(
            semconv.INSTRUMENTATION_SCOPE, __version__, logger_provider, schema_url=semconv.SCHEMA_URL
        )

    # ---- starting invocations -----------------------------------------------------------
    def start_chat(
        self,
        request_model: str | None,
        *,
        provider: str,
        parent: Parent = None,
        stream: bool = False,
        server_address: str | None = None,
        server_port: int | None = None,
        start_time_ns: int | None = None,
    ) -> ModelInvocation:
        return self._start_model(
            semconv.OP_CHAT,
            request_model,
            provider,
            parent,
            stream,
            server_address,
            server_port,
            start_time_ns,
        )

    def start_text_completion(
        self,
        request_model: str | None,
        *,
        provider: str,
        parent: Parent = None,
        stream: bool = False,
        server_address: str | None = None,
        server_port: int | None = None,
        start_time_ns: int | None = None,
    ) -> ModelInvocation:
        return self._start_model(
            semconv.OP_TEXT_COMPLETION,
            request_model,
            provider,
            parent,
            stream,
            server_address,
            server_port,
            start_time_ns,
        )

    def start_embeddings(
        self,
        request_model: str | None,
        *,
        provider: str,
        parent: Parent = None,
        server_address: str | None = None,
        server_port: int | None = None,
        start_time_ns: int | None = None,
    ) -> ModelInvocation:
        return self._start_model(
            semconv.OP_EMBEDDINGS,
            request_model,
            provider,
            parent,
            False,
            server_address,
            server_port,
            start_time_ns,
        )

    def start_tool(
        self,
        name: str,
        *,
        call_id: str | None = None,
        description: str | None = None,
        tool_type: str | None = semconv.TOOL_TYPE_FUNCTION,
        parent: Parent = None,
        start_time_ns: int | None = None,
    ) -> ToolInvocation:
        context, agent = _resolve_parent(parent)
        name = _name(name) or ""
        call_id, tool_type = _name(call_id), _name(tool_type)
        attrs: dict[str, AttributeValue] = {
            semconv.GEN_AI_OPERATION_NAME: semconv.OP_EXECUTE_TOOL,
            semconv.GEN_AI_TOOL_NAME: name,
        }
        if tool_type:
            attrs[semconv.GEN_AI_TOOL_TYPE] = tool_type
        if call_id:
            attrs[semconv.GEN_AI_TOOL_CALL_ID] = call_id
        if description:
            attrs[semconv.GEN_AI_TOOL_DESCRIPTION] = description[:1024]
        if agent is not None and agent.name:
            attrs[semconv.GEN_AI_AGENT_NAME] = agent.name
        span = self._span(
            semconv.span_name(semconv.OP_EXECUTE_TOOL, name), SpanKind.INTERNAL, attrs, context, start_time_ns
        )
        invocation = ToolInvocation(
            self, span, agent, _perf_start(start_time_ns), name=name, tool_type=tool_type
        )
        invocation.call_id = call_id
        return invocation

    def start_agent(
        self,
        name: str | None,
        *,
        description: str | None = None,
        request_model: str | None = None,
        parent: Parent = None,
        start_time_ns: int | None = None,
    ) -> AgentInvocation:
        context, _ = _resolve_parent(parent)
        name, request_model = _name(name), _model_name(request_model)
        attrs: dict[str, AttributeValue] = {semconv.GEN_AI_OPERATION_NAME: semconv.OP_INVOKE_AGENT}
        if name:
            attrs[semconv.GEN_AI_AGENT_NAME] = name
        if description:
            attrs[semconv.GEN_AI_AGENT_DESCRIPTION] = description[:1024]
        if request_model:
            attrs[semconv.GEN_AI_REQUEST_MODEL] = request_model
        span = self._span(
            semconv.span_name(semconv.OP_INVOKE_AGENT, name), SpanKind.INTERNAL, attrs, context, start_time_ns
        )
        # an agent counts its own calls: sub-agents start a new count
        invocation = AgentInvocation(self, span, None, _perf_start(start_time_ns), name=name)
        invocation.request_model = request_model
        return invocation

    def start_workflow(
        self,
        name: str | None,
        *,
        parent: Parent = None,
        start_time_ns: int | None = None,
    ) -> WorkflowInvocation:
        context, agent = _resolve_parent(parent)
        name = _name(name)
        attrs: dict[str, AttributeValue] = {semconv.GEN_AI_OPERATION_NAME: semconv.OP_INVOKE_WORKFLOW}
        if name:
            attrs[semconv.GEN_AI_WORKFLOW_NAME] = name
        span = self._span(
            semconv.span_name(semconv.OP_INVOKE_WORKFLOW, name),
            SpanKind.INTERNAL,
            attrs,
            context,
            start_time_ns,
        )
        return WorkflowInvocation(self, span, agent, _perf_start(start_time_ns), name=name)

    def start_retrieval(
        self,
        data_source_id: str | None,
        *,
        provider: str | None = None,
        request_model: str | None = None,
        top_k: int | None = None,
        parent: Parent = None,
        start_time_ns: int | None = None,
    ) -> RetrievalInvocation:
        context, agent = _resolve_parent(parent)
        data_source_id, provider = _name(data_source_id), _name(provider)
        request_model = _model_name(request_model)
        attrs: dict[str, AttributeValue] = {semconv.GEN_AI_OPERATION_NAME: semconv.OP_RETRIEVAL}
        if data_source_id:
            attrs[semconv.GEN_AI_DATA_SOURCE_ID] = data_source_id
        if provider:
            attrs[semconv.GEN_AI_PROVIDER_NAME] = provider
        if request_model:
            attrs[semconv.GEN_AI_REQUEST_MODEL] = request_model
        if top_k is not None:
            attrs[semconv.GEN_AI_RETRIEVAL_TOP_K] = top_k
        span = self._span(
            semconv.span_name(semconv.OP_RETRIEVAL, data_source_id),
            SpanKind.CLIENT,
            attrs,
            context,
            start_time_ns,
        )
        return RetrievalInvocation(self, span, agent, _perf_start(start_time_ns))

    def start_rerank(
        self,
        request_model: str | None,
        *,
        provider: str | None = None,
        top_n: int | None = None,
        parent: Parent = None,
        start_time_ns: int | None = None,
    ) -> RerankInvocation:
        """A reranker: ``rerank {model}``, CLIENT for a provider's API, INTERNAL when in-process."""
        context, agent = _resolve_parent(parent)
        provider, request_model = _name(provider), _model_name(request_model)
        attrs: dict[str, AttributeValue] = {semconv.GEN_AI_OPERATION_NAME: semconv.OP_RERANK}
        if provider:
            attrs[semconv.GEN_AI_PROVIDER_NAME] = provider
        if request_model:
            attrs[semconv.GEN_AI_REQUEST_MODEL] = request_model
        if top_n is not None:
            attrs[semconv.LLMTRACE_RERANK_TOP_N] = top_n
        kind = SpanKind.CLIENT if provider else SpanKind.INTERNAL
        name = semconv.span_name(semconv.OP_RERANK, request_model)
        span = self._span(name, kind, attrs, context, start_time_ns)
        return RerankInvocation(self, span, agent, _perf_start(start_time_ns))

    # ---- internals ------------------------------------------------------------------------
    def _start_model(
        self,
        operation: str,
        request_model: str | None,
        provider: str,
        parent: Parent,
        stream: bool,
        server_address: str | None,
        server_port: int | None,
        start_time_ns: int | None,
    ) -> ModelInvocation:
        context, agent = _resolve_parent(parent)
        provider = _name(provider) or ""
        request_model, server_address = _model_name(request_model), _model_name(server_address)
        attrs = model_request_attributes(
            operation, provider, request_model, stream, server_address, server_port
        )
        start_ns = start_time_ns or time.time_ns()
        span = self._span(
            semconv.span_name(operation, request_model), SpanKind.CLIENT, attrs, context, start_ns
        )
        invocation = ModelInvocation(
            self,
            span,
            agent,
            _perf_start(start_time_ns),
            operation=operation,
            provider=provider,
            request_model=request_model,
            stream=stream,
            start_time_ns=start_ns,
        )
        if server_address:  # for the details event; class defaults otherwise
            invocation.server_address = server_address
            invocation.server_port = server_port
        return invocation

    def _span(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
        context: Context | None,
        start_time_ns: int | None,
    ) -> Span:
        try:
            return self.tracer.start_span(
                name, context=context, kind=kind, attributes=attributes, start_time=start_time_ns
            )
        except Exception as exc:
            report_internal_error(f"{__name__}.TelemetryHandler.start_span", exc)
            return INVALID_SPAN

    def emit_inference_details(self, invocation: ModelInvocation) -> None:
        """The opt-in ``gen_ai.client.inference.operation.details`` event of an ended model call:
        every attribute of its span, content structured."""
        self.logger.emit(
            event_name=semconv.EVENT_INFERENCE_DETAILS,
            context=invocation.context,
            attributes=invocation.details_attributes(),
        )


def _resolve_parent(parent: Parent) -> tuple[Context | None, AgentInvocation | None]:
    if parent is None:
        return None, None
    if isinstance(parent, Invocation):
        agent = parent if isinstance(parent, AgentInvocation) else parent.agent
        return parent.context, agent
    return parent, None
