"""Pure functions that read LlamaIndex and provider objects (no telemetry, no state).

Everything here is defensive: provider SDK objects and plain dicts are both accepted, and a
missing or malformed field yields None rather than an exception or a guess.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmtrace import _parts, semconv
from llmtrace._content import MAX_ITEMS
from llmtrace._errors import provider_error_type
from llmtrace._formats import output_type
from llmtrace._objects import BoundedCache, attribute, attributes, url_host_port
from llmtrace._usage import cache_writes, coerce_service_tier

# (words of the lower-cased class name, provider name); first match wins, so the more specific
# names come first. A name matches only whole camel-case words (``XAI`` and ``GrokLLM`` are xAI,
# ``MaxAILLM`` is not); ``OpenAILike`` (an OpenAI-compatible server) is ``openai``, as the
# conventions name the API the client speaks (``server.address`` tells the servers apart).
_PROVIDERS: tuple[tuple[str, str], ...] = (
    ("azureopenai", semconv.PROVIDER_AZURE_OPENAI),
    ("azureaiinference", semconv.PROVIDER_AZURE_INFERENCE),
    ("bedrock", semconv.PROVIDER_AWS_BEDROCK),
    ("vertex", semconv.PROVIDER_GCP_VERTEX_AI),
    ("googlegenai", semconv.PROVIDER_GCP_GEN_AI),
    ("gemini", semconv.PROVIDER_GCP_GEMINI),
    ("anthropic", semconv.PROVIDER_ANTHROPIC),
    ("mistral", semconv.PROVIDER_MISTRAL),
    ("cohere", semconv.PROVIDER_COHERE),
    ("deepseek", semconv.PROVIDER_DEEPSEEK),
    ("groq", semconv.PROVIDER_GROQ),
    ("perplexity", semconv.PROVIDER_PERPLEXITY),
    ("watsonx", semconv.PROVIDER_IBM_WATSONX),
    ("moonshot", semconv.PROVIDER_MOONSHOT),
    ("xai", semconv.PROVIDER_XAI),
    ("grok", semconv.PROVIDER_XAI),
    ("openai", semconv.PROVIDER_OPENAI),
)
_PRODUCTS: tuple[tuple[str, str], ...] = (
    ("litellm", "litellm"),
    ("vllm", "vllm"),
    ("huggingface", "huggingface"),
)
"""Products the conventions have no value for, whose class names the fallback below would cut
(``LiteLLM`` is not ``lite``, ``VllmServer`` is ``vllm``)."""
_SUFFIX = re.compile(r"(FunctionCallingLLM|LLM|Embeddings?)$")
"""A kind suffix cut from other class names, as a camel-case word only (``Vllm`` keeps its ``llm``)."""
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_UNKNOWN_MODEL = {"", "unknown", "none"}


def get(obj: Any, name: str) -> Any:
    """``obj.name`` or ``obj[name]``, None if absent (never raises on odd objects)."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        try:
            return obj.get(name)
        except Exception:
            return None
    return attribute(obj, name)


_MAX_CACHED_CLASSES = 512
_providers: BoundedCache[type, tuple[str, str | None]] = BoundedCache(_MAX_CACHED_CLASSES)


def _class_provider(cls: type) -> tuple[str, str | None]:
    """(provider name, well-known provider or None) of a component class, cached per class."""
    found = _providers.get(cls)
    if found is None:
        found = _providers.remember(cls, _find_provider(cls))
    return found


def _find_provider(cls: type) -> tuple[str, str | None]:
    """The provider or product named by the first class of ``cls.__mro__`` that names one (a user's
    ``class Acme(OpenAI)`` is ``openai``), else ``cls``'s own name without its kind suffix."""
    for klass in cls.__mro__:
        name = klass.__name__
        words = _WORD.finditer(name)
        bounds = {edge for word in words for edge in (word.start(), word.end())}
        suffix = _SUFFIX.search(name)
        if suffix is not None:  # an acronym before it is a word of its own (DemoOpenAILLM: OpenAI)
            bounds.add(suffix.start())
        lowered = name.lower()
        known = _match(lowered, bounds, _PROVIDERS)
        if known is not None:
            return known, known
        product = _match(lowered, bounds, _PRODUCTS)
        if product is not None:
            return product, None
    name = cls.__name__
    return _SUFFIX.sub("", name).lower() or name.lower(), None


def _match(name: str, bounds: set[int], table: tuple[tuple[str, str], ...]) -> str | None:
    """The value of the first entry of ``table`` whose key is whole words of ``name``."""
    for needle, value in table:
        start = name.find(needle)
        while start >= 0:
            if start in bounds and start + len(needle) in bounds:
                return value
            start = name.find(needle, start + 1)
    return None


def provider_name(component: Any) -> str:
    """The ``gen_ai.provider.name`` of an LLM or embedding model, from its class.

    Well-known providers map to the conventions' values, and products the conventions have no
    value for to their names (``LiteLLM`` -> ``litellm``, ``Vllm`` -> ``vllm``), from the first
    class of the MRO that names one (a subclass named after neither is its base's); any other
    class gives its own lower-cased name without an ``LLM``/``Embedding`` suffix (``MockLLM`` ->
    ``mock``).
    """
    return _class_provider(type(component))[0]


def known_provider(component: Any) -> str | None:
    """The provider of a component whose class names a well-known one (``CohereRerank``), else None."""
    return _class_provider(type(component))[1]


def model_name(component: Any) -> str | None:
    """The model an LLM or embedding model is configured with, if it names one."""
    for attr in ("model", "model_name", "deployment_name"):
        value = get(component, attr)
        if isinstance(value, str) and value.strip().lower() not in _UNKNOWN_MODEL:
            return value
    try:
        value = component.metadata.model_name
    except Exception:
        return None
    if isinstance(value, str) and value.strip().lower() not in _UNKNOWN_MODEL:
        return value
    return None


def server_address(component: Any) -> tuple[str | None, int | None]:
    """Host and port of the API base URL an LLM or embedding model calls, if it has one."""
    return url_host_port(component, ("api_base", "base_url", "azure_endpoint", "endpoint"))


def unwrap_llm(llm: Any) -> Any:
    """The LLM that actually calls the provider (``StructuredLLM`` wraps another one)."""
    inner = get(llm, "llm")
    if inner is not None and type(inner).__name__ != type(llm).__name__ and hasattr(inner, "metadata"):
        return inner
    return llm


@dataclass(slots=True)
class RequestParams:
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop_sequences: list[str] | None = None
    output_type: str | None = None
    reasoning_level: str | None = None
    previous_response_id: str | None = None
    instructions: str | None = None
    """Instructions sent apart from the messages (the Responses API's ``instructions``)."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


_PARAM_NAMES = (
    "temperature", "max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens", "top_p",
    "top_k", "seed", "frequency_penalty", "presence_penalty", "stop", "stop_sequences",
    "response_format", "format", "response_mime_type", "json_mode", "text",
    "reasoning_effort", "reasoning", "previous_response_id", "instructions",
)  # fmt: skip
PARAM_NAMES = frozenset(_PARAM_NAMES)
_WIRE_MODULES = ("llama_index.llms.openai.", "llama_index.llms.azure_openai.")
"""Modules whose LLM classes build a call's request parameters with ``_get_model_kwargs(**kwargs)``
(llama-index-llms-openai's ``OpenAI`` and ``OpenAIResponses``, and Azure's subclasses of them)."""
_wire_builders: BoundedCache[type, bool] = BoundedCache(_MAX_CACHED_CLASSES)


def _known(source: Any) -> dict[str, Any]:
    """The request parameters a mapping holds (none if it is not a mapping or reading it fails)."""
    if not source or not isinstance(source, Mapping):
        return {}
    try:
        return {name: value for name in _PARAM_NAMES if (value := source.get(name)) is not None}
    except Exception:
        return {}


def _wire_params(llm: Any, kwargs: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The request parameters ``llm`` sends for a call with ``kwargs``, as it builds them itself: the
    LLM classes of llama-index-llms-openai (and their subclasses that keep that method) merge their
    fields, ``additional_kwargs`` and the call's kwargs in an order of their own, and leave some out
    (``OpenAIResponses`` sends no temperature to a reasoning model, ``OpenAI`` sends its
    ``reasoning_effort`` to reasoning models only). None for other classes, or if building fails."""
    cls = type(llm)
    known = _wire_builders.get(cls)
    if known is None:
        module = getattr(getattr(cls, "_get_model_kwargs", None), "__module__", None)
        known = _wire_builders.remember(cls, isinstance(module, str) and module.startswith(_WIRE_MODULES))
    if not known:
        return None
    try:
        built = llm._get_model_kwargs(**(kwargs or {}))  # a dict of its own: nothing of ours kept
    except Exception:  # an odd call: read as any other LLM's
        return None
    return _known(built) if isinstance(built, Mapping) else None


def request_params(llm: Any, kwargs: Mapping[str, Any] | None) -> RequestParams:
    """Request parameters of a call: the ones the LLM sends (``_wire_params``) if it says so, else
    from the call's kwargs, the LLM's ``additional_kwargs`` and its fields, in that priority order."""
    wire = _wire_params(llm, kwargs)
    if wire is not None:
        sources = [wire]
    else:
        sources = [_known(kwargs), _known(get(llm, "additional_kwargs"))]  # plain dicts
        sources.append(_known(llm) if isinstance(llm, Mapping) else attributes(llm, _PARAM_NAMES))

    def first(*names: str) -> Any:
        for source in sources:
            for name in names:
                value = source.get(name)
                if value is not None:
                    return value
        return None

    params = RequestParams(
        temperature=_number(first("temperature")),
        max_tokens=_integer(
            first("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens")
        ),
        top_p=_number(first("top_p")),
        top_k=_integer(first("top_k")),
        seed=_integer(first("seed")),
        frequency_penalty=_number(first("frequency_penalty")),
        presence_penalty=_number(first("presence_penalty")),
    )
    stop = first("stop", "stop_sequences")
    if isinstance(stop, str):
        params.stop_sequences = [stop]
    elif isinstance(stop, Sequence) and all(isinstance(s, str) for s in stop):
        params.stop_sequences = list(stop)
    json_mode = first("json_mode") is True  # Ollama's switch for JSON output
    response_format = first("response_format")
    if response_format is None:  # the Responses API's ``text={"format": {...}}``
        response_format = get(first("text"), "format") if isinstance(first("text"), Mapping) else None
    params.output_type = output_type(
        response_format, "json" if json_mode else first("format"), first("response_mime_type")
    )
    effort = first("reasoning_effort")  # Chat Completions; the Responses API's ``reasoning.effort``
    if effort is None and isinstance(first("reasoning"), Mapping):
        effort = get(first("reasoning"), "effort")
    params.reasoning_level = effort if isinstance(effort, str) and effort else None
    previous = first("previous_response_id")
    params.previous_response_id = previous if isinstance(previous, str) and previous else None
    instructions = first("instructions")
    params.instructions = instructions if isinstance(instructions, str) and instructions else None
    return params


# --------------------------------------------------------------------------------------
# Responses: usage, ids, finish reasons
# --------------------------------------------------------------------------------------
@dataclass(slots=True)
class UsageCounts:
    """Token counts in the conventions' sense: input includes cache reads and writes, cache writes
    include the one-hour ones (Anthropic); and the service tier the response says served the call."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    service_tier: str | None = None


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


_RESPONSE_END_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
"""OpenAI Responses stream events that carry the finished response (the others carry it so far)."""


_RESPONSE_CALL_ITEMS = frozenset({"function_call", "custom_tool_call"})
"""OpenAI Responses output items that are a tool call the model makes (its name and call id come in
the ``response.output_item.added`` event that starts one)."""
_RESPONSE_PARTIAL_IMAGE = "response.image_generation_call.partial_image"


def counts_as_chunk(response: Any) -> bool:
    """Whether one streamed ``ChatResponse`` counts as a chunk (``llmtrace.stream.chunks``, the time
    to first chunk): one that carries part of the answer, as a chat-completions chunk does.

    Every chunk does, except for ``OpenAIResponses``, which yields one per server-sent event of the
    Responses API (its ``raw``): there only the deltas (text, refusal, reasoning, tool-call arguments,
    audio...), a partial image, the start of a tool call (its name and call id) and the final event
    (usage, finish reason) count; the events that only frame them (``response.created``,
    ``in_progress``, ``output_item.added`` of a message, ``content_part.added``, the ``*.done``
    ones...) do not, nor does an ``error`` event.
    """
    raw = get(response, "raw")
    kind = get(raw, "type")
    if not isinstance(kind, str):
        return True
    if not kind.startswith("response."):
        return kind != "error"  # a Responses stream's error event carries no answer
    if kind.endswith(".delta"):
        delta = get(raw, "delta")
        return not isinstance(delta, str) or bool(delta)
    if kind in _RESPONSE_END_EVENTS or kind == _RESPONSE_PARTIAL_IMAGE:
        return True
    return kind == "response.output_item.added" and get(get(raw, "item"), "type") in _RESPONSE_CALL_ITEMS


def _responses_event(raw: Any) -> tuple[Any, bool] | None:
    """The response an OpenAI Responses stream event carries (``response.created`` ...
    ``response.completed``: the ``raw`` of each chunk llama-index-llms-openai's ``OpenAIResponses``
    streams), and whether it is the finished one; None if ``raw`` is no such event."""
    kind = get(raw, "type")
    if not isinstance(kind, str) or not kind.startswith("response."):
        return None
    return get(raw, "response"), kind in _RESPONSE_END_EVENTS


def usage_from_raw(raw: Any) -> UsageCounts | None:
    """Usage from an OpenAI- (chat completions or responses), Anthropic- or Gemini-style raw response.

    OpenAI reports ``prompt_tokens`` including cached ones (``prompt_tokens_details``);
    Anthropic reports ``input_tokens`` excluding cache reads and writes, so those are added.
    An OpenAI Responses stream event gives the usage of the response it carries. The service
    tier: OpenAI's ``service_tier`` of the response, Anthropic's of its ``usage``.
    """
    event = _responses_event(raw)
    if event is not None:
        raw = event[0]
    usage = get(raw, "usage")
    if usage is None:
        return _gemini_usage(get(raw, "usage_metadata"))
    counts = _usage_counts(usage)
    if counts is not None and counts.service_tier is None:
        tier = get(raw, "service_tier")
        counts.service_tier = coerce_service_tier(get(usage, "service_tier") if tier is None else tier)
    return counts


def _usage_counts(usage: Any) -> UsageCounts | None:
    """Counts of an OpenAI (either API) or Anthropic ``usage`` object or dict."""
    prompt = _count(get(usage, "prompt_tokens"))
    if prompt is not None or get(usage, "completion_tokens") is not None:
        details = get(usage, "prompt_tokens_details")
        out_details = get(usage, "completion_tokens_details")
        return UsageCounts(
            input_tokens=prompt,
            output_tokens=_count(get(usage, "completion_tokens")),
            cache_read_tokens=_count(get(details, "cached_tokens")),
            cache_write_tokens=_count(get(details, "cache_write_tokens")),
            reasoning_tokens=_count(get(out_details, "reasoning_tokens")),
        )
    input_tokens = _count(get(usage, "input_tokens"))
    output_tokens = _count(get(usage, "output_tokens"))
    if input_tokens is None and output_tokens is None:
        return None
    cache_read = _count(get(usage, "cache_read_input_tokens"))
    cache_write = _count(get(usage, "cache_creation_input_tokens"))
    if cache_read is not None or cache_write is not None:  # Anthropic
        lifetimes = get(usage, "cache_creation")  # the writes by cache lifetime
        writes, write_1h = cache_writes(
            cache_write,
            _count(get(lifetimes, "ephemeral_5m_input_tokens")),
            _count(get(lifetimes, "ephemeral_1h_input_tokens")),
        )
        cache_write = _count(writes)
        total = None if input_tokens is None else input_tokens + (cache_read or 0) + (cache_write or 0)
        return UsageCounts(
            input_tokens=total,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            cache_write_1h_tokens=_count(write_1h),
            service_tier=coerce_service_tier(get(usage, "service_tier")),
        )
    in_details = get(usage, "input_tokens_details")  # OpenAI responses API
    out_details = get(usage, "output_tokens_details")
    return UsageCounts(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=_count(get(in_details, "cached_tokens")),
        cache_write_tokens=_count(get(in_details, "cache_write_tokens")),
        reasoning_tokens=_count(get(out_details, "reasoning_tokens")),
    )


def usage_from_response(response: Any) -> UsageCounts | None:
    """Usage of a LlamaIndex ``ChatResponse``/``CompletionResponse``: the raw response first, then
    what some integrations copy to ``additional_kwargs``: a ``usage`` object (``OpenAIResponses``: the
    SDK's ``ResponseUsage``) or ``prompt_tokens``/``completion_tokens``."""
    counts = usage_from_raw(get(response, "raw"))
    if counts is not None:
        return counts
    extra = get(response, "additional_kwargs")
    if not isinstance(extra, Mapping):
        return None
    usage = extra.get("usage")
    if usage is not None:
        counts = _usage_counts(usage)
        if counts is not None:
            return counts
    if "prompt_tokens" in extra or "completion_tokens" in extra:
        prompt, completion = _count(extra.get("prompt_tokens")), _count(extra.get("completion_tokens"))
        if prompt is not None or completion is not None:
            return UsageCounts(input_tokens=prompt, output_tokens=completion)
    return None


def _gemini_usage(meta: Any) -> UsageCounts | None:
    """Gemini's ``usage_metadata`` (llama-index-llms-google-genai puts its dump in the raw response).

    ``prompt_token_count`` already includes the cached part (``cached_content_token_count``); tool-use
    prompts (``tool_use_prompt_token_count``) are input too. ``candidates_token_count`` excludes the
    thinking tokens (``thoughts_token_count``), which are billed as output: they are added, so that
    output includes reasoning as for every other provider (and as langchain-google-genai counts).
    """
    if meta is None:
        return None
    prompt = _count(get(meta, "prompt_token_count"))
    candidates = _count(get(meta, "candidates_token_count"))
    thoughts = _count(get(meta, "thoughts_token_count"))
    if prompt is None and candidates is None and thoughts is None:
        return None
    tool_prompt = _count(get(meta, "tool_use_prompt_token_count"))
    inputs = None if prompt is None else prompt + (tool_prompt or 0)
    outputs = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    return UsageCounts(
        input_tokens=inputs,
        output_tokens=outputs,
        cache_read_tokens=_count(get(meta, "cached_content_token_count")),
        reasoning_tokens=thoughts,
    )


@dataclass(slots=True)
class ResponseInfo:
    response_id: str | None = None
    response_model: str | None = None
    finish_reasons: list[str] | None = None


def response_info(response: Any) -> ResponseInfo:
    """Response id, model and finish reasons from the raw response of a ``ChatResponse``.

    Finish reasons are the ones the provider reported, normalised to the conventions' values
    (``_parts.finish_reason``): OpenAI's ``choices``, else Anthropic's ``stop_reason``, Bedrock's
    ``stopReason``, Ollama's ``done_reason``, Gemini's ``candidates`` (or the top candidate's
    ``finish_reason``, llama-index-llms-google-genai) or an OpenAI Responses status. Of an OpenAI
    Responses stream event, those of the response it carries (finish reasons: of the finished one).
    A Gemini response's id and model are its ``response_id`` and ``model_version``, when the raw
    response is google-genai's ``GenerateContentResponse`` or its dump: llama-index-llms-google-genai
    keeps only the top candidate, the prompt feedback and the usage of it, which carry neither."""
    raw = get(response, "raw")
    info = ResponseInfo()
    final = True
    event = _responses_event(raw)
    if event is not None:
        raw, final = event
    if raw is None:
        return info
    response_id = get(raw, "id")
    if not isinstance(response_id, str):  # Gemini: google-genai's GenerateContentResponse (or its dump)
        response_id = get(raw, "response_id")
    if isinstance(response_id, str) and response_id:
        info.response_id = response_id
    model = get(raw, "model")
    if not isinstance(model, str):
        model = get(raw, "model_version")  # Gemini, as the response id
    if isinstance(model, str) and model:
        info.response_model = model
    if not final:  # a response in progress: its status is no finish reason
        return info
    reasons: list[str] = []
    choices = get(raw, "choices")
    if isinstance(choices, Sequence):
        for choice in choices:
            reason = _parts.finish_reason(get(choice, "finish_reason"))
            if reason is not None:
                reasons.append(reason)
    else:
        reason = _parts.finish_reason(get(raw, "stop_reason"))  # Anthropic
        if reason is not None:
            reasons.append(reason)
        else:
            _other_finish_reasons(raw, reasons)
    if reasons:
        info.finish_reasons = reasons
    return info


_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


def response_error(response: Any) -> str | None:
    """The ``error.type`` of a response that reports a failure instead of raising: an OpenAI
    Responses stream's ``error`` event or ``response.failed`` event, a response whose ``status`` is
    ``failed`` (llama-index-llms-openai's ``OpenAIResponses`` yields them as chunks, or returns it).
    The category of the provider's error code (``server_error``, ``rate_limit``...), else the code
    itself if it is a plain identifier, else ``_OTHER``; None if the response reports no failure."""
    raw = get(response, "raw")
    kind = get(raw, "type")
    if kind == "error":  # {"type": "error", "code": ..., "message": ...}
        code = get(raw, "code")
    else:
        if kind == "response.failed":
            raw = get(raw, "response")
        elif get(raw, "object") != "response" or get(raw, "status") != "failed":
            return None
        code = get(get(raw, "error"), "code")
    known = provider_error_type(code)
    if known is not None:
        return known
    if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
        return code
    return _parts.OTHER


def _other_finish_reasons(raw: Any, reasons: list[str]) -> None:
    for key in ("stopReason", "done_reason"):  # Bedrock Converse, Ollama
        reason = _parts.finish_reason(get(raw, key))
        if reason is not None:
            reasons.append(reason)
            return
    candidates = get(raw, "candidates")  # Gemini
    if isinstance(candidates, Sequence) and not isinstance(candidates, str):
        for candidate in candidates:
            value = get(candidate, "finish_reason")
            reason = _parts.finish_reason(getattr(value, "name", value))  # an SDK enum: its name
            if reason is not None:
                reasons.append(reason)
        return
    value = get(raw, "finish_reason")  # llama-index-llms-google-genai: the top candidate's dump
    reason = _parts.finish_reason(getattr(value, "name", value))
    if reason is not None:
        reasons.append(reason)
        return
    if get(raw, "object") == "response":  # OpenAI Responses: a status, not a finish reason
        reason = _response_status(raw)
        if reason is not None:
            reasons.append(reason)


def _response_status(raw: Any) -> str | None:
    def calls_tools() -> bool:
        output = get(raw, "output")
        return isinstance(output, Sequence) and any(get(item, "type") == "function_call" for item in output)

    return _parts.responses_finish_reason(
        get(raw, "status"), get(get(raw, "incomplete_details"), "reason"), calls_tools
    )


# --------------------------------------------------------------------------------------
# Content: messages and documents in the conventions' JSON shapes
# --------------------------------------------------------------------------------------
def _role(message: Any) -> str:
    role = get(message, "role")
    value = get(role, "value")
    if isinstance(value, str):
        return value
    return role if isinstance(role, str) else "user"


def _arguments(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


_MEDIA_FIELDS = {
    # block type: (modality, field holding the data, field holding the MIME type)
    "image": ("image", "image", "image_mimetype"),
    "audio": ("audio", "audio", None),
    "video": ("video", "video", "video_mimetype"),
    "document": (None, "data", "document_mimetype"),
}


def _media_part(kind: str, block: Any) -> dict[str, Any] | None:
    """An ``ImageBlock``, ``AudioBlock``, ``VideoBlock`` or ``DocumentBlock`` as a ``blob`` part (its
    data: LlamaIndex keeps it as base64 bytes), a ``uri`` part (its URL, or its file path as a
    ``file://`` URI: the file is not read) or a ``blob`` part for a data: URL. None if it holds none of
    these (data as a stream, which is never read here)."""
    modality, data_field, mime_field = _MEDIA_FIELDS[kind]
    if mime_field is not None:
        mime = get(block, mime_field)
    else:
        audio_format = get(block, "format")
        mime = f"audio/{audio_format}" if isinstance(audio_format, str) and audio_format else None
    if modality is None:
        modality = _parts.modality(mime)
    raw = get(block, data_field)
    data = _parts.base64_text(raw)
    if data:
        return _parts.blob_part(modality, data, mime)
    if isinstance(raw, (bytes, bytearray)) and raw:  # raw bytes: the serialiser writes them as base64
        part = _parts.blob_part(modality, "", mime)
        part["content"] = raw
        return part
    url = get(block, "url")
    if url is not None:
        return _parts.url_part(modality, str(url), mime)
    path = get(block, "path")
    if isinstance(path, (str, os.PathLike)) and str(path):
        return _parts.url_part(modality, Path(os.path.abspath(path)).as_uri(), mime)
    return None


def _block_part(kind: object, block: Any) -> dict[str, Any] | None:
    """The part of one non-text content block (None for blocks that carry nothing to record)."""
    if kind == "tool_call":
        return {
            "type": "tool_call",
            "id": get(block, "tool_call_id"),
            "name": get(block, "tool_name"),
            "arguments": _arguments(get(block, "tool_kwargs")),
        }
    if kind == "thinking":
        content = get(block, "content")
        return {"type": "reasoning", "content": content} if isinstance(content, str) and content else None
    if kind == "cache":  # a prompt-caching marker (CachePoint), not content
        return None
    if kind in _MEDIA_FIELDS:
        part = _media_part(str(kind), block)
        if part is not None:
            return part
    return {"type": kind} if isinstance(kind, str) else None


def message_parts(message: Any) -> list[dict[str, Any]]:
    """The ``parts`` of one LlamaIndex ``ChatMessage`` in block order (consecutive text blocks as one
    text part): text, reasoning, media, tool calls; a tool message's as one ``tool_call_response``."""
    parts: list[dict[str, Any]] = []
    role = _role(message)
    extra = get(message, "additional_kwargs")
    blocks = get(message, "blocks")
    text_parts: list[str] = []  # text since the last other part
    texts: list[str] = []  # all text (a tool message's response)
    if isinstance(blocks, Iterable):
        for block in blocks:
            kind = get(block, "block_type")
            if kind == "text":
                text = get(block, "text")
                if isinstance(text, str) and text:
                    text_parts.append(text)
                continue
            part = _block_part(kind, block)
            if part is None:
                continue
            if text_parts:
                texts.extend(text_parts)
                parts.append({"type": "text", "content": "".join(text_parts)})
                text_parts = []
            parts.append(part)
    else:
        content = get(message, "content")
        if isinstance(content, str) and content:
            text_parts.append(content)
    if text_parts:
        texts.extend(text_parts)
        parts.append({"type": "text", "content": "".join(text_parts)})
    if role == "tool":
        call_id = get(extra, "tool_call_id") if isinstance(extra, Mapping) else None
        # text only: the text, as the model reads it; with media (an image a tool returned): the parts
        only_text = all(p["type"] == "text" for p in parts)
        response: Any = "".join(texts) if only_text else parts
        return [{"type": "tool_call_response", "id": call_id, "response": response}]
    if isinstance(extra, Mapping) and not any(p["type"] == "tool_call" for p in parts):
        for call in extra.get("tool_calls") or ():
            function = get(call, "function")
            parts.append(
                {
                    "type": "tool_call",
                    "id": get(call, "id"),
                    "name": get(function, "name"),
                    "arguments": _arguments(get(function, "arguments")),
                }
            )
    return parts


def message_json(message: Any) -> dict[str, Any]:
    """One input message (a ``ChatMessage``, or a user's text) in the conventions' shape."""
    if isinstance(message, str):
        return {"role": "user", "parts": [{"type": "text", "content": message}]}
    return {"role": _role(message), "parts": message_parts(message)}


def input_messages(messages: Iterable[Any]) -> tuple[list[dict[str, Any]], int]:
    """Chat messages as the conventions' input messages, system messages included, in the order sent
    (instructions that travel in the history belong there; ``gen_ai.system_instructions`` is for
    instructions given apart from it), and how many of the oldest were left out.

    The content serialiser keeps :data:`~llmtrace._content.MAX_ITEMS` items of a list: of a longer
    history only the newest are converted (the ones that matter), after a marker item standing for
    the others, so the cost does not grow with the history."""
    if not isinstance(messages, Iterable) or isinstance(messages, (str, bytes, Mapping)):
        return [], 0
    if not isinstance(messages, Sequence):
        messages = list(messages)
    total = len(messages)
    if total <= MAX_ITEMS:
        return [message_json(m) for m in messages], 0
    dropped = total - (MAX_ITEMS - 1)
    converted: list[Any] = [_parts.dropped_marker(dropped)]
    converted.extend(message_json(m) for m in messages[dropped:])
    return converted, dropped


def conversation(history: Any, user_msg: Any) -> tuple[list[dict[str, Any]], int]:
    """The input messages of an agent run or a ``predict_and_call``: its chat history, then its user
    message (text or a ``ChatMessage``), and how many of the oldest were left out."""
    messages: list[Any] = list(history) if isinstance(history, (list, tuple)) else []
    if user_msg is not None and (not isinstance(user_msg, str) or user_msg):
        messages.append(user_msg)
    return input_messages(messages)


def prompt_messages(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]


def output_messages(response: Any, finish_reasons: Sequence[str] | None) -> list[dict[str, Any]]:
    """A chat or completion response as convention output messages, with its finish reason: the one
    reported, else ``tool_call`` if it calls tools, else ``stop`` (``_parts.output_finish_reason``)."""
    message = get(response, "message")
    if message is not None:
        parts = message_parts(message)
        role = _role(message)
    else:
        text = get(response, "text")
        parts = [{"type": "text", "content": text}] if isinstance(text, str) else []
        role = "assistant"
    entry: dict[str, Any] = {"role": role, "parts": parts}
    entry["finish_reason"] = _parts.output_finish_reason(finish_reasons[0] if finish_reasons else None, parts)
    return [entry]


# --------------------------------------------------------------------------------------
# Tools: definitions, declared names, results
# --------------------------------------------------------------------------------------
def _tool_metadata_definition(tool: Any) -> dict[str, Any] | None:
    """A LlamaIndex tool (``BaseTool``) as a tool definition."""
    metadata = get(tool, "metadata")
    name = get(metadata, "name")
    if not isinstance(name, str) or not name:
        return None
    item: dict[str, Any] = {"type": "function", "name": name}
    description = get(metadata, "description")
    if isinstance(description, str) and description:
        item["description"] = description
    try:
        parameters = metadata.get_parameters_dict()
    except Exception:  # no schema it can give
        parameters = None
    if parameters is not None:
        item["parameters"] = parameters
    return item


def tool_definitions(tools: object) -> list[dict[str, Any]] | None:
    """``gen_ai.tool.definitions`` of the tools a chat call is given (its ``tools`` argument: in the
    provider's format, or LlamaIndex tools for LLMs that take them so)."""
    return _parts.tool_definitions(tools, _tool_metadata_definition)


def tool_name(tool: Any) -> str | None:
    """The name a LlamaIndex tool is called by."""
    name = get(get(tool, "metadata"), "name")
    return name if isinstance(name, str) else None


def declared_tool_names(tools: object) -> frozenset[str] | None:
    """Names of a list of tools, or None if not all of them are known."""
    return _parts.declared_names(tools, tool_name)


_PLAIN_RESULTS = (str, int, float, bool, bytes, bytearray, list, tuple, dict)


def tool_result(output: Any) -> Any:
    """What a tool returned (``ToolOutput.raw_output``), recorded as JSON by the content serialiser,
    when it is plain data (JSON-like values, bytes, a pydantic model); else the tool's own text of it
    (``ToolOutput.content``, ``str()`` of the value: an engine's response object, say)."""
    raw = get(output, "raw_output")
    if raw is not None and (
        isinstance(raw, _PLAIN_RESULTS) or callable(getattr(type(raw), "model_dump", None))
    ):
        return raw
    content = get(output, "content")
    return content if content is not None else raw


def documents(nodes: Any, with_content: bool) -> list[dict[str, Any]]:
    """Retrieved ``NodeWithScore`` objects as ``[{"id", "score", "content"}]`` (content only if asked)."""
    result: list[dict[str, Any]] = []
    if not isinstance(nodes, Iterable):
        return result
    for item in nodes:
        node = get(item, "node") or item
        doc: dict[str, Any] = {"id": get(node, "node_id") or get(node, "id_")}
        score = get(item, "score")
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            doc["score"] = float(score)
        if with_content:
            try:
                doc["content"] = node.get_content()
            except Exception:
                text = get(node, "text")
                if isinstance(text, str):
                    doc["content"] = text
        result.append(doc)
    return result


def query_text(value: Any) -> str | None:
    """The text of a query string or ``QueryBundle``."""
    if isinstance(value, str):
        return value
    text = get(value, "query_str")
    return text if isinstance(text, str) else None


def embedding_dimension(embeddings: Any) -> int | None:
    """Length of the first vector (only the length is ever read)."""
    if isinstance(embeddings, Sequence) and embeddings:
        first = embeddings[0]
        if isinstance(first, Sequence):
            return len(first)
    return None
