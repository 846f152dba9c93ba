"""llmtrace._objects.attribute: the same answers as getattr(obj, name, None), without failed lookups."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from llmtrace import _objects
from llmtrace._objects import attribute


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")
    temperature: float = 0.2
    _secret: str = PrivateAttr(default="p")

    @property
    def label(self) -> str:
        return "m"

    @property
    def broken(self) -> str:
        raise RuntimeError("no")


class Slotted:
    __slots__ = ("model",)

    def __init__(self) -> None:
        self.model = "gpt-4o"


class Proxy:
    """Serves any name dynamically, like a wrapt proxy."""

    def __getattr__(self, name: str) -> Any:
        return f"dyn-{name}"


def test_reads_like_getattr_with_default() -> None:
    model = Model(extra_field=7)
    assert attribute(model, "temperature") == 0.2
    assert attribute(model, "label") == "m"
    assert attribute(model, "extra_field") == 7
    assert attribute(model, "_secret") == "p"
    assert attribute(model, "missing") is None
    assert attribute(model, "broken") is None
    assert attribute(Slotted(), "model") == "gpt-4o"
    assert attribute(Slotted(), "other") is None
    assert attribute(Proxy(), "model") == "dyn-model"
    assert attribute(None, "model") is None
    assert attribute(3, "real") == 3


def test_missing_names_on_pydantic_models_skip_getattr(monkeypatch) -> None:
    calls: list[str] = []
    original = BaseModel.__getattr__

    def counting(self: BaseModel, name: str) -> Any:
        calls.append(name)
        return original(self, name)

    counting.__qualname__, counting.__module__ = original.__qualname__, original.__module__
    monkeypatch.setattr(BaseModel, "__getattr__", counting)
    _objects._classes.clear()
    model = Model()
    assert attribute(model, "max_tokens") is None
    assert attribute(model, "temperature") == 0.2
    assert calls == []


def test_class_cache_is_bounded() -> None:
    for i in range(_objects._MAX_CACHED_CLASSES + 5):
        assert attribute(type(f"C{i}", (), {"x": i})(), "x") == i
    assert 0 < len(_objects._classes) <= _objects._MAX_CACHED_CLASSES


class RaisingDict:
    """An object whose ``__dict__`` cannot be read."""

    @property
    def __dict__(self) -> Any:  # type: ignore[override]
        raise RuntimeError("no")

    temperature = 0.5


def test_attributes_reads_many_names_like_attribute() -> None:
    names = ("temperature", "label", "extra_field", "_secret", "missing", "broken", "model", "other")
    for obj in (Model(extra_field=7), Slotted(), Proxy(), None, RaisingDict()):
        expected = {n: v for n in names if (v := attribute(obj, n)) is not None}
        assert _objects.attributes(obj, names) == expected
    assert _objects.attributes(RaisingDict(), names) == {}  # nothing can be read safely: all absent
    assert _objects.attributes(Model(extra_field=7), names) == {
        "temperature": 0.2,
        "label": "m",
        "extra_field": 7,
        "_secret": "p",
    }
