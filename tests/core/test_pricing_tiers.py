"""Anthropic one-hour cache writes, provider service tiers (OpenAI flex / priority), user prices
that keep the table's cache ratios, and legacy OpenAI snapshots (llmtrace._pricing)."""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from llmtrace import _pricing, semconv
from llmtrace._pricing import (
    STANDARD_SERVICE_TIERS,
    CostEstimate,
    estimate_cost,
    estimate_usage_cost,
    lookup_price,
    reset_user_prices,
    set_price,
)
from llmtrace._usage import Usage, UsageRecord, coerce_service_tier, service_tier_attribute

ENV = _pricing.PRICES_FILE_ENV


@pytest.fixture(autouse=True)
def _clean_prices(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(ENV, raising=False)
    reset_user_prices()
    yield
    reset_user_prices()


def _bundled_models() -> dict[str, dict[str, object]]:
    text = resources.files("llmtrace").joinpath("prices.json").read_text(encoding="utf-8")
    models = json.loads(text)["models"]
    assert isinstance(models, dict)
    return models


# --------------------------------------------------------------------------------------
# Anthropic one-hour cache writes
# --------------------------------------------------------------------------------------


def test_claude_one_hour_writes_priced_at_twice_input() -> None:
    # claude-sonnet-4-5: $3 input, $0.30 cache read, $3.75 5-minute write, $6 1-hour write, $15 output
    # 10_000 input = 2000 uncached + 6000 read + 2000 written (1500 for 5 minutes, 500 for 1 hour)
    # (2000 * 3 + 6000 * 0.3 + 1500 * 3.75 + 500 * 6 + 1000 * 15) / 1e6
    # = (6000 + 1800 + 5625 + 3000 + 15000) / 1e6 = 0.031425
    cost = estimate_cost(
        "claude-sonnet-4-5-20250929",
        input_tokens=10_000,
        output_tokens=1000,
        cache_read_tokens=6000,
        cache_write_tokens=2000,
        cache_write_1h_tokens=500,
    )
    assert cost == pytest.approx(0.031425, abs=1e-12)


def test_claude_all_writes_one_hour() -> None:
    # claude-opus-4-1: 1-hour write $30; 1000 input all written for an hour: 1000 * 30 / 1e6 = 0.03
    cost = estimate_cost(
        "claude-opus-4-1",
        input_tokens=1000,
        output_tokens=0,
        cache_write_tokens=1000,
        cache_write_1h_tokens=1000,
    )
    assert cost == pytest.approx(0.03, abs=1e-12)


def test_usage_record_carries_the_one_hour_count() -> None:
    # claude-haiku-4-5: $1 input, $1.25 5-minute write, $2 1-hour write, $5 output
    # 3000 input = 1000 uncached + 1000 (5 min) + 1000 (1 h); 200 output
    # (1000 * 1 + 1000 * 1.25 + 1000 * 2 + 200 * 5) / 1e6 = (1000 + 1250 + 2000 + 1000) / 1e6 = 0.00525
    usage = Usage.of(3000, 200, None, 2000, None, cache_write_1h_tokens=1000)
    assert usage.cache_write_1h_tokens == 1000
    assert estimate_usage_cost("claude-haiku-4-5", usage) == CostEstimate(0.00525, None)


def test_one_hour_count_above_the_write_count_is_all_one_hour() -> None:
    # claude-sonnet-4: 300 input, "100 written" but 300 of them for an hour: 300 written, all 1 hour
    # uncached max(300 - 300, 0) = 0; 300 * 6 / 1e6 = 0.0018
    cost = estimate_cost(
        "claude-sonnet-4",
        input_tokens=300,
        output_tokens=0,
        cache_write_tokens=100,
        cache_write_1h_tokens=300,
    )
    assert cost == pytest.approx(0.0018, abs=1e-12)


@pytest.mark.parametrize("name", [n for n, e in _bundled_models().items() if e["provider"] == "anthropic"])
def test_every_claude_entry_has_a_one_hour_rate_of_twice_input(name: str) -> None:
    price = lookup_price(name)
    assert price is not None and price.cache_write_1h is not None
    assert price.cache_write_1h == pytest.approx(price.input * 2, abs=1e-9), name


def test_one_hour_writes_without_a_one_hour_rate_use_the_cache_write_rate() -> None:
    set_price("my-proxy-model", input=1.0, output=2.0, cache_write=1.5)
    # 1000 input, all written for an hour, no 1-hour rate: 1000 * 1.5 / 1e6 = 0.0015
    cost = estimate_cost(
        "my-proxy-model",
        input_tokens=1000,
        output_tokens=0,
        cache_write_tokens=1000,
        cache_write_1h_tokens=1000,
    )
    assert cost == pytest.approx(0.0015, abs=1e-12)
    set_price("bare-model", input=1.0, output=2.0)
    # neither write rate: the input rate, 1000 * 1 / 1e6 = 0.001
    cost = estimate_cost(
        "bare-model", input_tokens=1000, output_tokens=0, cache_write_tokens=1000, cache_write_1h_tokens=1000
    )
    assert cost == pytest.approx(0.001, abs=1e-12)


def test_set_price_and_prices_file_take_a_one_hour_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_price("proxy-claude", input=2.0, output=10.0, cache_write=2.5, cache_write_1h=4.0)
    price = lookup_price("proxy-claude")
    assert price is not None and price.cache_write_1h == 4.0
    with pytest.raises(ValueError, match="cache_write_1h"):
        set_price("proxy-claude", input=2.0, output=10.0, cache_write_1h=-1.0)
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps({"file-claude": {"input": 1.0, "output": 5.0, "cache_write_1h": 2.2}}), "utf-8"
    )
    monkeypatch.setenv(ENV, str(path))
    # 1000 input all 1-hour writes: 1000 * 2.2 / 1e6 = 0.0022
    cost = estimate_cost(
        "file-claude", input_tokens=1000, output_tokens=0, cache_write_tokens=1000, cache_write_1h_tokens=1000
    )
    assert cost == pytest.approx(0.0022, abs=1e-12)


# --------------------------------------------------------------------------------------
# Service tiers
# --------------------------------------------------------------------------------------


def test_o3_flex_is_half_the_standard_price() -> None:
    # o3 standard $2 / $0.50 cached / $8; flex $1 / $0.25 / $4
    # 10_000 input of which 8000 cached, 2000 output of which 1500 reasoning
    # standard: (2000 * 2 + 8000 * 0.5 + 500 * 8 + 1500 * 8) / 1e6 = 24000 / 1e6 = 0.024
    # flex:     (2000 * 1 + 8000 * 0.25 + 500 * 4 + 1500 * 4) / 1e6 = 12000 / 1e6 = 0.012
    counts = {
        "input_tokens": 10_000,
        "output_tokens": 2000,
        "cache_read_tokens": 8000,
        "reasoning_tokens": 1500,
    }
    assert estimate_cost("o3-2025-04-16", **counts) == pytest.approx(0.024, abs=1e-12)
    assert estimate_cost("o3-2025-04-16", **counts, service_tier="flex") == pytest.approx(0.012, abs=1e-12)


def test_gpt_4o_snapshot_priority_price() -> None:
    # gpt-4o priority (gpt-4o-2024-08-06): $4.25 input, $2.125 cached, $17 output
    # 1000 input of which 400 cached, 500 output: (600 * 4.25 + 400 * 2.125 + 500 * 17) / 1e6
    # = (2550 + 850 + 8500) / 1e6 = 0.0119
    usage = Usage.of(1000, 500, 400, service_tier="priority")
    assert estimate_usage_cost("gpt-4o-2024-08-06", usage) == CostEstimate(0.0119, None)


def test_snapshot_with_its_own_price_has_its_own_priority_price() -> None:
    # gpt-4o-2024-05-13 priority: $8.75 / $26.25, no cached price (cached input at $8.75)
    # (1000 * 8.75 + 1000 * 26.25) / 1e6 = 0.035, not gpt-4o's (1000 * 4.25 + 1000 * 17) / 1e6 = 0.02125
    cost = estimate_cost(
        "gpt-4o-2024-05-13",
        input_tokens=1000,
        output_tokens=1000,
        cache_read_tokens=500,
        service_tier="priority",
    )
    assert cost == pytest.approx(0.035, abs=1e-12)


@pytest.mark.parametrize("tier", [None, "", "default", "DEFAULT", " standard ", "auto", "standard_only", 42])
def test_standard_tier_names_are_priced_at_standard_prices(tier: object) -> None:
    # gpt-4o standard: 1000 * 2.5 / 1e6 + 500 * 10 / 1e6 = 0.0075
    cost = estimate_cost("gpt-4o", input_tokens=1000, output_tokens=500, service_tier=tier)  # type: ignore[arg-type]
    assert cost == pytest.approx(0.0075, abs=1e-12)
    assert estimate_usage_cost("gpt-4o", Usage.of(1000, 500, service_tier=tier)) == CostEstimate(0.0075, None)


@pytest.mark.parametrize(
    ("model", "tier"),
    [
        ("o3", "scale"),  # billed in Scale Tier units, not per token
        ("gpt-4o", "flex"),  # no flex price listed
        ("gpt-5-nano", "priority"),
        ("claude-sonnet-4-5", "priority"),  # Anthropic's priority tier is sold by commitment
        ("claude-sonnet-4-5", "batch"),
    ],
)
def test_tier_without_a_price_leaves_the_call_unpriced(model: str, tier: str) -> None:
    assert estimate_cost(model, input_tokens=1000, output_tokens=500, service_tier=tier) is None
    estimate = estimate_usage_cost(model, Usage.of(1000, 500, service_tier=tier))
    assert estimate == CostEstimate(None, semconv.UNPRICED_SERVICE_TIER)
    assert lookup_price(model, tier) is None
    assert lookup_price(model) is not None


def test_unknown_model_reason() -> None:
    for model in ("no-such-model", None, "  "):
        estimate = estimate_usage_cost(model, Usage.of(10, 10, service_tier="flex"))
        assert estimate == CostEstimate(None, semconv.UNPRICED_UNKNOWN_MODEL)


def test_unpriced_tier_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=_pricing.logger.name)
    for _ in range(3):
        estimate_cost("o3", input_tokens=1, output_tokens=1, service_tier="scale")
    messages = [r.getMessage() for r in caplog.records if "scale" in r.getMessage()]
    assert len(messages) == 1 and "'o3'" in messages[0]


def test_lookup_price_by_tier() -> None:
    flex = lookup_price("openai/gpt-5-mini-2025-08-07", "Flex")
    assert flex is not None and (flex.input, flex.cache_read, flex.output) == (0.125, 0.0125, 1.0)
    priority = lookup_price("gpt-5.5", "priority")
    assert priority is not None and (priority.input, priority.cache_read, priority.output) == (
        12.5,
        1.25,
        75.0,
    )
    assert lookup_price("gpt-5.5", "default") == lookup_price("gpt-5.5")


def test_set_price_for_a_tier() -> None:
    assert lookup_price("gpt-4o", "flex") is None
    set_price("gpt-4o", input=1.25, output=5.0, service_tier="flex")
    # no cache_read given: gpt-4o's standard ratio (1.25 / 2.5 = 0.5) gives 0.625
    # 1000 input of which 200 cached, 100 output: (800 * 1.25 + 200 * 0.625 + 100 * 5) / 1e6 = 0.001625
    cost = estimate_cost(
        "gpt-4o-2024-11-20", input_tokens=1000, output_tokens=100, cache_read_tokens=200, service_tier="flex"
    )
    assert cost == pytest.approx(0.001625, abs=1e-12)
    # the standard price is untouched
    assert estimate_cost("gpt-4o", input_tokens=1000, output_tokens=500) == pytest.approx(0.0075, abs=1e-12)


def test_user_tier_price_inherits_the_bundled_tier_ratio_and_wins() -> None:
    set_price("o3", input=0.9, output=3.6, service_tier="FLEX")
    flex = lookup_price("o3", "flex")
    # bundled o3 flex: cached 0.25 of input 1.0 -> 0.9 * 0.25 = 0.225
    assert flex is not None and (flex.input, flex.cache_read, flex.output) == (0.9, 0.225, 3.6)


def test_standard_override_keeps_the_bundled_tier_prices() -> None:
    set_price("o3", input=1.8, output=7.2)
    # flex still at the bundled $1 / $4: (1000 * 1 + 1000 * 4) / 1e6 = 0.005
    assert estimate_cost("o3", input_tokens=1000, output_tokens=1000, service_tier="flex") == pytest.approx(
        0.005
    )
    # standard at the user's price: (1000 * 1.8 + 1000 * 7.2) / 1e6 = 0.009
    assert estimate_cost("o3", input_tokens=1000, output_tokens=1000) == pytest.approx(0.009)


def test_set_price_with_a_standard_tier_name_sets_the_standard_price() -> None:
    set_price("gpt-4o", input=2.0, output=8.0, service_tier="default")
    price = lookup_price("gpt-4o")
    assert price is not None and price.input == 2.0


@pytest.mark.parametrize("tier", ["", "   ", 7])
def test_set_price_rejects_an_empty_tier(tier: object) -> None:
    with pytest.raises(ValueError, match="service_tier"):
        set_price("gpt-4o", input=1.0, output=1.0, service_tier=tier)  # type: ignore[arg-type]


def test_prices_file_tiers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prices.json"
    document = {
        "models": {
            "in-house": {
                "input": 1.0,
                "output": 2.0,
                "cache_read": 0.1,
                "tiers": {"flex": {"input": 0.5, "output": 1.0}},
            },
        }
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    monkeypatch.setenv(ENV, str(path))
    # flex, cached at the model's own ratio 0.1 -> 0.05: (500 * 0.5 + 500 * 0.05 + 1000 * 1) / 1e6 = 0.001275
    cost = estimate_cost(
        "in-house", input_tokens=1000, output_tokens=1000, cache_read_tokens=500, service_tier="flex"
    )
    assert cost == pytest.approx(0.001275, abs=1e-12)
    assert estimate_cost("in-house", input_tokens=1, output_tokens=1, service_tier="priority") is None


@pytest.mark.parametrize(
    "tiers",
    [
        {"default": {"input": 1.0, "output": 1.0}},  # the standard tier is the entry itself
        {"flex": {"input": 1.0}},
        {"flex": {"input": 1.0, "output": 1.0, "provider": "openai"}},
        {"flex": {"input": -1.0, "output": 1.0}},
        {"flex": [1.0, 2.0]},
        [1, 2],
    ],
)
def test_malformed_tiers_in_a_prices_file_are_logged_and_ignored(
    tiers: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=_pricing.logger.name)
    path = tmp_path / "bad-tiers.json"
    path.write_text(json.dumps({"bad": {"input": 1.0, "output": 1.0, "tiers": tiers}}), encoding="utf-8")
    monkeypatch.setenv(ENV, str(path))
    assert lookup_price("bad") is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "'bad'" in errors[0].getMessage()


def test_bundled_tier_prices_are_well_formed() -> None:
    models = _bundled_models()
    tiered = {name: entry["tiers"] for name, entry in models.items() if "tiers" in entry}
    assert len(tiered) >= 15
    for name, tiers in tiered.items():
        assert isinstance(tiers, dict) and set(tiers) <= {"flex", "priority"}, name
        standard = lookup_price(name)
        assert standard is not None and standard.provider == semconv.PROVIDER_OPENAI
        for tier in tiers:
            price = lookup_price(name, tier)
            assert price is not None, (name, tier)
            if tier == "flex":  # OpenAI bills flex at Batch API rates: half of every standard rate
                assert price.input * 2 == pytest.approx(standard.input), name
                assert price.output * 2 == pytest.approx(standard.output), name
                assert standard.cache_read is not None and price.cache_read is not None
                assert price.cache_read * 2 == pytest.approx(standard.cache_read), name
            else:  # priority costs more than standard
                assert price.input > standard.input and price.output > standard.output, name


# --------------------------------------------------------------------------------------
# The service tier on usage
# --------------------------------------------------------------------------------------


class _Tier(enum.Enum):
    FLEX = "flex"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(" Flex ", "flex"), ("PRIORITY", "priority"), (_Tier.FLEX, "flex"), ("", None), ("  ", None), (3, None),
     (None, None), ("x" * 100, "x" * 32)],
)  # fmt: skip
def test_service_tier_is_coerced(raw: object, expected: str | None) -> None:
    assert coerce_service_tier(raw) == expected
    assert Usage.of(1, 1, service_tier=raw).service_tier == expected


def test_service_tier_attribute_by_provider() -> None:
    assert service_tier_attribute(semconv.PROVIDER_OPENAI) == "openai.response.service_tier"
    assert service_tier_attribute(semconv.PROVIDER_AZURE_OPENAI) == semconv.OPENAI_RESPONSE_SERVICE_TIER
    assert service_tier_attribute(semconv.PROVIDER_ANTHROPIC) == semconv.LLMTRACE_RESPONSE_SERVICE_TIER
    assert service_tier_attribute(None) == semconv.LLMTRACE_RESPONSE_SERVICE_TIER


def test_usage_record_new_fields_default_to_none() -> None:
    record = UsageRecord(
        operation="chat",
        provider="openai",
        request_model="o3",
        response_model=None,
        framework=None,
        input_tokens=1,
        output_tokens=1,
        cache_read_tokens=None,
        cache_write_tokens=None,
        reasoning_tokens=None,
        cost=None,
        duration_s=0.1,
        time_to_first_chunk_s=None,
        streamed=False,
        status="success",
        error_type=None,
        cache_hit=None,
        trace_id="0" * 32,
        span_id="0" * 16,
        start_time_unix_nano=0,
    )
    as_dict = record.to_dict()
    assert (as_dict["cache_write_1h_tokens"], as_dict["service_tier"], as_dict["unpriced_reason"]) == (
        None,
        None,
        None,
    )


def test_standard_tier_names() -> None:
    assert {"default", "standard", "auto"} <= STANDARD_SERVICE_TIERS


# --------------------------------------------------------------------------------------
# User prices keep the table's ratios
# --------------------------------------------------------------------------------------


def test_override_without_cache_read_keeps_the_cached_discount() -> None:
    set_price("gpt-4o", input=2.0, output=8.0)
    # gpt-4o caches at half the input price: 2.0 * 1.25 / 2.5 = 1.0
    # 2000 input of which 1000 cached, 100 output: (1000 * 2 + 1000 * 1 + 100 * 8) / 1e6 = 0.0038
    cost = estimate_cost("gpt-4o-2024-08-06", input_tokens=2000, output_tokens=100, cache_read_tokens=1000)
    assert cost == pytest.approx(0.0038, abs=1e-12)


def test_claude_override_keeps_every_cache_ratio() -> None:
    set_price("claude-sonnet-4-5", input=2.4, output=12.0)
    price = lookup_price("claude-sonnet-4-5-20250929")
    assert price is not None
    # ratios of the bundled $3 / $0.30 / $3.75 / $6: 0.1x, 1.25x, 2x
    assert (price.cache_read, price.cache_write, price.cache_write_1h) == (0.24, 3.0, 4.8)
    assert price.provider == semconv.PROVIDER_ANTHROPIC


def test_explicit_rates_win_and_unknown_models_keep_input_rates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_price("gpt-4o", input=2.0, output=8.0, cache_read=2.0)  # cached at full price, on purpose
    price = lookup_price("gpt-4o")
    assert price is not None and price.cache_read == 2.0
    set_price("my-finetune", input=1.0, output=2.0)
    price = lookup_price("my-finetune")
    assert price is not None and price.cache_read is None and price.cache_write is None
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"gpt-4o-mini": {"input": 0.3, "output": 1.2}}), encoding="utf-8")
    monkeypatch.setenv(ENV, str(path))
    mini = lookup_price("gpt-4o-mini")
    # gpt-4o-mini caches at half the input price (0.075 / 0.15): 0.3 -> 0.15
    assert mini is not None and mini.cache_read == 0.15


# --------------------------------------------------------------------------------------
# Legacy OpenAI snapshots priced at their own list prices
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # (1000 * input + 1000 * output) / 1e6
        ("gpt-3.5-turbo-1106", 0.003),  # $1 / $2
        ("gpt-3.5-turbo-0613", 0.0035),  # $1.50 / $2
        ("gpt-3.5-turbo-0301", 0.0035),
        ("gpt-3.5-turbo-16k-0613", 0.007),  # $3 / $4
        ("gpt-3.5-turbo-instruct", 0.0035),
        ("gpt-3.5-turbo-0125", 0.002),  # the current snapshot: $0.50 / $1.50
        ("gpt-4-1106-preview", 0.04),  # $10 / $30
        ("gpt-4-0125-preview", 0.04),
        ("gpt-4-turbo-preview", 0.04),
    ],
)
def test_legacy_snapshot_prices(model: str, expected: float) -> None:
    assert estimate_cost(model, input_tokens=1000, output_tokens=1000) == pytest.approx(expected, abs=1e-12)
