"""The metric instruments llmtrace records, with the conventions' advised bucket boundaries."""

from __future__ import annotations

import logging
import weakref

from opentelemetry.metrics import Meter
from opentelemetry.util.types import AttributeValue

from llmtrace import _fork, semconv
from llmtrace._parts import OTHER
from llmtrace._usage import UsageRecord, service_tier_attribute

Attrs = dict[str, AttributeValue]
logger = logging.getLogger("llmtrace")

MAX_METRIC_NAMES = 200
"""Distinct values a name attribute (``gen_ai.tool.name``, ``gen_ai.agent.name``,
``gen_ai.workflow.name``; also ``openai.response.service_tier``, a value the provider's response
gives) takes on the metrics of one meter provider; each value after these is ``_OTHER``. Names
come from the application (a LangChain ``run_name`` becomes a workflow's or agent's name, and
some applications make one per request): spans keep them, metrics must stay bounded."""


class _Names:
    """The name values recorded so far on one meter's metrics, by attribute key."""

    def __init__(self) -> None:
        self.seen: dict[str, set[str]] = {}
        self.full: set[str] = set()
        """Keys whose cap was reached (and said so in the log)."""
        self.lock = _fork.lock()


_names_by_meter: weakref.WeakKeyDictionary[Meter, _Names] = weakref.WeakKeyDictionary()
_names_lock = _fork.lock()


def _names_of(meter: Meter) -> _Names:
    """The name values of ``meter``'s metrics, shared by every handler on it (the SDK gives all of
    them the same meter): an application that makes a callback handler per request is bounded too."""
    with _names_lock:
        try:
            names = _names_by_meter.get(meter)
            if names is None:
                names = _names_by_meter[meter] = _Names()
        except TypeError:  # a meter that cannot be weakly referenced: its own values
            names = _Names()
    return names


class Instruments:
    """Every instrument, created once per meter."""

    def __init__(self, meter: Meter) -> None:
        self._names = _names_of(meter)
        self.token_usage = meter.create_histogram(
            semconv.METRIC_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used per model call",
            explicit_bucket_boundaries_advisory=semconv.TOKEN_BUCKETS,
        )
        self.operation_duration = meter.create_histogram(
            semconv.METRIC_CLIENT_OPERATION_DURATION,
            unit="s",
            description="Duration of GenAI client operations",
            explicit_bucket_boundaries_advisory=semconv.DURATION_BUCKETS,
        )
        self.time_to_first_chunk = meter.create_histogram(
            semconv.METRIC_CLIENT_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time from request to the first chunk of a streamed response",
            explicit_bucket_boundaries_advisory=semconv.DURATION_BUCKETS,
        )
        self.tool_duration = meter.create_histogram(
            semconv.METRIC_EXECUTE_TOOL_DURATION,
            unit="s",
            description="Duration of tool executions",
            explicit_bucket_boundaries_advisory=semconv.DURATION_BUCKETS,
        )
        self.agent_duration = meter.create_histogram(
            semconv.METRIC_INVOKE_AGENT_DURATION,
            unit="s",
            description="Duration of in-process agent invocations",
            explicit_bucket_boundaries_advisory=semconv.AGENT_DURATION_BUCKETS,
        )
        self.agent_inference_calls = meter.create_histogram(
            semconv.METRIC_INVOKE_AGENT_INFERENCE_CALLS,
            unit="{inference_call}",
            description="Model calls made by one agent invocation",
            explicit_bucket_boundaries_advisory=semconv.CALL_COUNT_BUCKETS,
        )
        self.agent_tool_calls = meter.create_histogram(
            semconv.METRIC_INVOKE_AGENT_TOOL_CALLS,
            unit="{tool_call}",
            description="Client-side tool calls made by one agent invocation",
            explicit_bucket_boundaries_advisory=semconv.CALL_COUNT_BUCKETS,
        )
        self.workflow_duration = meter.create_histogram(
            semconv.METRIC_WORKFLOW_DURATION,
            unit="s",
            description="Duration of workflow invocations",
            explicit_bucket_boundaries_advisory=semconv.WORKFLOW_DURATION_BUCKETS,
        )
        self.cost = meter.create_counter(
            semconv.METRIC_USAGE_COST,
            unit=semconv.COST_CURRENCY_USD,
            description="Estimated cost of model calls, from llmtrace's price table",
        )
        self.cache_lookups = meter.create_counter(
            semconv.METRIC_CACHE_LOOKUPS,
            unit="{lookup}",
            description="Framework response-cache lookups by model calls, by hit or miss",
        )

    def name(self, key: str, value: str) -> str:
        """``value`` as the metric attribute ``key`` (a name): itself while ``key`` has taken fewer
        than :data:`MAX_METRIC_NAMES` distinct values, ``_OTHER`` for every new value after that
        (said once per key in the log)."""
        names = self._names
        seen = names.seen.get(key)
        if seen is not None and value in seen:
            return value
        with names.lock:
            seen = names.seen.setdefault(key, set())
            if value in seen:
                return value
            if len(seen) < MAX_METRIC_NAMES:
                seen.add(value)
                return value
            first = key not in names.full
            names.full.add(key)
        if first:
            logger.warning(
                "llmtrace: more than %d distinct %s values; metrics record each new one as %s "
                "(spans keep it). Names made per request (a run_name with a user id) belong in "
                "metadata, not in names.",
                MAX_METRIC_NAMES,
                key,
                OTHER,
            )
        return OTHER

    def record_usage(self, record: UsageRecord) -> None:
        """Metrics of one model call, all from its usage record (the one usage path)."""
        attrs: Attrs = {semconv.GEN_AI_OPERATION_NAME: record.operation}
        attrs[semconv.GEN_AI_PROVIDER_NAME] = record.provider
        if record.request_model:
            attrs[semconv.GEN_AI_REQUEST_MODEL] = record.request_model
        if record.response_model:
            attrs[semconv.GEN_AI_RESPONSE_MODEL] = record.response_model

        duration_attrs = attrs
        if record.error_type:
            duration_attrs = {**attrs, semconv.ERROR_TYPE: record.error_type}
        self.operation_duration.record(record.duration_s, duration_attrs)
        if record.time_to_first_chunk_s is not None:
            self.time_to_first_chunk.record(record.time_to_first_chunk_s, attrs)

        if record.cache_hit is not None:
            self.cache_lookups.add(1, {**attrs, semconv.LLMTRACE_CACHE_HIT: record.cache_hit})
        if record.cache_hit:
            return  # answered from a response cache: nothing was billed

        dim_attrs = attrs
        if record.dimensions:
            dim_attrs = dict(attrs)
            for key, value in record.dimensions.items():
                dim_attrs[semconv.LLMTRACE_DIMENSION_PREFIX + key] = value
        token_attrs = dim_attrs
        tier = record.service_tier
        if tier is not None:
            key = service_tier_attribute(record.provider)
            if key == semconv.OPENAI_RESPONSE_SERVICE_TIER:  # the conventions' OpenAI token.usage attribute
                token_attrs = {**dim_attrs, key: self.name(key, tier)}
        if record.input_tokens is not None:
            self.token_usage.record(
                record.input_tokens, {**token_attrs, semconv.GEN_AI_TOKEN_TYPE: semconv.TOKEN_TYPE_INPUT}
            )
        if record.output_tokens is not None:
            self.token_usage.record(
                record.output_tokens, {**token_attrs, semconv.GEN_AI_TOKEN_TYPE: semconv.TOKEN_TYPE_OUTPUT}
            )
        if record.cost:
            self.cost.add(record.cost, dim_attrs)
