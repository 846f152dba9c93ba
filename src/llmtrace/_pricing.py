"""Model price table and cost estimation.

Prices are USD per one million tokens. The bundled table lives in ``prices.json`` next to this
module (shipped in the wheel, never fetched at run time); users can add or override prices with
:func:`set_price` or with a JSON file named by the ``LLMTRACE_PRICES_FILE`` environment variable,
and map Azure OpenAI deployment names to models with :func:`map_deployment`.

Token convention (OpenTelemetry GenAI): ``input_tokens`` includes cache-read and cache-write
tokens, ``output_tokens`` includes reasoning tokens. Each token is priced exactly once.

Service tiers: a call served by a provider's non-standard tier (OpenAI ``flex`` or ``priority``)
is priced at that tier's prices where the table has them, and is not priced at all where it has
not (never at the standard price).

Nothing here raises on bad data at call time: an unknown model gives ``None`` (never a made-up
``0.0``), bad token counts count as zero. Configuration mistakes (a negative price given to
:func:`set_price`) raise ``ValueError`` when they are made; a malformed prices file named by the
environment is logged once and ignored so that it cannot break the application.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from importlib import resources
from typing import Final, NamedTuple, SupportsFloat

from llmtrace import _fork, semconv
from llmtrace._usage import Usage, coerce_service_tier

__all__ = [
    "PRICES_CHECKED",
    "STANDARD_SERVICE_TIERS",
    "CostEstimate",
    "ModelPrice",
    "estimate_cost",
    "estimate_usage_cost",
    "lookup_price",
    "map_deployment",
    "normalize_model_name",
    "reset_user_prices",
    "set_price",
]

logger = logging.getLogger(__name__)

PRICES_FILE_ENV: Final = "LLMTRACE_PRICES_FILE"
_BUNDLED_FILE: Final = "prices.json"
_CURRENCY: Final = "USD"
_UNIT: Final = "per_million_tokens"
_PER_TOKENS: Final = 1_000_000
_COST_DIGITS: Final = 12  # removes float noise, keeps far more than 1e-10 USD precision
_CACHE_SIZE: Final = 4096
_MAX_LOGGED_KEYS: Final = 1024

_PRICE_FIELDS: Final = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning")
_TIER_FIELDS: Final = frozenset(_PRICE_FIELDS)
_ENTRY_FIELDS: Final = frozenset({*_PRICE_FIELDS, "provider", "tiers"})
_FILE_FIELDS: Final = frozenset({"checked", "currency", "unit", "models"})
# optional rates a user price may leave out, and the rate each one is a ratio of
_RATIOS: Final = (
    ("cache_read", "input"),
    ("cache_write", "input"),
    ("cache_write_1h", "input"),
    ("reasoning", "output"),
)
_RATE_DIGITS: Final = 9  # an inherited rate is rounded to a billionth of a dollar per 1M tokens

STANDARD_SERVICE_TIERS: Final = frozenset({"default", "standard", "auto", "standard_only"})
"""Service tier values priced at a model's standard prices: OpenAI's ``default`` (and ``auto``,
a request value that the response resolves, normally to ``default``), Anthropic's ``standard``
and ``standard_only``. A call without a known tier is priced as standard too."""

Tiers = dict[str, dict[str, "ModelPrice"]]
"""Service-tier prices: tier -> model name -> price."""


# --------------------------------------------------------------------------------------
# The price record
# --------------------------------------------------------------------------------------


def _check_price(value: object, field: str, *, required: bool) -> None:
    if value is None and not required:
        return
    valid = False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            valid = math.isfinite(value) and value >= 0
        except OverflowError:  # an int too large for a float
            valid = False
    if not valid:
        raise ValueError(f"{field} must be a finite number >= 0 (USD per 1M tokens), got {value!r}")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Prices of one model, in USD per one million tokens."""

    input: float
    """Uncached input tokens."""
    output: float
    """Output tokens (and reasoning tokens unless ``reasoning`` is set)."""
    cache_read: float | None = None
    """Cache-read input tokens; ``None`` means the same as ``input``."""
    cache_write: float | None = None
    """Cache-write (cache creation) input tokens, five-minute writes for Anthropic; ``None``
    means the same as ``input``."""
    reasoning: float | None = None
    """Reasoning output tokens; ``None`` means the same as ``output``."""
    provider: str | None = None
    """The ``gen_ai.provider.name`` value of the model's vendor, e.g. ``"openai"``."""
    cache_write_1h: float | None = None
    """Cache writes with a one-hour lifetime (Anthropic: 2x input); ``None`` means the same as
    ``cache_write`` (then ``input``)."""

    def __post_init__(self) -> None:
        _check_price(self.input, "input", required=True)
        _check_price(self.output, "output", required=True)
        _check_price(self.cache_read, "cache_read", required=False)
        _check_price(self.cache_write, "cache_write", required=False)
        _check_price(self.cache_write_1h, "cache_write_1h", required=False)
        _check_price(self.reasoning, "reasoning", required=False)
        if self.provider is not None and (not isinstance(self.provider, str) or not self.provider):
            raise ValueError(f"provider must be a non-empty string or None, got {self.provider!r}")


# --------------------------------------------------------------------------------------
# Reading price tables (bundled file, user file)
# --------------------------------------------------------------------------------------


def _tier_key(service_tier: object) -> str | None:
    """The normalised name of a non-standard service tier, or None for the standard tier."""
    tier = coerce_service_tier(service_tier)
    return None if tier is None or tier in STANDARD_SERVICE_TIERS else tier


def _parse_price(entry: object, allowed: frozenset[str], where: str) -> ModelPrice:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    for field in ("input", "output"):
        if field not in entry:
            raise ValueError(f"{where}: missing required field {field!r}")
    try:
        return ModelPrice(**{k: v for k, v in entry.items() if k != "tiers"})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _parse_tiers(tiers: object, key: str, where: str, into: Tiers) -> None:
    """A model entry's ``tiers`` object: ``{"flex": {"input": ..., "output": ...}, ...}``."""
    if not isinstance(tiers, dict):
        raise ValueError(f"{where}: 'tiers' must be an object mapping service tiers to prices")
    for tier_name, tier_entry in tiers.items():
        tier = _tier_key(tier_name)
        if tier is None:
            raise ValueError(
                f"{where}: tier {tier_name!r}: not a non-standard service tier name (the standard "
                f"tier, {sorted(STANDARD_SERVICE_TIERS)}, is the entry's own price)"
            )
        into.setdefault(tier, {})[key] = _parse_price(
            tier_entry, _TIER_FIELDS, f"{where}: tier {tier_name!r}"
        )


def _parse_models(models: object, source: str) -> tuple[dict[str, ModelPrice], Tiers]:
    """The ``models`` mapping of a prices file; raises ValueError naming ``source`` and the model."""
    if not isinstance(models, dict):
        raise ValueError(f"{source}: 'models' must be an object mapping model names to prices")
    table: dict[str, ModelPrice] = {}
    tiers: Tiers = {}
    for name, entry in models.items():
        key = name.strip().lower()
        if not key:
            raise ValueError(f"{source}: empty model name")
        where = f"{source}: model {name!r}"
        table[key] = _parse_price(entry, _ENTRY_FIELDS, where)
        if "tiers" in entry:
            _parse_tiers(entry["tiers"], key, where, tiers)
    return table, tiers


def _parse_prices_document(
    data: object, source: str, *, bundled: bool
) -> tuple[str | None, dict[str, ModelPrice], Tiers]:
    """Parse a prices document: ``{"checked", "currency", "unit", "models"}``.

    A user file may also be a bare mapping of model names to entries.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source}: the top level must be a JSON object")
    if not bundled and "models" not in data:
        return None, *_parse_models(data, source)
    unknown = sorted(set(data) - _FILE_FIELDS)
    if unknown:
        raise ValueError(f"{source}: unknown top-level field(s) {unknown}; allowed: {sorted(_FILE_FIELDS)}")
    if data.get("currency", _CURRENCY) != _CURRENCY:
        raise ValueError(f"{source}: currency must be {_CURRENCY!r}, got {data.get('currency')!r}")
    if data.get("unit", _UNIT) != _UNIT:
        raise ValueError(f"{source}: unit must be {_UNIT!r}, got {data.get('unit')!r}")
    checked = data.get("checked")
    if checked is not None or bundled:
        if not isinstance(checked, str):
            raise ValueError(f"{source}: 'checked' must be an ISO date string, got {checked!r}")
        try:
            date.fromisoformat(checked)
        except ValueError:
            raise ValueError(f"{source}: 'checked' must be a YYYY-MM-DD date, got {checked!r}") from None
    return checked, *_parse_models(data.get("models"), source)


def _with_ratios(price: ModelPrice, reference: ModelPrice | None) -> ModelPrice:
    """``price`` with the optional rates it leaves out (cache read, cache writes, reasoning) taken
    from ``reference`` as ratios: ``set_price("gpt-4o", input=2.0, ...)`` keeps gpt-4o's cached
    input at half the input price. A rate the reference has not either stays unset."""
    if reference is None:
        return price
    changes: dict[str, float | str] = {}
    for field, basis in _RATIOS:
        rate = getattr(reference, field)
        reference_basis: float = getattr(reference, basis)
        if getattr(price, field) is None and rate is not None and reference_basis > 0:
            changes[field] = round(getattr(price, basis) * rate / reference_basis, _RATE_DIGITS)
    if price.provider is None and reference.provider is not None:
        changes["provider"] = reference.provider
    return dataclasses.replace(price, **changes) if changes else price  # type: ignore[arg-type]


def _load_bundled() -> tuple[str, dict[str, ModelPrice], Tiers]:
    package = __package__ or __name__.rpartition(".")[0]
    text = resources.files(package).joinpath(_BUNDLED_FILE).read_text(encoding="utf-8")
    checked, table, tiers = _parse_prices_document(json.loads(text), f"bundled {_BUNDLED_FILE}", bundled=True)
    assert checked is not None  # enforced by _parse_prices_document for the bundled file
    # a tier price that leaves a rate out has the model's own standard ratio for it
    tiers = {
        tier: {name: _with_ratios(price, table[name]) for name, price in prices.items()}
        for tier, prices in tiers.items()
    }
    return checked, table, tiers


def _load_user_file(path: str) -> tuple[dict[str, ModelPrice], Tiers]:
    """Read a user prices file; raises ValueError with a message naming the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    _, table, tiers = _parse_prices_document(data, path, bundled=False)
    return table, tiers


PRICES_CHECKED, _BUNDLED, _BUNDLED_TIERS = _load_bundled()
"""``PRICES_CHECKED``: the ISO date on which the bundled prices were last checked."""


# --------------------------------------------------------------------------------------
# User state: set_price, map_deployment, LLMTRACE_PRICES_FILE
# --------------------------------------------------------------------------------------

_lock = _fork.rlock()
_code_prices: dict[str, ModelPrice] = {}  # set_price
_code_tiers: Tiers = {}  # set_price(service_tier=...)
_file_prices: dict[str, ModelPrice] = {}  # LLMTRACE_PRICES_FILE
_file_tiers: Tiers = {}  # the file's "tiers" objects
_user_prices: dict[str, ModelPrice] = {}  # both merged, set_price winning; replaced, never mutated
_user_tiers: Tiers = {}  # the same for tier prices; replaced, never mutated
_deployments: dict[str, str] = {}  # replaced, never mutated
_file_env_value: str | None = None  # the env value _file_prices was loaded for
_generation = 0  # bumped on every change; part of the cache keys, so stale entries never hit
_logged: set[str] = set()


def _log_once(level: int, key: str, message: str, *args: object) -> None:
    if key in _logged:
        return
    if len(_logged) < _MAX_LOGGED_KEYS:
        _logged.add(key)
    logger.log(level, message, *args)


def _reference(name: str, table: Mapping[str, ModelPrice]) -> ModelPrice | None:
    found = _find(name, table)
    return None if found is None else table[found]


def _changed() -> None:
    """Publish new user tables; call with the lock held.

    A user price inherits the rates it leaves out from the bundled price of the same model, as
    ratios; a user tier price from the bundled price of that tier, else from the model's own
    (user or bundled) standard price."""
    global _user_prices, _user_tiers, _generation
    _user_prices = {
        name: _with_ratios(price, _reference(name, _BUNDLED))
        for name, price in {**_file_prices, **_code_prices}.items()
    }
    tiers: Tiers = {}
    for source in (_file_tiers, _code_tiers):
        for tier, prices in source.items():
            tiers.setdefault(tier, {}).update(prices)
    _user_tiers = {
        tier: {
            name: _with_ratios(
                price,
                _reference(name, _BUNDLED_TIERS.get(tier, {}))
                or _reference(name, _user_prices)
                or _reference(name, _BUNDLED),
            )
            for name, price in prices.items()
        }
        for tier, prices in tiers.items()
    }
    _generation += 1
    _resolve.cache_clear()
    _resolve_tier.cache_clear()
    _normalize.cache_clear()


def _sync_prices_file() -> None:
    """(Re)load LLMTRACE_PRICES_FILE when its value differs from the one loaded."""
    global _file_prices, _file_tiers, _file_env_value
    value = os.environ.get(PRICES_FILE_ENV) or None
    if value == _file_env_value:
        return
    with _lock:
        if value == _file_env_value:
            return
        prices: dict[str, ModelPrice] = {}
        tiers: Tiers = {}
        if value is not None:
            try:
                prices, tiers = _load_user_file(value)
            except Exception as exc:  # a user's bad file must never break the application
                logger.error("llmtrace ignores the prices file named by %s: %s", PRICES_FILE_ENV, exc)
            else:
                logger.debug("loaded %d model prices from %s", len(prices), value)
        _file_prices = prices
        _file_tiers = tiers
        _file_env_value = value
        _changed()


def _key(name: str, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    return name.strip().lower()


def set_price(
    model: str,
    *,
    input: float,
    output: float,
    cache_read: float | None = None,
    cache_write: float | None = None,
    reasoning: float | None = None,
    cache_write_1h: float | None = None,
    service_tier: str | None = None,
) -> None:
    """Set (or override) the price of ``model``, in USD per one million tokens.

    User prices win over the bundled table. ``model`` is matched like bundled names: exactly
    (case-insensitive), then after normalisation (``set_price("gpt-4o", ...)`` also prices
    ``openai/gpt-4o-2024-08-06``). A rate left out (``cache_read``, ``cache_write``,
    ``cache_write_1h``, ``reasoning``) keeps the bundled table's ratio for the same model
    (gpt-4o's cached input stays at half of your input price); for a model the table does not
    know it is the input price (output price for ``reasoning``; ``cache_write`` for
    ``cache_write_1h``). ``service_tier`` (e.g. ``"flex"``, ``"priority"``) sets the price of
    calls served by that tier instead of the standard price. Raises ValueError for an empty name
    or tier or a negative, non-finite or non-numeric price.
    """
    key = _key(model, "model")
    tier: str | None = None
    if service_tier is not None:
        tier = _tier_key(service_tier)
        if tier is None and coerce_service_tier(service_tier) is None:
            raise ValueError(
                f"set_price({model!r}): service_tier must be a non-empty string, got {service_tier!r}"
            )
    try:
        price = ModelPrice(
            input=input,
            output=output,
            cache_read=cache_read,
            cache_write=cache_write,
            reasoning=reasoning,
            cache_write_1h=cache_write_1h,
        )
    except ValueError as exc:
        raise ValueError(f"set_price({model!r}): {exc}") from None
    with _lock:
        if tier is None:
            _code_prices[key] = price
        else:
            _code_tiers.setdefault(tier, {})[key] = price
        _changed()


def map_deployment(deployment: str, model: str) -> None:
    """Price calls reported under an Azure OpenAI ``deployment`` name as ``model``."""
    global _deployments
    key = _key(deployment, "deployment")
    target = _key(model, "model")
    with _lock:
        _deployments = {**_deployments, key: target}
        _changed()


def reset_user_prices() -> None:
    """Drop set_price, map_deployment and prices-file overrides, and clear the caches (for tests).

    A prices file still named by the environment is read again on the next lookup.
    """
    global _file_prices, _file_tiers, _file_env_value, _deployments
    with _lock:
        _code_prices.clear()
        _code_tiers.clear()
        _file_prices = {}
        _file_tiers = {}
        _file_env_value = None
        _deployments = {}
        _logged.clear()
        _changed()


# --------------------------------------------------------------------------------------
# Name normalisation: a small pipeline of candidate names, most specific first
# --------------------------------------------------------------------------------------

# Bedrock model ids: optional cross-region prefix, vendor, model, then ":N" version parts.
_BEDROCK_ID: Final = re.compile(
    r"^(?:(?:us|eu|apac|global|us-gov|jp|au|ca)\.)?"
    r"(?:anthropic|meta|amazon|mistral|cohere|ai21|deepseek|openai|qwen|writer)\."
    r"(?P<model>[^:]+)"
)
# One trailing snapshot/version marker: -2024, -08, -06, -20241022, -0613, @20240620, @001, -v2, -latest.
# Only whole numbers of two or more digits, so "claude-opus-4-5" never falls back to "claude-opus-4".
_VERSION_SUFFIX: Final = re.compile(r"[-@](?:\d{2,8}|v\d+(?:\.\d+)*|latest)$")


def _clean(model: str) -> str:
    """Lowercase, drop any provider path (``openai/``, ``models/``, ARNs) and decode Bedrock ids."""
    name = model.strip().lower().rstrip("/")
    name = name.rpartition("/")[2]
    match = _BEDROCK_ID.match(name)
    return match.group("model") if match else name


def _without_versions(name: str) -> Iterator[str]:
    """``name`` with trailing version markers removed one at a time (longest first)."""
    while True:
        match = _VERSION_SUFFIX.search(name)
        if match is None or match.start() == 0:
            return
        name = name[: match.start()]
        yield name


def _candidates(model: str) -> Iterator[str]:
    """Names to look up, in order: exact, normalised, then known prefixes minus version suffixes."""
    yield model.strip().lower()
    cleaned = _clean(model)
    yield cleaned
    yield from _without_versions(cleaned)


def _find(model: str, table: Mapping[str, ModelPrice]) -> str | None:
    return next((name for name in _candidates(model) if name in table), None)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _normalize(model: str, generation: int) -> str:
    for table in (_user_prices, _BUNDLED):
        found = _find(model, table)
        if found is not None:
            return found
    return _clean(model)


def _priced_names(model: str) -> tuple[list[str], ModelPrice] | None:
    """The standard price of ``model`` and the names tried up to (and including) the one priced."""
    raw = model.strip().lower()
    for name in (raw, raw.rstrip("/").rpartition("/")[2]):
        target = _deployments.get(name)
        if target is not None:
            model = target
            break
    for table in (_user_prices, _BUNDLED):
        names: list[str] = []
        for name in _candidates(model):
            names.append(name)
            if name in table:
                return names, table[name]
    return None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _resolve(model: str, generation: int) -> ModelPrice | None:
    found = _priced_names(model)
    return None if found is None else found[1]


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _resolve_tier(model: str, tier: str, generation: int) -> ModelPrice | None:
    """The ``tier`` price of ``model``: user tier prices first, then bundled ones, under the name
    the model's standard price was found under or a more specific one (so a snapshot with a price
    of its own never takes its base model's tier price)."""
    found = _priced_names(model)
    if found is None:
        return None
    names = found[0]
    for tiers in (_user_tiers, _BUNDLED_TIERS):
        table = tiers.get(tier)
        if table:
            for name in names:
                if name in table:
                    return table[name]
    return None


def normalize_model_name(model: str) -> str:
    """The name ``model`` is priced under, or its cleaned form if it has no price.

    Lowercases, strips provider prefixes (``openai/``, ``models/``, ``bedrock/`` ...), decodes
    Bedrock ids (``us.anthropic.claude-3-5-sonnet-20241022-v2:0``) and removes snapshot suffixes
    (``-2024-08-06``, ``-20241022``, ``-0613``, ``@20240620``, ``-latest``) when the shorter name
    has a price. Never raises; a non-string gives ``""``.
    """
    if not isinstance(model, str):
        return ""
    _sync_prices_file()
    return _normalize(model, _generation)


def lookup_price(model: str | None, service_tier: str | None = None) -> ModelPrice | None:
    """The price of ``model``, or None if it is unknown, None or empty.

    Order: Azure deployment map, user prices (exact, then normalised), bundled table (exact,
    normalised, then the longest known name whose remainder is only version suffixes).
    With a non-standard ``service_tier`` (``"flex"``, ``"priority"`` ...): the model's price on
    that tier, or None when the table has none (the standard tiers in
    :data:`STANDARD_SERVICE_TIERS` give the standard price).
    """
    if not isinstance(model, str) or not model.strip():
        return None
    _sync_prices_file()
    tier = _tier_key(service_tier)
    if tier is None:
        return _resolve(model, _generation)
    return _resolve_tier(model, tier, _generation)


def service_tiers() -> list[str]:
    """The non-standard service tiers that the bundled table or the user's prices price some
    model on (``flex``, ``priority`` ...), sorted."""
    _sync_prices_file()
    return sorted({*_BUNDLED_TIERS, *_user_tiers})


# --------------------------------------------------------------------------------------
# Cost
# --------------------------------------------------------------------------------------


def _as_tokens(value: object, what: str) -> int:
    """A token count, or 0 for None, bools, negatives, NaN and non-numeric values."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 0:
            return value
    elif isinstance(value, (str, SupportsFloat)) and not isinstance(value, bool):
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError, OverflowError):
            number = math.nan
        if math.isfinite(number) and number >= 0:
            return int(number)
    _log_once(logging.WARNING, f"tokens:{what}", "llmtrace counts an invalid %s value %r as 0", what, value)
    return 0


class CostEstimate(NamedTuple):
    """The cost of one call, or why it has none."""

    cost: float | None
    """USD; None when the call cannot be priced."""
    unpriced_reason: str | None = None
    """When ``cost`` is None: ``"unknown_model"`` (no price for the model) or ``"service_tier"``
    (the model has a price, but not for the tier that served the call)."""


def _price_of(model: str | None, service_tier: object) -> tuple[ModelPrice | None, str | None]:
    if not isinstance(model, str) or not model.strip():
        return None, semconv.UNPRICED_UNKNOWN_MODEL
    _sync_prices_file()
    price = _resolve(model, _generation)
    if price is None:
        _log_once(logging.DEBUG, f"model:{model}", "llmtrace has no price for model %r", model)
        return None, semconv.UNPRICED_UNKNOWN_MODEL
    tier = _tier_key(service_tier)
    if tier is None:
        return price, None
    price = _resolve_tier(model, tier, _generation)
    if price is None:
        _log_once(
            logging.DEBUG,
            f"tier:{tier}:{model}",
            "llmtrace has no %r service tier price for model %r; the call is left unpriced",
            tier,
            model,
        )
        return None, semconv.UNPRICED_SERVICE_TIER
    return price, None


def _estimate(
    model: str | None,
    service_tier: object,
    input_tokens: object,
    output_tokens: object,
    cache_read_tokens: object,
    cache_write_tokens: object,
    reasoning_tokens: object,
    cache_write_1h_tokens: object,
) -> CostEstimate:
    price, reason = _price_of(model, service_tier)
    if price is None:
        return CostEstimate(None, reason)
    total_in = _as_tokens(input_tokens, "input_tokens")
    total_out = _as_tokens(output_tokens, "output_tokens")
    cache_read = _as_tokens(cache_read_tokens, "cache_read_tokens")
    write_1h = _as_tokens(cache_write_1h_tokens, "cache_write_1h_tokens")
    cache_write = max(_as_tokens(cache_write_tokens, "cache_write_tokens"), write_1h)  # 1h ones included
    reasoning = _as_tokens(reasoning_tokens, "reasoning_tokens")

    write_rate = price.input if price.cache_write is None else price.cache_write
    uncached = max(total_in - cache_read - cache_write, 0)
    visible_out = max(total_out - reasoning, 0)
    micro_usd = (
        uncached * price.input
        + cache_read * (price.input if price.cache_read is None else price.cache_read)
        + (cache_write - write_1h) * write_rate
        + write_1h * (write_rate if price.cache_write_1h is None else price.cache_write_1h)
        + visible_out * price.output
        + reasoning * (price.output if price.reasoning is None else price.reasoning)
    )
    return CostEstimate(round(micro_usd / _PER_TOKENS, _COST_DIGITS))


def estimate_cost(
    model: str | None,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
    service_tier: str | None = None,
) -> float | None:
    """The cost in USD of one call, or None if the model has no price (or none for the
    non-standard ``service_tier`` that served the call).

    ``input_tokens`` includes the cache-read and cache-write tokens, ``cache_write_tokens``
    includes the one-hour ``cache_write_1h_tokens`` and ``output_tokens`` includes the reasoning
    tokens (OpenTelemetry GenAI convention); each token is priced once, at its own rate.
    Inconsistent counts never give a negative part. Never raises.
    """
    return _estimate(
        model,
        service_tier,
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_write_tokens,
        reasoning_tokens,
        cache_write_1h_tokens,
    ).cost


def estimate_usage_cost(model: str | None, usage: Usage) -> CostEstimate:
    """The cost of a call's :class:`~llmtrace._usage.Usage` (counts not reported count as 0),
    with the reason when it cannot be priced. Never raises."""
    return _estimate(
        model,
        usage.service_tier,
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
        usage.cache_write_1h_tokens,
    )
