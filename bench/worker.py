"""One benchmark subprocess: one implementation, several workloads, timed invocations.

Run by ``bench/run.py`` with the implementation's venv python::

    python bench/worker.py '{"impl": "none", "workloads": ["chain"], "n": 500, "warmup": 50}'

Prints one JSON line per workload: median/mean/p90 wall-clock µs per invocation
(``time.perf_counter_ns``), median process CPU µs per invocation (``time.process_time_ns``: all
threads, so the batch exporter's thread counts too) and spans per invocation.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import impls
import workloads as wl
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

COUNTED_INVOCATIONS = 20


def count_metric_records(invoke: Any, config: Any, after: Any) -> float:
    """Synchronous metric records (histogram records, counter adds, gauge sets) per invocation, counted
    over a few extra invocations after the timed ones (so counting costs the timing nothing). Counted
    where every synchronous instrument of the SDK hands its measurement over (a private SDK class:
    this is a benchmark, not llmtrace)."""
    from opentelemetry.sdk.metrics._internal.measurement_consumer import SynchronousMeasurementConsumer

    original = SynchronousMeasurementConsumer.consume_measurement
    count = 0

    def counting(self: Any, measurement: Any) -> None:
        nonlocal count
        count += 1
        original(self, measurement)

    SynchronousMeasurementConsumer.consume_measurement = counting  # type: ignore[method-assign]
    try:
        for _ in range(COUNTED_INVOCATIONS):
            invoke(config)
            if after is not None:
                after()
    finally:
        SynchronousMeasurementConsumer.consume_measurement = original  # type: ignore[method-assign]
    return count / COUNTED_INVOCATIONS


def run(spec: dict[str, Any]) -> list[dict[str, Any]]:
    impl: str = spec["impl"]
    names: list[str] = [w for w in spec["workloads"] if (impl, w) not in impls.NOT_APPLICABLE]
    n: int = spec["n"]
    warmup: int = spec["warmup"]
    probe = bool(spec.get("probe"))  # record one invocation's telemetry (for floor-telemetry)
    reader = InMemoryMetricReader() if probe else None
    hooks, tp, _mp, exporter = impls.setup(
        impl, names, spec.get("floor_spans"), spec.get("floor_scripts"), reader=reader
    )
    exporter.keep = probe
    if probe and len(names) > 1:
        raise SystemExit("a probe records one workload per process (metrics accumulate per process)")
    results: list[dict[str, Any]] = []
    for name in names:
        try:
            invoke = wl.build(name)
            hook = hooks[name]
            config, after = hook.config, hook.after
            for _ in range(warmup):
                invoke(config)
                if after is not None:
                    after()
            tp.force_flush()
            before = exporter.count
            times: list[int] = []
            cpu: list[int] = []
            clock, cpu_clock = time.perf_counter_ns, time.process_time_ns
            for _ in range(n):
                c0 = cpu_clock()
                t0 = clock()
                invoke(config)
                if after is not None:
                    after()
                t1 = clock()
                cpu.append(cpu_clock() - c0)
                times.append(t1 - t0)
            tp.force_flush()
            spans = exporter.count - before
            times.sort()
            script = None
            if reader is not None:
                script = impls.telemetry_script(exporter.kept, reader, warmup + n)
                exporter.kept.clear()
            records = count_metric_records(invoke, config, after)  # after the probe's script: adds records
            results.append(
                {
                    "impl": impl,
                    "workload": name,
                    "n": n,
                    "median_us": statistics.median(times) / 1000,
                    "mean_us": statistics.fmean(times) / 1000,
                    "p90_us": times[int(0.9 * (n - 1))] / 1000,
                    "cpu_median_us": statistics.median(cpu) / 1000,
                    "spans_per_inv": spans / n,
                    "metric_records_per_inv": records,
                    "notes": hook.notes,
                    **({"telemetry": script} if script is not None else {}),
                }
            )
        except Exception as exc:
            results.append(
                {
                    "impl": impl,
                    "workload": name,
                    "error": f"{type(exc).__name__}: {exc}",
                    "trace": traceback.format_exc()[-2000:],
                }
            )
    return results


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    spec = json.loads(sys.argv[1])
    for result in run(spec):
        print("BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
