"""The metric instruments llmtrace records, with the conventions' advised bucket boundaries."""

from __future__ import annotations

from opentelemetry.metrics import Meter
from opentelemetry.util.types import AttributeValue

from llmtrace import semconv
from llmtrace._usage import UsageRecord

Attrs = dict[str, AttributeValue]


class Instruments:
    """Every instrument, created once per meter."""

    def __init__(self, meter: Meter) -> None:
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
        if record.input_tokens is not None:
            self.token_usage.record(
                record.input_tokens, {**dim_attrs, semconv.GEN_AI_TOKEN_TYPE: semconv.TOKEN_TYPE_INPUT}
            )
        if record.output_tokens is not None:
            self.token_usage.record(
                record.output_tokens, {**dim_attrs, semconv.GEN_AI_TOKEN_TYPE: semconv.TOKEN_TYPE_OUTPUT}
            )
        if record.cost:
            self.cost.add(record.cost, dim_attrs)
