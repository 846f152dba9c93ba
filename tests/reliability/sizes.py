from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

MAX_SPAN_BYTES = 1 << 20


def _value_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(_value_size(v) for v in value)
    return 8


def _attributes_size(attributes: Any) -> int:
    return sum(len(k) + _value_size(v) for k, v in (attributes or {}).items())


def span_size(span: ReadableSpan) -> int:
    """Bytes of the span's attribute keys and values, its events' names and attributes, and its status."""
    size = len(span.name) + _attributes_size(span.attributes)
    size += sum(len(e.name) + _attributes_size(e.attributes) for e in span.events)
    return size + len(span.status.description or "")
