"""configure(): real OTLP export over gRPC and HTTP to receivers on 127.0.0.1, JSONL, dead collectors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import grpc
import pytest

import llmtrace
from llmtrace import semconv as sc
from tests.otlp_receivers import GrpcReceiver, HangingServer, HttpReceiver, closed_port


def _handler(pipeline: llmtrace.Pipeline) -> llmtrace.TelemetryHandler:
    return llmtrace.TelemetryHandler(
        tracer_provider=pipeline.tracer_provider,
        meter_provider=pipeline.meter_provider,
        logger_provider=pipeline.logger_provider,
    )


def _agent_trace(handler: llmtrace.TelemetryHandler) -> tuple[str, str]:
    agent = handler.start_agent("researcher")
    chat = handler.start_chat("gpt-4o", provider="openai", parent=agent, stream=True)
    chat.chunk()
    chat.response_model = "gpt-4o-2024-08-06"
    chat.finish_reasons = ["tool_call"]
    chat.set_usage(input_tokens=1000, output_tokens=500, cache_read_tokens=200, reasoning_tokens=50)
    chat.stop()
    agent.step("action", tool_name="search", tool_call_id="call_1")
    handler.start_tool("search", call_id="call_1", parent=agent).stop()
    agent.step("final")
    agent.stop()
    context = chat.span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _check_received(rx: GrpcReceiver | HttpReceiver, trace_id: str, chat_span_id: str) -> None:
    spans = {s.name: s for s in rx.wait_for_spans(3)}
    assert set(spans) == {"invoke_agent researcher", "chat gpt-4o", "execute_tool search"}
    agent, chat, tool = spans["invoke_agent researcher"], spans["chat gpt-4o"], spans["execute_tool search"]
    assert chat.trace_id == trace_id and chat.span_id == chat_span_id
    assert chat.parent_span_id == agent.span_id and tool.parent_span_id == agent.span_id
    assert chat.kind == "CLIENT" and agent.kind == "INTERNAL"
    assert chat.resource[sc.SERVICE_NAME] == "wire-test"
    assert chat.scope == sc.INSTRUMENTATION_SCOPE
    attrs = dict(chat.attributes)
    ttfc = attrs.pop(sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)
    assert isinstance(ttfc, float)
    # gpt-4o: 800 uncached input at $2.50, 200 cached at $1.25, 500 output at $10 per 1M
    assert attrs.pop(sc.GEN_AI_USAGE_COST_AMOUNT) == pytest.approx(0.002 + 0.00025 + 0.005)
    assert attrs == {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
        sc.GEN_AI_REQUEST_STREAM: True,
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["tool_call"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: 1000,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 500,
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 200,
        sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 50,
        sc.GEN_AI_USAGE_COST_CURRENCY: "USD",
        sc.GEN_AI_USAGE_COST_SOURCE: "local",
        sc.LLMTRACE_STREAM_CHUNKS: 1,
    }
    assert agent.events == [
        (
            sc.LLMTRACE_AGENT_STEP_EVENT,
            {
                sc.LLMTRACE_AGENT_STEP_INDEX: 1,
                sc.LLMTRACE_AGENT_STEP_KIND: "action",
                sc.GEN_AI_AGENT_NAME: "researcher",
                sc.GEN_AI_TOOL_NAME: "search",
                sc.GEN_AI_TOOL_CALL_ID: "call_1",
            },
        ),
        (
            sc.LLMTRACE_AGENT_STEP_EVENT,
            {
                sc.LLMTRACE_AGENT_STEP_INDEX: 2,
                sc.LLMTRACE_AGENT_STEP_KIND: "final",
                sc.GEN_AI_AGENT_NAME: "researcher",
            },
        ),
    ]
    tokens = rx.wait_for_metric(sc.METRIC_CLIENT_TOKEN_USAGE)
    assert sorted(p.sum for p in tokens) == [500, 1000]
    (cost,) = rx.wait_for_metric(sc.METRIC_USAGE_COST)
    assert cost.unit == "USD" and cost.value == pytest.approx(0.00725)
    (log,) = rx.wait_for_logs(1)
    assert log.event_name == sc.EVENT_EVALUATION_RESULT
    assert log.trace_id == trace_id and log.span_id == chat_span_id
    assert log.attributes == {sc.GEN_AI_EVALUATION_NAME: "relevance", sc.GEN_AI_EVALUATION_SCORE_VALUE: 0.75}


def _round_trip(rx, monkeypatch, **options):
    """Configure OTLP export with ``options``, send one agent trace and one evaluation, check that
    ``rx`` received all three signals; the pipeline, still open."""
    pipeline = llmtrace.configure(service_name="wire-test", exporters="otlp", set_global=False, **options)
    handler = _handler(pipeline)
    monkeypatch.setattr("llmtrace._manual._handler", handler)
    trace_id, span_id = _agent_trace(handler)
    llmtrace.record_evaluation("relevance", score=0.75, trace_id=trace_id, span_id=span_id)
    pipeline.force_flush()
    _check_received(rx, trace_id, span_id)
    return pipeline


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_export_reaches_a_real_receiver(protocol, monkeypatch):
    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    with receiver as rx:
        pipeline = _round_trip(
            rx,
            monkeypatch,
            otlp_endpoint=rx.endpoint,
            otlp_protocol=protocol,
            otlp_insecure=True,
            otlp_headers={"x-team": "llm"},
        )
        assert rx.headers("traces")[0]["x-team"] == "llm"
        pipeline.shutdown()
    assert pipeline.stats.snapshot()["exported"] == 3 and pipeline.stats.dropped == 0


@pytest.mark.parametrize("path", ["/v1/traces", "/v1/logs/", ""])
def test_otlp_endpoint_given_as_a_full_signal_url_reaches_every_signal(path, monkeypatch):
    """Users copy ``http://collector:4318/v1/traces`` from collector docs: all three signals still
    go to their own path instead of ``/v1/traces/v1/traces``."""
    with HttpReceiver() as rx:
        pipeline = _round_trip(
            rx, monkeypatch, otlp_endpoint=rx.endpoint + path, otlp_protocol="http/protobuf"
        )
        pipeline.shutdown()
    assert pipeline.stats.snapshot()["exported"] == 3 and pipeline.stats.dropped == 0


def test_otlp_endpoint_variable_given_as_a_full_signal_url_reaches_every_signal(monkeypatch):
    """``OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318/v1/traces`` works as the same URL given
    as ``otlp_endpoint`` does (the exporters would otherwise append ``/v1/<signal>`` to it)."""
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint + "/v1/traces")
        pipeline = _round_trip(rx, monkeypatch)
        pipeline.shutdown()
        assert {call for call in ("traces", "metrics", "logs") if rx.call_count(call)} == {
            "traces",
            "metrics",
            "logs",
        }
    assert pipeline.stats.snapshot()["exported"] == 3 and pipeline.stats.dropped == 0


def _redirect_default_endpoint(monkeypatch, endpoint: str) -> None:
    """Points the HTTP exporters' default address (``http://localhost:4318``) at ``endpoint``: one
    constant in ``_common`` since opentelemetry-exporter-otlp-proto-http 1.45, one per signal before."""
    from opentelemetry.exporter.otlp.proto.http import _common

    if hasattr(_common, "_DEFAULT_ENDPOINT"):
        monkeypatch.setattr(_common, "_DEFAULT_ENDPOINT", endpoint)
        return
    for signal in ("trace_exporter", "metric_exporter", "_log_exporter"):
        module = f"opentelemetry.exporter.otlp.proto.http.{signal}"
        monkeypatch.setattr(f"{module}.DEFAULT_ENDPOINT", endpoint + "/")


def test_only_signals_with_an_endpoint_are_exported(monkeypatch):
    """With only ``..._TRACES_ENDPOINT`` set, metrics and events are not sent to the exporters'
    default address (``localhost:4318``, redirected here to a second receiver to watch it)."""
    with HttpReceiver() as rx, HttpReceiver() as default:
        _redirect_default_endpoint(monkeypatch, default.endpoint)
        monkeypatch.setenv("LLMTRACE_STORE", "off")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rx.endpoint + "/v1/traces")
        pipeline = llmtrace.configure(set_global=False)
        assert pipeline.exporters == ("otlp",)
        handler = _handler(pipeline)
        monkeypatch.setattr("llmtrace._manual._handler", handler)
        trace_id, span_id = _agent_trace(handler)
        llmtrace.record_evaluation("relevance", score=0.75, trace_id=trace_id, span_id=span_id)
        pipeline.force_flush()
        assert {s.name for s in rx.wait_for_spans(3)} == {
            "invoke_agent researcher",
            "chat gpt-4o",
            "execute_tool search",
        }
        pipeline.shutdown()
        assert (rx.call_count("metrics"), rx.call_count("logs")) == (0, 0)
        assert default.call_count() == 0
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    with HttpReceiver() as default:  # with no endpoint anywhere, "otlp" still means the default
        _redirect_default_endpoint(monkeypatch, default.endpoint)
        pipeline = llmtrace.configure(exporters="otlp", set_global=False)
        _agent_trace(_handler(pipeline))
        pipeline.shutdown()
        assert default.call_count("traces") >= 1 and default.call_count("metrics") >= 1


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"])
def test_the_export_timeout_variables_are_honoured(monkeypatch, variable):
    """Milliseconds, per signal or for all: a hung collector costs that long, not the default 5 s."""
    with HangingServer() as srv:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.endpoint)
        monkeypatch.setenv(variable, "400")
        pipeline = llmtrace.configure(exporters="otlp", set_global=False)
        _handler(pipeline).start_agent("hung").stop()
        started = time.perf_counter()
        pipeline.tracer_provider.force_flush(30_000)  # type: ignore[attr-defined]
        elapsed = time.perf_counter() - started
        pipeline.shutdown()
    assert 0.3 < elapsed < 2.5
    assert pipeline.stats.snapshot()["failed"] == 1


def test_otlp_settings_from_standard_environment(monkeypatch, tmp_path):
    with HttpReceiver() as rx:
        monkeypatch.setenv("LLMTRACE_STORE", str(tmp_path / "traces.db"))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0k3n,x-tenant=acme")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
        pipeline = llmtrace.configure(set_global=False)
        assert pipeline.exporters == ("store", "otlp")  # the local store as well as OTLP
        _handler(pipeline).start_chat("gpt-4o", provider="openai").stop()
        pipeline.force_flush()
        (span,) = rx.wait_for_spans(1)
        assert span.resource[sc.SERVICE_NAME] == "from-env"
        headers = rx.headers("traces")[0]
        assert headers["x-tenant"] == "acme" and headers["authorization"] == "Bearer t0k3n"
        pipeline.shutdown()


def _dead_collector_run(pipeline: llmtrace.Pipeline, calls: int = 200) -> float:
    handler = _handler(pipeline)
    start = time.perf_counter()
    for _ in range(calls):
        inv = handler.start_chat("gpt-4o", provider="openai")
        inv.set_usage(input_tokens=3, output_tokens=4)
        inv.stop()
    return (time.perf_counter() - start) / calls


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("failure", ["closed", "hanging", "refusing"])
def test_dead_collector_never_blocks_or_raises(protocol, failure):
    import contextlib

    if failure == "closed":
        server: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        endpoint = f"http://127.0.0.1:{closed_port()}"
    elif failure == "hanging":
        server = HangingServer()
    else:
        server = (
            GrpcReceiver(status=grpc.StatusCode.UNAVAILABLE)
            if protocol == "grpc"
            else HttpReceiver(status=503)
        )
    with server as srv:
        if failure != "closed":
            endpoint = srv.endpoint  # type: ignore[attr-defined]
        pipeline = llmtrace.configure(
            exporters="otlp",
            otlp_endpoint=endpoint,
            otlp_protocol=protocol,
            otlp_insecure=True,
            otlp_timeout_s=0.5,
            schedule_delay_ms=50,
            set_global=False,
        )
        per_call = _dead_collector_run(pipeline)
        assert per_call < 0.005  # the app never waits for the collector
        started = time.perf_counter()
        pipeline.shutdown()
        assert time.perf_counter() - started < 8
    stats = pipeline.stats.snapshot()
    assert stats["exported"] == 0
    assert stats["dropped"] == 200
    assert stats["failed"] + stats["dropped_queue_full"] == 200


def test_full_queue_drops_are_counted():
    with HangingServer() as srv:
        pipeline = llmtrace.configure(
            exporters="otlp",
            otlp_endpoint=srv.endpoint,
            otlp_protocol="http/protobuf",
            otlp_timeout_s=0.5,
            max_queue_size=64,
            max_export_batch_size=32,
            schedule_delay_ms=10,
            set_global=False,
        )
        _dead_collector_run(pipeline, calls=1000)
        pipeline.shutdown()
    stats = pipeline.stats.snapshot()
    assert stats["dropped_queue_full"] > 500
    assert stats["exported"] == 0
    assert stats["dropped_queue_full"] + stats["failed"] + stats["pending"] == 1000


def test_jsonl_exporter_writes_spans_and_events(tmp_path, monkeypatch):
    path = tmp_path / "out" / "traces.jsonl"
    pipeline = llmtrace.configure(exporters=["jsonl"], jsonl_path=path, set_global=False, service_name="j")
    handler = _handler(pipeline)
    monkeypatch.setattr("llmtrace._manual._handler", handler)
    trace_id, span_id = _agent_trace(handler)
    llmtrace.record_evaluation("relevance", label="pass", trace_id=trace_id, span_id=span_id)
    pipeline.shutdown()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    names = sorted(line.get("name") or line.get("event_name") for line in lines)
    assert names == [
        "chat gpt-4o",
        "execute_tool search",
        sc.EVENT_EVALUATION_RESULT,
        "invoke_agent researcher",
    ]
    (chat,) = [line for line in lines if line.get("name") == "chat gpt-4o"]
    assert chat["attributes"][sc.GEN_AI_USAGE_INPUT_TOKENS] == 1000
    assert chat["context"]["trace_id"] == "0x" + trace_id


def test_configuration_mistakes_are_loud(monkeypatch, caplog):
    """A mistake in a keyword argument raises; a bad value in a standard variable (which other
    OTel components of the process share) is named in a WARNING and ignored."""
    with pytest.raises(ValueError, match="unknown exporter"):
        llmtrace.configure(exporters="jaeger-thrift", set_global=False)
    with pytest.raises(ValueError, match="otlp_protocol"):
        llmtrace.configure(exporters="otlp", otlp_protocol="carrier-pigeon", set_global=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="otlp_timeout_s"):
        llmtrace.configure(exporters="otlp", otlp_timeout_s=-1, set_global=False)
    with pytest.raises(ValueError, match="export_timeout_ms"):
        llmtrace.configure(exporters="none", export_timeout_ms=0, set_global=False)
    with pytest.raises(ValueError, match="max_attribute_length"):
        llmtrace.configure(exporters="none", max_attribute_length=3, set_global=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("LLMTRACE_STORE", "off")
    with caplog.at_level("WARNING", logger="llmtrace"):
        pipeline = llmtrace.configure(set_global=False)  # the defaults apply
    pipeline.shutdown()
    assert pipeline.exporters == ("otlp",)
    messages = " | ".join(r.getMessage() for r in caplog.records)
    for named in (
        "OTEL_EXPORTER_OTLP_PROTOCOL='http/json'",
        "OTEL_TRACES_EXPORTER='zipkin'",
        "OTEL_EXPORTER_OTLP_TIMEOUT='10s'",
    ):
        assert named in messages


def _run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMTRACE_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
    )


def test_global_pipeline_flushes_at_exit(tmp_path):
    with HttpReceiver() as rx:
        result = _run_python(
            """
            import llmtrace
            llmtrace.configure(service_name="exit-test", schedule_delay_ms=60000)
            inv = llmtrace.TelemetryHandler().start_chat("gpt-4o", provider="openai")
            inv.set_usage(input_tokens=1, output_tokens=2)
            inv.stop()
            """,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "LLMTRACE_STORE": str(tmp_path / "t.db")},
        )
        assert result.returncode == 0, result.stderr
        (span,) = rx.wait_for_spans(1)
        assert span.name == "chat gpt-4o" and span.resource[sc.SERVICE_NAME] == "exit-test"


def test_existing_global_provider_is_reused_not_stacked():
    result = _run_python(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import llmtrace

        exporter = InMemorySpanExporter()
        mine = TracerProvider()
        mine.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(mine)
        pipeline = llmtrace.configure(exporters="console")
        assert pipeline.owns_providers is False
        assert pipeline.tracer_provider is mine
        assert len(mine._active_span_processor._span_processors) == 1  # nothing stacked on it
        llmtrace.TelemetryHandler().start_chat("gpt-4o", provider="openai").stop()
        print([s.name for s in exporter.get_finished_spans()])
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['chat gpt-4o']"
    assert "chat gpt-4o" not in result.stderr  # no console exporter was added


def test_sdk_disabled_in_a_fresh_process():
    result = _run_python(
        """
        import llmtrace
        from opentelemetry import trace
        pipeline = llmtrace.configure(exporters="console")
        inv = llmtrace.TelemetryHandler().start_chat("gpt-4o", provider="openai")
        inv.stop()
        print(pipeline.exporters, inv.span.is_recording(), type(trace.get_tracer_provider()).__name__)
        """,
        {"OTEL_SDK_DISABLED": "true"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "() False ProxyTracerProvider"


def test_prometheus_scrape_endpoint():
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pipeline = llmtrace.configure(exporters="none", prometheus_port=port, set_global=False)
    inv = _handler(pipeline).start_chat("gpt-4o", provider="openai")
    inv.set_usage(input_tokens=1000, output_tokens=500)
    inv.stop()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    pipeline.shutdown()
    assert "gen_ai_client_token_usage" in body
    (cost_line,) = [
        line
        for line in body.splitlines()
        if line.startswith("llmtrace_usage_cost") and not line.startswith("#")
    ]
    assert float(cost_line.rsplit(" ", 1)[1]) == pytest.approx(0.0075)


def test_a_later_configure_changes_only_what_it_is_given():
    """A bare configure() elsewhere in the app (a library, a notebook cell) must neither drop the
    redaction hook nor turn capture back on; the settings it is given do apply."""
    result = _run_python(
        """
        import llmtrace
        from llmtrace._settings import settings

        def hook(key, value):
            return value

        llmtrace.configure(exporters="none", redact=hook, capture_content=False, max_attribute_length=500)
        llmtrace.configure()  # warns, keeps the pipeline, changes nothing
        assert settings.content.redact is hook, settings.content
        assert settings.content.mode.name == "NO_CONTENT", settings.content  # the environment says SPAN_ONLY
        assert settings.content.max_attribute_length == 500
        assert settings.error_messages is False
        llmtrace.configure(capture_content="EVENT_ONLY", capture_error_messages=True)
        assert settings.content.mode.name == "EVENT_ONLY" and settings.content.redact is hook
        assert settings.error_messages is True
        print("ok")
        """,
        env={"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert "already called" in result.stderr


def test_configure_after_shutdown_says_the_pipeline_is_shut_down():
    result = _run_python(
        """
        import llmtrace
        first = llmtrace.configure(exporters="none")
        llmtrace.shutdown()
        assert llmtrace.configure(exporters="console") is first
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert "after llmtrace.shutdown()" in result.stderr and "already called" not in result.stderr


def test_error_messages_switch_from_the_environment():
    result = _run_python(
        """
        import llmtrace
        from llmtrace._settings import settings

        llmtrace.configure(exporters="none")
        print(settings.error_messages, settings.content.mode.name)
        """,
        env={"LLMTRACE_CAPTURE_ERROR_MESSAGES": "true"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "NO_CONTENT"]
