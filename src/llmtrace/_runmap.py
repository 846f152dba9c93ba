"""A bounded map from framework run ids to live invocations.

Runs that never end (an abandoned stream, a crashed worker, a callback the framework never
fires) must not keep spans and memory alive forever. Entries expire ``ttl_s`` seconds after
their last touch and the oldest is evicted beyond ``max_size``; an evicted value is handed to
``on_evict`` (which ends its span with ``llmtrace.evicted``). Expiry is checked on every
insert and by one shared background sweeper, so a quiet process also ends its stale runs.
Work that must not run where it is noticed (a weakref callback, which may fire inside any code,
even code holding this map's lock) is queued with :meth:`RunMap.later` and runs there too.

Runs still open when the process exits are ended with ``llmtrace.evicted=shutdown``
(:func:`end_open_runs`, before the pipeline's own exit hook) so that they are exported. A forked child
forgets the runs it inherited (the parent ends them) and starts its own sweeper.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from llmtrace import _fork, semconv
from llmtrace._safety import report_internal_error
from llmtrace._settings import settings

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

SWEEP_INTERVAL_S = 5.0
REFRESH_EVERY_S = 1.0
"""A run refreshes the runs above it at most this often (or an eighth of the TTL)."""
MAX_REFRESHED = 256
"""At most this many runs refreshed up one chain (a bound, should a chain ever loop)."""
PRUNE_CHILDREN_AT = 64


class _Refreshable(Protocol):
    refreshed: float
    """``time.monotonic()`` when a run starting below this one last refreshed its expiry."""


R = TypeVar("R", bound=_Refreshable)


def add_child(children: list[T], child: T, is_open: Callable[[T], object]) -> list[T]:
    """``children`` with ``child`` appended, the list a run keeps of the runs started under it (to
    end them if it is abandoned). Whenever the list reaches a power of two from
    ``PRUNE_CHILDREN_AT`` on, a new list without the ended ones is returned, so a long-lived run
    keeps about as many as it has open children. A child appended by another thread during a prune
    may be dropped: it then ends by its own callback or, if abandoned, by its run map's expiry."""
    children.append(child)
    size = len(children)
    if size >= PRUNE_CHILDREN_AT and size & (size - 1) == 0:
        return [c for c in children if is_open(c)]
    return children


class RunMap(Generic[K, V]):
    def __init__(
        self,
        on_evict: Callable[[V, str], None],
        *,
        ttl_s: float | None = None,
        max_size: int | None = None,
    ) -> None:
        """Bounds default to ``settings.run_ttl_s`` / ``settings.max_open_runs``, read live, so a
        later ``configure(run_ttl_s=..., max_open_runs=...)`` applies to maps made before it."""
        self._on_evict = on_evict
        self._ttl_s = ttl_s
        self._max_size = max_size
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self._lock = _fork.lock()
        self._later: deque[Callable[[], None]] = deque()
        _sweeper.register(self)

    @property
    def ttl_s(self) -> float:
        return self._ttl_s if self._ttl_s is not None else settings.run_ttl_s

    @ttl_s.setter
    def ttl_s(self, value: float) -> None:
        self._ttl_s = value

    @property
    def max_size(self) -> int:
        return self._max_size if self._max_size is not None else settings.max_open_runs

    @max_size.setter
    def max_size(self, value: int) -> None:
        self._max_size = value

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: K, value: V) -> None:
        now = time.monotonic()
        entries = self._entries
        with self._lock:
            previous = entries.pop(key, None)
            entries[key] = (value, now)  # a new key goes last: no move_to_end
            evicted = self._collect(now) if self._due(now) else []
        if previous is not None and previous[0] is not value:  # a reused run id: end the old run
            evicted.append((previous[0], semconv.EVICTED_REPLACED))
        if evicted:
            self._evict(evicted)
        if self._later:
            self._run_later()

    def later(self, call: Callable[[], None]) -> None:
        """Run ``call`` at the next insert or sweep (within ``SWEEP_INTERVAL_S`` while any run is
        open). Safe from any context, a weakref callback included: it only appends to a deque."""
        self._later.append(call)

    def _run_later(self) -> None:
        pending = self._later
        while pending:
            try:
                call = pending.popleft()
            except IndexError:  # another thread took the last one
                return
            try:
                call()
            except Exception as exc:
                report_internal_error(f"{__name__}.RunMap.later", exc)

    def _due(self, now: float) -> bool:
        """Whether an insert must collect: over capacity, or the oldest entry expired."""
        entries = self._entries
        max_size = self._max_size if self._max_size is not None else settings.max_open_runs
        if len(entries) > max_size:
            return True
        ttl_s = self._ttl_s if self._ttl_s is not None else settings.run_ttl_s
        for _, seen in entries.values():  # the oldest entry only
            return seen <= now - ttl_s
        return False

    def get(self, key: K) -> V | None:
        """The value, refreshing its expiry (a run that reports progress is alive)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            entries = self._entries
            del entries[key]
            entries[key] = (entry[0], time.monotonic())  # re-inserted last: most recently touched
            return entry[0]

    def refresh_up(self: RunMap[K, R], key: K | None, up: Callable[[R], K | None]) -> None:
        """A run starts below the run ``key``: it and the runs above it (``up`` gives a run's
        parent key) are alive, however many plumbing runs lie between (a long tool keeps its
        agent alive). Refreshes their expiry up the chain, stopping at one refreshed in the last
        ``REFRESH_EVERY_S`` (or eighth of the TTL): the runs above it were refreshed with it."""
        now = time.monotonic()
        fresh = now - min(REFRESH_EVERY_S, self.ttl_s / 8)
        entries = self._entries
        for _ in range(MAX_REFRESHED):
            if key is None:
                return
            entry = entries.get(key)
            if entry is None or entry[0].refreshed > fresh:
                return
            run = entry[0]
            run.refreshed = now
            self.get(key)
            key = up(run)

    def peek(self, key: K) -> V | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def pop(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.pop(key, None)
        return None if entry is None else entry[0]

    def sweep(self) -> int:
        """End expired runs now; returns how many."""
        if self._later:
            self._run_later()
        with self._lock:
            evicted = self._collect(time.monotonic())
        self._evict(evicted)
        return len(evicted)

    def clear(self, reason: str = semconv.EVICTED_SHUTDOWN) -> None:
        """End every open run (uninstrument, shutdown)."""
        with self._lock:
            values = [(value, reason) for value, _ in self._entries.values()]
            self._entries.clear()
        self._evict(values)

    def _forget(self) -> None:
        """Drop every run without ending it (a forked child: they are the parent's to end)."""
        self._entries = OrderedDict()
        self._later = deque()

    def _collect(self, now: float) -> list[tuple[V, str]]:
        evicted: list[tuple[V, str]] = []
        entries = self._entries
        max_size = self.max_size
        while len(entries) > max_size:
            _, (value, _) = entries.popitem(last=False)
            evicted.append((value, semconv.EVICTED_CAPACITY))
        deadline = now - self.ttl_s
        while entries:
            key = next(iter(entries))
            value, seen = entries[key]
            if seen > deadline:
                break
            del entries[key]
            evicted.append((value, semconv.EVICTED_TTL))
        return evicted

    def _evict(self, evicted: list[tuple[V, str]]) -> None:
        for value, reason in evicted:
            try:
                self._on_evict(value, reason)
            except Exception as exc:
                report_internal_error(f"{__name__}.RunMap.evict", exc)


class _Sweeper:
    """One daemon thread that sweeps every live RunMap periodically."""

    def __init__(self) -> None:
        self._maps: weakref.WeakSet[RunMap[object, object]] = weakref.WeakSet()
        self._lock = _fork.lock()
        self._thread: threading.Thread | None = None
        self._atexit = False

    def register(self, run_map: RunMap[K, V]) -> None:
        with self._lock:
            self._maps.add(run_map)  # type: ignore[arg-type]
            self._start()
            if not self._atexit:  # registered after the providers of the app: runs before their shutdown
                atexit.register(end_open_runs)
                self._atexit = True

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="llmtrace-runmap-sweeper", daemon=True)
            self._thread.start()

    def maps(self) -> list[RunMap[object, object]]:
        with self._lock:
            return list(self._maps)

    def after_fork_in_child(self) -> None:
        """The inherited runs are the parent's; the sweeper thread did not survive the fork."""
        with self._lock:
            for run_map in self._maps:
                run_map._forget()
            self._thread = None
            if len(self._maps):
                self._start()

    def _run(self) -> None:
        while True:
            time.sleep(SWEEP_INTERVAL_S)
            with self._lock:
                maps = list(self._maps)
            for run_map in maps:
                if len(run_map) or run_map._later:
                    run_map.sweep()


_sweeper = _Sweeper()
_fork.in_child(_sweeper.after_fork_in_child)


def end_open_runs(reason: str = semconv.EVICTED_SHUTDOWN) -> int:
    """End every run still open in every run map (at exit); how many."""
    ended = 0
    for run_map in _sweeper.maps():
        ended += len(run_map)
        run_map.clear(reason)
    return ended
