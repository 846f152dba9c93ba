"""What configure() puts on the wire for ``OTEL_EXPORTER_OTLP_COMPRESSION`` and the TLS variables
(``OTEL_EXPORTER_OTLP_CERTIFICATE``, ``..._CLIENT_CERTIFICATE``, ``..._CLIENT_KEY``, generic and
per signal), over gRPC and HTTP, against real receivers on 127.0.0.1: gRPC calls read back from
the bytes the client sent (:class:`WireTap`), TLS receivers with a test CA made at test time."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

import llmtrace
from llmtrace import semconv as sc
from tests.core.test_configure import _agent_trace, _handler
from tests.core.test_otel_env import clean_env  # noqa: F401  (autouse: no OTEL_*/LLMTRACE_* variables, no store)
from tests.otlp_receivers import (
    GrpcReceiver,
    HttpReceiver,
    ServerTls,
    TestPki,
    WireTap,
    _Receiver,
    make_test_pki,
)

SIGNALS = ("traces", "metrics", "logs")
SPAN_NAMES = {"invoke_agent researcher", "chat gpt-4o", "execute_tool search"}
COST = 0.00725
"""The agent trace's model call: gpt-4o, 1,000 input tokens (200 read from the cache), 500 output."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def _emit(pipeline: llmtrace.Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent trace (three spans, token and cost metrics) and one evaluation event."""
    handler = _handler(pipeline)
    monkeypatch.setattr("llmtrace._manual._handler", handler)
    trace_id, span_id = _agent_trace(handler)
    llmtrace.record_evaluation("relevance", score=0.75, trace_id=trace_id, span_id=span_id)


def _run(monkeypatch: pytest.MonkeyPatch, **kwargs: object) -> bool:
    pipeline = llmtrace.configure(set_global=False, **kwargs)  # type: ignore[arg-type]
    _emit(pipeline, monkeypatch)
    flushed = pipeline.force_flush(10_000)
    pipeline.shutdown()
    return flushed


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "llmtrace"]


# --- compression --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "compressed"),
    [
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}, {"traces", "metrics", "logs"}),
        (
            {"OTEL_EXPORTER_OTLP_COMPRESSION": "GZIP", "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION": "none"},
            {"traces", "metrics"},
        ),
        ({"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip"}, {"traces"}),
    ],
    ids=["generic", "logs-none", "traces-only"],
)
def test_grpc_gzip_on_the_wire(monkeypatch, variables, compressed):
    """Each gRPC call of a compressed signal says ``grpc-encoding: gzip`` and carries gzip
    messages (compressed flag set, gzip magic) that decode to what was sent; the others carry
    plain messages."""
    with GrpcReceiver() as rx, WireTap(rx.port) as tap:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", tap.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        assert _run(monkeypatch)
        calls = tap.calls()
    assert {call.signal for call in calls} == set(SIGNALS)
    for call in calls:
        assert call.signal is not None
        gzipped = call.signal in compressed
        assert call.headers.get("grpc-encoding") == ("gzip" if gzipped else None), call.signal
        assert call.messages, call.signal
        for message in call.messages:
            assert message.compressed is gzipped, call.signal
            assert message.payload.startswith(b"\x1f\x8b") is gzipped, call.signal
    assert {span.name for call in calls if call.signal == "traces" for span in call.spans()} == SPAN_NAMES
    (logs_request,) = [r for call in calls if call.signal == "logs" for r in call.requests()]
    assert logs_request.resource_logs[0].scope_logs[0].log_records[0].event_name == sc.EVENT_EVALUATION_RESULT  # type: ignore[attr-defined]
    # and the collector behind the tap decoded every call
    assert {span.name for span in rx.spans()} == SPAN_NAMES
    assert rx.metrics()[sc.METRIC_USAGE_COST][-1].value == pytest.approx(COST)


@pytest.mark.parametrize(
    ("variables", "compressed"),
    [
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}, {"traces", "metrics", "logs"}),
        (
            {"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "none"},
            {"traces", "logs"},
        ),
        ({"OTEL_EXPORTER_OTLP_LOGS_COMPRESSION": "gzip"}, {"logs"}),
    ],
    ids=["generic", "metrics-none", "logs-only"],
)
def test_http_gzip_on_the_wire(monkeypatch, variables, compressed):
    """``Content-Encoding: gzip`` on each request of a compressed signal; the receiver
    gunzips the body (a body that is not gzip is refused with 400) and decodes it."""
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        assert _run(monkeypatch)
        for signal in SIGNALS:
            encodings = {headers.get("content-encoding") for headers in rx.headers(signal)}  # type: ignore[arg-type]
            assert encodings == {"gzip" if signal in compressed else None}, signal
        assert {span.name for span in rx.spans()} == SPAN_NAMES
        assert [log.event_name for log in rx.logs()] == [sc.EVENT_EVALUATION_RESULT]
        assert rx.metrics()[sc.METRIC_USAGE_COST][-1].value == pytest.approx(COST)


def test_the_tap_sees_a_body_as_it_travelled():
    """The tap's decoding is its own: a gzip payload is gunzipped only because the call says so."""
    payload = gzip.compress(b"\x0a\x00")
    from tests.otlp_receivers import WireCall

    call = WireCall(
        {":path": "/opentelemetry.proto.collector.trace.v1.TraceService/Export", "grpc-encoding": "gzip"},
        bytearray(b"\x01" + len(payload).to_bytes(4, "big") + payload),
    )
    (message,) = call.messages
    assert message.compressed and message.payload == payload
    (request,) = call.requests()
    assert len(request.resource_spans) == 1  # type: ignore[attr-defined]


# --- TLS ----------------------------------------------------------------------------------------


PROTOCOLS = ("grpc", "http/protobuf")


def _receiver(protocol: str, tls: ServerTls) -> GrpcReceiver | HttpReceiver:
    return GrpcReceiver(tls=tls) if protocol == "grpc" else HttpReceiver(tls=tls)


def _signals(rx: _Receiver) -> set[str]:
    return {signal for signal in SIGNALS if rx.call_count(signal)}  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_certificate_verifies_the_collector(monkeypatch, pki, protocol):
    """``OTEL_EXPORTER_OTLP_CERTIFICATE`` is the CA that verifies the collector, for every signal,
    even where ``REQUESTS_CA_BUNDLE`` points at another bundle (over HTTP the SDK's exporter let
    it replace the certificate, and verification failed)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.other_ca_cert))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(pki.other_ca_cert))
    with _receiver(protocol, ServerTls.of(pki)) as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki.ca_cert))
        assert _run(monkeypatch)
        assert {span.name for span in rx.spans()} == SPAN_NAMES
        assert _signals(rx) == set(SIGNALS)
        assert set(rx.client_names()) == {None}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_unrelated_certificate_does_not_verify_the_collector(monkeypatch, pki, protocol):
    with _receiver(protocol, ServerTls.of(pki)) as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki.other_ca_cert))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
        assert not _run(monkeypatch)
        assert rx.call_count() == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_certificate_and_key(monkeypatch, pki, protocol):
    """Mutual TLS: the collector requires a client certificate signed by its CA; every signal
    presents llmtrace's."""
    with _receiver(protocol, ServerTls.of(pki, mutual=True)) as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki.ca_cert))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(pki.client_cert))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(pki.client_key))
        assert _run(monkeypatch)
        assert _signals(rx) == set(SIGNALS)
        assert set(rx.client_names()) == {pki.client_name}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_signals_certificate_goes_with_the_generic_client_certificate(monkeypatch, pki, protocol):
    """Each TLS variable falls back to its generic one on its own: the traces' own CA file with
    the generic client certificate and key (the SDK's gRPC span exporter then sent no client
    certificate, and the collector refused the handshake). Metrics and events, with no CA file
    of their own and none generic, do not trust the test CA."""
    with _receiver(protocol, ServerTls.of(pki, mutual=True)) as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", str(pki.ca_cert))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(pki.client_cert))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(pki.client_key))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
        _run(monkeypatch)
        assert {span.name for span in rx.spans()} == SPAN_NAMES
        assert _signals(rx) == {"traces"}
        assert set(rx.client_names("traces")) == {pki.client_name}


def test_per_signal_client_certificates(monkeypatch, pki, tmp_path):
    """A signal's own client certificate and key win over the generic ones (which here are of
    another name: the collector sees which one each signal presented)."""
    other = make_test_pki(tmp_path / "other", client_name="generic-client")
    with GrpcReceiver(tls=ServerTls.of(pki, mutual=True)) as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki.ca_cert))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(other.client_cert))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(other.client_key))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE", str(pki.client_cert))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", str(pki.client_key))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
        _run(monkeypatch, otlp_protocol="grpc")
        # the generic client certificate is signed by another CA: refused; the logs' own is not
        assert _signals(rx) == {"logs"}
        assert set(rx.client_names("logs")) == {pki.client_name}


def test_grpc_endpoint_without_a_scheme_uses_tls_with_the_certificate(monkeypatch, pki):
    with GrpcReceiver(tls=ServerTls.of(pki)) as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"127.0.0.1:{rx.port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki.ca_cert))
        assert _run(monkeypatch)
        assert _signals(rx) == set(SIGNALS)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tls_variables_that_cannot_be_used_are_warned_about(monkeypatch, caplog, pki, protocol, tmp_path):
    """A file that is not there is named and ignored; a client certificate without its key is
    named once and not used (the collector here does not ask for one). configure() never fails
    (over gRPC the SDK's exporter aborted the process on a certificate without its key)."""
    missing = tmp_path / "nowhere.pem"
    with _receiver(protocol, ServerTls.of(pki)) as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki.ca_cert))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", str(missing))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(pki.client_cert))
        with caplog.at_level(logging.WARNING, logger="llmtrace"):
            assert _run(monkeypatch)
        assert _signals(rx) == set(SIGNALS)  # metrics fell back to the generic CA file
        assert set(rx.client_names()) == {None}
    warnings = _warnings(caplog)
    assert any(
        f"OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE={str(missing)!r} is not a file llmtrace can read" in w
        for w in warnings
    ), warnings
    assert (
        "llmtrace: OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE is set but no OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY "
        "or OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY or OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY or "
        "OTEL_EXPORTER_OTLP_CLIENT_KEY is: a client certificate needs its key and a key its certificate; "
        "traces, metrics, logs are exported without a client certificate"
    ) in warnings


def test_the_info_line_names_the_files(monkeypatch, caplog, pki):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki.ca_cert))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    with caplog.at_level(logging.INFO, logger="llmtrace"):
        pipeline = llmtrace.configure(set_global=False, exporters="otlp")
    pipeline.shutdown()
    lines = [r.getMessage() for r in caplog.records if "OTLP export of traces" in r.getMessage()]
    assert lines == [
        "llmtrace: OTLP export of traces: http/protobuf (the default) to https://127.0.0.1:1/v1/traces "
        f"from OTEL_EXPORTER_OTLP_ENDPOINT, CA certificate {Path(pki.ca_cert)}, gzip"
    ]
