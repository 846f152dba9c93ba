"""Framework-free pieces of the conventions' content shapes: finish reasons, media parts, tool
definitions, shared by the integrations.

It reads only provider formats (OpenAI, Anthropic, Gemini, Bedrock) and plain values, never a
framework's objects. Nothing here raises on shapes it does not know: it returns None instead.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from llmtrace._content import _More

OTHER = "_OTHER"
"""A tool name the model made up (it names none of the tools the call declared): recorded as this
fixed value, as the conventions record an unknown ``error.type``, so that a model-generated string
never becomes a span name or a metric attribute."""

# --------------------------------------------------------------------------------------
# Finish reasons
# --------------------------------------------------------------------------------------
STOP = "stop"
LENGTH = "length"
CONTENT_FILTER = "content_filter"
TOOL_CALL = "tool_call"
ERROR = "error"

_FINISH_REASONS: dict[str, str] = {
    # a natural end
    "stop": STOP,
    "end_turn": STOP,  # Anthropic, Bedrock
    "stop_sequence": STOP,  # Anthropic, Bedrock, Cohere
    "complete": STOP,  # Cohere
    "eos": STOP,
    "eos_token": STOP,  # Hugging Face TGI
    # the output limit
    "length": LENGTH,
    "max_tokens": LENGTH,  # Anthropic, Bedrock, Gemini (MAX_TOKENS), Cohere
    "max_output_tokens": LENGTH,  # OpenAI Responses (incomplete_details.reason)
    "model_length": LENGTH,  # Mistral
    "model_context_window_exceeded": LENGTH,  # Anthropic
    "error_limit": LENGTH,  # Cohere
    # tool calls
    "tool_calls": TOOL_CALL,  # OpenAI, Mistral
    "tool_call": TOOL_CALL,  # Cohere (TOOL_CALL)
    "function_call": TOOL_CALL,  # OpenAI (legacy functions)
    "tool_use": TOOL_CALL,  # Anthropic, Bedrock
    # a filter stopped the output
    "content_filter": CONTENT_FILTER,  # OpenAI, Azure
    "content_filtered": CONTENT_FILTER,  # Bedrock
    "guardrail_intervened": CONTENT_FILTER,  # Bedrock
    "refusal": CONTENT_FILTER,  # Anthropic
    "safety": CONTENT_FILTER,  # Gemini
    "recitation": CONTENT_FILTER,  # Gemini
    "blocklist": CONTENT_FILTER,  # Gemini
    "prohibited_content": CONTENT_FILTER,  # Gemini
    "spii": CONTENT_FILTER,  # Gemini
    "image_safety": CONTENT_FILTER,  # Gemini
    "error_toxic": CONTENT_FILTER,  # Cohere
    # the provider failed the generation
    "error": ERROR,  # Mistral, Cohere
    "malformed_function_call": ERROR,  # Gemini
}


def finish_reason(raw: object) -> str | None:
    """A provider's finish reason as the conventions' value (``stop``, ``length``, ``content_filter``,
    ``tool_call``, ``error``), matched without regard to case; a value it does not know is kept as it
    is. None if ``raw`` is no reason (None, empty, not a string)."""
    if not isinstance(raw, str) or not raw:
        return None
    found = _FINISH_REASONS.get(raw)
    if found is None:
        found = _FINISH_REASONS.get(raw.lower())
        if found is None:
            return str.__str__(raw)[:256]  # an SDK's string enum: its value
    return found


def responses_finish_reason(
    status: object, incomplete_reason: object, calls_tools: Callable[[], bool]
) -> str | None:
    """The finish reason of an OpenAI Responses API response, which reports a ``status`` instead:
    completed, ``tool_call`` if the response calls tools (``calls_tools()``, asked only then), else
    ``stop``; incomplete, its ``incomplete_details.reason`` (``length`` for ``max_output_tokens``,
    ``content_filter``), else ``incomplete``; failed, ``error``; any other status as it is."""
    if status == "completed":
        return TOOL_CALL if calls_tools() else STOP
    if status == "incomplete":
        return finish_reason(incomplete_reason) or finish_reason(status)
    if status == "failed":
        return ERROR
    return finish_reason(status)


def output_finish_reason(reported: str | None, parts: list[dict[str, Any]]) -> str:
    """The ``finish_reason`` of an output message: the (normalised) reason the provider reported; when
    it reported none, ``tool_call`` if the message calls tools (the model stopped to have them run),
    else ``stop`` (the call returned a complete message without error)."""
    if reported:
        return reported
    for part in parts:
        if part.get("type") == "tool_call":
            return TOOL_CALL
    return STOP


# --------------------------------------------------------------------------------------
# Media parts: blob (inline data), uri (a link), file (a provider's file id)
# --------------------------------------------------------------------------------------
_MODALITIES = frozenset({"image", "audio", "video"})
DOCUMENT = "document"
_MAX_DATA_URL_HEADER = 256


def modality(mime_type: object, default: str = DOCUMENT) -> str:
    """``image``, ``audio`` or ``video`` from a MIME type's top level, else ``default``."""
    if isinstance(mime_type, str):
        head = mime_type.partition("/")[0].lower()
        if head in _MODALITIES:
            return head
    return default


def _mime(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def blob_part(kind: str | None, content: str, mime_type: object = None) -> dict[str, Any]:
    """Inline data: ``content`` is the base64 text as the application gave it (not copied, not decoded)."""
    mime = _mime(mime_type)
    part: dict[str, Any] = {"type": "blob", "modality": kind or modality(mime)}
    if mime is not None:
        part["mime_type"] = mime
    part["content"] = content
    return part


def file_part(kind: str | None, file_id: str, mime_type: object = None) -> dict[str, Any]:
    """A file uploaded to the provider, by its id."""
    mime = _mime(mime_type)
    part: dict[str, Any] = {"type": "file", "modality": kind or modality(mime), "file_id": file_id}
    if mime is not None:
        part["mime_type"] = mime
    return part


def url_part(kind: str | None, url: object, mime_type: object = None) -> dict[str, Any] | None:
    """A ``uri`` part for a link (http(s), gs://, file://...), a ``blob`` part for a ``data:`` URL
    (which the conventions do not allow in a ``uri`` part). None if ``url`` is no URL."""
    if not isinstance(url, str) or not url:
        return None
    if url[:5].lower() == "data:":
        return _data_url_part(kind, url, mime_type)
    mime = _mime(mime_type)
    part: dict[str, Any] = {"type": "uri", "modality": kind or modality(mime), "uri": url}
    if mime is not None:
        part["mime_type"] = mime
    return part


def _data_url_part(kind: str | None, url: str, mime_type: object) -> dict[str, Any] | None:
    """``data:[<mime>][;base64],<data>`` as a blob part (its base64 data; other data encoded)."""
    comma = url.find(",", 5, _MAX_DATA_URL_HEADER)
    if comma < 0:
        return None
    params = url[5:comma].split(";")
    mime = params[0] or _mime(mime_type)
    if any(p.strip().lower() == "base64" for p in params[1:]):
        content = url[comma + 1 :]
    else:  # percent-encoded text: the conventions' blob content is base64
        content = base64.b64encode(unquote_to_bytes(url[comma + 1 :])).decode("ascii")
    return blob_part(kind, content, mime)


def base64_text(data: object) -> str | None:
    """Base64 data given as text, or as ASCII bytes (LlamaIndex keeps its blocks' data so), as text."""
    if isinstance(data, str):
        return data
    if isinstance(data, (bytes, bytearray)):
        try:
            return bytes(data).decode("ascii")
        except UnicodeDecodeError:  # raw bytes: the serialiser writes bytes as base64
            return None
    return None


# --------------------------------------------------------------------------------------
# Tool definitions: gen_ai.tool.definitions, and the names a call declares
# --------------------------------------------------------------------------------------
def _definition(kind: object, name: object, description: object, parameters: object) -> dict[str, Any] | None:
    if not isinstance(name, str) or not name:
        return None
    item: dict[str, Any] = {"type": kind if isinstance(kind, str) and kind else "function", "name": name}
    if isinstance(description, str) and description:
        item["description"] = description
    if parameters is not None:
        item["parameters"] = parameters
    return item


def _definitions(tool: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    function = tool.get("function")
    if isinstance(function, Mapping):  # OpenAI chat completions
        found = _definition(
            tool.get("type"), function.get("name"), function.get("description"), function.get("parameters")
        )
        if found is not None:
            yield found
        return
    declarations = tool.get("function_declarations", tool.get("functionDeclarations"))
    if isinstance(declarations, (list, tuple)):  # Gemini: one tool, several functions
        for declaration in declarations:
            if isinstance(declaration, Mapping):
                found = _definition(
                    "function",
                    declaration.get("name"),
                    declaration.get("description"),
                    declaration.get("parameters", declaration.get("parameters_json_schema")),
                )
                if found is not None:
                    yield found
        return
    spec = tool.get("toolSpec")
    if isinstance(spec, Mapping):  # Bedrock Converse
        schema = spec.get("inputSchema")
        parameters = schema.get("json", schema) if isinstance(schema, Mapping) else None
        found = _definition("function", spec.get("name"), spec.get("description"), parameters)
        if found is not None:
            yield found
        return
    kind = tool.get("type")
    name = tool.get("name")
    if name is None and isinstance(kind, str) and kind != "function":
        name = kind  # a provider's built-in tool (OpenAI's {"type": "web_search"})
    # OpenAI Responses (flat), Anthropic (input_schema; its server tools have a dated type)
    parameters = tool.get("parameters", tool.get("input_schema"))
    found = _definition(kind, name, tool.get("description"), parameters)
    if found is not None:
        yield found


def tool_definitions(
    tools: object, other: Callable[[Any], dict[str, Any] | None] | None = None
) -> list[dict[str, Any]] | None:
    """``[{"type", "name", "description", "parameters"}]`` for the tools a call declares, in a
    provider's format or (through ``other``) as a framework's tool objects. None if there are none."""
    if not isinstance(tools, (list, tuple)) or not tools:
        return None
    result: list[dict[str, Any]] = []
    for tool in tools:
        if isinstance(tool, Mapping):
            result.extend(_definitions(tool))
        elif other is not None:
            found = other(tool)
            if found is not None:
                result.append(found)
    return result or None


def _callable_name(tool: Mapping[str, Any]) -> str | bool | None:
    """The name the model calls a tool by; False for a provider's built-in tool (the model does
    not call it through tool calls); None if the format is unknown."""
    function = tool.get("function")
    if isinstance(function, Mapping):
        name = function.get("name")
        return name if isinstance(name, str) else None
    spec = tool.get("toolSpec")
    if isinstance(spec, Mapping):
        name = spec.get("name")
        return name if isinstance(name, str) else None
    name = tool.get("name")
    if isinstance(name, str):
        return name
    kind = tool.get("type")
    return False if isinstance(kind, str) and kind != "function" else None


def declared_names(tools: object, other: Callable[[Any], str | None] | None = None) -> frozenset[str] | None:
    """The names of the tools a call declares, or None if they are not all known (then a tool name
    cannot be told apart from one the model made up)."""
    if not isinstance(tools, (list, tuple)):
        return None
    names: set[str] = set()
    for tool in tools:
        if isinstance(tool, Mapping):
            declarations = tool.get("function_declarations", tool.get("functionDeclarations"))
            if isinstance(declarations, (list, tuple)):
                for declaration in declarations:
                    name = declaration.get("name") if isinstance(declaration, Mapping) else None
                    if not isinstance(name, str):
                        return None
                    names.add(name)
                continue
            found = _callable_name(tool)
        else:
            found = other(tool) if other is not None else None
        if found is None:
            return None
        if isinstance(found, str):
            names.add(found)
    return frozenset(names)


# --------------------------------------------------------------------------------------
# Content cut before serialisation
# --------------------------------------------------------------------------------------
def dropped_marker(count: int, what: str = "messages") -> str:
    """The first item of a list whose ``count`` oldest items were left out: ``"[N earlier messages
    truncated]"``, of the serialiser's own marker type for dropped items, so that shortening
    strings to fit never cuts it."""
    marker = _More(f"[{count} earlier {what} truncated]")
    marker.dropped = count
    return marker
