"""What schema version 6 adds: evaluations (``gen_ai.evaluation.result`` events) kept with their
traces, on both backends; a version-5 store upgraded by a writer, read as it is by a reader, and
pruned without the table; retention deleting evaluations with their traces and on their own."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llmtrace._invocation import MAX_NAME_LENGTH, MAX_VALUE_LENGTH
from llmtrace._manual import MAX_EXPLANATION, MAX_LABEL
from llmtrace.store import Store, StoreError, TraceNotFound, _schema, _sql, open_store
from llmtrace.store._api import EvaluationRecord, Pruned
from llmtrace.store._retention import prune

from .dataset import TRACE_A, TRACE_C, TRACE_D, S, ns, root_span, write_dataset
from .test_readers import _old_store, _raw, _versions
from .test_store import _span_columns

HOUR = 3600 * S
NOW = ns("2024-03-20T00:00:00")  # the data set is ten days old then
CUT = ns("2024-03-10T12:00:00")  # traces A, B and C ended before it; D and E after


def evaluation(
    trace_id: str, span_id: str, time_ns: int, name: str = "relevance", **kw: Any
) -> EvaluationRecord:
    return EvaluationRecord(trace_id=trace_id, span_id=span_id, time_ns=time_ns, name=name, **kw)


A_ROOT = root_span(TRACE_A).span_id
LATE = evaluation(  # delayed feedback on trace A's root, an hour after the trace ended
    TRACE_A.trace_id,
    A_ROOT,
    TRACE_A.end + HOUR,
    score=0.9,
    label="relevant",
    explanation="on topic",
    response_id="chatcmpl-1",
    service="checkout",
    evaluation_id="1" * 16,
)
EARLY = evaluation(
    TRACE_A.trace_id, "f" * 16, TRACE_A.start + S, "toxicity", label="clean", evaluation_id="2" * 16
)
"""Of a span the store does not have (sampled out), recorded while the trace ran."""


def test_evaluations_are_kept_with_their_trace_in_the_order_recorded(store: Store) -> None:
    write_dataset(store)
    store.write([], [], [LATE, EARLY])
    store.write([], [], [LATE])  # again (a retried write): one row per evaluation id
    trace = store.get_trace(TRACE_A.trace_id.upper())
    assert len(trace.spans) == 4
    assert trace.evaluations == (EARLY, LATE)
    assert store.get_trace(TRACE_C.trace_id).evaluations == ()


def test_a_trace_with_evaluations_only_is_found(store: Store) -> None:
    """Its spans were all sampled out: its evaluations still show."""
    orphan = evaluation("9" * 32, "8" * 16, NOW, score=1, evaluation_id="3" * 16)
    store.write([], [], [orphan])
    trace = store.get_trace("9" * 32)
    assert (trace.spans, trace.evaluations) == ((), (replace(orphan, score=1.0),))
    with pytest.raises(TraceNotFound):
        store.get_trace("7" * 32)


def test_stored_evaluations_are_bounded_and_clean(store: Store) -> None:
    big = evaluation(
        "A" * 32,
        "B" * 16,
        NOW,
        "n\x00" * 200,
        score=math.nan,
        label="l" * 1000,
        explanation="e" * 10_000,
        response_id="r" * 5000,
        evaluation_id="C" * 16,
    )
    inf = evaluation("a" * 32, "b" * 16, NOW + 1, "inf", score=math.inf, evaluation_id="d" * 16)
    flag = evaluation("a" * 32, "b" * 16, NOW + 2, "flag", score=True, evaluation_id="e" * 16)  # type: ignore[arg-type]
    store.write([], [], [big, inf, flag])
    got, got_inf, got_flag = store.get_trace("a" * 32).evaluations
    assert (got.trace_id, got.span_id, got.evaluation_id) == ("a" * 32, "b" * 16, "c" * 16)
    assert got.name == "n\ufffd" * 128 and len(got.name) == _sql.MAX_EVALUATION_NAME
    assert got.label == "l" * _sql.MAX_EVALUATION_LABEL
    assert got.explanation == "e" * _sql.MAX_EVALUATION_EXPLANATION
    assert got.response_id == "r" * _sql.MAX_RESPONSE_ID
    assert (got.score, got_inf.score, got_flag.score) == (None, None, None)  # only finite numbers
    with pytest.raises(ValueError, match="without a name"):
        store.write([], [], [evaluation("a" * 32, "b" * 16, NOW, "")])


def test_the_store_bounds_evaluations_as_record_evaluation_does() -> None:
    """A guard: events of other emitters are cut where llmtrace's own are."""
    assert (_sql.MAX_EVALUATION_NAME, _sql.MAX_EVALUATION_LABEL) == (MAX_NAME_LENGTH, MAX_LABEL)
    assert (_sql.MAX_EVALUATION_EXPLANATION, _sql.MAX_RESPONSE_ID) == (MAX_EXPLANATION, MAX_VALUE_LENGTH)


def test_evaluations_without_an_id_are_each_kept(store: Store) -> None:
    anonymous = evaluation("a" * 32, "b" * 16, NOW, score=0.5)
    store.write([], [], [anonymous, anonymous])
    got = store.get_trace("a" * 32).evaluations
    assert len(got) == 2 and len({e.evaluation_id for e in got}) == 2
    assert all(len(e.evaluation_id) == 16 for e in got)


# --------------------------------------------------------------------------------------
# Schema version 6: upgrade, readers, both backends alike
# --------------------------------------------------------------------------------------
def test_a_writer_upgrades_a_version_5_store_and_keeps_its_data(store_url: str) -> None:
    _old_store(store_url, 5)
    store = open_store(store_url)
    try:
        assert store.schema_version() == _schema.CURRENT_VERSION == 6  # type: ignore[attr-defined]
        old = store.get_trace(TRACE_C.trace_id)
        assert len(old.spans) == 3 and old.evaluations == ()
        assert store.usage_summary().calls == 9
        assert len(store.list_traces(limit=50).items) == 5
        store.write([], [], [replace(LATE, trace_id=TRACE_C.trace_id)])
        assert store.get_trace(TRACE_C.trace_id).evaluations == (replace(LATE, trace_id=TRACE_C.trace_id),)
    finally:
        store.close()
    assert _versions(store_url) == [1, 2, 3, 4, 5, 6]


def test_a_reader_reads_a_version_5_store_as_it_is(store_url: str) -> None:
    _old_store(store_url, 5)
    before = Path(store_url).read_bytes() if not store_url.startswith("postgresql://") else b""
    reader = open_store(store_url, create=False)
    try:
        assert reader.schema_version() == 5  # type: ignore[attr-defined]
        trace = reader.get_trace(TRACE_C.trace_id)
        assert len(trace.spans) == 3 and trace.evaluations == ()
        assert reader.count_prunable(CUT, now_ns=NOW) == Pruned(traces=3, spans=9, usage=5)
        with pytest.raises(StoreError, match="reading only"):
            reader.write([], [], [LATE])
    finally:
        reader.close()
    assert _versions(store_url) == [1, 2, 3, 4, 5]
    if before:
        assert Path(store_url).read_bytes() == before


def test_a_version_5_store_is_pruned_without_the_table(store_url: str) -> None:
    """``llmtrace prune`` opens a store to write it without upgrading it."""
    _old_store(store_url, 5)
    store = open_store(store_url, create=False, write=True)
    try:
        assert prune(store, CUT, now_ns=NOW) == Pruned(traces=3, spans=9, usage=5)
        with pytest.raises(StoreError, match="keeps evaluations from version 6 on"):
            store.write([], [], [LATE])
        store.reclaim_space()  # PostgreSQL vacuums the tables the store has
    finally:
        store.close()
    assert _versions(store_url) == [1, 2, 3, 4, 5]


def test_both_backends_and_upgraded_stores_have_the_same_evaluations_table(
    tmp_path: Path, new_postgres_url: Any
) -> None:
    columns = []
    for url, upgraded in (
        (str(tmp_path / "fresh.db"), False),
        (str(tmp_path / "upgraded.db"), True),
        (new_postgres_url(), False),
        (new_postgres_url(), True),
    ):
        if upgraded:
            _old_store(url, 5)
        open_store(url).close()
        columns.append(_span_columns(url, "evaluations"))
    assert columns[1] == columns[2] == columns[3] == columns[0]
    assert columns[0] == [
        ("trace_id", False),
        ("evaluation_id", False),
        ("span_id", False),
        ("time_ns", False),
        ("name", False),
        ("score", True),
        ("label", True),
        ("explanation", True),
        ("response_id", True),
        ("service", True),
    ]


def test_a_database_at_version_6_without_the_table_is_not_a_store(store_url: str) -> None:
    open_store(store_url).close()
    execute, close = _raw(store_url)
    try:
        execute("DROP TABLE evaluations")
    finally:
        close()
    with pytest.raises(StoreError, match="is not an llmtrace store"):
        open_store(store_url, create=False)


# --------------------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------------------
def _evaluation_ids(store: Store) -> list[str]:
    rows = store._read("SELECT evaluation_id FROM evaluations ORDER BY evaluation_id")  # type: ignore[attr-defined]
    return [str(r[0]) for r in rows]


def test_evaluations_go_with_their_traces_and_old_ones_of_traces_not_stored(store: Store) -> None:
    write_dataset(store)
    kept_with_d = evaluation(TRACE_D.trace_id, "d" * 16, TRACE_D.end + S, evaluation_id="4" * 16)
    old_orphan = evaluation("9" * 32, "8" * 16, ns("2024-03-09T00:00:00"), evaluation_id="5" * 16)
    new_orphan = evaluation("7" * 32, "8" * 16, NOW - HOUR, evaluation_id="6" * 16)  # after the cutoff
    store.write([], [], [LATE, EARLY, kept_with_d, old_orphan, new_orphan])
    expected = Pruned(traces=3, spans=9, usage=5, evaluations=3)  # A's two, the old orphan
    assert store.count_prunable(CUT, now_ns=NOW) == expected
    assert prune(store, CUT, now_ns=NOW) == expected
    assert _evaluation_ids(store) == ["4" * 16, "6" * 16]
    with pytest.raises(TraceNotFound):
        store.get_trace(TRACE_A.trace_id)
    assert store.get_trace("7" * 32).evaluations == (new_orphan,)
    assert store.count_prunable(CUT, now_ns=NOW) == Pruned()


def test_orphan_evaluations_are_deleted_in_bounded_batches(store: Store) -> None:
    old = ns("2024-03-01T00:00:00")
    store.write(
        [], [], [evaluation("9" * 32, "8" * 16, old + i, evaluation_id=f"{i:016x}") for i in range(25)]
    )
    batches: list[Pruned] = []
    total = prune(store, CUT, now_ns=NOW, max_spans=10, progress=batches.append)
    assert total == Pruned(evaluations=25)
    assert len(batches) == 3 and _evaluation_ids(store) == []
