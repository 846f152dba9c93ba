"""Fault injection: every adapter function of both integrations made to raise, in turn.

For each one, the framework calls of a representative workload return exactly what they return
without llmtrace (same values, same exception types and messages), and the failure is logged once
per place, then only counted.
"""

from __future__ import annotations

import importlib.metadata
import logging

import pytest
from llmtrace_langchain import LangChainInstrumentor
from llmtrace_llama_index import LlamaIndexInstrumentor
from packaging.version import Version

from llmtrace._content import CaptureMode, ContentPolicy
from llmtrace._safety import internal_error_counts

from .conftest import internal_error_logs
from .faults import LC_ENTRY_POINTS, LC_MODULES, LI_ENTRY_POINTS, LI_MODULES, inject, targets
from .workloads import HELD, lc_workload, li_workload

# enumerating targets reads every attribute of pydantic classes, which warns on deprecated ones
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LC_TARGETS = targets(LC_MODULES, LC_ENTRY_POINTS)
LI_TARGETS = targets(LI_MODULES, LI_ENTRY_POINTS)
# create_agent puts its name in the runs' metadata (lc_agent_name) since langchain 1.2.4: before it
# agents are found by their graph alone, and _agent_name is never called
NAMES_ITS_AGENT = Version(importlib.metadata.version("langchain")) >= Version("1.2.4")


@pytest.fixture(autouse=True)
def _capture_everything(content_capture):
    """Content capture on, so that the content extraction functions run too."""
    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_AND_EVENT)


_baselines: dict[str, list[object]] = {}


def baseline(name: str) -> list[object]:
    """The workload's results without llmtrace (computed once)."""
    if name not in _baselines:
        _baselines[name] = lc_workload() if name == "langchain" else li_workload()
    return _baselines[name]


def check_logged_once(caplog: pytest.LogCaptureFixture, calls: int) -> None:
    assert calls > 0, "the workload never reached the injected function"
    counts = internal_error_counts()
    assert counts, "the injected fault was reached but not reported"
    logged = internal_error_logs(caplog)
    assert len(logged) == len(counts), (logged, counts)  # once per place
    for where in counts:
        assert sum(where in message for message in logged) == 1, (where, logged)
    assert sum(counts.values()) > len(counts), counts  # repeated failures counted, not logged


def test_enumeration_is_complete():
    """Every callback LangChain can call is a never_raise entry point, and so are the dispatcher handlers."""
    lc_bodies = {t.name for t in LC_TARGETS if t.how == "body"}
    from llmtrace_langchain import LLMTraceCallbackHandler

    on_methods = {n for n in vars(LLMTraceCallbackHandler) if n.startswith("on_")}
    assert on_methods == {n for n in lc_bodies if n.startswith("on_")}
    assert len(on_methods) == 17
    li_bodies = {t.name for t in LI_TARGETS if t.how == "body"}
    assert li_bodies == {"new_span", "prepare_to_exit_span", "prepare_to_drop_span", "handle"}
    assert len(LC_TARGETS) >= 70 and len(LI_TARGETS) >= 55


@pytest.mark.parametrize("target", LC_TARGETS, ids=str)
def test_langchain_fault(target, tracked_provider, tracker, caplog):
    if target.name == "_agent_name" and not NAMES_ITS_AGENT:
        pytest.skip("create_agent sets no lc_agent_name")
    expected = baseline("langchain")
    instrumentor = LangChainInstrumentor()
    with caplog.at_level(logging.ERROR, logger="llmtrace"), inject(target, LC_MODULES) as calls:
        instrumentor.instrument(tracer_provider=tracked_provider)
        try:
            first = lc_workload()
            second = lc_workload()
        finally:
            instrumentor.uninstrument()
    assert first == expected
    assert second == expected
    check_logged_once(caplog, calls[0])
    assert "Failed to detach context" not in caplog.text


@pytest.mark.parametrize("target", LI_TARGETS, ids=str)
def test_llama_index_fault(target, tracked_provider, tracker, caplog):
    expected = baseline("llama_index")
    instrumentor = LlamaIndexInstrumentor()
    with caplog.at_level(logging.ERROR, logger="llmtrace"), inject(target, LI_MODULES) as calls:
        instrumentor.instrument(tracer_provider=tracked_provider)
        try:
            first = li_workload()
            second = li_workload()
        finally:
            instrumentor.uninstrument()
            HELD.clear()
    assert first == expected
    assert second == expected
    check_logged_once(caplog, calls[0])
    assert "Failed to detach context" not in caplog.text
