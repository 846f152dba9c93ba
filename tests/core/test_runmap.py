"""The bounded run map: runs that never end are ended by TTL or capacity, memory stays flat."""

from __future__ import annotations

import gc
import time
import tracemalloc

from opentelemetry.trace import StatusCode

from llmtrace import semconv as sc
from llmtrace._invocation import Invocation
from llmtrace._runmap import RunMap


def _evict(inv: Invocation, reason: str) -> None:
    inv.evict(reason)


def test_capacity_evicts_oldest(telemetry_handler, span_exporter):
    runs: RunMap[int, Invocation] = RunMap(_evict, ttl_s=3600, max_size=3)
    for i in range(5):
        runs.put(i, telemetry_handler.start_chat(f"m{i}", provider="openai"))
    assert len(runs) == 3
    evicted = span_exporter.get_finished_spans()
    assert [s.name for s in evicted] == ["chat m0", "chat m1"]
    for span in evicted:
        assert span.attributes[sc.LLMTRACE_EVICTED] == sc.EVICTED_CAPACITY
        assert span.status.status_code is StatusCode.ERROR
    assert runs.pop(4) is not None and runs.pop(4) is None


def test_ttl_expiry_and_touch(telemetry_handler, span_exporter):
    runs: RunMap[str, Invocation] = RunMap(_evict, ttl_s=0.05, max_size=100)
    runs.put("stale", telemetry_handler.start_chat("stale", provider="openai"))
    runs.put("alive", telemetry_handler.start_chat("alive", provider="openai"))
    time.sleep(0.03)
    assert runs.get("alive") is not None  # news from the run refreshes it
    time.sleep(0.03)
    # the shared background sweeper may have ended "stale" already (it wakes every few seconds)
    assert runs.sweep() + len(span_exporter.get_finished_spans()) in (1, 2)
    assert len(runs) == 1
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "chat stale" and span.attributes[sc.LLMTRACE_EVICTED] == sc.EVICTED_TTL
    runs.clear()
    assert len(runs) == 0
    assert span_exporter.get_finished_spans()[-1].attributes[sc.LLMTRACE_EVICTED] == sc.EVICTED_SHUTDOWN


def test_failing_evict_callback_is_contained():
    def broken(value: object, reason: str) -> None:
        raise RuntimeError("boom")

    runs: RunMap[int, object] = RunMap(broken, ttl_s=3600, max_size=1)
    runs.put(1, object())
    runs.put(2, object())  # evicting 1 fails inside llmtrace, not in the caller
    assert len(runs) == 1


def test_later_runs_at_the_next_insert_or_sweep_and_failures_are_contained(caplog):
    runs: RunMap[int, object] = RunMap(lambda value, reason: None, ttl_s=3600, max_size=10)
    done: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    runs.later(lambda: done.append("first"))
    runs.later(broken)
    runs.later(lambda: done.append("after the failure"))
    assert done == []  # queued only: a weakref callback must not run llmtrace's work in place
    runs.put(1, object())
    assert done == ["first", "after the failure"]
    assert "RunMap.later" in caplog.text
    runs.later(lambda: done.append("swept"))
    assert runs.sweep() == 0
    assert done[-1] == "swept" and len(runs) == 1


def test_memory_stays_flat_for_runs_that_never_end(telemetry_handler, span_exporter):
    runs: RunMap[int, Invocation] = RunMap(_evict, ttl_s=3600, max_size=200)

    def burst(start: int) -> None:
        for i in range(start, start + 2_000):
            runs.put(i, telemetry_handler.start_chat("gpt-4o", provider="openai", stream=True))
        span_exporter.clear()

    def retained() -> int:
        # only memory allocated by this test's own calls (not by other tests' exporter threads)
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, __file__, all_frames=True)]
        )
        return sum(stat.size for stat in snapshot.statistics("filename"))

    burst(0)
    tracemalloc.start(12)
    try:
        burst(2_000)
        first = retained()
        burst(4_000)
        burst(6_000)
        second = retained()
    finally:
        tracemalloc.stop()
    assert len(runs) == 200
    assert first > 50_000  # the 200 open runs themselves are seen
    assert second - first < 64 * 1024  # 4,000 more abandoned runs: no growth beyond noise


class _Node:
    def __init__(self, up: str | None) -> None:
        self.up = up
        self.refreshed = 0.0


def test_refresh_up_keeps_the_chain_above_a_busy_run_alive():
    runs: RunMap[str, _Node] = RunMap(lambda node, reason: None, ttl_s=0.4, max_size=100)
    runs.put("agent", _Node(None))
    runs.put("plumbing", _Node("agent"))
    runs.put("tool", _Node("plumbing"))
    runs.put("other", _Node(None))
    time.sleep(0.3)
    runs.refresh_up("tool", lambda node: node.up)  # something starts under the tool
    time.sleep(0.2)
    runs.sweep()
    assert sorted(runs._entries) == ["agent", "plumbing", "tool"]  # "other" expired, the chain did not
    stamped = {key: node.refreshed for key, (node, _) in runs._entries.items()}
    assert len(set(stamped.values())) == 1 and stamped["agent"] > 0


def test_refresh_up_stops_at_a_run_refreshed_since_and_at_a_loop():
    runs: RunMap[str, _Node] = RunMap(lambda node, reason: None, ttl_s=3600, max_size=100)
    runs.put("a", _Node("b"))
    runs.put("b", _Node("a"))  # a loop: bounded, never spins
    runs.put("c", _Node("a"))
    runs.refresh_up("a", lambda node: node.up)
    first = runs.peek("a").refreshed
    assert first > 0 and runs.peek("b").refreshed == first
    runs.refresh_up("c", lambda node: node.up)  # "a" is fresh: the walk stops there
    assert runs.peek("c").refreshed > first and runs.peek("a").refreshed == first
    runs.refresh_up("missing", lambda node: node.up)  # unknown key: nothing to do
    runs.refresh_up(None, lambda node: node.up)


def test_add_child_drops_ended_children_at_powers_of_two():
    from llmtrace._runmap import PRUNE_CHILDREN_AT, add_child

    open_ones = {0, 1, PRUNE_CHILDREN_AT - 1}
    children: list[int] = []
    for i in range(PRUNE_CHILDREN_AT - 1):
        children = add_child(children, i, open_ones.__contains__)
    assert len(children) == PRUNE_CHILDREN_AT - 1  # below the first prune: kept as they come
    children = add_child(children, PRUNE_CHILDREN_AT - 1, open_ones.__contains__)
    assert children == [0, 1, PRUNE_CHILDREN_AT - 1]
    for i in range(PRUNE_CHILDREN_AT, 4 * PRUNE_CHILDREN_AT):
        children = add_child(children, i, open_ones.__contains__)
    assert len(children) < 2 * PRUNE_CHILDREN_AT and children[:3] == [0, 1, PRUNE_CHILDREN_AT - 1]
