"""Pure functions that read LangChain objects: provider names, parameters, usage, messages, documents.

Nothing here touches OpenTelemetry or keeps state; every function tolerates shapes it does not
know (missing keys, other types) by returning None rather than raising.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from llmtrace import _parts, semconv
from llmtrace._content import MAX_ITEMS, to_jsonable
from llmtrace._formats import output_type
from llmtrace._invocation import MAX_NAME_LENGTH, ModelInvocation
from llmtrace._objects import attribute, host_port, url_host_port
from llmtrace._usage import cache_writes

LC_ID_PREFIX = "lc_run-"
"""Ids LangChain makes up for messages (``lc_run--{run_id}-{i}``): not provider response ids."""

_PROVIDERS: dict[str, str] = {
    "openai": semconv.PROVIDER_OPENAI,
    "anthropic": semconv.PROVIDER_ANTHROPIC,
    "azure": semconv.PROVIDER_AZURE_OPENAI,
    "azure_openai": semconv.PROVIDER_AZURE_OPENAI,
    "azureopenai": semconv.PROVIDER_AZURE_OPENAI,
    "azure_ai": semconv.PROVIDER_AZURE_INFERENCE,
    "azure_inference": semconv.PROVIDER_AZURE_INFERENCE,
    "bedrock": semconv.PROVIDER_AWS_BEDROCK,
    "amazon_bedrock": semconv.PROVIDER_AWS_BEDROCK,
    "aws_bedrock": semconv.PROVIDER_AWS_BEDROCK,
    "bedrock_converse": semconv.PROVIDER_AWS_BEDROCK,
    "google_genai": semconv.PROVIDER_GCP_GEN_AI,
    "google_gemini": semconv.PROVIDER_GCP_GEMINI,
    "google_vertexai": semconv.PROVIDER_GCP_VERTEX_AI,
    "vertexai": semconv.PROVIDER_GCP_VERTEX_AI,
    "cohere": semconv.PROVIDER_COHERE,
    "mistral": semconv.PROVIDER_MISTRAL,
    "mistralai": semconv.PROVIDER_MISTRAL,
    "deepseek": semconv.PROVIDER_DEEPSEEK,
    "xai": semconv.PROVIDER_XAI,
    "groq": semconv.PROVIDER_GROQ,
    "perplexity": semconv.PROVIDER_PERPLEXITY,
    "ibm": semconv.PROVIDER_IBM_WATSONX,
    "watsonx": semconv.PROVIDER_IBM_WATSONX,
    "moonshot": semconv.PROVIDER_MOONSHOT,
}

UNKNOWN_PROVIDER = "langchain"
"""Provider name when LangChain reports none (a model class without ``ls_provider``)."""


def provider_name(metadata: Mapping[str, Any], serialized: Mapping[str, Any] | None) -> str:
    """The conventions' provider name for LangChain's ``ls_provider`` (unknown values pass through)."""
    raw = metadata.get("ls_provider")
    if isinstance(raw, str) and raw:
        key = raw.lower()
        return _PROVIDERS.get(key, key)
    if serialized:
        ident = serialized.get("id")
        if isinstance(ident, list) and len(ident) > 2 and isinstance(ident[2], str):
            # ["langchain", "chat_models", "openai", "ChatOpenAI"] -> openai
            return _PROVIDERS.get(ident[2], UNKNOWN_PROVIDER)
    return UNKNOWN_PROVIDER


_EMBEDDINGS_SUFFIXES = ("embeddings", "embedding")


def _package_provider(module: str) -> str | None:
    """The known provider a ``langchain_<provider>`` (or ``langchain_community.<kind>.<provider>``) names."""
    parts = module.split(".")
    if not parts[0].startswith("langchain_"):
        return None
    key = parts[0][len("langchain_") :]
    if key == "community" and len(parts) > 2:
        key = parts[2]  # as a serialized id's third part: ["langchain", "embeddings", "openai", ...]
    return _PROVIDERS.get(key)


def class_provider(classes: Sequence[type]) -> str:
    """The provider of a model LangChain reports no ``ls_provider`` for (embedding models fire no callbacks).

    ``classes``: the model's class and its bases of the same kind, most derived first. The first whose
    name without its kind suffix (``OpenAIEmbeddings`` -> ``openai``) or whose ``langchain_<provider>``
    package is a known provider gives it (a user's subclass of ``OpenAIEmbeddings`` is ``openai``);
    otherwise the model's own class name, lower-cased without the suffix, as LangChain itself names the
    provider of a chat model that declares none.
    """
    own: str | None = None
    for cls in classes:
        name = cls.__name__.lower()
        for suffix in _EMBEDDINGS_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        if own is None and name:
            own = name
        known = _PROVIDERS.get(name) or _package_provider(cls.__module__)
        if known is not None:
            return known
    return own or UNKNOWN_PROVIDER


def embeddings_model(model: Any) -> str | None:
    """The model an embedding model is configured with (``model``, ``model_name``, ``deployment``, ...)."""
    for name in ("model", "model_name", "model_id", "deployment", "deployment_name"):
        value = attribute(model, name)
        if isinstance(value, str) and value:
            return value
    return None


_URL_FIELDS = ("openai_api_base", "base_url", "api_base", "anthropic_api_url", "azure_endpoint", "endpoint")
"""Fields holding the API base URL a model or embeddings client calls."""


def server_address(model: Any) -> tuple[str | None, int | None]:
    """Host and port of the API base URL a model is configured with, if any (None: the SDK's default)."""
    return url_host_port(model, _URL_FIELDS)


def serialized_server_address(serialized: Mapping[str, Any] | None) -> tuple[str | None, int | None]:
    """The same, from the constructor arguments LangChain hands to ``on_chat_model_start`` /
    ``on_llm_start`` (``serialized["kwargs"]``: the base URL when one was given, never the key)."""
    kwargs = serialized.get("kwargs") if serialized else None
    if not isinstance(kwargs, Mapping):
        return None, None
    for name in _URL_FIELDS:
        url = kwargs.get(name)
        if isinstance(url, str) and "://" in url:
            return host_port(url)
    return None, None


def request_model(metadata: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    for value in (
        metadata.get("ls_model_name"),
        params.get("model"),
        params.get("model_name"),
        params.get("model_id"),
        params.get("deployment_name"),
    ):
        if isinstance(value, str) and value:
            return value
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _first(*values: object) -> object:
    for value in values:
        if value is not None:
            return value
    return None


_PARAM_NAMES = frozenset(
    {
        "temperature", "max_tokens", "max_output_tokens", "top_p", "top_k", "frequency_penalty",
        "presence_penalty", "seed", "n", "stop", "stop_sequences", "reasoning_effort", "reasoning",
        "effort", "output_config", "response_format", "format", "response_mime_type", "text",
        "previous_response_id",
    }
)  # fmt: skip
_METADATA_PARAMS = ("ls_temperature", "ls_max_tokens", "ls_stop")


def apply_request_params(
    invocation: ModelInvocation, metadata: Mapping[str, Any], params: Mapping[str, Any]
) -> None:
    """Copy request parameters from ``ls_*`` metadata and invocation params onto the invocation.

    Only the parameters named in ``_PARAM_NAMES`` are read (one pass over the call's params)."""
    try:
        given = {
            name: value for name in _PARAM_NAMES.intersection(params) if (value := params[name]) is not None
        }
    except Exception:  # an odd mapping: nothing read from it
        given = {}
    if not given and not any(name in metadata for name in _METADATA_PARAMS):
        return  # most calls: nothing to copy (``stop=None`` at most); the fields default to None
    get = given.get
    invocation.temperature = _number(_first(metadata.get("ls_temperature"), get("temperature")))
    invocation.max_tokens = _int(
        _first(metadata.get("ls_max_tokens"), get("max_tokens"), get("max_output_tokens"))
    )
    invocation.top_p = _number(get("top_p"))
    invocation.top_k = _int(get("top_k"))
    invocation.frequency_penalty = _number(get("frequency_penalty"))
    invocation.presence_penalty = _number(get("presence_penalty"))
    invocation.seed = _int(get("seed"))
    invocation.choice_count = _int(get("n"))
    stop = _first(metadata.get("ls_stop"), get("stop"), get("stop_sequences"))
    if isinstance(stop, str):
        invocation.stop_sequences = [stop]
    elif isinstance(stop, (list, tuple)) and stop:
        invocation.stop_sequences = [str(s) for s in stop]
    # a call's effort first: Anthropic's ``effort`` / ``reasoning_effort`` override the model's
    # ``output_config.effort`` (where langchain-anthropic puts ``ChatAnthropic(effort=...)``)
    effort = _first(
        get("effort"),
        get("reasoning_effort"),
        _nested(get("reasoning"), "effort"),  # OpenAI Responses
        _nested(get("output_config"), "effort"),  # Anthropic
    )
    if isinstance(effort, str) and effort:
        invocation.reasoning_level = effort[:MAX_NAME_LENGTH]
    # the Responses API's own ``text={"format": {...}}`` is its ``response_format``
    response_format = _first(get("response_format"), _nested(get("text"), "format"))
    invocation.output_type = output_type(response_format, get("format"), get("response_mime_type"))
    previous = get("previous_response_id")
    if isinstance(previous, str) and previous:
        invocation.previous_response_id = previous[:MAX_NAME_LENGTH]


def _nested(value: object, key: str) -> object:
    return value.get(key) if isinstance(value, Mapping) else None


_RESPONSES_ID_PREFIX = "resp_"
_AI_TYPES = frozenset({"ai", "AIMessageChunk"})


def chained_response_id(
    serialized: Mapping[str, Any] | None, messages: Sequence[Sequence[Any]]
) -> str | None:
    """The ``previous_response_id`` langchain-openai sends for ``ChatOpenAI(use_previous_response_id=True)``
    (a constructor argument: in ``serialized["kwargs"]``, not in the invocation params): the response
    id of the newest AI message that has one (``resp_...``), None if none has."""
    kwargs = serialized.get("kwargs") if serialized else None
    if not isinstance(kwargs, Mapping) or kwargs.get("use_previous_response_id") is not True:
        return None
    history = messages[0] if messages else ()
    if not isinstance(history, Sequence):
        return None
    for message in reversed(history):
        if getattr(message, "type", None) not in _AI_TYPES:
            continue
        meta = getattr(message, "response_metadata", None)
        response_id = meta.get("id") if isinstance(meta, Mapping) else None
        if isinstance(response_id, str) and response_id.startswith(_RESPONSES_ID_PREFIX):
            return response_id[:MAX_NAME_LENGTH]
    return None


_JSON_METHODS = frozenset({"json_schema", "json_mode"})


def structured_output_type(options: object) -> str | None:
    """``json`` if the call is ``with_structured_output`` asking the provider for JSON (its
    ``json_schema`` / ``json_mode`` methods; ``function_calling`` asks for a tool call, not a format)."""
    if not isinstance(options, Mapping):
        return None
    structured = options.get("ls_structured_output_format")
    kwargs = structured.get("kwargs") if isinstance(structured, Mapping) else None
    method = kwargs.get("method") if isinstance(kwargs, Mapping) else None
    return semconv.OUTPUT_TYPE_JSON if method in _JSON_METHODS else None


_CONVERSATION_KEYS = ("thread_id", "session_id", "conversation_id")
"""Run metadata naming the conversation: LangGraph copies ``configurable.thread_id`` into it, and
these are the keys LangSmith groups a thread by."""


def conversation_id(metadata: Mapping[str, Any]) -> str | None:
    """``gen_ai.conversation.id`` from a run's metadata, if the application names its conversation."""
    for key in _CONVERSATION_KEYS:
        value = metadata.get(key)
        if isinstance(value, (str, int, UUID)) and not isinstance(value, bool) and value != "":
            return str(value)[:MAX_NAME_LENGTH]
    return None


_RETRY_TAG = "retry:attempt:"
"""The tag ``Runnable.with_retry`` gives each attempt after the first (``retry:attempt:2``, ...)."""


def retry_attempt(tags: object) -> int | None:
    """The attempt number (2 or more) of a run that ``with_retry`` started again, from its tags."""
    if not isinstance(tags, list) or not tags:
        return None
    for tag in tags:
        if isinstance(tag, str) and tag.startswith(_RETRY_TAG):
            digits = tag[len(_RETRY_TAG) :]
            if digits.isascii() and digits.isdecimal() and len(digits) <= 9 and int(digits) >= 2:
                return int(digits)
    return None


def is_streaming(params: Mapping[str, Any]) -> bool:
    return bool(params.get("stream") or params.get("streaming"))


# --------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------
def generations(response: Any) -> list[Any]:
    """Every generation of an LLMResult, flattened (one list per prompt)."""
    result: list[Any] = []
    for per_prompt in getattr(response, "generations", None) or ():
        if isinstance(per_prompt, list):
            result.extend(per_prompt)
    return result


def _raw_finish_reason(meta: Mapping[str, Any], info: Mapping[str, Any] | None) -> object:
    """The finish reason a provider integration reported, under whichever key it uses."""
    reason = _first(
        meta.get("finish_reason"),
        meta.get("stop_reason"),
        info.get("finish_reason") if info else None,
        info.get("stop_reason") if info else None,
        meta.get("done_reason"),
    )
    if reason is None and "stopReason" in meta:  # Bedrock Converse
        reason = meta["stopReason"]
    return reason


def _finish_reason(message: Any, meta: Mapping[str, Any], info: Mapping[str, Any] | None) -> str | None:
    """The normalised finish reason of a message (see ``_parts.finish_reason``), if it reports one.

    An OpenAI Responses API response has none: langchain-openai keeps its ``status`` and
    ``incomplete_details`` in the response metadata. Completed, it is ``tool_call`` if the message
    calls tools, else ``stop``; incomplete, its reason (``length`` for ``max_output_tokens``,
    ``content_filter``); failed, ``error``."""
    reason = _parts.finish_reason(_raw_finish_reason(meta, info))
    if reason is not None or meta.get("object") != "response":
        return reason
    return _parts.responses_finish_reason(
        meta.get("status"),
        _nested(meta.get("incomplete_details"), "reason"),
        lambda: bool(getattr(message, "tool_calls", None) or getattr(message, "invalid_tool_calls", None)),
    )


def generation_finish_reason(gen: Any) -> str | None:
    """The normalised finish reason one generation reports (see ``_parts.finish_reason``), if any."""
    message = getattr(gen, "message", None)
    meta = getattr(message, "response_metadata", None)
    info = getattr(gen, "generation_info", None)
    if not isinstance(meta, Mapping):
        meta = {}
    return _finish_reason(message, meta, info if isinstance(info, Mapping) else None)


def response_fields(response: Any, gens: Sequence[Any]) -> tuple[str | None, str | None, list[str] | None]:
    """(response id, response model, finish reasons) from the message metadata or ``llm_output``.

    Finish reasons are the ones reported, normalised to the conventions' values; a generation that
    reports none adds none (output messages derive one, see ``output_messages``)."""
    llm_output = getattr(response, "llm_output", None) or {}
    response_id: str | None = None
    model: str | None = None
    reasons: list[str] = []
    for gen in gens:
        message = getattr(gen, "message", None)
        meta: Mapping[str, Any] = getattr(message, "response_metadata", None) or {}
        info: Mapping[str, Any] = getattr(gen, "generation_info", None) or {}
        if response_id is None:
            candidate = meta.get("id")
            if candidate is None:
                message_id = getattr(message, "id", None)
                if isinstance(message_id, str) and not message_id.startswith(LC_ID_PREFIX):
                    candidate = message_id
            if isinstance(candidate, str) and candidate:
                response_id = candidate
        if model is None:
            candidate = _first(meta.get("model_name"), meta.get("model"), info.get("model"))
            if isinstance(candidate, str) and candidate:
                model = candidate
        reason = _finish_reason(message, meta, info)
        if reason is not None:
            reasons.append(reason)
    if isinstance(llm_output, Mapping):
        if response_id is None and isinstance(llm_output.get("id"), str):
            response_id = llm_output["id"]
        if model is None:
            candidate = _first(llm_output.get("model_name"), llm_output.get("model"))
            if isinstance(candidate, str) and candidate:
                model = candidate
    return response_id, model, reasons or None


UsageCounts = tuple[object, object, object, object, object, object, object]
"""(input, output, cache read, cache write, reasoning, one-hour cache write tokens, service tier):
``ModelInvocation.set_usage``'s arguments, raw (it coerces them)."""

_TIER_KEYS = tuple(
    (t, f"{t}_cache_read", f"{t}_cache_creation", f"{t}_reasoning") for t in ("flex", "priority")
)
"""The service tiers langchain-openai prefixes its token-detail keys with (``flex_cache_read``), and
those keys; it also gives the tier's own count (``flex``)."""


def usage(response: Any, gens: Sequence[Any]) -> UsageCounts | None:
    """The call's usage (see ``UsageCounts``), or None if it reported neither counts nor a tier.

    ``usage_metadata`` of the messages first, then the older ``llm_output`` shapes (``token_usage``
    of OpenAI, ``usage`` of Anthropic). The service tier: the one the response metadata names
    (langchain-openai's ``service_tier``, Anthropic's ``usage.service_tier``), else the one
    langchain-openai's tier-prefixed detail keys imply.

    A callback's response answers one prompt (LangChain ends one run per prompt), so several
    generations are the ``n`` choices of one request (see ``_choices_usage``).
    """
    found: list[Mapping[str, Any]] = []
    tier: object = None
    message = None
    for gen in gens:
        message = getattr(gen, "message", None)
        meta = getattr(message, "usage_metadata", None)
        if isinstance(meta, Mapping) and ("input_tokens" in meta or "output_tokens" in meta):
            found.append(meta)
        if tier is None:
            # a chat message's metadata has its generation's info, LangChain merges it in
            if message is None:
                tier = _tier_of(getattr(gen, "generation_info", None))
            else:
                tier = _tier_of(getattr(message, "response_metadata", None))
    if tier is None and (len(gens) != 1 or message is None):  # else merged into the message too
        tier = _tier_of(getattr(response, "llm_output", None))
    counts: UsageCounts | None = None
    if found:
        counts = _choices_usage(found)
    else:
        llm_output = getattr(response, "llm_output", None)
        if isinstance(llm_output, Mapping):
            raw = _first(llm_output.get("token_usage"), llm_output.get("usage"))
            if isinstance(raw, Mapping):
                counts = _legacy_usage(raw)
        if counts is None:
            for gen in gens:  # some integrations only fill response_metadata
                meta = getattr(getattr(gen, "message", None), "response_metadata", None)
                if isinstance(meta, Mapping):
                    raw = _first(meta.get("token_usage"), meta.get("usage"))
                    if isinstance(raw, Mapping):
                        counts = _legacy_usage(raw)
                        break
    if tier is None:
        return counts
    if counts is None:
        return (None, None, None, None, None, None, tier)
    return (*counts[:6], tier)


def _tier_of(meta: object) -> object:
    """The service tier in a response-metadata-like mapping: its own ``service_tier`` (OpenAI) or
    its ``usage``'s (Anthropic). On every model call: dicts (what LangChain gives) checked first."""
    if not meta or not isinstance(meta, (dict, Mapping)):
        return None
    tier = meta.get("service_tier")
    if tier is None:
        raw = meta.get("usage")
        if raw and isinstance(raw, (dict, Mapping)):
            tier = raw.get("service_tier")
    return tier


def _choices_usage(items: Sequence[Mapping[str, Any]]) -> UsageCounts:
    """The usage of one request from the ``usage_metadata`` of its choices: usage every choice
    reports alike is the request's own, copied onto each (langchain-openai does so for ``n`` > 1),
    and counts once; usage that differs between choices is each choice's own, and is summed."""
    first = items[0]
    if len(items) == 1 or all(item == first for item in items):
        return _usage_metadata(first)
    totals: list[int | None] = [None] * 6
    tier: object = None
    for item in items:
        counts = _usage_metadata(item)
        for i, value in enumerate(counts[:6]):
            if isinstance(value, int) and not isinstance(value, bool):
                totals[i] = (totals[i] or 0) + value
        if tier is None:
            tier = counts[6]
    return (totals[0], totals[1], totals[2], totals[3], totals[4], totals[5], tier)


def _usage_metadata(meta: Mapping[str, Any]) -> UsageCounts:
    """Counts of one ``usage_metadata``. langchain-openai names the details of a flex or priority
    call with the tier as a prefix (``flex_cache_read``, ``priority_reasoning``); langchain-anthropic
    adds the cache writes by lifetime (``ephemeral_5m_input_tokens``, ``ephemeral_1h_input_tokens``),
    and then reports their total (``cache_creation``) as 0: the writes are the split's sum."""
    inputs = meta.get("input_token_details")
    outputs = meta.get("output_token_details")
    cache_read = cache_write = reasoning = write_1h = tier = None
    if isinstance(inputs, Mapping) and inputs:
        cache_read = inputs.get("cache_read")
        cache_write = inputs.get("cache_creation")
        if cache_read is None and cache_write is None:
            for prefix, read_key, write_key, _ in _TIER_KEYS:
                if prefix in inputs or read_key in inputs or write_key in inputs:
                    cache_read, cache_write, tier = inputs.get(read_key), inputs.get(write_key), prefix
                    break
        cache_write, write_1h = cache_writes(
            cache_write, inputs.get("ephemeral_5m_input_tokens"), inputs.get("ephemeral_1h_input_tokens")
        )
    if isinstance(outputs, Mapping) and outputs:
        reasoning = outputs.get("reasoning")
        if reasoning is None:
            for prefix, _, _, reasoning_key in _TIER_KEYS:
                if prefix in outputs or reasoning_key in outputs:
                    reasoning, tier = outputs.get(reasoning_key), tier or prefix
                    break
    counts = (meta.get("input_tokens"), meta.get("output_tokens"), cache_read, cache_write, reasoning)
    return (*counts, write_1h, tier)


def _legacy_usage(raw: Mapping[str, Any]) -> UsageCounts:
    tier = raw.get("service_tier")
    if "prompt_tokens" in raw or "completion_tokens" in raw:  # OpenAI-style
        prompt_details = raw.get("prompt_tokens_details")
        completion_details = raw.get("completion_tokens_details")
        cache_read = cache_write = None
        if isinstance(prompt_details, Mapping):
            cache_read = prompt_details.get("cached_tokens")
            cache_write = prompt_details.get("cache_write_tokens")
        reasoning = (
            completion_details.get("reasoning_tokens") if isinstance(completion_details, Mapping) else None
        )
        counts = (raw.get("prompt_tokens"), raw.get("completion_tokens"), cache_read, cache_write, reasoning)
        return (*counts, None, tier)
    # Anthropic-style: input_tokens excludes the cached parts
    read = raw.get("cache_read_input_tokens")
    write = raw.get("cache_creation_input_tokens")
    lifetimes = raw.get("cache_creation")  # the writes by lifetime, within the total
    write, write_1h = cache_writes(
        write,
        _nested(lifetimes, "ephemeral_5m_input_tokens"),
        _nested(lifetimes, "ephemeral_1h_input_tokens"),
    )
    inputs = raw.get("input_tokens")
    if isinstance(inputs, int) and not isinstance(inputs, bool):
        for extra in (read, write):
            if isinstance(extra, int) and not isinstance(extra, bool):
                inputs += extra
    return inputs, raw.get("output_tokens"), read, write, None, write_1h, tier


def is_cache_replay(gens: Sequence[Any], run_id: object) -> bool:
    """True if LangChain answered a chat call from its LLM cache.

    A cached chat generation keeps the message id of the run that produced it and gets
    ``usage_metadata["total_cost"] = 0`` injected (langchain-core >= 0.3.75).
    """
    if not gens:
        return False
    for gen in gens:
        message = getattr(gen, "message", None)
        meta = getattr(message, "usage_metadata", None)
        if not isinstance(meta, Mapping) or meta.get("total_cost") != 0:
            return False
        message_id = getattr(message, "id", None)
        if isinstance(message_id, str) and message_id.startswith(LC_ID_PREFIX) and str(run_id) in message_id:
            return False
    return True


def tool_calls(gens: Sequence[Any]) -> list[tuple[str | None, str | None]]:
    """(tool name, call id) for every tool call the model decided."""
    calls: list[tuple[str | None, str | None]] = []
    for gen in gens:
        for call in getattr(getattr(gen, "message", None), "tool_calls", None) or ():
            if isinstance(call, Mapping):
                name, call_id = call.get("name"), call.get("id")
                calls.append(
                    (name if isinstance(name, str) else None, call_id if isinstance(call_id, str) else None)
                )
    return calls


def answer_message(gens: Sequence[Any]) -> Any:
    """The message a chat call answers (its first generation's, the one ``invoke`` returns), if any."""
    return getattr(gens[0], "message", None) if gens else None


def node_output(outputs: Any) -> tuple[list[Any], frozenset[str]] | None:
    """The messages a LangGraph node adds to the state (its ``{"messages": ...}`` update, or the
    updates of the ``Command`` objects it returns: ``create_agent``'s model node), and the ids of the
    tool calls its tool messages answer; None if it adds none."""
    updates = outputs if isinstance(outputs, (list, tuple)) else (outputs,)
    messages: list[Any] = []
    for update in updates:
        if not isinstance(update, Mapping):
            update = getattr(update, "update", None)  # a Command
            if not isinstance(update, Mapping):
                continue
        found = update.get("messages")
        if isinstance(found, (list, tuple)):
            messages.extend(found)
        elif found is not None:
            messages.append(found)
    if not messages:
        return None
    answered = frozenset(
        call_id
        for m in messages
        if getattr(m, "type", None) == "tool" and isinstance(call_id := getattr(m, "tool_call_id", None), str)
    )
    return messages, answered


def is_among(message: Any, messages: Sequence[Any]) -> bool:
    """Whether ``message`` is one of ``messages``, or a copy of one (the same id: a middleware that
    edits the model's answer copies it)."""
    if message is None:
        return False
    message_id = getattr(message, "id", None)
    for sent in messages:
        if sent is message or (message_id is not None and getattr(sent, "id", None) == message_id):
            return True
    return False


# --------------------------------------------------------------------------------------
# Messages in the conventions' JSON shapes (only built when content is captured)
# --------------------------------------------------------------------------------------
_ROLES = {
    "human": "user",
    "ai": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "developer": "system",
    "HumanMessageChunk": "user",
    "AIMessageChunk": "assistant",
    "SystemMessageChunk": "system",
    "ToolMessageChunk": "tool",
    "FunctionMessageChunk": "tool",
}
"""Conventions' roles by LangChain message type; a ``ChatMessage`` (type ``chat``) carries its own
role, read through the same table (``ChatMessage(role="human")`` is a user's)."""
_OWN_ROLE = frozenset({"chat", "ChatMessageChunk"})

_TOOL_CALL_BLOCKS = frozenset({"tool_use", "tool_call", "function_call", "tool_call_chunk"})
"""Content blocks that repeat the message's ``tool_calls`` (reported from there)."""
_REASONING_BLOCKS = frozenset({"reasoning", "thinking", "reasoning_content"})
_MEDIA_BLOCKS = frozenset({"image", "audio", "video", "file", "document", "text-plain", "media"})
_OWN_MODALITY = frozenset({"image", "audio", "video"})


def _role(message: Any, kind: object) -> str:
    if kind in _OWN_ROLE:
        role = getattr(message, "role", None)
        if isinstance(role, str) and role:
            return _ROLES.get(role, role)
        return "user"
    found = _ROLES.get(str(kind))
    if found is not None:
        return found
    role = getattr(message, "role", None)
    return str(role or kind or "user")


def _reasoning_text(block: Mapping[str, Any]) -> str:
    """The text of a reasoning block: LangChain's standard ``reasoning``, Anthropic's ``thinking``,
    Bedrock's ``reasoning_content.text``, OpenAI Responses' ``summary`` list ("" if it has none:
    encrypted or summarised away)."""
    for key in ("reasoning", "thinking", "text"):
        value = block.get(key)
        if isinstance(value, str):
            return value
    nested = block.get("reasoning_content")
    if isinstance(nested, Mapping) and isinstance(nested.get("text"), str):
        return str(nested["text"])
    summary = block.get("summary")
    if isinstance(summary, list):
        texts = (item.get("text") for item in summary if isinstance(item, Mapping))
        return "\n\n".join(text for text in texts if isinstance(text, str))
    return ""


def _source_part(kind: str | None, source: Mapping[str, Any], mime_type: object) -> dict[str, Any] | None:
    """Anthropic's ``{"type": "image" | "document", "source": {...}}``."""
    source_type = source.get("type")
    mime = source.get("media_type") or mime_type
    if source_type == "base64" and isinstance(source.get("data"), str):
        return _parts.blob_part(kind, source["data"], mime)
    if source_type == "url":
        return _parts.url_part(kind, source.get("url"), mime)
    if source_type == "file" and isinstance(source.get("file_id"), str):
        return _parts.file_part(kind, source["file_id"], mime)
    if source_type == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "content": source["data"]}
    return None


def _file_fields(file_id: object, data: object, url: object, mime_type: object) -> dict[str, Any] | None:
    """OpenAI's file inputs: an uploaded file's id, inline data (a data: URL or base64), or a link."""
    if isinstance(file_id, str) and file_id:
        return _parts.file_part(None, file_id, mime_type)
    if isinstance(data, str) and data:
        if data[:5].lower() == "data:":
            return _parts.url_part(None, data, mime_type)
        return _parts.blob_part(None, data, mime_type)
    return _parts.url_part(None, url, mime_type)


def _media_part(kind: str, block: Mapping[str, Any]) -> dict[str, Any] | None:
    """A ``blob``, ``uri`` or ``file`` part for an image, audio, video or file block, in LangChain's
    standard form (v1 ``{"type": "image", "base64" | "url" | "file_id": ...}``, v0 ``source_type``),
    OpenAI's (``image_url``, ``input_audio``, ``file``, Responses ``input_*``), Anthropic's
    (``source``) or Google's (``media``). None if ``block`` is none of these."""
    if kind == "image_url":
        value = block.get("image_url")
        return _parts.url_part("image", value.get("url") if isinstance(value, Mapping) else value)
    if kind == "input_image":
        file_id = block.get("file_id")
        if isinstance(file_id, str) and file_id:
            return _parts.file_part("image", file_id)
        return _parts.url_part("image", block.get("image_url"))
    if kind == "input_audio":
        value = block.get("input_audio")
        data = value.get("data") if isinstance(value, Mapping) else None
        if not isinstance(data, str):
            return None
        audio_format = value.get("format") if isinstance(value, Mapping) else None
        mime = f"audio/{audio_format}" if isinstance(audio_format, str) and audio_format else None
        return _parts.blob_part("audio", data, mime)
    if kind == "input_file":
        return _file_fields(block.get("file_id"), block.get("file_data"), block.get("file_url"), None)
    if kind == "file" and isinstance(block.get("file"), Mapping):
        value = block["file"]
        return _file_fields(value.get("file_id"), value.get("file_data"), None, None)
    if kind not in _MEDIA_BLOCKS:
        return None
    modality = kind if kind in _OWN_MODALITY else None
    mime = block.get("mime_type")
    source = block.get("source")
    if isinstance(source, Mapping):
        return _source_part(modality, source, mime)
    text = block.get("text")
    if kind == "text-plain" and isinstance(text, str):
        return {"type": "text", "content": text}
    source_type = block.get("source_type")  # LangChain v0 multimodal blocks
    if source_type == "base64":
        data = block.get("data")
        return _parts.blob_part(modality, data, mime) if isinstance(data, str) else None
    if source_type == "url":
        return _parts.url_part(modality, block.get("url"), mime)
    if source_type == "id":
        file_id = block.get("id")
        return _parts.file_part(modality, file_id, mime) if isinstance(file_id, str) else None
    data = block.get("base64")
    if isinstance(data, str):
        return _parts.blob_part(modality, data, mime)
    url = block.get("url", block.get("file_uri"))
    if isinstance(url, str) and url:
        return _parts.url_part(modality, url, mime)
    file_id = block.get("file_id")
    if isinstance(file_id, str) and file_id:
        return _parts.file_part(modality, file_id, mime)
    data = block.get("data")  # Google's media blocks: base64 text or bytes
    if isinstance(data, (str, bytes)):
        part = _parts.blob_part(modality, "", mime)
        part["content"] = data  # bytes are written as base64 by the content serialiser
        return part
    return None


def _block_part(block: Mapping[str, Any]) -> dict[str, Any] | None:
    """The conventions' part for one content block (None for blocks that repeat the tool calls)."""
    kind = block.get("type")
    if kind == "text" or kind is None:
        text = block.get("text")
        if isinstance(text, str):
            return {"type": "text", "content": text}
        if kind is None:
            return {"type": "unknown"}
    if kind in _REASONING_BLOCKS:
        return {"type": "reasoning", "content": _reasoning_text(block)}
    if kind in _TOOL_CALL_BLOCKS:
        return None
    if isinstance(kind, str):
        media = _media_part(kind, block)
        if media is not None:
            return media
    return {"type": str(kind)}


def _parts_of_content(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    parts: list[dict[str, Any]] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, str):
                parts.append({"type": "text", "content": block})
            elif isinstance(block, Mapping):
                part = _block_part(block)
                if part is not None:
                    parts.append(part)
    return parts


def _extra_reasoning(message: Any) -> list[dict[str, Any]]:
    """Reasoning a provider integration keeps outside the content: ``reasoning_content`` (DeepSeek,
    xAI, OpenAI-compatible servers), OpenAI Responses' ``reasoning`` item (output version v0)."""
    extra = getattr(message, "additional_kwargs", None)
    if not isinstance(extra, Mapping) or not extra:
        return []
    text = extra.get("reasoning_content")
    if isinstance(text, str) and text:
        return [{"type": "reasoning", "content": text}]
    reasoning = extra.get("reasoning")
    if isinstance(reasoning, Mapping):
        return [{"type": "reasoning", "content": _reasoning_text(reasoning)}]
    return []


def message_to_json(message: Any) -> dict[str, Any]:
    kind = getattr(message, "type", None)
    if kind is None and isinstance(message, str):
        return {"role": "user", "parts": [{"type": "text", "content": message}]}
    if kind is None and isinstance(message, (tuple, list, Mapping)):
        message = _as_message(message)  # ("user", "hi") or {"role": "user", "content": "hi"}
        kind = getattr(message, "type", None)
    role = _role(message, kind)
    content = getattr(message, "content", None)
    if role == "tool":
        # a list of content blocks (images a tool returned...) as parts, like any message's content
        response = _parts_of_content(content) if isinstance(content, list) else content
        call_id = getattr(message, "tool_call_id", None)
        part = {"type": "tool_call_response", "id": call_id, "response": response}
        return {"role": "tool", "parts": [part]}
    parts = _parts_of_content(content)
    if role == "assistant":
        reasoning = _extra_reasoning(message)
        if reasoning:
            parts[:0] = reasoning
    for call in getattr(message, "tool_calls", None) or ():
        if isinstance(call, Mapping):
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": call.get("name"),
                    "arguments": call.get("args"),
                }
            )
    result: dict[str, Any] = {"role": role, "parts": parts}
    name = getattr(message, "name", None)
    if isinstance(name, str) and name:
        result["name"] = name
    return result


def _as_message(message: Any) -> Any:
    """A message in one of the shorthand forms LangChain accepts, as LangChain reads it."""
    from langchain_core.messages import convert_to_messages

    try:
        return convert_to_messages([message])[0]
    except Exception:  # not a message LangChain would accept either: recorded as it is
        return message


def newest_messages(messages: Sequence[Any]) -> tuple[list[dict[str, Any]], int]:
    """(messages in the conventions' shape, in the order sent; how many of the oldest were left out).

    The content serialiser keeps :data:`~llmtrace._content.MAX_ITEMS` items of a list: of a longer
    history only the newest are converted (the ones that matter), after a marker item standing for
    the others, so the cost does not grow with the history."""
    total = len(messages)
    if total <= MAX_ITEMS:
        return [message_to_json(m) for m in messages], 0
    keep = MAX_ITEMS - 1
    dropped = total - keep
    converted: list[Any] = [_parts.dropped_marker(dropped)]
    converted.extend(message_to_json(m) for m in messages[dropped:])
    return converted, dropped


def input_messages(batches: Sequence[Sequence[Any]]) -> tuple[list[dict[str, Any]], int]:
    """The messages of the first prompt of a chat call, system messages included, in the order sent
    (instructions that travel in the history belong there; ``gen_ai.system_instructions`` is for
    instructions given apart from it), and how many of the oldest were left out."""
    messages = batches[0] if batches else []
    return newest_messages(messages if isinstance(messages, Sequence) else list(messages))


def prompt_messages(prompts: Sequence[str]) -> list[dict[str, Any]]:
    return [{"role": "user", "parts": [{"type": "text", "content": p}]} for p in prompts[:1]]


def output_messages(gens: Sequence[Any]) -> list[dict[str, Any]]:
    """One assistant message per generation, each with its finish reason (see ``finish_reason``)."""
    result: list[dict[str, Any]] = []
    for gen in gens:
        message = getattr(gen, "message", None)
        if message is not None:
            item = message_to_json(message)
        else:
            item = {"role": "assistant", "parts": [{"type": "text", "content": getattr(gen, "text", "")}]}
        item["role"] = "assistant"
        item["finish_reason"] = _parts.output_finish_reason(generation_finish_reason(gen), item["parts"])
        result.append(item)
    return result


def agent_output_message(message: Any, structured: Any = None) -> dict[str, Any]:
    """An agent's answer as an output message, with a finish reason: its ``structured`` response if it
    has one (as JSON text: ``create_agent`` given a ``response_format``), else the last message of its
    state (``message``)."""
    if structured is not None:
        text = json.dumps(to_jsonable(structured), ensure_ascii=False, separators=(",", ":"))
        return {"role": "assistant", "parts": [{"type": "text", "content": text}], "finish_reason": "stop"}
    item = message_to_json(message)
    meta = getattr(message, "response_metadata", None)
    reported = _finish_reason(message, meta, None) if isinstance(meta, Mapping) else None
    item["finish_reason"] = _parts.output_finish_reason(reported, item["parts"])
    return item


def tool_definitions(tools: object) -> list[dict[str, Any]] | None:
    """``gen_ai.tool.definitions`` of the tools bound to a chat call (``invocation_params["tools"]``:
    the provider's format, or LangChain tools for models that keep them so)."""
    return _parts.tool_definitions(tools, _tool_object_definition)


def _tool_object_definition(tool: Any) -> dict[str, Any] | None:
    try:
        from langchain_core.utils.function_calling import convert_to_openai_tool

        converted = convert_to_openai_tool(tool)
    except Exception:  # not a tool LangChain can describe: its name at most
        name = getattr(tool, "name", None)
        return {"type": "function", "name": name} if isinstance(name, str) and name else None
    found = _parts.tool_definitions([converted])
    return found[0] if found else None


def declared_tool_names(tools: object) -> frozenset[str] | None:
    """Names of the tools bound to a model call, or None if not all of them are known."""
    return _parts.declared_names(tools, _tool_object_name)


def _tool_object_name(tool: Any) -> str | None:
    name = getattr(tool, "name", None)
    return name if isinstance(name, str) else None


def tool_result(output: Any) -> Any:
    """The content of a tool's result: a ToolMessage's content; for a LangGraph ``Command`` that
    updates the messages (a handoff, a state update), the content of the ToolMessage in it; else
    the value."""
    if hasattr(output, "content") and getattr(output, "type", None) == "tool":
        return output.content
    update = getattr(output, "update", None) if type(output).__name__ == "Command" else None
    messages = update.get("messages") if isinstance(update, Mapping) else None
    if isinstance(messages, Sequence) and not isinstance(messages, str):
        for message in messages:
            if getattr(message, "type", None) == "tool" and hasattr(message, "content"):
                return message.content
    return output


def handled_tool_error(output: Any) -> bool:
    """A tool that caught its own error returns ``ToolMessage(status="error")``."""
    return getattr(output, "type", None) == "tool" and getattr(output, "status", None) == "error"


# --------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------
_SCORE_KEYS = ("score", "relevance_score", "similarity_score", "_score", "distance")


def documents(docs: Sequence[Any], with_content: bool) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for doc in docs:
        item: dict[str, Any] = {}
        doc_id = getattr(doc, "id", None)
        metadata = getattr(doc, "metadata", None) or {}
        if doc_id is None and isinstance(metadata, Mapping):
            doc_id = metadata.get("id")
        if doc_id is not None:
            item["id"] = str(doc_id)
        if isinstance(metadata, Mapping):
            for key in _SCORE_KEYS:
                value = metadata.get(key)
                score = None if value is None else _number(value)
                if score is not None:
                    item["score"] = score
                    break
        if with_content:
            item["content"] = getattr(doc, "page_content", None)
        result.append(item)
    return result


def retrieval_source(
    metadata: Mapping[str, Any], serialized: Mapping[str, Any] | None, name: str | None
) -> str | None:
    for value in (
        metadata.get("ls_vector_store_provider"),
        metadata.get("ls_retriever_name"),
        name,
        serialized.get("name") if serialized else None,
    ):
        if isinstance(value, str) and value:
            return value
    return None


def tool_name(serialized: Mapping[str, Any] | None, name: object) -> str | None:
    """A tool's declared name (``BaseTool.name``, in ``serialized``: the name the model calls it by),
    not the run's name: a ``run_name`` in the config names that one run, and may be made per request."""
    declared = serialized.get("name") if serialized else None
    if isinstance(declared, str) and declared:
        return declared
    return run_name(serialized, name)


def agent_system_prompt(sent: Sequence[Any], state: Sequence[Any]) -> list[dict[str, Any]] | None:
    """The system prompt an agent's model node put before the messages of its state (``state``) in
    the model call that was sent ``sent``, as the parts of ``gen_ai.system_instructions``: the system
    message ``sent`` starts with, unless it is the state's own first message (a system message of the
    conversation, which stays a message). None if there is none."""
    first = sent[0] if sent else None
    if getattr(first, "type", None) != "system" or (state and first is state[0]):
        return None
    return _parts_of_content(getattr(first, "content", None)) or None


def run_name(serialized: Mapping[str, Any] | None, name: object) -> str | None:
    if isinstance(name, str) and name:
        return name
    if serialized:
        value = serialized.get("name")
        if isinstance(value, str) and value:
            return value
        ident = serialized.get("id")
        if isinstance(ident, list) and ident and isinstance(ident[-1], str):
            return ident[-1]
    return None
