"""Exporter faults: a collector that refuses connections, hangs, or answers 503, and a locked SQLite
store. Traced framework calls stay within the per-call budget, shutdown stays bounded, and nothing
raises."""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from llmtrace_langchain import LLMTraceCallbackHandler

import llmtrace
from llmtrace._safety import internal_error_counts
from tests.heap import heap_frozen
from tests.otlp_receivers import HangingServer, HttpReceiver, closed_port

from .workloads import lc_rag_chain

ROUNDS = 200  # each round: one plain call, one traced by the baseline, one by the pipeline under test
FAULT_BUDGET_S = 0.002
"""How much a fault may add to the median traced call, compared with a pipeline exporting nowhere
whose calls alternate with the measured ones (so a change in the machine's load affects both alike)."""
MAX_BUDGET_S = 0.400
"""Slowest single traced call: below the 0.5 s export timeout (and far below the store's 5 s busy
timeout), so a call that waited on the collector or the database would show; above the few hundred
milliseconds a call can lose to the GIL when exporter and writer threads are busy on 2 cores."""
EXPORT_TIMEOUT_S = 0.5
SHUTDOWN_BUDGET_S = 3 * 2 * EXPORT_TIMEOUT_S
"""Three signals, each given up after about the export timeout (at most twice it)."""


@contextmanager
def refusing() -> Iterator[tuple[str, Callable[[], bool]]]:
    yield f"http://127.0.0.1:{closed_port()}", lambda: True


@contextmanager
def hanging() -> Iterator[tuple[str, Callable[[], bool]]]:
    with HangingServer() as server:
        yield server.endpoint, lambda: server.connections_accepted > 0


@contextmanager
def unavailable() -> Iterator[tuple[str, Callable[[], bool]]]:
    with HttpReceiver(status=503) as receiver:
        # configure() takes the base URL and adds /v1/traces itself (a full signal URL would end in
        # .../v1/traces/v1/traces, which the receiver answers with 404, not the 503 tested here)
        yield receiver.endpoint, lambda: receiver.call_count("traces") > 0


@dataclass(frozen=True)
class Measured:
    plain: float
    """Median untraced call."""
    healthy: float
    """Median call traced by a pipeline exporting nowhere."""
    faulty: float
    """Median call traced by the pipeline under test."""
    slowest: float
    """Slowest call traced by the pipeline under test."""

    @property
    def added(self) -> float:
        return self.faulty - self.healthy

    def __str__(self) -> str:
        return (
            f"median plain {self.plain * 1e3:.2f} ms, healthy {self.healthy * 1e3:.2f} ms, "
            f"under test {self.faulty * 1e3:.2f} ms; slowest {self.slowest * 1e3:.1f} ms"
        )


def measure(pipeline: llmtrace.Pipeline, baseline: llmtrace.Pipeline) -> Measured:
    """Plain calls and calls traced by ``baseline`` and by ``pipeline``, one of each per round in a
    rotating order."""
    chain = lc_rag_chain()

    def traced_by(p: llmtrace.Pipeline | None) -> Callable[[], Any]:
        if p is None:
            return lambda: chain.invoke("Where is Paris?")
        handler = LLMTraceCallbackHandler(tracer_provider=p.tracer_provider, meter_provider=p.meter_provider)
        config: Any = {"callbacks": [handler]}
        return lambda: chain.invoke("Where is Paris?", config=config)

    calls = [traced_by(None), traced_by(baseline), traced_by(pipeline)]
    durations: list[list[float]] = [[], [], []]
    for _ in range(20):  # warm up
        for call in calls:
            assert call() == "France"
    with heap_frozen():
        for round_ in range(ROUNDS):
            for i in range(3):
                which = (round_ + i) % 3
                start = time.perf_counter()
                assert calls[which]() == "France"
                durations[which].append(time.perf_counter() - start)
    plain, healthy, traced = durations
    return Measured(
        statistics.median(plain), statistics.median(healthy), statistics.median(traced), max(traced)
    )


@pytest.fixture(scope="module")
def baseline() -> Iterator[llmtrace.Pipeline]:
    """A pipeline whose spans are processed but exported nowhere: llmtrace's own overhead."""
    pipeline = llmtrace.configure(exporters="none", set_global=False)
    yield pipeline
    pipeline.shutdown()


@pytest.mark.parametrize("collector", [refusing, hanging, unavailable], ids=["refused", "hanging", "503"])
def test_collector_faults_cost_nothing(collector, baseline):
    with collector() as (endpoint, exercised):
        pipeline = llmtrace.configure(
            exporters="otlp",
            otlp_endpoint=endpoint,
            otlp_protocol="http/protobuf",
            otlp_timeout_s=EXPORT_TIMEOUT_S,
            export_timeout_ms=EXPORT_TIMEOUT_S * 1000,
            schedule_delay_ms=20,
            max_export_batch_size=64,
            set_global=False,
        )
        try:
            measured = measure(pipeline, baseline)
        finally:
            started = time.perf_counter()
            pipeline.shutdown()
            shutdown_s = time.perf_counter() - started
        assert exercised()  # the fault really was met (a typo in the URL would be a 404 instead)
    assert measured.added < FAULT_BUDGET_S, str(measured)
    assert measured.slowest < MAX_BUDGET_S, str(measured)
    assert shutdown_s < SHUTDOWN_BUDGET_S
    stats = pipeline.stats.snapshot()
    assert stats["exported"] == 0 and stats["failed"] > 0 and stats["pending"] == 0
    assert internal_error_counts() == {}


def _spans(pipeline: llmtrace.Pipeline, count: int) -> None:
    tracer = pipeline.tracer_provider.get_tracer("faults")
    for _ in range(count):
        with tracer.start_as_current_span("work"):
            pass


@pytest.mark.parametrize("flush", [False, True], ids=["shutdown", "force_flush"])
def test_hanging_collector_with_a_long_queue_gives_up_in_time(flush):
    """The SDK exports what is queued batch after batch, each waiting out the export timeout on a
    hung collector (20 batches here: 10 s before the fix); llmtrace gives up the rest once the
    first export has timed out."""
    deadline_s = 4 * EXPORT_TIMEOUT_S  # far enough for the first export to start under any load
    with HangingServer() as server:
        pipeline = llmtrace.configure(
            exporters="otlp",
            otlp_endpoint=server.endpoint,
            otlp_protocol="http/protobuf",
            otlp_timeout_s=EXPORT_TIMEOUT_S,
            export_timeout_ms=deadline_s * 1000,
            max_export_batch_size=50,
            schedule_delay_ms=60_000,  # nothing leaves the queue before the flush
            set_global=False,
        )
        _spans(pipeline, 1000)
        started = time.perf_counter()
        if flush:
            pipeline.force_flush(int(deadline_s * 1000))
        else:
            pipeline.shutdown()
        took = time.perf_counter() - started
        stats = pipeline.stats.snapshot()
        pipeline.shutdown()
    assert took < deadline_s  # neither one timeout per batch nor a wait for the deadline
    assert server.connections_accepted >= 1  # the collector was tried
    assert stats == {"exported": 0, "failed": 1000, "dropped_queue_full": 0, "dropped": 1000, "pending": 0}


FLUSH_MARGIN_S = 0.5
"""What a bounded flush or shutdown may take beyond its deadline (starting and joining threads)."""


def _all_signals(pipeline: llmtrace.Pipeline, calls: int) -> None:
    """Spans, metrics and events, ``calls`` of each."""
    handler = llmtrace.TelemetryHandler(
        tracer_provider=pipeline.tracer_provider,
        meter_provider=pipeline.meter_provider,
        logger_provider=pipeline.logger_provider,
    )
    events = pipeline.logger_provider.get_logger("faults")
    for i in range(calls):
        inv = handler.start_chat("gpt-4o", provider="openai")
        inv.set_usage(input_tokens=3, output_tokens=4)
        inv.stop()
        events.emit(body=f"event {i}")


def test_flush_and_shutdown_keep_their_deadline_whatever_the_exporter_timeout():
    """Each export may wait 5 s on the hung collector: force_flush(500) still returns after about
    0.5 s in all (the three providers are flushed at once, under one deadline: it took one
    exporter timeout per signal, one after another) and says nothing was delivered (it said
    nothing, and every provider said True); shutdown ends within the export timeout."""
    with HangingServer() as server:
        pipeline = llmtrace.configure(
            exporters="otlp",
            otlp_endpoint=server.endpoint,
            otlp_protocol="http/protobuf",
            otlp_timeout_s=5.0,
            export_timeout_ms=1000,
            schedule_delay_ms=60_000,
            max_export_batch_size=50,
            set_global=False,
        )
        assert pipeline.shutdown_timeout_s == 1.0
        _all_signals(pipeline, 200)
        started = time.perf_counter()
        delivered = pipeline.force_flush(500)
        flushed_in = time.perf_counter() - started
        started = time.perf_counter()
        pipeline.shutdown()
        shut_down_in = time.perf_counter() - started
        assert server.connections_accepted >= 1
    assert delivered is False
    assert flushed_in < 0.5 + FLUSH_MARGIN_S
    assert shut_down_in < pipeline.shutdown_timeout_s + FLUSH_MARGIN_S


def test_force_flush_says_when_everything_was_delivered():
    with HttpReceiver() as receiver:
        pipeline = llmtrace.configure(
            exporters="otlp", otlp_endpoint=receiver.endpoint, schedule_delay_ms=60_000, set_global=False
        )
        _all_signals(pipeline, 5)
        assert pipeline.force_flush(5_000) is True
        assert {s for s in ("traces", "metrics", "logs") if receiver.call_count(s)} == {
            "traces",
            "metrics",
            "logs",
        }
        pipeline.shutdown()
    with HttpReceiver(status=400) as refusing:  # a collector that rejects every batch, at once
        pipeline = llmtrace.configure(
            exporters="otlp", otlp_endpoint=refusing.endpoint, schedule_delay_ms=60_000, set_global=False
        )
        _all_signals(pipeline, 5)
        assert pipeline.force_flush(5_000) is False
        pipeline.shutdown()


def test_exit_keeps_the_export_timeout_bound_with_a_hung_collector():
    """At exit, with every export allowed 20 s (OTEL_EXPORTER_OTLP_TIMEOUT=20000) and export
    timeouts of 1 s (OTEL_BSP_/OTEL_BLRP_/OTEL_METRIC_EXPORT_TIMEOUT): llmtrace's exit hook takes
    about 1 s, not 20 s per signal one after another."""
    import os
    import subprocess
    import sys

    script = """
import atexit, time
marks = {}
atexit.register(lambda: print(f"exit hook took {time.monotonic() - marks['start']:.2f}"))
import llmtrace
llmtrace.configure()
atexit.register(lambda: marks.setdefault("start", time.monotonic()))  # runs before llmtrace's
handler = llmtrace.TelemetryHandler()
for _ in range(100):
    inv = handler.start_chat("gpt-4o", provider="openai")
    inv.set_usage(input_tokens=3, output_tokens=4)
    inv.stop()
    llmtrace.record_evaluation("relevance", score=1.0)
"""
    with HangingServer() as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMTRACE_"))}
        env.update(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": server.endpoint,
                "OTEL_EXPORTER_OTLP_TIMEOUT": "20000",
                "OTEL_BSP_EXPORT_TIMEOUT": "1000",
                "OTEL_BLRP_EXPORT_TIMEOUT": "1000",
                "OTEL_METRIC_EXPORT_TIMEOUT": "1000",
                "LLMTRACE_STORE": "off",
            }
        )
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
        )
    assert result.returncode == 0, result.stderr
    took = float(result.stdout.strip().rsplit(" ", 1)[1])
    assert took < 1.0 + FLUSH_MARGIN_S, result.stdout


def test_shutdown_still_delivers_everything_to_a_healthy_collector():
    with HttpReceiver() as receiver:
        pipeline = llmtrace.configure(
            exporters="otlp",
            otlp_endpoint=receiver.endpoint,
            otlp_protocol="http/protobuf",
            export_timeout_ms=EXPORT_TIMEOUT_S * 1000,
            max_export_batch_size=50,
            schedule_delay_ms=60_000,
            set_global=False,
        )
        _spans(pipeline, 1000)
        pipeline.shutdown()
        assert len(receiver.wait_for_spans(1000)) == 1000
    assert pipeline.stats.snapshot()["exported"] == 1000


def test_locked_sqlite_store_costs_nothing(tmp_path, baseline):
    path = tmp_path / "traces.db"
    pipeline = llmtrace.configure(
        exporters="store", store=str(path), export_timeout_ms=EXPORT_TIMEOUT_S * 1000, set_global=False
    )
    writer = pipeline.store_writer
    assert writer is not None
    try:
        measure_first = lc_rag_chain().invoke(
            "warm", config={"callbacks": [LLMTraceCallbackHandler(tracer_provider=pipeline.tracer_provider)]}
        )
        assert measure_first == "France"
        deadline = time.monotonic() + 10
        while writer.snapshot().written == 0 and time.monotonic() < deadline:  # the store exists now
            time.sleep(0.02)
        locker = sqlite3.connect(path, timeout=0, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # every writer now gets "database is locked"
        try:
            measured = measure(pipeline, baseline)
            locked = writer.snapshot()
        finally:
            locker.execute("ROLLBACK")
            locker.close()
    finally:
        pipeline.shutdown()
    assert measured.added < FAULT_BUDGET_S, str(measured)
    assert measured.slowest < MAX_BUDGET_S, str(measured)
    assert locked.pending > 0  # spans wait for the lock instead of the application
    assert internal_error_counts() == {}
