"""Reading the standard ``OTEL_*`` variables the way the OpenTelemetry specification asks.

A value the specification says to ignore (an unknown enum value, a number that does not parse or
is out of range) is logged at WARNING, naming the variable and the value, and treated as unset:
an application must not fail to start because of a variable that another OpenTelemetry component
of the process shares. (``configure()``'s keyword arguments stay strict: a mistake there raises.)
An empty value is the same as an unset one.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("llmtrace")

NO_LIMIT_MS = float(2**31 - 1)
"""A timeout of zero means no limit; the specification allows "a very long time" instead: the
largest 32-bit number of milliseconds (about 24.8 days)."""


def env(name: str) -> str | None:
    """The variable's value, stripped; None when it is unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or None


def warn_ignored(name: str, raw: str, why: str) -> None:
    logger.warning("llmtrace: %s=%r %s; the setting is ignored", name, raw, why)


def env_bool(name: str) -> bool:
    """An OTel boolean: only ``true`` (any case) is true; anything but ``false``, empty or unset
    is false with a warning (the specification forbids other spellings of true)."""
    raw = env(name)
    if raw is None or raw.lower() == "false":
        return False
    if raw.lower() == "true":
        return True
    logger.warning("llmtrace: %s=%r is not 'true' or 'false'; read as false", name, raw)
    return False


def env_optional_bool(name: str) -> bool | None:
    """Like :func:`env_bool`, but None when the variable is unset or empty."""
    return None if env(name) is None else env_bool(name)


def _number(name: str) -> tuple[str, float] | None:
    raw = env(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        warn_ignored(name, raw, "is not a number of milliseconds")
        return None
    if not 0 <= value < float("inf"):
        warn_ignored(name, raw, "is not a non-negative number")
        return None
    return raw, value


def env_timeout_ms(name: str) -> float | None:
    """A Timeout in milliseconds (zero: no limit, :data:`NO_LIMIT_MS`); None when unset or ignored."""
    parsed = _number(name)
    if parsed is None:
        return None
    return parsed[1] or NO_LIMIT_MS


def env_duration_ms(name: str, *, positive: bool = False) -> float | None:
    """A Duration in milliseconds (``positive``: zero is out of range too)."""
    parsed = _number(name)
    if parsed is None:
        return None
    raw, value = parsed
    if positive and value == 0:
        warn_ignored(name, raw, "must be positive")
        return None
    return value


def env_port(name: str) -> int | None:
    """A TCP port number (1 to 65535); None when unset or ignored."""
    return _env_int(name, 65535, "is not a port number (1 to 65535)")


def env_readable_file(name: str) -> str | None:
    """A path to a file that can be read (a certificate, a key); None when unset or ignored."""
    raw = env(name)
    if raw is None:
        return None
    path = os.path.expanduser(raw)
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        warn_ignored(name, raw, "is not a file llmtrace can read")
        return None
    return path


def env_positive_int(name: str) -> int | None:
    """A positive integer; None when unset or ignored."""
    return _env_int(name, None, "must be positive")


def _env_int(name: str, maximum: int | None, out_of_range: str) -> int | None:
    """An integer from 1 to ``maximum`` (None: no maximum); None when unset or ignored."""
    raw = env(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        warn_ignored(name, raw, "is not an integer")
        return None
    if value <= 0 or (maximum is not None and value > maximum):
        warn_ignored(name, raw, out_of_range)
        return None
    return value


_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"0", "false", "no", "off"})


def env_switch(name: str, default: bool) -> bool:
    """One of llmtrace's own switches (``LLMTRACE_*``) that is on by default: ``0``, ``false``,
    ``no`` or ``off`` (any case) turn it off, ``1``, ``true``, ``yes`` or ``on`` on; unset or empty
    is ``default``, anything else too, with a warning."""
    raw = env(name)
    if raw is None:
        return default
    if raw.lower() in _ON:
        return True
    if raw.lower() in _OFF:
        return False
    logger.warning(
        "llmtrace: %s=%r is not one of 1, true, yes, on, 0, false, no, off; read as %s",
        name,
        raw,
        "on" if default else "off",
    )
    return default
