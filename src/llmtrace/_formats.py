"""The ``gen_ai.output.type`` a model request asks for, from the provider's own format parameter.

Integrations pass what the request carried: OpenAI's ``response_format`` (``{"type": "json_object"}``,
``{"type": "json_schema", ...}``, ``{"type": "text"}``, or a schema class the SDK turns into one),
Ollama's ``format`` (``"json"`` or a JSON schema), Gemini's ``response_mime_type``. Anything else,
or no format at all, is None: the attribute is set only when the request sets an output format.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmtrace import semconv

_JSON_TYPES = frozenset({"json_object", "json_schema", "json"})
_SCHEMA_KEYS = ("type", "properties", "$schema", "json_schema")


def output_type(response_format: Any = None, format: Any = None, mime_type: Any = None) -> str | None:
    """``json`` or ``text`` for a request that sets an output format, else None. Never raises."""
    try:
        if isinstance(response_format, Mapping):
            kind = response_format.get("type")
            if kind in _JSON_TYPES:
                return semconv.OUTPUT_TYPE_JSON
            if kind == "text":
                return semconv.OUTPUT_TYPE_TEXT
        elif isinstance(response_format, type):
            return semconv.OUTPUT_TYPE_JSON  # a schema class (pydantic model, TypedDict)
        if format == "json" or (isinstance(format, Mapping) and any(k in format for k in _SCHEMA_KEYS)):
            return semconv.OUTPUT_TYPE_JSON
        if isinstance(mime_type, str):
            if mime_type == "application/json":
                return semconv.OUTPUT_TYPE_JSON
            if mime_type == "text/plain":
                return semconv.OUTPUT_TYPE_TEXT
    except Exception:  # an odd mapping
        return None
    return None
