"""OTLP exporter settings, resolved per signal (``traces``, ``metrics``, ``logs``).

Each setting comes from ``configure()``'s keyword argument, else the signal's own variable
(``OTEL_EXPORTER_OTLP_<SIGNAL>_<SETTING>``), else the generic one (``OTEL_EXPORTER_OTLP_<SETTING>``),
else a default:

* **endpoint**: ``otlp_endpoint`` (a base URL for every signal), else the signal's variable (its full
  URL, used as is, as the OTel specification says), else ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL
  to which ``/v1/<signal>`` is appended over HTTP; a full signal URL given there is accepted too).
  An endpoint without a scheme (``collector:4317``) is a host and port: over HTTP ``http://`` is
  assumed; over gRPC the connection uses TLS unless ``insecure`` says otherwise.
* **protocol**: ``otlp_protocol``, else the variables (any case; an unsupported value such as
  ``http/json`` is logged and ignored), else gRPC for an endpoint on port 4317, else ``http/protobuf``.
* **headers**: the signal's variable, else the generic one; ``otlp_headers`` is merged over them,
  key by key, over either protocol.
* **insecure** (gRPC to an endpoint without a scheme): ``otlp_insecure``, else the variables, else
  false (TLS), as in the specification and the Python SDK. ``http://`` means plaintext and
  ``https://`` TLS whatever it says.
* **timeout**: ``otlp_timeout_s``, else the variables (milliseconds, as the specification says;
  zero means no limit), else the signal's batch export timeout.
* **compression**: the variables (``gzip``, ``deflate``, ``none``; another value is logged and
  ignored), else none.
* **certificate**, **client certificate**, **client key** (PEM files, for TLS): the variables, each
  on its own (the signal's, else the generic one), so a signal's own CA file still goes with the
  generic client certificate and key. A file that cannot be read is logged and ignored; a client
  certificate without its key (or a key without its certificate) is logged and neither is used.

Everything is handed to the exporters explicitly: the Python SDK's gRPC exporters would raise on
a timeout variable that is not a number or on a compression they do not know (``none``); they
read a signal's client certificate and key only from the signal's own variables, and only with the
signal's own CA file (a CA file of ``OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`` with the generic client
certificate sent none, and mutual TLS failed). Over HTTP, the CA file is kept even where
``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` is set (the SDK's exporter let those replace it, and
every export to a collector with a private CA failed verification).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.util.re import parse_env_headers

from llmtrace._env import (
    NO_LIMIT_MS,
    env,
    env_optional_bool,
    env_readable_file,
    env_timeout_ms,
    warn_ignored,
)

logger = logging.getLogger("llmtrace")

Protocol = Literal["grpc", "http/protobuf"]
PROTOCOLS: tuple[Protocol, ...] = ("grpc", "http/protobuf")
Signal = Literal["traces", "metrics", "logs"]
SIGNALS: tuple[Signal, ...] = ("traces", "metrics", "logs")
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TIMEOUT_ENV = "OTEL_EXPORTER_OTLP_TIMEOUT"
GRPC_PORT = 4317
SECONDS_LIKE_MS = 100
"""A timeout variable below this many milliseconds was probably meant in seconds (the Python SDK's
own exporters read ``OTEL_EXPORTER_OTLP_TIMEOUT`` in seconds): it is used, with a warning."""
_SIGNAL_PATHS = tuple(f"/v1/{signal}" for signal in SIGNALS)


def signal_env(signal: Signal, setting: str) -> str:
    """The per-signal variable name, e.g. ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``."""
    return f"OTEL_EXPORTER_OTLP_{signal.upper()}_{setting}"


def generic_env(setting: str) -> str:
    return f"OTEL_EXPORTER_OTLP_{setting}"


def base_url(endpoint: str) -> str:
    """The collector's base URL. A full signal URL (``.../v1/traces``, as users copy it from a
    collector's docs) is accepted too: otherwise every export would go to ``.../v1/traces/v1/traces``
    and be refused."""
    base = endpoint.rstrip("/")
    for path in _SIGNAL_PATHS:
        if base.endswith(path):
            return base[: -len(path)]
    return base


@dataclass(frozen=True)
class Endpoint:
    url: str
    source: str
    """Where it came from: ``otlp_endpoint`` or the variable's name."""
    per_signal: bool
    """From ``OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT``: the signal's full URL, used as is."""

    @property
    def scheme(self) -> str | None:
        """``http`` or ``https``; None for ``host:port`` (or a gRPC target such as ``dns:///...``)."""
        head, sep, _ = self.url.partition("://")
        return head.lower() if sep and head.lower() in ("http", "https") else None

    @property
    def port(self) -> int | None:
        rest = self.url.split("://", 1)[1] if "://" in self.url else self.url
        try:
            return urlsplit("//" + rest.split("/", 1)[0]).port
        except ValueError:
            return None

    def http_url(self, signal: Signal) -> str:
        url = self.url if self.scheme else "http://" + self.url
        return url if self.per_signal else base_url(url) + f"/v1/{signal}"

    def grpc_target(self) -> str:
        """What the gRPC channel connects to: ``host:port`` (the path of a URL is not used)."""
        return urlsplit(self.url).netloc if self.scheme else self.url


def endpoint_for(signal: Signal, keyword: str | None) -> Endpoint | None:
    """The signal's endpoint: ``otlp_endpoint``, its own variable, the generic one (None: none set)."""
    if keyword:
        return Endpoint(keyword, "otlp_endpoint", per_signal=False)
    name = signal_env(signal, "ENDPOINT")
    raw = env(name)
    if raw is not None:
        return Endpoint(raw, name, per_signal=True)
    raw = env(ENDPOINT_ENV)
    return Endpoint(raw, ENDPOINT_ENV, per_signal=False) if raw is not None else None


def endpoint_variables_set() -> list[str]:
    return [name for name in [ENDPOINT_ENV, *(signal_env(s, "ENDPOINT") for s in SIGNALS)] if env(name)]


def _env_protocol(name: str) -> Protocol | None:
    raw = env(name)
    if raw is None:
        return None
    value = raw.lower()
    if value in PROTOCOLS:
        return value
    warn_ignored(name, raw, "is not an OTLP protocol llmtrace supports (grpc, http/protobuf)")
    return None


def _env_timeout_ms(name: str) -> float | None:
    value = env_timeout_ms(name)
    if value is not None and 0 < value < SECONDS_LIKE_MS:
        logger.warning(
            "llmtrace: %s=%s is read as %s milliseconds, the OpenTelemetry specification's unit (the "
            "Python SDK's own exporters read seconds there); if you meant seconds, write %d",
            name,
            env(name),
            env(name),
            value * 1000,
        )
    return value


COMPRESSIONS = ("gzip", "deflate", "none")


def _env_compression(name: str) -> str | None:
    raw = env(name)
    if raw is None:
        return None
    value = raw.lower()
    if value in COMPRESSIONS:
        return value
    warn_ignored(name, raw, f"is not a compression llmtrace knows ({', '.join(COMPRESSIONS)})")
    return None


@contextmanager
def _hidden(names: Collection[str]) -> Iterator[None]:
    """Variables hidden while an exporter is made (configure() holds its lock; their values are
    ours to interpret, and were): the Python SDK's gRPC exporters parse their signal's timeout
    variable with ``float()`` even when given a timeout (and raise on ``10s``), and its exporters
    fall back to the TLS variables for a file llmtrace decided not to use."""
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _env_headers(name: str) -> dict[str, str] | None:
    raw = env(name)
    return dict(parse_env_headers(raw, liberal=True)) if raw is not None else None


TLS_SETTINGS = ("CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY")


def _credential_provider_set(signal: Signal, protocol: Protocol) -> bool:
    """The Python SDK's own credential provider variables (an entry point giving gRPC channel
    credentials or a requests session): when set, TLS is left to the SDK, which reads them."""
    transport = "GRPC" if protocol == "grpc" else "HTTP"
    return bool(
        env(f"OTEL_PYTHON_EXPORTER_OTLP_{transport}_CREDENTIAL_PROVIDER")
        or env(f"OTEL_PYTHON_EXPORTER_OTLP_{transport}_{signal.upper()}_CREDENTIAL_PROVIDER")
    )


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS: the CA certificate that verifies the collector, and the client
    certificate and key that identify llmtrace to it (mutual TLS); None: not set."""

    certificate: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None

    def __bool__(self) -> bool:
        return bool(self.certificate or self.client_certificate or self.client_key)


def _tls_files(
    signal: Signal, generic: Mapping[str, str | None], unpaired: dict[tuple[str, str], list[Signal]]
) -> TlsFiles:
    """The signal's TLS files; a client certificate without its key (or the reverse) is left out
    and noted in ``unpaired`` (the variable set, the setting missing: the signals)."""
    found: dict[str, str | None] = {}
    names: dict[str, str] = {}
    for setting in TLS_SETTINGS:
        own_name = signal_env(signal, setting)
        own = env_readable_file(own_name)
        found[setting] = own if own is not None else generic[setting]
        names[setting] = own_name if own is not None else generic_env(setting)
    certificate, key = found["CLIENT_CERTIFICATE"], found["CLIENT_KEY"]
    if bool(certificate) != bool(key):
        given, missing = (
            ("CLIENT_CERTIFICATE", "CLIENT_KEY") if certificate else ("CLIENT_KEY", "CLIENT_CERTIFICATE")
        )
        unpaired.setdefault((names[given], missing), []).append(signal)
        certificate = key = None
    return TlsFiles(found["CERTIFICATE"], certificate, key)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        logger.warning("llmtrace: cannot read %s (%s); it is not used", path, exc)
        return None


@lru_cache(maxsize=1)
def _ca_session_class() -> type[Any]:
    import requests

    class CaFileSession(requests.Session):
        """A requests session whose ``verify`` (the CA file) is not replaced by
        ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` (requests lets those win over a session's
        ``verify`` when a request does not give its own)."""

        def merge_environment_settings(
            self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
        ) -> dict[str, Any]:
            merged: dict[str, Any] = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if verify is None:
                merged["verify"] = self.verify
            return merged

    return CaFileSession


@dataclass(frozen=True)
class SignalSettings:
    """How one signal is exported over OTLP."""

    signal: Signal
    protocol: Protocol
    protocol_source: str
    endpoint: Endpoint | None
    """None: the exporters' default (``http://localhost:4318``, ``localhost:4317`` over gRPC)."""
    headers: Mapping[str, str]
    insecure: bool | None
    timeout_s: float
    compression: str = "none"
    tls: TlsFiles = TlsFiles()

    @property
    def grpc_insecure(self) -> bool:
        scheme = self.endpoint.scheme if self.endpoint is not None else "http"
        return scheme == "http" if scheme is not None else bool(self.insecure)

    def describe(self) -> str:
        if self.protocol == "grpc":
            target = self.endpoint.grpc_target() if self.endpoint else "localhost:4317"
            where = f"{target} ({'plaintext' if self.grpc_insecure else 'TLS'})"
        else:
            where = self.endpoint.http_url(self.signal) if self.endpoint else "the default endpoint"
        source = f" from {self.endpoint.source}" if self.endpoint else ""
        files = [
            f"{what} {path}"
            for what, path in (
                ("CA certificate", self.tls.certificate),
                ("client certificate", self.tls.client_certificate),
            )
            if path
        ]
        tls = f", {' and '.join(files)}" if files and self._uses_tls else ""
        compression = f", {self.compression}" if self.compression != "none" else ""
        return f"{self.signal}: {self.protocol} ({self.protocol_source}) to {where}{source}{tls}{compression}"

    @property
    def _uses_tls(self) -> bool:
        if self.protocol == "grpc":
            return not self.grpc_insecure
        return self.endpoint is not None and self.endpoint.scheme == "https"

    def _grpc_credentials(self) -> Any:
        """Channel credentials from the TLS files (None: the SDK's own, the system's CAs)."""
        if not self.tls or not self._uses_tls or _credential_provider_set(self.signal, self.protocol):
            return None
        import importlib

        ssl_channel_credentials = importlib.import_module("grpc").ssl_channel_credentials
        root = _read(self.tls.certificate) if self.tls.certificate else None
        chain = _read(self.tls.client_certificate) if self.tls.client_certificate else None
        key = _read(self.tls.client_key) if self.tls.client_key else None
        if chain is None or key is None:
            chain = key = None
        return ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)

    def _kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"timeout": self.timeout_s}
        if self.headers:
            kwargs["headers"] = dict(self.headers)
        if self.protocol == "grpc":
            import importlib

            GrpcCompression = importlib.import_module("grpc").Compression  # grpc has no type stubs
            kwargs["endpoint"] = self.endpoint.grpc_target() if self.endpoint else "localhost:4317"
            kwargs["insecure"] = self.grpc_insecure
            credentials = self._grpc_credentials()
            if credentials is not None:
                kwargs["credentials"] = credentials
            kwargs["compression"] = {
                "gzip": GrpcCompression.Gzip,
                "deflate": GrpcCompression.Deflate,
            }.get(self.compression, GrpcCompression.NoCompression)
        else:
            from opentelemetry.exporter.otlp.proto.http import Compression

            kwargs["compression"] = Compression(self.compression)
            if self.endpoint is not None:
                kwargs["endpoint"] = self.endpoint.http_url(self.signal)
            if not _credential_provider_set(self.signal, self.protocol):
                kwargs["certificate_file"] = self.tls.certificate
                kwargs["client_certificate_file"] = self.tls.client_certificate
                kwargs["client_key_file"] = self.tls.client_key
                if self.tls.certificate:
                    kwargs["session"] = _ca_session_class()()
        return kwargs

    def _made(self) -> AbstractContextManager[None]:
        """While the exporter is made, the variables llmtrace has read for it are hidden from the
        SDK, which would read them its own way."""
        hidden = [signal_env(self.signal, "TIMEOUT")] if self.protocol == "grpc" else []
        if not _credential_provider_set(self.signal, self.protocol):
            # the TLS files llmtrace resolved (or ignored: unreadable, a certificate without a key)
            hidden += [generic_env(setting) for setting in TLS_SETTINGS]
            hidden += [signal_env(self.signal, setting) for setting in TLS_SETTINGS]
        return _hidden(hidden)

    def span_exporter(self) -> SpanExporter:
        if self.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

            with self._made():
                return Grpc(**self._kwargs())
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

        with self._made():
            return Http(**self._kwargs())

    def metric_exporter(self) -> MetricExporter:
        if self.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

            with self._made():
                return Grpc(**self._kwargs())
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

        with self._made():
            return Http(**self._kwargs())

    def log_exporter(self) -> LogRecordExporter:
        if self.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as Grpc

            with self._made():
                return Grpc(**self._kwargs())
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as Http

        with self._made():
            return Http(**self._kwargs())


def check_keywords(protocol: str | None, timeout_s: float | None) -> None:
    """``configure()``'s OTLP keyword arguments: a mistake there raises (unlike the variables)."""
    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"otlp_protocol must be 'grpc' or 'http/protobuf', got {protocol!r}")
    if timeout_s is not None and not 0 <= timeout_s < float("inf"):
        raise ValueError(f"otlp_timeout_s must be a non-negative number of seconds, got {timeout_s!r}")


def resolve(
    signals: Collection[Signal],
    *,
    endpoint: str | None,
    protocol: Protocol | None,
    headers: Mapping[str, str] | None,
    insecure: bool | None,
    timeout_s: float | None,
    export_timeouts_ms: Mapping[Signal, float],
) -> dict[Signal, SignalSettings]:
    """The OTLP settings of each of ``signals`` (each variable is read, and warned about, once)."""
    check_keywords(protocol, timeout_s)
    generic_protocol = _env_protocol(generic_env("PROTOCOL")) if protocol is None else None
    generic_timeout = _env_timeout_ms(TIMEOUT_ENV) if timeout_s is None else None
    generic_headers = _env_headers(generic_env("HEADERS"))
    generic_insecure = env_optional_bool(generic_env("INSECURE")) if insecure is None else None
    generic_compression = _env_compression(generic_env("COMPRESSION"))
    generic_tls = {setting: env_readable_file(generic_env(setting)) for setting in TLS_SETTINGS}
    unpaired: dict[tuple[str, str], list[Signal]] = {}
    keyword_headers = {key.lower(): value for key, value in (headers or {}).items()}
    resolved: dict[Signal, SignalSettings] = {}
    for signal in SIGNALS:
        if signal not in signals:
            continue
        where = endpoint_for(signal, endpoint)
        if protocol is not None:
            chosen, source = protocol, "otlp_protocol"
        else:
            own = _env_protocol(signal_env(signal, "PROTOCOL"))
            if own is not None:
                chosen, source = own, signal_env(signal, "PROTOCOL")
            elif generic_protocol is not None:
                chosen, source = generic_protocol, generic_env("PROTOCOL")
            elif where is not None and where.port == GRPC_PORT:
                chosen, source = "grpc", f"port {GRPC_PORT}"
            else:
                chosen, source = "http/protobuf", "the default"
        signal_headers = _env_headers(signal_env(signal, "HEADERS"))
        merged = dict(signal_headers if signal_headers is not None else generic_headers or {})
        merged.update(keyword_headers)
        if timeout_s is not None:
            seconds = timeout_s if timeout_s > 0 else NO_LIMIT_MS / 1000
        else:
            ms = _env_timeout_ms(signal_env(signal, "TIMEOUT"))
            if ms is None:
                ms = generic_timeout
            seconds = (ms if ms is not None else export_timeouts_ms[signal]) / 1000
        if insecure is not None:
            signal_insecure: bool | None = insecure
        else:
            own_insecure = env_optional_bool(signal_env(signal, "INSECURE"))
            signal_insecure = own_insecure if own_insecure is not None else generic_insecure
        compression = _env_compression(signal_env(signal, "COMPRESSION")) or generic_compression
        resolved[signal] = SignalSettings(
            signal,
            chosen,
            source,
            where,
            merged,
            signal_insecure,
            seconds,
            compression or "none",
            _tls_files(signal, generic_tls, unpaired),
        )
    for (given, missing), signals_left in unpaired.items():
        logger.warning(
            "llmtrace: %s is set but no %s is: a client certificate needs its key and a key its "
            "certificate; %s %s exported without a client certificate",
            given,
            " or ".join([*(signal_env(signal, missing) for signal in signals_left), generic_env(missing)]),
            ", ".join(signals_left),
            "is" if len(signals_left) == 1 else "are",
        )
    return resolved
