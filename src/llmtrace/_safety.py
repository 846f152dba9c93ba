"""Instrumentation never raises into the host application.

Every entry point that a framework calls (callbacks, dispatcher handlers, wrappers) and every
public method of an invocation goes through :func:`never_raise`. A failure is logged once per
place with its traceback, then counted silently, so a bug in llmtrace neither breaks the app
nor floods its logs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar, overload

from llmtrace import _fork

logger = logging.getLogger("llmtrace")

P = ParamSpec("P")
R = TypeVar("R")

_lock = _fork.lock()
_counts: dict[str, int] = {}


def report_internal_error(where: str, exc: BaseException) -> None:
    """Log an internal failure the first time it happens at ``where``; count every time."""
    with _lock:
        seen = _counts.get(where, 0)
        _counts[where] = seen + 1
    if not seen:
        logger.error(
            "llmtrace internal error in %s (the traced call is unaffected; "
            "further errors here are counted, not logged)",
            where,
            exc_info=exc,
        )


def internal_error_counts() -> dict[str, int]:
    """How often each place failed since start (for diagnostics and tests)."""
    with _lock:
        return dict(_counts)


def reset_internal_errors() -> None:
    with _lock:
        _counts.clear()


@overload
def never_raise(fn: Callable[P, None]) -> Callable[P, None]: ...
@overload
def never_raise(fn: Callable[P, R]) -> Callable[P, R | None]: ...
def never_raise(fn: Callable[P, R]) -> Callable[P, R | None]:
    """Run ``fn``; on any exception, report it and return None."""
    where = f"{fn.__module__}.{fn.__qualname__}"

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            report_internal_error(where, exc)
            return None

    return wrapper
