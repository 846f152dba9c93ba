"""Property-based fuzzing of every LangChain callback of the handler, with malformed payloads,
in realistic and unrealistic sequences (start then end or error, start without end, end without
start, duplicate run ids, unknown parents).

Whatever arrives: no exception escapes, every span started ends once the run map is cleared, no span
ends twice, and no span grows past 1 MiB of attributes and events with content capture on.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from hypothesis import given
from hypothesis import strategies as st
from langchain_core.agents import AgentAction, AgentFinish
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult
from llmtrace_langchain import LLMTraceCallbackHandler
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .conftest import FUZZ_SETTINGS, SpanTracker
from .payloads import counts, errors, materialize, payload, small, usage_dicts
from .sizes import MAX_SPAN_BYTES, span_size

M = materialize
RUN_IDS = [UUID(int=i + 1) for i in range(5)]

metadata = st.one_of(
    st.none(),
    small,
    st.fixed_dictionaries(
        {},
        optional={
            "ls_provider": small,
            "ls_model_name": small,
            "ls_temperature": counts,
            "ls_max_tokens": counts,
            "ls_stop": small,
            "langgraph_node": small,
            "lc_agent_name": st.one_of(st.sampled_from(["agent", "other"]), small),
            "ls_retriever_k": counts,
            "k": counts,
            "ls_embedding_model": small,
        },
    ),
)
invocation_params = st.one_of(
    st.none(),
    small,
    st.fixed_dictionaries(
        {},
        optional={
            "model": small,
            "model_name": small,
            "temperature": counts,
            "max_tokens": counts,
            "stream": small,
            "stop": small,
            "n": counts,
            "seed": counts,
            "reasoning": small,
            "reasoning_effort": small,
        },
    ),
)
serialized = st.one_of(
    st.none(),
    small,
    st.fixed_dictionaries({}, optional={"name": small, "id": small, "kwargs": small, "description": small}),
)


def _message(kind: type, content: Any, **extra: Any) -> Any:
    return kind.model_construct(content=materialize(content), **materialize(extra))


messages = st.lists(
    st.one_of(
        st.builds(_message, st.just(HumanMessage), payload),
        st.builds(_message, st.just(SystemMessage), payload),
        st.builds(_message, st.just(ToolMessage), payload, tool_call_id=payload),
        st.builds(
            _message,
            st.just(AIMessage),
            payload,
            tool_calls=st.one_of(
                payload, st.lists(st.fixed_dictionaries({"name": small, "args": payload, "id": small}))
            ),
            usage_metadata=st.one_of(payload, usage_dicts()),
        ),
        payload,
    ),
    max_size=4,
)

generation = st.one_of(
    st.builds(
        lambda m, info: ChatGeneration.model_construct(message=m, text="", generation_info=M(info)),
        st.builds(
            _message,
            st.just(AIMessage),
            payload,
            tool_calls=st.one_of(
                payload, st.lists(st.fixed_dictionaries({"name": small, "args": payload, "id": small}))
            ),
            usage_metadata=st.one_of(payload, usage_dicts()),
            response_metadata=st.one_of(
                payload,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "finish_reason": small,
                        "model_name": small,
                        "id": small,
                        "token_usage": usage_dicts(),
                    },
                ),
            ),
            id=small,
        ),
        payload,
    ),
    st.builds(
        lambda t, info: Generation.model_construct(text=M(t), generation_info=M(info)), payload, payload
    ),
    payload,
)
llm_result = st.one_of(
    st.builds(
        lambda gens, out: LLMResult.model_construct(generations=M(gens), llm_output=M(out)),
        st.one_of(st.lists(st.lists(generation, max_size=2), max_size=2), payload),
        st.one_of(payload, st.fixed_dictionaries({"token_usage": usage_dicts(), "model_name": small})),
    ),
    payload,
)
documents = st.one_of(
    payload,
    st.lists(
        st.one_of(
            st.builds(
                lambda c, m, i: Document.model_construct(page_content=M(c), metadata=M(m), id=M(i)),
                payload,
                payload,
                payload,
            ),
            payload,
        ),
        max_size=3,
    ),
)


class RetryState:
    """What tenacity hands to on_retry, malformed."""

    def __init__(self, attempt: Any, outcome: Any) -> None:
        self.attempt_number = M(attempt)
        self.outcome = M(outcome)


def _op(method: str, *args: st.SearchStrategy[Any], **kwargs: st.SearchStrategy[Any]) -> Any:
    return st.tuples(st.just(method), st.tuples(*args), st.fixed_dictionaries(kwargs))


START_KW = {
    "tags": st.one_of(st.none(), small),
    "metadata": metadata,
}
starts = st.one_of(
    _op("on_chain_start", serialized, payload, name=st.one_of(st.none(), small), **START_KW),
    _op(
        "on_chat_model_start",
        serialized,
        st.one_of(payload, st.lists(messages, max_size=2)),
        invocation_params=invocation_params,
        **START_KW,
    ),
    _op(
        "on_llm_start",
        serialized,
        st.one_of(payload, st.lists(payload, max_size=3)),
        invocation_params=invocation_params,
        **START_KW,
    ),
    _op(
        "on_tool_start",
        serialized,
        payload,
        inputs=st.one_of(st.none(), payload),
        tool_call_id=small,
        name=small,
        **START_KW,
    ),
    _op("on_retriever_start", serialized, payload, name=small, **START_KW),
)
ends = st.one_of(
    _op("on_chain_end", payload),
    _op("on_chain_end", st.fixed_dictionaries({"messages": messages})),
    _op("on_chain_error", errors),
    _op("on_llm_new_token", payload, chunk=payload),
    _op("on_llm_end", llm_result),
    _op("on_llm_error", errors),
    _op("on_tool_end", payload),
    _op("on_tool_error", errors),
    _op("on_retriever_end", documents),
    _op("on_retriever_error", errors),
    _op(
        "on_agent_action",
        st.one_of(
            payload,
            st.builds(
                lambda t, i, c: AgentAction.model_construct(
                    tool=M(t), tool_input=M(i), log=M(c), tool_call_id=M(c)
                ),
                small,
                payload,
                small,
            ),
        ),
    ),
    _op(
        "on_agent_finish",
        st.one_of(
            payload, st.builds(lambda v: AgentFinish.model_construct(return_values=M(v), log=""), payload)
        ),
    ),
    _op("on_retry", st.one_of(payload, st.builds(RetryState, counts, payload))),
)
run_index = st.integers(min_value=0, max_value=len(RUN_IDS) - 1)
parent = st.one_of(st.none(), run_index, st.just("unknown"))
step = st.one_of(
    st.tuples(st.just("single"), st.one_of(starts, ends), run_index, parent),
    st.tuples(st.just("pair"), st.tuples(starts, ends), run_index, parent),
)


def _call(
    handler: LLMTraceCallbackHandler, op: Any, run_id: UUID, parent_id: UUID | None, starting: bool
) -> None:
    name, args, kwargs = op
    args, kwargs = materialize(args), materialize(dict(kwargs))
    if starting:
        kwargs["parent_run_id"] = parent_id
    getattr(handler, name)(*args, run_id=run_id, **kwargs)


def _new_or_reused(started: list[UUID], index: int) -> UUID:
    """A fresh run id, or (one start in three) the id of a run that may still be open."""
    return started[index % len(started)] if started and index % 3 == 0 else uuid4()


@FUZZ_SETTINGS
@given(steps=st.lists(step, min_size=1, max_size=10))
def test_malformed_callbacks_never_raise_and_every_span_ends(capture_on, logger_provider, steps):
    tracker = SpanTracker()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(tracker)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    handler = LLMTraceCallbackHandler(tracer_provider=provider, logger_provider=logger_provider)
    started: list[UUID] = []

    def known(index: int) -> UUID:
        return started[index % len(started)] if started else RUN_IDS[index]

    for kind, op, index, parent_index in steps:
        if parent_index == "unknown":
            parent_id: UUID | None = uuid4()
        else:
            parent_id = None if parent_index is None else known(parent_index)
        if kind == "pair":
            start, end = op
            started.append(_new_or_reused(started, index))
            _call(handler, start, started[-1], parent_id, True)
            _call(handler, end, started[-1], None, False)
        elif op[0].endswith("_start"):
            started.append(_new_or_reused(started, index))
            _call(handler, op, started[-1], parent_id, True)
        else:  # an end or error of a run that started, ended already, or never started
            run_id = known(index) if index % 2 else RUN_IDS[index]
            _call(handler, op, run_id, None, False)
    handler.close()  # ends every run still open
    assert handler.open_runs() == 0
    assert tracker.open_spans() == []
    assert tracker.ended_twice() == []
    for span in exporter.get_finished_spans():
        assert span_size(span) < MAX_SPAN_BYTES, span.name
    provider.shutdown()
