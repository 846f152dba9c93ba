"""Opaque pagination cursors for ``list_traces``.

A cursor is ``base64url(json payload) "." base64url(mac)``. The payload holds the keyset position
(start_ns, trace_id) of the last item returned, the time window (since_ns, until_ns) of the first
page and a digest of the rest of the filter it was issued for; the mac is an HMAC-SHA256 keyed by
the store's identity (a random id created with the schema). So a cursor from another store, a
tampered or truncated one, and one issued for another filter are all rejected with
:class:`InvalidCursor`.

The time bounds are left out of the digest and carried instead: later pages use the window of the
first page, whatever bounds they are given. A relative window (``--since 1h``) is resolved anew on
every call; this way paging still works, and the window does not drift between pages.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
from typing import NamedTuple

from llmtrace.store._api import InvalidCursor, TraceFilter

_VERSION = 2
_TIME_BOUNDS = ("since_ns", "until_ns")


class Position(NamedTuple):
    """Where a cursor continues: after (start_ns, trace_id), within the first page's time window."""

    start_ns: int
    trace_id: str
    since_ns: int | None
    until_ns: int | None


def filter_digest(filter: TraceFilter) -> str:
    """A digest of every filter field but the time bounds (which the cursor carries)."""
    fields = {k: v for k, v in dataclasses.asdict(filter).items() if k not in _TIME_BOUNDS}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def _optional_int(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(store_id: str, payload: bytes) -> bytes:
    return hmac.new(store_id.encode(), payload, hashlib.sha256).digest()[:16]


def encode(store_id: str, filter: TraceFilter, start_ns: int, trace_id: str) -> str:
    data = {
        "v": _VERSION,
        "s": start_ns,
        "t": trace_id,
        "a": filter.since_ns,
        "b": filter.until_ns,
        "f": filter_digest(filter),
    }
    payload = json.dumps(data, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_mac(store_id, payload))}"


def decode(store_id: str, filter: TraceFilter, cursor: str) -> Position:
    """The position of ``cursor``; raises InvalidCursor."""
    if not isinstance(cursor, str) or cursor.count(".") != 1:
        raise InvalidCursor("malformed cursor: pass back the next_cursor of a previous page unchanged")
    body, mac = cursor.split(".")
    try:
        payload, given = _unb64(body), _unb64(mac)
    except (binascii.Error, ValueError):
        raise InvalidCursor(
            "malformed cursor: pass back the next_cursor of a previous page unchanged"
        ) from None
    if not hmac.compare_digest(given, _mac(store_id, payload)):
        raise InvalidCursor("cursor was not issued by this store (or was altered)")
    try:
        data = json.loads(payload)
        version = data["v"]
        if version != _VERSION:
            raise InvalidCursor("cursor from an unsupported version of llmtrace: restart from the first page")
        start_ns, trace_id, since_ns, until_ns, digest = data["s"], data["t"], data["a"], data["b"], data["f"]
    except (ValueError, KeyError, TypeError):
        raise InvalidCursor("malformed cursor payload") from None
    if not isinstance(start_ns, int) or not isinstance(trace_id, str):
        raise InvalidCursor("malformed cursor payload")
    if not _optional_int(since_ns) or not _optional_int(until_ns):
        raise InvalidCursor("malformed cursor payload")
    if digest != filter_digest(filter):
        raise InvalidCursor("cursor was issued for a different filter: restart from the first page")
    return Position(start_ns, trace_id, since_ns, until_ns)
