"""``llmtrace show`` with evaluations: the README's quickstart (a bare ``configure()``, then
``record_evaluation``) lands in the local store, and each evaluation shows under its span, or at
the top when its span is not stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from rich.console import Console

from llmtrace.cli import _render
from llmtrace.store import Trace
from llmtrace.store._api import EvaluationRecord
from llmtrace.store._sqlite import SqliteStore
from tests.store.dataset import TRACE_A, root_span

from .test_cli import run

APP = """
import json
import llmtrace

llmtrace.configure()
with llmtrace.agent_span("planner") as agent:
    with llmtrace.tool_span("search", call_id="call_1") as tool:
        llmtrace.record_evaluation("tone", label="polite")  # the active span: the tool's
agent_ids = agent.span.get_span_context()
trace_id, span_id = format(agent_ids.trace_id, "032x"), format(agent_ids.span_id, "016x")
llmtrace.record_evaluation("relevance", score=0.9, trace_id=trace_id, span_id=span_id)  # later feedback
llmtrace.record_evaluation(  # of a span that was never stored (sampled out, another service)
    "faithfulness", score=0.25, label="unsupported", explanation="cites " * 60,
    trace_id=trace_id, span_id="ab" * 8,
)
print(json.dumps([trace_id, span_id]))
"""


def _quickstart(workdir: Path) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMTRACE_"))}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(APP)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    trace_id, span_id = json.loads(result.stdout)
    return trace_id, span_id


def test_the_quickstarts_evaluations_show_under_their_spans(tmp_path):
    trace_id, agent_id = _quickstart(tmp_path)
    store = tmp_path / ".llmtrace" / "traces.db"  # the default store of a bare configure()
    code, out, err = run(str(store), "show", trace_id[:8])
    assert code == 0, err
    lines = out.splitlines()
    header = {line.split()[0]: line.split(None, 1)[1].strip() for line in lines[:8] if line.strip()}
    assert header["evaluations"] == "3 (1 of spans not stored)"
    tree = lines[lines.index(f"trace {trace_id}") :]

    def depth(text: str) -> int:
        (line,) = [line for line in tree if text in line]
        return len(line) - len(line.lstrip("│├└─ "))

    agent, tool = depth("invoke_agent planner"), depth("execute_tool search")
    assert depth("evaluation tone: polite") == tool + 4  # under the tool span
    assert depth("evaluation relevance: 0.9") == agent + 4  # under the agent span
    assert tool == agent + 4
    (orphan,) = [line for line in tree if "evaluation faithfulness" in line]
    assert depth("evaluation faithfulness") == agent  # at the top, with its span id
    assert "0.25 (unsupported)  span abababababababab  cites cites" in orphan
    assert orphan.endswith("…") and len(orphan.split("  cites", 1)[1]) <= _render.MAX_EXPLANATION_SHOWN + 2

    reader = SqliteStore(store, create=False)
    try:
        evaluations = reader.get_trace(trace_id).evaluations
    finally:
        reader.close()
    assert [(e.name, e.span_id, e.score, e.label, e.service) for e in evaluations] == [
        ("tone", evaluations[0].span_id, None, "polite", "llmtrace-app"),
        ("relevance", agent_id, 0.9, None, "llmtrace-app"),
        ("faithfulness", "ab" * 8, 0.25, "unsupported", "llmtrace-app"),
    ]
    assert (
        evaluations[2].explanation == ("cites " * 60).strip() or evaluations[2].explanation == "cites " * 60
    )


def _text(renderable: object) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_a_trace_of_evaluations_only_renders():
    """Every span of the trace was sampled out: its evaluations still show, header and all."""
    only = EvaluationRecord("9" * 32, "8" * 16, 1_700_000_000 * 10**9, "relevance", score=1.0, service="svc")
    text = _text(_render.render_trace(Trace("9" * 32, (), (only,))))
    assert "evaluations  1 (1 of spans not stored)" in text and "service      svc" in text
    assert "evaluation relevance: 1  span 8888888888888888" in text
    assert "spans        0 (0 tool calls" in text


def test_trace_json_has_spans_and_evaluations():
    root = root_span(TRACE_A)
    evaluation = EvaluationRecord(TRACE_A.trace_id, root.span_id, TRACE_A.end, "relevance", label="ok\x1b[2J")
    data = _render.trace_json(Trace(TRACE_A.trace_id, (root,), (evaluation,)))
    assert json.loads(json.dumps(data)) == data
    assert [span["span_id"] for span in data["spans"]] == [root.span_id]
    assert data["spans"][0]["duration_ns"] == TRACE_A.end - TRACE_A.start
    assert data["evaluations"] == [
        {
            "trace_id": TRACE_A.trace_id,
            "span_id": root.span_id,
            "time_ns": TRACE_A.end,
            "name": "relevance",
            "score": None,
            "label": "ok\x1b[2J",
            "explanation": None,
            "response_id": None,
            "service": None,
            "evaluation_id": "",
        }
    ]
    # on a terminal, what the application recorded is shown escaped
    assert "ok\\x1b[2J" in _text(_render.trace_tree(Trace(TRACE_A.trace_id, (root,), (evaluation,))))
