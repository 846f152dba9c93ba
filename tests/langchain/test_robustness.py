"""Never breaks the app, bounded state, concurrency, instrumentor dedupe and uninstrument."""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import logging
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

import llmtrace_langchain._extract as extract_module
import llmtrace_langchain._handler as handler_module
import pytest
from langchain_core.callbacks import CallbackManager
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.runnables import RunnableLambda, RunnableParallel
from llmtrace_langchain import LangChainInstrumentor, LLMTraceCallbackHandler
from packaging.version import Version

from llmtrace import semconv
from llmtrace._safety import internal_error_counts, reset_internal_errors

from .conftest import attrs, tree
from .test_agents import EXPECTED_TREE, react_agent

# each entry: (module, function) forced to raise; together they cover every part of the handler
BREAKABLE = [
    (extract_module, "provider_name"),  # model start
    (extract_module, "apply_request_params"),  # model start
    (extract_module, "usage"),  # model end
    (extract_module, "tool_calls"),  # model end -> agent steps
    (extract_module, "run_name"),  # chain start
    (extract_module, "tool_name"),  # tool start
    (extract_module, "handled_tool_error"),  # tool end
    (extract_module, "documents"),  # retriever end
    (extract_module, "retrieval_source"),  # retriever start
    (handler_module, "_agent_name"),  # agent detection
    (extract_module, "response_fields"),  # model end
]
# create_agent puts its name in the runs' metadata (lc_agent_name) since langchain 1.2.4: before it
# agents are found by their graph alone, and _agent_name is never called
_NAMES_ITS_AGENT = Version(importlib.metadata.version("langchain")) >= Version("1.2.4")
BREAKABLE_PARAMS = [
    pytest.param(
        module,
        name,
        id=name,
        marks=pytest.mark.skipif(
            name == "_agent_name" and not _NAMES_ITS_AGENT, reason="create_agent sets no lc_agent_name"
        ),
    )
    for module, name in BREAKABLE
]


@pytest.mark.parametrize(("module", "name"), BREAKABLE_PARAMS)
def test_internal_failure_never_changes_the_result(module, name, handler, span_exporter, monkeypatch, caplog):
    expected = react_agent().invoke({"messages": [("user", "go")]})["messages"][-1].content

    def explode(*args, **kwargs):
        raise RuntimeError("llmtrace bug")

    monkeypatch.setattr(module, name, explode)
    reset_internal_errors()
    with caplog.at_level(logging.ERROR, logger="llmtrace"):
        for _ in range(2):
            got = react_agent().invoke({"messages": [("user", "go")]}, config={"callbacks": [handler]})
            assert got["messages"][-1].content == expected
    counts = internal_error_counts()
    assert counts and sum(counts.values()) >= 2
    logged = [r for r in caplog.records if r.name == "llmtrace" and "internal error" in r.getMessage()]
    assert len(logged) == len(counts)  # once per place, not per event


def test_internal_failure_keeps_the_exception(handler, monkeypatch):
    monkeypatch.setattr(handler_module, "_not_an_error", lambda e: 1 / 0)

    def fail(x):
        raise KeyError("user error")

    with pytest.raises(KeyError, match="user error"):
        RunnableLambda(fail).invoke(1, config={"callbacks": [handler]})


def test_never_ending_runs_are_evicted_and_memory_stays_flat(tracer_provider, span_exporter, content_capture):
    content_capture.max_open_runs = 100
    handler = LLMTraceCallbackHandler(tracer_provider=tracer_provider)
    manager = CallbackManager(handlers=[handler], metadata={"ls_provider": "openai"})

    def abandon(n: int) -> None:
        for _ in range(n):
            manager.on_chat_model_start({"name": "m"}, [[]], run_id=uuid4())

    tracemalloc.start()
    abandon(2_000)  # warm up: the map is full
    span_exporter.clear()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    abandon(5_000)
    span_exporter.clear()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert handler.open_runs() == 100
    assert after - before < 100_000  # 5,000 more runs, no growth
    abandon(1)
    (span,) = span_exporter.get_finished_spans()
    assert attrs(span)[semconv.LLMTRACE_EVICTED] == semconv.EVICTED_CAPACITY
    assert attrs(span)[semconv.ERROR_TYPE] == semconv.ERROR_TYPE_EVICTED


# with the instrumentor, the retriever's query embedding is traced too (embedding models fire no callbacks)
INSTRUMENTED_TREE = [*EXPECTED_TREE, ("embeddings", "retrieval InMemoryVectorStore")]


def _check_traces(spans, runs: int, expected: list[tuple[str, str | None]] = EXPECTED_TREE) -> None:
    by_trace: dict[int, list] = {}
    for span in spans:
        by_trace.setdefault(span.context.trace_id, []).append(span)
    assert len(by_trace) == runs
    for trace_spans in by_trace.values():
        assert sorted(tree(trace_spans)) == sorted(expected)


def test_50_concurrent_agent_runs_in_threads(handler, span_exporter):
    agent = react_agent()
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(
            pool.map(
                lambda i: agent.invoke({"messages": [("user", str(i))]}, config={"callbacks": [handler]}),
                range(50),
            )
        )
    assert len(results) == 50
    _check_traces(span_exporter.get_finished_spans(), 50)
    assert handler.open_runs() == 0


def test_parallel_branches_deciding_one_pending_root_get_one_workflow_span(handler, span_exporter):
    """The branches of a RunnableParallel start in threads: each may be the root chain's first child,
    which decides (under a lock) that the root gets its workflow span. One span, every time."""
    branches = {f"b{i}": RunnableLambda(lambda x: FakeListLLM(responses=["r"]).invoke(x)) for i in range(8)}
    parallel = RunnableParallel(branches)
    for _ in range(20):
        assert parallel.invoke("p", config={"callbacks": [handler], "max_concurrency": 8}) == {
            name: "r" for name in branches
        }
    spans = span_exporter.get_finished_spans()
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 20
    assert {s.name for s in roots} == {"invoke_workflow RunnableParallel<b0,b1,b2,b3,b4,b5,b6,b7>"}
    root_ids = {s.context.span_id for s in roots}
    models = [s for s in spans if s.parent is not None]
    assert len(models) == 20 * 8
    assert all(s.parent.span_id in root_ids for s in models)
    assert handler.open_runs() == 0


async def test_200_concurrent_agent_runs_as_tasks(handler, span_exporter):
    agent = react_agent()
    await asyncio.gather(
        *(
            agent.ainvoke({"messages": [("user", str(i))]}, config={"callbacks": [handler]})
            for i in range(200)
        )
    )
    _check_traces(span_exporter.get_finished_spans(), 200)
    assert handler.open_runs() == 0


def test_batch_with_max_concurrency(handler, span_exporter):
    react_agent().batch(
        [{"messages": [("user", str(i))]} for i in range(8)],
        config={"callbacks": [handler], "max_concurrency": 3},
    )
    _check_traces(span_exporter.get_finished_spans(), 8)


# ---- instrumentor -----------------------------------------------------------------------------------
def test_instrumentor_traces_without_config(instrumented, span_exporter):
    agent = react_agent()
    (build,) = span_exporter.get_finished_spans()  # the store's documents, embedded outside any run
    assert (build.name, build.parent) == ("embeddings", None)
    span_exporter.clear()
    agent.invoke({"messages": [("user", "go")]})
    _check_traces(span_exporter.get_finished_spans(), 1, INSTRUMENTED_TREE)


def test_hand_registered_handler_plus_instrumentor_gives_one_span_per_run(
    instrumented, tracer_provider, span_exporter
):
    mine = LLMTraceCallbackHandler(tracer_provider=tracer_provider)
    agent = react_agent()
    span_exporter.clear()
    agent.invoke({"messages": [("user", "go")]}, config={"callbacks": [mine]})
    _check_traces(span_exporter.get_finished_spans(), 1, INSTRUMENTED_TREE)
    span_exporter.clear()
    FakeListLLM(responses=["x"]).invoke("p", config={"callbacks": [mine]})
    assert len(span_exporter.get_finished_spans()) == 1


def test_instrument_is_idempotent_and_uninstrument_restores(tracer_provider, span_exporter):
    import langchain_core.callbacks.base as base

    originals = (base.BaseCallbackManager.add_handler, base.BaseCallbackManager.merge)
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        manager = CallbackManager.configure()  # what every run does
        assert sum(isinstance(h, LLMTraceCallbackHandler) for h in manager.handlers) == 1
        assert manager.inheritable_handlers == manager.handlers
        assert manager.copy().handlers == manager.handlers
        assert len(manager.merge(CallbackManager.configure()).handlers) == 1
    finally:
        instrumentor.uninstrument()
    assert (base.BaseCallbackManager.add_handler, base.BaseCallbackManager.merge) == originals
    assert CallbackManager.configure().handlers == []
    FakeListLLM(responses=["x"]).invoke("p")
    assert span_exporter.get_finished_spans() == ()
    assert LangChainInstrumentor().instrumentation_dependencies() == ("langchain-core >= 1.1.2",)
    instrumentor.instrument(tracer_provider=tracer_provider)  # again after uninstrument: traced again
    try:
        FakeListLLM(responses=["x"]).invoke("p")
        assert len(span_exporter.get_finished_spans()) == 1
    finally:
        instrumentor.uninstrument()


def test_instrumentor_handler_gives_way_to_a_hand_registered_one_in_every_manager_shape(
    instrumented, tracer_provider
):
    mine = LLMTraceCallbackHandler(tracer_provider=tracer_provider)
    auto = LangChainInstrumentor._handler
    assert auto is not None

    def ours(manager):
        return [h for h in manager.handlers if isinstance(h, LLMTraceCallbackHandler)]

    assert ours(CallbackManager.configure([mine])) == [mine]  # inheritable callbacks of a config
    assert ours(CallbackManager.configure(None, [mine])) == [mine]  # local callbacks
    traced = CallbackManager.configure()
    assert ours(traced) == [auto]
    assert ours(CallbackManager.configure(traced, [mine])) == [mine]  # a child run's own handler
    merged = traced.merge(CallbackManager(handlers=[mine], inheritable_handlers=[mine]))
    assert ours(merged) == [mine] and merged.inheritable_handlers == [mine]
    traced.add_handler(mine)
    assert ours(traced) == [mine]


def test_instrumentor_handler_stays_out_of_langgraph_graph_callback_managers(instrumented):
    """LangGraph's graph-lifecycle managers take only GraphCallbackHandlers: nothing to add there."""
    graph_callbacks = pytest.importorskip("langgraph.callbacks")
    manager_class = getattr(graph_callbacks, "_GraphCallbackManager", None)
    if manager_class is None:
        pytest.skip("this langgraph has no graph callback manager")
    manager = manager_class()
    assert not any(isinstance(h, LLMTraceCallbackHandler) for h in manager.handlers)


def test_entry_points_and_llmtrace_instrument(tracer_provider, span_exporter):
    import llmtrace

    assert "langchain" in llmtrace.instrument("langchain", tracer_provider=tracer_provider)
    try:
        FakeListLLM(responses=["x"]).invoke("p")
        assert len(span_exporter.get_finished_spans()) == 1
    finally:
        llmtrace.uninstrument("langchain")
