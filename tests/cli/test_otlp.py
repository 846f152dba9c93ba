"""Stored spans as OTLP (``llmtrace export``'s encoder), on hand-made records."""

from __future__ import annotations

from dataclasses import replace

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from llmtrace.cli._otlp import parse_otlp_json, request_to_json, trace_to_request
from llmtrace.store import SpanRecord, Trace

BASE = SpanRecord(
    trace_id="0af7651916cd43dd8448eb211c80319c",
    span_id="00f067aa0ba902b7",
    parent_span_id=None,
    name="chat gpt-4o",
    kind="CLIENT",
    start_ns=1_700_000_000_000_000_000,
    end_ns=1_700_000_001_000_000_000,
    status_code="UNSET",
    status_message="",
    attributes={},
    events=(),
    links=(),
    resource={"service.name": "svc"},
    scope="llmtrace",
)


def _span(n: int, **changes: object) -> SpanRecord:
    return replace(BASE, span_id=f"{n:016x}", **changes)  # type: ignore[arg-type]


def test_scopes_are_grouped_by_name_version_schema_url_and_attributes() -> None:
    schema = "https://opentelemetry.io/schemas/1.26.0"
    spans = (
        _span(1, scope_version="1.0", scope_schema_url=schema),
        _span(2, scope_version="1.0", scope_schema_url=schema),
        _span(3, scope_version="2.0", scope_schema_url=schema),
        _span(4, scope_version="1.0"),
        _span(5, scope_version="1.0", scope_schema_url=schema, scope_attributes={"tier": "gold"}),
        _span(6),  # a span stored before schema version 3: no version, no schema URL
        _span(7, resource_schema_url="https://opentelemetry.io/schemas/1.21.0"),
    )
    request = parse_otlp_json(request_to_json(trace_to_request(Trace(BASE.trace_id, spans))))
    grouped = [
        (
            rs.schema_url,
            ss.scope.name,
            ss.scope.version,
            ss.schema_url,
            {kv.key: kv.value.string_value for kv in ss.scope.attributes},
            [int(s.span_id.hex(), 16) for s in ss.spans],
        )
        for rs in request.resource_spans
        for ss in rs.scope_spans
    ]
    assert grouped == [
        ("", "llmtrace", "1.0", schema, {}, [1, 2]),
        ("", "llmtrace", "2.0", schema, {}, [3]),
        ("", "llmtrace", "1.0", "", {}, [4]),
        ("", "llmtrace", "1.0", schema, {"tier": "gold"}, [5]),
        ("", "llmtrace", "", "", {}, [6]),
        ("https://opentelemetry.io/schemas/1.21.0", "llmtrace", "", "", {}, [7]),
    ]
    assert len(request.resource_spans) == 2  # same attributes, another schema URL


def _attribute(value: object) -> AnyValue:
    request = trace_to_request(Trace(BASE.trace_id, (_span(1, attributes={"a": value}),)))
    (attribute,) = request.resource_spans[0].scope_spans[0].spans[0].attributes
    return attribute.value


def test_attribute_values_keep_their_otlp_type() -> None:
    assert _attribute([]).WhichOneof("value") == "array_value"  # an empty array is still an array
    assert len(_attribute([]).array_value.values) == 0
    assert _attribute({}).WhichOneof("value") == "kvlist_value"
    empty, text = _attribute([None, "x"]).array_value.values
    assert empty.WhichOneof("value") is None and text.string_value == "x"  # not the string "None"
    # integers OTLP cannot carry (a large float that an older PostgreSQL store gave back as one)
    assert _attribute(10**300).double_value == 1e300
    assert _attribute(-(2**63)).int_value == -(2**63)
    assert _attribute(2**63).double_value == 2.0**63
    assert _attribute(10**400).string_value == "1" + "0" * 400


def test_trace_state_flags_and_dropped_counts() -> None:
    from llmtrace.store import SpanEvent, SpanLink

    record = _span(
        1,
        trace_state="vendor=v1",
        flags=0x300,
        dropped_attributes=1,
        dropped_events=2,
        dropped_links=3,
        events=(SpanEvent("retry", BASE.start_ns, {"n": 1}, dropped_attributes=4),),
        links=(SpanLink("1" * 32, "2" * 16, {}, dropped_attributes=5, flags=0x100),),
    )
    request = parse_otlp_json(request_to_json(trace_to_request(Trace(BASE.trace_id, (record,)))))
    (span,) = request.resource_spans[0].scope_spans[0].spans
    assert (span.trace_state, span.flags) == ("vendor=v1", 0x300)
    assert (span.dropped_attributes_count, span.dropped_events_count, span.dropped_links_count) == (1, 2, 3)
    assert span.events[0].dropped_attributes_count == 4
    assert (span.links[0].dropped_attributes_count, span.links[0].flags) == (5, 0x100)
    old = parse_otlp_json(request_to_json(trace_to_request(Trace(BASE.trace_id, (_span(2),)))))
    (old_span,) = old.resource_spans[0].scope_spans[0].spans
    assert (old_span.trace_state, old_span.flags, old_span.dropped_attributes_count) == ("", 0, 0)
