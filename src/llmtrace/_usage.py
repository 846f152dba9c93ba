"""Usage records: one per model call, fed to the metrics and to every registered usage sink."""

from __future__ import annotations

import contextlib
import contextvars
import enum
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol

from llmtrace import _fork, semconv

logger = logging.getLogger(__name__)

Status = Literal["success", "error", "cancelled"]

MAX_DIMENSIONS = 8
MAX_DIMENSION_LENGTH = 64
MAX_TOKEN_COUNT = 1 << 40
"""Counts above this are treated as malformed (no real call uses a trillion tokens)."""
MAX_SERVICE_TIER_LENGTH = 32
_OPENAI_PROVIDERS = frozenset({semconv.PROVIDER_OPENAI, semconv.PROVIDER_AZURE_OPENAI})


def coerce_tokens(value: object) -> int | None:
    """A token count as a non-negative int, or None when the value is missing or malformed.

    Accepts ints, integral floats and numeric strings; rejects bools, negatives, NaN and
    absurdly large values, so a broken usage payload is recorded as "not reported" rather
    than as a wrong number.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(float(value.strip()))
        except ValueError:
            return None
    else:
        return None
    if number < 0 or number > MAX_TOKEN_COUNT:
        return None
    return number


def coerce_service_tier(value: object) -> str | None:
    """A provider's service tier (``"default"``, ``"flex"``, ``"priority"``, ``"standard"`` ...)
    lowercased and cut to 32 characters, or None when missing, empty or not a string."""
    if isinstance(value, enum.Enum):
        value = value.value
    if not isinstance(value, str):
        return None
    tier = value.strip().lower()[:MAX_SERVICE_TIER_LENGTH]
    return tier or None


def cache_writes(total: object, five_minute: object, one_hour: object) -> tuple[object, object]:
    """(cache-write tokens, of which one-hour) from a reported total and Anthropic's writes by cache
    lifetime (``ephemeral_5m_input_tokens``, ``ephemeral_1h_input_tokens``): when the split is
    reported, the writes are at least its sum (langchain-anthropic then reports the total as 0).
    Counts are raw (coerced later); a missing split keeps the total as it is."""
    if five_minute is None and one_hour is None:
        return total, None
    split = sum(n for n in (five_minute, one_hour) if isinstance(n, int) and not isinstance(n, bool))
    if not isinstance(total, int) or isinstance(total, bool) or split > total:
        total = split
    return total, one_hour


def service_tier_attribute(provider: str | None) -> str:
    """The span attribute that carries a call's service tier: the conventions'
    ``openai.response.service_tier`` for OpenAI and Azure OpenAI, ``llmtrace.response.service_tier``
    for every other provider (the conventions define no tier attribute for them)."""
    if provider in _OPENAI_PROVIDERS:
        return semconv.OPENAI_RESPONSE_SERVICE_TIER
    return semconv.LLMTRACE_RESPONSE_SERVICE_TIER


@dataclass(slots=True)
class Usage:
    """Token counts of one model call, in the GenAI conventions' sense.

    ``input_tokens`` includes cache-read and cache-write tokens; ``output_tokens`` includes
    reasoning tokens; ``cache_write_1h_tokens`` is the part of ``cache_write_tokens`` written
    with a one-hour lifetime (Anthropic), the rest being five-minute writes. Fields are None
    where the response did not report them. ``service_tier`` is the tier that served the call
    as the provider reports it (``"default"``, ``"flex"``, ``"priority"``, ``"standard"`` ...);
    None when unknown, which is priced as the standard tier.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    service_tier: str | None = None

    @classmethod
    def of(
        cls,
        input_tokens: object = None,
        output_tokens: object = None,
        cache_read_tokens: object = None,
        cache_write_tokens: object = None,
        reasoning_tokens: object = None,
        cache_write_1h_tokens: object = None,
        service_tier: object = None,
    ) -> Usage:
        """Build from raw values of any type; malformed counts (and tiers) become None."""
        return cls(
            coerce_tokens(input_tokens),
            coerce_tokens(output_tokens),
            coerce_tokens(cache_read_tokens),
            coerce_tokens(cache_write_tokens),
            coerce_tokens(reasoning_tokens),
            coerce_tokens(cache_write_1h_tokens),
            coerce_service_tier(service_tier),
        )

    @property
    def reported(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None


@dataclass(slots=True)
class UsageRecord:
    """One model call's usage, cost and outcome. Carries no prompt or completion content."""

    operation: str
    provider: str
    request_model: str | None
    response_model: str | None
    framework: str | None
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    cost: float | None
    """USD; None where the model has no price or the call reported no usage."""
    duration_s: float
    time_to_first_chunk_s: float | None
    streamed: bool
    status: Status
    error_type: str | None
    cache_hit: bool | None
    trace_id: str
    span_id: str
    start_time_unix_nano: int
    dimensions: dict[str, str] = field(default_factory=dict)
    service: str | None = None
    """``service.name`` of the pipeline that recorded the call, set by the store's usage sink (so the
    store knows it even when the call's span was not sampled or was dropped); None elsewhere."""
    cache_write_1h_tokens: int | None = None
    """Of ``cache_write_tokens``, those written with a one-hour lifetime (Anthropic)."""
    service_tier: str | None = None
    """The provider's service tier that served the call (``default``, ``flex``, ``priority`` ...)."""
    unpriced_reason: str | None = None
    """Why ``cost`` is None although usage was reported: ``unknown_model`` or ``service_tier``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UsageSink(Protocol):
    """Receives every usage record. Must return quickly and never block on I/O."""

    def __call__(self, record: UsageRecord) -> None: ...


class _SinkRegistry:
    """Registered sinks, read lock-free on the hot path (copy-on-write tuple)."""

    def __init__(self) -> None:
        self._sinks: tuple[UsageSink, ...] = ()
        self._lock = _fork.lock()
        self._failed: set[int] = set()

    def add(self, sink: UsageSink) -> None:
        with self._lock:
            if sink not in self._sinks:
                self._sinks = (*self._sinks, sink)

    def remove(self, sink: UsageSink) -> None:
        with self._lock:
            self._sinks = tuple(s for s in self._sinks if s != sink)  # == : bound methods are new objects

    def emit(self, record: UsageRecord) -> None:
        for sink in self._sinks:
            try:
                sink(record)
            except Exception:
                if id(sink) not in self._failed:  # log once per sink, not per call
                    self._failed.add(id(sink))
                    logger.exception("llmtrace usage sink %r failed; further failures are not logged", sink)


usage_sinks = _SinkRegistry()


def add_usage_sink(sink: UsageSink) -> None:
    """Register a callable that receives every :class:`UsageRecord`."""
    usage_sinks.add(sink)


def remove_usage_sink(sink: UsageSink) -> None:
    usage_sinks.remove(sink)


class LogUsageSink:
    """Writes one JSON line per model call to the ``llmtrace.usage`` logger (no content)."""

    def __init__(self, logger_name: str = semconv.USAGE_LOGGER, level: int = logging.INFO) -> None:
        self._logger = logging.getLogger(logger_name)
        self._level = level

    def __call__(self, record: UsageRecord) -> None:
        if self._logger.isEnabledFor(self._level):
            self._logger.log(self._level, json.dumps(record.to_dict(), separators=(",", ":")))


# --------------------------------------------------------------------------------------
# User-supplied low-cardinality dimensions (a user tier, a feature name, ...)
# --------------------------------------------------------------------------------------
_NO_DIMENSIONS: Mapping[str, str] = MappingProxyType({})
_dimensions: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "llmtrace_dimensions", default=_NO_DIMENSIONS
)


def current_dimensions() -> Mapping[str, str]:
    return _dimensions.get()


@contextlib.contextmanager
def dimensions(**values: object) -> Iterator[None]:
    """Attach low-cardinality dimensions to every model call made inside the block.

    They appear on usage records, on model-call spans as ``llmtrace.dimension.<key>`` and
    on the cost and token metrics. At most 8 keys; values are cut to 64 characters.
    """
    merged = dict(_dimensions.get())
    for key, value in values.items():
        if len(merged) >= MAX_DIMENSIONS and key not in merged:
            logger.warning("llmtrace: more than %d usage dimensions, %r ignored", MAX_DIMENSIONS, key)
            continue
        merged[str(key)[:MAX_DIMENSION_LENGTH]] = str(value)[:MAX_DIMENSION_LENGTH]
    token = _dimensions.set(merged)
    try:
        yield
    finally:
        _dimensions.reset(token)


UsageCallback = Callable[[UsageRecord], None]
