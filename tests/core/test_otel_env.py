"""configure() and the OpenTelemetry environment-variable specification: per-signal endpoints,
protocols and exporters, schemeless endpoints, timeouts, batch variables, resources, providers
already installed, invalid values (warned about and ignored), all checked against real OTLP
receivers on 127.0.0.1 (which receiver got which signal, with what resource and headers)."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import types
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

import llmtrace
from llmtrace import _config
from llmtrace import semconv as sc
from llmtrace._settings import settings
from tests.core.test_configure import _agent_trace, _handler, _run_python
from tests.otlp_receivers import GrpcReceiver, HttpReceiver, _Receiver

SIGNALS = ("traces", "metrics", "logs")
OTEL_PREFIXES = ("OTEL_", "LLMTRACE_")


def metric_readers(provider: Any) -> list[Any]:
    """An SDK MeterProvider's readers: in ``_metric_readers`` since 1.44, in ``_sdk_config`` before."""
    readers = getattr(provider, "_metric_readers", None) or provider._sdk_config.metric_readers
    return list(readers)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(OTEL_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LLMTRACE_STORE", "off")
    monkeypatch.setattr(settings, "disabled", settings.disabled)  # restored after the test
    yield


def _emit(pipeline: llmtrace.Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent trace (three spans, token metrics) and one evaluation event."""
    handler = _handler(pipeline)
    monkeypatch.setattr("llmtrace._manual._handler", handler)
    trace_id, span_id = _agent_trace(handler)
    llmtrace.record_evaluation("relevance", score=0.75, trace_id=trace_id, span_id=span_id)


def _calls(rx: _Receiver) -> dict[str, int]:
    return {signal: rx.call_count(signal) for signal in SIGNALS}  # type: ignore[arg-type]


def _got(rx: _Receiver) -> set[str]:
    return {signal for signal, count in _calls(rx).items() if count}


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "llmtrace"]


# --- A1 / A6: endpoint and protocol per signal -----------------------------------------------


def test_spec_example_2_traces_over_grpc_metrics_over_http(monkeypatch):
    """The OTLP exporter specification's Example 2: traces to a gRPC collector, metrics to a full
    ``https?://.../v1/metrics`` URL over HTTP. Each signal's protocol is its own (the traces' one
    decided all three before), and the per-signal endpoint of metrics alone turns OTLP on for it."""
    with GrpcReceiver() as grpc_rx, HttpReceiver() as http_rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", grpc_rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", http_rx.endpoint + "/v1/metrics")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
        pipeline = llmtrace.configure(service_name="example-2", set_global=False)
        assert pipeline.exporters_by_signal == {"traces": ("otlp",), "metrics": ("otlp",), "logs": ()}
        _emit(pipeline, monkeypatch)
        assert pipeline.force_flush(10_000)
        assert {s.name for s in grpc_rx.wait_for_spans(3)} == {
            "invoke_agent researcher",
            "chat gpt-4o",
            "execute_tool search",
        }
        (cost,) = http_rx.wait_for_metric(sc.METRIC_USAGE_COST)
        assert cost.resource[sc.SERVICE_NAME] == "example-2"
        pipeline.shutdown()
        assert _got(grpc_rx) == {"traces"}
        assert _got(http_rx) == {"metrics"}


def test_the_generic_protocol_is_overridden_per_signal(monkeypatch):
    with GrpcReceiver() as grpc_rx, HttpReceiver() as http_rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", grpc_rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", http_rx.endpoint + "/v1/logs")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf")
        pipeline = llmtrace.configure(set_global=False)
        _emit(pipeline, monkeypatch)
        assert pipeline.force_flush(10_000)
        (log,) = http_rx.wait_for_logs(1)
        assert log.event_name == sc.EVENT_EVALUATION_RESULT
        pipeline.shutdown()
        assert _got(grpc_rx) == {"traces", "metrics"} and _got(http_rx) == {"logs"}


def test_a_bad_per_signal_protocol_is_named_and_the_generic_one_applies(monkeypatch, caplog):
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json")
        with caplog.at_level(logging.WARNING, logger="llmtrace"):
            pipeline = llmtrace.configure(set_global=False)
        assert any("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL='http/json'" in m for m in _warnings(caplog))
        _emit(pipeline, monkeypatch)
        assert pipeline.force_flush(10_000)
        pipeline.shutdown()
        assert _got(rx) == {"traces", "metrics", "logs"}


def test_protocol_guess_and_transport_security_per_signal(monkeypatch):
    """Port 4317 means gRPC (for the signal whose endpoint it is); a host:port without a scheme is
    a gRPC target over TLS unless OTEL_EXPORTER_OTLP_INSECURE=true (the specification's default,
    and the Python exporter's); http:// is plaintext, https:// TLS."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "https://collector.example.com/v1/metrics")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://collector:4317")

    from llmtrace._otlp import resolve

    def settings_now():
        return resolve(
            SIGNALS,
            endpoint=None,
            protocol=None,
            headers=None,
            insecure=None,
            timeout_s=None,
            export_timeouts_ms=dict.fromkeys(SIGNALS, 5000.0),
        )

    resolved = settings_now()
    traces, metrics, logs = (resolved[s] for s in SIGNALS)
    assert (traces.protocol, traces._kwargs()["endpoint"], traces._kwargs()["insecure"]) == (
        "grpc",
        "collector:4317",
        False,
    )
    assert metrics.protocol == "http/protobuf"
    assert metrics._kwargs()["endpoint"] == "https://collector.example.com/v1/metrics"
    assert (logs.protocol, logs._kwargs()["endpoint"], logs._kwargs()["insecure"]) == (
        "grpc",
        "collector:4317",
        True,
    )
    exporter = traces.span_exporter()
    assert exporter._insecure is False  # type: ignore[attr-defined]
    exporter.shutdown()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "https://collector:4317")
    resolved = settings_now()
    assert resolved["traces"]._kwargs()["insecure"] is True
    assert resolved["metrics"]._kwargs()["insecure"] is False  # https:// wins over INSECURE=true


# --- A2: endpoints without a scheme ----------------------------------------------------------


def test_a_schemeless_http_endpoint_is_sent_over_http(monkeypatch):
    """``127.0.0.1:<port>`` (no scheme, not 4317): HTTP to ``http://127.0.0.1:<port>/v1/<signal>``
    (it went to ``127.0.0.1:<port>/v1/traces``, a URL whose scheme is the host, and nothing arrived)."""
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"127.0.0.1:{rx.port}")
        pipeline = llmtrace.configure(service_name="schemeless", set_global=False)
        _emit(pipeline, monkeypatch)
        assert pipeline.force_flush(10_000)
        assert len(rx.wait_for_spans(3)) == 3
        pipeline.shutdown()
        assert _got(rx) == {"traces", "metrics", "logs"}


class _GrpcOn4317(GrpcReceiver):
    def _start(self) -> int:
        from concurrent.futures import ThreadPoolExecutor

        from tests import otlp_receivers as o

        self._executor = ThreadPoolExecutor(max_workers=4)
        server = grpc.server(self._executor, options=[("grpc.so_reuseport", 0)])
        o.trace_service_pb2_grpc.add_TraceServiceServicer_to_server(o._TraceServicer(self), server)
        o.metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(o._MetricsServicer(self), server)
        o.logs_service_pb2_grpc.add_LogsServiceServicer_to_server(o._LogsServicer(self), server)
        try:
            port = server.add_insecure_port("127.0.0.1:4317")
        except RuntimeError:
            port = 0
        if port == 0:
            self._executor.shutdown()
            pytest.skip("port 4317 is taken on this machine")
        server.start()
        self._server = server
        return int(port)


@pytest.mark.parametrize("endpoint", ["127.0.0.1:4317", "localhost:4317"])
def test_a_schemeless_endpoint_on_port_4317_is_grpc(monkeypatch, endpoint):
    """As the docs promise, port 4317 means gRPC, with or without a scheme; plaintext here because
    OTEL_EXPORTER_OTLP_INSECURE=true (without it: TLS, as the specification says)."""
    with _GrpcOn4317() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        pipeline = llmtrace.configure(set_global=False)
        _emit(pipeline, monkeypatch)
        assert pipeline.force_flush(10_000)
        assert len(rx.wait_for_spans(3)) == 3
        pipeline.shutdown()
        assert _got(rx) == {"traces", "metrics", "logs"}


# --- A4 / A6: exporters per signal -----------------------------------------------------------


def _content_call(pipeline: llmtrace.Pipeline) -> None:
    inv = _handler(pipeline).start_chat("gpt-4o-mini", provider="openai")
    inv.input_messages = [{"role": "user", "parts": [{"type": "text", "content": "my SSN is 078-05-1120"}]}]
    inv.output_messages = [
        {"role": "assistant", "parts": [{"type": "text", "content": "noted"}], "finish_reason": "stop"}
    ]
    inv.set_usage(input_tokens=5, output_tokens=1)
    inv.stop()


def _bodies(rx: HttpReceiver) -> str:
    return json.dumps([(log.event_name, log.body, log.attributes) for log in rx.logs()], default=str)


def test_logs_exporter_none_keeps_captured_prompts_off_the_wire(monkeypatch):
    """OTEL_LOGS_EXPORTER=none with content captured in events: nothing goes out as logs (the
    prompt reached the collector before, OTEL_TRACES_EXPORTER deciding for every signal)."""
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        pipeline = llmtrace.configure(capture_content="EVENT_ONLY", set_global=False)
        _content_call(pipeline)
        assert pipeline.force_flush(10_000)
        rx.wait_for_logs(1)
        assert "078-05-1120" in _bodies(rx)  # the control: the event carries the prompt
        pipeline.shutdown()
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
        pipeline = llmtrace.configure(capture_content="EVENT_ONLY", set_global=False)
        assert pipeline.exporters_by_signal["logs"] == ()
        _content_call(pipeline)
        assert pipeline.force_flush(10_000)
        rx.wait_for_spans(1)
        pipeline.shutdown()
        assert _got(rx) == {"traces", "metrics"}
        assert "078-05-1120" not in str([r.SerializeToString() for s in SIGNALS for r in rx.requests(s)])  # type: ignore[arg-type]


def test_traces_exporter_none_still_exports_metrics_and_events(monkeypatch):
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
        pipeline = llmtrace.configure(set_global=False)
        assert pipeline.exporters_by_signal == {"traces": (), "metrics": ("otlp",), "logs": ("otlp",)}
        _emit(pipeline, monkeypatch)
        assert pipeline.force_flush(10_000)
        pipeline.shutdown()
        assert _got(rx) == {"metrics", "logs"}


def test_metrics_exporter_none_and_console_traces(monkeypatch, capfd):
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "CONSOLE")  # any case
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
        pipeline = llmtrace.configure(set_global=False)
        _emit(pipeline, monkeypatch)
        assert pipeline.force_flush(10_000)
        pipeline.shutdown()
        assert _got(rx) == {"logs"}
    assert '"name": "chat gpt-4o"' in capfd.readouterr().out


def test_per_signal_endpoints_alone_turn_otlp_on_for_those_signals(monkeypatch, caplog):
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", rx.endpoint + "/v1/metrics")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", rx.endpoint + "/v1/logs")
        with caplog.at_level(logging.INFO, logger="llmtrace"):
            pipeline = llmtrace.configure(set_global=False)
        assert pipeline.exporters_by_signal == {"traces": (), "metrics": ("otlp",), "logs": ("otlp",)}
        _emit(pipeline, monkeypatch)
        assert pipeline.force_flush(10_000)
        pipeline.shutdown()
        assert _got(rx) == {"metrics", "logs"}
    # traces had no endpoint: said at INFO (a plain default), not as a warning
    assert not _warnings(caplog)
    assert any("no OTLP endpoint for traces" in r.getMessage() for r in caplog.records)


def test_a_signal_asked_for_without_an_endpoint_is_a_warning(monkeypatch, caplog):
    """exporters=["otlp"] with only the traces' endpoint: metrics and events are not sent to a
    localhost default nobody configured, and since they were asked for, that is a WARNING."""
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rx.endpoint + "/v1/traces")
        with caplog.at_level(logging.INFO, logger="llmtrace"):
            pipeline = llmtrace.configure(exporters="otlp", set_global=False)
        _emit(pipeline, monkeypatch)
        pipeline.force_flush(10_000)
        pipeline.shutdown()
        assert _got(rx) == {"traces"}
    (warning,) = [m for m in _warnings(caplog) if "no OTLP endpoint" in m]
    assert "metrics, logs" in warning and "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in warning


def test_empty_variables_are_unset_and_the_traces_list_is_used_as_given(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "store,otlp")
    with caplog.at_level(logging.WARNING, logger="llmtrace"):
        pipeline = llmtrace.configure(store=False, set_global=False)
    pipeline.shutdown()
    assert not _warnings(caplog)
    assert pipeline.exporters_by_signal == {"traces": ("otlp",), "metrics": ("otlp",), "logs": ("otlp",)}
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "STORE")
    pipeline = llmtrace.configure(store=":memory:", set_global=False)
    pipeline.shutdown()
    assert pipeline.exporters_by_signal["traces"] == ("store",)


def test_jsonl_per_signal(monkeypatch, tmp_path):
    """OTEL_TRACES_EXPORTER=jsonl: spans, and events follow into the same file unless
    OTEL_LOGS_EXPORTER says otherwise; OTEL_LOGS_EXPORTER=jsonl alone: events only."""

    def run(**env: str) -> list[str]:
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.jsonl"
        for name in ("OTEL_TRACES_EXPORTER", "OTEL_LOGS_EXPORTER"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        pipeline = llmtrace.configure(jsonl_path=path, set_global=False)
        _emit(pipeline, monkeypatch)
        pipeline.shutdown()
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return sorted(line.get("name") or line.get("event_name") for line in lines)

    spans = ["chat gpt-4o", "execute_tool search", "invoke_agent researcher"]
    assert run(OTEL_TRACES_EXPORTER="jsonl") == sorted([*spans, sc.EVENT_EVALUATION_RESULT])
    assert run(OTEL_TRACES_EXPORTER="jsonl", OTEL_LOGS_EXPORTER="none") == spans
    assert run(OTEL_TRACES_EXPORTER="none", OTEL_LOGS_EXPORTER="jsonl") == [sc.EVENT_EVALUATION_RESULT]


def test_otlp_from_the_traces_variable_with_no_endpoint_goes_to_the_default_for_all(monkeypatch):
    with HttpReceiver() as default:
        from opentelemetry.exporter.otlp.proto.http import _common

        if hasattr(_common, "_DEFAULT_ENDPOINT"):  # one constant since the HTTP exporter 1.45
            monkeypatch.setattr(_common, "_DEFAULT_ENDPOINT", default.endpoint)
        else:  # one per signal before
            for module in ("trace_exporter", "metric_exporter", "_log_exporter"):
                monkeypatch.setattr(
                    f"opentelemetry.exporter.otlp.proto.http.{module}.DEFAULT_ENDPOINT",
                    default.endpoint + "/",
                )
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
        pipeline = llmtrace.configure(set_global=False)
        _emit(pipeline, monkeypatch)
        assert pipeline.force_flush(10_000)
        pipeline.shutdown()
        assert _got(default) == {"traces", "metrics", "logs"}


def test_defaults_and_zero_timeouts(monkeypatch, tmp_path):
    from llmtrace._env import NO_LIMIT_MS
    from llmtrace._otlp import resolve

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    pipeline = llmtrace.configure(set_global=False)
    (spans,) = pipeline._span_processors
    batch = spans._batch_processor  # type: ignore[attr-defined]
    assert (batch._max_queue_size, batch._max_export_batch_size, batch._schedule_delay_millis) == (
        2048,
        512,
        1000,
    )
    assert batch._export_timeout_millis == 5000 and pipeline.shutdown_timeout_s == 5.0
    provider = pipeline.meter_provider
    readers = metric_readers(provider)
    assert next(iter(readers))._export_interval_millis == 30_000
    pipeline.shutdown()
    monkeypatch.setenv("OTEL_BSP_EXPORT_TIMEOUT", "0")  # no limit
    pipeline = llmtrace.configure(set_global=False)
    (spans,) = pipeline._span_processors
    assert spans._batch_processor._export_timeout_millis == NO_LIMIT_MS  # type: ignore[attr-defined]
    pipeline.shutdown()
    monkeypatch.setenv("OTEL_BSP_EXPORT_TIMEOUT", "3000")  # also the store's shutdown time
    pipeline = llmtrace.configure(store=tmp_path / "t.db", set_global=False)
    store_processor = pipeline._span_processors[-1]
    assert store_processor._shutdown_timeout_s == 3.0  # type: ignore[attr-defined]
    assert pipeline.shutdown_timeout_s == 5.0 + 1.0  # the store writer's grace to cancel a write
    pipeline.shutdown()
    kwargs = dict(endpoint=None, protocol=None, headers=None, insecure=None)
    timeouts = dict.fromkeys(SIGNALS, 4000.0)
    assert resolve(SIGNALS, timeout_s=None, export_timeouts_ms=timeouts, **kwargs)["traces"].timeout_s == 4.0
    assert (
        resolve(SIGNALS, timeout_s=0, export_timeouts_ms=timeouts, **kwargs)["logs"].timeout_s
        == NO_LIMIT_MS / 1000
    )


def test_force_flush_flushes_a_tracer_provider_you_passed(monkeypatch):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    mine = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(mine, schedule_delay_millis=60_000))
    pipeline = llmtrace.configure(tracer_provider=provider, exporters="none", set_global=False)
    _agent_trace(_handler(pipeline))
    assert mine.get_finished_spans() == ()
    assert pipeline.force_flush(5_000)
    assert len(mine.get_finished_spans()) == 3
    pipeline.shutdown()
    with provider.get_tracer("t").start_as_current_span("still yours"):
        pass
    provider.force_flush()
    assert len(mine.get_finished_spans()) == 4  # not shut down by llmtrace
    provider.shutdown()


# --- A3 / A5: providers you gave or that were already installed ------------------------------

_USER_PROVIDER = """
import sys, time
from opentelemetry import trace, metrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import llmtrace
from llmtrace._manual import default_handler

mine = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create({"service.name": "user-svc"}), shutdown_on_exit=False)
provider.add_span_processor(SimpleSpanProcessor(mine))
"""


def test_llmtrace_flushes_its_own_providers_beside_a_tracer_provider_you_pass(tmp_path):
    """configure(tracer_provider=yours): the MeterProvider and LoggerProvider llmtrace created are
    flushed and shut down by llmtrace.shutdown() (they were never: metrics were lost); your
    provider is installed globally (no other was), gets llmtrace's spans, and stays yours (it
    still works after llmtrace.shutdown()); every signal carries your provider's resource."""
    with HttpReceiver() as rx:
        result = _run_python(
            _USER_PROVIDER
            + """
pipeline = llmtrace.configure(tracer_provider=provider, exporters="otlp", metric_export_interval_ms=600000)
assert trace.get_tracer_provider() is provider
assert pipeline.created == ("metrics", "logs") and pipeline.owns_providers is False
h = default_handler()
inv = h.start_chat("gpt-4o-mini", provider="openai")
inv.set_usage(input_tokens=3, output_tokens=4)
inv.stop()
llmtrace.record_evaluation("relevance", score=0.5)
llmtrace.shutdown()
with provider.get_tracer("after").start_as_current_span("still mine"):
    pass
print(sorted(s.name for s in mine.get_finished_spans()))
""",
            {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint},
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "['chat gpt-4o-mini', 'still mine']"
        (span,) = rx.wait_for_spans(1)
        # llmtrace's exporter on your provider, shut down before "still mine"
        assert span.name == "chat gpt-4o-mini"
        (cost,) = rx.wait_for_metric(sc.METRIC_USAGE_COST)
        (log,) = rx.wait_for_logs(1)
        assert span.resource[sc.SERVICE_NAME] == cost.resource[sc.SERVICE_NAME] == "user-svc"
        assert log.resource[sc.SERVICE_NAME] == "user-svc"


def test_pipelines_not_installed_globally_are_flushed_at_exit_too():
    with HttpReceiver() as rx:
        result = _run_python(
            """
import llmtrace
pipeline = llmtrace.configure(exporters="otlp", set_global=False, service_name="local")
inv = llmtrace.TelemetryHandler(
    tracer_provider=pipeline.tracer_provider, meter_provider=pipeline.meter_provider
).start_chat("gpt-4o", provider="openai")
inv.set_usage(input_tokens=1, output_tokens=2)
inv.stop()
""",
            {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint},
        )
        assert result.returncode == 0, result.stderr
        (span,) = rx.wait_for_spans(1)
        (cost,) = rx.wait_for_metric(sc.METRIC_USAGE_COST)
        assert span.resource[sc.SERVICE_NAME] == cost.resource[sc.SERVICE_NAME] == "local"


def test_a_tracer_provider_you_pass_while_another_is_global_is_warned_about():
    result = _run_python(
        _USER_PROVIDER
        + """
trace.set_tracer_provider(TracerProvider())
llmtrace.configure(tracer_provider=provider, exporters="none")
"""
    )
    assert result.returncode == 0, result.stderr
    assert "another global TracerProvider (TracerProvider) is already installed" in result.stderr


def test_a_global_tracer_provider_alone_is_used_and_llmtrace_creates_the_others():
    """Only a TracerProvider is installed: llmtrace's spans go to it (nothing is added to it), and
    llmtrace creates the MeterProvider and LoggerProvider, with its resource, and exports them (they
    went to no-op proxies, silently); a WARNING says what was reused and what was created."""
    with HttpReceiver() as rx:
        result = _run_python(
            _USER_PROVIDER
            + """
trace.set_tracer_provider(provider)
pipeline = llmtrace.configure()
assert pipeline.tracer_provider is provider and pipeline.created == ("metrics", "logs")
h = default_handler()
inv = h.start_chat("gpt-4o-mini", provider="openai")
inv.set_usage(input_tokens=3, output_tokens=4)
inv.stop()
llmtrace.record_evaluation("relevance", score=0.5)
print([s.name for s in mine.get_finished_spans()])
""",
            {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "LLMTRACE_STORE": "off"},
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "['chat gpt-4o-mini']"
        (cost,) = rx.wait_for_metric(sc.METRIC_USAGE_COST)
        (log,) = rx.wait_for_logs(1)
        assert cost.resource[sc.SERVICE_NAME] == log.resource[sc.SERVICE_NAME] == "user-svc"
        assert rx.call_count("traces") == 0
    assert "already installed are used as they are: TracerProvider (TracerProvider)" in result.stderr
    assert "llmtrace created its own MeterProvider for metrics (exporters: otlp)" in result.stderr


def test_a_global_meter_provider_alone_gives_its_resource_to_the_rest():
    """Only a MeterProvider is installed: metrics go to it; llmtrace's spans and events carry the
    same resource (they carried llmtrace-app, splitting the service in two)."""
    with HttpReceiver() as rx:
        result = _run_python(
            """
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
import llmtrace
from llmtrace._manual import default_handler

reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(resource=Resource.create({"service.name": "user-svc"}),
                                         metric_readers=[reader]))
pipeline = llmtrace.configure(service_name="not-applied")
assert pipeline.created == ("traces", "logs")
inv = default_handler().start_chat("gpt-4o-mini", provider="openai")
inv.set_usage(input_tokens=3, output_tokens=4)
inv.stop()
data = reader.get_metrics_data()
print(sorted({m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}))
""",
            {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "LLMTRACE_STORE": "off"},
        )
        assert result.returncode == 0, result.stderr
        assert sc.METRIC_USAGE_COST in result.stdout
        (span,) = rx.wait_for_spans(1)
        assert span.resource[sc.SERVICE_NAME] == "user-svc"
        assert rx.call_count("metrics") == 0
    assert "MeterProvider (MeterProvider)" in result.stderr
    assert "service_name and resource_attributes are not applied" in result.stderr


# --- A7 / E2: timeouts ----------------------------------------------------------------------


def test_a_zero_otlp_timeout_means_no_limit(monkeypatch):
    """OTEL_EXPORTER_OTLP_TIMEOUT=0: no limit, as the specification says (every export failed,
    "connect timeout 0.0")."""
    with HttpReceiver(delay=0.2) as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0")
        pipeline = llmtrace.configure(set_global=False)
        _emit(pipeline, monkeypatch)
        assert pipeline.force_flush(10_000)
        pipeline.shutdown()
        assert _got(rx) == {"traces", "metrics", "logs"}
    assert pipeline.stats.snapshot()["exported"] == 3 and pipeline.stats.dropped == 0


def test_a_timeout_that_looks_like_seconds_is_warned_about(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "10")
    with caplog.at_level(logging.WARNING, logger="llmtrace"):
        pipeline = llmtrace.configure(set_global=False)
    pipeline.shutdown()
    (warning,) = _warnings(caplog)
    assert "OTEL_EXPORTER_OTLP_TIMEOUT=10 is read as 10 milliseconds" in warning and "10000" in warning


# --- C1: service.name -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "kwargs", "expected"),
    [
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,team=x"}, {}, "from-attrs"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs", "OTEL_SERVICE_NAME": "env"}, {}, "env"),
        ({"OTEL_SERVICE_NAME": "env"}, {"resource_attributes": {"service.name": "kw-attrs"}}, "kw-attrs"),
        ({"OTEL_SERVICE_NAME": "env"}, {"service_name": "kw"}, "kw"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "team=x"}, {}, "llmtrace-app"),
    ],
    ids=["attributes-variable", "service-name-variable-wins", "attributes-keyword", "keyword", "fallback"],
)
def test_service_name_precedence(monkeypatch, env, kwargs, expected):
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        pipeline = llmtrace.configure(set_global=False, **kwargs)
        _emit(pipeline, monkeypatch)
        assert pipeline.force_flush(10_000)
        spans = rx.wait_for_spans(3)
        (log,) = rx.wait_for_logs(1)
        pipeline.shutdown()
    assert {s.resource[sc.SERVICE_NAME] for s in spans} == {expected}
    assert log.resource[sc.SERVICE_NAME] == expected
    if "team=x" in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        assert spans[0].resource["team"] == "x"


# --- D1 / F: values the specification says to warn about and ignore -------------------------


@pytest.mark.parametrize(
    ("variable", "value", "protocol"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "GRPC", "grpc"),
        ("OTEL_TRACES_EXPORTER", "zipkin", "http/protobuf"),
        ("OTEL_TRACES_EXPORTER", "otlp_proto_grpc", "http/protobuf"),
        ("OTEL_METRICS_EXPORTER", "logging", "http/protobuf"),  # the specification's deprecated name
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "-5", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10s", "grpc"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli", "grpc"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli", "http/protobuf"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "lots", "http/protobuf"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "-1", "http/protobuf"),
    ],
)
def test_bad_environment_values_are_warned_about_and_ignored(monkeypatch, caplog, variable, value, protocol):
    """An application must not fail to start over a variable another OTel component shares: the
    value is named in a WARNING and the default applies (configure() raised ValueError, or the
    Python SDK's gRPC exporters did, for a timeout of ``10s`` or an unknown compression)."""
    with HttpReceiver() as http_rx, GrpcReceiver() as grpc_rx:
        rx: _Receiver = grpc_rx if protocol == "grpc" else http_rx
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        if variable != "OTEL_EXPORTER_OTLP_PROTOCOL":
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv(variable, value)
        with caplog.at_level(logging.WARNING, logger="llmtrace"):
            pipeline = llmtrace.configure(set_global=False)
        if value != "GRPC":  # a valid value in another case
            assert any(f"{variable}={value!r}" in m for m in _warnings(caplog)), _warnings(caplog)
        else:
            assert not _warnings(caplog)
        _emit(pipeline, monkeypatch)
        assert pipeline.force_flush(10_000)
        pipeline.shutdown()
        assert _got(rx) == {"traces", "metrics", "logs"}
        assert _got(http_rx if rx is grpc_rx else grpc_rx) == set()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("compression", ["gzip", "none", "NONE"])
def test_compression_variables(monkeypatch, protocol, compression):
    """``none`` is a compression too (the Python SDK's gRPC exporters raised on it)."""
    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    with receiver as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
        pipeline = llmtrace.configure(set_global=False)
        _emit(pipeline, monkeypatch)
        assert pipeline.force_flush(10_000)
        pipeline.shutdown()
        assert _got(rx) == {"traces", "metrics", "logs"}
        if protocol == "http/protobuf":
            encoding = rx.headers("traces")[0].get("content-encoding")
            assert encoding == ("gzip" if compression == "gzip" else None)


def test_sdk_disabled_accepts_only_true(monkeypatch, caplog):
    for value in ("1", "yes", "on"):
        monkeypatch.setenv("OTEL_SDK_DISABLED", value)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="llmtrace"):
            pipeline = llmtrace.configure(exporters="none", set_global=False)
        assert not settings.disabled and isinstance(pipeline.tracer_provider, _config.TracerProvider)
        assert any(f"OTEL_SDK_DISABLED={value!r}" in m for m in _warnings(caplog))
        pipeline.shutdown()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "TRUE")
    assert llmtrace.configure(exporters="none", set_global=False).exporters == ()
    assert settings.disabled


# --- E1: batch variables ----------------------------------------------------------------------


def test_batch_variables_apply_and_keywords_win(monkeypatch):
    """OTEL_BSP_* (spans), OTEL_BLRP_* (events), OTEL_METRIC_EXPORT_* apply; a keyword wins."""
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1")
        monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
        monkeypatch.setenv("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "2")
        monkeypatch.setenv("OTEL_BLRP_MAX_QUEUE_SIZE", "50")
        monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "60000")
        monkeypatch.setenv("OTEL_BSP_EXPORT_TIMEOUT", "3000")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_TIMEOUT", "7000")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
        pipeline = llmtrace.configure(set_global=False)
        assert pipeline.shutdown_timeout_s == 7.0  # the longest export timeout of the three
        (spans,) = pipeline._span_processors
        (events,) = pipeline._log_processors
        assert spans._batch_processor._max_queue_size == 100  # type: ignore[attr-defined]
        assert spans._batch_processor._export_timeout_millis == 3000  # type: ignore[attr-defined]
        assert events._batch_processor._max_queue_size == 50  # type: ignore[attr-defined]
        _emit(pipeline, monkeypatch)
        for _ in range(3):
            llmtrace.record_evaluation("extra", score=1.0)
        rx.wait_for_calls(1, "metrics", timeout=5)  # pushed every 200 ms (llmtrace's default: 30 s)
        assert pipeline.force_flush(10_000)
        assert (rx.call_count("traces"), rx.call_count("logs")) == (3, 2)  # batches of 1 and of 2
        pipeline.shutdown()
        rx.clear()
        pipeline = llmtrace.configure(max_export_batch_size=512, set_global=False)  # the keyword wins
        _emit(pipeline, monkeypatch)
        # OTEL_BSP_SCHEDULE_DELAY / OTEL_BLRP_SCHEDULE_DELAY=60000: nothing before the flush
        assert (rx.call_count("traces"), rx.call_count("logs")) == (0, 0)
        assert pipeline.force_flush(10_000)
        assert (rx.call_count("traces"), rx.call_count("logs")) == (1, 1)
        pipeline.shutdown()


# --- E3: headers ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_header_keyword_merges_with_the_variables(monkeypatch, protocol):
    """otlp_headers is merged over OTEL_EXPORTER_OTLP_HEADERS, key by key, over gRPC as over HTTP
    (over gRPC it replaced them: an Authorization header from the environment was dropped); the
    signal's own variable replaces the generic one for that signal."""
    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    with receiver as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0k3n,x-tenant=acme")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "x-logs=only")
        pipeline = llmtrace.configure(
            otlp_headers={"x-tenant": "override", "X-Team": "llm"}, set_global=False
        )
        _emit(pipeline, monkeypatch)
        assert pipeline.force_flush(10_000)
        pipeline.shutdown()
        for signal in ("traces", "metrics"):
            headers = rx.headers(signal)[0]  # type: ignore[arg-type]
            assert headers["authorization"] == "Bearer t0k3n", signal
            assert (headers["x-tenant"], headers["x-team"]) == ("override", "llm")
        logs = rx.headers("logs")[0]
        assert (logs["x-logs"], logs["x-tenant"], logs["x-team"]) == ("only", "override", "llm")
        assert "authorization" not in logs


# --- G: the JSONL file -------------------------------------------------------------------------


def test_the_jsonl_file_llmtrace_creates_is_private(tmp_path):
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "new" / "traces.jsonl"
        pipeline = llmtrace.configure(exporters="jsonl", jsonl_path=path, set_global=False)
        _agent_trace(_handler(pipeline))
        pipeline.shutdown()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        existing = tmp_path / "mine.jsonl"
        existing.write_text("")
        existing.chmod(0o644)
        pipeline = llmtrace.configure(exporters="jsonl", jsonl_path=existing, set_global=False)
        _agent_trace(_handler(pipeline))
        pipeline.shutdown()
        assert stat.S_IMODE(existing.stat().st_mode) == 0o644  # the user's file keeps its mode
        assert len(existing.read_text().splitlines()) == 3
    finally:
        os.umask(old_umask)


# --- the shutdown's threads -------------------------------------------------------------------


def test_shutdown_still_works_where_threads_cannot_start(monkeypatch):
    """During exit some Python releases refuse new threads: the parts are shut down one by one."""
    with HttpReceiver() as rx:
        pipeline = llmtrace.configure(exporters="otlp", otlp_endpoint=rx.endpoint, set_global=False)
        _agent_trace(_handler(pipeline))

        class Refused(threading.Thread):
            def start(self) -> None:
                raise RuntimeError("can't create new thread at interpreter shutdown")

        with monkeypatch.context() as patched:
            patched.setattr(_config, "threading", types.SimpleNamespace(Thread=Refused))
            pipeline.shutdown()
        assert len(rx.wait_for_spans(3)) == 3 and rx.wait_for_metric(sc.METRIC_USAGE_COST)
