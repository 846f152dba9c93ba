"""``llmtrace.instrument()``: find integrations by entry point and instrument the installed frameworks."""

from __future__ import annotations

import logging
import os
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from opentelemetry import _logs, metrics, trace

from llmtrace import semconv
from llmtrace._safety import report_internal_error
from llmtrace._settings import settings

logger = logging.getLogger("llmtrace")


def _disabled_names() -> set[str]:
    raw = os.environ.get("LLMTRACE_DISABLED_INSTRUMENTATIONS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _entry_points(names: tuple[str, ...]) -> list[EntryPoint]:
    found = list(entry_points(group=semconv.INSTRUMENTORS_ENTRY_POINT_GROUP))
    if names:
        known = {ep.name for ep in found}
        for name in names:
            if name not in known:
                logger.info("llmtrace: no integration named %r is installed; skipped", name)
        found = [ep for ep in found if ep.name in names]
    disabled = _disabled_names()
    if "*" in disabled:
        return []
    return [ep for ep in found if ep.name not in disabled]


def _load(ep: EntryPoint) -> Any:
    """The integration's instrumentor, or None if its framework is not installed."""
    try:
        return ep.load()()
    except ImportError as exc:
        logger.debug("llmtrace: %s not instrumented (framework not installed: %s)", ep.name, exc)
    except Exception as exc:
        report_internal_error(f"instrument({ep.name})", exc)
    return None


def instrument(
    *names: str,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    logger_provider: _logs.LoggerProvider | None = None,
) -> list[str]:
    """Instrument every installed framework (or only ``names``: ``langchain``, ``llama_index``).

    Integrations are found through the ``llmtrace.instrumentors`` entry-point group;
    frameworks that are not installed are skipped quietly, and names listed in
    ``LLMTRACE_DISABLED_INSTRUMENTATIONS`` (comma-separated, ``*`` for all) are left alone.
    Idempotent; never raises. Returns the names that are now instrumented.
    """
    if settings.disabled:
        return []
    done: list[str] = []
    for ep in _entry_points(names):
        instrumentor = _load(ep)
        if instrumentor is None:
            continue
        try:
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(
                    tracer_provider=tracer_provider,
                    meter_provider=meter_provider,
                    logger_provider=logger_provider,
                )
            if instrumentor.is_instrumented_by_opentelemetry:
                done.append(ep.name)
        except Exception as exc:
            report_internal_error(f"instrument({ep.name})", exc)
    return done


def uninstrument(*names: str) -> list[str]:
    """Undo :func:`instrument` for every integration (or only ``names``). Returns what was undone."""
    undone: list[str] = []
    for ep in _entry_points(names):
        instrumentor = _load(ep)
        if instrumentor is None:
            continue
        try:
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
                undone.append(ep.name)
        except Exception as exc:
            report_internal_error(f"uninstrument({ep.name})", exc)
    return undone
