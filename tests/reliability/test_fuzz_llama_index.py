"""Property-based fuzzing of every LlamaIndex dispatcher entry of llmtrace's handlers: the span
handler's ``new_span`` / ``prepare_to_exit_span`` / ``prepare_to_drop_span`` and the event
handler's ``handle`` for every event class of ``llama_index.core.instrumentation.events``, fed
malformed arguments, instances, results, errors and events, in realistic sequences (enter, events,
exit or drop) and unrealistic ones (exit without enter, duplicate span ids, unknown parents,
events of spans that never started or already ended, streams never consumed).

Whatever arrives: no exception escapes, every span started ends once the handler is closed, no
span ends twice, and no span grows past 1 MiB of attributes and events with content capture on.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import llama_index.core.instrumentation.events as events_pkg
from hypothesis import given
from hypothesis import strategies as st
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse
from llama_index.core.base.response.schema import StreamingResponse
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation.events.base import BaseEvent
from llama_index.core.llms import MockLLM
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.tools import FunctionTool, ToolOutput
from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step
from llmtrace_llama_index._event_handler import LlamaIndexEventHandler
from llmtrace_llama_index._runs import Runs
from llmtrace_llama_index._span_handler import LlamaIndexSpanHandler
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmtrace import TelemetryHandler

from .conftest import FUZZ_SETTINGS, SpanTracker
from .payloads import counts, errors, materialize, payload, small, usage_dicts
from .sizes import MAX_SPAN_BYTES, span_size

M = materialize


def _event_classes() -> list[type[BaseEvent]]:
    found: dict[str, type[BaseEvent]] = {}
    for module in pkgutil.iter_modules(events_pkg.__path__):
        mod = importlib.import_module(f"{events_pkg.__name__}.{module.name}")
        for value in vars(mod).values():
            if inspect.isclass(value) and issubclass(value, BaseEvent):
                found[value.__name__] = value
    return [found[name] for name in sorted(found)]


EVENT_CLASSES = _event_classes()
BASE_FIELDS = set(BaseEvent.model_fields)


def test_every_event_class_is_fuzzed() -> None:
    assert len(EVENT_CLASSES) >= 35  # llama-index-core 0.14: 39 event classes
    assert {"ReRankStartEvent", "LLMChatInProgressEvent", "ExceptionEvent"} <= {
        c.__name__ for c in EVENT_CLASSES
    }


# ---- instances the dispatcher hands over: one of each kind llmtrace classifies, and odd ones ----
class _Flow(Workflow):
    @step
    async def go(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="done")


def _instances() -> dict[str, Any]:
    llm = MockLLM(max_tokens=2)
    embed = MockEmbedding(embed_dim=4)
    index = VectorStoreIndex.from_documents([Document(text="sky is blue", id_="sky")], embed_model=embed)
    agent = FunctionAgent(name="agent", description="d", tools=[], llm=llm)
    return {
        "MockLLM": llm,
        "MalformedLLM": MockLLM.model_construct(max_tokens=-3, callback_manager=None),
        "MockEmbedding": embed,
        "VectorIndexRetriever": index.as_retriever(similarity_top_k=1),
        "RetrieverQueryEngine": index.as_query_engine(llm=llm),
        "SimpleChatEngine": SimpleChatEngine.from_defaults(llm=llm),
        "FunctionTool": FunctionTool.from_defaults(fn=lambda x: x, name="echo", description="echo"),
        "FunctionAgent": agent,
        "AgentWorkflow": AgentWorkflow(agents=[agent], root_agent="agent"),
        "_Flow": _Flow(),
        "SimilarityPostprocessor": SimilarityPostprocessor(similarity_cutoff=0.1),
    }


INSTANCES = _instances()
METHODS = {
    "MockLLM": ["chat", "achat", "stream_chat", "astream_chat", "complete", "stream_complete", "predict"],
    "MalformedLLM": ["chat", "stream_complete"],
    "MockEmbedding": ["get_query_embedding", "aget_text_embedding_batch", "_get_query_embedding"],
    "VectorIndexRetriever": ["retrieve", "aretrieve", "_retrieve"],
    "RetrieverQueryEngine": ["query", "aquery", "_query"],
    "SimpleChatEngine": ["chat", "stream_chat", "astream_chat"],
    "FunctionTool": ["call", "acall", "__call__"],
    "FunctionAgent": ["run", "run_agent_step"],
    "AgentWorkflow": ["run"],
    "_Flow": ["run"],
    "SimilarityPostprocessor": ["_postprocess_nodes", "postprocess_nodes"],
    "None": ["setup_agent", "run_agent_step", "call_tool", "parse_agent_output", "go"],
    "odd": ["whatever"],
}
UUIDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(6)]


@st.composite
def span_ids(draw: st.DrawFn) -> tuple[str, str]:
    """(instance key, dispatcher span id ``Class.method-uuid``); a few malformed ids too."""
    key = draw(st.sampled_from(sorted(METHODS)))
    method = draw(st.sampled_from(METHODS[key]))
    if draw(st.integers(0, 15)) == 0:
        return key, draw(st.sampled_from(["", "x", "-", f"{method}-", "a.b.c"]))
    return key, f"{key}.{method}-{draw(st.sampled_from(UUIDS))}"


def _instance(key: str, odd: Any) -> Any:
    if key == "None":
        return None
    if key == "odd":
        return M(odd)
    return INSTANCES[key]


# ---- bound arguments ------------------------------------------------------------------------------
def _signature(
    self: Any,
    messages: Any = None,
    prompt: Any = None,
    str_or_query_bundle: Any = None,
    message: Any = None,
    ev: Any = None,
    *args: Any,
    **kwargs: Any,
) -> None: ...


SIGNATURE = inspect.signature(_signature)


def _bound(arguments: dict[str, Any]) -> Any:
    values = M(arguments)
    extra = values.pop("kwargs", None)
    bound = SIGNATURE.bind_partial(None, **values)
    if extra is not None:
        bound.arguments["kwargs"] = extra  # malformed: not even a dict, sometimes
    return bound


chat_messages = st.lists(
    st.one_of(
        st.builds(
            lambda r, c, k: ChatMessage.model_construct(role=M(r), content=M(c), additional_kwargs=M(k)),
            st.one_of(st.sampled_from(["user", "system", "assistant", "tool"]), small),
            payload,
            st.one_of(payload, st.fixed_dictionaries({"tool_calls": payload, "tool_call_id": small})),
        ),
        payload,
    ),
    max_size=3,
)
agent_events = st.one_of(
    payload,
    st.fixed_dictionaries(
        {},
        optional={
            "current_agent_name": st.one_of(st.sampled_from(["agent", "other"]), small),
            "tool_name": small,
            "tool_id": small,
            "tool_kwargs": payload,
        },
    ),
)
bound_args = st.one_of(
    st.just(None),
    payload,
    st.builds(
        _bound,
        st.fixed_dictionaries(
            {},
            optional={
                "messages": st.one_of(payload, chat_messages),
                "prompt": payload,
                "str_or_query_bundle": st.one_of(
                    payload, st.builds(lambda q: QueryBundle(query_str=M(q)), payload)
                ),
                "message": payload,
                "ev": agent_events,
                "kwargs": st.one_of(
                    payload,
                    st.fixed_dictionaries(
                        {},
                        optional={"temperature": counts, "max_tokens": counts, "stop": small, "seed": counts},
                    ),
                ),
            },
        ),
    ),
)


# ---- results, responses and nodes ---------------------------------------------------------------
def _raw(usage: Any, extra: Any) -> Any:
    # materialized by the caller, once (materializing twice recurses forever on cyclic lists)
    return {"usage": usage, "id": extra, "model": extra, "choices": [{"finish_reason": extra}]}


responses = st.one_of(
    payload,
    st.builds(
        lambda m, raw, delta, extra: ChatResponse.model_construct(
            message=m, raw=M(raw), delta=M(delta), additional_kwargs=M(extra)
        ),
        st.one_of(chat_messages.map(lambda ms: ms[0] if ms else None), payload.map(M)),
        st.one_of(payload, st.builds(_raw, usage_dicts(), small)),
        payload,
        st.one_of(payload, st.fixed_dictionaries({"prompt_tokens": counts, "completion_tokens": counts})),
    ),
    st.builds(
        lambda t, raw: CompletionResponse.model_construct(text=M(t), raw=M(raw), additional_kwargs={}),
        payload,
        st.one_of(payload, st.builds(_raw, usage_dicts(), small)),
    ),
)
scored_nodes = st.one_of(
    payload,
    st.lists(
        st.one_of(
            st.builds(
                lambda text, node_id, score: NodeWithScore.model_construct(
                    node=TextNode.model_construct(text=M(text), id_=M(node_id)), score=M(score)
                ),
                payload,
                small,
                counts,
            ),
            payload,
        ),
        max_size=3,
    ),
)


def _gen() -> Iterator[str]:
    yield "chunk"


async def _agen() -> AsyncIterator[str]:
    yield "chunk"


results = st.one_of(
    payload,
    st.builds(_gen),  # a stream: the span outlives its dispatcher span
    st.builds(_agen),
    st.builds(lambda: StreamingResponse(response_gen=_gen())),
    scored_nodes,
    st.builds(lambda o, e: ToolOutput.model_construct(content=M(o), is_error=M(e)), payload, payload),
    st.builds(lambda r: StopEvent(result=M(r)), payload),
    st.builds(lambda calls: type("AgentOutput", (), {"tool_calls": M(calls)})(), payload),
)


# ---- events ---------------------------------------------------------------------------------------
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "response": responses,
    "nodes": scored_nodes,
    "exception": errors,
    "top_n": counts,
    "model_name": small,
    "messages": st.one_of(payload, chat_messages),
    "chunks": payload,
    "embeddings": st.one_of(payload, st.lists(st.lists(counts, max_size=3), max_size=2)),
}


@st.composite
def dispatcher_events(draw: st.DrawFn, span_id: str) -> BaseEvent:
    cls = draw(st.sampled_from(EVENT_CLASSES))
    fields = {
        name: M(draw(FIELD_VALUES.get(name, payload))) for name in cls.model_fields if name not in BASE_FIELDS
    }
    return cls.model_construct(span_id=span_id, **fields)


# ---- operations -----------------------------------------------------------------------------------
parents = st.one_of(st.none(), st.sampled_from(UUIDS), st.just("unknown"))


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[str, Any]]:
    key, span_id = draw(span_ids())
    kind = draw(st.sampled_from(["call", "enter", "exit", "drop", "event"]))
    ops: list[tuple[str, Any]] = []
    if kind in ("call", "enter"):
        parent = draw(parents)
        if parent is not None and parent != "unknown":
            parent = f"{draw(st.sampled_from(sorted(METHODS)))}.x-{parent}"
        ops.append(("enter", (span_id, draw(bound_args), _instance(key, draw(payload)), parent)))
    if kind in ("call", "event"):
        for _ in range(draw(st.integers(0 if kind == "call" else 1, 3))):
            ops.append(("event", draw(dispatcher_events(span_id))))
    if kind == "call":
        kind = draw(st.sampled_from(["exit", "drop", "none"]))
    if kind == "exit":
        ops.append(("exit", (span_id, draw(bound_args), draw(results))))
    elif kind == "drop":
        ops.append(("drop", (span_id, draw(bound_args), draw(errors))))
    if draw(st.booleans()):  # what a stream sends after its dispatcher span returned
        ops.append(("event", draw(dispatcher_events(span_id))))
    return ops


@FUZZ_SETTINGS
@given(program=st.lists(operations(), min_size=1, max_size=8))
def test_malformed_dispatcher_calls_never_raise_and_every_span_ends(capture_on, logger_provider, program):
    tracker = SpanTracker()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(tracker)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    runs = Runs(
        TelemetryHandler(tracer_provider=provider, logger_provider=logger_provider, framework="llama_index")
    )
    spans = LlamaIndexSpanHandler(runs)
    events = LlamaIndexEventHandler(runs)
    token = otel_context.attach(otel_context.Context())  # handlers attach contexts: restored below
    try:
        for ops in program:
            for op, args in ops:
                if op == "enter":
                    span_id, bound, instance, parent = args
                    spans.new_span(span_id, M(bound), instance=instance, parent_span_id=parent)
                elif op == "exit":
                    span_id, bound, result = args
                    spans.prepare_to_exit_span(span_id, M(bound), result=M(result))
                elif op == "drop":
                    span_id, bound, err = args
                    spans.prepare_to_drop_span(span_id, M(bound), err=M(err))
                else:
                    events.handle(args)
        spans.close()  # ends every run still open
    finally:
        otel_context.detach(token)
    assert len(runs.nodes) == 0
    assert len(runs.streams) == 0
    assert tracker.open_spans() == []
    assert tracker.ended_twice() == []
    for span in exporter.get_finished_spans():
        assert span_size(span) < MAX_SPAN_BYTES, span.name
    provider.shutdown()
