"""Export what is queued when SIGTERM ends the process.

``kill``, Docker and Kubernetes stop a process with SIGTERM. With no handler for it (``SIG_DFL``)
the signal kills the process at once: Python runs no exit hooks, and llmtrace's exit flush never
runs. Servers such as uvicorn (and gunicorn's ``UvicornWorker``, which resets SIGTERM to
``SIG_DFL`` first) handle SIGTERM only to shut down gracefully: then they put the handler they
found back and raise the signal again, so that the process still dies of it.

So when ``configure()`` builds a pipeline in the main thread and SIGTERM has its default action,
llmtrace installs a handler that ends open runs and shuts the pipelines down (what the exit hook
does, within the same bound), then restores ``SIG_DFL`` and raises SIGTERM again: the process dies
of the signal, with the same exit status as before. A handler someone else installed is never
replaced; one installed later replaces llmtrace's (and, like uvicorn's, may call it back).

The flush runs on a helper thread that the handler waits for at most the exit bound: a handler
runs in the main thread between two bytecodes, possibly while that thread holds a lock the
shutdown needs, and must not wait for it forever. A second SIGTERM during the flush kills the
process at once (the default action is restored first).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

from llmtrace._env import env_switch
from llmtrace._safety import report_internal_error

logger = logging.getLogger("llmtrace")

HANDLE_SIGTERM_ENV = "LLMTRACE_HANDLE_SIGTERM"
JOIN_MARGIN_S = 0.5
"""How much longer than the exit bound the handler waits for the flush (starting its threads,
ending open runs)."""

_flush: Callable[[], None] | None = None
_bound: Callable[[], float | None] | None = None


def wanted(handle_sigterm: bool | None) -> bool:
    """``configure(handle_sigterm=...)``, else ``LLMTRACE_HANDLE_SIGTERM``, else on."""
    if handle_sigterm is not None:
        return bool(handle_sigterm)
    return env_switch(HANDLE_SIGTERM_ENV, True)


def supported() -> bool:
    """Whether SIGTERM is a signal that ends this process from outside (not on Windows)."""
    return os.name == "posix" and hasattr(signal, "SIGTERM") and hasattr(signal, "raise_signal")


def install(flush: Callable[[], None], bound: Callable[[], float | None]) -> bool:
    """Install the handler if SIGTERM has its default action and this is the main thread.

    ``flush`` does what the exit hook does; ``bound`` gives the longest it may take in seconds,
    or None when there is nothing left to flush (everything was shut down already). Returns
    whether llmtrace's handler is installed now. Never raises."""
    global _flush, _bound
    try:
        if not supported() or threading.current_thread() is not threading.main_thread():
            return False
        current = signal.getsignal(signal.SIGTERM)
        if current is _handler:
            return True
        if current is not signal.SIG_DFL:  # someone else's (or SIG_IGN): theirs stays
            return False
        _flush, _bound = flush, bound
        signal.signal(signal.SIGTERM, _handler)
    except Exception as exc:  # a subinterpreter, an embedding that forbids it: the exit hook remains
        report_internal_error(f"{__name__}.install", exc)
        return False
    logger.debug("llmtrace: SIGTERM handler installed (it exports what is queued, then the process dies)")
    return True


def _handler(signum: int, frame: FrameType | None) -> None:
    try:
        # a second SIGTERM during the flush ends the process at once (ValueError: called from
        # another thread, by a handler that chains to this one)
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signum, signal.SIG_DFL)
        _flush_within_bound()
    finally:
        signal.raise_signal(signum)  # SIG_DFL: the process dies of the signal, as it would have


def _flush_within_bound() -> None:
    flush, bound = _flush, _bound
    if flush is None or bound is None:
        return
    try:
        limit = bound()
    except Exception:  # not reported from here: the interrupted main thread may hold that lock
        return
    if limit is None:  # shut down already (llmtrace.shutdown()): nothing to wait for
        return

    def run() -> None:
        try:
            flush()
        except Exception as exc:
            report_internal_error(f"{__name__}.flush", exc)

    thread = threading.Thread(target=run, name="llmtrace-sigterm-flush", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no new threads (the interpreter is finalizing): flush from here
        run()
        return
    thread.join(limit + JOIN_MARGIN_S)
