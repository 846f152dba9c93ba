"""One-hour cache writes and service tiers from ``set_usage`` to spans, usage records, cost and
metrics (prices from the bundled prices.json, costs computed by hand below)."""

from __future__ import annotations

import pytest

from llmtrace import _metrics
from llmtrace import semconv as sc
from llmtrace.testing import metric_points


def _token_points(metric_reader) -> dict[str, dict[str, object]]:
    """Attributes of the gen_ai.client.token.usage points, by token type."""
    return {
        p.attributes[sc.GEN_AI_TOKEN_TYPE]: dict(p.attributes)
        for p in metric_points(metric_reader, sc.METRIC_CLIENT_TOKEN_USAGE)
    }


def test_one_hour_cache_writes_on_span_record_and_cost(
    telemetry_handler, span_exporter, metric_reader, records
):
    inv = telemetry_handler.start_chat("claude-sonnet-4-5", provider=sc.PROVIDER_ANTHROPIC)
    inv.response_model = "claude-sonnet-4-5-20250929"
    inv.set_usage(7010, 300, 5000, 2000, None, cache_write_1h_tokens=500, service_tier="standard")
    inv.stop()
    # claude-sonnet-4-5: $3 input, $0.30 cache read, $3.75 5m write, $6 1h write, $15 output
    cost = (10 * 3 + 5000 * 0.3 + 1500 * 3.75 + 500 * 6 + 300 * 15) / 1e6
    assert cost == pytest.approx(0.014655)
    (span,) = span_exporter.get_finished_spans()
    a = dict(span.attributes)
    assert a[sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 2000
    assert a[sc.LLMTRACE_USAGE_CACHE_WRITE_1H_INPUT_TOKENS] == 500
    assert a[sc.LLMTRACE_RESPONSE_SERVICE_TIER] == "standard"
    assert sc.OPENAI_RESPONSE_SERVICE_TIER not in a
    assert a[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(cost)
    assert sc.LLMTRACE_COST_UNPRICED not in a and sc.LLMTRACE_COST_UNPRICED_REASON not in a
    (record,) = records
    assert (record.cache_write_tokens, record.cache_write_1h_tokens) == (2000, 500)
    assert (record.service_tier, record.unpriced_reason) == ("standard", None)
    assert record.cost == pytest.approx(cost)
    points = _token_points(metric_reader)
    assert set(points) == {"input", "output"}
    # the conventions put a tier on OpenAI's token usage only
    assert all(sc.OPENAI_RESPONSE_SERVICE_TIER not in p for p in points.values())
    assert all(sc.LLMTRACE_RESPONSE_SERVICE_TIER not in p for p in points.values())


def test_openai_flex_call_priced_at_flex_and_tier_on_token_metric(
    telemetry_handler, span_exporter, metric_reader, records
):
    inv = telemetry_handler.start_chat("o3", provider=sc.PROVIDER_OPENAI)
    inv.response_model = "o3-2025-04-16"
    inv.set_usage(10000, 2000, 8000, None, 1500, service_tier="flex")
    inv.stop()
    # o3 flex: $1 input, $0.25 cached, $4 output (reasoning too)
    cost = (2000 * 1 + 8000 * 0.25 + 2000 * 4) / 1e6
    assert cost == pytest.approx(0.012)
    (span,) = span_exporter.get_finished_spans()
    a = dict(span.attributes)
    assert a[sc.OPENAI_RESPONSE_SERVICE_TIER] == "flex"
    assert sc.LLMTRACE_RESPONSE_SERVICE_TIER not in a
    assert sc.LLMTRACE_USAGE_CACHE_WRITE_1H_INPUT_TOKENS not in a
    assert a[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(cost)
    (record,) = records
    assert record.service_tier == "flex" and record.cost == pytest.approx(cost)
    assert record.cache_write_1h_tokens is None
    points = _token_points(metric_reader)
    assert {t: p[sc.OPENAI_RESPONSE_SERVICE_TIER] for t, p in points.items()} == {
        "input": "flex",
        "output": "flex",
    }
    (cost_point,) = metric_points(metric_reader, sc.METRIC_USAGE_COST)
    assert cost_point.value == pytest.approx(cost)


def test_tier_without_a_price_is_unpriced_with_its_reason(telemetry_handler, span_exporter, records):
    inv = telemetry_handler.start_chat("gpt-4o", provider=sc.PROVIDER_OPENAI)  # no flex price
    inv.set_usage(100, 10, service_tier="flex")
    inv.stop()
    unknown = telemetry_handler.start_chat("no-such-model", provider=sc.PROVIDER_OPENAI)
    unknown.set_usage(100, 10)
    unknown.stop()
    flex, other = (dict(s.attributes) for s in span_exporter.get_finished_spans())
    assert flex[sc.LLMTRACE_COST_UNPRICED] is True
    assert flex[sc.LLMTRACE_COST_UNPRICED_REASON] == sc.UNPRICED_SERVICE_TIER
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in flex
    assert other[sc.LLMTRACE_COST_UNPRICED_REASON] == sc.UNPRICED_UNKNOWN_MODEL
    assert [(r.cost, r.unpriced_reason) for r in records] == [
        (None, sc.UNPRICED_SERVICE_TIER),
        (None, sc.UNPRICED_UNKNOWN_MODEL),
    ]


def test_tier_kept_when_a_later_report_names_none(telemetry_handler, span_exporter, records):
    inv = telemetry_handler.start_chat("gpt-4o", provider=sc.PROVIDER_OPENAI)
    inv.set_usage(service_tier="priority")  # e.g. a stream's early chunk
    inv.set_usage(1000, 100)  # its usage chunk, without the tier
    inv.stop()
    a = dict(span_exporter.get_finished_spans()[0].attributes)
    assert a[sc.OPENAI_RESPONSE_SERVICE_TIER] == "priority"
    # gpt-4o priority: $4.25 input, $17 output
    assert a[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx((1000 * 4.25 + 100 * 17) / 1e6)
    assert records[0].service_tier == "priority"


def test_tier_without_usage_and_bounded(telemetry_handler, span_exporter, records):
    inv = telemetry_handler.start_chat("gpt-4o", provider=sc.PROVIDER_AZURE_OPENAI)
    inv.set_usage(service_tier="  Priority" + "x" * 100)
    inv.stop()
    a = dict(span_exporter.get_finished_spans()[0].attributes)
    assert a[sc.LLMTRACE_USAGE_REPORTED] is False
    assert a[sc.OPENAI_RESPONSE_SERVICE_TIER] == ("priority" + "x" * 100)[:32]  # Azure: OpenAI's key
    assert sc.LLMTRACE_COST_UNPRICED not in a  # nothing reported, nothing to price
    assert records[0].service_tier == ("priority" + "x" * 100)[:32]


def test_one_hour_count_above_the_writes_makes_every_write_one_hour(telemetry_handler, span_exporter):
    inv = telemetry_handler.start_chat("claude-sonnet-4-5", provider=sc.PROVIDER_ANTHROPIC)
    inv.set_usage(1000, 10, None, 100, None, cache_write_1h_tokens=400)
    inv.stop()
    a = dict(span_exporter.get_finished_spans()[0].attributes)
    assert (
        a[sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS],
        a[sc.LLMTRACE_USAGE_CACHE_WRITE_1H_INPUT_TOKENS],
    ) == (
        400,
        400,
    )
    assert a[sc.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx((600 * 3 + 400 * 6 + 10 * 15) / 1e6)


def test_cache_hit_carries_no_tier(telemetry_handler, span_exporter, metric_reader, records):
    inv = telemetry_handler.start_chat("o3", provider=sc.PROVIDER_OPENAI)
    inv.cache_hit = True
    inv.set_usage(100, 10, None, None, None, cache_write_1h_tokens=None, service_tier="flex")
    inv.stop()
    a = dict(span_exporter.get_finished_spans()[0].attributes)
    assert sc.OPENAI_RESPONSE_SERVICE_TIER not in a and a[sc.GEN_AI_USAGE_COST_AMOUNT] == 0.0
    assert (records[0].service_tier, records[0].cache_write_1h_tokens) == (None, 0)
    assert metric_points(metric_reader, sc.METRIC_CLIENT_TOKEN_USAGE) == []


def test_tier_values_on_metrics_are_capped(telemetry_handler, metric_reader, monkeypatch):
    monkeypatch.setattr(_metrics, "MAX_METRIC_NAMES", 2)
    for tier in ("flex", "priority", "scale", "flex"):
        inv = telemetry_handler.start_chat("o3", provider=sc.PROVIDER_OPENAI)
        inv.set_usage(10, 1, service_tier=tier)
        inv.stop()
    tiers = {
        p.attributes[sc.OPENAI_RESPONSE_SERVICE_TIER]: p.count
        for p in metric_points(metric_reader, sc.METRIC_CLIENT_TOKEN_USAGE)
        if p.attributes[sc.GEN_AI_TOKEN_TYPE] == "input"
    }
    assert tiers == {"flex": 2, "priority": 1, "_OTHER": 1}
