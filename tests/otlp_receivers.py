"""Real OTLP receivers on 127.0.0.1 for tests that check the wire format.

Every receiver binds an ephemeral port on ``127.0.0.1`` when entered (or on ``start()``) and
releases everything (server, worker threads, client sockets) on exit (or ``stop()``).

* :class:`GrpcReceiver` - OTLP/gRPC TraceService, MetricsService and LogsService.
* :class:`HttpReceiver` - OTLP/HTTP protobuf on ``/v1/traces``, ``/v1/metrics``, ``/v1/logs``
  (gzip and deflate ``Content-Encoding`` accepted).
* :class:`HangingServer` - accepts TCP connections, drains what it is sent and never answers.
* :func:`closed_port` - a port on which nothing listens.
* :class:`WireTap` - a TCP relay in front of a receiver that keeps the bytes the client sent and
  decodes them as HTTP/2 (gRPC): the request headers (``grpc-encoding``) and each message as it
  travelled (compressed flag and payload), which the gRPC server hides from its servicer.
* :func:`make_test_pki` - a self-signed CA and a server and a client certificate signed by it, for
  the receivers' TLS (``tls=ServerTls(...)``; ``client_ca`` makes the client certificate required).

Both receivers decode what they stored into plain Python values::

    with GrpcReceiver() as rx:
        provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=rx.endpoint, insecure=True))
        )
        with provider.get_tracer("t").start_as_current_span("chat gpt-4o"):
            pass
        provider.shutdown()
        (span,) = rx.wait_for_spans(1)
        assert span.name == "chat gpt-4o" and span.resource["service.name"] == "svc"

For OTLP/HTTP use ``HttpReceiver`` and pass ``f"{rx.endpoint}/v1/traces"`` (the signal path is
required when the endpoint is given to the exporter as an argument).

Failure injection: ``status`` (a ``grpc.StatusCode`` or an HTTP status) answers export calls with
that error, ``fail_times`` limits it to the first N calls (later calls succeed, to test retries),
``retry_after`` sends a retry hint (gRPC ``google.rpc.RetryInfo`` trailer / HTTP ``Retry-After``)
that the OTel exporters honour instead of their 1 s, 2 s, 4 s ... backoff, and ``delay`` sleeps
before answering. Refused calls are counted (``call_count()``) and their headers recorded, but their
payload is not stored: ``spans()`` & co. only show what the receiver acknowledged.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import ipaddress
import selectors
import socket
import socketserver
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import grpc
import hpack
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = [
    "GrpcReceiver",
    "HangingServer",
    "HttpReceiver",
    "ReceivedLog",
    "ReceivedPoint",
    "ReceivedSpan",
    "ServerTls",
    "Signal",
    "TestPki",
    "WireCall",
    "WireMessage",
    "WireTap",
    "closed_port",
    "decode_any_value",
    "decode_attributes",
    "make_test_pki",
]

Signal = Literal["traces", "metrics", "logs"]
_SIGNALS: tuple[Signal, ...] = ("traces", "metrics", "logs")

_REQUEST_TYPES: dict[Signal, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
}
_RESPONSE_TYPES: dict[Signal, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceResponse,
    "metrics": metrics_service_pb2.ExportMetricsServiceResponse,
    "logs": logs_service_pb2.ExportLogsServiceResponse,
}

_T = TypeVar("_T")
_S = TypeVar("_S", bound="_Server")


# --------------------------------------------------------------------------------------------
# Decoded values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str  # 32 lowercase hex chars
    span_id: str  # 16 lowercase hex chars
    parent_span_id: str | None
    kind: str  # "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER" or "UNSPECIFIED"
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: str  # "UNSET", "OK" or "ERROR"
    status_message: str
    resource: dict[str, Any]
    scope: str
    start_ns: int
    end_ns: int
    # (trace_id, span_id, attributes) of each link
    links: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    scope_version: str = ""


@dataclass(frozen=True)
class ReceivedPoint:
    """One data point of a metric; which fields are set depends on ``kind``."""

    name: str
    kind: str  # "sum", "gauge", "histogram", "exponential_histogram" or "summary"
    unit: str
    description: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    start_ns: int
    time_ns: int
    value: int | float | None = None  # sum / gauge: as_int or as_double
    is_monotonic: bool | None = None  # sum only
    temporality: str | None = None  # "CUMULATIVE" / "DELTA" for sum and histograms
    count: int | None = None  # histograms / summary
    sum: float | None = None  # histograms / summary (None when the exporter left it out)
    bucket_counts: list[int] | None = None  # explicit-bucket histogram
    explicit_bounds: list[float] | None = None  # explicit-bucket histogram
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class ReceivedLog:
    event_name: str  # "" when the record is not an event
    body: Any
    attributes: dict[str, Any]
    trace_id: str | None
    span_id: str | None
    severity_number: int
    severity_text: str
    resource: dict[str, Any]
    scope: str
    time_ns: int
    observed_time_ns: int


def decode_any_value(value: common_pb2.AnyValue) -> Any:
    """Turn an OTLP ``AnyValue`` into str/bool/int/float/bytes/list/dict (None if unset)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [decode_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return decode_attributes(value.kvlist_value.values)
    return getattr(value, which)


def decode_attributes(kvs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: decode_any_value(kv.value) for kv in kvs}


def _hex_or_none(raw: bytes) -> str | None:
    return raw.hex() if raw else None


def _enum_suffix(enum_name: str, prefix: str) -> str:
    return enum_name[len(prefix) :] if enum_name.startswith(prefix) else enum_name


def _resource(resource: resource_pb2.Resource) -> dict[str, Any]:
    return decode_attributes(resource.attributes)


def _decode_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    out: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _resource(resource_spans.resource)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=_hex_or_none(span.parent_span_id),
                        kind=_enum_suffix(trace_pb2.Span.SpanKind.Name(span.kind), "SPAN_KIND_"),
                        attributes=decode_attributes(span.attributes),
                        events=[(ev.name, decode_attributes(ev.attributes)) for ev in span.events],
                        status_code=_enum_suffix(
                            trace_pb2.Status.StatusCode.Name(span.status.code), "STATUS_CODE_"
                        ),
                        status_message=span.status.message,
                        resource=resource,
                        scope=scope_spans.scope.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        links=[
                            (link.trace_id.hex(), link.span_id.hex(), decode_attributes(link.attributes))
                            for link in span.links
                        ],
                        scope_version=scope_spans.scope.version,
                    )
                )
    return out


def _temporality(value: int) -> str:
    return _enum_suffix(metrics_pb2.AggregationTemporality.Name(value), "AGGREGATION_TEMPORALITY_")


def _metric_points(metric: metrics_pb2.Metric, common: dict[str, Any]) -> list[ReceivedPoint]:
    kind = metric.WhichOneof("data")
    out: list[ReceivedPoint] = []
    if kind == "sum" or kind == "gauge":
        is_sum = kind == "sum"
        for number in (metric.sum if is_sum else metric.gauge).data_points:
            value_kind = number.WhichOneof("value")
            out.append(
                ReceivedPoint(
                    kind=kind,
                    attributes=decode_attributes(number.attributes),
                    start_ns=number.start_time_unix_nano,
                    time_ns=number.time_unix_nano,
                    value=getattr(number, value_kind) if value_kind else None,
                    is_monotonic=metric.sum.is_monotonic if is_sum else None,
                    temporality=_temporality(metric.sum.aggregation_temporality) if is_sum else None,
                    **common,
                )
            )
    elif kind == "histogram":
        temporality = _temporality(metric.histogram.aggregation_temporality)
        for hist in metric.histogram.data_points:
            out.append(
                ReceivedPoint(
                    kind=kind,
                    attributes=decode_attributes(hist.attributes),
                    start_ns=hist.start_time_unix_nano,
                    time_ns=hist.time_unix_nano,
                    temporality=temporality,
                    count=hist.count,
                    sum=hist.sum if hist.HasField("sum") else None,
                    bucket_counts=list(hist.bucket_counts),
                    explicit_bounds=list(hist.explicit_bounds),
                    min=hist.min if hist.HasField("min") else None,
                    max=hist.max if hist.HasField("max") else None,
                    **common,
                )
            )
    elif kind == "exponential_histogram":
        temporality = _temporality(metric.exponential_histogram.aggregation_temporality)
        for ehist in metric.exponential_histogram.data_points:
            out.append(
                ReceivedPoint(
                    kind=kind,
                    attributes=decode_attributes(ehist.attributes),
                    start_ns=ehist.start_time_unix_nano,
                    time_ns=ehist.time_unix_nano,
                    temporality=temporality,
                    count=ehist.count,
                    sum=ehist.sum if ehist.HasField("sum") else None,
                    min=ehist.min if ehist.HasField("min") else None,
                    max=ehist.max if ehist.HasField("max") else None,
                    **common,
                )
            )
    elif kind == "summary":
        for summary in metric.summary.data_points:
            out.append(
                ReceivedPoint(
                    kind=kind,
                    attributes=decode_attributes(summary.attributes),
                    start_ns=summary.start_time_unix_nano,
                    time_ns=summary.time_unix_nano,
                    count=summary.count,
                    sum=summary.sum,
                    **common,
                )
            )
    return out


def _decode_metrics(
    request: metrics_service_pb2.ExportMetricsServiceRequest,
) -> list[ReceivedPoint]:
    out: list[ReceivedPoint] = []
    for resource_metrics in request.resource_metrics:
        resource = _resource(resource_metrics.resource)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                common: dict[str, Any] = {
                    "name": metric.name,
                    "unit": metric.unit,
                    "description": metric.description,
                    "resource": resource,
                    "scope": scope_metrics.scope.name,
                }
                out.extend(_metric_points(metric, common))
    return out


def _decode_logs(request: logs_service_pb2.ExportLogsServiceRequest) -> list[ReceivedLog]:
    out: list[ReceivedLog] = []
    for resource_logs in request.resource_logs:
        resource = _resource(resource_logs.resource)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                out.append(
                    ReceivedLog(
                        event_name=record.event_name,
                        body=decode_any_value(record.body),
                        attributes=decode_attributes(record.attributes),
                        trace_id=_hex_or_none(record.trace_id),
                        span_id=_hex_or_none(record.span_id),
                        severity_number=record.severity_number,
                        severity_text=record.severity_text,
                        resource=resource,
                        scope=scope_logs.scope.name,
                        time_ns=record.time_unix_nano,
                        observed_time_ns=record.observed_time_unix_nano,
                    )
                )
    return out


# --------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestPki:
    """PEM files of a test CA, a server certificate for ``127.0.0.1`` and ``localhost``, and a
    client certificate (common name ``client_name``), both signed by the CA."""

    __test__ = False  # not a pytest test class

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_name: str
    other_ca_cert: Path
    """A second, unrelated CA (a certificate that must not verify the server)."""


@dataclass(frozen=True)
class ServerTls:
    """A receiver's TLS: its certificate and key; with ``client_ca``, clients must present a
    certificate signed by it (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @classmethod
    def of(cls, pki: TestPki, *, mutual: bool = False) -> ServerTls:
        return cls(pki.server_cert, pki.server_key, pki.ca_cert if mutual else None)


def make_test_pki(directory: Path, client_name: str = "llmtrace-test-client") -> TestPki:
    """Generate the files of :class:`TestPki` into ``directory`` (EC P-256 keys, valid one day)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    directory.mkdir(parents=True, exist_ok=True)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = ca("llmtrace test CA")
    _, other_ca = ca("unrelated test CA")

    def leaf(
        common_name: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName] | None
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    server_key, server_cert = leaf(
        "127.0.0.1",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client_key, client_cert = leaf(client_name, ExtendedKeyUsageOID.CLIENT_AUTH, None)
    return TestPki(
        ca_cert=write_cert(ca_cert, directory / "ca.pem"),
        server_cert=write_cert(server_cert, directory / "server.pem"),
        server_key=write_key(server_key, directory / "server-key.pem"),
        client_cert=write_cert(client_cert, directory / "client.pem"),
        client_key=write_key(client_key, directory / "client-key.pem"),
        client_name=client_name,
        other_ca_cert=write_cert(other_ca, directory / "other-ca.pem"),
    )


def _common_name(subject: Any) -> str | None:
    """The common name in ``ssl.SSLSocket.getpeercert()``'s ``subject``."""
    for rdn in subject or ():
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


# --------------------------------------------------------------------------------------------
# Shared storage / decoding / waiting
# --------------------------------------------------------------------------------------------


class _Server:
    """A test server used as a context manager: started on entry, stopped on exit."""

    def start(self: _S) -> _S:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Receiver(_Server):
    """Thread-safe store of export calls with the decoding and wait helpers."""

    def __init__(
        self,
        *,
        delay: float,
        fail_times: int | None,
        retry_after: float | None,
        tls: ServerTls | None = None,
    ) -> None:
        self.tls = tls
        self.delay = delay
        self.fail_times = fail_times
        self.retry_after = retry_after
        self._cond = threading.Condition()
        self._requests: dict[Signal, list[Message]] = {s: [] for s in _SIGNALS}
        self._calls: list[tuple[Signal, dict[str, str]]] = []
        self._client_names: list[tuple[Signal, str | None]] = []
        self._failures_sent = 0
        self._stopping = threading.Event()
        self._port: int | None = None

    # -- lifecycle (subclasses implement _start/_stop) --------------------------------------

    def _start(self) -> int:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def start(self: _S) -> _S:
        if self._port is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._stopping.clear()
        self._port = self._start()
        return self

    def stop(self) -> None:
        if self._port is None:
            return
        self._stopping.set()  # wakes handlers sleeping in `delay`
        try:
            self._stop()
        finally:
            self._port = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not running (use it as a context manager)")
        return self._port

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``; ``https://`` with TLS."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    # -- called by the transports -----------------------------------------------------------

    def _sleep(self) -> None:
        if self.delay > 0:
            self._stopping.wait(self.delay)

    def _record_call(self, signal: Signal, headers: dict[str, str], client_name: str | None = None) -> bool:
        """Count one export call (``client_name``: the common name of the client's TLS certificate);
        True if it must be refused."""
        with self._cond:
            self._calls.append((signal, headers))
            self._client_names.append((signal, client_name))
            refuse = self._should_fail() and (
                self.fail_times is None or self._failures_sent < self.fail_times
            )
            if refuse:
                self._failures_sent += 1
            self._cond.notify_all()
            return refuse

    def _should_fail(self) -> bool:
        raise NotImplementedError

    def _store(self, signal: Signal, request: Message) -> None:
        with self._cond:
            self._requests[signal].append(request)
            self._cond.notify_all()

    # -- raw access -------------------------------------------------------------------------

    def requests(self, signal: Signal) -> list[Message]:
        """The raw protobuf Export*ServiceRequest messages accepted for ``signal``."""
        with self._cond:
            return list(self._requests[signal])

    def call_count(self, signal: Signal | None = None) -> int:
        """Export calls received (accepted or refused), optionally for one signal."""
        with self._cond:
            return sum(1 for s, _ in self._calls if signal is None or s == signal)

    def headers(self, signal: Signal | None = None) -> list[dict[str, str]]:
        """Headers (HTTP) / invocation metadata (gRPC) of each call, keys lowercased."""
        with self._cond:
            return [dict(h) for s, h in self._calls if signal is None or s == signal]

    def client_names(self, signal: Signal | None = None) -> list[str | None]:
        """The common name of the TLS client certificate of each call (None: none presented)."""
        with self._cond:
            return [name for s, name in self._client_names if signal is None or s == signal]

    def clear(self) -> None:
        with self._cond:
            for signal in _SIGNALS:
                self._requests[signal].clear()
            self._calls.clear()
            self._client_names.clear()
            self._failures_sent = 0

    # -- decoded access ---------------------------------------------------------------------

    def _spans_locked(self) -> list[ReceivedSpan]:
        out: list[ReceivedSpan] = []
        for req in self._requests["traces"]:
            assert isinstance(req, trace_service_pb2.ExportTraceServiceRequest)
            out.extend(_decode_spans(req))
        return out

    def _points_locked(self) -> list[ReceivedPoint]:
        out: list[ReceivedPoint] = []
        for req in self._requests["metrics"]:
            assert isinstance(req, metrics_service_pb2.ExportMetricsServiceRequest)
            out.extend(_decode_metrics(req))
        return out

    def _logs_locked(self) -> list[ReceivedLog]:
        out: list[ReceivedLog] = []
        for req in self._requests["logs"]:
            assert isinstance(req, logs_service_pb2.ExportLogsServiceRequest)
            out.extend(_decode_logs(req))
        return out

    def spans(self) -> list[ReceivedSpan]:
        """All accepted spans, in arrival order."""
        with self._cond:
            return self._spans_locked()

    def span(self, name: str) -> ReceivedSpan:
        """The single received span called ``name`` (AssertionError if there are 0 or several)."""
        matches = [s for s in self.spans() if s.name == name]
        if len(matches) != 1:
            raise AssertionError(
                f"expected exactly one span named {name!r}, got {len(matches)}; "
                f"received: {[s.name for s in self.spans()]}"
            )
        return matches[0]

    def metrics(self) -> dict[str, list[ReceivedPoint]]:
        """Metric name -> data points across all accepted exports, in arrival order.

        With cumulative temporality every flush re-sends each series: take the last point(s).
        """
        with self._cond:
            points = self._points_locked()
        out: dict[str, list[ReceivedPoint]] = {}
        for point in points:
            out.setdefault(point.name, []).append(point)
        return out

    def logs(self) -> list[ReceivedLog]:
        """All accepted log records, in arrival order."""
        with self._cond:
            return self._logs_locked()

    # -- waiting ----------------------------------------------------------------------------

    def _wait(self, what: str, get: Callable[[], _T], done: Callable[[_T], bool], timeout: float) -> _T:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = get()
                if done(value):
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; got: {value!r}")
                self._cond.wait(remaining)

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Block until at least ``n`` spans arrived; return all spans received so far."""
        return self._wait(f"{n} span(s)", self._spans_locked, lambda v: len(v) >= n, timeout)

    def wait_for_logs(self, n: int, timeout: float = 10.0) -> list[ReceivedLog]:
        """Block until at least ``n`` log records arrived; return all received so far."""
        return self._wait(f"{n} log record(s)", self._logs_locked, lambda v: len(v) >= n, timeout)

    def wait_for_metric(self, name: str, timeout: float = 10.0) -> list[ReceivedPoint]:
        """Block until metric ``name`` arrived; return its data points received so far."""
        points = self._wait(
            f"metric {name!r}",
            self._points_locked,
            lambda v: any(p.name == name for p in v),
            timeout,
        )
        return [p for p in points if p.name == name]

    def wait_for_calls(self, n: int, signal: Signal | None = None, timeout: float = 10.0) -> int:
        """Block until at least ``n`` export calls (accepted or refused) arrived; return the count."""

        def count() -> int:
            return sum(1 for s, _ in self._calls if signal is None or s == signal)

        return self._wait(f"{n} export call(s)", count, lambda c: c >= n, timeout)


# --------------------------------------------------------------------------------------------
# gRPC
# --------------------------------------------------------------------------------------------


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, rx: GrpcReceiver) -> None:
        self._rx = rx

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> Message:
        return self._rx._handle("traces", request, context)


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, rx: GrpcReceiver) -> None:
        self._rx = rx

    def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: grpc.ServicerContext
    ) -> Message:
        return self._rx._handle("metrics", request, context)


class _LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, rx: GrpcReceiver) -> None:
        self._rx = rx

    def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: grpc.ServicerContext
    ) -> Message:
        return self._rx._handle("logs", request, context)


def _retry_info_bin(seconds: float) -> bytes:
    # google.rpc.RetryInfo{retry_delay: google.protobuf.Duration}; the module ships with
    # googleapis-common-protos, a dependency of opentelemetry-exporter-otlp-proto-grpc.
    from google.rpc.error_details_pb2 import RetryInfo

    info = RetryInfo()
    info.retry_delay.seconds = int(seconds)
    info.retry_delay.nanos = round((seconds - int(seconds)) * 1e9)
    return bytes(info.SerializeToString())


class GrpcReceiver(_Receiver):
    """OTLP/gRPC collector on ``127.0.0.1:<ephemeral>`` (plaintext: use ``insecure=True``; with
    ``tls`` it serves TLS only, and ``endpoint`` is ``https://127.0.0.1:<port>``).

    :param status: answer export calls with this error code instead of OK (e.g. UNAVAILABLE).
    :param delay: seconds to sleep before answering each call.
    :param fail_times: with ``status``, only the first ``fail_times`` calls fail.
    :param retry_after: with ``status``, send a ``google.rpc.RetryInfo`` trailer with this
        delay; the OTel exporter waits exactly that long before retrying.
    """

    def __init__(
        self,
        *,
        status: grpc.StatusCode | None = None,
        delay: float = 0,
        fail_times: int | None = None,
        retry_after: float | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        if status is grpc.StatusCode.OK:
            status = None
        super().__init__(delay=delay, fail_times=fail_times, retry_after=retry_after, tls=tls)
        self.status = status
        self._server: grpc.Server | None = None
        self._executor: ThreadPoolExecutor | None = None

    def _should_fail(self) -> bool:
        return self.status is not None

    def _handle(self, signal: Signal, request: Message, context: grpc.ServicerContext) -> Message:
        headers = {key.lower(): str(value) for key, value in context.invocation_metadata()}
        names = context.auth_context().get("x509_common_name") or [b""]
        refuse = self._record_call(signal, headers, names[0].decode() or None)
        self._sleep()
        if refuse:
            assert self.status is not None
            if self.retry_after is not None:
                context.set_trailing_metadata(
                    (("google.rpc.retryinfo-bin", _retry_info_bin(self.retry_after)),)
                )
            context.abort(self.status, f"refused by test GrpcReceiver ({self.status.name})")
        self._store(signal, request)
        return _RESPONSE_TYPES[signal]()

    def _start(self) -> int:
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="otlp-grpc-receiver")
        server = grpc.server(self._executor, options=[("grpc.so_reuseport", 0)])
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceServicer(self), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsServicer(self), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsServicer(self), server)
        if self.tls is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            tls = self.tls
            credentials = grpc.ssl_server_credentials(
                [(tls.key.read_bytes(), tls.cert.read_bytes())],
                root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
                require_client_auth=tls.client_ca is not None,
            )
            port = server.add_secure_port("127.0.0.1:0", credentials)
        if port == 0:
            raise RuntimeError("GrpcReceiver could not bind 127.0.0.1")
        server.start()
        self._server = server
        return int(port)

    def _stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=0).wait(5)
            self._server = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

_HTTP_PATHS: dict[str, Signal] = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}


class _OtlpHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    receiver: HttpReceiver

    def __init__(self, receiver: HttpReceiver) -> None:
        self.receiver = receiver
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _OtlpHttpHandler)
        tls = receiver.tls
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert, tls.key)
            if tls.client_ca is not None:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(cafile=tls.client_ca)
            # the handshake happens on the handler's thread (setup()), never on the accepting one
            self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failed TLS handshake (a client that does not trust the server, or has no certificate
        while one is required) is counted, not printed."""
        with self.receiver._cond:
            self.receiver.tls_failures += 1

    def server_bind(self) -> None:
        # HTTPServer.server_bind() calls socket.getfqdn(), a reverse DNS lookup that can stall.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self._conns_lock:
            self._conns.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Unblock handler threads waiting on idle keep-alive connections."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _OtlpHttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real collector
    timeout = 30  # bounds how long an idle keep-alive connection keeps a thread
    server: _OtlpHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()

    def _reply(self, code: int, body: bytes = b"", content_type: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        rx = self.server.receiver
        if code >= 400 and rx.retry_after is not None:
            self.send_header("Retry-After", f"{rx.retry_after:g}")
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_POST(self) -> None:
        rx = self.server.receiver
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self.close_connection = True
            self._reply(411, b"Content-Length required")
            return
        raw = self.rfile.read(int(length_header))
        signal = _HTTP_PATHS.get(self.path.split("?", 1)[0])
        if signal is None:
            self._reply(404, f"unknown path {self.path}".encode())
            return
        headers = {key.lower(): value for key, value in self.headers.items()}
        peer = self.request.getpeercert() if isinstance(self.request, ssl.SSLSocket) else None
        refuse = rx._record_call(signal, headers, _common_name(peer.get("subject")) if peer else None)
        rx._sleep()
        if refuse:
            self._reply(rx.status, b"refused by test HttpReceiver")
            return
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/x-protobuf":
            self._reply(415, f"unsupported content-type {content_type!r}".encode())
            return
        encoding = headers.get("content-encoding", "identity").strip().lower()
        try:
            if encoding == "gzip":
                raw = gzip.decompress(raw)
            elif encoding == "deflate":
                raw = zlib.decompress(raw)
            elif encoding not in ("", "identity"):
                self._reply(415, f"unsupported content-encoding {encoding!r}".encode())
                return
            request = _REQUEST_TYPES[signal]()
            request.ParseFromString(raw)
        except (OSError, EOFError, zlib.error, DecodeError) as error:
            self._reply(400, f"cannot decode body: {error}".encode())
            return
        rx._store(signal, request)
        self._reply(200, _RESPONSE_TYPES[signal]().SerializeToString(), "application/x-protobuf")


class HttpReceiver(_Receiver):
    """OTLP/HTTP (protobuf) collector on ``127.0.0.1:<ephemeral>`` (HTTPS with ``tls``; failed
    handshakes are counted in ``tls_failures``).

    Exporters must be given the full signal URL, e.g. ``f"{rx.endpoint}/v1/traces"``.

    :param status: HTTP status for export calls (e.g. 503); anything but 2xx refuses them.
    :param delay: seconds to sleep before answering each call.
    :param fail_times: with an error ``status``, only the first ``fail_times`` calls fail.
    :param retry_after: with an error ``status``, send ``Retry-After: <seconds>``; the OTel
        exporter waits that long (instead of its backoff) before retrying 429/502/503/504.
    """

    def __init__(
        self,
        *,
        status: int = 200,
        delay: float = 0,
        fail_times: int | None = None,
        retry_after: float | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        super().__init__(delay=delay, fail_times=fail_times, retry_after=retry_after, tls=tls)
        self.status = status
        self.tls_failures = 0
        self._server: _OtlpHttpServer | None = None
        self._thread: threading.Thread | None = None

    def _should_fail(self) -> bool:
        return not 200 <= self.status < 300

    def _start(self) -> int:
        server = _OtlpHttpServer(self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-http-receiver",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return int(server.server_address[1])

    def _stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()  # joins the handler threads (block_on_close)
        if thread is not None:
            thread.join(5)


# --------------------------------------------------------------------------------------------
# Hanging collector / closed port
# --------------------------------------------------------------------------------------------


class HangingServer(_Server):
    """TCP server on ``127.0.0.1:<ephemeral>`` that accepts connections and never answers.

    Whatever clients send is read and discarded (so their writes never block); nothing is ever
    written back. Works as a hung collector for both OTLP/gRPC (``endpoint``) and OTLP/HTTP
    (``f"{endpoint}/v1/traces"``).
    """

    def __init__(self) -> None:
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._lock = threading.Lock()
        self._accepted = 0
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("HangingServer is not running (use it as a context manager)")
        return self._port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections_accepted(self) -> int:
        with self._lock:
            return self._accepted

    def start(self) -> HangingServer:
        if self._port is not None:
            raise RuntimeError("HangingServer already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener = listener
        self._port = int(listener.getsockname()[1])
        self._thread = threading.Thread(target=self._loop, name="otlp-hanging-server", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        assert self._listener is not None and self._wake_r is not None
        clients: list[socket.socket] = []
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            try:
                while True:
                    for key, _ in sel.select():
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        if sock is self._wake_r:
                            return
                        if sock is self._listener:
                            try:
                                conn, _addr = self._listener.accept()
                            except (BlockingIOError, InterruptedError):
                                continue
                            conn.setblocking(False)
                            clients.append(conn)
                            sel.register(conn, selectors.EVENT_READ)
                            with self._lock:
                                self._accepted += 1
                            continue
                        try:
                            data = sock.recv(65536)
                        except (BlockingIOError, InterruptedError):
                            continue
                        except OSError:
                            data = b""
                        if not data:  # client gave up
                            sel.unregister(sock)
                            clients.remove(sock)
                            sock.close()
            finally:
                for conn in clients:
                    conn.close()

    def stop(self) -> None:
        if self._port is None:
            return
        assert self._wake_w is not None
        self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(5)
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._listener = self._wake_r = self._wake_w = None
        self._thread = None
        self._port = None


# --------------------------------------------------------------------------------------------
# Wire tap: what a gRPC client really sent
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WireMessage:
    """One gRPC message as it travelled: its compressed flag and its payload (compressed or not)."""

    compressed: bool
    payload: bytes


_GRPC_PATHS: dict[str, Signal] = {
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export": "traces",
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export": "metrics",
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export": "logs",
}


@dataclass
class WireCall:
    """One gRPC call (HTTP/2 stream) as the client sent it."""

    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)

    @property
    def signal(self) -> Signal | None:
        return _GRPC_PATHS.get(self.headers.get(":path", ""))

    @property
    def messages(self) -> list[WireMessage]:
        """The length-prefixed messages of the body (a message cut off at the end is left out)."""
        out: list[WireMessage] = []
        pos = 0
        body = bytes(self.body)
        while pos + 5 <= len(body):
            length = int.from_bytes(body[pos + 1 : pos + 5], "big")
            if pos + 5 + length > len(body):
                break
            out.append(WireMessage(bool(body[pos]), body[pos + 5 : pos + 5 + length]))
            pos += 5 + length
        return out

    def requests(self) -> list[Message]:
        """The messages decoded: decompressed as ``grpc-encoding`` says, then parsed."""
        signal = self.signal
        if signal is None:
            raise AssertionError(f"not an OTLP export call: {self.headers.get(':path')!r}")
        out: list[Message] = []
        for message in self.messages:
            payload = message.payload
            if message.compressed:
                encoding = self.headers.get("grpc-encoding")
                if encoding == "gzip":
                    payload = gzip.decompress(payload)
                elif encoding == "deflate":
                    payload = zlib.decompress(payload)
                else:
                    raise AssertionError(f"a compressed message with grpc-encoding {encoding!r}")
            request = _REQUEST_TYPES[signal]()
            request.ParseFromString(payload)
            out.append(request)
        return out

    def spans(self) -> list[ReceivedSpan]:
        return [span for request in self.requests() for span in _decode_spans(request)]  # type: ignore[arg-type]


_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _http2_calls(stream: bytes) -> list[WireCall]:
    """The calls in what an HTTP/2 client sent on one connection (up to the last whole frame)."""
    if not stream.startswith(_PREFACE):
        raise AssertionError(f"not an HTTP/2 connection: {stream[:24]!r}")
    decoder = hpack.Decoder()  # one per connection: HPACK's dynamic table is the connection's
    calls: dict[int, WireCall] = {}
    block = bytearray()
    pos = len(_PREFACE)
    while pos + 9 <= len(stream):
        length = int.from_bytes(stream[pos : pos + 3], "big")
        kind, flags = stream[pos + 3], stream[pos + 4]
        stream_id = int.from_bytes(stream[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        payload = stream[pos + 9 : pos + 9 + length]
        if len(payload) < length:
            break
        pos += 9 + length
        if kind in (0x0, 0x1) and flags & 0x8:  # PADDED
            payload = payload[1 : len(payload) - payload[0]]
        if kind == 0x0:  # DATA
            if stream_id in calls:
                calls[stream_id].body += payload
        elif kind in (0x1, 0x9):  # HEADERS, CONTINUATION
            if kind == 0x1 and flags & 0x20:  # PRIORITY
                payload = payload[5:]
            block += payload
            if flags & 0x4:  # END_HEADERS
                headers = {str(name): str(value) for name, value in decoder.decode(bytes(block), raw=False)}
                block.clear()
                calls.setdefault(stream_id, WireCall(headers))
    return list(calls.values())


class WireTap(_Server):
    """A TCP relay on ``127.0.0.1:<ephemeral>`` to ``127.0.0.1:<target_port>`` that keeps every
    byte the clients sent: point a gRPC exporter at ``endpoint`` (plaintext) and read the calls
    as they were on the wire with :meth:`calls`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._lock = threading.Lock()
        self._streams: list[bytearray] = []
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("WireTap is not running (use it as a context manager)")
        return self._port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WireTap:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self._listener = listener
        self._port = int(listener.getsockname()[1])
        self._spawn(self._accept, "wire-tap-accept")
        return self

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            kept = bytearray()
            with self._lock:
                self._streams.append(kept)
                self._sockets += [client, upstream]
            self._spawn(self._pump, "wire-tap-up", client, upstream, kept)
            self._spawn(self._pump, "wire-tap-down", upstream, client, None)

    def _pump(self, source: socket.socket, sink: socket.socket, kept: bytearray | None) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if kept is not None:
                    with self._lock:
                        kept += data
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def calls(self) -> list[WireCall]:
        """Every call the clients sent so far, connection by connection, in order."""
        with self._lock:
            streams = [bytes(stream) for stream in self._streams]
        return [call for stream in streams if stream for call in _http2_calls(stream)]

    def stop(self) -> None:
        if self._port is None:
            return
        assert self._listener is not None
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(5)
        for sock in sockets:
            sock.close()
        self._listener = None
        self._port = None


def closed_port() -> int:
    """A TCP port on 127.0.0.1 on which nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
