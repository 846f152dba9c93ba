"""Invocations: one live GenAI operation each, with its span.

Integrations get an invocation from :class:`~llmtrace.TelemetryHandler`, set plain fields on
it while the framework reports them, and end it with ``stop()`` or ``fail(error)``. The
invocation owns attribute keys, content policy, usage, cost and metrics. Ending is
idempotent, and no method ever raises.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from llmtrace import semconv
from llmtrace._content import MIN_ATTRIBUTE_LENGTH, mask_name, serialize_content
from llmtrace._errors import classify_error
from llmtrace._pricing import estimate_usage_cost
from llmtrace._safety import never_raise
from llmtrace._settings import settings
from llmtrace._usage import Status as RecordStatus
from llmtrace._usage import Usage, UsageRecord, current_dimensions, service_tier_attribute, usage_sinks

if TYPE_CHECKING:
    from llmtrace._handler import TelemetryHandler

Attrs = dict[str, AttributeValue]
MAX_ERROR_MESSAGE = 1024
MAX_LISTED_DOCUMENTS = 100


def _error_message(error: BaseException | str) -> str | None:
    """The status description and ``exception.message`` of a failure, or None when not recorded.

    An exception's message is content: providers and frameworks quote the prompt, the tool's
    arguments or the request in it (a 422 echoing its input, a pydantic validation error). It is
    recorded only while content is captured on spans, or if ``settings.error_messages`` says so,
    and then goes through the content pipeline: secrets masked, the redaction hook, bounded. An
    error type given as text (a handled tool error) is llmtrace's own and always kept."""
    if isinstance(error, str):
        return error[:MAX_ERROR_MESSAGE]
    policy = settings.content
    if not (policy.mode.on_span or settings.error_messages):
        return None
    try:
        text = str(error)
    except Exception:
        return None
    return safe_text(semconv.EXCEPTION_MESSAGE, text, MAX_ERROR_MESSAGE) if text else None


def safe_text(key: str, text: str, limit: int) -> str | None:
    """Free text recorded under ``key`` (an exception message, an evaluation's explanation) made
    safe as captured content is: secrets masked, the redaction hook applied, at most ``limit``
    characters. None if the hook drops it."""
    policy = dataclasses.replace(settings.content, max_attribute_length=max(limit, MIN_ATTRIBUTE_LENGTH))
    result = serialize_content(key, text, policy)
    return None if result is None else result[0]


class Invocation:
    """Base of every invocation: a span, a start time, stop and fail."""

    operation: str = ""
    _duration_metric_kind = ""

    def __init__(
        self,
        handler: TelemetryHandler,
        span: Span,
        agent: AgentInvocation | None,
        start_perf: float,
    ) -> None:
        self._handler = handler
        self.span = span
        self.agent = agent
        """The nearest enclosing agent invocation (counts this call), if any."""
        self._start_perf = start_perf
        self._ended = False
        self._cancelled = False
        self._truncated: list[str] = []
        self._content_chars = 0
        self.error_type: str | None = None

    # ---- public API -----------------------------------------------------------------
    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def context(self) -> otel_context.Context:
        """An OTel context with this invocation's span active (to parent other spans)."""
        return trace.set_span_in_context(self.span)

    @never_raise
    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set an extra attribute (keys come from :mod:`llmtrace.semconv`)."""
        if self.span.is_recording():
            self.span.set_attribute(key, value)

    @never_raise
    def add_event(self, name: str, attributes: dict[str, AttributeValue] | None = None) -> None:
        if self.span.is_recording():
            self.span.add_event(name, attributes)

    @never_raise
    def stop(self, end_time_ns: int | None = None) -> None:
        """End successfully."""
        self._end(None, None, end_time_ns)

    @never_raise
    def fail(self, error: BaseException | str, end_time_ns: int | None = None) -> None:
        """End with ERROR status. ``error`` is the exception, or an error type for handled errors."""
        error_type = (error if isinstance(error, str) else classify_error(error))[:MAX_NAME_LENGTH]
        self._end(error_type, error, end_time_ns)

    @never_raise
    def cancel(self, end_time_ns: int | None = None) -> None:
        """End without error because the caller gave up: a stream closed or dropped before its
        end, a step cancelled by the user. Usage records say ``cancelled``."""
        self._cancelled = True
        self._end(None, None, end_time_ns)

    @never_raise
    def evict(self, reason: str) -> None:
        """End a run that never ended (abandoned stream, crashed worker)."""
        if self._ended:
            return
        if self.span.is_recording():
            self.span.set_attribute(semconv.LLMTRACE_EVICTED, reason)
        self._end(semconv.ERROR_TYPE_EVICTED, f"run never ended; ended by llmtrace ({reason})", None)

    # ---- internals ------------------------------------------------------------------
    def _end(
        self, error_type: str | None, error: BaseException | str | None, end_time_ns: int | None
    ) -> None:
        if self._ended:
            return
        self._ended = True
        self.error_type = error_type
        duration = time.perf_counter() - self._start_perf
        if end_time_ns is None:  # now: serialising captured content below is not the call's time
            end_time_ns = time.time_ns()
        span = self.span
        try:
            self._prepare_end()
            if span.is_recording():
                attrs: Attrs = {}
                self._set_end_attributes(attrs)
                if self._truncated:
                    attrs[semconv.LLMTRACE_CONTENT_TRUNCATED] = self._truncated
                if error_type is not None and error is not None:
                    attrs[semconv.ERROR_TYPE] = error_type
                span.set_attributes(attrs)  # one call: one lock, one pass
                if error_type is not None and error is not None:
                    message = _error_message(error)
                    span.set_status(Status(StatusCode.ERROR, message))
                    if isinstance(error, BaseException):
                        event: Attrs = {semconv.EXCEPTION_TYPE: type(error).__qualname__}
                        if message is not None:
                            event[semconv.EXCEPTION_MESSAGE] = message
                        span.add_event(semconv.EVENT_EXCEPTION, event)
            self._record(duration, error_type)
        finally:
            span.end(end_time=end_time_ns)

    def _prepare_end(self) -> None:
        """Bound what the framework filled in; compute what both span and records need (subclasses)."""

    def _set_end_attributes(self, attrs: Attrs) -> None:
        """Attributes known only at the end (subclasses)."""

    def _record(self, duration: float, error_type: str | None) -> None:
        """Metrics and records (subclasses)."""

    def _set_content(self, attrs: Attrs, key: str, value: Any) -> None:
        """Set an opt-in content attribute through the content policy (scrub, redact, bound), within
        what is left of ``max_span_content`` for all content of this invocation."""
        if value is None:
            return
        policy = settings.content
        budget = policy.max_span_content - self._content_chars  # all content of one span together
        if budget < MIN_ATTRIBUTE_LENGTH:
            self.mark_truncated(key)  # no room left: dropped, and said so
            return
        if budget < policy.max_attribute_length:
            policy = dataclasses.replace(policy, max_attribute_length=budget)
        result = serialize_content(key, value, policy)  # scrub, redact, bound
        if result is None:
            return
        text, truncated = result
        self._content_chars += len(text)
        attrs[key] = text
        if truncated:
            self.mark_truncated(key)

    def mark_truncated(self, key: str) -> None:
        """List ``key`` in ``llmtrace.content.truncated`` (once): its content was cut, by the
        serialiser or before it (the oldest messages of a long history)."""
        if key not in self._truncated:
            self._truncated.append(key)


MAX_VALUE_LENGTH = 1024
MAX_LIST_ITEMS = 64
MAX_NAME_LENGTH = 256


def is_open(invocation: Invocation) -> bool:
    """Whether ``invocation`` has not ended yet (a predicate for lists of invocations)."""
    return not invocation._ended


def _set_if(attrs: Attrs, key: str, value: AttributeValue | None) -> None:
    """Add a (non-content) attribute if known; strings bounded, whatever the framework gave."""
    if value is None:
        return
    if isinstance(value, str):
        value = value[:MAX_VALUE_LENGTH]
    attrs[key] = value


def _strings(values: Sequence[object]) -> list[str]:
    return [str(v)[:MAX_VALUE_LENGTH] for v in list(values)[:MAX_LIST_ITEMS]]


def model_request_attributes(
    operation: str,
    provider: str,
    request_model: str | None,
    stream: bool,
    server_address: str | None,
    server_port: int | None,
) -> Attrs:
    """The attributes a model call's span starts with (those that matter for sampling)."""
    attrs: Attrs = {semconv.GEN_AI_OPERATION_NAME: operation, semconv.GEN_AI_PROVIDER_NAME: provider}
    if request_model:
        attrs[semconv.GEN_AI_REQUEST_MODEL] = request_model
    if stream:
        attrs[semconv.GEN_AI_REQUEST_STREAM] = True
    if server_address:
        attrs[semconv.SERVER_ADDRESS] = server_address
        if server_port:
            attrs[semconv.SERVER_PORT] = server_port
    return attrs


def _structured(text: str) -> Any:
    """Serialised content made structured again, as events carry it."""
    try:
        return json.loads(text)
    except ValueError:  # plain text (a string value, or a failed redaction)
        return text


class ModelInvocation(Invocation):
    """A model call: chat, text completion or embeddings. The only kind that carries usage and cost."""

    # Fields the framework may fill in; None (or 0) until it does. Class-level defaults: a model call
    # sets a few of them, and each assignment in ``__init__`` was paid on every call.
    # request parameters
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: Sequence[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    choice_count: int | None = None
    reasoning_level: str | None = None
    previous_response_id: str | None = None
    retry_attempt: int | None = None
    """The attempt number of a call that is a framework's retry of a failed one (2 or more)."""
    rate_limit_wait: float | None = None
    """Seconds the call waited for a client-side rate limiter before its request (not part of its
    time to first chunk; set before the first chunk)."""
    output_type: str | None = None
    conversation_id: str | None = None
    server_address: str | None = None
    server_port: int | None = None
    # response
    response_id: str | None = None
    response_model: str | None = None
    finish_reasons: Sequence[str] | None = None
    cache_hit: bool | None = None
    cache_source: str | None = None
    # embeddings
    dimension_count: int | None = None
    input_count: int | None = None
    # opt-in content, structured in the conventions' shapes; serialised only if captured
    input_messages: Any = None
    output_messages: Any = None
    system_instructions: Any = None
    tool_definitions: Any = None
    # streaming
    time_to_first_chunk: float | None = None
    chunk_count = 0
    _cost_value: float | None = None
    _unpriced_reason: str | None = None
    _content_attrs: Attrs | None = None

    def __init__(
        self,
        handler: TelemetryHandler,
        span: Span,
        agent: AgentInvocation | None,
        start_perf: float,
        *,
        operation: str,
        provider: str,
        request_model: str | None,
        stream: bool,
        start_time_ns: int,
    ) -> None:
        super().__init__(handler, span, agent, start_perf)
        self.operation = operation
        self.provider = provider
        self.request_model = request_model
        self.stream = stream
        self._start_time_ns = start_time_ns
        self.framework: str | None = handler.framework
        self.dimensions = current_dimensions()
        self.usage = Usage()
        if agent is not None:
            agent.inference_calls += 1

    @never_raise
    def chunk(self) -> None:
        """Call once per streamed chunk; the first one sets the time to first chunk.

        A chunk means the call streams, even if that was not known when it started."""
        if not self.stream:
            self.stream = True
            if self.span.is_recording():
                self.span.set_attribute(semconv.GEN_AI_REQUEST_STREAM, True)
        if self.time_to_first_chunk is None:
            self.time_to_first_chunk = time.perf_counter() - self._start_perf - (self.rate_limit_wait or 0.0)
        self.chunk_count += 1

    @never_raise
    def set_usage(
        self,
        input_tokens: object = None,
        output_tokens: object = None,
        cache_read_tokens: object = None,
        cache_write_tokens: object = None,
        reasoning_tokens: object = None,
        cache_write_1h_tokens: object = None,
        service_tier: object = None,
    ) -> None:
        """Record usage from raw values of any type (malformed counts are dropped, never guessed).

        ``cache_write_1h_tokens``: the part of ``cache_write_tokens`` written with a one-hour
        lifetime (Anthropic). ``service_tier``: the tier that served the call, as the response
        says (kept from an earlier call when this one passes none)."""
        previous_tier = self.usage.service_tier
        self.usage = usage = Usage.of(
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_tokens,
            reasoning_tokens,
            cache_write_1h_tokens,
            service_tier,
        )
        if usage.service_tier is None:
            usage.service_tier = previous_tier
        write_1h = usage.cache_write_1h_tokens
        if write_1h is not None and (usage.cache_write_tokens is None or usage.cache_write_tokens < write_1h):
            usage.cache_write_tokens = write_1h  # the one-hour writes are part of the writes

    def _prepare_end(self) -> None:
        # bounded: they also go to usage records and metric attributes, not only to the span
        if isinstance(self.response_model, str):  # as the request's: no credentials (see _model_name)
            self.response_model = mask_name(self.response_model, MAX_NAME_LENGTH)
        if isinstance(self.response_id, str):
            self.response_id = self.response_id[:MAX_VALUE_LENGTH]
        if isinstance(self.cache_source, str):
            self.cache_source = self.cache_source[:MAX_NAME_LENGTH]
        self._cost_value, self._unpriced_reason = self._cost()  # once, for the span and the record

    def _cost(self) -> tuple[float | None, str | None]:
        if self.cache_hit:
            return 0.0, None
        usage = self.usage
        if not usage.reported:
            return None, None
        return estimate_usage_cost(self.response_model or self.request_model, usage)

    def _set_end_attributes(self, attrs: Attrs) -> None:
        self._set_call_attributes(attrs)
        if settings.content.mode.on_span:
            attrs.update(self._content())

    def _set_call_attributes(self, attrs: Attrs) -> None:
        """The attributes known at the end but content: the span's and the details event's."""
        for key, value in (
            (semconv.GEN_AI_REQUEST_MAX_TOKENS, self.max_tokens),
            (semconv.GEN_AI_REQUEST_TEMPERATURE, self.temperature),
            (semconv.GEN_AI_REQUEST_TOP_P, self.top_p),
            (semconv.GEN_AI_REQUEST_TOP_K, self.top_k),
            (semconv.GEN_AI_REQUEST_FREQUENCY_PENALTY, self.frequency_penalty),
            (semconv.GEN_AI_REQUEST_PRESENCE_PENALTY, self.presence_penalty),
            (semconv.GEN_AI_REQUEST_SEED, self.seed),
            (semconv.GEN_AI_REQUEST_REASONING_LEVEL, self.reasoning_level),
            (semconv.GEN_AI_REQUEST_PREVIOUS_RESPONSE_ID, self.previous_response_id),
            (semconv.GEN_AI_OUTPUT_TYPE, self.output_type),
            (semconv.GEN_AI_CONVERSATION_ID, self.conversation_id),
            (semconv.GEN_AI_RESPONSE_ID, self.response_id),
            (semconv.GEN_AI_RESPONSE_MODEL, self.response_model),
            (semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT, self.dimension_count),
            (semconv.LLMTRACE_EMBEDDINGS_INPUT_COUNT, self.input_count),
            (semconv.LLMTRACE_FRAMEWORK, self.framework),
        ):
            if value is not None:  # as _set_if, inline: one call less per attribute
                attrs[key] = value[:MAX_VALUE_LENGTH] if isinstance(value, str) else value
        if self.stop_sequences:
            attrs[semconv.GEN_AI_REQUEST_STOP_SEQUENCES] = _strings(self.stop_sequences)
        if self.choice_count is not None and self.choice_count != 1:
            attrs[semconv.GEN_AI_REQUEST_CHOICE_COUNT] = self.choice_count
        if self.finish_reasons:
            attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = _strings(self.finish_reasons)
        for key, value in self.dimensions.items():
            attrs[semconv.LLMTRACE_DIMENSION_PREFIX + key] = value
        if self.retry_attempt is not None:
            attrs[semconv.LLMTRACE_RETRY_ATTEMPT] = self.retry_attempt
        if self.rate_limit_wait is not None:
            attrs[semconv.LLMTRACE_RATE_LIMIT_WAIT] = self.rate_limit_wait
        if self.stream:
            _set_if(attrs, semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, self.time_to_first_chunk)
            attrs[semconv.LLMTRACE_STREAM_CHUNKS] = self.chunk_count

        if self.cache_hit is not None:
            attrs[semconv.LLMTRACE_CACHE_HIT] = self.cache_hit
            _set_if(attrs, semconv.LLMTRACE_CACHE_SOURCE, self.cache_source)
        usage = self.usage
        if self.cache_hit:
            pass  # nothing billed: no token attributes, cost 0 below
        elif usage.reported:
            _set_if(attrs, semconv.GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens)
            _set_if(attrs, semconv.GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens)
            _set_if(attrs, semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, usage.cache_read_tokens)
            _set_if(attrs, semconv.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS, usage.cache_write_tokens)
            _set_if(attrs, semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, usage.reasoning_tokens)
            if usage.cache_write_1h_tokens is not None:
                attrs[semconv.LLMTRACE_USAGE_CACHE_WRITE_1H_INPUT_TOKENS] = usage.cache_write_1h_tokens
        else:
            attrs[semconv.LLMTRACE_USAGE_REPORTED] = False
        if usage.service_tier is not None and not self.cache_hit:
            attrs[service_tier_attribute(self.provider)] = usage.service_tier
        cost = self._cost_value
        if cost is not None:
            attrs[semconv.GEN_AI_USAGE_COST_AMOUNT] = cost
            attrs[semconv.GEN_AI_USAGE_COST_CURRENCY] = semconv.COST_CURRENCY_USD
            attrs[semconv.GEN_AI_USAGE_COST_SOURCE] = semconv.COST_SOURCE_LOCAL
        elif usage.reported:
            attrs[semconv.LLMTRACE_COST_UNPRICED] = True
            _set_if(attrs, semconv.LLMTRACE_COST_UNPRICED_REASON, self._unpriced_reason)

    def _content(self) -> Attrs:
        """The content attributes, as JSON text, serialised once (scrubbed, redacted, bounded, all
        within ``max_span_content``) for the span and the details event alike."""
        content = self._content_attrs
        if content is None:
            content = self._content_attrs = {}
            self._set_content(content, semconv.GEN_AI_SYSTEM_INSTRUCTIONS, self.system_instructions)
            self._set_content(content, semconv.GEN_AI_INPUT_MESSAGES, self.input_messages)
            self._set_content(content, semconv.GEN_AI_OUTPUT_MESSAGES, self.output_messages)
            self._set_content(content, semconv.GEN_AI_TOOL_DEFINITIONS, self.tool_definitions)
        return content

    def details_attributes(self) -> dict[str, Any]:
        """The attributes of the ``gen_ai.client.inference.operation.details`` event: every
        attribute of the span, content structured. Call once the invocation has ended."""
        attributes: dict[str, Any] = model_request_attributes(
            self.operation,
            self.provider,
            self.request_model,
            self.stream,
            self.server_address,
            self.server_port,
        )
        self._set_call_attributes(attributes)
        for key, text in self._content().items():
            attributes[key] = _structured(str(text))
        if self._truncated:
            attributes[semconv.LLMTRACE_CONTENT_TRUNCATED] = list(self._truncated)
        if self.error_type is not None:
            attributes[semconv.ERROR_TYPE] = self.error_type
        return attributes

    def _record(self, duration: float, error_type: str | None) -> None:
        handler = self._handler
        if handler.disabled:
            return
        usage = self.usage
        billed = not self.cache_hit
        status: RecordStatus = "success"
        if error_type is not None:
            status = "cancelled" if error_type == "cancelled" else "error"
        elif self._cancelled:
            status = "cancelled"
        span_context = self.span.get_span_context()
        record = UsageRecord(
            operation=self.operation,
            provider=self.provider,
            request_model=self.request_model,
            response_model=self.response_model,
            framework=self.framework,
            input_tokens=usage.input_tokens if billed else 0,
            output_tokens=usage.output_tokens if billed else 0,
            cache_read_tokens=usage.cache_read_tokens if billed else 0,
            cache_write_tokens=usage.cache_write_tokens if billed else 0,
            reasoning_tokens=usage.reasoning_tokens if billed else 0,
            cost=self._cost_value,
            duration_s=duration,
            time_to_first_chunk_s=self.time_to_first_chunk if self.stream else None,
            streamed=self.stream,
            status=status,
            error_type=error_type,
            cache_hit=self.cache_hit,
            trace_id=format(span_context.trace_id, "032x"),
            span_id=format(span_context.span_id, "016x"),
            start_time_unix_nano=self._start_time_ns,
            dimensions=dict(self.dimensions),
            cache_write_1h_tokens=usage.cache_write_1h_tokens if billed else 0,
            service_tier=usage.service_tier if billed else None,
            unpriced_reason=self._unpriced_reason,
        )
        handler.instruments.record_usage(record)
        usage_sinks.emit(record)
        if (
            settings.content.mode.on_event
            and self.operation != semconv.OP_EMBEDDINGS  # the conventions define it for inference only
            and (span_context.trace_flags.sampled or not span_context.is_valid)
        ):
            # not for a call whose trace was sampled out: its content goes where its spans go
            # (a call traced by no tracer at all, an invalid span context, still has its event)
            handler.emit_inference_details(self)


class ToolInvocation(Invocation):
    operation = semconv.OP_EXECUTE_TOOL

    def __init__(
        self,
        handler: TelemetryHandler,
        span: Span,
        agent: AgentInvocation | None,
        start_perf: float,
        *,
        name: str,
        tool_type: str | None,
    ) -> None:
        super().__init__(handler, span, agent, start_perf)
        self.name = name
        self.tool_type = tool_type
        self.call_id: str | None = None
        self.arguments: Any = None
        self.result: Any = None
        if agent is not None:
            agent.tool_calls += 1

    def _set_end_attributes(self, attrs: Attrs) -> None:
        _set_if(attrs, semconv.GEN_AI_TOOL_CALL_ID, self.call_id)
        if settings.content.mode.on_span:
            self._set_content(attrs, semconv.GEN_AI_TOOL_CALL_ARGUMENTS, self.arguments)
            if self.error_type is None:
                self._set_content(attrs, semconv.GEN_AI_TOOL_CALL_RESULT, self.result)

    def _record(self, duration: float, error_type: str | None) -> None:
        instruments = self._handler.instruments
        attrs: dict[str, AttributeValue] = {
            semconv.GEN_AI_TOOL_NAME: instruments.name(semconv.GEN_AI_TOOL_NAME, self.name)
        }
        if error_type:
            attrs[semconv.ERROR_TYPE] = error_type
        if self.agent is not None and self.agent.name:
            attrs[semconv.GEN_AI_AGENT_NAME] = instruments.name(semconv.GEN_AI_AGENT_NAME, self.agent.name)
        if self.tool_type:
            attrs[semconv.GEN_AI_TOOL_TYPE] = self.tool_type
        instruments.tool_duration.record(duration, attrs)


class AgentInvocation(Invocation):
    operation = semconv.OP_INVOKE_AGENT

    def __init__(
        self,
        handler: TelemetryHandler,
        span: Span,
        agent: AgentInvocation | None,
        start_perf: float,
        *,
        name: str | None,
    ) -> None:
        super().__init__(handler, span, agent, start_perf)
        self.name = name
        self.request_model: str | None = None
        self.conversation_id: str | None = None
        self.inference_calls = 0
        self.tool_calls = 0
        self.step_count = 0
        self.input_messages: Any = None
        self.output_messages: Any = None
        self.system_instructions: Any = None
        """The agent's own instructions (its system prompt) as the conventions' parts; content."""

    @never_raise
    def step(
        self,
        kind: str,
        *,
        tool_name: str | None = None,
        tool_call_id: str | None = None,
        agent_name: str | None = None,
    ) -> None:
        """Add an ``llmtrace.agent.step`` event (index from 1 within this invocation)."""
        if kind not in semconv.AGENT_STEP_KINDS:
            raise ValueError(f"unknown agent step kind {kind!r}")
        self.step_count += 1
        if not self.span.is_recording():
            return
        attrs: dict[str, AttributeValue] = {
            semconv.LLMTRACE_AGENT_STEP_INDEX: self.step_count,
            semconv.LLMTRACE_AGENT_STEP_KIND: kind,
        }
        name = agent_name or self.name
        if name:
            attrs[semconv.GEN_AI_AGENT_NAME] = name[:MAX_NAME_LENGTH]
        _set_if(attrs, semconv.GEN_AI_TOOL_NAME, tool_name[:MAX_NAME_LENGTH] if tool_name else None)
        _set_if(attrs, semconv.GEN_AI_TOOL_CALL_ID, tool_call_id[:MAX_NAME_LENGTH] if tool_call_id else None)
        self.span.add_event(semconv.LLMTRACE_AGENT_STEP_EVENT, attrs)

    def _set_end_attributes(self, attrs: Attrs) -> None:
        _set_if(attrs, semconv.GEN_AI_REQUEST_MODEL, self.request_model)
        _set_if(attrs, semconv.GEN_AI_CONVERSATION_ID, self.conversation_id)
        if settings.content.mode.on_span:
            self._set_content(attrs, semconv.GEN_AI_SYSTEM_INSTRUCTIONS, self.system_instructions)
            self._set_content(attrs, semconv.GEN_AI_INPUT_MESSAGES, self.input_messages)
            self._set_content(attrs, semconv.GEN_AI_OUTPUT_MESSAGES, self.output_messages)

    def _record(self, duration: float, error_type: str | None) -> None:
        instruments = self._handler.instruments
        attrs: dict[str, AttributeValue] = {}
        if self.name:
            attrs[semconv.GEN_AI_AGENT_NAME] = instruments.name(semconv.GEN_AI_AGENT_NAME, self.name)
        count_attrs = dict(attrs)
        if self.request_model:
            attrs[semconv.GEN_AI_REQUEST_MODEL] = self.request_model
        if error_type:
            attrs[semconv.ERROR_TYPE] = error_type
        instruments.agent_duration.record(duration, attrs)
        instruments.agent_inference_calls.record(self.inference_calls, count_attrs)
        instruments.agent_tool_calls.record(self.tool_calls, count_attrs)


class WorkflowInvocation(Invocation):
    operation = semconv.OP_INVOKE_WORKFLOW

    def __init__(
        self,
        handler: TelemetryHandler,
        span: Span,
        agent: AgentInvocation | None,
        start_perf: float,
        *,
        name: str | None,
    ) -> None:
        super().__init__(handler, span, agent, start_perf)
        self.name = name
        self.input_messages: Any = None
        self.output_messages: Any = None

    def _set_end_attributes(self, attrs: Attrs) -> None:
        if settings.content.mode.on_span:
            self._set_content(attrs, semconv.GEN_AI_INPUT_MESSAGES, self.input_messages)
            self._set_content(attrs, semconv.GEN_AI_OUTPUT_MESSAGES, self.output_messages)

    def _record(self, duration: float, error_type: str | None) -> None:
        instruments = self._handler.instruments
        attrs: dict[str, AttributeValue] = {}
        if self.name:
            attrs[semconv.GEN_AI_WORKFLOW_NAME] = instruments.name(semconv.GEN_AI_WORKFLOW_NAME, self.name)
        if error_type:
            attrs[semconv.ERROR_TYPE] = error_type
        instruments.workflow_duration.record(duration, attrs)


class RetrievalInvocation(Invocation):
    operation = semconv.OP_RETRIEVAL

    def __init__(
        self,
        handler: TelemetryHandler,
        span: Span,
        agent: AgentInvocation | None,
        start_perf: float,
    ) -> None:
        super().__init__(handler, span, agent, start_perf)
        self.query: str | None = None
        self.documents: list[dict[str, Any]] | None = None
        """``[{"id": ..., "score": ..., "content": ...}]``: ids and scores are recorded always,
        content only when capture is on."""

    def _set_end_attributes(self, attrs: Attrs) -> None:
        documents = self.documents
        capture = settings.content.mode.on_span
        if documents is not None:
            attrs[semconv.LLMTRACE_RETRIEVAL_DOCUMENT_COUNT] = len(documents)
            listed = [
                {k: v for k, v in doc.items() if capture or k != "content"}
                for doc in documents[:MAX_LISTED_DOCUMENTS]
            ]
            self._set_content(attrs, semconv.GEN_AI_RETRIEVAL_DOCUMENTS, listed)
        if capture:
            self._set_content(attrs, semconv.GEN_AI_RETRIEVAL_QUERY_TEXT, self.query)


class RerankInvocation(RetrievalInvocation):
    """A reranker call: the documents it kept, with their new scores."""

    operation = semconv.OP_RERANK
