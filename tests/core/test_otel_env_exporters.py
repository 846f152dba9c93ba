"""``OTEL_METRICS_EXPORTER=console|prometheus`` and ``OTEL_LOGS_EXPORTER=console`` (alone or in
lists such as ``otlp,console``), with the real SDK exporters: console output captured from
``sys.stdout``, the Prometheus endpoint scraped over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

import llmtrace
from llmtrace import _config
from llmtrace import semconv as sc
from llmtrace._env import env_port
from llmtrace._exporters import CountingMetricExporter
from tests.core.test_configure import _handler
from tests.core.test_otel_env import clean_env, metric_readers  # noqa: F401  (clean_env: autouse)
from tests.otlp_receivers import HttpReceiver

COST = 0.0075
"""gpt-4o, 1,000 input and 500 output tokens."""


def _chat(pipeline: llmtrace.Pipeline) -> None:
    inv = _handler(pipeline).start_chat("gpt-4o", provider="openai")
    inv.set_usage(input_tokens=1000, output_tokens=500)
    inv.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    """Whether something listens on the port of 127.0.0.1 (a connection of the past, waiting in
    TIME_WAIT, does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _scrape(port: int, host: str = "127.0.0.1") -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _cost(body: str) -> float:
    (line,) = [
        line
        for line in body.splitlines()
        if line.startswith("llmtrace_usage_cost") and not line.startswith("#")
    ]
    return float(line.rsplit(" ", 1)[1])


def _json_documents(text: str) -> list[dict[str, Any]]:
    """The JSON documents the console exporters printed one after another."""
    decoder = json.JSONDecoder()
    out: list[dict[str, Any]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        document, pos = decoder.raw_decode(text, pos)
        out.append(document)


def _metric_points(documents: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    points: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        for resource_metrics in document.get("resource_metrics", []):
            for scope_metrics in resource_metrics["scope_metrics"]:
                for metric in scope_metrics["metrics"]:
                    points.setdefault(metric["name"], []).extend(metric["data"]["data_points"])
    return points


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "llmtrace"]


# --- console ------------------------------------------------------------------------------------


def test_console_metrics_and_events(monkeypatch, capsys):
    """``OTEL_METRICS_EXPORTER=console`` prints the metrics through a periodic reader with the
    export interval and timeout of the variables; ``OTEL_LOGS_EXPORTER=console`` prints events."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_TIMEOUT", "7000")
    pipeline = llmtrace.configure(service_name="console-test", set_global=False)
    assert pipeline.exporters_by_signal == {"traces": (), "metrics": ("console",), "logs": ("console",)}
    (reader,) = metric_readers(pipeline.meter_provider)
    assert isinstance(reader, PeriodicExportingMetricReader)
    assert (reader._export_interval_millis, reader._export_timeout_millis) == (100, 7000)
    assert isinstance(reader._exporter, CountingMetricExporter)
    handler = _handler(pipeline)
    monkeypatch.setattr("llmtrace._manual._handler", handler)
    _chat(pipeline)
    llmtrace.record_evaluation("relevance", score=0.75, trace_id="ab" * 16, span_id="cd" * 8)
    printed = ""
    deadline = time.monotonic() + 10  # the reader prints every 100 ms by itself: no flush here
    while sc.METRIC_USAGE_COST not in printed and time.monotonic() < deadline:
        time.sleep(0.05)
        printed += capsys.readouterr().out
    assert sc.METRIC_USAGE_COST in printed, "no periodic metric export"
    assert pipeline.force_flush(10_000)
    pipeline.shutdown()
    documents = _json_documents(printed + capsys.readouterr().out)
    points = _metric_points(documents)
    assert points[sc.METRIC_USAGE_COST][-1]["value"] == pytest.approx(COST)
    usage = points[sc.METRIC_CLIENT_TOKEN_USAGE]
    assert sorted(p["sum"] for p in usage[-2:]) == [500, 1000]
    (metrics_resource,) = {
        json.dumps(rm["resource"]["attributes"]) for d in documents for rm in d.get("resource_metrics", [])
    }
    assert json.loads(metrics_resource)["service.name"] == "console-test"
    (event,) = [d for d in documents if "event_name" in d]
    assert event["event_name"] == sc.EVENT_EVALUATION_RESULT
    assert event["attributes"][sc.GEN_AI_EVALUATION_NAME] == "relevance"
    assert event["attributes"][sc.GEN_AI_EVALUATION_SCORE_VALUE] == 0.75
    assert (event["trace_id"], event["span_id"]) == ("0x" + "ab" * 16, "0x" + "cd" * 8)
    assert event["resource"]["attributes"]["service.name"] == "console-test"


def test_otlp_and_console_lists(monkeypatch, capsys):
    """``otlp,console`` sends the signal over OTLP and prints it too; the traces' ``console``
    prints spans as before."""
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp, CONSOLE")
        monkeypatch.setenv("OTEL_LOGS_EXPORTER", "console,otlp")
        pipeline = llmtrace.configure(set_global=False)
        assert pipeline.exporters_by_signal == {
            "traces": ("console",),
            "metrics": ("otlp", "console"),
            "logs": ("console", "otlp"),
        }
        monkeypatch.setattr("llmtrace._manual._handler", _handler(pipeline))
        _chat(pipeline)
        llmtrace.record_evaluation("relevance", score=1.0, trace_id="ab" * 16, span_id="cd" * 8)
        assert pipeline.force_flush(10_000)
        pipeline.shutdown()
        assert rx.call_count("traces") == 0
        assert rx.wait_for_metric(sc.METRIC_USAGE_COST)[-1].value == pytest.approx(COST)
        assert [log.event_name for log in rx.wait_for_logs(1)] == [sc.EVENT_EVALUATION_RESULT]
    documents = _json_documents(capsys.readouterr().out)
    assert [d["name"] for d in documents if "context" in d] == ["chat gpt-4o"]  # the span
    assert _metric_points(documents)[sc.METRIC_USAGE_COST][-1]["value"] == pytest.approx(COST)
    assert [d["event_name"] for d in documents if "event_name" in d] == [sc.EVENT_EVALUATION_RESULT]


def test_the_exporters_keyword_console_still_prints_spans_only(capsys):
    pipeline = llmtrace.configure(exporters="console", set_global=False)
    assert pipeline.exporters_by_signal == {"traces": ("console",), "metrics": (), "logs": ()}
    _chat(pipeline)
    pipeline.shutdown()
    assert [d["name"] for d in _json_documents(capsys.readouterr().out)] == ["chat gpt-4o"]


# --- prometheus ---------------------------------------------------------------------------------


def test_prometheus_variable_serves_a_scrape_endpoint(monkeypatch):
    port = _free_port()
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
    pipeline = llmtrace.configure(set_global=False)
    assert pipeline.exporters_by_signal["metrics"] == ("prometheus",)
    _chat(pipeline)
    body = _scrape(port)
    pipeline.shutdown()
    assert _cost(body) == pytest.approx(COST)
    tokens = {
        line.split('gen_ai_token_type="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith('gen_ai_client_token_usage_sum{gen_ai_operation_name="chat"')
    }
    assert tokens == {"input": 1000.0, "output": 500.0}
    with pytest.raises(urllib.error.URLError):  # stopped and its socket closed at shutdown
        _scrape(port)
    assert not _listening(port)  # the listening socket is closed, not left to the garbage collector


def test_prometheus_defaults_to_localhost_9464(monkeypatch):
    """The specification's defaults: ``localhost``, port 9464."""
    if _listening(9464):
        pytest.skip("port 9464 is in use on this machine")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    pipeline = llmtrace.configure(set_global=False)
    try:
        if pipeline.exporters_by_signal["metrics"] != ("prometheus",):
            pytest.skip("port 9464 was taken meanwhile")  # warned about, no endpoint
        _chat(pipeline)
        body = _scrape(9464, host="localhost")
    finally:
        pipeline.shutdown()
    assert _cost(body) == pytest.approx(COST)


def test_otlp_and_prometheus(monkeypatch):
    port = _free_port()
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp,prometheus")
        monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
        monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
        pipeline = llmtrace.configure(set_global=False)
        assert pipeline.exporters_by_signal["metrics"] == ("otlp", "prometheus")
        _chat(pipeline)
        body = _scrape(port)
        assert pipeline.force_flush(10_000)
        pipeline.shutdown()
        assert rx.wait_for_metric(sc.METRIC_USAGE_COST)[-1].value == pytest.approx(COST)
    assert _cost(body) == pytest.approx(COST)


def test_prometheus_keyword_and_variable_make_one_endpoint(monkeypatch):
    """``prometheus_port`` is the same reader as the variable's (its port wins): one endpoint,
    one reader, listed among the exporters."""
    port = _free_port()
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", "1")  # the keyword wins
    pipeline = llmtrace.configure(prometheus_port=port, set_global=False)
    try:
        assert pipeline.exporters_by_signal["metrics"] == ("prometheus",)
        readers = metric_readers(pipeline.meter_provider)
        assert [type(reader).__name__ for reader in readers] == ["PrometheusMetricReader"]
        _chat(pipeline)
        assert _cost(_scrape(port)) == pytest.approx(COST)  # 127.0.0.1, the keyword's default host
    finally:
        pipeline.shutdown()


def test_prometheus_without_the_extra_is_a_warning(monkeypatch, caplog):
    """The variable never stops the application: the missing extra is named, metrics go on
    without the endpoint; the keyword raises as before."""
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.prometheus", None)  # not installed
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus,console")
    with caplog.at_level(logging.WARNING, logger="llmtrace"):
        pipeline = llmtrace.configure(set_global=False)
    pipeline.shutdown()
    (warning,) = _warnings(caplog)
    assert "OTEL_METRICS_EXPORTER='prometheus,console'" in warning
    assert "pip install 'llmtrace[prometheus]'" in warning
    assert pipeline.exporters_by_signal["metrics"] == ("console",)
    assert "prometheus" not in pipeline.exporters
    with pytest.raises(ImportError, match="prometheus_port needs the Prometheus exporter"):
        llmtrace.configure(prometheus_port=_free_port(), exporters="none", set_global=False)


def test_prometheus_port_in_use_is_a_warning(monkeypatch, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
        monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
        monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
        with caplog.at_level(logging.WARNING, logger="llmtrace"):
            pipeline = llmtrace.configure(set_global=False)
        pipeline.shutdown()
    (warning,) = _warnings(caplog)
    assert f"cannot serve Prometheus metrics on 127.0.0.1 port {port}" in warning
    assert pipeline.exporters_by_signal["metrics"] == ()
    # the reader made before the failure is gone from the registry: another one can register
    port = _free_port()
    pipeline = llmtrace.configure(prometheus_port=port, exporters="none", set_global=False)
    _chat(pipeline)
    assert _cost(_scrape(port)) == pytest.approx(COST)
    pipeline.shutdown()


@pytest.mark.parametrize("value", ["lots", "0", "70000", "-1"])
def test_a_bad_prometheus_port_is_warned_about_and_ignored(monkeypatch, caplog, value):
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", value)
    with caplog.at_level(logging.WARNING, logger="llmtrace"):
        assert env_port("OTEL_EXPORTER_PROMETHEUS_PORT") is None
    (warning,) = _warnings(caplog)
    assert f"OTEL_EXPORTER_PROMETHEUS_PORT={value!r}" in warning and "ignored" in warning
    assert _config.DEFAULT_PROMETHEUS_PORT == 9464
