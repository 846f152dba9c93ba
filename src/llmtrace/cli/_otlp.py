"""A stored trace as an OTLP ``ExportTraceServiceRequest`` (protobuf messages, then JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from google.protobuf import json_format  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from llmtrace.store._api import SpanRecord, Trace
from llmtrace.store._sql import INT64_MAX, INT64_MIN

Encoding = Literal["otlp", "proto3"]

_KINDS = {
    "INTERNAL": Span.SPAN_KIND_INTERNAL,
    "SERVER": Span.SPAN_KIND_SERVER,
    "CLIENT": Span.SPAN_KIND_CLIENT,
    "PRODUCER": Span.SPAN_KIND_PRODUCER,
    "CONSUMER": Span.SPAN_KIND_CONSUMER,
}
_STATUS = {"UNSET": Status.STATUS_CODE_UNSET, "OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}
_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId"})


def _any_value(value: Any) -> AnyValue:
    if value is None:  # an empty element of an attribute array
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return AnyValue(int_value=value)
        try:  # beyond int64: what OTLP can carry of it (a large float read from an older store)
            return AnyValue(double_value=float(value))
        except OverflowError:
            return AnyValue(string_value=str(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, (list, tuple)):  # set even when empty: an empty array is a value
        return AnyValue(array_value=ArrayValue(values=[_any_value(v) for v in value]))
    if isinstance(value, Mapping):
        return AnyValue(kvlist_value=KeyValueList(values=_key_values(value)))
    return AnyValue(string_value=str(value))


def _key_values(attributes: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=str(key), value=_any_value(value)) for key, value in attributes.items()]


def _span(record: SpanRecord) -> Span:
    span = Span(
        trace_id=bytes.fromhex(record.trace_id),
        span_id=bytes.fromhex(record.span_id),
        trace_state=record.trace_state or "",
        parent_span_id=bytes.fromhex(record.parent_span_id) if record.parent_span_id else b"",
        flags=record.flags or 0,
        name=record.name,
        kind=_KINDS.get(record.kind.upper(), Span.SPAN_KIND_UNSPECIFIED),
        start_time_unix_nano=record.start_ns,
        end_time_unix_nano=record.end_ns,
        dropped_attributes_count=record.dropped_attributes,
        dropped_events_count=record.dropped_events,
        dropped_links_count=record.dropped_links,
        status=Status(
            code=_STATUS.get(record.status_code.upper(), Status.STATUS_CODE_UNSET),
            message=record.status_message,
        ),
    )
    span.attributes.extend(_key_values(record.attributes))
    for event in record.events:
        span.events.add(
            time_unix_nano=event.time_ns,
            name=event.name,
            attributes=_key_values(event.attributes),
            dropped_attributes_count=event.dropped_attributes,
        )
    for link in record.links:
        span.links.add(
            trace_id=bytes.fromhex(link.trace_id),
            span_id=bytes.fromhex(link.span_id),
            attributes=_key_values(link.attributes),
            dropped_attributes_count=link.dropped_attributes,
            flags=link.flags or 0,
        )
    return span


def _key(attributes: Mapping[str, Any]) -> str:
    return json.dumps(dict(attributes), sort_keys=True, default=str)


def trace_to_request(
    trace: Trace, progress: Callable[[int], None] | None = None
) -> ExportTraceServiceRequest:
    """One ResourceSpans per distinct resource (attributes and schema URL), one ScopeSpans per
    instrumentation scope within it (name, version, schema URL and attributes), as the SDK groups them."""
    request = ExportTraceServiceRequest()
    resources: dict[tuple[str, str], ResourceSpans] = {}
    scopes: dict[tuple[tuple[str, str], str, str, str, str], ScopeSpans] = {}
    for record in trace.spans:
        resource_key = (_key(record.resource), record.resource_schema_url or "")
        resource_spans = resources.get(resource_key)
        if resource_spans is None:
            resource_spans = request.resource_spans.add(
                resource=Resource(attributes=_key_values(record.resource)), schema_url=resource_key[1]
            )
            resources[resource_key] = resource_spans
        scope_key = (
            resource_key,
            record.scope,
            record.scope_version or "",
            record.scope_schema_url or "",
            _key(record.scope_attributes),
        )
        scope_spans = scopes.get(scope_key)
        if scope_spans is None:
            scope_spans = resource_spans.scope_spans.add(
                scope=InstrumentationScope(
                    name=record.scope,
                    version=scope_key[2],
                    attributes=_key_values(record.scope_attributes),
                ),
                schema_url=scope_key[3],
            )
            scopes[scope_key] = scope_spans
        scope_spans.spans.append(_span(record))
        if progress is not None:
            progress(1)
    return request


def _hex_ids(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _b64_to_hex(value) if key in _ID_FIELDS and isinstance(value, str) else _hex_ids(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids(item) for item in node]
    return node


def _b64_to_hex(value: str) -> str:
    import base64

    return base64.b64decode(value).hex()


def request_to_json(request: ExportTraceServiceRequest, encoding: Encoding = "otlp") -> str:
    """JSON of the request.

    ``otlp``: the OTLP file format (what the OpenTelemetry Collector's ``otlpjsonfile`` receiver
    and Jaeger's JSON upload read): one line of JSON Lines (the file exporter specification), the
    protobuf JSON mapping with trace and span ids as hex strings and enums as integers, as the OTLP
    specification requires. ``proto3``: the plain protobuf JSON mapping (``MessageToJson``: ids
    in base64, indented), readable by ``json_format.Parse``.
    """
    if encoding == "proto3":
        return str(json_format.MessageToJson(request, indent=2))
    data = json_format.MessageToDict(request, use_integers_for_enums=True)
    return json.dumps(_hex_ids(data), separators=(",", ":"))  # one line; the C encoder (no indent)


def parse_otlp_json(text: str) -> ExportTraceServiceRequest:
    """Read back what :func:`request_to_json` wrote with ``otlp`` encoding (hex ids)."""
    import base64

    def to_b64(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: base64.b64encode(bytes.fromhex(v)).decode() if k in _ID_FIELDS else to_b64(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [to_b64(item) for item in node]
        return node

    request = ExportTraceServiceRequest()
    json_format.ParseDict(to_b64(json.loads(text)), request)
    return request


def span_count(requests: Iterable[ExportTraceServiceRequest]) -> int:
    return sum(len(ss.spans) for r in requests for rs in r.resource_spans for ss in rs.scope_spans)
