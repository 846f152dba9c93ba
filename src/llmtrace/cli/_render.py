"""Rich renderings of what the store returns: trace lists, span trees, usage and cost tables.

Shared by the command line and ``examples/demo.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from llmtrace import semconv
from llmtrace.store._api import (
    ErrorRate,
    EvaluationRecord,
    ModelStats,
    Percentiles,
    SeriesPoint,
    SpanEvent,
    SpanRecord,
    Trace,
    TraceSummary,
    UsageSummary,
)

NONE = "-"

# Control characters (C0, DEL, C1) and bidirectional overrides, shown escaped: span names, error
# messages and model names come from the traced application and may carry terminal escape
# sequences (a model's output echoed in an exception) that would clear the screen, retitle the
# window or forge links in the operator's terminal.
_UNSAFE = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A))
}


def clean(value: object) -> str:
    """``value`` as text that is safe to print on a terminal (control characters escaped)."""
    return str(value).translate(_UNSAFE)


# --------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------
def fmt_duration_s(seconds: float) -> str:
    if seconds >= 100:
        return f"{seconds:.0f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1_000_000:.0f} µs"


def fmt_duration(ns: int) -> str:
    return fmt_duration_s(max(0, ns) / 1e9)


def fmt_cost(cost: float | None) -> str:
    if cost is None:
        return NONE
    if cost == 0:
        return "$0"
    if cost >= 1:
        return f"${cost:,.2f}"
    if cost >= 0.01:
        return f"${cost:.4f}"
    return f"${cost:.6f}"


UNKNOWN_REASON = "unknown"
"""The reason counted for unpriced calls stored without one (as the store counts them)."""


def fmt_unpriced(by_reason: Mapping[str, int], calls: int | None = None) -> str:
    """Unpriced calls counted by reason, most first: ``3 unpriced: 2 unknown_model, 1 service_tier``.
    ``calls``: the total when it is known apart from the reasons (it wins over their sum)."""
    reasons = sorted(((n, why) for why, n in by_reason.items() if n), key=lambda item: (-item[0], item[1]))
    total = sum(n for n, _ in reasons) if calls is None else calls
    text = f"{total:,} unpriced"
    return (text + ": " + ", ".join(f"{n:,} {clean(why)}" for n, why in reasons)) if reasons else text


def fmt_trace_cost(
    cost: float | None, unpriced_calls: int, unpriced_by_reason: Mapping[str, int] | None = None
) -> str:
    """A trace's cost, and how many of its calls it leaves out (no price known), by reason:
    ``$0.0123 +1 unpriced: 1 unknown_model``, or ``- +2 unpriced: 2 service_tier`` when none was
    priced."""
    text = fmt_cost(cost)
    if not unpriced_calls:
        return text
    return f"{text} +{fmt_unpriced(unpriced_by_reason or {}, unpriced_calls)}"


def fmt_bytes(size: int | None) -> str:
    if size is None:
        return NONE
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def fmt_int(value: int | None) -> str:
    return NONE if value is None else f"{value:,}"


def fmt_time(ns: int, tz: str = "UTC") -> str:
    moment = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc)
    if tz != "UTC":
        moment = moment.astimezone(ZoneInfo(tz))
        return moment.strftime("%Y-%m-%d %H:%M:%S %z")
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def fmt_tokens(input_tokens: int | None, output_tokens: int | None) -> str:
    if input_tokens is None and output_tokens is None:
        return NONE
    return f"{fmt_int(input_tokens)} in / {fmt_int(output_tokens)} out"


def _status_text(status: str) -> Text:
    return Text(status, style="bold red" if status.lower() == "error" else "green")


# --------------------------------------------------------------------------------------
# Trace list
# --------------------------------------------------------------------------------------
def traces_table(items: Sequence[TraceSummary], *, title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("trace id", no_wrap=True)
    table.add_column("start (UTC)", no_wrap=True)
    table.add_column("service")
    table.add_column("root")
    table.add_column("duration", justify="right")
    table.add_column("spans", justify="right")
    table.add_column("tokens in/out", justify="right")
    table.add_column("cost", justify="right")
    table.add_column("status")
    for item in items:
        table.add_row(
            item.trace_id,
            fmt_time(item.start_ns),
            clean(item.service or NONE),
            clean(item.root_name),
            fmt_duration(item.duration_ns),
            str(item.span_count),
            f"{item.input_tokens:,} / {item.output_tokens:,}",
            fmt_trace_cost(item.cost, item.unpriced_calls, item.unpriced_by_reason),
            _status_text(item.status),
        )
    if any(item.unpriced_calls for item in items):
        table.caption = (
            "+N unpriced: calls without a price, left out of the cost, by reason (unknown_model: "
            "no price for the model; service_tier: none for the tier that served the call)"
        )
    return table


# --------------------------------------------------------------------------------------
# Span tree
# --------------------------------------------------------------------------------------
def _attr(span: SpanRecord, key: str) -> Any:
    return span.attributes.get(key)


def _span_label(span: SpanRecord) -> Text:
    text = Text()
    error = span.status_code == "ERROR"
    text.append(clean(span.name), style="bold red" if error else "bold")
    text.append(f"  {fmt_duration(span.duration_ns)}", style="cyan")
    details: list[str] = []
    model = _attr(span, semconv.GEN_AI_RESPONSE_MODEL) or _attr(span, semconv.GEN_AI_REQUEST_MODEL)
    operation = _attr(span, semconv.GEN_AI_OPERATION_NAME)
    if model and operation in semconv.MODEL_OPERATIONS:
        details.append(f"model={model}")
    tokens_in = _attr(span, semconv.GEN_AI_USAGE_INPUT_TOKENS)
    tokens_out = _attr(span, semconv.GEN_AI_USAGE_OUTPUT_TOKENS)
    if tokens_in is not None or tokens_out is not None:
        details.append(f"tokens={fmt_int(tokens_in)} in/{fmt_int(tokens_out)} out")
    cache_read = _attr(span, semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)
    if cache_read:
        details.append(f"cache_read={fmt_int(cache_read)}")
    cost = _attr(span, semconv.GEN_AI_USAGE_COST_AMOUNT)
    if isinstance(cost, (int, float)):
        details.append(f"cost={fmt_cost(float(cost))}")
    elif _attr(span, semconv.LLMTRACE_COST_UNPRICED):
        reason = _attr(span, semconv.LLMTRACE_COST_UNPRICED_REASON)
        details.append(f"cost=unpriced ({reason})" if isinstance(reason, str) and reason else "cost=unpriced")
    cache_hit = _attr(span, semconv.LLMTRACE_CACHE_HIT)
    if cache_hit is not None:
        details.append("cache HIT" if cache_hit else "cache miss")
    if operation == semconv.OP_EXECUTE_TOOL:
        tool = _attr(span, semconv.GEN_AI_TOOL_NAME)
        call_id = _attr(span, semconv.GEN_AI_TOOL_CALL_ID)
        details.append(f"tool={tool}" + (f" call={call_id}" if call_id else ""))
    docs = _attr(span, semconv.LLMTRACE_RETRIEVAL_DOCUMENT_COUNT)
    if docs is not None:
        details.append(f"documents={docs}")
    if details:
        text.append(clean("  " + "  ".join(details)), style="dim" if not error else "red")
    if error:
        error_type = _attr(span, semconv.ERROR_TYPE)
        message = span.status_message
        line = f"  ERROR {error_type or ''}{': ' + message if message else ''}".rstrip()
        text.append(clean(line), style="red")
    return text


def _event_label(event: SpanEvent, span_start_ns: int) -> Text | None:
    attrs = event.attributes
    offset = f"+{fmt_duration(event.time_ns - span_start_ns)}"
    if event.name == semconv.LLMTRACE_AGENT_STEP_EVENT:
        text = Text(clean(f"step {attrs.get(semconv.LLMTRACE_AGENT_STEP_INDEX, '?')}: "), style="magenta")
        text.append(clean(attrs.get(semconv.LLMTRACE_AGENT_STEP_KIND, "?")), style="magenta bold")
        tool = attrs.get(semconv.GEN_AI_TOOL_NAME)
        if tool:
            text.append(clean(f" tool={tool}"), style="magenta")
        text.append(f"  {offset}", style="dim")
        return text
    if event.name == semconv.EVENT_EXCEPTION:
        text = Text(clean(f"exception {attrs.get(semconv.EXCEPTION_TYPE, '')}"), style="red")
        message = attrs.get(semconv.EXCEPTION_MESSAGE)
        if message:
            text.append(clean(f": {str(message)[:200]}"), style="red")
        return text
    return Text(clean(f"event {event.name}  {offset}"), style="dim")


MAX_EXPLANATION_SHOWN = 120
"""An evaluation's explanation is shown cut to this many characters (``show --json`` has it whole)."""


def fmt_score(score: float | None) -> str:
    return NONE if score is None else f"{score:.4g}"


def _evaluation_label(evaluation: EvaluationRecord, *, span: str | None = None) -> Text:
    """``evaluation relevance: 0.9 (good)  explanation…`` (``span``: the span it evaluates, named
    when that span is not shown)."""
    text = Text(clean(f"evaluation {evaluation.name}: "), style="yellow")
    score, label = evaluation.score, evaluation.label
    if score is not None and label:
        result = f"{fmt_score(score)} ({label})"
    else:
        result = fmt_score(score) if score is not None else label or NONE
    text.append(clean(result), style="yellow bold")
    if span is not None:
        text.append(clean(f"  span {span}"), style="dim")
    if evaluation.explanation:
        words = " ".join(evaluation.explanation.split())
        if len(words) > MAX_EXPLANATION_SHOWN:
            words = words[: MAX_EXPLANATION_SHOWN - 1].rstrip() + "…"
        text.append(clean(f"  {words}"), style="dim")
    return text


MAX_TREE_DEPTH = 200


def trace_tree(trace: Trace) -> Tree:
    """The span tree: each span with its duration, model, tokens, cost, cache hits, tool calls,
    errors, its agent-step and exception events and its evaluations. Every span is shown once:
    spans whose parent never arrived at the top, spans caught in a parent loop (malformed data)
    from the earliest, and what lies deeper than ``MAX_TREE_DEPTH`` is counted, not dropped in
    silence. Evaluations of spans that are not stored (sampled out, not ended yet) are listed at
    the top, with their span id."""
    spans = sorted(trace.spans, key=lambda s: (s.start_ns, s.span_id))
    ids = {span.span_id for span in spans}
    children: dict[str | None, list[SpanRecord]] = {}
    for span in spans:
        parent = span.parent_span_id if span.parent_span_id in ids else None
        children.setdefault(parent, []).append(span)
    evaluations: dict[str, list[EvaluationRecord]] = {}
    for evaluation in trace.evaluations:
        evaluations.setdefault(evaluation.span_id, []).append(evaluation)
    root = Tree(Text(clean(f"trace {trace.trace_id}"), style="bold"), guide_style="dim")
    shown: set[str] = set()

    def add(node: Tree, top: SpanRecord) -> None:
        shown.add(top.span_id)
        pending = [(node.add(_span_label(top)), top, 0)]  # iterative: no recursion limit
        while pending:
            branch, span, depth = pending.pop()
            entries: list[tuple[int, int, Any]] = [(e.time_ns, 0, e) for e in span.events]
            entries += [(c.start_ns, 1, c) for c in children.get(span.span_id, ())]
            entries += [(e.time_ns, 2, e) for e in evaluations.get(span.span_id, ())]
            entries.sort(key=lambda entry: entry[:2])
            hidden = 0
            for _, _, entry in entries:
                if isinstance(entry, SpanEvent):
                    label = _event_label(entry, span.start_ns)
                    if label is not None:
                        branch.add(label)
                elif isinstance(entry, EvaluationRecord):
                    branch.add(_evaluation_label(entry))
                elif entry.span_id in shown:
                    continue
                elif depth + 1 < MAX_TREE_DEPTH:  # its branch now, in time order; its contents later
                    shown.add(entry.span_id)
                    pending.append((branch.add(_span_label(entry)), entry, depth + 1))
                else:
                    hidden += _count_below(entry, children, shown)
            if hidden:
                branch.add(Text(f"… {hidden} more span(s) nested deeper, not shown", style="dim"))

    for top in children.get(None, []):
        add(root, top)
    for span in spans:  # in a parent loop: reachable from no top-level span
        if span.span_id not in shown:
            add(root, span)
    for evaluation in trace.evaluations:  # of spans not stored: nothing is left out
        if evaluation.span_id not in ids:
            root.add(_evaluation_label(evaluation, span=evaluation.span_id))
    return root


def _count_below(
    top: SpanRecord, children: Mapping[str | None, Sequence[SpanRecord]], shown: set[str]
) -> int:
    """How many spans ``top`` and its descendants hold (marked shown: counted, not drawn)."""
    count, pending = 0, [top]
    while pending:
        span = pending.pop()
        if span.span_id in shown:
            continue
        shown.add(span.span_id)
        count += 1
        pending.extend(children.get(span.span_id, ()))
    return count


def trace_header(trace: Trace) -> Table:
    spans = trace.spans
    times = [t for s in spans for t in (s.start_ns, s.end_ns)] or [e.time_ns for e in trace.evaluations]
    start = min(times, default=0)
    end = max(times, default=0)
    service = next((s.resource.get(semconv.SERVICE_NAME) for s in spans if s.resource), None)
    if service is None:
        service = next((e.service for e in trace.evaluations if e.service), None)
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost: float | None = None
    tools = errors = cache_hits = 0
    unpriced: dict[str, int] = {}
    for span in spans:
        attrs = span.attributes
        operation = attrs.get(semconv.GEN_AI_OPERATION_NAME)
        # llmtrace's own model spans only, as the store counts them: a provider SDK's GenAI span
        # nested under one carries the same tokens again
        if operation in semconv.MODEL_OPERATIONS and span.scope == semconv.INSTRUMENTATION_SCOPE:
            count_in = _count(attrs.get(semconv.GEN_AI_USAGE_INPUT_TOKENS))
            count_out = _count(attrs.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS))
            if count_in is not None:
                tokens_in = (tokens_in or 0) + count_in
            if count_out is not None:
                tokens_out = (tokens_out or 0) + count_out
            amount = attrs.get(semconv.GEN_AI_USAGE_COST_AMOUNT)
            if isinstance(amount, (int, float)) and not isinstance(amount, bool):
                cost = (cost or 0.0) + float(amount)
            elif attrs.get(semconv.LLMTRACE_COST_UNPRICED):
                reason = attrs.get(semconv.LLMTRACE_COST_UNPRICED_REASON)
                reason = reason if isinstance(reason, str) and reason else UNKNOWN_REASON
                unpriced[reason] = unpriced.get(reason, 0) + 1
        if operation == semconv.OP_EXECUTE_TOOL:
            tools += 1
        if span.attributes.get(semconv.LLMTRACE_CACHE_HIT):
            cache_hits += 1
        if span.status_code == "ERROR":
            errors += 1
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("trace", trace.trace_id)
    table.add_row("service", clean(service or NONE))
    table.add_row("start", fmt_time(start))
    table.add_row("duration", fmt_duration(end - start))
    table.add_row("spans", f"{len(spans)} ({tools} tool calls, {cache_hits} cache hits, {errors} errors)")
    table.add_row("tokens", fmt_tokens(tokens_in, tokens_out))
    table.add_row("cost", fmt_cost(cost) + (f" (+ {fmt_unpriced(unpriced)})" if unpriced else ""))
    if trace.evaluations:
        stored = {span.span_id for span in spans}
        missing = sum(1 for e in trace.evaluations if e.span_id not in stored)
        table.add_row(
            "evaluations",
            f"{len(trace.evaluations)}" + (f" ({missing} of spans not stored)" if missing else ""),
        )
    return table


def _count(value: object) -> int | None:
    """A token count as recorded (an int), else None (not reported, or not a count)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def render_trace(trace: Trace) -> RenderableType:
    return Group(trace_header(trace), Text(""), trace_tree(trace))


def trace_json(trace: Trace) -> dict[str, Any]:
    """A trace as JSON-ready data (``show --json``): its spans and its evaluations, whole, as the
    store gives them back (ids hex, times ns)."""
    return {
        "trace_id": trace.trace_id,
        "spans": [
            _plain({**dataclasses.asdict(span), "duration_ns": span.duration_ns}) for span in trace.spans
        ],
        "evaluations": [_plain(dataclasses.asdict(evaluation)) for evaluation in trace.evaluations],
    }


def _plain(value: Any) -> Any:
    """``value`` with its mappings as dicts and its sequences as lists, as JSON gives them back."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


# --------------------------------------------------------------------------------------
# Usage and cost
# --------------------------------------------------------------------------------------
def summary_table(summary: UsageSummary, *, title: str = "Usage and cost") -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    write_1h = (
        [("    of which one-hour", fmt_int(summary.cache_write_1h_tokens))]
        if summary.cache_write_1h_tokens
        else []
    )
    # most first, as fmt_unpriced orders them
    reasons = sorted(summary.unpriced_by_reason.items(), key=lambda item: (-item[1], item[0]))
    rows: Iterable[tuple[str, str]] = (
        ("model calls", fmt_int(summary.calls)),
        ("input tokens", fmt_int(summary.input_tokens)),
        ("  of which cache read", fmt_int(summary.cache_read_tokens)),
        ("  of which cache write", fmt_int(summary.cache_write_tokens)),
        *write_1h,
        ("output tokens", fmt_int(summary.output_tokens)),
        ("  of which reasoning", fmt_int(summary.reasoning_tokens)),
        ("cost (USD)", fmt_cost(summary.cost)),
        ("unpriced calls", fmt_int(summary.unpriced_calls)),
        *((f"  of which {clean(why)}", fmt_int(n)) for why, n in reasons if n),
        ("failed calls", fmt_int(summary.error_calls)),
        ("response-cache hits", fmt_int(summary.cache_hits)),
    )
    for name, value in rows:
        table.add_row(name, value)
    return table


def model_stats_table(stats: Sequence[ModelStats], *, title: str = "Per model") -> Table:
    table = Table(title=title)
    for name, justify in (
        ("model", "left"),
        ("provider", "left"),
        ("calls", "right"),
        ("input", "right"),
        ("output", "right"),
        ("cost", "right"),
        ("mean time", "right"),
        ("error rate", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in stats:
        table.add_row(
            clean(row.model),
            clean(row.provider),
            fmt_int(row.calls),
            fmt_int(row.input_tokens),
            fmt_int(row.output_tokens),
            fmt_cost(row.cost),
            fmt_duration_s(row.mean_duration_s),
            f"{row.error_rate:.1%}",
        )
    return table


def series_table(points: Sequence[SeriesPoint], *, group_by: str, bucket: str, tz: str) -> Table:
    table = Table(title=f"Usage by {group_by} per {bucket} ({tz})")
    table.add_column(f"{bucket} starting", no_wrap=True)
    table.add_column(group_by)
    for name in ("calls", "input", "output", "cost"):
        table.add_column(name, justify="right")
    for point in points:
        table.add_row(
            fmt_time(point.bucket_start_ns, tz),
            clean(point.group or NONE),
            fmt_int(point.calls),
            fmt_int(point.input_tokens),
            fmt_int(point.output_tokens),
            fmt_cost(point.cost),
        )
    return table


def percentiles_table(rows: Sequence[Percentiles], *, by: str) -> Table:
    table = Table(title=f"Latency by {by}")
    table.add_column(by)
    for name in ("calls", "p50", "p90", "p99"):
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(
            clean(row.key),
            fmt_int(row.count),
            fmt_duration_s(row.p50_s),
            fmt_duration_s(row.p90_s),
            fmt_duration_s(row.p99_s),
        )
    return table


def error_rates_table(rows: Sequence[ErrorRate], *, by: str) -> Table:
    table = Table(title=f"Errors by {by}")
    table.add_column(by)
    for name in ("calls", "errors", "rate"):
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(clean(row.key), fmt_int(row.calls), fmt_int(row.errors), f"{row.rate:.1%}")
    return table


def render_usage(summary: UsageSummary, stats: Sequence[ModelStats]) -> RenderableType:
    return Group(summary_table(summary), model_stats_table(stats))


def kv_table(rows: Mapping[str, Any], *, title: str | None = None) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(key, NONE if value is None else clean(value))
    return table
