"""``llmtrace.instrument()``: find integrations by entry point and instrument the installed frameworks."""

from __future__ import annotations

import logging
import os
import re
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from opentelemetry import _logs, metrics, trace

from llmtrace import semconv
from llmtrace._safety import report_internal_error
from llmtrace._settings import settings

logger = logging.getLogger("llmtrace")


DISABLED_ENV_VAR = "LLMTRACE_DISABLED_INSTRUMENTATIONS"
INTEGRATIONS = ("langchain", "llama_index")
"""The integrations llmtrace ships (a name of one that is not installed is not a typo)."""
_warned_disabled: str | None = None
"""The ``LLMTRACE_DISABLED_INSTRUMENTATIONS`` value whose unknown names were reported (once)."""


def _normalize(name: str) -> str:
    """An integration name compared as packages are: lowercase, a run of ``-``, ``_`` or ``.`` as
    one ``_`` (``Llama-Index`` is ``llama_index``)."""
    return re.sub(r"[-_.]+", "_", name.strip().lower())


def _disabled_names(known: set[str]) -> set[str]:
    """The normalized names in ``LLMTRACE_DISABLED_INSTRUMENTATIONS``; a name that is neither
    ``*`` nor an integration (installed or shipped) is reported once, as a warning."""
    global _warned_disabled
    raw = os.environ.get(DISABLED_ENV_VAR, "")
    given = [name.strip() for name in raw.split(",") if name.strip()]
    disabled = {_normalize(name) for name in given}
    unknown = [name for name in given if _normalize(name) not in {"*", *known, *INTEGRATIONS}]
    if unknown and raw != _warned_disabled:
        _warned_disabled = raw
        logger.warning(
            "llmtrace: %s names no integration: %s (ignored; integrations: %s)",
            DISABLED_ENV_VAR,
            ", ".join(repr(name) for name in unknown),
            ", ".join(sorted(known | set(INTEGRATIONS))),
        )
    return disabled


def _entry_points(names: tuple[str, ...]) -> list[EntryPoint]:
    found = list(entry_points(group=semconv.INSTRUMENTORS_ENTRY_POINT_GROUP))
    known = {_normalize(ep.name) for ep in found}
    if names:
        wanted = {_normalize(name) for name in names}
        for name in names:
            if _normalize(name) not in known:
                logger.info("llmtrace: no integration named %r is installed; skipped", name)
        found = [ep for ep in found if _normalize(ep.name) in wanted]
    disabled = _disabled_names(known)
    if "*" in disabled:
        return []
    return [ep for ep in found if _normalize(ep.name) not in disabled]


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
    Names are matched case-insensitively, ``-`` and ``_`` alike (``llama-index`` is
    ``llama_index``).
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
