"""Enumerate every adapter function of both integrations and make one of them raise.

A target is a function llmtrace's integrations run while a framework call is in progress:

- ``body``: an entry point the framework calls, decorated with ``never_raise``; its body is replaced
  (through the decorator's closure) so the decorator itself is what is tested;
- ``attr``: a module-level function, a method or a property; replaced under every name that refers to
  it in the integration's modules (``from x import f`` copies included).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import llmtrace_langchain._cache as lc_cache
import llmtrace_langchain._embeddings as lc_embeddings
import llmtrace_langchain._extract as lc_extract
import llmtrace_langchain._handler as lc_handler
import llmtrace_langchain._instrumentor as lc_instrumentor
import llmtrace_llama_index._classify as li_classify
import llmtrace_llama_index._event_handler as li_event_handler
import llmtrace_llama_index._extract as li_extract
import llmtrace_llama_index._lazy as li_lazy
import llmtrace_llama_index._runs as li_runs
import llmtrace_llama_index._span_handler as li_span_handler

LC_MODULES = (lc_extract, lc_handler, lc_cache, lc_instrumentor, lc_embeddings)
LI_MODULES = (li_extract, li_classify, li_span_handler, li_event_handler, li_runs, li_lazy)

# Not targets: functions the framework calls *instead of* its own code (wrapt wrappers: their body
# is the call path; each helper they call is a target), and lifecycle code (instrument/uninstrument,
# diagnostics) that never runs inside a framework call.
LC_ENTRY_POINTS = frozenset(
    {
        "_chat_scope",
        "_achat_scope",
        "_llm_scope",
        "_allm_scope",
        "_atool_scope",
        "_tool_context",
        "_ToolContext.__init__",
        "_ToolContext.__enter__",  # guarded by its own try/except (its helper is a target)
        "_ToolContext.__exit__",  # the framework's own exit, nothing of llmtrace's
        "_note_tool_run",
        "_patch_stream_method",
        "_add_handler",
        "_merge",
        "_unwrap",
        "generate_wrapper",
        "agenerate_wrapper",
        "get_prompts_wrapper",
        "aget_prompts_wrapper",
        "_AutoHandlerVar.get",  # read by LangChain's configure: one attribute read, nothing to fail
        # guarded by their own try/except (their helpers are targets)
        "_enter",
        "_exit",
        "_begin",
        "_end",
        "_enter_retrieval",
        "_exit_retrieval",
        "_lookup",
        "_cancelled",
        "_forget_tool_runs",
        "_note",
        "_single_run_manager",
        "_call_args",
        "_register_configure_hook",
        "LangChainInstrumentor.instrumentation_dependencies",
        "LangChainInstrumentor._instrument",
        "LangChainInstrumentor._uninstrument",
        "LLMTraceCallbackHandler.__init__",
        "LLMTraceCallbackHandler.open_runs",
        "LLMTraceCallbackHandler.close",
        # embeddings: class patching (at instrument time and when a class is defined) and its wrapper
        # factories; the wrappers themselves are closures, like wrapt wrappers
        "install",
        "uninstall",
        "patched_count",
        "_subclass_hook",
        "_embed_factory",
        "_wrap_sync",
        "_wrap_async",
        "_scope_factory",
        "_scope_sync",
        "_scope_async",
        "_ClassPatcher.__init__",
        "_ClassPatcher.install",
        "_ClassPatcher.patch",
        "_ClassPatcher.uninstall",
    }
)
LI_ENTRY_POINTS = frozenset(
    {
        "LlamaIndexSpanHandler.__init__",
        "LlamaIndexSpanHandler.class_name",
        "LlamaIndexSpanHandler.close",
        "LlamaIndexEventHandler.__init__",
        "LlamaIndexEventHandler.class_name",
        "Runs.__init__",
        "Runs.clear",
        "clear_cache",  # _classify: called by instrument()
        "LazyStreams.__init__",
        "LazyStreams.clear",
        "LazyStreams._forget",  # a fork hook (lifecycle, never inside a framework call)
        "LlamaIndexSpanHandler.model_post_init",
        "LlamaIndexEventHandler.model_post_init",
        "Kind._generate_next_value_",
    }
)


class InjectedFault(RuntimeError):
    pass


@dataclass(frozen=True)
class Target:
    qualname: str
    how: str  # "body" or "attr"
    owner: Any  # module or class holding it
    name: str

    def __str__(self) -> str:
        return self.qualname


def _own_functions(module: types.ModuleType) -> Iterator[tuple[Any, str, Any]]:
    """(owner, attribute name, value) of functions, methods and properties defined in ``module``."""
    for name, value in vars(module).items():
        if inspect.isfunction(value) and value.__module__ == module.__name__:
            yield module, name, value
        elif inspect.isclass(value) and value.__module__ == module.__name__:
            for attr, member in vars(value).items():
                if attr.startswith("__") and attr not in ("__call__", "__init__"):
                    continue
                if isinstance(member, (classmethod, staticmethod)):
                    member = member.__func__
                if inspect.isfunction(member) or isinstance(member, property):
                    yield value, attr, member


def targets(modules: tuple[types.ModuleType, ...], excluded: frozenset[str]) -> list[Target]:
    found: list[Target] = []
    for module in modules:
        for owner, name, value in _own_functions(module):
            qualname = name if owner is module else f"{owner.__name__}.{name}"
            if qualname in excluded or (inspect.isclass(owner) and issubclass(owner, Exception)):
                continue
            how = "body" if _never_raise_cell(value) is not None else "attr"
            found.append(Target(f"{module.__name__.rpartition('.')[2]}:{qualname}", how, owner, name))
    return found


def _never_raise_cell(value: Any) -> Any:
    inner = getattr(value, "__wrapped__", None)
    if inner is None or not getattr(value, "__closure__", None):
        return None
    return next((c for c in value.__closure__ if c.cell_contents is inner), None)


@contextmanager
def inject(target: Target, modules: tuple[types.ModuleType, ...]) -> Iterator[list[int]]:
    """Make ``target`` raise :class:`InjectedFault`; yields a one-item list counting the calls."""
    calls = [0]

    def boom(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        raise InjectedFault(f"injected fault in {target}")

    undo: list[Callable[[], None]] = []
    original = vars(target.owner)[target.name]
    try:
        if target.how == "body":
            cell = _never_raise_cell(original)
            inner = cell.cell_contents
            cell.cell_contents = boom
            undo.append(lambda: setattr(cell, "cell_contents", inner))
        elif isinstance(original, property):
            setattr(target.owner, target.name, property(boom))
            undo.append(lambda: setattr(target.owner, target.name, original))
        else:
            raw = original.__func__ if isinstance(original, (classmethod, staticmethod)) else original
            for module in modules:
                for name, value in list(vars(module).items()):
                    if value is raw:
                        setattr(module, name, boom)
                        undo.append(lambda m=module, n=name, v=value: setattr(m, n, v))
            if inspect.isclass(target.owner):
                setattr(target.owner, target.name, boom)
                undo.append(lambda: setattr(target.owner, target.name, original))
        yield calls
    finally:
        for step in reversed(undo):
            step()
