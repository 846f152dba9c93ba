"""Reading fields off framework objects without paying for failed lookups.

Integrations probe objects for optional fields (``temperature``, ``model_name``, ...). On pydantic
models, which LangChain and LlamaIndex use everywhere, a name that is not there goes through
``BaseModel.__getattr__`` and an ``AttributeError``: several microseconds each, and a model call
probes a dozen names. ``attribute`` answers from the instance ``__dict__`` and a per-class set of
names instead, and falls back to ``getattr`` whenever a class could serve a name dynamically.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlparse

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(dict[K, V]):
    """A dict for per-class caches that forgets everything once it holds ``limit`` entries: classes
    made at run time must not grow it forever. Read it as a dict; add through ``remember``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def remember(self, key: K, value: V) -> V:
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


_MAX_CACHED_CLASSES = 512


class _ClassNames:
    __slots__ = ("dynamic", "names")

    def __init__(self, cls: type) -> None:
        self.names = frozenset().union(*(vars(c) for c in cls.__mro__))
        hook = getattr(cls, "__getattr__", None)
        pydantic_hook = getattr(hook, "__qualname__", "") == "BaseModel.__getattr__" and getattr(
            hook, "__module__", ""
        ).startswith("pydantic")
        self.dynamic = hook is not None and not pydantic_hook
        """Whether ``__getattr__`` may serve any name (pydantic's serves only private and extra fields)."""


_classes: BoundedCache[type, _ClassNames] = BoundedCache(_MAX_CACHED_CLASSES)


def _class_names(cls: type) -> _ClassNames:
    found = _classes.get(cls)
    return found if found is not None else _classes.remember(cls, _ClassNames(cls))


def attribute(obj: Any, name: str) -> Any:
    """``obj.name``, or None if absent or if reading it raises. Never raises."""
    try:
        values = getattr(obj, "__dict__", None)
        if isinstance(values, dict) and name in values:
            return values[name]
        known = _class_names(type(obj))
        if name in known.names or known.dynamic:
            return getattr(obj, name, None)
        for served in ("__pydantic_extra__", "__pydantic_private__"):  # what pydantic's hook serves
            found = getattr(obj, served, None)
            if isinstance(found, dict) and name in found:
                return found[name]
        return None
    except Exception:  # a property that raises, an odd metaclass
        return None


def attributes(obj: Any, names: Iterable[str]) -> dict[str, Any]:
    """``{name: attribute(obj, name)}`` for the ``names`` ``obj`` has (values not None), with the
    class and pydantic lookups done once for all of them (a model call probes a dozen names)."""
    found: dict[str, Any] = {}
    try:
        values = getattr(obj, "__dict__", None)
        values = values if isinstance(values, dict) else {}
        known = _class_names(type(obj))
        served: list[dict[str, Any]] = []
        for hook in ("__pydantic_extra__", "__pydantic_private__"):  # what pydantic's hook serves
            extra = getattr(obj, hook, None)
            if isinstance(extra, dict) and extra:
                served.append(extra)
    except Exception:  # an odd object: one name at a time
        values, known, served = {}, None, []
    for name in names:
        if name in values:
            value = values[name]
        elif known is None or name in known.names or known.dynamic:
            value = attribute(obj, name)
        else:
            value = None
            for extra in served:
                if name in extra:
                    value = extra[name]
                    break
        if value is not None:
            found[name] = value
    return found


def url_host_port(obj: Any, names: Iterable[str]) -> tuple[str | None, int | None]:
    """Host and port of the first of ``names`` on ``obj`` that holds a URL (a client's API base),
    or (None, None). Never raises."""
    for name in names:
        value = attribute(obj, name)
        if isinstance(value, str) and "://" in value:
            return host_port(value)
    return None, None


_MAX_CACHED_URLS = 256
_hosts: BoundedCache[str, tuple[str | None, int | None]] = BoundedCache(_MAX_CACHED_URLS)


def host_port(url: str) -> tuple[str | None, int | None]:
    """Host and port of ``url`` ((None, None) if it does not parse), cached: a model calls the
    same API base every time, and parsing costs more than the rest of reading it."""
    found = _hosts.get(url)
    if found is None:
        try:
            parsed = urlparse(url)
            found = (parsed.hostname, parsed.port)
        except ValueError:
            found = (None, None)
        _hosts.remember(url, found)
    return found
