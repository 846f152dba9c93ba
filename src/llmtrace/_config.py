"""``llmtrace.configure()``: providers, exporters, the local store and content policy in one call.

Standard OpenTelemetry environment variables come first (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_*``, ``OTEL_{TRACES,METRICS,LOGS}_EXPORTER``,
``OTEL_BSP_*``, ``OTEL_BLRP_*``, ``OTEL_METRIC_EXPORT_*``, ``OTEL_EXPORTER_PROMETHEUS_*``,
``OTEL_TRACES_SAMPLER`` (read by the SDK's TracerProvider), ``OTEL_SDK_DISABLED``,
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``); ``LLMTRACE_*`` variables only where
OTel has none (``LLMTRACE_STORE``). Keyword arguments override the environment. A variable with a
value the specification says to ignore is logged at WARNING and ignored (see ``_env``); a bad
keyword argument raises.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from typing import Protocol as TypingProtocol

from opentelemetry import _logs, metrics, trace
from opentelemetry._logs._internal import ProxyLoggerProvider
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter, LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from llmtrace import _fork, _sigterm, semconv
from llmtrace._content import ContentPolicy, parse_capture_mode
from llmtrace._env import env, env_bool, env_duration_ms, env_port, env_positive_int, env_timeout_ms
from llmtrace._exporters import (
    BoundedBatchLogRecordProcessor,
    BoundedLogExporter,
    CountingBatchSpanProcessor,
    CountingMetricExporter,
    CountingSpanExporter,
    ExportStats,
    jsonl_exporters,
)
from llmtrace._otlp import (
    SIGNALS,
    Protocol,
    Signal,
    check_keywords,
    endpoint_for,
    endpoint_variables_set,
    resolve,
)
from llmtrace._runmap import end_open_runs
from llmtrace._safety import report_internal_error
from llmtrace._settings import ERROR_MESSAGES_ENV, env_flag, settings
from llmtrace._usage import LogUsageSink, add_usage_sink, remove_usage_sink
from llmtrace.store._exporter import (
    StoreEvaluationProcessor,
    StoreSpanProcessor,
    StoreUsageSink,
    store_writer,
)
from llmtrace.store._open import DEFAULT_PATH as DEFAULT_STORE_PATH
from llmtrace.store._open import SQLITE_PREFIX, env_store, env_store_off
from llmtrace.store._retention import RetentionValue, check_retention, retention_seconds
from llmtrace.store._writer import (
    DEFAULT_MAX_QUEUE_SIZE,
    SHUTDOWN_GRACE_S,
    StoreWriter,
    status_path_for,
)

logger = logging.getLogger("llmtrace")

KNOWN_EXPORTERS = frozenset({"otlp", "console", "jsonl", "store", "none"})
"""What ``exporters=`` accepts: ``otlp`` exports all three signals, ``console`` spans, ``jsonl``
spans and events, ``store`` spans and usage records (and evaluation events, when llmtrace creates
the LoggerProvider)."""
EXPORTER_ENV: dict[Signal, str] = {
    "traces": "OTEL_TRACES_EXPORTER",
    "metrics": "OTEL_METRICS_EXPORTER",
    "logs": "OTEL_LOGS_EXPORTER",
}
ENV_EXPORTERS: dict[Signal, frozenset[str]] = {
    "traces": frozenset({"otlp", "console", "jsonl", "store"}),
    "metrics": frozenset({"otlp", "console", "prometheus"}),
    "logs": frozenset({"otlp", "console", "jsonl", "store"}),
}
"""What each ``OTEL_<SIGNAL>_EXPORTER`` accepts (besides ``none``); other values are ignored.
``OTEL_LOGS_EXPORTER=store`` (for the SDK's own configuration, ``opentelemetry-instrument``) changes
nothing here: ``configure()`` keeps evaluation events in the store whenever the store is on."""
KEYWORD_EXPORTERS: dict[Signal, frozenset[str]] = {
    "traces": frozenset({"otlp", "console", "jsonl", "store"}),
    "metrics": frozenset({"otlp"}),
    "logs": frozenset({"otlp", "jsonl"}),
}
"""What each name of ``exporters=`` gives each signal (``console`` prints spans only; metrics and
events go to the console with ``OTEL_METRICS_EXPORTER`` / ``OTEL_LOGS_EXPORTER=console``)."""
PROMETHEUS_HOST_ENV = "OTEL_EXPORTER_PROMETHEUS_HOST"
PROMETHEUS_PORT_ENV = "OTEL_EXPORTER_PROMETHEUS_PORT"
DEFAULT_PROMETHEUS_PORT = 9464
DEFAULT_JSONL_PATH = ".llmtrace/traces.jsonl"

DEFAULT_BATCH_QUEUE_SIZE = 2048
DEFAULT_EXPORT_BATCH_SIZE = 512
DEFAULT_SCHEDULE_DELAY_MS = 1000.0
DEFAULT_EXPORT_TIMEOUT_MS = 5000.0
DEFAULT_METRIC_EXPORT_INTERVAL_MS = 30_000.0
"""Half the specification's 60 s: llmtrace's metrics (token usage, cost) show up sooner."""
MIN_SHUTDOWN_S = 1.0
"""Shutdown gets at least this long (so does the store's writer, whatever the export timeout)."""

_SIGNAL_NOUN = {"traces": "spans", "metrics": "metrics", "logs": "events"}


class _Failures(TypingProtocol):
    @property
    def failures(self) -> int: ...


@dataclass
class Pipeline:
    """What configure() set up.

    ``created`` lists the signals whose provider configure() created: llmtrace flushes and shuts
    those down (with ``shutdown()``, ``llmtrace.shutdown()`` and at exit). A provider you passed in
    (``tracer_provider=``) or that was already installed globally is yours: ``force_flush()``
    flushes it, but only you shut it down (llmtrace shuts down the span processors it added to it).
    ``owns_providers`` is True when configure() created all three providers."""

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    logger_provider: _logs.LoggerProvider
    exporters: tuple[str, ...]
    owns_providers: bool
    stats: ExportStats = field(default_factory=ExportStats)
    store_writer: StoreWriter | None = None
    """The local store's writer (``store_writer.snapshot()`` for its counters), if a store is used."""
    exporters_by_signal: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The exporters of each signal (``traces``, ``metrics``, ``logs``) llmtrace set up: what is
    exported, not what was asked for (an OTLP export left out for want of an endpoint, or a
    Prometheus endpoint that could not be served, is not listed). ``store`` under ``logs``: the
    store keeps the evaluation events."""
    created: tuple[Signal, ...] = ()
    shutdown_timeout_s: float = DEFAULT_EXPORT_TIMEOUT_MS / 1000
    """How long ``shutdown()`` (and the exit hook) may take at most: the longest export timeout of
    the three signals, at least 1 s; with the local store, plus the 1 s its writer may take to
    cancel a write still hung at that deadline."""
    _span_processors: list[SpanProcessor] = field(default_factory=list)
    _log_processors: list[LogRecordProcessor] = field(default_factory=list)
    _failure_counters: list[_Failures] = field(default_factory=list)
    _shutdown_callbacks: list[Callable[[], Any]] = field(default_factory=list)
    _is_shut_down: bool = False

    def _failures(self) -> int:
        return sum(counter.failures for counter in self._failure_counters)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Export everything pending, within ``timeout_millis`` (plus a few milliseconds) in all:
        the providers are flushed at once, under one deadline, whatever the collector does.

        Returns True only if everything was delivered: False when an export failed or was given
        up, or the deadline came first (what is still in flight then goes on in the background
        and gives up the rest of the queue), and after ``shutdown()``."""
        if self._is_shut_down:
            return False
        deadline = time.monotonic() + max(0.0, timeout_millis) / 1000
        failures = self._failures()

        def flusher(provider: Any) -> Callable[[], object]:
            return lambda: provider.force_flush(_remaining_ms(deadline))

        tasks = [
            (f"flush-{signal}", flusher(provider))
            for signal, provider in zip(
                SIGNALS, (self.tracer_provider, self.meter_provider, self.logger_provider), strict=True
            )
            if callable(getattr(provider, "force_flush", None))
        ]
        ended = _run_by(tasks, deadline)
        return all(ended) and self._failures() == failures

    def shutdown(self) -> None:
        """Flush and stop exporting what llmtrace created, within ``shutdown_timeout_s`` in all,
        even with a dead collector (every part is shut down at once, under one deadline).

        Idempotent: the exit hook calls it again after an explicit call, harmlessly."""
        _shut_down([self])

    def _shutdown_tasks(self) -> list[tuple[str, Callable[[], object]]]:
        """What shutting down means: each processor llmtrace made, and each provider it created
        (for anything added to it since), all at once."""
        tasks: list[tuple[str, Callable[[], object]]] = [
            ("shutdown-spans", processor.shutdown) for processor in self._span_processors
        ]
        tasks += [("shutdown-events", processor.shutdown) for processor in self._log_processors]
        timeout_ms = self.shutdown_timeout_s * 1000
        if "traces" in self.created:
            tasks.append(("shutdown-traces", _shutdown_of(self.tracer_provider)))
        if "metrics" in self.created:
            provider = self.meter_provider
            tasks.append(("shutdown-metrics", lambda: provider.shutdown(timeout_millis=timeout_ms)))  # type: ignore[attr-defined]
        if "logs" in self.created:
            tasks.append(("shutdown-logs", _shutdown_of(self.logger_provider)))
        return tasks

    def _after_shutdown(self) -> None:
        for callback in self._shutdown_callbacks:
            try:
                callback()
            except Exception:
                logger.debug("llmtrace: shutdown callback failed", exc_info=True)


def _shutdown_of(provider: Any) -> Callable[[], object]:
    return lambda: provider.shutdown()


def _remaining_ms(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic()) * 1000


def _run_by(tasks: Sequence[tuple[str, Callable[[], object]]], deadline: float) -> list[bool]:
    """Run each task on a daemon thread of its own and wait for them until ``deadline``; for each,
    whether it ended in time without raising or returning False. A task still running at the
    deadline goes on in the background (it never keeps the process alive). Where Python refuses to
    start a thread (during exit on some 3.12 releases) the tasks run one after another."""
    outcomes: list[bool | None] = [None] * len(tasks)
    threads: list[threading.Thread] = []

    def run(index: int, name: str, task: Callable[[], object]) -> None:
        try:
            outcomes[index] = task() is not False
        except Exception:
            logger.debug("llmtrace: %s failed", name, exc_info=True)
            outcomes[index] = False

    for index, (name, task) in enumerate(tasks):
        thread = threading.Thread(target=run, args=(index, name, task), name=f"llmtrace-{name}", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            run(index, name, task)
        else:
            threads.append(thread)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [outcome is True for outcome in outcomes]


def _shut_down(pipelines: Sequence[Pipeline]) -> None:
    """Shut ``pipelines`` down at once, under one deadline (the longest of their shutdown times)."""
    with _lock:
        todo = [pipeline for pipeline in pipelines if not pipeline._is_shut_down]
        for pipeline in todo:
            pipeline._is_shut_down = True
        _pipelines[:] = [kept for kept in _pipelines if all(kept is not gone for gone in todo)]
    if not todo:
        return
    deadline = time.monotonic() + max(pipeline.shutdown_timeout_s for pipeline in todo)
    _run_by([task for pipeline in todo for task in pipeline._shutdown_tasks()], deadline)
    for pipeline in todo:
        pipeline._after_shutdown()


_lock = _fork.lock()
_active: Pipeline | None = None
_pipelines: list[Pipeline] = []
"""Every pipeline configure() made and nobody shut down yet: the exit hook shuts them down."""
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
    store_retention: RetentionValue | None = None,
    capture_content: str | bool | None = None,
    max_attribute_length: int | None = None,
    redact: Callable[[str, Any], Any] | None = None,
    capture_error_messages: bool | None = None,
    max_queue_size: int | None = None,
    max_export_batch_size: int | None = None,
    schedule_delay_ms: float | None = None,
    export_timeout_ms: float | None = None,
    metric_export_interval_ms: float | None = None,
    prometheus_port: int | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    log_usage: bool | None = None,
    run_ttl_s: float | None = None,
    max_open_runs: int | None = None,
    tracer_provider: TracerProvider | None = None,
    set_global: bool = True,
    handle_sigterm: bool | None = None,
) -> Pipeline:
    """Set up tracing, metrics and events for llmtrace (and anything else using OTel).

    Args:
        service_name: ``service.name``; default ``service.name`` of ``resource_attributes``, then
            ``OTEL_SERVICE_NAME``, then ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``, then
            ``"llmtrace-app"``.
        exporters: any of ``"store"``, ``"otlp"``, ``"console"``, ``"jsonl"``, ``"none"``, for
            every signal (``otlp``: spans, metrics and events; ``console``: spans; ``jsonl``:
            spans and events; ``store``: spans, usage records and evaluation events). Default, per signal:
            ``OTEL_TRACES_EXPORTER``, ``OTEL_METRICS_EXPORTER``, ``OTEL_LOGS_EXPORTER``; for a
            signal whose variable is unset, ``otlp`` when an OTLP endpoint is set for it (plus
            ``store`` for traces unless ``LLMTRACE_STORE=off``).
        otlp_endpoint, otlp_protocol, otlp_headers, otlp_insecure, otlp_timeout_s: OTLP
            settings for every signal; unset ones come from the standard ``OTEL_EXPORTER_OTLP_*``
            variables, per signal (see ``llmtrace._otlp``). The protocol defaults to gRPC for an
            endpoint on port 4317, else ``http/protobuf``. ``otlp_headers`` is merged over the
            headers of the variables.
        jsonl_path: file for the ``jsonl`` exporter (``LLMTRACE_JSONL_PATH``, default
            ``.llmtrace/traces.jsonl``): one JSON line per span and per event.
        store: the local trace and usage store. A path or URL (``postgresql://...``) turns the
            ``store`` exporter on and writes there; True turns it on at the default location;
            False turns it off whatever the exporters say. Default location: ``LLMTRACE_STORE``,
            else ``.llmtrace/traces.db`` under the working directory (``LLMTRACE_STORE=off``
            leaves the store out of the default exporters).
        store_queue_size: spans, usage records and evaluations that may wait for the store's
            writer; beyond it they are dropped and counted (``pipeline.store_writer.snapshot()``).
        store_retention: how long the store keeps traces, usage records and evaluations, in seconds or as a
            ``datetime.timedelta`` (default ``LLMTRACE_STORE_RETENTION``: ``7d``, ``24h``, ``30m``;
            unset: everything is kept). The store's writer deletes older ones on its own thread,
            when it starts and then every hour, in short batches (``llmtrace prune`` does the
            same by hand).
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
            export settings of spans and events; default ``OTEL_BSP_*`` (spans) and
            ``OTEL_BLRP_*`` (events), else 2048, 512, 1000 ms and 5000 ms. ``export_timeout_ms``
            (else ``OTEL_METRIC_EXPORT_TIMEOUT``) bounds metric exports too. Spans beyond the
            queue are dropped and counted, never waited for.
        metric_export_interval_ms: how often metrics are pushed over OTLP
            (``OTEL_METRIC_EXPORT_INTERVAL``, else 30 s).
        prometheus_port: also serve metrics for Prometheus on this port (extra ``prometheus``),
            on ``OTEL_EXPORTER_PROMETHEUS_HOST``, else ``LLMTRACE_PROMETHEUS_HOST``, else
            127.0.0.1. ``OTEL_METRICS_EXPORTER=prometheus`` serves the same endpoint on
            ``OTEL_EXPORTER_PROMETHEUS_PORT`` (default 9464), host default ``localhost``.
        log_usage: write one JSON line per model call to the ``llmtrace.usage`` logger
            (``LLMTRACE_LOG_USAGE``).
        run_ttl_s, max_open_runs: bounds of the integrations' open-run maps.
        tracer_provider: an SDK provider of your own to add llmtrace's span exporters to. It stays
            yours: llmtrace never shuts it down (it does shut down the processors it added).
        set_global: install the providers as the global OTel providers (default True); a
            ``tracer_provider`` of yours is installed when no global one is set yet.
        handle_sigterm: when SIGTERM has no handler yet (its default action kills the process
            before any exit hook runs), install one that exports what is queued, within the exit
            bound, then lets the signal end the process as before (default
            ``LLMTRACE_HANDLE_SIGTERM``, else True). Only from the main thread, not on Windows,
            and never in place of a handler someone else installed.

    Per signal, a global provider already set (by you, ``opentelemetry-instrument`` or another
    library) is used as it is, and llmtrace adds nothing to it; llmtrace creates its own provider
    for the other signals (with that provider's resource), and logs at WARNING what it reused
    and what it created. With ``OTEL_SDK_DISABLED=true`` everything is a no-op.
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
    check_keywords(otlp_protocol, otlp_timeout_s)
    check_retention(store_retention)
    if export_timeout_ms is not None and not 0 < export_timeout_ms < float("inf"):
        raise ValueError(
            f"export_timeout_ms must be a positive number of milliseconds, got {export_timeout_ms!r}"
        )

    with _lock:
        if set_global and _active is not None:
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

        found = _global_providers() if set_global else {}
        if tracer_provider is not None:
            found.pop("traces", None)
        theirs = _found_resource({**found, "traces": tracer_provider} if tracer_provider else found)
        resource = theirs or _resource(service_name, resource_attributes)
        if theirs is not None and (service_name or resource_attributes):
            logger.warning(
                "llmtrace.configure(): service_name and resource_attributes are not applied: the "
                "providers llmtrace creates take the resource of the one you passed or that was "
                "already installed, so that every signal describes the same service"
            )
        selection = _select(exporters, store, otlp_endpoint)
        spans = _batch(
            "OTEL_BSP", max_queue_size, max_export_batch_size, schedule_delay_ms, export_timeout_ms
        )
        events = _batch(
            "OTEL_BLRP", max_queue_size, max_export_batch_size, schedule_delay_ms, export_timeout_ms
        )
        metric_interval_ms = _pick(
            metric_export_interval_ms,
            env_duration_ms("OTEL_METRIC_EXPORT_INTERVAL", positive=True),
            DEFAULT_METRIC_EXPORT_INTERVAL_MS,
        )
        metric_timeout_ms = _pick(
            export_timeout_ms, env_timeout_ms("OTEL_METRIC_EXPORT_TIMEOUT"), DEFAULT_EXPORT_TIMEOUT_MS
        )
        export_timeouts_ms: dict[Signal, float] = {
            "traces": spans.export_timeout_ms,
            "metrics": metric_timeout_ms,
            "logs": events.export_timeout_ms,
        }

        created: list[Signal] = [signal for signal in SIGNALS if signal not in found]
        if tracer_provider is not None:
            created.remove("traces")
        provider: trace.TracerProvider = (
            found.get("traces")
            or tracer_provider
            or TracerProvider(resource=resource, shutdown_on_exit=False)
        )
        log_provider: _logs.LoggerProvider = found.get("logs") or LoggerProvider(
            resource=resource, shutdown_on_exit=False
        )
        configured = {signal for signal in SIGNALS if signal not in found}  # llmtrace adds exporters
        names = {signal: selection.names[signal] if signal in configured else [] for signal in SIGNALS}
        if prometheus_port is not None and "metrics" in configured and "prometheus" not in names["metrics"]:
            names["metrics"].append("prometheus")  # the same reader as OTEL_METRICS_EXPORTER=prometheus
        pipeline = Pipeline(
            provider,
            found.get("metrics") or metrics.NoOpMeterProvider(),  # replaced below when created
            log_provider,
            tuple(dict.fromkeys(name for signal in SIGNALS for name in names[signal])),
            owns_providers=len(created) == len(SIGNALS),
            exporters_by_signal={signal: tuple(names[signal]) for signal in SIGNALS},
            created=tuple(created),
            shutdown_timeout_s=max(MIN_SHUTDOWN_S, *(ms / 1000 for ms in export_timeouts_ms.values())),
        )
        sdk_provider = provider if isinstance(provider, TracerProvider) else None
        sdk_log_provider = log_provider if isinstance(log_provider, LoggerProvider) else None

        def add_span_processor(processor: SpanProcessor) -> None:
            assert sdk_provider is not None
            sdk_provider.add_span_processor(processor)
            pipeline._span_processors.append(processor)

        def add_span_exporter(exporter: SpanExporter) -> None:
            counted = CountingSpanExporter(exporter, pipeline.stats)
            add_span_processor(
                CountingBatchSpanProcessor(
                    counted,
                    pipeline.stats,
                    max_queue_size=spans.max_queue_size,
                    schedule_delay_millis=spans.schedule_delay_ms,
                    max_export_batch_size=spans.max_export_batch_size,
                    export_timeout_millis=spans.export_timeout_ms,
                )
            )
            pipeline._failure_counters.append(counted.deadlines)

        def add_log_exporter(exporter: LogRecordExporter) -> None:
            assert sdk_log_provider is not None
            bounded = BoundedLogExporter(exporter)
            processor = BoundedBatchLogRecordProcessor(
                bounded,
                max_queue_size=events.max_queue_size,
                max_export_batch_size=events.max_export_batch_size,
                schedule_delay_millis=events.schedule_delay_ms,
                export_timeout_millis=events.export_timeout_ms,
            )
            sdk_log_provider.add_log_record_processor(processor)
            pipeline._log_processors.append(processor)
            pipeline._failure_counters.append(bounded.deadlines)

        if "traces" in configured and sdk_provider is None and names["traces"]:
            raise TypeError(f"tracer_provider must be an SDK TracerProvider, got {type(provider).__name__}")
        otlp = _otlp_signals(selection, names, configured, otlp_endpoint)
        if any("otlp" in names[signal] and signal not in otlp for signal in SIGNALS):
            for signal in SIGNALS:  # left out with a WARNING (no endpoint): not exported, not listed
                if signal not in otlp and "otlp" in names[signal]:
                    names[signal].remove("otlp")
            _list_exporters(pipeline, names)
        otlp_settings = resolve(
            otlp,
            endpoint=otlp_endpoint,
            protocol=otlp_protocol,
            headers=otlp_headers,
            insecure=otlp_insecure,
            timeout_s=otlp_timeout_s,
            export_timeouts_ms=export_timeouts_ms,
        )
        for signal_settings in otlp_settings.values():
            logger.info("llmtrace: OTLP export of %s", signal_settings.describe())
        readers: list[MetricReader] = []
        if "traces" in otlp_settings:
            add_span_exporter(otlp_settings["traces"].span_exporter())

        def add_metric_exporter(exporter: MetricExporter) -> None:
            counted_metrics = CountingMetricExporter(exporter)
            pipeline._failure_counters.append(counted_metrics)
            readers.append(
                PeriodicExportingMetricReader(
                    counted_metrics,
                    export_interval_millis=metric_interval_ms,
                    export_timeout_millis=metric_timeout_ms,
                )
            )

        if "metrics" in otlp_settings:
            add_metric_exporter(otlp_settings["metrics"].metric_exporter())
        if "console" in names["metrics"]:
            add_metric_exporter(ConsoleMetricExporter(out=sys.stdout))
        if "logs" in otlp_settings:
            add_log_exporter(otlp_settings["logs"].log_exporter())
        if "console" in names["traces"]:  # sys.stdout now: one redirected since import is honoured
            add_span_exporter(ConsoleSpanExporter(out=sys.stdout))
        if "console" in names["logs"]:
            add_log_exporter(ConsoleLogRecordExporter(out=sys.stdout))
        if "jsonl" in names["traces"] or "jsonl" in names["logs"]:
            span_exporter, log_exporter = jsonl_exporters(jsonl_file_path(jsonl_path))
            if "jsonl" in names["traces"]:
                add_span_exporter(span_exporter)
            if "jsonl" in names["logs"]:
                add_log_exporter(log_exporter)
        if "store" in names["traces"]:
            writer = open_store_writer(store, max_queue_size=store_queue_size, retention=store_retention)
            add_span_processor(
                StoreSpanProcessor(writer, shutdown_timeout_s=store_shutdown_s(spans.export_timeout_ms))
            )
            service = sdk_provider.resource.attributes.get(semconv.SERVICE_NAME) if sdk_provider else None
            sink = StoreUsageSink(writer, service=service)  # usage rows keep their service (sampling)
            add_usage_sink(sink)
            if "logs" in configured and sdk_log_provider is not None:
                # evaluation events (record_evaluation) are kept with their traces, wherever else
                # events go; a LoggerProvider llmtrace did not create gets nothing, as for exporters
                sdk_log_provider.add_log_record_processor(StoreEvaluationProcessor(writer))
                names["logs"] = [name for name in names["logs"] if name != "store"] + ["store"]
                _list_exporters(pipeline, names)
            pipeline.store_writer = writer
            pipeline._shutdown_callbacks.append(lambda: remove_usage_sink(sink))
            # the writer may wait that much longer for a write still hung at its deadline to cancel
            pipeline.shutdown_timeout_s += SHUTDOWN_GRACE_S
        if "store" in names["logs"] and pipeline.store_writer is None:
            logger.warning(
                "llmtrace: %s=%r asks for evaluation events in the local store, but the store is off "
                "(store=False, LLMTRACE_STORE=off, or no store among the span exporters): they are "
                "not kept there",
                EXPORTER_ENV["logs"],
                env(EXPORTER_ENV["logs"]),
            )
            names["logs"].remove("store")
            _list_exporters(pipeline, names)
        if prometheus_port is not None and "metrics" in found:
            logger.warning(
                "llmtrace.configure(prometheus_port=%s): a global MeterProvider was already set; "
                "llmtrace adds no reader to it, so there is no Prometheus endpoint",
                prometheus_port,
            )
        if "prometheus" in names["metrics"]:
            started = _prometheus_reader(prometheus_port)
            if started is not None:
                readers.append(started[0])
                pipeline._shutdown_callbacks.append(started[1])
            else:  # OTEL_METRICS_EXPORTER=prometheus could not be served: warned about, left out
                names["metrics"].remove("prometheus")
                _list_exporters(pipeline, names)

        if "metrics" not in found:
            pipeline.meter_provider = MeterProvider(
                resource=resource, metric_readers=readers, shutdown_on_exit=False
            )
        if pipeline.store_writer is not None:
            pipeline.store_writer.register_metrics(pipeline.meter_provider)
        if found:
            _warn_reused(found, created, names, tracer_provider is not None)
        if set_global:
            if "traces" in created:
                trace.set_tracer_provider(provider)
            elif tracer_provider is not None:
                _install_yours(tracer_provider)
            if "metrics" in created:
                metrics.set_meter_provider(pipeline.meter_provider)
            if "logs" in created:
                _logs.set_logger_provider(log_provider)
            _active = pipeline
        _pipelines.append(pipeline)
        _register_atexit()
    if pipeline.exporters and _sigterm.wanted(handle_sigterm):  # (not under _lock: see _sigterm)
        _sigterm.install(_at_exit, _exit_bound_s)
    return pipeline


def _list_exporters(pipeline: Pipeline, names: Mapping[Signal, Sequence[str]]) -> None:
    """Set the pipeline's lists of exporters from ``names`` (what each signal is exported with)."""
    pipeline.exporters_by_signal = {signal: tuple(names[signal]) for signal in SIGNALS}
    pipeline.exporters = tuple(dict.fromkeys(name for signal in SIGNALS for name in names[signal]))


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


def _exit_bound_s() -> float | None:
    """The longest the exit hook may take, in seconds; None when every pipeline is shut down.
    (Read without ``_lock``: the SIGTERM handler calls it, and the main thread it interrupted may
    hold that lock.)"""
    pipelines = list(_pipelines)
    if not pipelines:
        return None
    return max(pipeline.shutdown_timeout_s for pipeline in pipelines)


def _at_exit() -> None:
    """The process ends: runs still open in any handler (a stream never consumed, a call in flight
    in another thread) are ended (``llmtrace.evicted=shutdown``) while they can still be exported,
    then every pipeline configure() made and nobody shut down is flushed and shut down, all at once
    under one deadline. (An explicit ``shutdown()`` leaves runs alone: other handlers of the
    process may still be running them.)"""
    try:
        end_open_runs()
    except Exception as exc:
        report_internal_error(f"{__name__}.at_exit", exc)
    with _lock:
        pipelines = list(_pipelines)
    _shut_down(pipelines)


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
    settings.disabled = env_bool("OTEL_SDK_DISABLED")
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


def _global_providers() -> dict[Signal, Any]:
    """The global providers already installed (not OTel's proxies), by signal."""
    found: dict[Signal, Any] = {}
    tracer_provider = trace.get_tracer_provider()
    if not isinstance(tracer_provider, trace.ProxyTracerProvider):
        found["traces"] = tracer_provider
    meter_provider = metrics.get_meter_provider()
    if not isinstance(meter_provider, _ProxyMeterProvider):
        found["metrics"] = meter_provider
    logger_provider = _logs.get_logger_provider()
    if not isinstance(logger_provider, ProxyLoggerProvider):
        found["logs"] = logger_provider
    return found


def _found_resource(found: Mapping[Signal, Any]) -> Resource | None:
    """The resource of the first SDK provider among those given (traces, metrics, logs)."""
    for signal in SIGNALS:
        provider = found.get(signal)
        if provider is None:
            continue
        resource = getattr(getattr(provider, "_sdk_config", provider), "resource", None)
        if isinstance(resource, Resource):
            return resource
    return None


def _warn_reused(
    found: Mapping[Signal, Any], created: Sequence[Signal], names: Mapping[Signal, list[str]], passed: bool
) -> None:
    kinds = {"traces": "TracerProvider", "metrics": "MeterProvider", "logs": "LoggerProvider"}
    reused = ", ".join(f"{kinds[s]} ({type(found[s]).__name__})" for s in SIGNALS if s in found)
    message = (
        f"llmtrace.configure(): global provider(s) already installed are used as they are: {reused}; "
        "llmtrace adds no exporter to them, so its "
        + " and ".join(_SIGNAL_NOUN[s] for s in SIGNALS if s in found)
        + " go where those providers send them"
    )
    if created:
        made = ", ".join(
            f"{kinds[s]} for {_SIGNAL_NOUN[s]} (exporters: {', '.join(names[s]) or 'none'})" for s in created
        )
        message += f"; llmtrace created its own {made}"
    if passed:
        message += (
            f"; your tracer_provider gets llmtrace's span exporters ({', '.join(names['traces']) or 'none'})"
        )
    logger.warning(message)


def _install_yours(tracer_provider: TracerProvider) -> None:
    """``configure(tracer_provider=..., set_global=True)``: llmtrace's instrumentation uses the
    global TracerProvider, so yours becomes it if none is set yet."""
    current = trace.get_tracer_provider()
    if isinstance(current, trace.ProxyTracerProvider):
        trace.set_tracer_provider(tracer_provider)
    elif current is not tracer_provider:
        logger.warning(
            "llmtrace.configure(tracer_provider=...): another global TracerProvider (%s) is already "
            "installed, and llmtrace's instrumentation uses the global one: its spans do not reach "
            "your provider unless you pass tracer_provider= to llmtrace.instrument() and to the "
            "handlers as well",
            type(current).__name__,
        )


def _resource(service_name: str | None, resource_attributes: Mapping[str, str] | None) -> Resource:
    """``service.name``: ``service_name``, else ``resource_attributes``' one, else
    ``OTEL_SERVICE_NAME``, else ``OTEL_RESOURCE_ATTRIBUTES``' one, else ``llmtrace-app``."""
    attributes: dict[str, Any] = dict(resource_attributes or {})
    if service_name:
        attributes[semconv.SERVICE_NAME] = service_name
    if (
        semconv.SERVICE_NAME not in attributes
        and semconv.SERVICE_NAME not in OTELResourceDetector().detect().attributes
    ):
        attributes[semconv.SERVICE_NAME] = "llmtrace-app"
    return Resource.create(attributes)


@dataclass(frozen=True)
class _Batch:
    max_queue_size: int
    max_export_batch_size: int
    schedule_delay_ms: float
    export_timeout_ms: float


def _pick(keyword: float | None, from_env: float | None, default: float) -> float:
    """A keyword argument, else the variable, else llmtrace's default."""
    if keyword is not None:
        return keyword
    return from_env if from_env is not None else default


def _batch(
    prefix: str,
    max_queue_size: int | None,
    max_export_batch_size: int | None,
    schedule_delay_ms: float | None,
    export_timeout_ms: float | None,
) -> _Batch:
    """Batch settings of spans (``OTEL_BSP_*``) or events (``OTEL_BLRP_*``)."""
    return _Batch(
        int(_pick(max_queue_size, env_positive_int(f"{prefix}_MAX_QUEUE_SIZE"), DEFAULT_BATCH_QUEUE_SIZE)),
        int(
            _pick(
                max_export_batch_size,
                env_positive_int(f"{prefix}_MAX_EXPORT_BATCH_SIZE"),
                DEFAULT_EXPORT_BATCH_SIZE,
            )
        ),
        _pick(
            schedule_delay_ms,
            env_duration_ms(f"{prefix}_SCHEDULE_DELAY", positive=True),
            DEFAULT_SCHEDULE_DELAY_MS,
        ),
        _pick(export_timeout_ms, env_timeout_ms(f"{prefix}_EXPORT_TIMEOUT"), DEFAULT_EXPORT_TIMEOUT_MS),
    )


@dataclass(frozen=True)
class _Selection:
    names: dict[Signal, list[str]]
    """The exporters of each signal."""
    defaulted: frozenset[Signal]
    """Signals whose exporters are llmtrace's default (neither ``exporters=`` nor the variable)."""


def _select(
    exporters: str | Sequence[str] | None,
    store: str | os.PathLike[str] | bool | None = None,
    otlp_endpoint: str | None = None,
) -> _Selection:
    names: dict[Signal, list[str]] = {}
    defaulted: set[Signal] = set()
    if exporters is not None:
        given = _keyword_names(exporters)
        for signal in SIGNALS:
            names[signal] = [name for name in given if name in KEYWORD_EXPORTERS[signal]]
    else:
        any_endpoint = any(endpoint_for(signal, otlp_endpoint) for signal in SIGNALS)
        from_env = _env_names("traces")
        if from_env is None:
            from_env = [] if env_store_off() else ["store"]
            if endpoint_for("traces", otlp_endpoint):
                from_env.append("otlp")
            defaulted.add("traces")
        names["traces"] = from_env
        for signal in ("metrics", "logs"):
            chosen = _env_names(signal)
            if chosen is None:
                # OTLP when the signal has an endpoint; with none anywhere, as the traces do (an
                # explicit OTEL_TRACES_EXPORTER=otlp then means the default address for all)
                chosen = []
                if endpoint_for(signal, otlp_endpoint) or (not any_endpoint and "otlp" in names["traces"]):
                    chosen.append("otlp")
                if signal == "logs" and "jsonl" in names["traces"]:
                    chosen.append("jsonl")  # one file for spans and events
                defaulted.add(signal)
            names[signal] = chosen
    if store is False:
        names["traces"] = [name for name in names["traces"] if name != "store"]
    elif store is not None and "store" not in names["traces"]:
        names["traces"].insert(0, "store")
    return _Selection(names, frozenset(defaulted))


def _keyword_names(exporters: str | Sequence[str]) -> list[str]:
    items = exporters.split(",") if isinstance(exporters, str) else list(exporters)
    names = [name.strip().lower() for name in items if name.strip()]
    unknown = sorted(set(names) - KNOWN_EXPORTERS)
    if unknown:
        raise ValueError(f"unknown exporter(s) {unknown}; choose from {sorted(KNOWN_EXPORTERS)}")
    return [name for name in dict.fromkeys(names) if name != "none"]


def _env_names(signal: Signal) -> list[str] | None:
    """The exporters ``OTEL_<SIGNAL>_EXPORTER`` names (any case); None when it is unset, or names
    nothing llmtrace knows (then the default applies). Unknown names are logged and ignored."""
    variable = EXPORTER_ENV[signal]
    raw = env(variable)
    if raw is None:
        return None
    known: list[str] = []
    none = False
    for item in (part.strip().lower() for part in raw.split(",")):
        if not item:
            continue
        if item == "none":
            none = True
        elif item in ENV_EXPORTERS[signal]:
            known.append(item)
        else:
            logger.warning(
                "llmtrace: %s=%r: exporter %r is not one llmtrace has for %s (%s, none); it is ignored",
                variable,
                raw,
                item,
                _SIGNAL_NOUN[signal],
                ", ".join(sorted(ENV_EXPORTERS[signal])),
            )
    if not known and not none:
        logger.warning("llmtrace: %s=%r names no exporter llmtrace has: the default applies", variable, raw)
        return None
    return list(dict.fromkeys(known))


def _otlp_signals(
    selection: _Selection,
    names: Mapping[Signal, list[str]],
    configured: Collection[Signal],
    otlp_endpoint: str | None,
) -> list[Signal]:
    """The signals exported over OTLP: ``otlp`` is among their exporters and their endpoint is known,
    or no endpoint is set at all (then every one goes to the exporters' default address). A signal
    without an endpoint while another has one is not sent to a default address nobody configured."""
    has_endpoint = {signal: endpoint_for(signal, otlp_endpoint) is not None for signal in SIGNALS}
    any_endpoint = any(has_endpoint.values())
    chosen = [s for s in SIGNALS if "otlp" in names[s] and (has_endpoint[s] or not any_endpoint)]
    left_out = [s for s in SIGNALS if "otlp" in names[s] and s not in chosen]
    if left_out:  # asked for (a default includes otlp only with an endpoint): data is dropped
        logger.warning(
            "llmtrace: OTLP export of %s was asked for, but no OTLP endpoint is set for %s (only %s): "
            "%s not exported over OTLP; set OTEL_EXPORTER_OTLP_ENDPOINT (or %s)",
            ", ".join(left_out),
            "it" if len(left_out) == 1 else "them",
            ", ".join(endpoint_variables_set()),
            "it is" if len(left_out) == 1 else "they are",
            " or ".join(f"OTEL_EXPORTER_OTLP_{s.upper()}_ENDPOINT" for s in left_out),
        )
    quiet = [
        s
        for s in SIGNALS
        if s in selection.defaulted and s in configured and any_endpoint and not has_endpoint[s]
    ]
    if quiet:
        logger.info(
            "llmtrace: no OTLP endpoint for %s (only %s set): not exported over OTLP; set "
            "OTEL_EXPORTER_OTLP_ENDPOINT to export every signal",
            ", ".join(quiet),
            ", ".join(endpoint_variables_set()),
        )
    return chosen


def _store_url(store: str | os.PathLike[str] | bool | None) -> str:
    """Where the store is: ``store=`` (a path or URL), else ``LLMTRACE_STORE``, else the default
    path; relative paths are made absolute now, so a later chdir does not move the store."""
    if isinstance(store, (str, os.PathLike)) and not isinstance(store, bool):
        location = os.fspath(store)
    else:
        location = env_store() or str(DEFAULT_STORE_PATH)
    if location.startswith(SQLITE_PREFIX):
        location = location[len(SQLITE_PREFIX) :] or str(DEFAULT_STORE_PATH)
    if "://" in location or location == ":memory:":
        return location
    return os.path.abspath(os.path.expanduser(location))


def jsonl_file_path(path: str | os.PathLike[str] | None = None) -> str | os.PathLike[str]:
    """The JSONL exporter's file: ``path``, else ``LLMTRACE_JSONL_PATH``, else the default."""
    return path or os.environ.get("LLMTRACE_JSONL_PATH") or DEFAULT_JSONL_PATH


def open_store_writer(
    store: str | os.PathLike[str] | bool | None = None,
    *,
    max_queue_size: int | None = None,
    retention: RetentionValue | None = None,
) -> StoreWriter:
    """The store's writer for ``store`` (else ``LLMTRACE_STORE``, else the default path); the
    database is opened on the writer's thread."""
    url = _store_url(store)
    return store_writer(
        _store_opener(url),
        store_url=url,
        max_queue_size=max_queue_size,
        status_path=status_path_for(url),
        retention_s=retention_seconds(retention),
    )


def store_shutdown_s(export_timeout_ms: float) -> float:
    """How long the store's shutdown may take: the span export timeout, at least ``MIN_SHUTDOWN_S``."""
    return max(export_timeout_ms / 1000, MIN_SHUTDOWN_S)


def _store_opener(url: str) -> Callable[[], Any]:
    """Opens the store on the writer's thread (a database that is down never fails configure())."""

    def open_it() -> Any:
        from llmtrace.store._open import open_store

        return open_store(url, create=True)

    return open_it


def _prometheus_reader(port: int | None) -> tuple[MetricReader, Callable[[], Any]] | None:
    """A Prometheus reader and a function that stops its scrape endpoint, for ``prometheus_port``
    (``port``) or ``OTEL_METRICS_EXPORTER=prometheus`` (``port`` None).

    The endpoint listens on ``OTEL_EXPORTER_PROMETHEUS_HOST``, else ``LLMTRACE_PROMETHEUS_HOST``,
    else ``localhost`` as the specification says (``127.0.0.1`` with ``prometheus_port``, as
    before), port ``prometheus_port``, else ``OTEL_EXPORTER_PROMETHEUS_PORT``, else 9464. With the
    keyword, a missing extra or a port in use raises; with the variable it is logged and there is
    no endpoint (None): an application never fails to start over a variable."""
    keyword = port is not None
    host = (
        env(PROMETHEUS_HOST_ENV)
        or env("LLMTRACE_PROMETHEUS_HOST")
        or ("127.0.0.1" if keyword else "localhost")
    )
    if port is None:
        port = env_port(PROMETHEUS_PORT_ENV) or DEFAULT_PROMETHEUS_PORT
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server
    except ImportError as exc:
        if keyword:
            raise ImportError(
                "prometheus_port needs the Prometheus exporter: pip install opentelemetry-exporter-prometheus"
            ) from exc
        logger.warning(
            "llmtrace: %s=%r asks for a Prometheus endpoint, but the Prometheus exporter is not "
            "installed (%s): install the extra, pip install 'llmtrace[prometheus]' (or "
            "opentelemetry-exporter-prometheus); metrics get no Prometheus endpoint",
            EXPORTER_ENV["metrics"],
            env(EXPORTER_ENV["metrics"]),
            exc,
        )
        return None
    reader: MetricReader = PrometheusMetricReader()
    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        reader.shutdown()
        if keyword:
            raise
        logger.warning(
            "llmtrace: %s=%r: cannot serve Prometheus metrics on %s port %s (%s); set %s / %s; "
            "metrics get no Prometheus endpoint",
            EXPORTER_ENV["metrics"],
            env(EXPORTER_ENV["metrics"]),
            host,
            port,
            exc,
            PROMETHEUS_HOST_ENV,
            PROMETHEUS_PORT_ENV,
        )
        return None
    logger.info("llmtrace: Prometheus metrics served at http://%s:%s/metrics", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return reader, stop
