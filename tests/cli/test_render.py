"""The trace view on data a store can hold: other instrumentations' spans, unpriced calls, calls
without usage, malformed parent links and very deep traces."""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console

from llmtrace import semconv as sc
from llmtrace.cli import _render
from llmtrace.store import SpanEvent, SpanRecord, Trace
from tests.store.dataset import R1, R6, TRACE_A, TRACE_D, call_span, root_span


def _text(renderable: object) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_header_counts_llmtrace_calls_once_and_says_what_is_unpriced():
    root = root_span(TRACE_A)
    priced = call_span(TRACE_A, 0, R1)  # 100 in / 50 out, $0.01
    # the provider SDK's own GenAI span under llmtrace's: the same tokens again, not counted
    sdk = replace(
        priced, span_id="f" * 16, parent_span_id=priced.span_id, scope="opentelemetry.instrumentation.openai"
    )
    unpriced = call_span(TRACE_A, 1, R6)  # 400 in / 40 out, no price known
    header = _text(_render.trace_header(Trace(TRACE_A.trace_id, [root, priced, sdk, unpriced])))
    assert "500 in / 90 out" in header
    assert "$0.0100 (+ 1 unpriced: 1 unknown_model)" in header


def test_header_without_reported_usage_shows_none_not_zero():
    root = root_span(TRACE_A)
    call = call_span(TRACE_A, 0, replace(R1, input_tokens=None, output_tokens=None, cost=None))
    header = _text(_render.trace_header(Trace(TRACE_A.trace_id, [root, call])))
    tokens = next(line for line in header.splitlines() if line.startswith("tokens"))
    assert tokens.split() == ["tokens", "-"]


def _span(
    span_id: str, parent: str | None, start: int, name: str, events: tuple[SpanEvent, ...] = ()
) -> SpanRecord:
    return replace(
        root_span(TRACE_D), span_id=span_id, parent_span_id=parent, start_ns=start, name=name, events=events
    )


def test_every_span_is_shown_once_whatever_its_parent_links():
    spans = [
        _span("1" * 16, None, 10, "top"),
        _span("2" * 16, "3" * 16, 20, "loop-a"),  # a parent loop: reachable from no root
        _span("3" * 16, "2" * 16, 30, "loop-b"),
        _span("4" * 16, "4" * 16, 40, "own-parent"),
        _span("5" * 16, "9" * 16, 50, "orphan"),  # parent never arrived: at the top
    ]
    text = _text(_render.trace_tree(Trace(TRACE_D.trace_id, spans)))
    for name in ("top", "loop-a", "loop-b", "own-parent", "orphan"):
        assert text.count(name) == 1, (name, text)
    assert text.index("loop-a") < text.index("loop-b")  # from the earliest of the loop


def test_events_and_children_in_time_order_and_deep_traces_say_what_is_not_shown():
    step = SpanEvent(
        sc.LLMTRACE_AGENT_STEP_EVENT,
        15,
        {sc.LLMTRACE_AGENT_STEP_INDEX: 1, sc.LLMTRACE_AGENT_STEP_KIND: "action"},
    )
    spans = [
        _span("0" * 15 + "1", None, 10, "agent", (step,)),
        _span("0" * 15 + "2", "0" * 15 + "1", 12, "child"),
    ]
    text = _text(_render.trace_tree(Trace(TRACE_D.trace_id, spans)))
    assert text.index("child") < text.index("step 1: action")  # child at 12, step at 15

    depth = _render.MAX_TREE_DEPTH + 50
    chain = [_span(f"{i + 1:016x}", f"{i:016x}" if i else None, i, f"span-{i}") for i in range(depth)]
    tree = _render.trace_tree(Trace(TRACE_D.trace_id, chain))
    node, levels = tree, 0
    while node.children:
        node, levels = node.children[0], levels + 1
    assert levels == _render.MAX_TREE_DEPTH + 1  # the spans, then the note at the bottom
    assert str(node.label) == "… 50 more span(s) nested deeper, not shown"
