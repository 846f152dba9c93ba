"""Embeddings spans, and the retriever call scope they nest in.

LangChain's embedding models fire no callbacks, so the instrumentor wraps them: every
``Embeddings`` implementation's ``embed_documents`` / ``embed_query`` / ``aembed_documents`` /
``aembed_query`` call gives one ``embeddings {model}`` span (provider from the class or its
``langchain_<provider>`` package, model from its ``model`` / ``model_name`` / ``deployment`` field,
dimension count from the first vector, number of texts; never the vectors, never the texts).
A call made while another one is in progress (a wrapper such as ``CacheBackedEmbeddings``
calling the model it wraps, the default ``aembed_*`` running the sync method in a thread) is
part of the outer call's span: one call, one span, one usage record.

Patching: implementations override these methods, so wrapping the base class is not enough.
At instrument time every class below ``Embeddings`` (``__subclasses__``, recursively) gets the
methods it defines in its own ``__dict__`` wrapped, and an ``__init_subclass__`` hook on the base
does the same for classes defined later, as they are defined. Uninstrument puts every original
function back (and removes the hook). The same mechanism gives every retriever's
``_get_relevant_documents`` / ``_aget_relevant_documents`` a call scope: the retrieval span is
current while the retriever does its work, so HTTP spans of vector stores nest under it.

Parent of an embeddings span, in order: the retrieval run whose scope is the innermost LangChain
run (``VectorStoreRetriever`` embedding the query); else the run LangChain has current (its
``var_child_runnable_config``: a ``RunnableLambda``, a tool, a graph node embedding something),
where a child run's callback would hang; else the caller's current OTel span.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sized
from contextvars import ContextVar, Token
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import var_child_runnable_config
from opentelemetry import context as otel_context

from llmtrace import _fork
from llmtrace._handler import TelemetryHandler
from llmtrace._invocation import Invocation, ModelInvocation, RetrievalInvocation
from llmtrace._safety import report_internal_error
from llmtrace_langchain import _extract
from llmtrace_langchain._handler import LLMTraceCallbackHandler, current_run_id, traced_invocation

Function = Callable[..., Any]
_MARK = "_llmtrace_wrapped"
_MISSING: Any = object()
_MAX_WRAPPER_DEPTH = 3


class _Scope:
    """A retriever's call scope in progress."""

    __slots__ = ("config", "handler", "invocation")

    def __init__(
        self, handler: LLMTraceCallbackHandler, invocation: RetrievalInvocation, config: object
    ) -> None:
        self.handler = handler
        self.invocation = invocation
        self.config = config
        """LangChain's current config when the scope was entered (a deeper run replaces it)."""


class _Call:
    """An embeddings call in progress."""

    __slots__ = ("active", "context", "invocation", "many")

    def __init__(self, invocation: ModelInvocation, many: bool) -> None:
        self.invocation = invocation
        self.many = many
        self.active: Token[ModelInvocation | None] | None = None
        self.context: object = None


_active: ContextVar[ModelInvocation | None] = ContextVar("llmtrace_langchain_embedding", default=None)
"""The embeddings call in progress in this context: a call made inside it is part of it."""
_scope: ContextVar[_Scope | None] = ContextVar("llmtrace_langchain_retrieval_scope", default=None)


class _State:
    handler: LLMTraceCallbackHandler | None = None
    """The instrumentor's handler while instrumented (None: every wrapper passes straight through)."""


# ---- patching every class of a hierarchy ------------------------------------------------------------
class _ClassPatcher:
    """Wraps the methods named in ``factories`` on ``base`` and every subclass, present and future.

    Each class gets the functions it defines in its own ``__dict__`` wrapped (a wrapper is marked,
    so nothing is wrapped twice); ``uninstall`` puts back exactly what was there."""

    def __init__(self, base: type, factories: dict[str, Callable[[Function], Function | None]]) -> None:
        self.base = base
        self.factories = factories
        self.patched: list[tuple[type, str, Any, Function]] = []
        self.hook: classmethod[Any, Any, None] | None = None
        self.hook_original: Any = _MISSING
        self.lock = _fork.rlock()

    def install(self) -> None:
        with self.lock:
            base = self.base
            if self.hook is None:
                self.hook_original = base.__dict__.get("__init_subclass__", _MISSING)
                self.hook = classmethod(_subclass_hook(self, base, self.hook_original))
                setattr(base, "__init_subclass__", self.hook)  # noqa: B010
            seen: set[type] = set()
            stack = [base]
            while stack:
                cls = stack.pop()
                if cls in seen:
                    continue
                seen.add(cls)
                try:
                    self.patch(cls)
                except Exception as exc:
                    report_internal_error(f"{__name__}.patch", exc)
                stack.extend(type.__subclasses__(cls))

    def patch(self, cls: type) -> None:
        """Wrap the methods ``cls`` defines itself (or gets from a mixin outside the hierarchy)."""
        with self.lock:
            for name, factory in self.factories.items():
                current = cls.__dict__.get(name, _MISSING)
                function = current
                if current is _MISSING:
                    owner = next((c for c in cls.__mro__ if name in c.__dict__), None)
                    if owner is None or issubclass(owner, self.base):
                        continue  # inherited from a class of the hierarchy: wrapped there
                    function = owner.__dict__[name]
                if (
                    not inspect.isfunction(function)
                    or getattr(function, _MARK, False)
                    or getattr(function, "__isabstractmethod__", False)
                ):
                    continue
                wrapper = factory(function)
                if wrapper is None:
                    continue
                setattr(wrapper, _MARK, True)
                setattr(cls, name, wrapper)
                self.patched.append((cls, name, current, wrapper))

    def uninstall(self) -> None:
        with self.lock:
            base = self.base
            if self.hook is not None and base.__dict__.get("__init_subclass__") is self.hook:
                if self.hook_original is _MISSING:
                    delattr(base, "__init_subclass__")
                else:
                    setattr(base, "__init_subclass__", self.hook_original)  # noqa: B010
            self.hook = None
            self.hook_original = _MISSING
            for cls, name, original, wrapper in reversed(self.patched):
                if cls.__dict__.get(name) is not wrapper:
                    continue  # wrapped again by someone else since: leave theirs (ours passes through)
                if original is _MISSING:
                    delattr(cls, name)
                else:
                    setattr(cls, name, original)
            self.patched.clear()


def _subclass_hook(patcher: _ClassPatcher, base: Any, original: Any) -> Callable[..., None]:
    def __init_subclass__(cls: type, **kwargs: Any) -> None:
        if original is _MISSING:
            super(base, cls).__init_subclass__(**kwargs)
        else:
            original.__get__(None, cls)(**kwargs)
        try:
            patcher.patch(cls)
        except Exception as exc:
            report_internal_error(f"{__name__}.patch", exc)

    return __init_subclass__


# ---- embeddings calls ------------------------------------------------------------------------------
def _embed_factory(many: bool, is_async: bool) -> Callable[[Function], Function | None]:
    def factory(original: Function) -> Function | None:
        if inspect.iscoroutinefunction(original) != is_async:
            return None  # not the shape the interface defines (e.g. an aembed_* returning a Future)
        return _wrap_async(original, many) if is_async else _wrap_sync(original, many)

    return factory


def _wrap_sync(original: Function, many: bool) -> Function:
    @functools.wraps(original)
    def embed(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _begin(self, args, kwargs, many)
        if call is None:
            return original(self, *args, **kwargs)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            _end(call, None, exc)
            raise
        _end(call, result, None)
        return result

    return embed


def _wrap_async(original: Function, many: bool) -> Function:
    @functools.wraps(original)
    async def aembed(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _begin(self, args, kwargs, many)
        if call is None:
            return await original(self, *args, **kwargs)
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            _end(call, None, exc)
            raise
        _end(call, result, None)
        return result

    return aembed


def _begin(instance: Any, args: Any, kwargs: Any, many: bool) -> _Call | None:
    """Start the span of an embeddings call, unless it is part of one already (None: not traced)."""
    try:
        fallback = _State.handler
        if fallback is None or _active.get() is not None:
            return None
        telemetry, parent = _parent(fallback)
        provider, model, host, port = _describe(instance)
        count = _input_count(args, kwargs, many)
        invocation = telemetry.start_embeddings(
            model, provider=provider, parent=parent, server_address=host, server_port=port
        )
    except Exception as exc:
        report_internal_error(f"{__name__}.embeddings_start", exc)
        return None
    try:
        invocation.input_count = count
        call = _Call(invocation, many)
    except Exception as exc:
        report_internal_error(f"{__name__}.embeddings_start", exc)
        invocation.stop()
        return None
    call.active = _active.set(invocation)
    try:
        call.context = otel_context.attach(invocation.context)  # HTTP and SDK spans nest under it
    except Exception as exc:
        _active.reset(call.active)
        report_internal_error(f"{__name__}.embeddings_start", exc)
        invocation.stop()
        return None
    return call


def _end(call: _Call, result: Any, error: BaseException | None) -> None:
    """End the span of an embeddings call (the call's result and exception are left as they are)."""
    invocation = call.invocation
    try:
        try:
            otel_context.detach(call.context)  # type: ignore[arg-type]
        finally:
            if call.active is not None:
                _active.reset(call.active)
        if error is None:
            invocation.dimension_count = _dimension(result, call.many)
    except Exception as exc:
        report_internal_error(f"{__name__}.embeddings_end", exc)
    finally:
        if error is None:
            invocation.stop()
        else:
            invocation.fail(error)


def _parent(fallback: LLMTraceCallbackHandler) -> tuple[TelemetryHandler, Invocation | None]:
    """The handler to report with and the invocation to hang under (None: the current OTel span)."""
    config = var_child_runnable_config.get()
    scope = _scope.get()
    if scope is not None and scope.config is config:  # the retrieval run is the innermost run
        return scope.handler.telemetry, scope.invocation
    callbacks = config.get("callbacks") if isinstance(config, dict) else None
    run_id = current_run_id()
    if run_id is not None:
        for handler in getattr(callbacks, "handlers", None) or ():
            if isinstance(handler, LLMTraceCallbackHandler):
                parent = handler.child_parent(run_id)
                if parent is not None:
                    return handler.telemetry, parent
                break
    if scope is not None:
        return scope.handler.telemetry, scope.invocation
    return fallback.telemetry, None


def _describe(instance: Any) -> tuple[str, str | None, str | None, int | None]:
    """(provider, model, server address, server port) of an embedding model.

    A wrapper naming no model (``CacheBackedEmbeddings``) is described by the model it wraps."""
    target = instance
    model = _extract.embeddings_model(target)
    for _ in range(_MAX_WRAPPER_DEPTH):
        if model is not None:
            break
        inner = _wrapped_model(target)
        if inner is None:
            break
        target = inner
        model = _extract.embeddings_model(target)
    host, port = _extract.server_address(target)
    return _provider(type(target)), model, host, port


_providers: dict[type, str] = {}
_MAX_CACHED_CLASSES = 256


def _provider(cls: type) -> str:
    """The provider of an embedding model class (depends on the class only: cached)."""
    found = _providers.get(cls)
    if found is None:
        classes = [c for c in cls.__mro__ if issubclass(c, Embeddings) and c is not Embeddings]
        found = _extract.class_provider(classes)
        if len(_providers) >= _MAX_CACHED_CLASSES:  # classes made on the fly must not grow it forever
            _providers.clear()
        _providers[cls] = found
    return found


def _wrapped_model(instance: Any) -> Embeddings | None:
    try:
        values = list(vars(instance).values())
    except TypeError:  # no __dict__
        return None
    return next((v for v in values if isinstance(v, Embeddings) and v is not instance), None)


def _input_count(args: Any, kwargs: Any, many: bool) -> int | None:
    if not many:
        return 1
    texts = args[0] if args else kwargs.get("texts")
    if isinstance(texts, Sized) and not isinstance(texts, (str, bytes)):
        return len(texts)
    return None  # an iterator: never consumed here


def _dimension(result: Any, many: bool) -> int | None:
    """Length of the (first) vector; the vectors themselves are never read."""
    vector: Any = result
    if many:
        if not isinstance(result, Sized) or isinstance(result, (str, bytes)) or len(result) == 0:
            return None
        vector = vector[0]
    if isinstance(vector, Sized) and not isinstance(vector, (str, bytes)):
        return len(vector)
    return None


# ---- retriever call scope ------------------------------------------------------------------------------
def _scope_factory(is_async: bool) -> Callable[[Function], Function | None]:
    def factory(original: Function) -> Function | None:
        if inspect.iscoroutinefunction(original) != is_async:
            return None
        return _scope_async(original) if is_async else _scope_sync(original)

    return factory


def _scope_sync(original: Function) -> Function:
    @functools.wraps(original)
    def get_relevant_documents(self: Any, *args: Any, **kwargs: Any) -> Any:
        tokens = _enter_retrieval(kwargs)
        if tokens is None:
            return original(self, *args, **kwargs)
        try:
            return original(self, *args, **kwargs)
        finally:
            _exit_retrieval(tokens)

    return get_relevant_documents


def _scope_async(original: Function) -> Function:
    @functools.wraps(original)
    async def aget_relevant_documents(self: Any, *args: Any, **kwargs: Any) -> Any:
        tokens = _enter_retrieval(kwargs)
        if tokens is None:
            return await original(self, *args, **kwargs)
        try:
            return await original(self, *args, **kwargs)
        finally:
            _exit_retrieval(tokens)

    return aget_relevant_documents


def _enter_retrieval(kwargs: Any) -> tuple[Token[_Scope | None], object] | None:
    """Make the retrieval span of ``kwargs["run_manager"]``'s run current (None: not traced)."""
    try:
        if _State.handler is None:
            return None
        traced = traced_invocation(kwargs.get("run_manager"), RetrievalInvocation)
        if traced is None:
            return None
        handler, invocation = traced
        scope = _scope.set(_Scope(handler, invocation, var_child_runnable_config.get()))
        try:
            return scope, otel_context.attach(invocation.context)
        except BaseException:
            _scope.reset(scope)
            raise
    except Exception as exc:
        report_internal_error(f"{__name__}.retrieval_scope", exc)
        return None


def _exit_retrieval(tokens: tuple[Token[_Scope | None], object]) -> None:
    try:
        try:
            otel_context.detach(tokens[1])  # type: ignore[arg-type]
        finally:
            _scope.reset(tokens[0])
    except Exception as exc:
        report_internal_error(f"{__name__}.retrieval_scope", exc)


# ---- lifecycle ------------------------------------------------------------------------------------------
_PATCHERS = (
    _ClassPatcher(
        Embeddings,
        {
            "embed_documents": _embed_factory(True, False),
            "embed_query": _embed_factory(False, False),
            "aembed_documents": _embed_factory(True, True),
            "aembed_query": _embed_factory(False, True),
        },
    ),
    _ClassPatcher(
        BaseRetriever,
        {"_get_relevant_documents": _scope_factory(False), "_aget_relevant_documents": _scope_factory(True)},
    ),
)


def install(handler: LLMTraceCallbackHandler) -> None:
    """Wrap every embedding model and retriever class, present and future (idempotent)."""
    _State.handler = handler
    _providers.clear()
    for patcher in _PATCHERS:
        patcher.install()


def uninstall() -> None:
    """Put every original function back."""
    _State.handler = None
    for patcher in _PATCHERS:
        patcher.uninstall()


def patched_count() -> int:
    """How many methods are wrapped now (for diagnostics and tests)."""
    return sum(len(p.patched) for p in _PATCHERS)
