"""What the OpenTelemetry SDK itself charges for the telemetry llmtrace emits, per operation.

    uv run python bench/sdk_costs.py

Best of 5 x 20,000 calls each, on the benchmark pipeline (BatchSpanProcessor + counting exporter,
MeterProvider + in-memory reader): a bare span, a span with 12 attributes, and one histogram
record and one counter add with the 5 attributes of a token-usage record. These bound from below
what any tracer that emits the same spans and GenAI metrics can cost (see docs/benchmarks.md).
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import impls

N = 20_000
METRIC_ATTRIBUTES = {f"attr.{i}": f"value-{i}" for i in range(5)}
SPAN_ATTRIBUTES = {f"attr.{i}": "v" * 16 for i in range(12)}


def main() -> None:
    tp, mp, _exporter = impls.pipeline()
    tracer = tp.get_tracer("bench.sdk")
    meter = mp.get_meter("bench.sdk")
    histogram = meter.create_histogram("bench.histogram", unit="s")
    counter = meter.create_counter("bench.counter")
    cases = {
        "span, no attributes (start + end)": lambda: tracer.start_span("s").end(),
        "span, 12 attributes (start + end)": lambda: tracer.start_span("s", attributes=SPAN_ATTRIBUTES).end(),
        "histogram record, 5 attributes": lambda: histogram.record(1.0, METRIC_ATTRIBUTES),
        "counter add, 5 attributes": lambda: counter.add(1, METRIC_ATTRIBUTES),
    }
    for label, call in cases.items():
        best = min(timeit.repeat(call, number=N, repeat=5)) / N * 1e6
        print(f"{label:40s} {best:6.2f} us")
        tp.force_flush()


if __name__ == "__main__":
    main()
