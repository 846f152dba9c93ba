"""Streamed engine responses whose model call starts only when the caller iterates them.

A response synthesizer with ``streaming=True`` (``Refine``/``CompactAndRefine``, the default of
``as_query_engine``, and the synthesizers of the ``context`` and ``condense_plus_context`` chat
engines) returns a ``StreamingResponse`` whose ``response_gen`` has not run yet: ``LLM.stream``
and the model call are made only when the caller first iterates it, after the engine's
dispatcher span closed. The dispatcher then reports them with no parent (or with whatever
dispatcher span the consumer is in), and nothing in its spans or events ties them to the engine.

What does tie them: while the model call starts, the generator the engine returned is running,
so its frame is on the Python stack of the thread (or asyncio task) that iterates it. When a
synthesizer's or engine's dispatcher span returns such a response under an engine, the
generator's frame is remembered here against the engine's span id; the engine's span stays open.
While any such frame is remembered, a dispatcher span that starts (other than a call inside a
model call) walks up at most ``MAX_DEPTH`` frames looking for one; the innermost one found names
its engine, which then becomes the span's parent if the dispatcher gave none or gave the
consumer's. Each concurrent stream runs its own generator, so each finds its own engine,
whatever thread or task iterates it.

Bounds: entries hold a weak reference to the generator (a frame id is trusted only while that
generator is alive and still owns that frame), they are forgotten when their engine's span ends
or is evicted, and the map never holds more than ``settings.max_open_runs`` entries (the oldest
is dropped; its engine then ends by eviction). Nothing is walked while the map is empty.
A remembered generator freed before anyone iterated it (the caller dropped the response) is
reported through ``on_collected``, so its engine ends as a cancellation rather than by expiry.
"""

from __future__ import annotations

import inspect
import sys
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from llama_index.core.base.response.schema import AsyncStreamingResponse, StreamingResponse

from llmtrace import _fork
from llmtrace._safety import report_internal_error
from llmtrace._settings import settings

MAX_DEPTH = 48
"""Frames walked up from a starting dispatcher span (the model call starts a few frames inside)."""

_EMPTY_STREAMS = frozenset({"_empty_response_generator", "_empty_response_agenerator"})
"""Synthesizer generators that yield a fixed text and never call a model (nothing retrieved)."""


def response_generator(result: Any) -> Any | None:
    """The token generator of a streamed synthesizer response, if it may still call a model."""
    if not isinstance(result, (StreamingResponse, AsyncStreamingResponse)):
        return None
    fields = getattr(result, "__dict__", None)  # a dataclass field: never a property call
    generator = fields.get("response_gen") if isinstance(fields, dict) else None
    frame = frame_of(generator)
    if frame is None or frame.f_code.co_name in _EMPTY_STREAMS:
        return None
    return generator


def frame_of(generator: Any) -> FrameType | None:
    """The frame of a generator or async generator that has not finished, else None."""
    if inspect.isgenerator(generator):
        return generator.gi_frame
    if inspect.isasyncgen(generator):
        return generator.ag_frame
    return None


@dataclass(slots=True, frozen=True)
class _Entry:
    host_id: str
    """Span id of the engine node that returned the generator (and waits for it)."""
    generator: weakref.ref[Any]


class LazyStreams:
    """Frames of not-yet-consumed stream generators, keyed by ``id(frame)``: streamed engine
    responses (``Runs.lazy``) and model streams before their first chunk (``Runs.streams``, see
    ``Runs.pending_stream``)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._lock = _fork.lock()
        _all.add(self)

    def __len__(self) -> int:
        return len(self._entries)

    def remember(
        self, generator: Any, host_id: str, on_collected: Callable[[], None] | None = None
    ) -> int | None:
        """Remember ``generator``'s frame for the engine ``host_id``; the key to forget it by.

        The first engine to remember a generator keeps it: an engine that returns the stream of
        an inner engine waits for that engine instead (see ``Runs.stream_opened``).
        ``on_collected`` is called (from a weakref callback: it must only queue work) if the
        generator is freed while still remembered.
        """
        frame = frame_of(generator)
        if frame is None:
            return None
        entry = _Entry(host_id, weakref.ref(generator, _callback(on_collected)))
        key = id(frame)
        with self._lock:
            known = self._entries.get(key)
            if known is not None and known.generator() is generator:
                return key if known.host_id == host_id else None
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > max(settings.max_open_runs, 1):
                self._entries.popitem(last=False)
        return key

    def find(self) -> str | None:
        """Span id of the engine whose remembered generator is running in the caller's stack."""
        entries = self._entries
        if not entries:
            return None
        frame: FrameType | None = sys._getframe(1)
        for _ in range(MAX_DEPTH):
            if frame is None:
                return None
            entry = entries.get(id(frame))
            if entry is not None and frame_of(entry.generator()) is frame:
                return entry.host_id
            frame = frame.f_back
        return None

    def finished(self, keys: Iterable[int]) -> bool:
        """Whether every generator remembered under ``keys`` ran to its end (none abandoned)."""
        found = False
        for key in keys:
            entry = self._entries.get(key)
            generator = entry.generator() if entry is not None else None
            if generator is None or frame_of(generator) is not None:
                return False
            found = True
        return found

    def alive(self, keys: Iterable[int]) -> bool:
        """Whether any generator remembered under ``keys`` still exists."""
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and entry.generator() is not None:
                return True
        return False

    def forget(self, keys: Iterable[int], host_id: str) -> None:
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None and entry.host_id == host_id:
                    del self._entries[key]

    def _forget(self) -> None:
        """A forked child: the remembered streams are the parent's (their engines are forgotten too)."""
        self._entries = OrderedDict()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _callback(on_collected: Callable[[], None] | None) -> Callable[[weakref.ref[Any]], None] | None:
    if on_collected is None:
        return None

    def collected(_: weakref.ref[Any]) -> None:
        try:
            on_collected()
        except Exception as exc:  # a weakref callback's error would only reach stderr
            report_internal_error(f"{__name__}.collected", exc)

    return collected


_all: weakref.WeakSet[LazyStreams] = weakref.WeakSet()
_fork.each_in_child(f"{__name__}.LazyStreams", _all, LazyStreams._forget)
