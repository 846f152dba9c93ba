"""Concurrency: 50 threads and 200 asyncio tasks run agents of both frameworks at once.

Every run must come out as exactly one complete trace: one root, every parent in the same trace,
the same spans as a run made alone, no span ended twice or left open, no context detach errors.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator

import pytest
from llmtrace_langchain import LangChainInstrumentor
from llmtrace_llama_index import LlamaIndexInstrumentor

from llmtrace import semconv
from llmtrace._safety import internal_error_counts

from .workloads import lc_agent, li_agent

THREADS = 50
TASKS = 200
LC_ANSWER = "3, sunny, France"
LI_ANSWER = "3 and an error"


@pytest.fixture
def both_instrumented(tracked_provider, meter_provider) -> Iterator[None]:
    lc, li = LangChainInstrumentor(), LlamaIndexInstrumentor()
    lc.instrument(tracer_provider=tracked_provider, meter_provider=meter_provider)
    li.instrument(tracer_provider=tracked_provider, meter_provider=meter_provider)
    yield
    li.uninstrument()
    lc.uninstrument()


def run_lc(name: str) -> str:
    result = lc_agent(name).invoke({"messages": [("user", name)]})
    return str(result["messages"][-1].content)


async def arun_lc(name: str) -> str:
    result = await lc_agent(name).ainvoke({"messages": [("user", name)]})
    return str(result["messages"][-1].content)


async def arun_li(name: str) -> str:
    return str(await li_agent(name).run(name))


def traces_by_agent(spans) -> dict[str, list]:
    """Spans grouped by trace, keyed by the name of the trace's single root agent.

    Building a LangChain agent's vector store embeds its documents outside any run: one trace of a
    single ``embeddings`` span per LangChain agent, keyed ``store-build-<n>``."""
    by_trace = defaultdict(list)
    for span in spans:
        by_trace[span.context.trace_id].append(span)
    result: dict[str, list] = {}
    for trace_spans in by_trace.values():
        ids = {s.context.span_id for s in trace_spans}
        roots = [s for s in trace_spans if s.parent is None]
        assert len(roots) == 1, [s.name for s in roots]
        if roots[0].name == "embeddings":
            assert len(trace_spans) == 1
            assert roots[0].attributes[semconv.LLMTRACE_EMBEDDINGS_INPUT_COUNT] == 2
            result[f"store-build-{sum(n.startswith('store-build-') for n in result)}"] = trace_spans
            continue
        orphans = [s.name for s in trace_spans if s.parent is not None and s.parent.span_id not in ids]
        assert orphans == []
        name = roots[0].attributes[semconv.GEN_AI_AGENT_NAME]
        assert name not in result, f"two traces for run {name}"
        result[name] = trace_spans
    return result


def shape(trace_spans, agent_name: str) -> Counter:
    """The trace's span names, with the run's own agent name abstracted away."""
    return Counter(s.name.replace(agent_name, "AGENT") for s in trace_spans)


def test_threads_and_tasks_each_make_one_complete_trace(both_instrumented, span_exporter, tracker, caplog):
    # each framework's trace shape when a run is alone
    assert run_lc("lc-alone") == LC_ANSWER
    assert asyncio.run(arun_li("li-alone")) == LI_ANSWER
    alone = traces_by_agent(span_exporter.get_finished_spans())
    assert alone.pop("store-build-0") is not None
    lc_shape, li_shape = shape(alone["lc-alone"], "lc-alone"), shape(alone["li-alone"], "li-alone")
    assert lc_shape == Counter(
        {
            "invoke_agent AGENT": 1,
            "chat gpt-4o-mini": 3,
            "execute_tool add": 1,
            "execute_tool weather": 1,
            "execute_tool search_docs": 1,
            "retrieval InMemoryVectorStore": 1,
            "embeddings": 1,
        }
    )
    assert li_shape == Counter(
        {"invoke_agent AGENT": 1, "chat": 2, "execute_tool li_add": 1, "execute_tool li_broken": 1}
    )
    alone_spans = len(span_exporter.get_finished_spans())
    span_exporter.clear()

    results: dict[str, str] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS + 1)

    def worker(i: int) -> None:
        try:
            start.wait()
            results[f"lc-thread-{i}"] = run_lc(f"lc-thread-{i}")
            results[f"li-thread-{i}"] = asyncio.run(arun_li(f"li-thread-{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    async def tasks() -> None:
        names = [f"{'lc' if i % 2 else 'li'}-task-{i}" for i in range(TASKS)]
        start.wait()
        answers = await asyncio.gather(
            *(arun_lc(name) if name.startswith("lc") else arun_li(name) for name in names)
        )
        results.update(zip(names, answers, strict=True))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    asyncio.run(tasks())
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(results) == 2 * THREADS + TASKS == 300
    wrong = {n: a for n, a in results.items() if a != (LC_ANSWER if n.startswith("lc") else LI_ANSWER)}
    assert wrong == {}

    traces = traces_by_agent(span_exporter.get_finished_spans())
    builds = [name for name in traces if name.startswith("store-build-")]
    assert len(builds) == THREADS + TASKS // 2  # one per LangChain agent built
    for name in builds:
        del traces[name]
    assert sorted(traces) == sorted(results)  # exactly one trace per run
    for name, trace_spans in traces.items():
        assert shape(trace_spans, name) == (lc_shape if name.startswith("lc") else li_shape), name
        for span in trace_spans:  # nothing leaked in from another run
            assert span.attributes.get(semconv.GEN_AI_AGENT_NAME, name) == name
    assert tracker.open_spans() == []
    assert tracker.ended_twice() == []
    assert (
        len(tracker.started)
        == alone_spans + sum(len(t) for t in traces.values()) + len(builds)
        == 15 + 150 * 9 + 150 * 5 + 150
    )
    assert internal_error_counts() == {}
    assert "Failed to detach context" not in caplog.text
    assert "ended span" not in caplog.text.lower()
