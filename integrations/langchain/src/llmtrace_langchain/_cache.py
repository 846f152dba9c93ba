"""Spans for completion-LLM prompts answered from LangChain's cache.

``BaseLLM.generate`` looks prompts up with ``get_prompts`` before it fires any callback and
fires none at all for prompts the cache answers. The instrumentor wraps ``BaseLLM.generate``
(to remember which model call and callbacks are in progress) and ``get_prompts`` (to see the
hits): each hit gets a ``text_completion`` span with ``llmtrace.cache.hit=true``; the misses
get ``llmtrace.cache.hit=false`` through :func:`pending_cache_source`, read by the handler's
``on_llm_start`` in the same call.
"""

from __future__ import annotations

import contextvars
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from llmtrace._invocation import ModelInvocation
from llmtrace._safety import never_raise, report_internal_error

_call: contextvars.ContextVar[tuple[Any, Any, Any, Any] | None] = contextvars.ContextVar(
    "llmtrace_langchain_llm_call", default=None
)
_miss_source: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "llmtrace_langchain_cache_miss", default=None
)


_last_model: contextvars.ContextVar[weakref.ref[ModelInvocation] | None] = contextvars.ContextVar(
    "llmtrace_langchain_last_model", default=None
)


def note_model_start(invocation: ModelInvocation) -> None:
    """Remember the model call just started in this context (not an OTel context: nothing is attached).

    ``BaseChatModel.stream`` calls ``_stream`` without its run manager; the stream wrapper
    finds the run it belongs to here, right after ``on_chat_model_start`` in the same context.
    """
    _last_model.set(weakref.ref(invocation))


def last_model_started() -> ModelInvocation | None:
    ref = _last_model.get()
    invocation = None if ref is None else ref()
    return None if invocation is None or invocation.ended else invocation


def pending_cache_source() -> str | None:
    """The cache class consulted by the completion call in progress (its prompts missed), if any."""
    return _miss_source.get()


def _call_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    try:
        callbacks = kwargs.get("callbacks", args[2] if len(args) > 2 else None)
        return callbacks, kwargs.get("tags"), kwargs.get("metadata")
    except Exception as exc:
        report_internal_error(f"{__name__}.generate", exc)
        return None, None, None


def generate_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
    token = _call.set((instance, *_call_args(args, kwargs)))
    miss = _miss_source.set(None)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _miss_source.reset(miss)
        _call.reset(token)


async def agenerate_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
) -> Any:
    token = _call.set((instance, *_call_args(args, kwargs)))
    miss = _miss_source.set(None)
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _miss_source.reset(miss)
        _call.reset(token)


def get_prompts_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
) -> Any:
    result = wrapped(*args, **kwargs)
    _after_lookup(args, kwargs, result)
    return result


async def aget_prompts_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
) -> Any:
    result = await wrapped(*args, **kwargs)
    _after_lookup(args, kwargs, result)
    return result


@never_raise
def _after_lookup(args: tuple[Any, ...], kwargs: Mapping[str, Any], result: Any) -> None:
    call = _call.get()
    if call is None:
        return
    from langchain_core.language_models.llms import _resolve_cache

    prompts: Sequence[str] = kwargs.get("prompts", args[1] if len(args) > 1 else ())
    cache = _resolve_cache(cache=kwargs.get("cache", args[2] if len(args) > 2 else None))
    if cache is None:
        return
    source = type(cache).__name__
    _miss_source.set(source)
    existing: Mapping[int, Sequence[Any]] = result[0]
    if not existing:
        return
    llm, callbacks, tags, metadata = call
    for index, cached in existing.items():
        _emit_hit(
            llm,
            _per_prompt(callbacks, index),
            _per_prompt(tags, index, nested=True),
            _per_prompt(metadata, index),
            prompts[index],
            cached,
            source,
        )


def _per_prompt(value: Any, index: int, *, nested: bool = False) -> Any:
    """``generate`` takes one value for all prompts or a list with one per prompt."""
    from langchain_core.callbacks import BaseCallbackManager

    if (
        isinstance(value, list)
        and value
        and (
            isinstance(value[0], (list, BaseCallbackManager)) or value[0] is None
            if not nested
            else isinstance(value[0], list)
        )
    ):
        return value[index] if index < len(value) else None
    if isinstance(value, list) and value and isinstance(value[0], dict) and not nested:
        return value[index] if index < len(value) else None
    return value


def _emit_hit(
    llm: Any, callbacks: Any, tags: Any, metadata: Any, prompt: str, cached: Sequence[Any], source: str
) -> None:
    from langchain_core.callbacks import CallbackManager

    from llmtrace_langchain._handler import LLMTraceCallbackHandler

    ls_params: Mapping[str, Any] = llm._get_ls_params()
    manager = CallbackManager.configure(
        callbacks, llm.callbacks, llm.verbose, tags, llm.tags, {**(metadata or {}), **ls_params}, llm.metadata
    )
    handlers = [h for h in manager.handlers if isinstance(h, LLMTraceCallbackHandler)]
    if not handlers:
        return
    params: Mapping[str, Any] = getattr(llm, "_identifying_params", None) or {}
    merged_metadata = {**manager.metadata, **manager.inheritable_metadata}
    for handler in handlers[:1]:
        handler.cached_completion(
            llm._serialized, params, merged_metadata, manager.parent_run_id, prompt, cached, source
        )
