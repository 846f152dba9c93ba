"""The manual API, for code the frameworks don't see: tool and agent spans, agent steps, evaluations."""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags
from opentelemetry.util.types import AttributeValue

from llmtrace import _fork, semconv
from llmtrace._handler import TelemetryHandler
from llmtrace._invocation import MAX_NAME_LENGTH, MAX_VALUE_LENGTH, AgentInvocation, ToolInvocation, safe_text

_handler_lock = _fork.lock()
_handler: TelemetryHandler | None = None
_current_agent: contextvars.ContextVar[AgentInvocation | None] = contextvars.ContextVar(
    "llmtrace_current_agent", default=None
)
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
MAX_EXPLANATION = 4096
MAX_LABEL = 256


def default_handler() -> TelemetryHandler:
    """The handler of the manual API, bound to the global providers."""
    global _handler
    with _handler_lock:
        if _handler is None:
            _handler = TelemetryHandler(framework="manual")
        return _handler


def _reset_default_handler() -> None:
    global _handler
    with _handler_lock:
        _handler = None


def _parent() -> AgentInvocation | None:
    agent = _current_agent.get()
    if agent is not None and not agent.ended and agent.span is trace.get_current_span():
        return agent
    return None


@contextlib.contextmanager
def tool_span(
    name: str,
    *,
    call_id: str | None = None,
    arguments: Any = None,
    description: str | None = None,
) -> Iterator[ToolInvocation]:
    """Trace a tool call as an ``execute_tool {name}`` span, child of the active span.

    Set ``.result`` on the yielded invocation to record the result (captured only when
    content capture is on). An exception ends the span with ERROR and is re-raised unchanged.
    """
    handler = default_handler()
    agent = _parent()
    invocation = handler.start_tool(name, call_id=call_id, description=description, parent=agent)
    invocation.arguments = arguments
    with trace.use_span(
        invocation.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    ):
        try:
            yield invocation
        except BaseException as exc:
            invocation.fail(exc)
            raise
    invocation.stop()


@contextlib.contextmanager
def agent_span(name: str | None, *, description: str | None = None) -> Iterator[AgentInvocation]:
    """Trace an agent invocation as an ``invoke_agent {name}`` span; tool spans and model calls
    inside it are counted in its metrics, and ``record_agent_step`` adds its step events."""
    invocation = default_handler().start_agent(name, description=description)
    token = _current_agent.set(invocation)
    try:
        with trace.use_span(
            invocation.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ):
            try:
                yield invocation
            except BaseException as exc:
                invocation.fail(exc)
                raise
    finally:
        _current_agent.reset(token)
    invocation.stop()


def record_agent_step(
    kind: str,
    *,
    tool_name: str | None = None,
    tool_call_id: str | None = None,
    agent_name: str | None = None,
    agent: AgentInvocation | None = None,
) -> None:
    """Add an ``llmtrace.agent.step`` event to ``agent`` or to the active :func:`agent_span`.

    ``kind`` is ``thought``, ``action``, ``observation`` or ``final`` (ValueError otherwise).
    Outside any agent span the call does nothing.
    """
    if kind not in semconv.AGENT_STEP_KINDS:
        raise ValueError(f"kind must be one of {sorted(semconv.AGENT_STEP_KINDS)}, got {kind!r}")
    target = agent or _current_agent.get()
    if target is not None:
        target.step(kind, tool_name=tool_name, tool_call_id=tool_call_id, agent_name=agent_name)


def record_evaluation(
    name: str,
    *,
    score: float | None = None,
    label: str | None = None,
    explanation: str | None = None,
    span: Span | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
    response_id: str | None = None,
) -> None:
    """Emit a ``gen_ai.evaluation.result`` event for a span.

    The evaluated span is ``span``, or the one named by ``trace_id``/``span_id`` (hex, as
    shown by Jaeger or ``llmtrace show``; the trace may have ended long ago: delayed
    feedback), or the active span. Give a ``score``, a ``label``, or both. ``name`` is cut to 256
    characters and ``response_id`` to 1,024, as names and identifiers are on spans.
    """
    if not name:
        raise ValueError("an evaluation needs a name")
    if score is None and label is None:
        raise ValueError("give a score, a label, or both")
    if score is not None:
        score = float(score)
    if (trace_id is None) != (span_id is None):
        raise ValueError("give both trace_id and span_id, or neither")
    if span is not None:
        context = trace.set_span_in_context(span)
    elif trace_id is not None and span_id is not None:
        trace_hex, span_hex = trace_id.lower().removeprefix("0x"), span_id.lower().removeprefix("0x")
        if not _HEX32.match(trace_hex) or not _HEX16.match(span_hex):
            raise ValueError("trace_id must be 32 hex digits and span_id 16 hex digits")
        remote = SpanContext(
            int(trace_hex, 16), int(span_hex, 16), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
        )
        context = trace.set_span_in_context(NonRecordingSpan(remote))
    else:
        context = None
    attributes: dict[str, AttributeValue] = {semconv.GEN_AI_EVALUATION_NAME: str(name)[:MAX_NAME_LENGTH]}
    if score is not None:
        attributes[semconv.GEN_AI_EVALUATION_SCORE_VALUE] = score
    for key, text, limit in (
        (semconv.GEN_AI_EVALUATION_SCORE_LABEL, label, MAX_LABEL),
        (semconv.GEN_AI_EVALUATION_EXPLANATION, explanation, MAX_EXPLANATION),
    ):
        if text is not None:
            safe = safe_text(key, str(text), limit)  # a judge's words may quote keys or content
            if safe is not None:
                attributes[key] = safe
    if response_id is not None:
        attributes[semconv.GEN_AI_RESPONSE_ID] = str(response_id)[:MAX_VALUE_LENGTH]
    default_handler().logger.emit(
        event_name=semconv.EVENT_EVALUATION_RESULT, context=context, attributes=attributes
    )
