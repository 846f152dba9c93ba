"""Malformed payloads for fuzzing: None, wrong types, huge strings, NaN and negative counts, cycles,
non-JSON values, objects whose ``__repr__``/``__str__`` raise."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hypothesis import strategies as st

HUGE = "x" * (3 << 20)  # 3 MiB
HUGE_WIDE = "\u00e9\U0001f600" * (1 << 19)  # multi-byte, ~3 MiB of UTF-8


class BadStr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    __str__ = __repr__


class BadStrError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str exploded")

    __repr__ = __str__


def cyclic_dict() -> dict[str, Any]:
    d: dict[str, Any] = {"role": "user"}
    d["self"] = d
    d["content"] = [d]
    return d


def cyclic_list() -> list[Any]:
    items: list[Any] = ["a"]
    items.append(items)
    return items


small_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=10),
    st.sampled_from(["{not json", "\x00\ud800"]),
)


@dataclasses.dataclass(frozen=True)
class Token:
    """A placeholder hypothesis generates and reports (cheap, safe repr); ``materialize`` makes the
    real hostile value, so hypothesis never has to repr a 3 MiB string or an object whose repr raises.

    Not a ``str`` subclass: hypothesis's choice engine treats str subclasses drawn from
    ``sampled_from`` as raw string choices and fails on them internally (seen in CI)."""

    name: str

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<{self.name}>"


FACTORIES: dict[str, Any] = {
    "HUGE": lambda: HUGE,
    "HUGE_WIDE": lambda: HUGE_WIDE,
    "BAD_STR": BadStr,
    "BAD_STR_ERROR": BadStrError,
    "CYCLIC_DICT": cyclic_dict,
    "CYCLIC_LIST": cyclic_list,
    "OBJECT": object,
    "SET": lambda: {1, 2, 3},
    "FROZENSET": lambda: frozenset({"a"}),
    "BYTES": lambda: b"\xff\xfe",
    "COMPLEX": lambda: complex(1, -1),
    "FUNCTION": lambda: lambda: None,
    "HUGE_ERROR": lambda: RuntimeError(HUGE),
}
HUGE_TOKENS = ("HUGE", "HUGE_WIDE")


def materialize(value: Any) -> Any:
    if isinstance(value, Token):
        return FACTORIES[str(value)]()
    if isinstance(value, list):
        return [materialize(v) for v in value]
    if isinstance(value, tuple):
        return tuple(materialize(v) for v in value)
    if isinstance(value, dict):
        return {materialize(k): materialize(v) for k, v in value.items()}
    return value


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -1, 0, 1e308]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=10),
    st.sampled_from(["{not json", "\x00\ud800"]),
    st.sampled_from([Token(t) for t in HUGE_TOKENS]),
)

odd = st.sampled_from([Token(t) for t in FACTORIES if t not in (*HUGE_TOKENS, "HUGE_ERROR")])

counts = st.one_of(
    st.none(),
    st.sampled_from([math.nan, -1, -(10**12), 10**30, 1.5, "12", True, [3], {"n": 1}]),
    st.integers(min_value=-5, max_value=100),
)

payload = st.recursive(
    st.one_of(scalars, odd),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), children, max_size=4),
        st.tuples(children, children),
    ),
    max_leaves=8,
)
"""Anything: scalars (huge strings included), hostile objects and containers of them."""

small = payload
"""Names and identifiers get the same hostile values, huge strings included."""


def usage_dicts() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "input_tokens": counts,
            "output_tokens": counts,
            "total_tokens": counts,
            "prompt_tokens": counts,
            "completion_tokens": counts,
            "input_token_details": st.one_of(payload, st.fixed_dictionaries({"cache_read": counts})),
            "output_token_details": st.one_of(payload, st.fixed_dictionaries({"reasoning": counts})),
            "prompt_tokens_details": st.one_of(payload, st.fixed_dictionaries({"cached_tokens": counts})),
            "cache_read_input_tokens": counts,
            "cache_creation_input_tokens": counts,
            "total_cost": st.sampled_from([0, None, math.nan]),
        },
    )


errors = st.one_of(
    st.builds(ValueError, st.text(max_size=10)),
    st.just(Token("BAD_STR_ERROR")),
    st.just(Token("HUGE_ERROR")),
    st.builds(KeyboardInterrupt),
    st.none(),
    st.text(max_size=5),
    payload,
)
