"""``OpenAIResponses.structured_predict``: the request and response of its ``responses.parse`` call.

llama-index-llms-openai's ``OpenAIResponses`` implements ``structured_predict`` and
``astructured_predict`` with a call of its openai client's ``responses.parse``, not of ``chat``:
no LlamaIndex event reports that request or its response. Their dispatcher span is the model call
(``Kind.PARSE``); to give it what was sent and what came back, openai's ``Responses.parse`` and
``AsyncResponses.parse`` are wrapped while llmtrace is instrumented, from the first such span on
(importing openai is not llmtrace's to do: it is imported by then). The wrapper passes every call
through unchanged; only a call made inside such a span (LlamaIndex's active span id names it) gives
that span the parameters it sends (the ones it was built with are not those), its response's usage,
id, model and status, and (content capture only) its output text.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any

import wrapt
from llama_index_instrumentation.span import active_span_id

from llmtrace import ModelInvocation, _fork, _parts, semconv
from llmtrace._safety import never_raise
from llmtrace_llama_index._classify import Kind
from llmtrace_llama_index._event_handler import _apply_response
from llmtrace_llama_index._runs import Node, Runs
from llmtrace_llama_index._span_handler import LlamaIndexSpanHandler, capture_content

_MODULE = "openai.resources.responses.responses"
_CLASSES = ("Responses", "AsyncResponses")
_METHOD = "parse"
_lock = _fork.lock()
_runs: Runs | None = None
"""The run map of the instrumentation the wrappers report to (None: not instrumented)."""


def install(runs: Runs) -> None:
    """Wrap openai's ``parse`` methods (once), reporting to ``runs``; nothing if openai is not loaded
    (an ``OpenAIResponses`` span starts only once it is; its resources module, openai loads only when a
    client first uses it) or has no such methods."""
    global _runs
    with _lock:
        _runs = runs
        module = sys.modules.get(_MODULE)
        if module is None and "openai" in sys.modules:
            try:
                module = importlib.import_module(_MODULE)
            except ImportError:  # an openai without the Responses API
                return
        for name in _CLASSES:
            cls = getattr(module, name, None) if module is not None else None
            method = vars(cls).get(_METHOD) if isinstance(cls, type) else None
            if method is None or isinstance(method, wrapt.FunctionWrapper):
                continue
            wrapper = _aparse if name.startswith("Async") else _parse
            setattr(cls, _METHOD, wrapt.FunctionWrapper(method, wrapper))


def uninstall() -> None:
    """Restore openai's ``parse`` methods and forget the run map."""
    global _runs
    with _lock:
        _runs = None
        module = sys.modules.get(_MODULE)
        for name in _CLASSES:
            cls = getattr(module, name, None) if module is not None else None
            method = vars(cls).get(_METHOD) if isinstance(cls, type) else None
            if isinstance(method, wrapt.FunctionWrapper):
                setattr(cls, _METHOD, method.__wrapped__)


def _parse(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    node = _target(kwargs)
    response = wrapped(*args, **kwargs)
    if node is not None:
        _record(node, response)
    return response


async def _aparse(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    node = _target(kwargs)
    response = await wrapped(*args, **kwargs)
    if node is not None:
        _record(node, response)
    return response


@never_raise
def _target(kwargs: Mapping[str, Any]) -> Node | None:
    """The node of the model call a ``parse`` call is made for (its ``structured_predict`` span, or
    the ``StructuredLLM.chat`` that called it), with the request parameters sent; None if there is none."""
    runs = _runs
    span_id = active_span_id.get()
    node = runs.nodes.peek(span_id) if runs is not None and span_id else None
    if runs is None or node is None or node.kind is not Kind.PARSE:
        return None
    owner = node if node.invocation is not None else runs.nodes.peek(node.host_id) if node.host_id else None
    invocation = owner.invocation if owner is not None else None
    if owner is None or not isinstance(invocation, ModelInvocation) or invocation.ended:
        return None
    sent = {key: value for key, value in kwargs.items() if isinstance(key, str)}
    LlamaIndexSpanHandler._describe_model(invocation, sent, None, capture_content())
    if sent.get("text_format") is not None:  # the output class: a JSON schema
        invocation.output_type = semconv.OUTPUT_TYPE_JSON
    return owner


@never_raise
def _record(node: Node, response: Any) -> None:
    """The response's usage, id, model, status (and its text, content capture only)."""
    invocation = node.invocation
    if not isinstance(invocation, ModelInvocation) or invocation.ended:
        return
    _apply_response(node, invocation, {"raw": response}, content=False)
    if capture_content():
        text = getattr(response, "output_text", None)
        parts = [{"type": "text", "content": text}] if isinstance(text, str) and text else []
        reasons = invocation.finish_reasons
        reason = _parts.output_finish_reason(reasons[0] if reasons else None, parts)
        invocation.output_messages = [{"role": "assistant", "parts": parts, "finish_reason": reason}]
