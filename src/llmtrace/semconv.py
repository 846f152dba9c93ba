"""Every attribute, span-name pattern, event and metric name that llmtrace emits.

This is the only module in the repository that spells a ``gen_ai.`` or ``llmtrace.``
name; everything else imports the constants from here (a test enforces it).

Standard names follow the OpenTelemetry GenAI semantic conventions (development status,
``semantic-conventions-genai`` as of 2026-08, including the ``cache_write`` rename of #440).
Extensions are in the ``llmtrace.`` namespace, except the cost attributes, which follow the
open proposal ``gen_ai.usage.cost.*`` (semantic-conventions-genai PR #443). Every extension
is documented in ``docs/attributes.md``.
"""

from __future__ import annotations

from typing import Final

SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.37.0"
INSTRUMENTATION_SCOPE: Final = "llmtrace"

# --------------------------------------------------------------------------------------
# Operation names (values of gen_ai.operation.name)
# --------------------------------------------------------------------------------------
OP_CHAT: Final = "chat"
OP_TEXT_COMPLETION: Final = "text_completion"
OP_GENERATE_CONTENT: Final = "generate_content"
OP_EMBEDDINGS: Final = "embeddings"
OP_RETRIEVAL: Final = "retrieval"
OP_EXECUTE_TOOL: Final = "execute_tool"
OP_INVOKE_AGENT: Final = "invoke_agent"
OP_INVOKE_WORKFLOW: Final = "invoke_workflow"
OP_RERANK: Final = "rerank"

MODEL_OPERATIONS: Final = frozenset({OP_CHAT, OP_TEXT_COMPLETION, OP_GENERATE_CONTENT, OP_EMBEDDINGS})

# --------------------------------------------------------------------------------------
# Standard attributes
# --------------------------------------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_OUTPUT_TYPE: Final = "gen_ai.output.type"
OUTPUT_TYPE_TEXT: Final = "text"
OUTPUT_TYPE_JSON: Final = "json"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"

GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_CHOICE_COUNT: Final = "gen_ai.request.choice.count"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_TOP_K: Final = "gen_ai.request.top_k"
GEN_AI_REQUEST_STOP_SEQUENCES: Final = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_FREQUENCY_PENALTY: Final = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY: Final = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_SEED: Final = "gen_ai.request.seed"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_REQUEST_ENCODING_FORMATS: Final = "gen_ai.request.encoding_formats"
GEN_AI_REQUEST_REASONING_LEVEL: Final = "gen_ai.request.reasoning.level"
GEN_AI_REQUEST_PREVIOUS_RESPONSE_ID: Final = "gen_ai.request.previous_response.id"
GEN_AI_EMBEDDINGS_DIMENSION_COUNT: Final = "gen_ai.embeddings.dimension.count"

GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"

GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai.usage.cache_write.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
TOKEN_TYPE_INPUT: Final = "input"
TOKEN_TYPE_OUTPUT: Final = "output"

GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_AGENT_DESCRIPTION: Final = "gen_ai.agent.description"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"

GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
GEN_AI_TOOL_DESCRIPTION: Final = "gen_ai.tool.description"
GEN_AI_TOOL_TYPE: Final = "gen_ai.tool.type"
GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"
GEN_AI_TOOL_DEFINITIONS: Final = "gen_ai.tool.definitions"
TOOL_TYPE_FUNCTION: Final = "function"

GEN_AI_DATA_SOURCE_ID: Final = "gen_ai.data_source.id"
GEN_AI_RETRIEVAL_QUERY_TEXT: Final = "gen_ai.retrieval.query.text"
GEN_AI_RETRIEVAL_TOP_K: Final = "gen_ai.retrieval.top_k"
GEN_AI_RETRIEVAL_DOCUMENTS: Final = "gen_ai.retrieval.documents"

GEN_AI_SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"

GEN_AI_EVALUATION_NAME: Final = "gen_ai.evaluation.name"
GEN_AI_EVALUATION_SCORE_VALUE: Final = "gen_ai.evaluation.score.value"
GEN_AI_EVALUATION_SCORE_LABEL: Final = "gen_ai.evaluation.score.label"
GEN_AI_EVALUATION_EXPLANATION: Final = "gen_ai.evaluation.explanation"

ERROR_TYPE: Final = "error.type"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
SERVICE_NAME: Final = "service.name"

# OpenAI refinement of the inference span (and of gen_ai.client.token.usage)
OPENAI_REQUEST_SERVICE_TIER: Final = "openai.request.service_tier"
OPENAI_RESPONSE_SERVICE_TIER: Final = "openai.response.service_tier"

# --------------------------------------------------------------------------------------
# Extensions: cost (open proposal semantic-conventions-genai #443)
# --------------------------------------------------------------------------------------
GEN_AI_USAGE_COST_AMOUNT: Final = "gen_ai.usage.cost.amount"
GEN_AI_USAGE_COST_CURRENCY: Final = "gen_ai.usage.cost.currency"
GEN_AI_USAGE_COST_SOURCE: Final = "gen_ai.usage.cost.source"
COST_CURRENCY_USD: Final = "USD"
COST_SOURCE_LOCAL: Final = "local"

# --------------------------------------------------------------------------------------
# Extensions: llmtrace namespace
# --------------------------------------------------------------------------------------
LLMTRACE_COST_UNPRICED: Final = "llmtrace.cost.unpriced"
"""True on a model-call span whose model has no price; no cost attributes then."""
LLMTRACE_COST_UNPRICED_REASON: Final = "llmtrace.cost.unpriced_reason"
"""Why a call is unpriced: ``UNPRICED_UNKNOWN_MODEL`` or ``UNPRICED_SERVICE_TIER``."""
UNPRICED_UNKNOWN_MODEL: Final = "unknown_model"
"""The price table has no price for the call's model."""
UNPRICED_SERVICE_TIER: Final = "service_tier"
"""The model has a price, but not for the service tier that served the call (e.g. ``scale``)."""
LLMTRACE_USAGE_CACHE_WRITE_1H_INPUT_TOKENS: Final = "llmtrace.usage.cache_write_1h.input_tokens"
"""Of ``gen_ai.usage.cache_write.input_tokens``, those written with a one-hour cache lifetime
(Anthropic ``cache_creation.ephemeral_1h_input_tokens``), billed at a higher rate."""
LLMTRACE_RESPONSE_SERVICE_TIER: Final = "llmtrace.response.service_tier"
"""The service tier that served the call, for providers other than OpenAI (Anthropic
``usage.service_tier``); OpenAI calls use ``openai.response.service_tier``."""
LLMTRACE_CACHE_HIT: Final = "llmtrace.cache.hit"
"""A framework response cache was consulted: True if it answered the call."""
LLMTRACE_CACHE_SOURCE: Final = "llmtrace.cache.source"
"""The cache consulted, e.g. the cache class name."""
LLMTRACE_RETRIEVAL_DOCUMENT_COUNT: Final = "llmtrace.retrieval.document_count"
LLMTRACE_EVICTED: Final = "llmtrace.evicted"
"""Why the bounded run map had to end this span (``ttl`` or ``capacity``)."""
LLMTRACE_USAGE_REPORTED: Final = "llmtrace.usage.reported"
"""False on a model-call span whose response reported no token usage (never guessed)."""
LLMTRACE_FRAMEWORK: Final = "llmtrace.framework"
LLMTRACE_CONTENT_TRUNCATED: Final = "llmtrace.content.truncated"
"""Names of the content attributes on this span that were truncated to the size limit."""
LLMTRACE_RERANK_TOP_N: Final = "llmtrace.rerank.top_n"
LLMTRACE_EMBEDDINGS_INPUT_COUNT: Final = "llmtrace.embeddings.input_count"

LLMTRACE_DIMENSION_PREFIX: Final = "llmtrace.dimension."
"""Prefix of user-supplied low-cardinality dimensions on model-call spans (``llmtrace.dimensions``)."""
LLMTRACE_STREAM_CHUNKS: Final = "llmtrace.stream.chunks"
"""Number of chunks a streamed model call delivered."""

ERROR_TYPE_EVICTED: Final = "evicted"
ERROR_TYPE_TOOL_ERROR: Final = "tool_error"
"""``error.type`` of a tool that caught its own error and reported it as its result."""
EVICTED_TTL: Final = "ttl"
EVICTED_CAPACITY: Final = "capacity"
EVICTED_SHUTDOWN: Final = "shutdown"
EVICTED_REPLACED: Final = "replaced"
"""A new run arrived with the id of a run still open; the old one was ended."""

# Agent step event
LLMTRACE_AGENT_STEP_EVENT: Final = "llmtrace.agent.step"
LLMTRACE_AGENT_STEP_INDEX: Final = "llmtrace.agent.step.index"
LLMTRACE_AGENT_STEP_KIND: Final = "llmtrace.agent.step.kind"
STEP_THOUGHT: Final = "thought"
STEP_ACTION: Final = "action"
STEP_OBSERVATION: Final = "observation"
STEP_FINAL: Final = "final"
AGENT_STEP_KINDS: Final = frozenset({STEP_THOUGHT, STEP_ACTION, STEP_OBSERVATION, STEP_FINAL})

# Retry event
LLMTRACE_RETRY_EVENT: Final = "llmtrace.retry"
LLMTRACE_RETRY_ATTEMPT: Final = "llmtrace.retry.attempt"
"""The attempt number (2 or more) of a call retried by the framework: on the ``llmtrace.retry``
event, and on the span of a model call that is itself a retry (LangChain ``with_retry``)."""

# Rate limiting
LLMTRACE_RATE_LIMIT_WAIT: Final = "llmtrace.rate_limit.wait"
"""Seconds a model call waited for the framework's client-side rate limiter (LangChain
``rate_limiter=``) before its request was sent; not part of its time to first chunk."""

# --------------------------------------------------------------------------------------
# Events (log records with an event name)
# --------------------------------------------------------------------------------------
EVENT_EVALUATION_RESULT: Final = "gen_ai.evaluation.result"
EVENT_INFERENCE_DETAILS: Final = "gen_ai.client.inference.operation.details"
EVENT_EXCEPTION: Final = "exception"
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"

# --------------------------------------------------------------------------------------
# Metrics, with the advised bucket boundaries
# --------------------------------------------------------------------------------------
METRIC_CLIENT_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_CLIENT_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_CLIENT_TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
METRIC_EXECUTE_TOOL_DURATION: Final = "gen_ai.execute_tool.duration"
METRIC_INVOKE_AGENT_DURATION: Final = "gen_ai.invoke_agent.duration"
METRIC_INVOKE_AGENT_INFERENCE_CALLS: Final = "gen_ai.invoke_agent.inference_calls"
METRIC_INVOKE_AGENT_TOOL_CALLS: Final = "gen_ai.invoke_agent.tool_calls"
METRIC_WORKFLOW_DURATION: Final = "gen_ai.workflow.duration"
METRIC_USAGE_COST: Final = "llmtrace.usage.cost"
METRIC_CACHE_LOOKUPS: Final = "llmtrace.cache.lookups"
METRIC_SPANS_DROPPED: Final = "llmtrace.export.spans_dropped"

TOKEN_BUCKETS: Final = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
DURATION_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
AGENT_DURATION_BUCKETS: Final = (
    0.1,
    0.2,
    0.4,
    0.8,
    1.6,
    3.2,
    6.4,
    12.8,
    25.6,
    51.2,
    102.4,
    204.8,
    409.6,
)
WORKFLOW_DURATION_BUCKETS: Final = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
CALL_COUNT_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128)

# --------------------------------------------------------------------------------------
# Provider names (values of gen_ai.provider.name)
# --------------------------------------------------------------------------------------
PROVIDER_OPENAI: Final = "openai"
PROVIDER_ANTHROPIC: Final = "anthropic"
PROVIDER_AZURE_OPENAI: Final = "azure.ai.openai"
PROVIDER_AZURE_INFERENCE: Final = "azure.ai.inference"
PROVIDER_AWS_BEDROCK: Final = "aws.bedrock"
PROVIDER_GCP_GEMINI: Final = "gcp.gemini"
PROVIDER_GCP_VERTEX_AI: Final = "gcp.vertex_ai"
PROVIDER_GCP_GEN_AI: Final = "gcp.gen_ai"
PROVIDER_COHERE: Final = "cohere"
PROVIDER_MISTRAL: Final = "mistral_ai"
PROVIDER_DEEPSEEK: Final = "deepseek"
PROVIDER_XAI: Final = "x_ai"
PROVIDER_GROQ: Final = "groq"
PROVIDER_PERPLEXITY: Final = "perplexity"
PROVIDER_IBM_WATSONX: Final = "ibm.watsonx.ai"
PROVIDER_MOONSHOT: Final = "moonshot_ai"

# --------------------------------------------------------------------------------------
# Span names
# --------------------------------------------------------------------------------------


def span_name(operation: str, target: str | None) -> str:
    """The standard span name ``"{operation} {target}"``, or ``operation`` alone without a target."""
    return f"{operation} {target}" if target else operation


# --------------------------------------------------------------------------------------
# Names of llmtrace's own plumbing (logger, entry points)
# --------------------------------------------------------------------------------------
USAGE_LOGGER: Final = "llmtrace.usage"
INSTRUMENTORS_ENTRY_POINT_GROUP: Final = "llmtrace.instrumentors"

# --------------------------------------------------------------------------------------
# Store writer (llmtrace.store): its own metrics, as observable instruments
# --------------------------------------------------------------------------------------
METRIC_STORE_ITEMS: Final = "llmtrace.store.items"
"""Items (spans and usage records) the store writer handled, by ``llmtrace.store.outcome``."""
METRIC_STORE_WRITE_FAILURES: Final = "llmtrace.store.write_failures"
"""Failed write attempts of the store writer, by ``error.type`` (connection, timeout, ...)."""
METRIC_STORE_QUEUE_DEPTH: Final = "llmtrace.store.queue.depth"
"""Items waiting in (or being written from) the store writer's queue."""
METRIC_STORE_QUEUE_HIGH_WATER: Final = "llmtrace.store.queue.high_water"
"""The largest queue depth seen since the writer started."""
LLMTRACE_STORE_OUTCOME: Final = "llmtrace.store.outcome"
"""``accepted``, ``written``, ``dropped_queue_full``, ``dropped_write_failed`` or ``dropped_shutdown``."""
