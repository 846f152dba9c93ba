"""llmtrace's own cost per LangChain callback, without the framework around it (low noise).

    uv run python bench/replay.py [--workloads chain tool_loop stream agent] [-n 3000] [--in-situ]

Records the callbacks one invocation of a workload sends (a recording handler in config), then
replays them, with fresh run ids, straight into an ``LLMTraceCallbackHandler`` on the benchmark
pipeline, timing each callback. With ``--in-situ``, also times the same handler's callbacks inside
real invocations of the workload (LangChain's work between callbacks left in): on this machine the
same callbacks cost about twice as much there as replayed back to back (caches and branch
predictors are cold after the framework's own code), so compare changes with the replay and quote
costs from the in-situ table. Reported: the median µs of each callback and their sum, once with
the SDK recording (spans sampled, metrics into an in-memory reader) and once with nothing recorded
(sampler off, no-op meter): the second is llmtrace's Python alone. In one process and without
LangChain's dispatch, run-to-run noise is a few percent, so this is the tool for before/after
comparisons of the handler; run.py gives the whole-invocation picture.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import impls
import workloads as wl

CALLBACKS = (
    "on_chain_start", "on_chain_end", "on_chain_error", "on_chat_model_start", "on_llm_start",
    "on_llm_end", "on_llm_new_token", "on_llm_error", "on_tool_start", "on_tool_end",
    "on_tool_error", "on_retriever_start", "on_retriever_end", "on_retriever_error",
    "on_agent_action", "on_agent_finish", "on_custom_event",
)  # fmt: skip


def record(workload: str) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    from langchain_core.callbacks import BaseCallbackHandler

    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def recorder(name: str) -> Any:
        def method(self: Any, *args: Any, **kwargs: Any) -> None:
            calls.append((name, args, kwargs))

        return method

    Recorder = type("Recorder", (BaseCallbackHandler,), {name: recorder(name) for name in CALLBACKS})
    wl.build(workload)({"callbacks": [Recorder()]})
    return calls


def replay(workload: str, n: int, recording: bool, tp: Any, mp: Any) -> dict[str, float]:
    calls = record(workload)
    handler = _handler(recording, tp, mp)
    ids = {k["run_id"] for _, _, k in calls if k.get("run_id") is not None}
    timings: dict[tuple[int, str], list[int]] = defaultdict(list)
    clock = time.perf_counter_ns
    for i in range(n + n // 10):  # the first tenth warms up
        fresh = {old: uuid.uuid4() for old in ids}
        for index, (name, args, kwargs) in enumerate(calls):
            kw = dict(kwargs)
            kw["run_id"] = fresh[kw["run_id"]]
            if kw.get("parent_run_id") is not None:
                kw["parent_run_id"] = fresh[kw["parent_run_id"]]
            method = getattr(handler, name)
            start = clock()
            method(*args, **kw)
            if i >= n // 10:
                timings[(index, name)].append(clock() - start)
        if i % 500 == 0:
            tp.force_flush()
    return {f"{index:2d} {name}": statistics.median(t) / 1000 for (index, name), t in timings.items()}


def _handler(recording: bool, tp: Any, mp: Any) -> Any:
    from llmtrace_langchain import LLMTraceCallbackHandler
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    if recording:
        return LLMTraceCallbackHandler(tracer_provider=tp, meter_provider=mp)
    return LLMTraceCallbackHandler(
        tracer_provider=TracerProvider(sampler=ALWAYS_OFF), meter_provider=NoOpMeterProvider()
    )


def in_situ(workload: str, n: int, recording: bool, tp: Any, mp: Any) -> dict[str, tuple[float, float]]:
    """Per callback name: (calls per invocation, µs per invocation), timed inside ``n`` real invocations."""
    handler = _handler(recording, tp, mp)
    timings: dict[str, list[int]] = defaultdict(list)
    clock = time.perf_counter_ns

    def timed(name: str) -> Any:
        method = getattr(handler, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return method(*args, **kwargs)
            finally:
                timings[name].append(clock() - start)

        return call

    for name in CALLBACKS:
        setattr(handler, name, timed(name))  # instance attributes: LangChain looks them up there
    invoke = wl.build(workload)
    config = {"callbacks": [handler]}
    for _ in range(n // 10):
        invoke(config)
    timings.clear()
    for i in range(n):
        invoke(config)
        if i % 500 == 0:
            tp.force_flush()
    return {name: (len(t) / n, sum(t) / n / 1000) for name, t in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", nargs="+", default=["chain", "tool_loop", "stream", "agent"],
                        choices=sorted(wl.LANGCHAIN_WORKLOADS))  # fmt: skip
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("--in-situ", action="store_true", help="also time callbacks inside real invocations")
    args = parser.parse_args()
    tp, mp, _exporter = impls.pipeline()
    for workload in args.workloads:
        full = replay(workload, args.n, True, tp, mp)
        bare = replay(workload, args.n, False, tp, mp)
        print(f"### {wl.TITLES[workload]}: {len(full)} callbacks")
        print(f"{'callback':32s} {'recorded µs':>12s} {'nothing recorded µs':>20s}")
        for key in full:
            print(f"{key:32s} {full[key]:12.1f} {bare.get(key, float('nan')):20.1f}")
        print(f"{'sum of medians':32s} {sum(full.values()):12.1f} {sum(bare.values()):20.1f}\n")
        if args.in_situ:
            full_situ = in_situ(workload, args.n, True, tp, mp)
            bare_situ = in_situ(workload, args.n, False, tp, mp)
            print(f"in situ ({args.n} invocations): µs per invocation")
            print(f"{'callback':32s} {'calls':>6s} {'recorded µs':>12s} {'nothing recorded µs':>20s}")
            for name, (calls, us) in full_situ.items():
                bare_us = bare_situ.get(name, (0.0, float("nan")))[1]
                print(f"{name:32s} {calls:6.1f} {us:12.1f} {bare_us:20.1f}")
            total = sum(us for _, us in full_situ.values())
            bare_total = sum(us for _, us in bare_situ.values())
            print(f"{'total':32s} {'':6s} {total:12.1f} {bare_total:20.1f}\n")


if __name__ == "__main__":
    main()
