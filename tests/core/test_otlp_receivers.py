"""The OTLP test receivers, proven with the real OpenTelemetry SDK exporters.

These tests double as usage documentation for exporter tests:

* gRPC exporters take ``endpoint=rx.endpoint, insecure=True``;
* HTTP exporters take the full signal URL, ``f"{rx.endpoint}/v1/traces"`` (``/v1/metrics``,
  ``/v1/logs``);
* build providers with ``shutdown_on_exit=False`` and shut them down inside the ``with`` block,
  so nothing exports to a closed receiver at interpreter exit;
* for failure tests give the exporter a short ``timeout``: it bounds the whole export call,
  retries included (a retry is skipped when its ~1 s, 2 s, 4 s... backoff would overrun it).
"""

from __future__ import annotations

import gzip
import importlib.metadata
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import grpc
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from packaging.version import Version

from tests.otlp_receivers import (
    GrpcReceiver,
    HangingServer,
    HttpReceiver,
    ServerTls,
    WireTap,
    closed_port,
    decode_any_value,
    make_test_pki,
)

Transport = Literal["grpc", "http"]
TRANSPORTS: tuple[Transport, ...] = ("grpc", "http")
# the OTLP/HTTP exporter honours Retry-After since 1.45; before it, it backs off ~1 s, then ~2 s
HTTP_HONOURS_RETRY_AFTER = Version(importlib.metadata.version("opentelemetry-exporter-otlp-proto-http")) >= (
    Version("1.45")
)
RESOURCE = Resource.create({"service.name": "receiver-test", "deployment.environment": "ci"})


def make_receiver(transport: Transport, **kwargs: Any) -> GrpcReceiver | HttpReceiver:
    if transport == "grpc":
        return GrpcReceiver(**kwargs)
    return HttpReceiver(**kwargs)


def span_exporter(transport: Transport, endpoint: str, **kwargs: Any) -> SpanExporter:
    if transport == "grpc":
        return GrpcSpanExporter(endpoint=endpoint, insecure=True, **kwargs)
    return HttpSpanExporter(endpoint=f"{endpoint}/v1/traces", **kwargs)


def finished_span(name: str = "lonely") -> ReadableSpan:
    """A finished SDK span, for calling ``exporter.export([...])`` directly."""
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    span = provider.get_tracer("receiver-test").start_span(name)
    span.end()
    assert isinstance(span, ReadableSpan)
    return span


@contextmanager
def tracer_provider(exporter: SpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield provider
    finally:
        provider.shutdown()


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


# --------------------------------------------------------------------------------------------
# Round trips with the real SDK exporters
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_spans_round_trip(transport: Transport) -> None:
    with make_receiver(transport) as rx, tracer_provider(span_exporter(transport, rx.endpoint)) as provider:
        tracer = provider.get_tracer("demo.test", "1.2.3")
        with tracer.start_as_current_span("invoke_agent") as parent:
            with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as child:
                child.set_attributes(
                    {
                        "demo.request.model": "gpt-4o",
                        "demo.usage.input_tokens": 12,
                        "demo.request.temperature": 0.25,
                        "demo.request.stream": False,
                        "demo.response.finish_reasons": ["stop", "length"],
                        "demo.token_ids": [1, 2, 3],
                    }
                )
                child.add_event("demo.choice", {"index": 0, "finish_reason": "stop"})
                child.set_status(Status(StatusCode.ERROR, "rate limited"))
            parent.set_status(Status(StatusCode.OK))

        spans = rx.wait_for_spans(2)

    assert [s.name for s in spans] == ["chat gpt-4o", "invoke_agent"]  # children end first
    child_span, parent_span = rx.span("chat gpt-4o"), rx.span("invoke_agent")
    assert child_span.parent_span_id == parent_span.span_id
    assert parent_span.parent_span_id is None
    assert child_span.trace_id == parent_span.trace_id
    assert len(child_span.trace_id) == 32 and len(child_span.span_id) == 16
    assert int(child_span.trace_id, 16) == child.get_span_context().trace_id
    assert child_span.kind == "CLIENT" and parent_span.kind == "INTERNAL"

    attrs = child_span.attributes
    assert attrs == {
        "demo.request.model": "gpt-4o",
        "demo.usage.input_tokens": 12,
        "demo.request.temperature": 0.25,
        "demo.request.stream": False,
        "demo.response.finish_reasons": ["stop", "length"],
        "demo.token_ids": [1, 2, 3],
    }
    assert type(attrs["demo.usage.input_tokens"]) is int
    assert type(attrs["demo.request.temperature"]) is float
    assert type(attrs["demo.request.stream"]) is bool

    assert child_span.events == [("demo.choice", {"index": 0, "finish_reason": "stop"})]
    assert (child_span.status_code, child_span.status_message) == ("ERROR", "rate limited")
    assert (parent_span.status_code, parent_span.status_message) == ("OK", "")
    assert child_span.resource["service.name"] == "receiver-test"
    assert child_span.resource["deployment.environment"] == "ci"
    assert (child_span.scope, child_span.scope_version) == ("demo.test", "1.2.3")
    assert 0 < child_span.start_ns <= child_span.end_ns
    assert rx.call_count("traces") == 2  # SimpleSpanProcessor: one export per span


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_metrics_round_trip(transport: Transport) -> None:
    with make_receiver(transport) as rx:
        exporter = (
            GrpcMetricExporter(endpoint=rx.endpoint, insecure=True)
            if transport == "grpc"
            else HttpMetricExporter(endpoint=f"{rx.endpoint}/v1/metrics")
        )
        # A long interval: only force_flush()/shutdown() export, so the test is deterministic.
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        provider = MeterProvider(metric_readers=[reader], resource=RESOURCE, shutdown_on_exit=False)
        try:
            meter = provider.get_meter("demo.test")
            tokens = meter.create_counter("demo.client.token.usage.total", unit="{token}")
            duration = meter.create_histogram("demo.client.operation.duration", unit="s")
            tokens.add(3, {"demo.token.type": "input"})
            tokens.add(4, {"demo.token.type": "input"})
            tokens.add(5, {"demo.token.type": "output"})
            duration.record(0.5, {"demo.operation.name": "chat"})
            duration.record(7.0, {"demo.operation.name": "chat"})
            assert provider.force_flush(timeout_millis=5_000)

            token_points = rx.wait_for_metric("demo.client.token.usage.total")
            (hist,) = rx.wait_for_metric("demo.client.operation.duration")
        finally:
            provider.shutdown()

    by_type = {p.attributes["demo.token.type"]: p for p in token_points}
    assert set(by_type) == {"input", "output"}
    assert by_type["input"].value == 7 and type(by_type["input"].value) is int
    assert by_type["output"].value == 5
    for point in token_points:
        assert (point.kind, point.unit, point.is_monotonic) == ("sum", "{token}", True)
        assert point.temporality == "CUMULATIVE"
        assert point.resource["service.name"] == "receiver-test"
        assert point.scope == "demo.test"

    assert (hist.kind, hist.unit) == ("histogram", "s")
    assert hist.attributes == {"demo.operation.name": "chat"}
    assert hist.count == 2 and hist.sum == 7.5
    assert (hist.min, hist.max) == (0.5, 7.0)
    assert hist.explicit_bounds is not None and hist.bucket_counts is not None
    assert len(hist.bucket_counts) == len(hist.explicit_bounds) + 1
    assert sum(hist.bucket_counts) == 2
    assert hist.value is None and hist.is_monotonic is None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_log_event_round_trip(transport: Transport) -> None:
    with make_receiver(transport) as rx:
        exporter = (
            GrpcLogExporter(endpoint=rx.endpoint, insecure=True)
            if transport == "grpc"
            else HttpLogExporter(endpoint=f"{rx.endpoint}/v1/logs")
        )
        logger_provider = LoggerProvider(resource=RESOURCE, shutdown_on_exit=False)
        logger_provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        tracer_provider_ = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
        try:
            logger = logger_provider.get_logger("demo.test")
            # 1.45: keyword emit() on the SDK Logger is the event API (opentelemetry._events is gone).
            with tracer_provider_.get_tracer("t").start_as_current_span("chat") as span:
                logger.emit(
                    event_name="demo.client.inference.operation.details",
                    body={"role": "assistant", "content": "hi", "tokens": [1, 2]},
                    attributes={"demo.provider.name": "openai", "demo.usage.output_tokens": 2},
                    severity_number=SeverityNumber.INFO,
                )
            logger.emit(body=b"\x00raw", severity_number=SeverityNumber.WARN)
            logs = rx.wait_for_logs(2)
        finally:
            logger_provider.shutdown()
            tracer_provider_.shutdown()

    event, plain = logs
    assert event.event_name == "demo.client.inference.operation.details"
    assert event.body == {"role": "assistant", "content": "hi", "tokens": [1, 2]}
    assert event.attributes == {"demo.provider.name": "openai", "demo.usage.output_tokens": 2}
    assert event.severity_number == SeverityNumber.INFO.value
    assert event.trace_id == format(span.get_span_context().trace_id, "032x")
    assert event.span_id == format(span.get_span_context().span_id, "016x")
    assert event.resource["service.name"] == "receiver-test"
    assert event.scope == "demo.test"
    assert plain.event_name == ""
    assert plain.body == b"\x00raw"
    assert plain.trace_id is None and plain.span_id is None
    assert plain.severity_number == SeverityNumber.WARN.value


# --------------------------------------------------------------------------------------------
# Headers and compression
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_env_headers_arrive(transport: Transport, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s3cret,X-Tenant=acme")
    with make_receiver(transport) as rx:
        exporter = span_exporter(transport, rx.endpoint)  # reads the env var when constructed
        assert exporter.export([finished_span()]) is SpanExportResult.SUCCESS
        exporter.shutdown()
        (headers,) = rx.headers("traces")
    assert headers["x-api-key"] == "s3cret"
    assert headers["x-tenant"] == "acme"
    assert headers["user-agent"].startswith(("OTel-OTLP-Exporter-Python", "grpc-python"))
    if transport == "http":
        assert headers["content-type"] == "application/x-protobuf"


@pytest.mark.parametrize(
    ("transport", "compression"),
    [
        ("grpc", grpc.Compression.Gzip),
        ("http", HttpCompression.Gzip),
        ("http", HttpCompression.Deflate),
    ],
    ids=["grpc-gzip", "http-gzip", "http-deflate"],
)
def test_compressed_exports_are_decoded(transport: Transport, compression: Any) -> None:
    with make_receiver(transport) as rx, WireTap(rx.port) as tap:
        endpoint = tap.endpoint if transport == "grpc" else rx.endpoint
        exporter = span_exporter(transport, endpoint, compression=compression)
        assert exporter.export([finished_span("squeezed")]) is SpanExportResult.SUCCESS
        exporter.shutdown()
        assert [s.name for s in rx.spans()] == ["squeezed"]
        if transport == "http":
            assert rx.headers()[0]["content-encoding"] == compression.value
            return
        # gRPC decompresses transparently and hides grpc-encoding from the servicer: the tap sees it
        assert "grpc-encoding" not in rx.headers()[0]
        (call,) = tap.calls()
    assert (call.signal, call.headers["grpc-encoding"], call.headers[":method"]) == ("traces", "gzip", "POST")
    assert call.headers["content-type"] == "application/grpc"
    (message,) = call.messages
    assert message.compressed and message.payload[:2] == b"\x1f\x8b"
    assert [s.name for s in call.spans()] == ["squeezed"]


def test_wire_tap_reads_every_call_of_a_connection() -> None:
    """Later calls on one connection refer to headers of the first through HPACK's dynamic table."""
    with GrpcReceiver() as rx, WireTap(rx.port) as tap:
        exporter = GrpcSpanExporter(endpoint=tap.endpoint, insecure=True, headers={"x-tenant": "acme"})
        for name in ("first", "second", "third"):
            assert exporter.export([finished_span(name)]) is SpanExportResult.SUCCESS
        exporter.shutdown()
        calls = tap.calls()
    assert [[s.name for s in call.spans()] for call in calls] == [["first"], ["second"], ["third"]]
    assert {call.headers["x-tenant"] for call in calls} == {"acme"}
    assert all(call.headers.get("grpc-encoding") is None for call in calls)
    assert all(not m.compressed for call in calls for m in call.messages)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tls_receivers(transport: Transport, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A TLS receiver serves ``https://``; with ``mutual`` it takes only clients with a certificate
    of its CA, and records the certificate's name."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # the SDK's HTTP exporter lets them win
        monkeypatch.delenv(name, raising=False)
    pki = make_test_pki(tmp_path)
    with make_receiver(transport, tls=ServerTls.of(pki, mutual=True)) as rx:
        assert rx.endpoint == f"https://127.0.0.1:{rx.port}"
        if transport == "grpc":
            good: SpanExporter = GrpcSpanExporter(
                endpoint=rx.endpoint,
                credentials=grpc.ssl_channel_credentials(
                    pki.ca_cert.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
                ),
            )
            anonymous: SpanExporter = GrpcSpanExporter(
                endpoint=rx.endpoint,
                credentials=grpc.ssl_channel_credentials(pki.ca_cert.read_bytes()),
                timeout=1,
            )
        else:
            url = f"{rx.endpoint}/v1/traces"
            good = HttpSpanExporter(
                endpoint=url,
                certificate_file=str(pki.ca_cert),
                client_certificate_file=str(pki.client_cert),
                client_key_file=str(pki.client_key),
            )
            anonymous = HttpSpanExporter(endpoint=url, certificate_file=str(pki.ca_cert), timeout=1)
        assert anonymous.export([finished_span("refused")]) is SpanExportResult.FAILURE
        assert good.export([finished_span("welcome")]) is SpanExportResult.SUCCESS
        good.shutdown()
        anonymous.shutdown()
        assert [s.name for s in rx.spans()] == ["welcome"]
        assert rx.client_names() == [pki.client_name]
        if isinstance(rx, HttpReceiver):
            assert rx.tls_failures >= 1


def test_http_receiver_rejects_bad_requests() -> None:
    with HttpReceiver() as rx:

        def post(path: str, body: bytes, **headers: str) -> int:
            request = urllib.request.Request(f"{rx.endpoint}{path}", data=body, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as error:
                return int(error.code)

        proto = {"Content-Type": "application/x-protobuf"}
        assert post("/v1/nope", b"", **proto) == 404
        assert post("/v1/traces", b"{}", **{"Content-Type": "application/json"}) == 415
        assert post("/v1/traces", b"\xff\xff\xff", **proto) == 400
        assert post("/v1/traces", b"not gzip", **proto, **{"Content-Encoding": "gzip"}) == 400
        assert post("/v1/traces", gzip.compress(b""), **proto, **{"Content-Encoding": "gzip"}) == 200
        assert rx.spans() == []  # an empty request is valid and holds no spans
        assert rx.call_count("traces") == 4  # the 404 is not an export call


def test_decode_any_value_covers_every_variant() -> None:
    value = common_pb2.AnyValue(
        kvlist_value=common_pb2.KeyValueList(
            values=[
                common_pb2.KeyValue(key="s", value=common_pb2.AnyValue(string_value="x")),
                common_pb2.KeyValue(key="b", value=common_pb2.AnyValue(bool_value=True)),
                common_pb2.KeyValue(key="i", value=common_pb2.AnyValue(int_value=-3)),
                common_pb2.KeyValue(key="d", value=common_pb2.AnyValue(double_value=1.5)),
                common_pb2.KeyValue(key="y", value=common_pb2.AnyValue(bytes_value=b"\x01")),
                common_pb2.KeyValue(
                    key="a",
                    value=common_pb2.AnyValue(
                        array_value=common_pb2.ArrayValue(values=[common_pb2.AnyValue(int_value=1)])
                    ),
                ),
                common_pb2.KeyValue(key="n", value=common_pb2.AnyValue()),
            ]
        )
    )
    assert decode_any_value(value) == {
        "s": "x",
        "b": True,
        "i": -3,
        "d": 1.5,
        "y": b"\x01",
        "a": [1],
        "n": None,
    }


# --------------------------------------------------------------------------------------------
# Failure injection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transport", "status"),
    [("grpc", grpc.StatusCode.UNAVAILABLE), ("http", 503)],
)
def test_refusing_receiver_makes_export_fail(transport: Transport, status: Any) -> None:
    with make_receiver(transport, status=status) as rx:
        # timeout=0.5 < the first backoff (1 s +-20%): one attempt, then FAILURE, no sleeping.
        exporter = span_exporter(transport, rx.endpoint, timeout=0.5)
        result, elapsed = timed(lambda: exporter.export([finished_span()]))
        exporter.shutdown()
        assert result is SpanExportResult.FAILURE
        assert elapsed < 2
        assert rx.call_count() == 1
        assert rx.spans() == []  # refused payloads are not stored


@pytest.mark.parametrize(
    ("transport", "status"),
    [("grpc", grpc.StatusCode.UNAVAILABLE), ("http", 503)],
)
def test_exporter_retries_until_receiver_accepts(transport: Transport, status: Any) -> None:
    # retry_after=0 -> RetryInfo trailer / Retry-After: 0, so the SDK retries without backoff.
    with make_receiver(transport, status=status, fail_times=2, retry_after=0) as rx:
        exporter = span_exporter(transport, rx.endpoint, timeout=5)
        result, elapsed = timed(lambda: exporter.export([finished_span("persistent")]))
        exporter.shutdown()
        assert result is SpanExportResult.SUCCESS
        assert elapsed < (2 if transport == "grpc" or HTTP_HONOURS_RETRY_AFTER else 5)
        assert rx.call_count("traces") == 3
        assert [s.name for s in rx.spans()] == ["persistent"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_slow_receiver_times_out_and_stops_fast(transport: Transport) -> None:
    rx = make_receiver(transport, delay=30)
    with rx:
        exporter = span_exporter(transport, rx.endpoint, timeout=0.5)
        result, elapsed = timed(lambda: exporter.export([finished_span()]))
        exporter.shutdown()
        assert result is SpanExportResult.FAILURE
        assert elapsed < 2.5
        stop_started = time.monotonic()
    # Leaving the block interrupts the handler still sleeping in `delay`.
    assert time.monotonic() - stop_started < 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hanging_server_export_returns_within_timeout(transport: Transport) -> None:
    with HangingServer() as hang:
        exporter = span_exporter(transport, hang.endpoint, timeout=1)
        result, elapsed = timed(lambda: exporter.export([finished_span()]))
        exporter.shutdown()
        assert result is SpanExportResult.FAILURE
        assert 0.8 < elapsed < 4
        assert hang.connections_accepted >= 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_closed_port_export_fails_fast(transport: Transport) -> None:
    exporter = span_exporter(transport, f"http://127.0.0.1:{closed_port()}", timeout=0.5)
    result, elapsed = timed(lambda: exporter.export([finished_span()]))
    exporter.shutdown()
    assert result is SpanExportResult.FAILURE
    assert elapsed < 2


# --------------------------------------------------------------------------------------------
# Receiver mechanics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wait_for_reports_what_arrived_on_timeout(transport: Transport) -> None:
    with make_receiver(transport) as rx:
        exporter = span_exporter(transport, rx.endpoint)
        exporter.export([finished_span("only-one")])
        exporter.shutdown()
        with pytest.raises(AssertionError, match="only-one"):
            rx.wait_for_spans(2, timeout=0.2)
        with pytest.raises(AssertionError, match="metric 'missing'"):
            rx.wait_for_metric("missing", timeout=0.1)
        with pytest.raises(AssertionError, match="exactly one span named 'nope'"):
            rx.span("nope")
        rx.clear()
        assert rx.spans() == [] and rx.call_count() == 0


def test_wait_for_spans_wakes_on_arrival() -> None:
    with GrpcReceiver() as rx:
        exporter = GrpcSpanExporter(endpoint=rx.endpoint, insecure=True)
        timer = threading.Timer(0.2, lambda: exporter.export([finished_span("late")]))
        timer.start()
        try:
            (span,) = rx.wait_for_spans(1, timeout=5)
        finally:
            timer.join()
            exporter.shutdown()
        assert span.name == "late"


def test_receivers_release_ports_and_threads() -> None:
    before = {t.name for t in threading.enumerate()}
    receivers: list[GrpcReceiver | HttpReceiver | HangingServer] = [
        GrpcReceiver(),
        HttpReceiver(),
        HangingServer(),
    ]
    ports = []
    for receiver in receivers:
        with receiver:
            ports.append(receiver.port)
            assert receiver.endpoint == f"http://127.0.0.1:{receiver.port}"
        with pytest.raises(RuntimeError, match="not running"):
            _ = receiver.port
    assert all(ports)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        leftover = {t.name for t in threading.enumerate() if t.name.startswith("otlp-")} - before
        if not leftover:
            break
        time.sleep(0.05)
    assert not leftover
    # Receivers can be restarted (fresh port) after stopping.
    with GrpcReceiver() as rx:
        assert rx.port > 0
