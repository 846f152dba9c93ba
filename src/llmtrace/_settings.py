"""Process-wide settings read by the telemetry handler on each call (set by configure())."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from llmtrace._content import ContentPolicy

ERROR_MESSAGES_ENV = "LLMTRACE_CAPTURE_ERROR_MESSAGES"


def env_flag(name: str) -> bool:
    """One of llmtrace's own switches (``LLMTRACE_*``): ``1``, ``true``, ``yes`` or ``on``. The
    standard ``OTEL_*`` booleans accept only ``true`` (``llmtrace._env.env_bool``)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


@dataclass(slots=True)
class Settings:
    content: ContentPolicy = field(default_factory=ContentPolicy.from_env)
    run_ttl_s: float = 600.0
    """Runs that never end are ended after this many seconds without news (``llmtrace.evicted``)."""
    max_open_runs: int = 10_000
    """At most this many runs are kept open per integration; the oldest is ended beyond it."""
    disabled: bool = field(default_factory=_sdk_disabled)
    """``OTEL_SDK_DISABLED=true`` (only ``true``, in any case, as the specification says)."""
    error_messages: bool = field(default_factory=lambda: env_flag(ERROR_MESSAGES_ENV))
    """Record exception messages on spans even while content is not captured on spans."""


settings = Settings()
