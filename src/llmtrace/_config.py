"""``llmtrace.configure()``: providers, exporters, the local store and content policy in one call.

Standard OpenTelemetry environment variables come first (``OTEL_SERVICE_NAME``,
``OTEL_EXPORTER_OTLP_*``, ``OTEL_TRACES_EXPORTER``, ``OTEL_SDK_DISABLED``,
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``); ``LLMTRACE_*`` variables only where
OTel has none (``LLMTRACE_STORE``). Keyword arguments override the environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from llmtrace import _fork, semconv
from llmtrace._content import ContentPolicy, parse_capture_mode
from llmtrace._exporters import (
    BoundedBatchLogRecordProcessor,
    BoundedLogExporter,
    CountingBatchSpanProcessor,
    CountingSpanExporter,
    ExportStats,
    jsonl_exporters,
)
from llmtrace._otlp import OtlpSettings, Protocol
from llmtrace._runmap import end_open_runs
from llmtrace._safety import report_internal_error
from llmtrace._settings import ERROR_MESSAGES_ENV, env_flag, settings
from llmtrace._usage import LogUsageSink, add_usage_sink, remove_usage_sink
from llmtrace.store._exporter import StoreSpanProcessor, StoreUsageSink, store_writer
from llmtrace.store._writer import DEFAULT_MAX_QUEUE_SIZE, StoreWriter, status_path_for

logger = logging.getLogger("llmtrace")

KNOWN_EXPORTERS = frozenset({"otlp", "console", "jsonl", "store", "none"})
DEFAULT_JSONL_PATH = ".llmtrace/traces.jsonl"
DEFAULT_STORE_PATH = ".llmtrace/traces.db"
STORE_ENV = "LLMTRACE_STORE"
_STORE_OFF = frozenset({"0", "false", "no", "off", "none"})


@dataclass
class Pipeline:
    """What configure() set up. ``owns_providers`` is False when an existing provider was reused."""

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    logger_provider: _logs.LoggerProvider
    exporters: tuple[str, ...]
    owns_providers: bool
    stats: ExportStats = field(default_factory=ExportStats)
    store_writer: StoreWriter | None = None
    """The local store's writer (``store_writer.snapshot()`` for its counters), if a store is used."""
    _shutdown_callbacks: list[Callable[[], Any]] = field(default_factory=list)
    _is_shut_down: bool = False

    def force_flush(self, timeout_millis: int = 10_000) -> None:
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                try:
                    flush(timeout_millis)
                except Exception:
                    logger.debug("llmtrace: force_flush failed", exc_info=True)

    def shutdown(self) -> None:
        """Flush and stop exporting (bounded by the export timeout, even with a dead collector).

        Idempotent: the exit hook calls it again after an explicit call, harmlessly."""
        if not self.owns_providers or self._is_shut_down:
            return
        self._is_shut_down = True
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            stop = getattr(provider, "shutdown", None)
            if stop is not None:
                try:
                    stop()
                except Exception:
                    logger.debug("llmtrace: shutdown failed", exc_info=True)
        for callback in self._shutdown_callbacks:
            callback()


_lock = _fork.lock()
_active: Pipeline | None = None
_usage_log_sink = LogUsageSink()


def configure(
    *,
    service_name: str | None = None,
    exporters: str | Sequence[str] | None = None,
    otlp_endpoint: str | None = None,
    otlp_protocol: Protocol | None = None,
    otlp_headers: Mapping[str, str] | None = None,
    otlp_insecure: bool | None = None,
    otlp_timeout_s: float | None = None,
    jsonl_path: str | os.PathLike[str] | None = None,
    store: str | os.PathLike[str] | bool | None = None,
    store_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    capture_content: str | bool | None = None,
    max_attribute_length: int | None = None,
    redact: Callable[[str, Any], Any] | None = None,
    capture_error_messages: bool | None = None,
    max_queue_size: int = 2048,
    max_export_batch_size: int = 512,
    schedule_delay_ms: float = 1000,
    export_timeout_ms: float = 5000,
    metric_export_interval_ms: float = 30_000,
    prometheus_port: int | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    log_usage: bool | None = None,
    run_ttl_s: float | None = None,
    max_open_runs: int | None = None,
    tracer_provider: TracerProvider | None = None,
    set_global: bool = True,
) -> Pipeline:
    """Set up tracing, metrics and events for llmtrace (and anything else using OTel).

    Args:
        service_name: ``service.name``; default ``OTEL_SERVICE_NAME``, then ``"llmtrace-app"``.
        exporters: any of ``"store"``, ``"otlp"``, ``"console"``, ``"jsonl"``, ``"none"``.
            Default: ``OTEL_TRACES_EXPORTER`` if set; else ``store`` and ``otlp`` when
            ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set; else ``store``.
        otlp_endpoint, otlp_protocol, otlp_headers, otlp_insecure, otlp_timeout_s: OTLP
            settings; unset ones come from the standard ``OTEL_EXPORTER_OTLP_*`` variables. The
            protocol defaults to ``OTEL_EXPORTER_OTLP_PROTOCOL``, else gRPC for an endpoint on
            port 4317, else ``http/protobuf``.
        jsonl_path: file for the ``jsonl`` exporter (``LLMTRACE_JSONL_PATH``, default
            ``.llmtrace/traces.jsonl``): one JSON line per span and per event.
        store: the local trace and usage store. A path or URL (``postgresql://...``) turns the
            ``store`` exporter on and writes there; True turns it on at the default location;
            False turns it off whatever the exporters say. Default location: ``LLMTRACE_STORE``,
            else ``.llmtrace/traces.db`` under the working directory (``LLMTRACE_STORE=off``
            leaves the store out of the default exporters).
        store_queue_size: spans and usage records that may wait for the store's writer; beyond
            it they are dropped and counted (``pipeline.store_writer.snapshot()``).
        capture_content: ``NO_CONTENT`` (default), ``SPAN_ONLY``, ``EVENT_ONLY`` or
            ``SPAN_AND_EVENT``; default ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.
        max_attribute_length: size limit of one content attribute, in characters.
        redact: ``redact(attribute_key, structured_value) -> value`` applied to captured content
            (and to exception messages, key ``exception.message``).
        capture_error_messages: record exception messages (status description, ``exception``
            event) even while content is not captured on spans; default
            ``LLMTRACE_CAPTURE_ERROR_MESSAGES``. Off by default: messages often quote the prompt
            or the tool's arguments. Recorded messages are secret-masked, redacted and bounded.
        max_queue_size, max_export_batch_size, schedule_delay_ms, export_timeout_ms: batch
            export settings. Spans beyond the queue are dropped and counted, never waited for.
        metric_export_interval_ms: how often metrics are pushed over OTLP.
        prometheus_port: also serve metrics for Prometheus on this port (extra ``prometheus``).
        log_usage: write one JSON line per model call to the ``llmtrace.usage`` logger
            (``LLMTRACE_LOG_USAGE``).
        run_ttl_s, max_open_runs: bounds of the integrations' open-run maps.
        tracer_provider: an SDK provider of your own to add llmtrace's exporters to.
        set_global: install the providers as the global OTel providers (default True).

    If a global SDK TracerProvider already exists (set up by you or another library) and no
    ``tracer_provider`` is passed, configure() adds nothing to it: llmtrace's spans go to
    that provider's pipeline. With ``OTEL_SDK_DISABLED=true`` everything is a no-op.
    """
    global _active
    _apply_settings(
        capture_content,
        max_attribute_length,
        redact,
        capture_error_messages,
        run_ttl_s,
        max_open_runs,
        again=_active is not None,
    )
    if log_usage if log_usage is not None else env_flag("LLMTRACE_LOG_USAGE"):
        add_usage_sink(_usage_log_sink)
    else:
        remove_usage_sink(_usage_log_sink)

    if settings.disabled:
        return Pipeline(
            trace.NoOpTracerProvider(), metrics.NoOpMeterProvider(), _logs.NoOpLoggerProvider(), (), False
        )

    with _lock:
        existing = trace.get_tracer_provider()
        if tracer_provider is None and set_global and isinstance(existing, TracerProvider):
            if _active is not None and _active.tracer_provider is existing:
                if _active._is_shut_down:
                    logger.warning(
                        "llmtrace.configure() after llmtrace.shutdown(): the pipeline is shut down and "
                        "exports nothing more; OpenTelemetry allows one global TracerProvider per "
                        "process, so it cannot be replaced (pass set_global=False for a new one)"
                    )
                else:
                    logger.warning(
                        "llmtrace.configure() was already called; keeping the first pipeline "
                        "(only the content and run settings given to this call apply)"
                    )
                return _active
            logger.info(
                "llmtrace: a global TracerProvider already exists; using it as is (no exporters added)"
            )
            _active = Pipeline(
                existing, metrics.get_meter_provider(), _logs.get_logger_provider(), (), owns_providers=False
            )
            return _active

        names = _exporter_names(exporters, store)
        resource = Resource.create(
            {**(resource_attributes or {}), semconv.SERVICE_NAME: _service_name(service_name)}
        )
        owns = tracer_provider is None
        provider = tracer_provider or TracerProvider(resource=resource, shutdown_on_exit=False)
        log_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        readers: list[MetricReader] = []
        pipeline = Pipeline(
            provider,
            metrics.NoOpMeterProvider(),  # replaced below
            log_provider,
            tuple(names),
            owns_providers=owns,
        )

        def add_span_exporter(exporter: SpanExporter) -> None:
            counted = CountingSpanExporter(exporter, pipeline.stats)
            provider.add_span_processor(
                CountingBatchSpanProcessor(
                    counted,
                    pipeline.stats,
                    max_queue_size=max_queue_size,
                    schedule_delay_millis=schedule_delay_ms,
                    max_export_batch_size=max_export_batch_size,
                    export_timeout_millis=export_timeout_ms,
                )
            )

        def add_log_exporter(exporter: LogRecordExporter) -> None:
            log_provider.add_log_record_processor(
                BoundedBatchLogRecordProcessor(
                    BoundedLogExporter(exporter),
                    max_queue_size=max_queue_size,
                    max_export_batch_size=max_export_batch_size,
                    schedule_delay_millis=schedule_delay_ms,
                    export_timeout_millis=export_timeout_ms,
                )
            )

        if "otlp" in names:
            otlp = OtlpSettings.resolve(
                otlp_endpoint, otlp_protocol, otlp_headers, otlp_insecure, otlp_timeout_s, export_timeout_ms
            )
            signals = otlp.signals()
            if "traces" in signals:
                add_span_exporter(otlp.span_exporter())
            if "logs" in signals:
                add_log_exporter(otlp.log_exporter())
            if "metrics" in signals:
                readers.append(
                    PeriodicExportingMetricReader(
                        otlp.metric_exporter(),
                        export_interval_millis=metric_export_interval_ms,
                        export_timeout_millis=export_timeout_ms,
                    )
                )
        if "console" in names:
            add_span_exporter(ConsoleSpanExporter())
        if "jsonl" in names:
            path = jsonl_path or os.environ.get("LLMTRACE_JSONL_PATH") or DEFAULT_JSONL_PATH
            span_exporter, log_exporter = jsonl_exporters(path)
            add_span_exporter(span_exporter)
            add_log_exporter(log_exporter)
        if "store" in names:
            url = _store_url(store)
            writer = store_writer(
                _store_opener(url),
                store_url=url,
                max_queue_size=store_queue_size,
                status_path=status_path_for(url),
            )
            provider.add_span_processor(
                StoreSpanProcessor(writer, shutdown_timeout_s=max(export_timeout_ms / 1000, 1.0))
            )
            sink = StoreUsageSink(writer)
            add_usage_sink(sink)
            pipeline.store_writer = writer
            pipeline._shutdown_callbacks.append(lambda: remove_usage_sink(sink))
        if prometheus_port is not None:
            reader, stop_server = _prometheus_reader(prometheus_port)
            readers.append(reader)
            pipeline._shutdown_callbacks.append(stop_server)

        meter_provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
        pipeline.meter_provider = meter_provider
        if pipeline.store_writer is not None:
            pipeline.store_writer.register_metrics(meter_provider)
        if set_global:
            if owns:
                trace.set_tracer_provider(provider)
            metrics.set_meter_provider(meter_provider)
            _logs.set_logger_provider(log_provider)
            _active = pipeline
            _register_atexit()
        return pipeline


def active_pipeline() -> Pipeline | None:
    return _active


def export_stats() -> dict[str, int]:
    """Counts of exported, failed and dropped spans of the pipeline configure() set up."""
    pipeline = _active
    return pipeline.stats.snapshot() if pipeline is not None else ExportStats().snapshot()


def shutdown() -> None:
    """Flush and shut down the configured pipeline (also done automatically at exit)."""
    pipeline = _active
    if pipeline is not None:
        pipeline.shutdown()


_atexit_registered = False


def _after_fork_in_child() -> None:
    pipeline = _active
    if pipeline is not None:
        pipeline.stats.reset()


_fork.in_child(_after_fork_in_child)


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        import atexit

        atexit.register(_at_exit)
        _atexit_registered = True


def _at_exit() -> None:
    """The process ends: runs still open in any handler (a stream never consumed, a call in flight
    in another thread) are ended (``llmtrace.evicted=shutdown``) while they can still be exported,
    then the pipeline is flushed and shut down. (An explicit ``shutdown()`` leaves runs alone: other
    handlers of the process may still be running them.)"""
    try:
        end_open_runs()
    except Exception as exc:
        report_internal_error(f"{__name__}.at_exit", exc)
    shutdown()


def _apply_settings(
    capture_content: str | bool | None,
    max_attribute_length: int | None,
    redact: Callable[[str, Any], Any] | None,
    capture_error_messages: bool | None,
    run_ttl_s: float | None,
    max_open_runs: int | None,
    *,
    again: bool,
) -> None:
    """Apply configure()'s content and run settings. The first call starts from the environment;
    a later one (``again``) changes only what it is given, so a bare ``configure()`` elsewhere in
    the application can neither drop the redaction hook nor turn capture back on."""
    settings.disabled = env_flag("OTEL_SDK_DISABLED")
    base = settings.content if again else ContentPolicy.from_env()
    mode = parse_capture_mode(capture_content) if capture_content is not None else base.mode
    length = max_attribute_length if max_attribute_length is not None else base.max_attribute_length
    if length < 64:
        raise ValueError(f"max_attribute_length must be at least 64, got {length}")
    hook = redact if redact is not None else base.redact  # the environment's policy has none
    settings.content = ContentPolicy(mode=mode, max_attribute_length=length, redact=hook)
    if capture_error_messages is not None:
        settings.error_messages = capture_error_messages
    elif not again:
        settings.error_messages = env_flag(ERROR_MESSAGES_ENV)
    if run_ttl_s is not None:
        if run_ttl_s <= 0:
            raise ValueError(f"run_ttl_s must be positive, got {run_ttl_s}")
        settings.run_ttl_s = run_ttl_s
    if max_open_runs is not None:
        if max_open_runs < 1:
            raise ValueError(f"max_open_runs must be at least 1, got {max_open_runs}")
        settings.max_open_runs = max_open_runs


def _service_name(name: str | None) -> str:
    return name or os.environ.get("OTEL_SERVICE_NAME") or "llmtrace-app"


def _exporter_names(
    exporters: str | Sequence[str] | None, store: str | os.PathLike[str] | bool | None = None
) -> list[str]:
    if exporters is None:
        env = os.environ.get("OTEL_TRACES_EXPORTER", "").strip()
        store_env_off = os.environ.get(STORE_ENV, "").strip().lower() in _STORE_OFF
        if env:
            exporters = env
        elif os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        ):
            exporters = ["otlp"] if store_env_off else ["store", "otlp"]
        else:
            exporters = [] if store_env_off else ["store"]
    if isinstance(exporters, str):
        exporters = exporters.split(",")
    names = [name.strip().lower() for name in exporters if name.strip()]
    unknown = sorted(set(names) - KNOWN_EXPORTERS)
    if unknown:
        raise ValueError(f"unknown exporter(s) {unknown}; choose from {sorted(KNOWN_EXPORTERS)}")
    names = [name for name in dict.fromkeys(names) if name != "none"]
    if store is False:
        names = [name for name in names if name != "store"]
    elif store is not None and "store" not in names:
        names.insert(0, "store")
    return names


def _store_url(store: str | os.PathLike[str] | bool | None) -> str:
    """Where the store is: ``store=`` (a path or URL), else ``LLMTRACE_STORE``, else the default
    path; relative paths are made absolute now, so a later chdir does not move the store."""
    if isinstance(store, (str, os.PathLike)) and not isinstance(store, bool):
        location = os.fspath(store)
    else:
        env = os.environ.get(STORE_ENV, "").strip()
        location = env if env and env.lower() not in _STORE_OFF else DEFAULT_STORE_PATH
    if "://" in location or location == ":memory:":
        return location
    return os.path.abspath(os.path.expanduser(location))


def _store_opener(url: str) -> Callable[[], Any]:
    """Opens the store on the writer's thread (a database that is down never fails configure())."""

    def open_it() -> Any:
        from llmtrace.store._open import open_store

        return open_store(url, create=True)

    return open_it


def _prometheus_reader(port: int) -> tuple[MetricReader, Callable[[], Any]]:
    """A Prometheus reader and a function that stops its scrape endpoint."""
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server
    except ImportError as exc:
        raise ImportError(
            "prometheus_port needs the Prometheus exporter: pip install opentelemetry-exporter-prometheus"
        ) from exc
    reader: MetricReader = PrometheusMetricReader()
    server, _ = start_http_server(port, addr=os.environ.get("LLMTRACE_PROMETHEUS_HOST", "127.0.0.1"))
    return reader, server.shutdown
