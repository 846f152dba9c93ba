"""Forked children (gunicorn --preload, Celery prefork, multiprocessing 'fork') and process exit.

A child has only the thread that forked. Locks other threads held stay held, threads are gone,
and the state they owned is the parent's: llmtrace's locks are reset, the run maps forget the
parent's runs (the parent ends them) and get a sweeper again, the JSONL sink reopens its file and
export counts start from zero. Runs still open at shutdown or exit are ended and exported.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable

import pytest

from llmtrace import _fork, _runmap
from llmtrace import semconv as sc
from llmtrace._exporters import jsonl_exporters
from llmtrace._invocation import Invocation
from llmtrace._runmap import RunMap
from tests.forking import run_in_child

from .test_configure import _run_python

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def in_child(body: Callable[[], object], timeout_s: float = 10.0) -> object:
    """Run ``body`` in a forked child; its JSON-able result (fails the test if it hangs or raises)."""
    return run_in_child(body, timeout_s)[0]


def holding(lock: threading.Lock) -> Callable[[], None]:
    """Hold ``lock`` from another thread (as a busy exporter or writer would); returns the release."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            release.wait(10)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(5)

    def done() -> None:
        release.set()
        thread.join(5)

    return done


def test_a_lock_held_by_another_thread_at_fork_is_free_in_the_child():
    lock = _fork.lock()
    release = holding(lock)
    try:
        assert in_child(lambda: lock.acquire(timeout=2)) is True
    finally:
        release()


def test_child_forgets_the_parents_runs_and_sweeps_its_own(telemetry_handler, span_exporter):
    runs: RunMap[str, Invocation] = RunMap(lambda inv, reason: inv.evict(reason), ttl_s=3600)
    runs.put("parent's", telemetry_handler.start_chat("gpt-4o", provider="openai"))
    release = holding(runs._lock)  # a callback of another thread was inside the map at fork time

    def child() -> object:
        forgotten = len(runs)
        runs.put("child's", telemetry_handler.start_chat("gpt-4o-mini", provider="openai"))
        sweeper = _runmap._sweeper._thread
        runs.ttl_s = 0.0
        swept = runs.sweep()
        return [
            forgotten,
            sweeper is not None and sweeper.is_alive(),
            swept,
            len(span_exporter.get_finished_spans()),
        ]

    try:
        # nothing of the parent's is ended (or exported) by the child; the child's own run is
        forgotten, sweeper_alive, swept, exported = in_child(child)  # type: ignore[misc]
    finally:
        release()
    assert [forgotten, sweeper_alive, swept, exported] == [0, True, 1, 1]
    assert len(runs) == 1 and span_exporter.get_finished_spans() == ()  # the parent's run is still its own


def test_jsonl_sink_in_a_child_forked_mid_write(tmp_path):
    spans, _ = jsonl_exporters(tmp_path / "out.jsonl")
    sink = spans._sink
    sink.write_lines(['{"from": "parent"}'])
    release = holding(sink._lock)
    try:
        in_child(lambda: sink.write_lines(['{"from": "child"}']))
    finally:
        release()
    sink.write_lines(['{"from": "parent again"}'])
    lines = [json.loads(line)["from"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(lines) == ["child", "parent", "parent again"]


def test_export_counts_start_from_zero_in_a_child(monkeypatch):
    """The active pipeline's counts are the parent's: configure's fork hook resets them."""
    from opentelemetry import _logs, metrics, trace

    import llmtrace
    from llmtrace import _config

    pipeline = _config.Pipeline(
        trace.NoOpTracerProvider(), metrics.NoOpMeterProvider(), _logs.NoOpLoggerProvider(), (), False
    )
    pipeline.stats.queue().pending, pipeline.stats.exported = 3, 10
    monkeypatch.setattr(_config, "_active", pipeline)
    zero = {"exported": 0, "failed": 0, "dropped_queue_full": 0, "dropped": 0, "pending": 0}
    assert in_child(llmtrace.export_stats) == zero
    assert llmtrace.export_stats()["exported"] == 10 and llmtrace.export_stats()["pending"] == 3


def test_two_exporters_do_not_count_each_others_queue_as_full(tmp_path):
    """Each batch processor has its own queue: with two exporters and a queue of 10, 8 spans are
    8 pending in each, not 16 in one (which counted 6 false drops)."""
    result = _run_python(
        f"""
        import llmtrace
        llmtrace.configure(exporters=["jsonl", "otlp"], jsonl_path={str(tmp_path / "o.jsonl")!r},
                           max_queue_size=10, schedule_delay_ms=60000, store=False)
        handler = llmtrace.TelemetryHandler()
        for _ in range(8):
            handler.start_chat("gpt-4o", provider="openai").stop()
        print(llmtrace.export_stats())
        """,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert result.returncode == 0, result.stderr
    stats = eval(result.stdout.strip().splitlines()[0])  # a dict literal
    assert stats["dropped_queue_full"] == 0 and stats["pending"] == 16


def test_runs_open_at_exit_are_ended_and_exported(tmp_path):
    """A stream never consumed when the process exits: its span is ended (evicted=shutdown) and
    reaches the exporters, instead of vanishing."""
    path = tmp_path / "o.jsonl"
    result = _run_python(
        f"""
        import llmtrace
        from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
        from langchain_core.messages import AIMessage
        llmtrace.configure(exporters="jsonl", jsonl_path={str(path)!r}, store=False)
        llmtrace.instrument()
        model = GenericFakeChatModel(messages=iter([AIMessage("done"), AIMessage("never read")]))
        model.invoke("finished")
        stream = model.stream("left open")
        next(stream)
        """
    )
    assert result.returncode == 0, result.stderr
    spans = [json.loads(line) for line in path.read_text().splitlines() if '"name"' in line]
    chats = [s for s in spans if s["name"].startswith("chat")]
    assert len(chats) == 2
    evicted = [s["attributes"].get(sc.LLMTRACE_EVICTED) for s in chats]
    assert sorted(map(str, evicted)) == ["None", sc.EVICTED_SHUTDOWN]


def test_an_explicit_shutdown_leaves_other_handlers_runs_alone():
    """``llmtrace.shutdown()`` stops llmtrace's pipeline; runs of handlers wired to other providers
    (a test's, an app's own) are not its to end. Only the process's exit ends them all."""
    result = _run_python(
        """
        import llmtrace
        from llmtrace._runmap import RunMap
        llmtrace.configure(exporters="none", store=False)
        runs = RunMap(lambda inv, reason: inv.evict(reason), ttl_s=3600)
        runs.put("open", llmtrace.TelemetryHandler().start_chat("gpt-4o", provider="openai"))
        llmtrace.shutdown()
        print(len(runs))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def test_end_open_runs_ends_every_open_run(telemetry_handler, span_exporter):
    runs: RunMap[str, Invocation] = RunMap(lambda inv, reason: inv.evict(reason), ttl_s=3600)
    runs.put("open", telemetry_handler.start_chat("gpt-4o", provider="openai"))
    assert _runmap.end_open_runs() >= 1
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes[sc.LLMTRACE_EVICTED] == sc.EVICTED_SHUTDOWN
    assert len(runs) == 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
