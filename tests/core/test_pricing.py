"""Tests of the model price table and cost estimation (llmtrace._pricing)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from datetime import date
from importlib import resources
from pathlib import Path

import pytest

from llmtrace import _pricing, semconv
from llmtrace._pricing import (
    PRICES_CHECKED,
    ModelPrice,
    estimate_cost,
    lookup_price,
    map_deployment,
    normalize_model_name,
    reset_user_prices,
    set_price,
)

ENV = _pricing.PRICES_FILE_ENV


@pytest.fixture(autouse=True)
def _clean_prices(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(ENV, raising=False)
    reset_user_prices()
    yield
    reset_user_prices()


@pytest.fixture
def caplog_pricing(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=_pricing.logger.name)
    return caplog


def _bundled_document() -> dict[str, object]:
    text = resources.files("llmtrace").joinpath("prices.json").read_text(encoding="utf-8")
    data = json.loads(text)
    assert isinstance(data, dict)
    return data


# --------------------------------------------------------------------------------------
# Published prices
# --------------------------------------------------------------------------------------


def test_gpt_4o_plain() -> None:
    # 1000 * 2.5 / 1e6 + 500 * 10 / 1e6 = 0.0025 + 0.005 = 0.0075
    assert estimate_cost("gpt-4o", input_tokens=1000, output_tokens=500) == pytest.approx(0.0075, abs=1e-12)


def test_openai_cached_input_priced_once_at_cached_rate() -> None:
    # gpt-4o: 2000 input of which 1000 cached, 100 output
    # (1000 * 2.5 + 1000 * 1.25 + 100 * 10) / 1e6 = (2500 + 1250 + 1000) / 1e6 = 0.00475
    cost = estimate_cost("gpt-4o", input_tokens=2000, output_tokens=100, cache_read_tokens=1000)
    assert cost == pytest.approx(0.00475, abs=1e-12)


def test_gpt_5_mini_cached_input() -> None:
    # (5000 * 0.25 + 5000 * 0.025 + 2000 * 2.0) / 1e6 = (1250 + 125 + 4000) / 1e6 = 0.005375
    cost = estimate_cost("gpt-5-mini", input_tokens=10_000, output_tokens=2000, cache_read_tokens=5000)
    assert cost == pytest.approx(0.005375, abs=1e-12)


def test_anthropic_cache_read_and_cache_write() -> None:
    # claude-sonnet-4-5: $3 input, $0.30 cache read, $3.75 cache write (5 min), $15 output
    # 10_000 input = 2000 uncached + 6000 cache read + 2000 cache write; 1000 output
    # (2000 * 3 + 6000 * 0.3 + 2000 * 3.75 + 1000 * 15) / 1e6 = (6000 + 1800 + 7500 + 15000) / 1e6 = 0.0303
    cost = estimate_cost(
        "claude-sonnet-4-5-20250929",
        input_tokens=10_000,
        output_tokens=1000,
        cache_read_tokens=6000,
        cache_write_tokens=2000,
    )
    assert cost == pytest.approx(0.0303, abs=1e-12)


def test_anthropic_haiku_4_5() -> None:
    # (1000 * 1 + 1000 * 5) / 1e6 = 0.006
    assert estimate_cost("claude-haiku-4-5", input_tokens=1000, output_tokens=1000) == pytest.approx(0.006)


def test_anthropic_opus_4_1_cache_write() -> None:
    # claude-opus-4-1: $15 input, $18.75 cache write; 1000 input all written to cache, 0 output
    # 1000 * 18.75 / 1e6 = 0.01875
    cost = estimate_cost("claude-opus-4-1", input_tokens=1000, output_tokens=0, cache_write_tokens=1000)
    assert cost == pytest.approx(0.01875, abs=1e-12)


def test_gemini_reasoning_tokens_are_output() -> None:
    # gemini-2.5-pro (<= 200k tokens): $1.25 input, $10 output, thinking billed as output
    # 100_000 * 1.25 / 1e6 + (2000 + 8000) * 10 / 1e6 = 0.125 + 0.1 = 0.225
    cost = estimate_cost("gemini-2.5-pro", input_tokens=100_000, output_tokens=10_000, reasoning_tokens=8000)
    assert cost == pytest.approx(0.225, abs=1e-12)


def test_deepseek_cache_hit_price() -> None:
    # deepseek-chat: $0.28 cache miss, $0.028 cache hit, $0.42 output
    # (600_000 * 0.28 + 400_000 * 0.028 + 1_000_000 * 0.42) / 1e6 = 0.168 + 0.0112 + 0.42 = 0.5992
    cost = estimate_cost(
        "deepseek-chat", input_tokens=1_000_000, output_tokens=1_000_000, cache_read_tokens=400_000
    )
    assert cost == pytest.approx(0.5992, abs=1e-12)


def test_embeddings_price() -> None:
    # text-embedding-3-small: 1_000_000 * 0.02 / 1e6 = 0.02
    cost = estimate_cost("text-embedding-3-small", input_tokens=1_000_000, output_tokens=0)
    assert cost == pytest.approx(0.02, abs=1e-12)


def test_xai_grok_4_cached() -> None:
    # grok-4: $3 input, $0.75 cached, $15 output: (1000 * 3 + 1000 * 0.75 + 100 * 15) / 1e6 = 0.00525
    cost = estimate_cost("grok-4-0709", input_tokens=2000, output_tokens=100, cache_read_tokens=1000)
    assert cost == pytest.approx(0.00525, abs=1e-12)


@pytest.mark.parametrize(
    ("model", "input_price", "output_price", "cache_read"),
    [
        ("gpt-4o", 2.5, 10.0, 1.25),
        ("gpt-4o-mini", 0.15, 0.6, 0.075),
        ("gpt-4.1", 2.0, 8.0, 0.5),
        ("gpt-5", 1.25, 10.0, 0.125),
        ("gpt-5-nano", 0.05, 0.4, 0.005),
        ("o3", 2.0, 8.0, 0.5),
        ("o4-mini", 1.1, 4.4, 0.275),
        ("claude-sonnet-4", 3.0, 15.0, 0.3),
        ("claude-3-5-haiku", 0.8, 4.0, 0.08),
        ("gemini-2.5-flash", 0.3, 2.5, 0.03),
        ("deepseek-reasoner", 0.28, 0.42, 0.028),
        ("grok-3-mini", 0.3, 0.5, 0.075),
        ("nova-micro", 0.035, 0.14, 0.00875),
    ],
)
def test_published_prices(model: str, input_price: float, output_price: float, cache_read: float) -> None:
    price = lookup_price(model)
    assert price is not None
    assert (price.input, price.output, price.cache_read) == (input_price, output_price, cache_read)


def test_anthropic_cache_multipliers_hold_for_every_claude_entry() -> None:
    models = _bundled_document()["models"]
    assert isinstance(models, dict)
    claude = [name for name, entry in models.items() if entry["provider"] == "anthropic"]
    assert len(claude) >= 10
    for name in claude:
        price = lookup_price(name)
        assert price is not None and price.cache_read is not None and price.cache_write is not None
        # Anthropic rounds Haiku 3's cache prices to the cent ($0.03 / $0.30 for $0.25 input).
        assert price.cache_read == pytest.approx(price.input * 0.1, abs=0.006), name
        assert price.cache_write == pytest.approx(price.input * 1.25, abs=0.02), name


# --------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # lowercase and strip
        ("  GPT-4o  ", "gpt-4o"),
        # provider prefixes
        ("openai/gpt-4o", "gpt-4o"),
        ("anthropic/claude-3-5-sonnet", "claude-3-5-sonnet"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("azure/gpt-4.1-mini", "gpt-4.1-mini"),
        ("google/gemini-2.5-pro", "gemini-2.5-pro"),
        ("mistralai/mistral-small", "mistral-small"),
        ("vertex_ai/gemini-2.0-flash", "gemini-2.0-flash"),
        ("bedrock/amazon.nova-lite-v1:0", "nova-lite"),
        # dated snapshot suffixes
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("openai/gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("gpt-4-0613", "gpt-4"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("mistral-large-2512", "mistral-large"),
        ("command-r-plus-08-2024", "command-r-plus"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        # Vertex @date
        ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),
        ("vertex_ai/claude-sonnet-4@20250514", "claude-sonnet-4"),
        # -latest
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("mistral-large-latest", "mistral-large"),
        ("codestral-latest", "codestral"),
        # Bedrock ids, with and without cross-region prefixes
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("eu.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
        ("apac.anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("meta.llama3-1-70b-instruct-v1:0", "llama3-1-70b-instruct"),
        ("us.meta.llama3-2-11b-instruct-v1:0", "llama3-2-11b-instruct"),
        ("amazon.nova-pro-v1:0", "nova-pro"),
        ("amazon.titan-embed-text-v2:0", "titan-embed-text-v2"),
        ("mistral.mistral-large-2407-v1:0", "mistral-large-2407"),
        ("cohere.command-r-v1:0", "command-r"),
        ("cohere.command-r-plus-v1:0", "command-r-plus"),
        ("cohere.embed-english-v3", "embed-english-v3"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0",
            "claude-3-7-sonnet",
        ),
    ],
)
def test_normalize_model_name(raw: str, expected: str) -> None:
    assert normalize_model_name(raw) == expected
    assert lookup_price(raw) is not None
    assert lookup_price(raw) == lookup_price(expected)


def test_normalize_unknown_keeps_cleaned_name() -> None:
    # The dated suffix stays when the undated name has no price either.
    assert normalize_model_name("openai/My-Model-2024-01-01") == "my-model-2024-01-01"
    assert normalize_model_name("") == ""
    assert normalize_model_name(None) == ""  # type: ignore[arg-type]


def test_exact_snapshot_entry_wins_over_normalised_name() -> None:
    # gpt-4o-2024-05-13 has its own, higher price ($5 / $15), not gpt-4o's.
    price = lookup_price("gpt-4o-2024-05-13")
    assert price is not None and (price.input, price.output) == (5.0, 15.0)


def test_gpt_4o_mini_is_not_priced_as_gpt_4o() -> None:
    mini = lookup_price("gpt-4o-mini")
    assert mini is not None and mini.input == 0.15
    # 1000 * 0.15 / 1e6 + 1000 * 0.6 / 1e6 = 0.00075, not gpt-4o's 0.0125
    assert estimate_cost("gpt-4o-mini-2024-07-18", input_tokens=1000, output_tokens=1000) == pytest.approx(
        0.00075, abs=1e-12
    )


def test_prefix_match_only_across_version_suffixes() -> None:
    gpt_4 = lookup_price("gpt-4")
    assert gpt_4 is not None and gpt_4.input == 30.0  # gpt-4 is not gpt-4o
    assert lookup_price("gpt-4o-turbo") is None  # "-turbo" is not a version suffix
    assert lookup_price("gpt-4oxyz") is None
    assert lookup_price("gpt-4o-mini-search-preview") is None
    assert lookup_price("claude-opus-4-9") is None  # not claude-opus-4: "-9" is not a snapshot
    assert lookup_price("gemini-2.5-flash-preview-05-20") is None  # previews are not the GA model


@pytest.mark.parametrize("model", [None, "", "   ", "no-such-model", "ft:gpt-4o-mini:org::abc", 42])
def test_unknown_models_have_no_price(model: object) -> None:
    assert lookup_price(model) is None  # type: ignore[arg-type]
    assert estimate_cost(model, input_tokens=1000, output_tokens=1000) is None  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Bad token counts
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, -5, "abc", float("nan"), float("inf"), True, False, [], object()])
def test_bad_input_tokens_count_as_zero(bad: object) -> None:
    # only the 500 output tokens count: 500 * 10 / 1e6 = 0.005
    cost = estimate_cost("gpt-4o", input_tokens=bad, output_tokens=500)  # type: ignore[arg-type]
    assert cost == pytest.approx(0.005, abs=1e-12)


@pytest.mark.parametrize("good", [12, 12.0, "12", " 12 ", 12.7])
def test_numeric_token_values_are_accepted(good: object) -> None:
    # 12 * 2.5 / 1e6 + 500 * 10 / 1e6 = 0.00003 + 0.005 = 0.00503
    cost = estimate_cost("gpt-4o", input_tokens=good, output_tokens=500)  # type: ignore[arg-type]
    assert cost == pytest.approx(0.00503, abs=1e-12)


@pytest.mark.parametrize("bad", [None, -5, "abc", float("nan"), True])
def test_bad_cache_and_reasoning_counts_count_as_zero(bad: object) -> None:
    # everything at the plain rates: 1000 * 2.5 / 1e6 + 500 * 10 / 1e6 = 0.0075
    cost = estimate_cost(
        "gpt-4o",
        input_tokens=1000,
        output_tokens=500,
        cache_read_tokens=bad,  # type: ignore[arg-type]
        cache_write_tokens=bad,  # type: ignore[arg-type]
        reasoning_tokens=bad,  # type: ignore[arg-type]
    )
    assert cost == pytest.approx(0.0075, abs=1e-12)


def test_bad_token_value_is_logged_once(caplog_pricing: pytest.LogCaptureFixture) -> None:
    for _ in range(3):
        estimate_cost("gpt-4o", input_tokens="abc", output_tokens=1)  # type: ignore[arg-type]
    warnings = [r for r in caplog_pricing.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "input_tokens" in warnings[0].getMessage()


def test_cached_tokens_above_input_clamp_uncached_part_at_zero() -> None:
    # gpt-4o, 100 input but 300 "cache read": uncached = max(100 - 300, 0) = 0
    # 300 * 1.25 / 1e6 = 0.000375 (never negative)
    cost = estimate_cost("gpt-4o", input_tokens=100, output_tokens=0, cache_read_tokens=300)
    assert cost == pytest.approx(0.000375, abs=1e-12)
    # cache read + cache write above input on Claude: 0 uncached, 100 * 0.3 + 100 * 3.75 = 405 -> 0.000405
    cost = estimate_cost(
        "claude-sonnet-4", input_tokens=150, output_tokens=0, cache_read_tokens=100, cache_write_tokens=100
    )
    assert cost == pytest.approx(0.000405, abs=1e-12)


def test_reasoning_above_output_clamps_visible_output_at_zero() -> None:
    # o3: 100 output but 300 reasoning: visible = 0, reasoning 300 * 8 / 1e6 = 0.0024
    cost = estimate_cost("o3", input_tokens=0, output_tokens=100, reasoning_tokens=300)
    assert cost == pytest.approx(0.0024, abs=1e-12)


def test_zero_tokens_cost_zero_for_a_priced_model() -> None:
    assert estimate_cost("gpt-4o", input_tokens=0, output_tokens=0) == 0.0


def test_result_keeps_sub_cent_precision() -> None:
    # one cached token on gpt-5-nano: 1 * 0.005 / 1e6 = 5e-9
    cost = estimate_cost("gpt-5-nano", input_tokens=1, output_tokens=0, cache_read_tokens=1)
    assert cost == pytest.approx(5e-9, rel=1e-9)
    assert isinstance(cost, float)


# --------------------------------------------------------------------------------------
# User prices, deployments, caches
# --------------------------------------------------------------------------------------


def test_set_price_overrides_bundled_and_invalidates_cache() -> None:
    before = lookup_price("openai/gpt-4o-2024-08-06")  # fills the cache
    assert before is not None and before.input == 2.5
    set_price("gpt-4o", input=1.0, output=2.0)
    after = lookup_price("openai/gpt-4o-2024-08-06")
    assert after is not None and (after.input, after.output) == (1.0, 2.0)
    # (1000 * 1 + 500 * 2) / 1e6 = 0.002
    assert estimate_cost("gpt-4o", input_tokens=1000, output_tokens=500) == pytest.approx(0.002)
    reset_user_prices()
    restored = lookup_price("gpt-4o")
    assert restored is not None and restored.input == 2.5


def test_set_price_new_model_with_all_rates() -> None:
    assert lookup_price("my-finetune") is None
    set_price("My-Finetune", input=1.0, output=2.0, cache_read=0.5, cache_write=1.5, reasoning=4.0)
    # input 1000 = 500 uncached + 300 read + 200 write; output 1000 = 600 visible + 400 reasoning
    # (500 * 1 + 300 * 0.5 + 200 * 1.5 + 600 * 2 + 400 * 4) / 1e6
    # = (500 + 150 + 300 + 1200 + 1600) / 1e6 = 0.00375
    cost = estimate_cost(
        "my-finetune-2025-01-01",
        input_tokens=1000,
        output_tokens=1000,
        cache_read_tokens=300,
        cache_write_tokens=200,
        reasoning_tokens=400,
    )
    assert cost == pytest.approx(0.00375, abs=1e-12)
    assert normalize_model_name("my-finetune-latest") == "my-finetune"


def test_set_price_exact_user_name_wins() -> None:
    set_price("cohere.command-r-v1:0", input=0.5, output=1.5)  # Bedrock's own price for Command R
    bedrock = lookup_price("cohere.command-r-v1:0")
    assert bedrock is not None and bedrock.input == 0.5
    direct = lookup_price("command-r")
    assert direct is not None and direct.input == 0.15


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input": -1.0, "output": 1.0},
        {"input": 1.0, "output": -0.01},
        {"input": 1.0, "output": 1.0, "cache_read": -1.0},
        {"input": 1.0, "output": 1.0, "cache_write": float("nan")},
        {"input": 1.0, "output": 1.0, "reasoning": float("inf")},
        {"input": "1", "output": 1.0},
        {"input": True, "output": 1.0},
    ],
)
def test_set_price_rejects_bad_prices(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="x-model"):
        set_price("x-model", **kwargs)  # type: ignore[arg-type]
    assert lookup_price("x-model") is None


@pytest.mark.parametrize("name", ["", "   ", None])
def test_set_price_rejects_empty_model(name: object) -> None:
    with pytest.raises(ValueError):
        set_price(name, input=1.0, output=1.0)  # type: ignore[arg-type]


def test_model_price_validates() -> None:
    with pytest.raises(ValueError):
        ModelPrice(input=-1.0, output=1.0)
    assert ModelPrice(input=1, output=2).cache_read is None


def test_map_deployment() -> None:
    assert lookup_price("prod-chat") is None
    assert estimate_cost("prod-chat", input_tokens=1000, output_tokens=500) is None
    map_deployment("Prod-Chat", "gpt-4o-2024-08-06")
    assert lookup_price("prod-chat") == lookup_price("gpt-4o")
    assert lookup_price("azure/prod-chat") == lookup_price("gpt-4o")
    # same as gpt-4o: 0.0075
    assert estimate_cost("PROD-CHAT", input_tokens=1000, output_tokens=500) == pytest.approx(0.0075)


def test_map_deployment_to_user_priced_and_unknown_models() -> None:
    map_deployment("ft-deploy", "my-ft-model")
    assert lookup_price("ft-deploy") is None  # the target has no price yet
    set_price("my-ft-model", input=3.0, output=6.0)
    price = lookup_price("ft-deploy")
    assert price is not None and price.input == 3.0
    with pytest.raises(ValueError):
        map_deployment("", "gpt-4o")
    with pytest.raises(ValueError):
        map_deployment("x", " ")


def test_lookups_are_cached() -> None:
    lookup_price("anthropic.claude-3-5-sonnet-20241022-v2:0")
    hits = _pricing._resolve.cache_info().hits
    for _ in range(5):
        lookup_price("anthropic.claude-3-5-sonnet-20241022-v2:0")
    assert _pricing._resolve.cache_info().hits == hits + 5


# --------------------------------------------------------------------------------------
# LLMTRACE_PRICES_FILE
# --------------------------------------------------------------------------------------


def test_prices_file_full_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "checked": "2026-01-01",
                "currency": "USD",
                "unit": "per_million_tokens",
                "models": {
                    "gpt-4o": {"provider": "openai", "input": 2.0, "output": 8.0, "cache_read": 1.0},
                    "in-house-llm": {"input": 0.5, "output": 1.0},
                },
            }
        ),
        encoding="utf-8",
    )
    monkeypatch.setenv(ENV, str(path))
    price = lookup_price("gpt-4o-2024-11-20")
    assert price is not None and (price.input, price.output, price.cache_read) == (2.0, 8.0, 1.0)
    # (1000 * 0.5 + 1000 * 1.0) / 1e6 = 0.0015
    assert estimate_cost("in-house-llm", input_tokens=1000, output_tokens=1000) == pytest.approx(0.0015)
    # bundled prices still apply to everything else
    haiku = lookup_price("claude-haiku-4-5")
    assert haiku is not None and haiku.input == 1.0


def test_prices_file_bare_mapping_and_set_price_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"local-llama": {"input": 0.1, "output": 0.2}}), encoding="utf-8")
    monkeypatch.setenv(ENV, str(path))
    price = lookup_price("local-llama")
    assert price is not None and price.output == 0.2
    set_price("local-llama", input=9.0, output=9.0)
    price = lookup_price("local-llama")
    assert price is not None and price.input == 9.0


def test_prices_file_reloaded_when_env_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"models": {"m1": {"input": 1.0, "output": 1.0}}}), encoding="utf-8")
    second.write_text(json.dumps({"models": {"m2": {"input": 2.0, "output": 2.0}}}), encoding="utf-8")
    monkeypatch.setenv(ENV, str(first))
    assert lookup_price("m1") is not None and lookup_price("m2") is None
    monkeypatch.setenv(ENV, str(second))
    assert lookup_price("m1") is None and lookup_price("m2") is not None
    monkeypatch.delenv(ENV)
    assert lookup_price("m2") is None


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2, 3]",
        json.dumps({"models": {"bad": {"input": -1.0, "output": 1.0}}}),
        json.dumps({"models": {"bad": {"input": 1.0}}}),
        json.dumps({"models": {"bad": {"input": 1.0, "output": 1.0, "cache_reads": 0.1}}}),
        json.dumps({"currency": "EUR", "models": {"bad": {"input": 1.0, "output": 1.0}}}),
        json.dumps({"models": {"bad": {"input": "cheap", "output": 1.0}}}),
        json.dumps({"models": {"bad": {"input": 1e999, "output": 1.0}}}),
    ],
)
def test_malformed_prices_file_is_logged_once_and_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog_pricing: pytest.LogCaptureFixture, content: str
) -> None:
    path = tmp_path / "broken-prices.json"
    path.write_text(content, encoding="utf-8")
    monkeypatch.setenv(ENV, str(path))
    for _ in range(3):
        assert lookup_price("bad") is None
        # 1000 * 2.5 / 1e6 + 500 * 10 / 1e6 = 0.0075: the bundled prices still work
        assert estimate_cost("gpt-4o", input_tokens=1000, output_tokens=500) == pytest.approx(0.0075)
    errors = [r for r in caplog_pricing.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(path) in errors[0].getMessage()
    assert ENV in errors[0].getMessage()


def test_missing_prices_file_is_logged_and_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog_pricing: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "does-not-exist.json"
    monkeypatch.setenv(ENV, str(path))
    assert lookup_price("gpt-4o") is not None
    errors = [r for r in caplog_pricing.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(path) in errors[0].getMessage()


# --------------------------------------------------------------------------------------
# The bundled table
# --------------------------------------------------------------------------------------


def test_package_data_loads_and_has_checked_date() -> None:
    data = _bundled_document()
    assert data["checked"] == PRICES_CHECKED
    assert date.fromisoformat(PRICES_CHECKED) >= date(2025, 1, 1)
    assert data["currency"] == "USD"
    assert data["unit"] == "per_million_tokens"
    models = data["models"]
    assert isinstance(models, dict) and len(models) >= 50


def test_bundled_entries_are_valid() -> None:
    models = _bundled_document()["models"]
    assert isinstance(models, dict)
    providers = {value for name, value in vars(semconv).items() if name.startswith("PROVIDER_")}
    for name, entry in models.items():
        assert name == name.strip().lower(), name
        assert entry["provider"] in providers, name
        for field in ("input", "output", "cache_read", "cache_write", "reasoning"):
            value = entry.get(field, 0.0)
            assert isinstance(value, float | int) and math.isfinite(value) and value >= 0, (name, field)
        # every bundled name resolves to itself
        assert normalize_model_name(name) == name


@pytest.mark.parametrize(
    "model",
    [
        "gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano",
        "gpt-4o", "gpt-4o-mini",
        "o1", "o3", "o3-mini", "o4-mini", "text-embedding-3-small", "text-embedding-3-large",
        "text-embedding-ada-002",
        "claude-opus-4-1", "claude-opus-4", "claude-sonnet-4-5", "claude-sonnet-4", "claude-haiku-4-5",
        "claude-3-7-sonnet", "claude-3-5-haiku", "claude-3-haiku",
        "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash",
        "text-embedding-004", "gemini-embedding-001",
        "mistral-large", "mistral-medium", "mistral-small", "codestral", "mistral-embed",
        "command-r", "command-r-plus", "command-a", "embed-v4.0", "embed-english-v3.0",
        "deepseek-chat", "deepseek-reasoner", "grok-4", "grok-3", "grok-3-mini",
        "nova-micro", "nova-lite", "nova-pro", "titan-embed-text-v2", "llama3-3-70b-instruct",
        "gpt-35-turbo",
    ],
)  # fmt: skip
def test_required_models_are_covered(model: str) -> None:
    assert lookup_price(model) is not None
