"""``LangChainInstrumentor``: one inheritable handler in every callback manager, plus call-scope wrappers.

- LangChain's configure hook (``register_configure_hook``, run by every ``CallbackManager.configure``,
  i.e. once per run) adds the instrumentor's handler, inheritable, unless the manager already holds
  an :class:`LLMTraceCallbackHandler`. A hand-registered one wins: ``add_handler`` of one, and
  ``merge`` with a manager holding one, remove the automatic handler, so each run is traced once.
- ``BaseChatModel._generate_with_cache`` / ``_agenerate_with_cache``, ``BaseLLM._generate_helper`` /
  ``_agenerate_helper`` and the ``_stream`` / ``_astream`` of every model class: the model span is
  made current for the duration of the call (attached and detached in the same frame, never
  across callbacks), so spans of HTTP clients and provider SDKs nest under it. These wrappers
  also tell the span which LLM cache was consulted.
- the ``acquire`` / ``aacquire`` of a chat model's ``rate_limiter`` class, on first use: the time a
  call waits for it (``llmtrace.rate_limit.wait``; LangChain acquires it after the call's run has
  started, so it is not counted in the time to first chunk).
- ``BaseLLM.generate`` / ``agenerate`` and ``get_prompts`` / ``aget_prompts``: spans for
  completion prompts answered from the cache (see ``_cache``).
- ``BaseTool.arun`` and ``AsyncCallbackManager.on_tool_start``: a tool call whose task is cancelled
  (a timeout around ``await tool.ainvoke(...)``) ends as cancelled; LangChain reports no error for
  it (``arun`` catches ``Exception`` only), so only a cancelled chain around it would.
- ``langchain_core.tools.base.set_config_context``: the copied context a tool's own code runs in
  (``BaseTool.run`` / ``arun``) gets the tool's span as current, so spans the tool starts nest under
  ``execute_tool`` (nothing to detach: the copy is the tool's alone).
- the ``embed_*`` / ``aembed_*`` methods of every ``Embeddings`` class and the
  ``_get_relevant_documents`` / ``_aget_relevant_documents`` of every retriever class, present and
  future: embeddings spans (embedding models fire no callbacks) and the retrieval call scope they
  nest in (see ``_embeddings``).
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from contextvars import ContextVar
from typing import Any, cast

import wrapt
from langchain_core.caches import BaseCache
from langchain_core.globals import get_llm_cache
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from llmtrace import _fork
from llmtrace._invocation import ModelInvocation, ToolInvocation
from llmtrace._safety import report_internal_error
from llmtrace_langchain import _cache, _embeddings
from llmtrace_langchain._handler import LLMTraceCallbackHandler, traced_invocation

_CALLBACKS = "langchain_core.callbacks.base"
_MANAGER = "langchain_core.callbacks.manager"
_TOOLS = "langchain_core.tools.base"
_CHAT = "langchain_core.language_models.chat_models"
_LLMS = "langchain_core.language_models.llms"

_state_lock = _fork.lock()
_stream_patched: list[tuple[type, str, Any]] = []
"""(class, method name, original) of every method patched on first use (streams, rate limiters)."""
_hook_registered = False


class _AutoHandler(LLMTraceCallbackHandler):
    """The handler the instrumentor injects (told apart from hand-registered ones)."""


class LangChainInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments LangChain and LangGraph (``instrument(tracer_provider=..., meter_provider=...)``)."""

    _handler: _AutoHandler | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("langchain-core >= 1.1.2",)

    def _instrument(self, **kwargs: Any) -> None:
        handler = _AutoHandler(
            tracer_provider=kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
            logger_provider=kwargs.get("logger_provider"),
            keep_chain_spans=bool(kwargs.get("keep_chain_spans", False)),
        )
        LangChainInstrumentor._handler = handler
        _register_configure_hook()
        wrapt.wrap_function_wrapper(_CALLBACKS, "BaseCallbackManager.add_handler", _add_handler)
        wrapt.wrap_function_wrapper(_CALLBACKS, "BaseCallbackManager.merge", _merge)
        wrapt.wrap_function_wrapper(_CHAT, "BaseChatModel._generate_with_cache", _chat_scope)
        wrapt.wrap_function_wrapper(_CHAT, "BaseChatModel._agenerate_with_cache", _achat_scope)
        wrapt.wrap_function_wrapper(_LLMS, "BaseLLM._generate_helper", _llm_scope)
        wrapt.wrap_function_wrapper(_LLMS, "BaseLLM._agenerate_helper", _allm_scope)
        wrapt.wrap_function_wrapper(_TOOLS, "BaseTool.arun", _atool_scope)
        if hasattr(importlib.import_module(_TOOLS), "set_config_context"):
            wrapt.wrap_function_wrapper(_TOOLS, "set_config_context", _tool_context)
        wrapt.wrap_function_wrapper(_MANAGER, "AsyncCallbackManager.on_tool_start", _note_tool_run)
        for module, cls in ((_CHAT, "BaseChatModel"), (_LLMS, "BaseLLM")):
            wrapt.wrap_function_wrapper(module, f"{cls}.stream", _patch_stream_method)
            wrapt.wrap_function_wrapper(module, f"{cls}.astream", _patch_stream_method)
        wrapt.wrap_function_wrapper(_LLMS, "BaseLLM.generate", _cache.generate_wrapper)
        wrapt.wrap_function_wrapper(_LLMS, "BaseLLM.agenerate", _cache.agenerate_wrapper)
        wrapt.wrap_function_wrapper(_LLMS, "get_prompts", _cache.get_prompts_wrapper)
        wrapt.wrap_function_wrapper(_LLMS, "aget_prompts", _cache.aget_prompts_wrapper)
        try:
            _embeddings.install(handler)
        except Exception as exc:  # the rest of the instrumentation stands
            report_internal_error(f"{__name__}.instrument_embeddings", exc)

    def _uninstrument(self, **kwargs: Any) -> None:
        import langchain_core.callbacks.base as callbacks_base
        import langchain_core.callbacks.manager as callbacks_manager
        import langchain_core.language_models.chat_models as chat_models
        import langchain_core.language_models.llms as llms
        import langchain_core.tools.base as tools_base

        _unwrap(callbacks_base.BaseCallbackManager, "add_handler")
        _unwrap(callbacks_base.BaseCallbackManager, "merge")
        for name in ("_generate_with_cache", "_agenerate_with_cache", "stream", "astream"):
            _unwrap(chat_models.BaseChatModel, name)
        for name in ("_generate_helper", "_agenerate_helper", "stream", "astream", "generate", "agenerate"):
            _unwrap(llms.BaseLLM, name)
        _unwrap(tools_base.BaseTool, "arun")
        _unwrap(tools_base, "set_config_context")
        _unwrap(callbacks_manager.AsyncCallbackManager, "on_tool_start")
        _unwrap(llms, "get_prompts")
        _unwrap(llms, "aget_prompts")
        _embeddings.uninstall()
        with _state_lock:
            for cls, name, original in reversed(_stream_patched):
                setattr(cls, name, original)
            _stream_patched.clear()
        handler = LangChainInstrumentor._handler
        LangChainInstrumentor._handler = None
        if handler is not None:
            handler.close()


def _unwrap(owner: Any, name: str) -> None:
    attr = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
    if isinstance(attr, wrapt.FunctionWrapper):
        setattr(owner, name, attr.__wrapped__)


# ---- handler injection -----------------------------------------------------------------------------
class _AutoHandlerVar:
    """What LangChain's configure hook reads the handler to add from (it calls only ``get()``, as on
    the ContextVar it expects): the instrumentor's handler while instrumented, else None. Unlike a
    ContextVar's value, it is the same in every thread and task."""

    def get(self) -> LLMTraceCallbackHandler | None:
        return LangChainInstrumentor._handler


def _register_configure_hook() -> None:
    """Register the hook once per process (LangChain has no unregister; uninstrument makes it inert)."""
    global _hook_registered
    from langchain_core.tracers.context import register_configure_hook

    with _state_lock:
        if _hook_registered:
            return
        # inheritable; skipped when the manager already holds any LLMTraceCallbackHandler
        register_configure_hook(cast("ContextVar[Any]", _AutoHandlerVar()), True, LLMTraceCallbackHandler)
        _hook_registered = True


def _drop(manager: Any, handler: LLMTraceCallbackHandler) -> None:
    if handler in manager.handlers:
        manager.handlers.remove(handler)
    if handler in manager.inheritable_handlers:
        manager.inheritable_handlers.remove(handler)


def _add_handler(wrapped: Callable[..., None], instance: Any, args: Any, kwargs: Any) -> None:
    wrapped(*args, **kwargs)
    try:
        added = args[0] if args else kwargs.get("handler")
        auto = LangChainInstrumentor._handler
        if auto is not None and isinstance(added, LLMTraceCallbackHandler) and added is not auto:
            _drop(instance, auto)
    except Exception as exc:
        report_internal_error(f"{__name__}.BaseCallbackManager.add_handler", exc)


def _merge(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    merged = wrapped(*args, **kwargs)
    try:
        auto = LangChainInstrumentor._handler
        if auto is not None and any(
            isinstance(h, LLMTraceCallbackHandler) and h is not auto
            for h in (*merged.handlers, *merged.inheritable_handlers)
        ):
            _drop(merged, auto)  # the hand-registered handler of one side wins
    except Exception as exc:
        report_internal_error(f"{__name__}.BaseCallbackManager.merge", exc)
    return merged


# ---- call scopes --------------------------------------------------------------------------------------
def _model_invocation(
    run_manager: Any, cache_source: str | None = None, exact_cache: bool = False
) -> ModelInvocation | None:
    """The model invocation of ``run_manager``'s run, from whichever llmtrace handler traces it."""
    traced = traced_invocation(run_manager, ModelInvocation)
    if traced is None:
        return None
    invocation = traced[1]
    if exact_cache:
        invocation.cache_source = cache_source
    return invocation


def _chat_cache_source(model: Any) -> str | None:
    cache = model.cache
    if cache is False:
        return None
    found = cache if isinstance(cache, BaseCache) else get_llm_cache()
    return None if found is None else type(found).__name__


def _enter(instance: Any, kwargs: Any, chat: bool) -> object | None:
    try:
        source = _chat_cache_source(instance) if chat else None
        invocation = _model_invocation(kwargs.get("run_manager"), source, chat)
        if invocation is None:
            return None
        if chat:
            # the call in progress here: in a batch every run starts before the first is made, so
            # the one last started is not it (its stream, rate limiter wait: see _lookup, _waiting_call)
            _cache.note_model_start(invocation)
            if getattr(instance, "rate_limiter", None) is not None:
                _ensure_limiter_patched(instance)
        return otel_context.attach(invocation.context)
    except Exception as exc:
        report_internal_error(f"{__name__}.call_scope", exc)
        return None


def _exit(token: object | None) -> None:
    if token is None:
        return
    try:
        otel_context.detach(token)  # type: ignore[arg-type]
    except Exception as exc:
        report_internal_error(f"{__name__}.call_scope", exc)


def _chat_scope(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    token = _enter(instance, kwargs, True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _exit(token)


async def _achat_scope(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    token = _enter(instance, kwargs, True)
    try:
        return await wrapped(*args, **kwargs)
    except asyncio.CancelledError as error:
        _cancelled(kwargs.get("run_manager"), error, tool=False)
        raise
    finally:
        _exit(token)


def _cancelled(run_manager: Any, error: asyncio.CancelledError, *, tool: bool) -> None:
    """A call whose task was cancelled, which LangChain does not report: send the error callback
    it would have. A chat call: the cancellation leaves ``BaseChatModel.agenerate`` from its
    ``asyncio.gather`` (completion LLMs report it themselves: ``BaseLLM._agenerate_helper`` does).
    A tool: ``BaseTool.arun`` reports ``Exception`` only."""
    try:
        traced = traced_invocation(run_manager, ToolInvocation if tool else ModelInvocation)
        if traced is None:
            return
        if tool:
            traced[0].on_tool_error(error, run_id=run_manager.run_id)
        else:
            traced[0].on_llm_error(error, run_id=run_manager.run_id)
    except Exception as exc:
        report_internal_error(f"{__name__}.cancelled", exc)


_tool_runs: ContextVar[list[Any] | None] = ContextVar("llmtrace_langchain_tool_runs", default=None)
"""While ``BaseTool.arun`` runs: a list that receives the run manager its ``on_tool_start`` returns
(a list, so a start reported in a copied context still reaches it; the first one is the tool's)."""


async def _atool_scope(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    runs: list[Any] = []
    token = _tool_runs.set(runs)
    try:
        return await wrapped(*args, **kwargs)
    except asyncio.CancelledError as error:
        if runs:
            _cancelled(runs[0], error, tool=True)
        raise
    finally:
        _forget_tool_runs(token)


class _ToolContext:
    """``set_config_context`` of a tool's run (``BaseTool.run`` / ``arun`` run the tool's own code
    in the copied context it yields), with the tool's span made current in that copy: spans the
    tool's code starts (HTTP and database clients, the user's own) nest under ``execute_tool``.
    The copy is the tool's alone and is dropped after it, so nothing is detached."""

    def __init__(self, scope: Any, config: Any) -> None:
        self._scope = scope
        self._config = config

    def __enter__(self) -> Any:
        context = self._scope.__enter__()
        try:
            _make_tool_span_current(context, self._config)
        except Exception as exc:
            report_internal_error(f"{__name__}.tool_context", exc)
        return context

    def __exit__(self, *exc_info: Any) -> Any:
        return self._scope.__exit__(*exc_info)


def _tool_context(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    return _ToolContext(wrapped(*args, **kwargs), args[0] if args else kwargs.get("config"))


def _make_tool_span_current(context: Any, config: Any) -> None:
    """In ``context`` (a ``contextvars.Context``), attach the span the tool run's children hang
    under: the child callback manager in ``config`` names the tool's run as its parent."""
    manager = config.get("callbacks") if isinstance(config, dict) else None
    run_id = getattr(manager, "parent_run_id", None)
    if manager is None or run_id is None:
        return
    for handler in manager.handlers:
        if isinstance(handler, LLMTraceCallbackHandler):
            invocation = handler.child_parent(run_id)
            if invocation is not None:
                context.run(otel_context.attach, invocation.context)
            return


def _forget_tool_runs(token: Any) -> None:
    try:
        _tool_runs.reset(token)
    except Exception as exc:  # a coroutine driven from another context: leave the variable be
        report_internal_error(f"{__name__}.tool_scope", exc)


async def _note_tool_run(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    run_manager = await wrapped(*args, **kwargs)
    _note(run_manager)
    return run_manager


def _note(run_manager: Any) -> None:
    try:
        runs = _tool_runs.get()
        if runs is not None and not runs:
            runs.append(run_manager)
    except Exception as exc:
        report_internal_error(f"{__name__}.tool_scope", exc)


def _single_run_manager(args: Any, kwargs: Any) -> dict[str, Any]:
    try:
        managers = kwargs.get("run_managers", args[2] if len(args) > 2 else None)
        return {"run_manager": managers[0] if isinstance(managers, list) and len(managers) == 1 else None}
    except Exception as exc:
        report_internal_error(f"{__name__}.call_scope", exc)
        return {}


def _llm_scope(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    token = _enter(instance, _single_run_manager(args, kwargs), False)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _exit(token)


async def _allm_scope(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    token = _enter(instance, _single_run_manager(args, kwargs), False)
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _exit(token)


# ---- rate limiters: the time a call waits for its model's limiter, on first use ---------------------
def _ensure_limiter_patched(model: Any) -> None:
    limiter = model.rate_limiter
    if limiter is not None:
        for name, factory in (("acquire", _wrap_acquire), ("aacquire", _wrap_aacquire)):
            _patch_once(type(limiter), name, factory)


def _waiting_call() -> ModelInvocation | None:
    """The model call a rate limiter is acquired for: the one in progress in this context (LangChain
    acquires it right after the call's run starts, or inside ``_generate_with_cache``, whose scope
    names its call), if it has not waited yet nor streamed anything."""
    invocation = _cache.last_model_started()
    if invocation is None or invocation.rate_limit_wait is not None:
        return None
    return invocation if invocation.time_to_first_chunk is None else None


def _wrap_acquire(original: Callable[..., bool]) -> Callable[..., bool]:
    def acquire(self: Any, *args: Any, **kwargs: Any) -> bool:
        try:
            invocation = _waiting_call()
        except Exception as exc:
            report_internal_error(f"{__name__}.rate_limiter", exc)
            invocation = None
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            if invocation is not None:
                invocation.rate_limit_wait = time.perf_counter() - started

    acquire.__wrapped__ = original  # type: ignore[attr-defined]
    return acquire


def _wrap_aacquire(original: Callable[..., Awaitable[bool]]) -> Callable[..., Awaitable[bool]]:
    async def aacquire(self: Any, *args: Any, **kwargs: Any) -> bool:
        try:
            invocation = _waiting_call()
        except Exception as exc:
            report_internal_error(f"{__name__}.rate_limiter", exc)
            invocation = None
        started = time.perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            if invocation is not None:
                invocation.rate_limit_wait = time.perf_counter() - started

    aacquire.__wrapped__ = original  # type: ignore[attr-defined]
    return aacquire


# ---- streams: wrap the model class's own _stream/_astream on first use ----------------------------------
def _patch_stream_method(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    try:
        _ensure_stream_patched(type(instance))
        if getattr(instance, "rate_limiter", None) is not None:  # acquired as the stream's run starts
            _ensure_limiter_patched(instance)
    except Exception as exc:
        report_internal_error(f"{__name__}.patch_stream", exc)
    return wrapped(*args, **kwargs)


def _ensure_stream_patched(model_class: type) -> None:
    for name, factory in (("_stream", _wrap_sync_stream), ("_astream", _wrap_async_stream)):
        _patch_once(model_class, name, factory)


def _patch_once(cls: type, name: str, factory: Callable[[Any], Any]) -> None:
    """Replace method ``name`` of the class along ``cls``'s MRO that defines it with
    ``factory(original)``, once (undone by ``_uninstrument``)."""
    owner = next((c for c in cls.__mro__ if name in c.__dict__), None)
    if owner is None:
        return
    current = owner.__dict__[name]
    if getattr(current, "_llmtrace_wrapped", False):
        return
    with _state_lock:
        if getattr(owner.__dict__[name], "_llmtrace_wrapped", False):
            return
        patched = factory(current)
        setattr(patched, "_llmtrace_wrapped", True)  # noqa: B010
        _stream_patched.append((owner, name, current))
        setattr(owner, name, patched)


def _lookup(kwargs: Any) -> ModelInvocation | None:
    try:
        run_manager = kwargs.get("run_manager")
        if run_manager is None:  # BaseChatModel.stream passes none: the run started just before
            return _cache.last_model_started()
        return _model_invocation(run_manager)
    except Exception as exc:
        report_internal_error(f"{__name__}.stream_scope", exc)
        return None


def _wrap_sync_stream(original: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    def _stream(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        iterator = original(self, *args, **kwargs)
        invocation = _lookup(kwargs)
        if invocation is None:
            yield from iterator
            return
        context = invocation.context
        while True:
            token = otel_context.attach(context)
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            finally:
                otel_context.detach(token)
            yield chunk

    _stream.__wrapped__ = original  # type: ignore[attr-defined]
    return _stream


def _wrap_async_stream(original: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def _astream(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        iterator = original(self, *args, **kwargs)
        invocation = _lookup(kwargs)
        if invocation is None:
            async for chunk in iterator:
                yield chunk
            return
        context = invocation.context
        while True:
            token = otel_context.attach(context)
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                return
            finally:
                otel_context.detach(token)
            yield chunk

    _astream.__wrapped__ = original  # type: ignore[attr-defined]
    return _astream
