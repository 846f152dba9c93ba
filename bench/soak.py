"""Soak run: a million callback events at full speed through llmtrace's LangChain handler.

    uv run python bench/soak.py [--events 1000000] [--seconds N] [--interval 10]

A mix of normal runs (chain -> chat model -> tool), failing runs and runs that never end (bounded by
the handler's run map), spans exported to a counting exporter through a batch processor. Memory (RSS
and tracemalloc's current size) is sampled every ``--interval`` seconds and printed as a table. Exits
with status 1 if memory grows beyond the bound after warm-up (once the never-ending runs have filled
the run map to its cap, ``--max-open-runs``; memory grows until then, by design).
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import tracemalloc
from collections.abc import Sequence
from uuid import uuid4

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from llmtrace_langchain import LLMTraceCallbackHandler
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from llmtrace._settings import settings

RSS_BOUND_MIB = 64.0
TRACED_BOUND_MIB = 32.0


class CountingExporter(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


def rss_mib() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: none)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between memory samples")
    parser.add_argument("--max-open-runs", type=int, default=10_000)
    args = parser.parse_args(argv)

    settings.max_open_runs = args.max_open_runs
    exporter = CountingExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=8192, schedule_delay_millis=200))
    handler = LLMTraceCallbackHandler(tracer_provider=provider)

    messages = [[HumanMessage(content="what is 2+2?")]]
    usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    reply = LLMResult(
        generations=[[ChatGeneration(message=AIMessage(content="4", usage_metadata=usage))]]  # type: ignore[arg-type]
    )
    serialized = {"name": "chain", "id": ["x"]}
    metadata = {"ls_provider": "openai", "ls_model_name": "gpt-4o-mini", "ls_temperature": 0.1}
    error = ValueError("provider down")

    tracemalloc.start()
    start = last_sample = time.perf_counter()
    events = runs = 0
    rows: list[tuple[float, int, int, float, float, int, int]] = []

    def sample() -> None:
        now = time.perf_counter()
        current, _ = tracemalloc.get_traced_memory()
        rows.append(
            (now - start, events, runs, rss_mib(), current / 2**20, handler.open_runs(), exporter.count)
        )
        elapsed, ev, rn, rss, traced, open_runs, exported = rows[-1]
        rate = ev / elapsed if elapsed else 0.0
        print(
            f"{elapsed:8.1f} {ev:>10,} {rn:>9,} {rate:>11,.0f} {rss:>9.1f} {traced:>10.1f} {open_runs:>9,} "
            f"{exported:>10,}",
            flush=True,
        )

    print(
        f"{'t (s)':>8} {'events':>10} {'runs':>9} {'events/s':>11} {'RSS MiB':>9} {'traced MiB':>10} "
        f"{'open runs':>9} {'exported':>10}"
    )
    sample()
    while events < args.events:
        if args.seconds is not None and time.perf_counter() - start >= args.seconds:
            break
        kind = runs % 10
        root, model, tool = uuid4(), uuid4(), uuid4()
        handler.on_chain_start(serialized, {"input": "x"}, run_id=root, name="agent_chain")
        handler.on_chat_model_start({}, messages, run_id=model, parent_run_id=root, metadata=metadata)
        if kind == 9:  # never ends: the run map evicts it at capacity
            events += 2
        elif kind == 8:  # fails
            handler.on_llm_error(error, run_id=model)
            handler.on_chain_error(error, run_id=root)
            events += 4
        else:
            handler.on_llm_new_token("4", run_id=model)
            handler.on_llm_end(reply, run_id=model)
            handler.on_tool_start({"name": "calc"}, '{"a": 2}', run_id=tool, parent_run_id=root)
            handler.on_tool_end("4", run_id=tool)
            handler.on_chain_end({"output": "4"}, run_id=root)
            events += 7
        runs += 1
        if time.perf_counter() - last_sample >= args.interval:
            last_sample = time.perf_counter()
            sample()
    gc.collect()
    sample()
    handler.close()
    provider.shutdown()

    if len(rows) < 3:
        print("too few samples to judge growth (run longer or lower --interval)")
        return 0
    # warm-up ends when the never-ending runs fill the run map (memory then plateaus), else at the
    # first sample
    full = [r for r in rows if r[5] >= 0.95 * args.max_open_runs]
    warm = full[0] if full else rows[1]
    final = rows[-1]
    if final is warm:
        print("the run map filled up only at the end: run longer to judge growth")
        return 0
    rss_growth, traced_growth = final[3] - warm[3], final[4] - warm[4]
    print(
        f"\nafter warm-up (t={warm[0]:.0f} s): RSS {rss_growth:+.1f} MiB (bound {RSS_BOUND_MIB}), "
        f"traced {traced_growth:+.1f} MiB (bound {TRACED_BOUND_MIB}); "
        f"{final[1]:,} events in {final[0]:.1f} s, peak open runs bounded by {args.max_open_runs:,}"
    )
    if rss_growth > RSS_BOUND_MIB or traced_growth > TRACED_BOUND_MIB:
        print("FAIL: memory grows")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
