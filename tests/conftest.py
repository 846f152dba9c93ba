"""Suite-wide settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

import llmtrace
from llmtrace._usage import UsageRecord

# CI replays the same examples every run (a failure there is reproducible, never a flake);
# developers' runs explore new examples each time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# tests talk to servers on 127.0.0.1 only; never through a proxy
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


def pytest_sessionfinish(session: object, exitstatus: object) -> None:
    """Runs tests left open (on purpose: eviction and memory tests) are dropped, not ended at exit:
    their providers are shut down by then, and ending them would only print the SDK's warnings."""
    from llmtrace._runmap import _sweeper

    for run_map in _sweeper.maps():
        run_map._forget()


@pytest.fixture
def records() -> Iterator[list[UsageRecord]]:
    """The usage records emitted during the test (a usage sink registered for its duration)."""
    found: list[UsageRecord] = []
    sink = found.append
    llmtrace.add_usage_sink(sink)
    yield found
    llmtrace.remove_usage_sink(sink)


def metric_attributes(metric_reader: Any) -> list[dict[str, Any]]:
    """The attributes of every data point a metric reader holds."""
    data = metric_reader.get_metrics_data()
    return [
        dict(point.attributes or {})
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        for point in metric.data.data_points
    ]
