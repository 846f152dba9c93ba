"""Which LlamaIndex dispatcher spans become which GenAI operations.

The dispatcher names a span ``"{Class}.{method}-{uuid}"`` and hands over the bound
instance. A span is classified by the instance's base class and the method name; every
other span is plumbing (transparent: it gets no OTel span, its children go to its parent).
"""

from __future__ import annotations

import enum
from typing import Any

from llama_index.core.agent.workflow import AgentWorkflow, BaseWorkflowAgent
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.chat_engine.types import BaseChatEngine
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.tools.types import BaseTool
from llama_index.core.types import BasePydanticProgram
from llama_index.core.workflow import Workflow

from llmtrace._objects import BoundedCache


class Kind(enum.Enum):
    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDING = "embedding"
    RETRIEVAL = "retrieval"
    QUERY_ENGINE = "query_engine"
    CHAT_ENGINE = "chat_engine"
    TOOL = "tool"
    AGENT_RUN = "agent_run"
    WORKFLOW_RUN = "workflow_run"
    STEP = "step"
    POSTPROCESSOR = "postprocessor"
    """A node postprocessor: plumbing, unless it reports a rerank (``ReRankStartEvent``)."""
    STRUCTURED = "structured"
    """``structured_predict`` and the pydantic programs behind it: plumbing, and the tool calls
    made inside are response parsing (``FunctionCallingProgram`` turns the output class into a
    tool), not tool executions."""
    PARSE = "parse"
    """``structured_predict`` of an LLM that calls its provider's parse API itself, not ``chat``
    (``OpenAIResponses``: ``responses.parse``): the model call (see ``_parse``)."""
    PREDICT_AND_CALL = "predict_and_call"
    """``predict_and_call``: ``invoke_workflow predict_and_call`` outside any traced operation
    (a model call and the tools it chose, in one trace), plumbing inside one."""
    OTHER = "other"


CHAT_METHODS = frozenset({"chat", "achat", "stream_chat", "astream_chat"})
COMPLETION_METHODS = frozenset({"complete", "acomplete", "stream_complete", "astream_complete"})
EMBEDDING_METHODS = frozenset(
    {
        "get_query_embedding",
        "aget_query_embedding",
        "get_text_embedding",
        "aget_text_embedding",
        "get_text_embedding_batch",
        "aget_text_embedding_batch",
        "get_agg_embedding_from_queries",
        "aget_agg_embedding_from_queries",
    }
)
RETRIEVAL_METHODS = frozenset({"retrieve", "aretrieve"})
QUERY_METHODS = frozenset({"query", "aquery"})
CHAT_ENGINE_METHODS = CHAT_METHODS
TOOL_METHODS = frozenset({"call", "acall", "__call__"})
STRUCTURED_METHODS = frozenset(
    {"structured_predict", "astructured_predict", "stream_structured_predict", "astream_structured_predict"}
)
PREDICT_AND_CALL_METHODS = frozenset({"predict_and_call", "apredict_and_call"})
PROGRAM_METHODS = frozenset({"__call__", "acall", "stream_call", "astream_call"})
POSTPROCESS_METHODS = frozenset(
    {"postprocess_nodes", "apostprocess_nodes", "_postprocess_nodes", "_apostprocess_nodes"}
)
ENGINE_KINDS = frozenset({Kind.QUERY_ENGINE, Kind.CHAT_ENGINE})
AGENT_STEPS = frozenset({"setup_agent", "run_agent_step", "call_tool", "parse_agent_output"})

_UUID_SUFFIX = 37  # "-" + a 36-character uuid4


def method_name(span_id: str) -> str:
    """``"Class.method-uuid"`` -> ``"method"``."""
    qualified = span_id[:-_UUID_SUFFIX] if len(span_id) > _UUID_SUFFIX else span_id
    return qualified.rpartition(".")[2]


_MAX_CACHED = 4096
_cache: BoundedCache[tuple[type, str], Kind] = BoundedCache(_MAX_CACHED)


def classify(span_id: str, instance: Any) -> Kind:
    """The kind of a dispatcher span, cached per (class, method): most spans are plumbing, and
    the isinstance checks against every base class cost more than the rest of handling them."""
    method = method_name(span_id)
    if instance is None:
        # workflow steps are wrapped as plain functions: "Class.step_name-uuid"
        return Kind.STEP
    key = (type(instance), method)
    kind = _cache.get(key)
    return kind if kind is not None else _cache.remember(key, _classify(instance, method))


def clear_cache() -> None:
    """Forget cached kinds (on instrument: classes may have been registered since)."""
    _cache.clear()


def _classify(instance: Any, method: str) -> Kind:
    if isinstance(instance, BaseLLM):
        if method in CHAT_METHODS:
            return Kind.CHAT
        if method in COMPLETION_METHODS:
            return Kind.COMPLETION
        if method in STRUCTURED_METHODS:
            return Kind.PARSE if _parses(instance, method) else Kind.STRUCTURED
        if method in PREDICT_AND_CALL_METHODS:
            return Kind.PREDICT_AND_CALL
        return Kind.OTHER
    if isinstance(instance, BaseEmbedding):
        return Kind.EMBEDDING if method in EMBEDDING_METHODS else Kind.OTHER
    if isinstance(instance, BaseRetriever):
        return Kind.RETRIEVAL if method in RETRIEVAL_METHODS else Kind.OTHER
    if isinstance(instance, BaseQueryEngine):
        return Kind.QUERY_ENGINE if method in QUERY_METHODS else Kind.OTHER
    if isinstance(instance, BaseChatEngine):
        return Kind.CHAT_ENGINE if method in CHAT_ENGINE_METHODS else Kind.OTHER
    if isinstance(instance, BaseNodePostprocessor):
        return Kind.POSTPROCESSOR if method in POSTPROCESS_METHODS else Kind.OTHER
    if isinstance(instance, BaseTool):
        return Kind.TOOL if method in TOOL_METHODS else Kind.OTHER
    if isinstance(instance, BasePydanticProgram):
        return Kind.STRUCTURED if method in PROGRAM_METHODS else Kind.OTHER
    if isinstance(instance, Workflow) and method == "run":
        if isinstance(instance, BaseWorkflowAgent):
            return Kind.AGENT_RUN
        return Kind.WORKFLOW_RUN
    return Kind.OTHER


_PARSING_METHODS = frozenset({"OpenAIResponses.structured_predict", "OpenAIResponses.astructured_predict"})
"""llama-index-llms-openai's ``OpenAIResponses`` methods that call ``responses.parse`` themselves
(its ``stream_structured_predict`` goes through ``stream_chat``)."""


def _parses(instance: Any, method: str) -> bool:
    """Whether ``method`` of ``instance`` (a structured-output method) is one of ``_PARSING_METHODS``,
    inherited or not (a subclass that overrides it is not known to call the parse API)."""
    function = getattr(type(instance), method, None)
    module = getattr(function, "__module__", None)
    return (
        getattr(function, "__qualname__", None) in _PARSING_METHODS
        and isinstance(module, str)
        and module.startswith("llama_index.llms.")
    )


def is_multi_agent(instance: Any) -> bool:
    return isinstance(instance, AgentWorkflow)


def is_stream(method: str) -> bool:
    return "stream" in method
