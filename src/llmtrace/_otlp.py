"""OTLP exporter settings: ``configure()``'s keyword arguments over the standard variables.

Per signal (``traces``, ``metrics``, ``logs``):

* **endpoint**: ``otlp_endpoint``, else ``OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`` (used as is, as
  the OTel specification says), else ``OTEL_EXPORTER_OTLP_ENDPOINT``. Over HTTP the generic
  endpoint is a base URL to which ``/v1/<signal>`` is appended; a full signal URL given there is
  accepted too. A signal with no endpoint while another signal has one is not exported over OTLP
  (no export to a default address nobody configured); with no endpoint anywhere, every signal
  goes to the exporters' default (``localhost:4318`` / ``localhost:4317``).
* **timeout**: ``otlp_timeout_s``, else ``OTEL_EXPORTER_OTLP_<SIGNAL>_TIMEOUT``, else
  ``OTEL_EXPORTER_OTLP_TIMEOUT`` (both in milliseconds), else the export timeout.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger("llmtrace")

Protocol = Literal["grpc", "http/protobuf"]
Signal = Literal["traces", "metrics", "logs"]
SIGNALS: tuple[Signal, ...] = ("traces", "metrics", "logs")
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TIMEOUT_ENV = "OTEL_EXPORTER_OTLP_TIMEOUT"
_SIGNAL_PATHS = tuple(f"/v1/{signal}" for signal in SIGNALS)


def signal_env(signal: Signal, setting: str) -> str:
    """The per-signal variable name, e.g. ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``."""
    return f"OTEL_EXPORTER_OTLP_{signal.upper()}_{setting}"


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def base_url(endpoint: str) -> str:
    """The collector's base URL. A full signal URL (``.../v1/traces``, as users copy it from a
    collector's docs) is accepted too: otherwise every export would go to ``.../v1/traces/v1/traces``
    and be refused."""
    base = endpoint.rstrip("/")
    for path in _SIGNAL_PATHS:
        if base.endswith(path):
            return base[: -len(path)]
    return base


def _timeout_ms(name: str) -> float | None:
    raw = _env(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of milliseconds") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"{name}={raw!r} must be a non-negative number of milliseconds")
    return value


@dataclass(frozen=True)
class OtlpSettings:
    endpoint: str | None
    """``otlp_endpoint``, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` (None: neither is set)."""
    from_argument: bool
    """True when ``endpoint`` is ``otlp_endpoint`` (it then wins over the per-signal variables)."""
    protocol: Protocol
    headers: Mapping[str, str] | None
    insecure: bool | None
    timeouts_s: Mapping[Signal, float]

    @classmethod
    def resolve(
        cls,
        endpoint: str | None,
        protocol: Protocol | None,
        headers: Mapping[str, str] | None,
        insecure: bool | None,
        timeout_s: float | None,
        export_timeout_ms: float,
    ) -> OtlpSettings:
        from_argument = bool(endpoint)
        if not endpoint:
            endpoint = _env(ENDPOINT_ENV)
        if protocol is None:
            env_protocol = (
                _env(signal_env("traces", "PROTOCOL")) or _env("OTEL_EXPORTER_OTLP_PROTOCOL")
            ) or ""
            if env_protocol in ("grpc", "http/protobuf"):
                protocol = env_protocol  # type: ignore[assignment]
            elif env_protocol:
                raise ValueError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL={env_protocol!r} is not supported; "
                    "use grpc or http/protobuf"
                )
            else:
                guess = endpoint if from_argument else _env(signal_env("traces", "ENDPOINT")) or endpoint
                protocol = "grpc" if urlparse(guess or "").port == 4317 else "http/protobuf"
        if protocol not in ("grpc", "http/protobuf"):
            raise ValueError(f"otlp_protocol must be 'grpc' or 'http/protobuf', got {protocol!r}")
        timeouts: dict[Signal, float] = {}
        for signal in SIGNALS:
            if timeout_s is not None:
                timeouts[signal] = timeout_s
                continue
            ms = _timeout_ms(signal_env(signal, "TIMEOUT"))
            if ms is None:
                ms = _timeout_ms(TIMEOUT_ENV)
            timeouts[signal] = (ms if ms is not None else export_timeout_ms) / 1000
        return cls(endpoint, from_argument, protocol, headers, insecure, timeouts)

    def exports(self, signal: Signal) -> bool:
        """Whether ``signal`` goes over OTLP: its endpoint is known, or no endpoint is set at all
        (then every signal goes to the exporters' default address)."""
        if self.endpoint or _env(signal_env(signal, "ENDPOINT")):
            return True
        return not any(_env(signal_env(other, "ENDPOINT")) for other in SIGNALS)

    def signals(self) -> tuple[Signal, ...]:
        """The signals to export over OTLP (see :meth:`exports`); the others are logged."""
        left_out = [signal for signal in SIGNALS if not self.exports(signal)]
        if left_out:
            logger.info(
                "llmtrace: no OTLP endpoint for %s (only %s set): not exported over OTLP; set "
                "OTEL_EXPORTER_OTLP_ENDPOINT to export every signal",
                ", ".join(left_out),
                ", ".join(signal_env(s, "ENDPOINT") for s in SIGNALS if s not in left_out),
            )
        return tuple(signal for signal in SIGNALS if signal not in left_out)

    def _kwargs(self, signal: Signal) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"timeout": self.timeouts_s[signal]}
        if self.headers is not None:
            kwargs["headers"] = dict(self.headers)
        # A per-signal variable is read by the exporter itself, unless otlp_endpoint overrides it.
        if self.endpoint and (self.from_argument or not _env(signal_env(signal, "ENDPOINT"))):
            if self.protocol == "grpc":
                kwargs["endpoint"] = self.endpoint
            else:
                kwargs["endpoint"] = base_url(self.endpoint) + f"/v1/{signal}"
        if self.protocol == "grpc" and self.insecure is not None:
            kwargs["insecure"] = self.insecure
        return kwargs

    def span_exporter(self) -> SpanExporter:
        if self.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

            return Grpc(**self._kwargs("traces"))
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

        return Http(**self._kwargs("traces"))

    def metric_exporter(self) -> MetricExporter:
        if self.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

            return Grpc(**self._kwargs("metrics"))
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

        return Http(**self._kwargs("metrics"))

    def log_exporter(self) -> LogRecordExporter:
        if self.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as Grpc

            return Grpc(**self._kwargs("logs"))
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as Http

        return Http(**self._kwargs("logs"))
