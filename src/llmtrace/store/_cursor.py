"""Opaque pagination cursors for ``list_traces``.

A cursor is ``base64url(json payload) "." base64url(mac)``. The payload holds the keyset position
(start_ns, trace_id) of the last item returned and a digest of the filter it was issued for; the
mac is an HMAC-SHA256 keyed by the store's identity (a random id created with the schema). So a
cursor from another store, a tampered or truncated one, and one issued for another filter are all
rejected with :class:`InvalidCursor`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json

from llmtrace.store._api import InvalidCursor, TraceFilter

_VERSION = 1


def filter_digest(filter: TraceFilter) -> str:
    canonical = json.dumps(dataclasses.asdict(filter), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(store_id: str, payload: bytes) -> bytes:
    return hmac.new(store_id.encode(), payload, hashlib.sha256).digest()[:16]


def encode(store_id: str, filter: TraceFilter, start_ns: int, trace_id: str) -> str:
    payload = json.dumps(
        {"v": _VERSION, "s": start_ns, "t": trace_id, "f": filter_digest(filter)}, separators=(",", ":")
    ).encode()
    return f"{_b64(payload)}.{_b64(_mac(store_id, payload))}"


def decode(store_id: str, filter: TraceFilter, cursor: str) -> tuple[int, str]:
    """The (start_ns, trace_id) position of ``cursor``; raises InvalidCursor."""
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
        version, start_ns, trace_id, digest = data["v"], data["s"], data["t"], data["f"]
    except (ValueError, KeyError, TypeError):
        raise InvalidCursor("malformed cursor payload") from None
    if version != _VERSION or not isinstance(start_ns, int) or not isinstance(trace_id, str):
        raise InvalidCursor("cursor from an unsupported version of llmtrace")
    if digest != filter_digest(filter):
        raise InvalidCursor("cursor was issued for a different filter: restart from the first page")
    return start_ns, trace_id
