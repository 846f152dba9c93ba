"""``llmtrace stats --by service_tier``, one-hour cache writes in the totals, and unpriced calls counted
by reason wherever the command line counts them (stats, the trace list, a trace's header), on SQLite
and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from llmtrace import semconv as sc
from llmtrace.cli import _render
from llmtrace.store import Trace, open_store
from tests.cli.test_cli import run
from tests.store.conftest import fresh_postgres_url, new_postgres_url, postgres_url  # noqa: F401
from tests.store.dataset import R6, TRACE_D, call_span, root_span, write_dataset
from tests.store.test_usage_fields import TRACE, _write


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The fixed data set (tests/store/dataset.py) and the trace of tests/store/test_usage_fields.py:
    five calls on 2024-04-01, on the priority, scale and flex tiers and two without a tier; three of
    them unpriced (two for unknown_model, one for service_tier)."""
    target = (
        str(tmp_path / "traces.db")
        if request.param == "sqlite"
        else request.getfixturevalue("fresh_postgres_url")
    )
    store = open_store(target)
    write_dataset(store)
    _write(store)
    store.close()
    yield target


def _row(out: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃ ").split("│")]
        if cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in\n{out}")


def test_stats_by_service_tier(url: str) -> None:
    code, out, err = run(url, "stats", "--by", "service_tier", "--bucket", "day", "--json")
    assert code == 0, err
    series = [
        (
            p["bucket_start_ns"] // 10**9,
            p["group"],
            p["calls"],
            p["input_tokens"],
            p["output_tokens"],
            p["cost"],
        )
        for p in json.loads(out)["series"]
    ]
    day = 86400
    march_9, march_10, march_11, april_1 = 19791 * day, 19792 * day, 19793 * day, 19814 * day
    assert [(start, group, calls, inp, out) for start, group, calls, inp, out, _ in series] == [
        (march_9, "default", 1, 100, 50),  # R1
        (march_9, "flex", 1, 200, 20),  # R2
        (march_10, "", 4, 400, 40),  # R3 R4 R6 R7: no tier reported
        (march_10, "standard", 1, 300, 100),  # R5
        (march_11, "", 2, 1000, 0),  # R8 R9
        (april_1, "", 2, 500, 50),  # the two llama3 calls
        (april_1, "flex", 1, 50, 5),
        (april_1, "priority", 1, 1000, 10),
        (april_1, "scale", 1, 100, 10),  # unpriced: no price for gpt-4o on scale
    ]
    costs = [None if cost is None else round(cost, 9) for *_, cost in series]
    assert costs == [0.01, 0.02, 0.0, 0.03, 0.002, None, 0.001, 0.05, None]

    code, out, err = run(url, "stats", "--by", "service_tier", "--bucket", "day", "--since", "2024-04-01")
    assert code == 0, err
    assert "Usage by service_tier per day (UTC)" in out
    assert _row(out, "2024-04-01 00:00:00Z")[1:] == ["-", "2", "500", "50", "-"]  # no tier: "-"
    rows = [line for line in out.splitlines() if "2024-04-01 00:00:00Z" in line]
    assert [[c.strip() for c in line.strip("│ ").split("│")][1:] for line in rows] == [
        ["-", "2", "500", "50", "-"],
        ["flex", "1", "50", "5", "$0.001000"],
        ["priority", "1", "1,000", "10", "$0.0500"],
        ["scale", "1", "100", "10", "-"],
    ]


def test_an_unknown_grouping_is_refused(url: str) -> None:
    code, _, err = run(url, "stats", "--by", "tier")
    assert code == 2
    assert "'tier' is not one of" in err and "'service_tier'" in err


def test_stats_totals_show_one_hour_cache_writes_where_there_are_any(url: str) -> None:
    code, out, err = run(url, "stats")
    assert code == 0, err
    assert _row(out, "of which cache write") == [
        "of which cache write",
        "650",
    ]  # R5 50, the priority call 600
    assert _row(out, "of which one-hour") == ["of which one-hour", "430"]  # R5 30, the priority call 400
    code, out, err = run(url, "stats", "--provider", "openai")
    assert code == 0, err
    assert _row(out, "of which cache write") == ["of which cache write", "0"]
    assert "one-hour" not in out
    code, out, _ = run(url, "stats", "--json", "--provider", "anthropic")
    summary = json.loads(out)["summary"]
    assert (summary["cache_write_tokens"], summary["cache_write_1h_tokens"]) == (650, 430)


def test_stats_count_unpriced_calls_by_reason(url: str) -> None:
    code, out, err = run(url, "stats")
    assert code == 0, err
    # R6 and the two llama3 calls: no price for the model; the scale call: none for its tier
    assert _row(out, "unpriced calls") == ["unpriced calls", "4"]
    assert _row(out, "of which unknown_model") == ["of which unknown_model", "3"]
    assert _row(out, "of which service_tier") == ["of which service_tier", "1"]
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if "unpriced calls" in line)
    assert "unknown_model" in lines[at + 1] and "service_tier" in lines[at + 2]  # most first
    code, out, _ = run(url, "stats", "--json")
    summary = json.loads(out)["summary"]
    assert (summary["unpriced_calls"], summary["unpriced_by_reason"]) == (
        4,
        {"unknown_model": 3, "service_tier": 1},
    )
    code, out, _ = run(url, "stats", "--provider", "anthropic")
    assert _row(out, "unpriced calls") == ["unpriced calls", "0"]
    assert "of which unknown_model" not in out and "of which service_tier" not in out


def test_the_trace_list_counts_unpriced_calls_by_reason(url: str) -> None:
    code, out, err = run(url, "traces", "--json")
    assert code == 0, err
    rows = {r["trace_id"]: r for r in map(json.loads, out.splitlines())}
    assert (rows[TRACE.trace_id]["unpriced_calls"], rows[TRACE.trace_id]["unpriced_by_reason"]) == (
        3,
        {"unknown_model": 2, "service_tier": 1},
    )
    assert rows[TRACE_D.trace_id]["unpriced_by_reason"] == {"unknown_model": 1}
    assert [r["unpriced_by_reason"] for r in rows.values() if not r["unpriced_calls"]] == [{}] * 4
    code, out, err = run(url, "traces")
    assert code == 0, err
    (line,) = [line for line in out.splitlines() if TRACE.trace_id in line]
    assert "$0.0510 +3 unpriced: 2 unknown_model, 1 service_tier" in line
    (line,) = [line for line in out.splitlines() if TRACE_D.trace_id in line]
    assert "- +1 unpriced: 1 unknown_model" in line


def test_a_trace_header_counts_unpriced_calls_by_reason(url: str) -> None:
    code, out, err = run(url, "show", TRACE.trace_id)
    assert code == 0, err
    (cost,) = [line.split(None, 1)[1].strip() for line in out.splitlines() if line.startswith("cost ")]
    assert cost == "$0.0510 (+ 3 unpriced: 2 unknown_model, 1 service_tier)"
    assert "cost=unpriced (service_tier)" in out and out.count("cost=unpriced (unknown_model)") == 2


def test_unpriced_spans_without_a_reason_count_as_unknown() -> None:
    """Spans of an llmtrace that recorded no reason (or of another program)."""
    no_reason = call_span(TRACE_D, 0, replace(R6, unpriced_reason=None))
    assert sc.LLMTRACE_COST_UNPRICED_REASON not in no_reason.attributes
    with_reason = replace(call_span(TRACE_D, 1, R6), span_id="e" * 16)
    header = _render.trace_header(Trace(TRACE_D.trace_id, [root_span(TRACE_D), no_reason, with_reason]))
    console = _render_text(header)
    assert "- (+ 2 unpriced: 1 unknown, 1 unknown_model)" in console
    assert (
        _render.fmt_unpriced({"service_tier": 1, "unknown_model": 2})
        == "3 unpriced: 2 unknown_model, 1 service_tier"
    )
    assert _render.fmt_trace_cost(0.5, 2, {}) == "$0.5000 +2 unpriced"  # no reasons known: the count only


def _render_text(renderable: object) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()
