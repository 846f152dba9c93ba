"""``llmtrace export`` against the SDK's own OTLP exporter, on both backends.

The same SDK spans go straight to a real OTLP/HTTP receiver and through the store writer into the
store; what ``llmtrace export`` then writes must equal what the receiver got, field by field
(resource and its schema URL, scope name, version, attributes and schema URL, ids, trace state,
flags, kind, times, attributes, events, links, status and every dropped count). Only the order of
attributes is not compared: PostgreSQL's JSONB keeps object keys in its own order, and OTLP
attributes are a map.
"""

from __future__ import annotations

import base64
import importlib.metadata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from llmtrace import semconv
from llmtrace.cli import cli
from llmtrace.cli._otlp import parse_otlp_json
from llmtrace.store import StoreSpanProcessor, open_store
from llmtrace.store._exporter import store_writer
from tests.otlp_receivers import HttpReceiver

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
RESOURCE_SCHEMA = "https://opentelemetry.io/schemas/1.21.0"
SCOPE_SCHEMA = "https://opentelemetry.io/schemas/1.26.0"
REMOTE_PARENT = SpanContext(
    TRACE_ID,
    0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "v1"), ("other", "x-2")]),
)
LINKED = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
LINKED_LOCAL = SpanContext(0x9ABC, 0xDEF0, is_remote=False)
ATTRIBUTES: dict[str, Any] = {  # 10 attributes: the span limit; one more drops the first
    "filler": "dropped by the attribute limit",
    "str": "héllo",
    "bool": True,
    "int": -(2**62),
    "float": 0.25,
    "large_float": 1e16,  # PostgreSQL's JSONB gave these back as integers
    "huge_float": -1e300,
    "ints": (1, 2, 3),
    "strs_with_none": ("a", None),
    "empty": (),
}
# before 1.43 the SDK's OTLP encoder cannot encode None in an array: it logs an error and sends the
# span without that attribute (the store keeps it, with an empty value, as 1.43+ sends it: asserted below)
_ENCODER = importlib.metadata.version("opentelemetry-exporter-otlp-proto-common")
SDK_SENDS_NONE_IN_ARRAYS = tuple(int(part) for part in _ENCODER.split(".")[:2]) >= (1, 43)
LIMITS = SpanLimits(
    max_span_attributes=10, max_events=2, max_links=2, max_event_attributes=2, max_link_attributes=1
)


def _emit(*processors: Any) -> None:
    """Five spans, one of each kind, from three scopes (two share a name, not a version)."""
    provider = TracerProvider(
        resource=Resource.create(
            {semconv.SERVICE_NAME: "round-trip", "host.ports": (80, 443)}, RESOURCE_SCHEMA
        ),
        span_limits=LIMITS,
    )
    for processor in processors:
        provider.add_span_processor(processor)
    lib = provider.get_tracer(
        "my.lib", "1.2.3", SCOPE_SCHEMA, attributes={"scope.tier": "gold", "scope.n": 2}
    )
    lib_v2 = provider.get_tracer("my.lib", "2.0.0")
    plain = provider.get_tracer("plain.lib")
    with lib.start_as_current_span(
        "root",
        context=set_span_in_context(NonRecordingSpan(REMOTE_PARENT)),
        kind=SpanKind.SERVER,
        attributes=ATTRIBUTES,
        links=[
            Link(LINKED, {"dropped": "by the link limit"}),
            Link(LINKED, {"link.kind": "follows", "n": 2}),  # one attribute over the limit
            Link(LINKED_LOCAL),
        ],
    ) as root:
        root.set_attribute("late", "over the limit")
        root.add_event("dropped by the event limit")
        root.add_event("retry", {"attempt": 2, "delay_s": 0.5, "reason": "429"}, timestamp=1_700_000_000_000)
        root.add_event("done")
        root.set_status(Status(StatusCode.ERROR, "upstream failed"))
        with plain.start_as_current_span(
            "child", kind=SpanKind.CLIENT, links=[Link(root.get_span_context())]
        ):
            pass
        with lib.start_as_current_span("produce", kind=SpanKind.PRODUCER) as produce:
            produce.set_status(Status(StatusCode.OK))
        with lib_v2.start_as_current_span("consume", kind=SpanKind.CONSUMER):
            pass
        with plain.start_as_current_span("step"):
            pass
    provider.shutdown()


def _b64(value: int, size: int) -> str:
    """An id as the protobuf JSON mapping writes it."""
    return base64.b64encode(value.to_bytes(size, "big")).decode()


def _canonical(node: Any) -> Any:
    """The JSON form of a message with every attribute list in key order."""
    if isinstance(node, dict):
        return {key: _canonical(value) for key, value in node.items()}
    if isinstance(node, list):
        items = [_canonical(value) for value in node]
        if items and all(isinstance(item, dict) and "key" in item for item in items):
            items.sort(key=lambda item: item["key"])
        return items
    return node


def _by_span(requests: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Each span with the resource and scope it was sent under, by span id."""
    out: dict[str, dict[str, Any]] = {}
    for request in requests:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    out[span.span_id.hex()] = _canonical(
                        {
                            "resource": json_format.MessageToDict(resource_spans.resource),
                            "resource_schema_url": resource_spans.schema_url,
                            "scope": json_format.MessageToDict(scope_spans.scope),
                            "scope_schema_url": scope_spans.schema_url,
                            "span": json_format.MessageToDict(span),
                        }
                    )
    return out


def _without_attribute(spans: dict[str, dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """``spans`` (as :func:`_by_span` gives them) with the span attribute ``key`` taken out."""
    out = {}
    for span_id, entry in spans.items():
        span = dict(entry["span"])
        if "attributes" in span:
            span["attributes"] = [kv for kv in span["attributes"] if kv["key"] != key]
        out[span_id] = {**entry, "span": span}
    return out


def test_export_equals_what_the_sdk_sends_over_otlp(store_url: str, tmp_path: Path) -> None:
    store = open_store(store_url)
    try:
        with HttpReceiver() as receiver:
            _emit(
                SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")),
                StoreSpanProcessor(store_writer(store)),
            )
            receiver.wait_for_spans(5)
            direct = _by_span(receiver.requests("traces"))
    finally:
        store.close()
    target = tmp_path / "trace.json"
    result = CliRunner().invoke(
        cli, ["--store", store_url, "export", format(TRACE_ID, "032x"), "-o", str(target)]
    )
    assert result.exit_code == 0, result.output
    exported = _by_span([parse_otlp_json(target.read_text())])

    comparable = exported if SDK_SENDS_NONE_IN_ARRAYS else _without_attribute(exported, "strs_with_none")
    assert comparable == direct

    # what the comparison covers, so that it cannot pass on two empty or stripped sides
    spans = {entry["span"]["name"]: entry for entry in exported.values()}
    assert sorted(spans) == ["child", "consume", "produce", "root", "step"]
    root = spans["root"]
    assert (root["resource_schema_url"], root["scope_schema_url"]) == (RESOURCE_SCHEMA, SCOPE_SCHEMA)
    assert root["scope"] == {
        "name": "my.lib",
        "version": "1.2.3",
        "attributes": [
            {"key": "scope.n", "value": {"intValue": "2"}},
            {"key": "scope.tier", "value": {"stringValue": "gold"}},
        ],
    }
    assert (spans["consume"]["scope"], spans["consume"]["scope_schema_url"]) == (
        {"name": "my.lib", "version": "2.0.0"},
        "",
    )
    assert root["span"]["traceState"] == "vendor=v1,other=x-2"
    assert root["span"]["flags"] == 0x300  # the parent is remote
    assert spans["child"]["span"]["flags"] == 0x100  # the parent is known to be local
    assert (
        root["span"]["kind"] == "SPAN_KIND_SERVER"
        and spans["consume"]["span"]["kind"] == "SPAN_KIND_CONSUMER"
    )
    assert root["span"]["status"] == {"code": "STATUS_CODE_ERROR", "message": "upstream failed"}
    assert (
        root["span"]["droppedAttributesCount"],
        root["span"]["droppedEventsCount"],
        root["span"]["droppedLinksCount"],
    ) == (1, 1, 1)
    attributes = {kv["key"]: kv["value"] for kv in root["span"]["attributes"]}
    assert "filler" not in attributes and attributes["late"] == {"stringValue": "over the limit"}
    assert attributes["large_float"] == {"doubleValue": 1e16}
    assert attributes["huge_float"] == {"doubleValue": -1e300}
    assert attributes["strs_with_none"] == {"arrayValue": {"values": [{"stringValue": "a"}, {}]}}
    assert attributes["empty"] == {"arrayValue": {}}
    retry, done = root["span"]["events"]
    assert (retry["name"], retry["timeUnixNano"], retry["droppedAttributesCount"]) == (
        "retry",
        "1700000000000",
        1,
    )
    assert done["name"] == "done" and "droppedAttributesCount" not in done
    remote_link, local_link = root["span"]["links"]
    assert remote_link == {
        "traceId": _b64(0x1234, 16),
        "spanId": _b64(0x5678, 8),
        "attributes": [{"key": "n", "value": {"intValue": "2"}}],
        "droppedAttributesCount": 1,
        "flags": 0x300,
    }
    assert local_link == {"traceId": _b64(0x9ABC, 16), "spanId": _b64(0xDEF0, 8), "flags": 0x100}
    (child_link,) = spans["child"]["span"]["links"]
    assert child_link["flags"] == 0x100
