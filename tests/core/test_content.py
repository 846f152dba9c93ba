from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import enum
import json
import logging
import math
import signal
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmtrace import _content
from llmtrace import semconv as sc
from llmtrace._content import (
    CAPTURE_CONTENT_ENV,
    DEFAULT_MAX_ATTRIBUTE_LENGTH,
    DEFAULT_MAX_SPAN_CONTENT,
    CaptureMode,
    ContentPolicy,
    capture_mode_from_env,
    dumps_bounded,
    parse_capture_mode,
    scrub_secrets,
    serialize_content,
    to_jsonable,
    truncate_text,
)

MB = 1024 * 1024


# --------------------------------------------------------------------------------------
# Capture mode
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("NO_CONTENT", CaptureMode.NO_CONTENT),
        ("SPAN_ONLY", CaptureMode.SPAN_ONLY),
        ("EVENT_ONLY", CaptureMode.EVENT_ONLY),
        ("SPAN_AND_EVENT", CaptureMode.SPAN_AND_EVENT),
        ("span_only", CaptureMode.SPAN_ONLY),
        ("Span_And_Event", CaptureMode.SPAN_AND_EVENT),
        ("  event_only \n", CaptureMode.EVENT_ONLY),
        ("true", CaptureMode.SPAN_ONLY),
        ("TRUE", CaptureMode.SPAN_ONLY),
        ("True", CaptureMode.SPAN_ONLY),
        ("false", CaptureMode.NO_CONTENT),
        ("FALSE", CaptureMode.NO_CONTENT),
        ("", CaptureMode.NO_CONTENT),
        ("   ", CaptureMode.NO_CONTENT),
    ],
)
def test_capture_mode_from_env(monkeypatch, caplog, raw: str, expected: CaptureMode) -> None:
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, raw)
    with caplog.at_level(logging.WARNING, logger=_content.__name__):
        assert capture_mode_from_env() is expected
    assert not caplog.records


def test_capture_mode_unset_is_no_content(monkeypatch, caplog) -> None:
    monkeypatch.delenv(CAPTURE_CONTENT_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger=_content.__name__):
        assert capture_mode_from_env() is CaptureMode.NO_CONTENT
        assert ContentPolicy.from_env() == ContentPolicy()
    assert not caplog.records


@pytest.mark.parametrize("raw", ["yes", "1", "SPAN", "all", "on"])
def test_capture_mode_invalid_env_warns_once(monkeypatch, caplog, raw: str) -> None:
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, raw)
    with caplog.at_level(logging.WARNING, logger=_content.__name__):
        assert capture_mode_from_env() is CaptureMode.NO_CONTENT
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert CAPTURE_CONTENT_ENV in warnings[0].getMessage()


def test_capture_mode_properties() -> None:
    assert (CaptureMode.NO_CONTENT.on_span, CaptureMode.NO_CONTENT.on_event) == (False, False)
    assert (CaptureMode.SPAN_ONLY.on_span, CaptureMode.SPAN_ONLY.on_event) == (True, False)
    assert (CaptureMode.EVENT_ONLY.on_span, CaptureMode.EVENT_ONLY.on_event) == (False, True)
    assert (CaptureMode.SPAN_AND_EVENT.on_span, CaptureMode.SPAN_AND_EVENT.on_event) == (True, True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (CaptureMode.EVENT_ONLY, CaptureMode.EVENT_ONLY),
        (True, CaptureMode.SPAN_ONLY),
        (False, CaptureMode.NO_CONTENT),
        ("span_and_event", CaptureMode.SPAN_AND_EVENT),
        ("NO_CONTENT", CaptureMode.NO_CONTENT),
        ("true", CaptureMode.SPAN_ONLY),
    ],
)
def test_parse_capture_mode(value: Any, expected: CaptureMode) -> None:
    assert parse_capture_mode(value) is expected


def test_parse_capture_mode_none_reads_env(monkeypatch) -> None:
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "event_only")
    assert parse_capture_mode(None) is CaptureMode.EVENT_ONLY


@pytest.mark.parametrize("value", ["", "yes", "span", 1, 0, 2.5, object(), ["SPAN_ONLY"]])
def test_parse_capture_mode_invalid_is_loud(value: Any) -> None:
    with pytest.raises(ValueError, match="capture mode"):
        parse_capture_mode(value)


# --------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------
def test_policy_defaults() -> None:
    policy = ContentPolicy()
    assert policy.mode is CaptureMode.NO_CONTENT
    assert policy.max_attribute_length == DEFAULT_MAX_ATTRIBUTE_LENGTH == 32 * 1024
    assert policy.max_span_content == DEFAULT_MAX_SPAN_CONTENT == 512 * 1024
    assert policy.redact is None
    assert not policy.enabled
    assert ContentPolicy(mode=CaptureMode.EVENT_ONLY).enabled
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.mode = CaptureMode.SPAN_ONLY  # type: ignore[misc]


def test_policy_from_env(monkeypatch) -> None:
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "SPAN_AND_EVENT")
    assert ContentPolicy.from_env().mode is CaptureMode.SPAN_AND_EVENT


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"mode": "SPAN_ONLY"}, TypeError),
        ({"max_attribute_length": 10}, ValueError),
        ({"max_attribute_length": True}, ValueError),
        ({"max_span_content": 0}, ValueError),
        ({"redact": "not callable"}, TypeError),
    ],
)
def test_policy_rejects_bad_configuration(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        ContentPolicy(**kwargs)


# --------------------------------------------------------------------------------------
# to_jsonable
# --------------------------------------------------------------------------------------
def test_to_jsonable_plain_values() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": (1, 2), "c": {"d": {}}}
    assert to_jsonable(value) == {"a": [1, 2.5, "x", None, True], "b": [1, 2], "c": {"d": {}}}


def test_to_jsonable_special_numbers_and_bytes() -> None:
    assert to_jsonable([math.nan, math.inf, -math.inf, b"\x00\xffhi", bytearray(b"ab")]) == [
        "NaN",
        "Infinity",
        "-Infinity",
        base64.b64encode(b"\x00\xffhi").decode(),
        "YWI=",
    ]
    assert to_jsonable(10**2000) == "<int>"
    assert to_jsonable({1: "a", None: "b", 2.5: "c"}) == {"1": "a", "None": "b", "2.5": "c"}


def test_to_jsonable_cycle() -> None:
    data: dict[str, Any] = {"name": "a"}
    data["self"] = data
    items: list[Any] = [1]
    items.append(items)
    assert to_jsonable(data) == {"name": "a", "self": "[cycle]"}
    assert to_jsonable(items) == [1, "[cycle]"]
    shared = {"x": 1}
    assert to_jsonable([shared, shared]) == [{"x": 1}, {"x": 1}]  # a shared object is not a cycle


class RaisingRepr:
    __slots__ = ()

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __str__(self) -> str:
        raise RuntimeError("str")


class RaisingReprWithAttributes:
    def __init__(self) -> None:
        self.visible = 1
        self._private = 2

    def __repr__(self) -> str:
        raise RuntimeError("repr")


def test_to_jsonable_objects() -> None:
    assert to_jsonable(RaisingRepr()) == "<RaisingRepr>"
    assert to_jsonable(RaisingReprWithAttributes()) == {"visible": 1}
    assert to_jsonable([object(), len, int, logging]) == [
        "<object>",
        "<builtin_function_or_method>",
        "<type>",
        "<module>",
    ]
    assert to_jsonable(ValueError("secret message")) == "<ValueError>"


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: Any = None


class PydanticLike:
    """Duck-typed pydantic v2 model."""

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def model_dump(self) -> dict[str, Any]:
        return dict(self._fields)


class BrokenModel:
    def __init__(self) -> None:
        self.fallback = "used"

    def model_dump(self) -> dict[str, Any]:
        raise RuntimeError("cannot dump")


def test_to_jsonable_structured_objects() -> None:
    point = Point(1, Color.RED)
    assert to_jsonable(point) == {"x": 1, "y": "red"}
    assert to_jsonable(PydanticLike(role="user", content=b"a", nested=Point(2))) == {
        "role": "user",
        "content": "YQ==",
        "nested": {"x": 2, "y": None},
    }
    assert to_jsonable(BrokenModel()) == {"fallback": "used"}
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    ident = uuid.UUID(int=1)
    assert to_jsonable([when, ident, OrderedDict(a=1), {3}, frozenset()]) == [
        "2026-01-02T03:04:05",
        str(ident),
        {"a": 1},
        [3],
        [],
    ]


def test_to_jsonable_dataclass_cycle() -> None:
    point = Point(1)
    point.y = point
    assert to_jsonable(point) == {"x": 1, "y": "[cycle]"}


def test_to_jsonable_pydantic_model() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Message(pydantic.BaseModel):
        role: str
        content: str

    assert to_jsonable([Message(role="user", content="hi")]) == [{"role": "user", "content": "hi"}]


def test_to_jsonable_depth() -> None:
    nested: Any = "leaf"
    for _ in range(1000):
        nested = [nested]
    result = to_jsonable(nested)
    depth = 0
    while isinstance(result, list):
        result = result[0]
        depth += 1
    assert result == "[max depth]"
    assert depth == 20
    assert to_jsonable({"a": {"b": 1}}, max_depth=1) == {"a": "[max depth]"}


def test_to_jsonable_bounds_collections() -> None:
    result = to_jsonable(list(range(5000)))
    assert result[:1000] == list(range(1000))
    assert len(result) == 1001
    assert "4000" in result[-1]
    big = to_jsonable({f"k{i}": i for i in range(2000)})
    assert len(big) == 1001
    assert "1000" in big[_content.MORE_KEY]


def test_to_jsonable_hostile_objects() -> None:
    class HostileMapping(dict):  # type: ignore[type-arg]
        def items(self):  # type: ignore[override]
            raise RuntimeError("no items")

    class HostileDict:
        @property
        def __dict__(self):  # type: ignore[override]
            raise RuntimeError("no dict")

    class WeirdStr(str):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    result = to_jsonable([HostileMapping(a=1), HostileDict(), WeirdStr("text"), "\ud800x"])
    assert result[:3] == ["<HostileMapping>", "<HostileDict>", "text"]
    assert type(result[2]) is str
    result[3].encode("utf-8")  # a lone surrogate is replaced: OTLP could not encode it
    json.dumps(result)


# --------------------------------------------------------------------------------------
# dumps_bounded / truncate_text
# --------------------------------------------------------------------------------------
def _check_bounded(text: str, limit: int) -> Any:
    assert len(text) <= limit
    return json.loads(text)


def test_dumps_bounded_small_value_is_compact_and_untouched() -> None:
    text, truncated = dumps_bounded({"role": "user", "content": "héllo", "n": [1, 2]}, 1000)
    assert text == '{"role":"user","content":"héllo","n":[1,2]}'
    assert not truncated


def test_dumps_bounded_long_string() -> None:
    text, truncated = dumps_bounded({"content": "x" * 10_000, "role": "user"}, 1000)
    assert truncated
    data = _check_bounded(text, 1000)
    assert data["role"] == "user"
    assert data["content"].startswith("xxx")
    assert data["content"].endswith("chars]")
    removed = int(data["content"].rsplit("truncated ", 1)[1].split(" ")[0])
    assert data["content"].index("…") + removed == 10_000  # the marker counts what was removed


def test_dumps_bounded_shortens_the_longest_strings_first() -> None:
    value = {"short": "s" * 50, "long": "l" * 5000, "other": "o" * 100}
    data = _check_bounded(dumps_bounded(value, 1000)[0], 1000)
    assert data["short"] == "s" * 50
    assert data["other"] == "o" * 100
    assert data["long"].startswith("l" * 100)


def test_dumps_bounded_drops_list_tail_with_marker() -> None:
    text, truncated = dumps_bounded(list(range(10_000)), 300)
    data = _check_bounded(text, 300)
    assert truncated
    assert data[0] == 0
    assert isinstance(data[-1], str) and "more items" in data[-1]


def test_dumps_bounded_50mb_string() -> None:
    huge = "x" * (50 * MB)
    start = time.perf_counter()
    text, truncated = dumps_bounded(huge, DEFAULT_MAX_ATTRIBUTE_LENGTH)
    elapsed = time.perf_counter() - start
    assert truncated
    assert _check_bounded(text, DEFAULT_MAX_ATTRIBUTE_LENGTH).startswith("xxxx")
    assert elapsed < 2


def test_dumps_bounded_50mb_message_list() -> None:
    messages = [
        {
            "role": "user" if i % 2 else "assistant",
            "parts": [{"type": "text", "content": f"{i} " + "y" * 500}],
        }
        for i in range(100_000)
    ]
    start = time.perf_counter()
    text, truncated = dumps_bounded(messages, DEFAULT_MAX_ATTRIBUTE_LENGTH)
    elapsed = time.perf_counter() - start
    assert truncated
    data = _check_bounded(text, DEFAULT_MAX_ATTRIBUTE_LENGTH)
    assert data[0]["role"] == "assistant"
    assert data[0]["parts"][0]["content"].startswith("0 yyy")
    assert "more items" in data[-1]
    assert elapsed < 2


def test_dumps_bounded_one_huge_message_among_small_ones() -> None:
    messages = [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "z" * (50 * MB)}]},
        {"role": "user", "parts": [{"type": "text", "content": "last question"}]},
    ]
    data = _check_bounded(dumps_bounded(messages, 4096)[0], 4096)
    assert [m["role"] for m in data] == ["system", "user", "user"]
    assert data[0]["parts"][0]["content"] == "be brief"
    assert data[2]["parts"][0]["content"] == "last question"


def test_dumps_bounded_escapes_count() -> None:
    value = ["\x00" * 5000, '"' * 5000, "é" * 5000]
    text, truncated = dumps_bounded(value, 500)
    assert truncated
    assert len(_check_bounded(text, 500)) == 3


def test_dumps_bounded_many_keys_and_long_keys() -> None:
    value = {("k" * 1000) + str(i): "v" * 100 for i in range(3000)}
    _check_bounded(dumps_bounded(value, 200)[0], 200)


def test_dumps_bounded_deep_and_cyclic_and_hostile() -> None:
    nested: Any = 1
    for _ in range(1000):
        nested = {"n": nested}
    _check_bounded(dumps_bounded(nested, 100)[0], 100)
    data: dict[str, Any] = {}
    data["me"] = data
    assert dumps_bounded(data, 100) == ('{"me":"[cycle]"}', False)
    assert dumps_bounded(RaisingRepr(), 100) == ('"<RaisingRepr>"', False)


@pytest.mark.parametrize("limit", [0, 1, 2, 5, 13, 20])
def test_dumps_bounded_tiny_limits(limit: int) -> None:
    text, truncated = dumps_bounded({"a": "b" * 100}, limit)
    assert truncated
    assert len(text) <= limit
    if limit:
        json.loads(text)


def test_truncate_text() -> None:
    assert truncate_text("hello", 10) == ("hello", False)
    assert truncate_text("", 10) == ("", False)
    text, truncated = truncate_text("a" * 1000, 100)
    assert truncated
    assert len(text) <= 100
    assert text.startswith("aaaa")
    assert text.endswith("chars]")
    kept = text.index("…")
    assert text == "a" * kept + f"…[truncated {1000 - kept} chars]"
    assert truncate_text("a" * 1000, 5) == ("aaaaa", True)
    big_text, big_truncated = truncate_text("q" * (50 * MB), 1000)
    assert big_truncated and len(big_text) <= 1000
    assert truncate_text("\ud800", 10)[0].encode("utf-8")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.builds(lambda char, n: char * n, st.characters(), st.integers(0, 6000)),
    lambda children: (
        st.lists(children, max_size=30) | st.dictionaries(st.text(max_size=20), children, max_size=30)
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, limit=st.integers(64, 4096))
def test_dumps_bounded_property(value: Any, limit: int) -> None:
    text, truncated = dumps_bounded(value, limit)
    assert len(text) <= limit
    parsed = json.loads(text)
    if not truncated:
        assert parsed == to_jsonable(value)


# --------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "apikey",
        "apiKey",
        "API_KEY",
        "x-api-key",
        "X-Api-Key",
        "x_goog_api_key",
        "openai_api_key",
        "authorization",
        "Authorization",
        "proxy-authorization",
        "Proxy-Authorization",
        "password",
        "db_password",
        "secret",
        "client_secret",
        "aws_secret_access_key",
        "token",
        "access_token",
        "accessToken",
        "refresh_token",
        "id_token",
        "cookie",
        "Cookie",
        "set-cookie",
        "Set-Cookie",
        "credentials",
        "private_key",
        "Ocp-Apim-Subscription-Key",
        "subscription_key",
        "subscriptionKey",
        "api-key",
        "X-Goog-Api-Key",
        "pwd",
        "db_pwd",
        "passwd",
        "passphrase",
        "access_key",
        "secret_key",
        "sig",
        # names ending in a secret word, session cookies, header names as the dict-key rule sees them
        "OPENAIAPIKEY",
        "openaiApiKey",
        "PGPASSWD",
        "MYSQLPWD",
        "csrftoken",
        "sessionid",
        "JSESSIONID",
        "PHPSESSID",
        "private_key_id",
        "X-Custom-Auth",
        "basicAuth",
        "bearer",
    ],
)
def test_secret_keys_are_redacted(key: str) -> None:
    assert scrub_secrets({key: "value", "nested": [{key: {"deep": 1}}]}) == {
        key: "[REDACTED]",
        "nested": [{key: "[REDACTED]"}],
    }


@pytest.mark.parametrize(
    "key",
    [
        "max_tokens",
        "maxTokens",
        "input_tokens",
        "output_tokens",
        "max_completion_tokens",
        "total_tokens",
        "tokens",
        "token_count",
        "key",
        "author",
        "role",
        "content",
        "oauth_flow",
        "oauth",
        "OAuth",
        "session_id",
        "sessionId",
        "tokenizer",
        "key_id",
    ],
)
def test_ordinary_keys_are_kept(key: str) -> None:
    assert scrub_secrets({key: 42}) == {key: 42}


SK = "sk-" + "a1B2c3D4" * 5
SK_ANT = "sk-ant-api03-" + "Zx9_Yw8-" * 10
SK_PROJ = "sk-proj-" + "Q" * 48
GOOGLE_KEY = "AIzaSyD" + "x1y2z3" * 6
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
XAI_KEY = "xai-" + "k" * 60
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        (f"Authorization: Bearer {JWT}", JWT, "Authorization: Bearer [REDACTED]"),
        ("header bearer abcdefgh12345678", "abcdefgh12345678", "header bearer [REDACTED]"),
        (f"use {SK} please", SK, "use [REDACTED] please"),
        (f"key={SK_ANT}", SK_ANT, "key=[REDACTED]"),
        (f'"{SK_PROJ}"', SK_PROJ, '"[REDACTED]"'),
        (f"google {GOOGLE_KEY}.", GOOGLE_KEY, "google [REDACTED]."),
        (f"aws {AWS_KEY} id", AWS_KEY, "aws [REDACTED] id"),
        (f"grok {XAI_KEY}", XAI_KEY, "grok [REDACTED]"),
        (f"token {JWT}", JWT, "token [REDACTED]"),
        (
            "https://h.example/v1/models?key=abc123XYZ&alt=json",
            "abc123XYZ",
            "https://h.example/v1/models?key=[REDACTED]&alt=json",
        ),
        ("GET /search?q=1&api_key=s3cr3tvalue#top", "s3cr3tvalue", "GET /search?q=1&api_key=[REDACTED]#top"),
        ("https://user:hunter2@db.example/", "hunter2", "https://user:[REDACTED]@db.example/"),
        ("redis://:hunter2Secret99@cache:6379/0", "hunter2Secret99", "redis://:[REDACTED]@cache:6379/0"),
        (f"x-{JWT}", JWT, "x-[REDACTED]"),
        (f"a.b.{JWT}.", JWT, "a.b.[REDACTED]."),
        ("-eyJ" * 1000 + JWT[3:], JWT[3:], "-[REDACTED]"),
    ],
)
def test_secrets_in_strings_are_masked(text: str, secret: str, expected: str) -> None:
    assert scrub_secrets(text) == expected
    nested = scrub_secrets({"messages": [{"content": text}]})
    assert nested == {"messages": [{"content": expected}]}
    assert secret not in json.dumps(nested)


@pytest.mark.parametrize(
    "text",
    [
        "ask-for-help is fine",
        "task-1234567890123456789012345",
        "the basic idea",
        "sk-short",
        "x = compute(a=1, key_count=2)",
        "see https://example.com/a?page=2",
        "AKIA is not enough",
    ],
)
def test_ordinary_strings_are_kept(text: str) -> None:
    assert scrub_secrets(text) == text


def test_scrub_secrets_does_not_modify_its_input_and_handles_any_value() -> None:
    original = {"api_key": "k", "items": [SK], "count": 3}
    assert scrub_secrets(original) == {"api_key": "[REDACTED]", "items": ["[REDACTED]"], "count": 3}
    assert original == {"api_key": "k", "items": [SK], "count": 3}
    cyclic: dict[str, Any] = {}
    cyclic["me"] = cyclic
    assert scrub_secrets(cyclic) == {"me": "[cycle]"}
    assert scrub_secrets(RaisingRepr()) == "<RaisingRepr>"
    assert scrub_secrets(Point(1, {"password": "p"})) == {"x": 1, "y": {"password": "[REDACTED]"}}
    assert scrub_secrets(None) is None


# Fake credentials in the shapes providers issue, built by concatenation so that secret scanners
# do not take this file for a leak.
PROVIDER_KEYS = {
    "groq": "gsk" + "_" + "Fake0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKL",
    "perplexity": "pplx" + "-" + "fake0123456789abcdef0123456789abcdef0123456789ab",
    "hugging face": "hf" + "_" + "Fake0123456789abcdefghijklmnopqrstu",
    "github fine-grained": "github" + "_pat_" + "11FAKE0123456789abcdef_" + "a1B2c3D4e5" * 6,
    "github classic": "ghp" + "_" + "Fake0123456789abcdefghijklmnopqrstu",
    "gitlab": "glpat" + "-" + "Fake0123456789abcdefgh",
    "slack bot": "xoxb" + "-" + "123456789012-1234567890123-Fake0123456789abcdef",
    "slack user": "xoxp" + "-" + "123456789012-1234567890123-1234567890123-fake0123456789",
    "stripe live": "sk" + "_live_" + "Fake0123456789abcdefghij",
    "stripe test": "sk" + "_test_" + "Fake0123456789abcdefghij",
    "stripe restricted live": "rk" + "_live_" + "Fake0123456789abcdefghij",
    "stripe restricted test": "rk" + "_test_" + "Fake0123456789abcdefghij",
    "google oauth": "ya29" + "." + "a0Fake0123456789abcdefghijklmnopqrstuvwxyz-_ABC",
    "npm": "npm" + "_" + "Fake0123456789abcdefghijklmnopqrstuvwx",
    "replicate": "r8" + "_" + "Fake0123456789abcdefghijklmnopqrstuvwxy",
    "anthropic admin": "sk-ant-admin01-" + "Fake0123456789_abcdef-" * 3,
    "openrouter": "sk-or-v1-" + "0123456789abcdef" * 4,
    "openai": SK,
    "openai project": SK_PROJ,
    "anthropic": SK_ANT,
    "xai": XAI_KEY,
    "google api": GOOGLE_KEY,
    "aws": AWS_KEY,
    "jwt": JWT,
}


@pytest.mark.parametrize("key", list(PROVIDER_KEYS.values()), ids=list(PROVIDER_KEYS))
@pytest.mark.parametrize("template", ["{}", "my key is {} ok", "key='{}'", '"{}"', "({}),", "x\n{}\n"])
def test_provider_keys_are_masked_in_any_string(key: str, template: str) -> None:
    text = template.format(key)
    assert scrub_secrets(text) == template.format("[REDACTED]")
    nested = scrub_secrets({"messages": [{"role": "user", "content": text}], "tool_args": [text]})
    assert key[6:] not in json.dumps(nested)


@pytest.mark.parametrize("key", list(PROVIDER_KEYS.values()), ids=list(PROVIDER_KEYS))
@pytest.mark.parametrize("name", ["api_key", "groq_key", "key", "token", "secret", "Authorization", "value"])
def test_provider_keys_are_masked_as_values(key: str, name: str) -> None:
    assert scrub_secrets({name: key}) == {name: "[REDACTED]"}


BASIC = base64.b64encode(b"alice:wonderland-42").decode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # authorization headers written as text: the header name and scheme stay
        (f"Authorization: Basic {BASIC}", "Authorization: Basic [REDACTED]"),
        ("authorization: Token abc123def456ghi789", "authorization: Token [REDACTED]"),
        ("AUTHORIZATION=Digest username=alice, response=6629fae4", "AUTHORIZATION=Digest [REDACTED]"),
        ("Authorization: SSWS 00abcDEF123", "Authorization: SSWS [REDACTED]"),
        ("Authorization: Splunk 1a2b3c d4e5\r\nHost: h", "Authorization: [REDACTED]\r\nHost: h"),
        ("Authorization: hunter2\nnext line", "Authorization: [REDACTED]\nnext line"),
        ("Proxy-Authorization: Basic dXNlcjpwYXNz", "Proxy-Authorization: Basic [REDACTED]"),
        ("x-api-key: abc123XYZ\r\nAccept: */*", "x-api-key: [REDACTED]\r\nAccept: */*"),
        ("api-key: 0123456789abcdef0123456789abcdef", "api-key: [REDACTED]"),
        ("Ocp-Apim-Subscription-Key: 0123abcd", "Ocp-Apim-Subscription-Key: [REDACTED]"),
        ("X-Goog-Api-Key: plainvalue", "X-Goog-Api-Key: [REDACTED]"),
        # name=value, name: value, "name": "value", 'name': 'value' outside URL queries
        ("api_key=hunter2 and more", "api_key=[REDACTED] and more"),
        ("apikey: hunter2", "apikey: [REDACTED]"),
        ("OPENAI_API_KEY=plainsecret", "OPENAI_API_KEY=[REDACTED]"),
        ("export MISTRAL_API_KEY='plain secret'", "export MISTRAL_API_KEY='[REDACTED]'"),
        ('access_token = "opaque.value"', 'access_token = "[REDACTED]"'),
        ("secret=abc", "secret=[REDACTED]"),
        ("client_secret: abc", "client_secret: [REDACTED]"),
        ("password: correct horse battery\nuser: bob", "password: [REDACTED]\nuser: bob"),
        ("passwd=abc", "passwd=[REDACTED]"),
        ("PWD=abc", "PWD=[REDACTED]"),
        ("aws_secret_access_key=wJalr/K7MDENG+bPxRfiCY", "aws_secret_access_key=[REDACTED]"),
        ("token: abcdef123456ghij", "token: [REDACTED]"),
        ('{"api_key": "abc", "model": "gpt-4o"}', '{"api_key": "[REDACTED]", "model": "gpt-4o"}'),
        ('{"password":"pa\\"ss","n":1}', '{"password":"[REDACTED]","n":1}'),
        ('{\\"token\\": \\"abc\\", \\"n\\": 1}', '{\\"token\\": \\"[REDACTED]\\", \\"n\\": 1}'),
        ("Client(api_key='abc', timeout=3)", "Client(api_key='[REDACTED]', timeout=3)"),
        ("password: 'cut before the closing quote", "password: '[REDACTED]"),
        # names ending in a secret word
        ("PGPASSWORD=hunter2Secret99", "PGPASSWORD=[REDACTED]"),
        ("İstanbul: PGPASSWORD=hunter2Secret99", "İstanbul: PGPASSWORD=[REDACTED]"),
        ("export OPENAIAPIKEY=hunter2Secret99", "export OPENAIAPIKEY=[REDACTED]"),
        ("MYAPPTOKEN: abc123 next", "MYAPPTOKEN: [REDACTED] next"),
        ("DBSECRET='x y'", "DBSECRET='[REDACTED]'"),
        # header lines, as the dict-key rule masks their names
        ("X-Custom-Auth: HEADERTOKEN_NU\r\nAccept: */*", "X-Custom-Auth: [REDACTED]\r\nAccept: */*"),
        (
            "{'x-custom-auth': 'HEADERTOKEN_NU', 'Accept': '*/*'}",
            "{'x-custom-auth': '[REDACTED]', 'Accept': '*/*'}",
        ),
        ("basicAuth=abc", "basicAuth=[REDACTED]"),
        ("credentials: s3cr3t", "credentials: [REDACTED]"),
        ("Cookie: sessionid=abc; csrftoken=def\nHost: h", "Cookie: [REDACTED]\nHost: h"),
        ("Set-Cookie: sid=abc; Path=/; HttpOnly", "Set-Cookie: [REDACTED]"),
        ("[('Cookie', 'sid=abc; x=1')]", "[('Cookie', '[REDACTED]')]"),
        # a dict repr and a list of header pairs in an error message
        (
            str(ValueError({"api_key": "abc", "model": "gpt-4o"})),
            "{'api_key': '[REDACTED]', 'model': 'gpt-4o'}",
        ),
        (
            str([("Authorization", "Token abc123"), ("x-api-key", "k1")]),
            "[('Authorization', 'Token [REDACTED]'), ('x-api-key', '[REDACTED]')]",
        ),
        # Azure SAS and other credential URL parameters
        (
            "https://acct.blob.core.windows.net/c/b.pdf?sv=2022-11-02&se=2026&sig=AbC%2Bdef%3D&sp=r",
            "https://acct.blob.core.windows.net/c/b.pdf?sv=2022-11-02&se=2026&sig=[REDACTED]&sp=r",
        ),
        ("GET /x?sig=abc", "GET /x?sig=[REDACTED]"),
        ("https://x/?refresh_token=abc&y=1", "https://x/?refresh_token=[REDACTED]&y=1"),
        ("https://s3/o?X-Amz-Signature=abc123&a=1", "https://s3/o?X-Amz-Signature=[REDACTED]&a=1"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
            "-----BEGIN RSA PRIVATE KEY-----[REDACTED]-----END RSA PRIVATE KEY-----",
        ),
    ],
)
def test_credentials_written_as_text_are_masked(text: str, expected: str) -> None:
    assert scrub_secrets(text) == expected
    assert scrub_secrets({"content": text}) == {"content": expected}


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", "Token abc123def456")],
        [["Authorization", "Basic " + BASIC]],
        [("x-api-key", "plain")],
        [("Cookie", "session=abc")],
        [(b"authorization", b"Bearer abc")],
        (("username", "bob"), ("password", "hunter2")),
    ],
)
def test_headers_as_pairs_are_masked(headers: Any) -> None:
    masked = scrub_secrets({"headers": headers})["headers"]
    secret_pairs = [pair for pair in masked if pair[1] == "[REDACTED]"]
    assert len(secret_pairs) == 1
    for secret in ("abc", "plain", "hunter2", BASIC):
        assert secret not in json.dumps(masked)


def test_weak_secret_keys() -> None:
    # "pass": any string is masked, other values are kept
    assert scrub_secrets({"pass": "hunter2", "db_pass": "x", "passed": "kept"}) == {
        "pass": "[REDACTED]",
        "db_pass": "[REDACTED]",
        "passed": "kept",
    }
    assert scrub_secrets({"pass": True, "fail": False}) == {"pass": True, "fail": False}
    # "key": only values that look generated are masked
    generated = [
        "0123456789abcdef0123456789abcdef",  # Azure OpenAI keys: 32 hex characters
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",  # AWS secret access keys: 40 characters
        "AbCdEf123456GhIjKl789",
    ]
    for value in generated:
        assert scrub_secrets({"key": value, "openai_key": value, "Key": value}) == {
            "key": "[REDACTED]",
            "openai_key": "[REDACTED]",
            "Key": "[REDACTED]",
        }
    ordinary = {
        "key": "value",
        "cache_key": "user:12345:profile:settings",
        "Key": "reports/2024/q1-sales.csv",
        "object_key": "tenants/1234/documents/5678",
        "sort_key": "created_at_descending_order",
        "primary_key": True,
        "partition_key": 42,
        "keys": ["a1b2c3d4e5f6g7h8i9j0"],
    }
    assert scrub_secrets(ordinary) == ordinary
    assert scrub_secrets([("key", "value"), ("token", 5), ("count", "abc")]) == [
        ["key", "value"],
        ["token", 5],
        ["count", "abc"],
    ]


NOT_SECRETS = [
    "max_tokens: 100, input_tokens=5, output_tokens: 7, total_tokens=12, token_type: bearer",
    '{"max_tokens": 1024, "input_tokens": 12, "total_tokens": 40, "token_type": "bearer"}',
    "finish_reason: stop",
    '{"finish_reason": "length", "role": "assistant"}',
    "task-1234567890123456789012345678 and task_1234567890123456789012345678901",
    "skip the risk-free plan; risk-1234567890abcdefghijklmnop is a ticket",
    "gskill gsk gsk_ short, hf_hub_download(repo_id='x'), npm_config_cache, r8_short",
    "reset your password at the portal",
    "The key idea: keep it simple. Press the Enter key to continue.",
    "Which password manager should I use? Tokens are counted per request.",
    "key: value",
    "Token limits apply. Basic understanding of Python helps. The bearer of good news.",
    "The authorization flow is described below.",
    "model gpt-4o, claude-3-5-sonnet-20241022, sonar-pro, llama-3.1-70b-versatile",
    "550e8400-e29b-41d4-a716-446655440000",
    "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
    "chatcmpl-9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c and msg_01XFDUDYJgAACzvnptvVoYEL",
    "https://example.com/search?q=tokens&page=2#results",
    "OAuth: enabled. author: Bob, authority=high, Using OAuth, users sign in.",
    "tokens=5 maxTokens: 7, tokenizer: cl100k",
    "Authorization: \nthe header was empty",
    "http://host:8080/path@v2 and ssh://git@example.com:repo.git",
]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_non_secrets_are_kept(text: str) -> None:
    assert scrub_secrets(text) == text


def test_non_secret_keys_are_kept() -> None:
    value = {
        "max_tokens": 100,
        "input_tokens": 1,
        "total_tokens": 2,
        "token_type": "bearer",
        "finish_reason": "stop",
        "model": "claude-3-5-sonnet",
        "id": "550e8400-e29b-41d4-a716-446655440000",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "content": "reset your password at the portal",
    }
    assert scrub_secrets(value) == value


def test_scrub_secrets_is_fast_on_long_text() -> None:
    text = "The quick brown fox; x = f(a=1) see https://example.com?page=2\n" * 50_000  # ~3 MB
    start = time.perf_counter()
    assert scrub_secrets(text) == text
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize(
    "text",
    [
        '{"role": "user", "content": "the key token: pass-through", "usage": {"total_tokens": 5}}\n' * 30_000,
        "password: " + "a " * 1_000_000,
        "'token', " * 300_000,
        "authorization:" + " " * 2_000_000,
        "sk-gsk_hf_-_" * 200_000,
    ],
    ids=["json", "long password line", "pairs", "spaces", "prefixes"],
)
def test_scrub_secrets_is_fast_on_hostile_text(text: str) -> None:
    start = time.perf_counter()
    scrub_secrets(text)
    assert time.perf_counter() - start < 2


# Adversarial text for every masking rule, by the trigger of its rule (_content's rules and name
# gates). Each rule is built to stay linear: no two ways to split a run between quantifiers that
# backtrack, patterns tried only where their run starts (see the comments in _content). These are
# the inputs that made them backtrack before (a 32 KiB "password=" + spaces + "&" took 20 s, a
# "-eyJ" run 0.5 s) or that would if they lost that property: repeated triggers, long runs after
# one, unclosed quotes, values that fail at the very end.
def _adversarial_cases() -> dict[str, tuple[str, Callable[[int], str]]]:
    def rep(unit: str) -> Callable[[int], str]:
        return lambda n: (unit * (n // len(unit) + 1))[:n]

    def run(head: str, fill: str, tail: str) -> Callable[[int], str]:
        return lambda n: head + rep(fill)(n - len(head) - len(tail)) + tail

    return {
        "sk- prefixes": ("-", rep("-sk-")),
        "short sk- keys": ("-", rep("sk-" + "a" * 19 + " ")),
        "slack prefixes": ("-", rep("-xoxb-")),
        "ghp_ prefixes": ("_", rep("-ghp_")),
        "github_pat_ prefixes": ("_", rep("-github_pat_")),
        "stripe prefixes": ("_", rep("-sk_live_")),
        "short gsk_ keys": ("_", rep("gsk_" + "a" * 19 + " ")),
        "AIza prefixes": ("A", rep("-AIza")),
        "short AKIA ids": ("A", rep("AKIA" + "B" * 15 + " ")),
        "ya29. prefixes": ("ya29.", rep("ya29.")),
        "-eyJ run": (".eyJ", run("", "-eyJ", ".eyJ" + "a" * 8)),
        ".eyJ parts": (".eyJ", rep(".eyJ")),
        "JWT-like parts": (".eyJ", rep("a.eyJ" + "b" * 8)),
        "eyJ run then payload": (".eyJ", run("eyJ", "a", ".eyJ")),
        "?key= parameters": ("=", rep("?key=")),
        "long parameter name": ("=", run("?", "api", "=")),
        "&token parameters": ("=", rep("&tokenx=")),
        "://a: prefixes": ("://", rep("://a:")),
        ":// then colons": ("://", run("://", ":", "")),
        "URL password without @": ("://", run("://a:", "b", "")),
        "bearer words": ("bearer", rep("bearer ")),
        "bearer then spaces": ("bearer", run("bearer", " ", "x")),
        "authorization: repeated": ("authorization", rep("authorization: ")),
        "authorization then spaces": ("authorization", run("authorization:", " ", "\n")),
        "authorization unclosed quote": ("authorization", run("Authorization: '", "x", "\\\n")),
        "authorization quotes": ("authorization", rep("Authorization: '" + "x" * 30)),
        "private key headers": ("key", rep("-----BEGIN PRIVATE KEY-----")),
        "private key long type": ("key", run("-----BEGIN ", "A", " private key-----")),
        "private key long end": ("key", run("-----BEGIN PRIVATE KEY-----\n-----END ", "PRIVATE KEY", "")),
        "api_key unclosed quotes": ("key", rep('api_key="' + "x" * 30)),
        "x-api-key then spaces": ("key", run("x-api-key", " ", "x")),
        "api_key: spaces &": ("key", run("api_key:", " ", "&")),
        "secret= repeated": ("secret", rep("secret=")),
        "token unclosed quote": ("token", run("token: '", "a", "\\\n")),
        "token then spaces": ("token", run("token", " ", "x")),
        "password= spaces &": ("pass", run("password=", " ", "&")),
        "password= tabs": ("pass", run("password=", "\t", "\n")),
        "password= lines": ("pass", rep("password= " + " " * 50)),
        "pwd: repeated": ("pwd", rep("pwd:")),
        "suffix names": ("pwd", rep("xpwdtoken")),
        "auth: spaces &": ("auth", run("X-Auth:", " ", "&")),
        "auth: repeated": ("auth", rep("oauth:")),
        "credentials= tabs": ("credential", run("credentials=", "\t", "\n")),
        "cookie: spaces quote": ("cookie", run("cookie:", " ", "'")),
        # command-line flags (--password X) and curl's -u user:password
        "--password flags": ("-", rep(" --password ")),
        "--password then spaces": ("-", run(" --password", " ", "-")),
        "long flag prefix": ("-", run(" --", "a-", "password")),
        "flag prefix parts": ("-", rep(" --a-b_c-d-token")),
        "dash runs": ("-", rep("-a")),
        "--token prose": ("-", rep(" --token flag ")),
        "--token unclosed quotes": ("-", rep(" --token '--token \"x\\")),
        "--token quote to the end": ("-", run(' --token "', "a", "\\\n")),
        "-u without a password": ("-", rep(" -u a")),
        "-u long user": ("-", run(" -u ", "a", "")),
        "-u uid:gid": ("-", rep(" -u 1:1")),
        "--user= quote": ("-", run(' --user="a:', "b", "\\\n")),
        "GOCSPX- prefixes": ("-", rep("-GOCSPX-")),
        "shpat_ prefixes": ("_", rep("-shpat_")),
        "dop_v1_ prefixes": ("_", rep("-dop_v1_")),
        "SG. prefixes": ("SG.", rep("SG.")),
        "SG. almost keys": ("SG.", rep("SG." + "a" * 22 + ".")),
        "slack hooks": ("://", rep("://hooks.slack.com/services/")),
        "slack hook path": ("://", run("https://hooks.slack.com/services/", "T/", "")),
        "AccountKey= repeated": ("key", rep("AccountKey=")),
        "AccountKey= inside words": ("key", rep("xsharedaccesskey=")),
        "AccountKey long value": ("key", run("AccountKey=", "a", "")),
        "PGP block long body": ("key", run("-----BEGIN PGP PRIVATE KEY BLOCK-----", "a\n", "")),
        "PGP block headers": ("key", rep("private key block-----")),
        # secrets told in prose ("the password is hunter2")
        "password is plain words": ("pass", rep("password is ")),
        "password is long word": ("pass", run("password is ", "a", "")),
        "password for words": ("pass", rep("password for a a a ")),
        "password then spaces prose": ("pass", run("password", " ", "x")),
        "password is unclosed quote": ("pass", run("password is '", "a", "\\\n")),
        "password: repeated": ("pass", rep("password: ")),
        "secret is repeated": ("secret", rep("secret is ")),
        "api key is repeated": ("key", rep("api key is ")),
        "access token is repeated": ("token", rep("access token is ")),
        "token is without a qualifier": ("token", rep("xtoken was set to ")),
        "--token placeholders": ("-", rep(" --token YOUR_TOKEN")),
        "my token: values": ("token", rep("my token: x1 ")),
        "password for many words": ("pass", rep("password for a b c d e ")),
        "password for a long word": ("pass", run("password for ", "a", " is x1")),
    }


ADVERSARIAL = _adversarial_cases()
MAX_MASK_SECONDS = 0.1


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Interrupts the block after ``seconds`` (the regex engine checks for signals): a rule that
    has turned quadratic fails quickly instead of running for minutes."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still masking after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_adversarial_cases_cover_every_masking_rule() -> None:
    triggers = {trigger for trigger, *_ in (*_content._CASED_RULES, *_content._FOLDED_RULES)}
    triggers |= {trigger for trigger, _ in (*_content._NAME_GATES, *_content._PROSE_HEADS)}
    assert triggers <= {trigger for trigger, _ in ADVERSARIAL.values()}


@pytest.mark.parametrize("case", list(ADVERSARIAL))
def test_masking_is_linear_on_adversarial_text(case: str) -> None:
    """128 KiB, four times the default attribute size, masked in well under 0.1 s (a few ms)."""
    trigger, build = ADVERSARIAL[case]
    text = build(4 * DEFAULT_MAX_ATTRIBUTE_LENGTH)
    assert len(text) == 4 * DEFAULT_MAX_ATTRIBUTE_LENGTH
    assert trigger in text or trigger in text.lower()
    elapsed = []
    for _ in range(2):  # the best of two
        # CPU time, not wall time: other processes taking the cores do not count (quadratic
        # rules took seconds of CPU on these inputs; linear ones take a few ms)
        start = time.process_time()
        with _deadline(50 * MAX_MASK_SECONDS):  # wall clock: only stops a runaway rule
            _content._mask(text)
        elapsed.append(time.process_time() - start)
    assert min(elapsed) < MAX_MASK_SECONDS


# --------------------------------------------------------------------------------------
# serialize_content
# --------------------------------------------------------------------------------------
ON = ContentPolicy(mode=CaptureMode.SPAN_ONLY)


def test_serialize_content_leaves_the_mode_to_the_caller() -> None:
    # Callers check policy.mode; the pipeline itself also serves non-content values (document ids).
    text, truncated = serialize_content("k", [{"id": "d1", "score": 0.5}], ContentPolicy())  # type: ignore[misc]
    assert (json.loads(text), truncated) == ([{"id": "d1", "score": 0.5}], False)


def test_serialize_content_scrubs_and_serialises() -> None:
    value = {"query": "weather", "api_key": "hunter2", "note": f"with {SK}", "max_tokens": 100}
    text, truncated = serialize_content("k", value, ON)  # type: ignore[misc]
    assert json.loads(text) == {
        "query": "weather",
        "api_key": "[REDACTED]",
        "note": "with [REDACTED]",
        "max_tokens": 100,
    }
    assert not truncated
    text, _ = serialize_content("k", "plain text", ON)  # type: ignore[misc]
    assert text == "plain text"  # plain text stays plain text


def test_serialize_content_huge_input() -> None:
    policy = ContentPolicy(mode=CaptureMode.SPAN_AND_EVENT, max_attribute_length=2048)
    messages = [
        {"role": "user", "parts": [{"type": "text", "content": "x" * (50 * MB)}]},
        {"role": "user", "parts": [{"type": "text", "content": f"my key is {SK_ANT}"}]},
    ]
    start = time.perf_counter()
    text, truncated = serialize_content("input", messages, policy)  # type: ignore[misc]
    assert time.perf_counter() - start < 2
    assert truncated
    data = _check_bounded(text, 2048)
    assert data[1]["parts"][0]["content"] == "my key is [REDACTED]"
    assert SK_ANT[10:30] not in text


def test_secret_across_the_cut_is_still_masked() -> None:
    policy = ContentPolicy(mode=CaptureMode.SPAN_ONLY, max_attribute_length=1000)
    text, truncated = serialize_content("k", "a" * 990 + " " + SK, policy)  # type: ignore[misc]
    assert truncated
    assert SK[:12] not in text
    assert len(text) <= 1000


def test_redact_hook_changes_the_value() -> None:
    seen = []

    def redact(key: str, value: Any) -> Any:
        seen.append((key, value))
        return [{**message, "parts": [{"type": "text", "content": "[removed]"}]} for message in value]

    policy = ContentPolicy(mode=CaptureMode.SPAN_ONLY, redact=redact)
    messages = [{"role": "user", "parts": [{"type": "text", "content": "my SSN is 123-45-6789"}]}]
    text, truncated = serialize_content("input", messages, policy)  # type: ignore[misc]
    assert json.loads(text) == [{"role": "user", "parts": [{"type": "text", "content": "[removed]"}]}]
    assert not truncated
    # The hook receives plain JSON-like data, secrets already masked.
    assert seen == [("input", messages)]
    serialize_content("args", {"password": "p", "obj": Point(1)}, policy)
    assert seen[-1] == ("args", {"password": "[REDACTED]", "obj": {"x": 1, "y": None}})


def test_redact_hook_returning_none_drops_the_content() -> None:
    policy = ContentPolicy(mode=CaptureMode.SPAN_ONLY, redact=lambda key, value: None)
    assert serialize_content("k", {"a": 1}, policy) is None


def test_redact_hook_raising_drops_the_content_with_one_warning(caplog) -> None:
    def broken(key: str, value: Any) -> Any:
        raise KeyError("private detail 123-45-6789")

    policy = ContentPolicy(mode=CaptureMode.SPAN_ONLY, redact=broken)
    with caplog.at_level(logging.WARNING, logger=_content.__name__):
        first = serialize_content("input", [{"content": "private"}], policy)
        second = serialize_content("input", [{"content": "private"}], policy)
    assert first == ("[redaction failed]", False)
    assert second == first
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "broken" in warnings[0].getMessage()
    assert "123-45-6789" not in warnings[0].getMessage()


def test_redact_hook_returning_unserialisable_objects() -> None:
    policy = ContentPolicy(
        mode=CaptureMode.SPAN_ONLY,
        max_attribute_length=100,
        redact=lambda key, value: {"obj": RaisingRepr(), "long": "z" * 1000},
    )
    text, truncated = serialize_content("k", "x", policy)  # type: ignore[misc]
    assert truncated
    assert _check_bounded(text, 100)["obj"] == "<RaisingRepr>"


def test_secrets_are_masked_on_a_real_chat_span(telemetry_handler, span_exporter, content_capture) -> None:
    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_ONLY)
    groq_key = PROVIDER_KEYS["groq"]
    inv = telemetry_handler.start_chat("llama-3.3-70b-versatile", provider=sc.PROVIDER_GROQ)
    inv.input_messages = [
        {"role": "system", "parts": [{"type": "text", "content": "You call APIs. max_tokens: 100"}]},
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": f"my Groq key is {groq_key}, please keep it"},
                {"type": "text", "content": f"then send\nAuthorization: Basic {BASIC}\nAccept: */*"},
            ],
        },
    ]
    inv.stop()
    (span,) = span_exporter.get_finished_spans()
    text = span.attributes[sc.GEN_AI_INPUT_MESSAGES]
    assert groq_key[4:] not in text
    assert BASIC not in text
    assert json.loads(text) == [
        {"role": "system", "parts": [{"type": "text", "content": "You call APIs. max_tokens: 100"}]},
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "my Groq key is [REDACTED], please keep it"},
                {"type": "text", "content": "then send\nAuthorization: Basic [REDACTED]\nAccept: */*"},
            ],
        },
    ]


# --------------------------------------------------------------------------------------
# Inline media
# --------------------------------------------------------------------------------------
PNG = base64.b64encode(b"\x89PNG" + bytes(range(256)) * 40).decode()  # 10,244 bytes, 13,660 characters
PNG_URL = f"data:image/png;base64,{PNG}"
PNG_OMITTED = "data:image/png;base64,[10244 bytes omitted]"


def test_data_urls_are_recorded_as_their_size() -> None:
    messages = [
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": f"look: {PNG_URL} and tell me"},
                {"type": "uri", "modality": "image", "uri": PNG_URL},
            ],
        },
        {
            "role": "tool",
            "parts": [
                {"type": "tool_call_response", "id": "c1", "response": {"screenshot": PNG_URL, "ok": True}}
            ],
        },
    ]
    text, truncated = serialize_content(sc.GEN_AI_INPUT_MESSAGES, messages, ON)  # type: ignore[misc]
    assert json.loads(text) == [
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": f"look: {PNG_OMITTED} and tell me"},
                {"type": "uri", "modality": "image", "uri": PNG_OMITTED},
            ],
        },
        {
            "role": "tool",
            "parts": [
                {
                    "type": "tool_call_response",
                    "id": "c1",
                    "response": {"screenshot": PNG_OMITTED, "ok": True},
                }
            ],
        },
    ]
    assert not truncated
    # a string result stays plain text; several URLs, with media type parameters
    text, _ = serialize_content(  # type: ignore[misc]
        sc.GEN_AI_TOOL_CALL_RESULT, f"a {PNG_URL}, b data:image/jpeg;name=x.jpg;base64,{'A' * 68}=", ON
    )
    assert text == f"a {PNG_OMITTED}, b data:image/jpeg;name=x.jpg;base64,[51 bytes omitted]"


def test_media_larger_than_the_attribute_is_replaced_before_the_cut() -> None:
    image = base64.b64encode(bytes(5 * MB)).decode()  # 6,990,508 characters
    value = [{"type": "text", "content": f"before data:image/jpeg;base64,{image} after"}]
    start = time.perf_counter()
    text, truncated = serialize_content(sc.GEN_AI_INPUT_MESSAGES, value, ON)  # type: ignore[misc]
    assert time.perf_counter() - start < 2
    assert json.loads(text) == [
        {"type": "text", "content": "before data:image/jpeg;base64,[5242880 bytes omitted] after"}
    ]
    assert not truncated


def test_blob_parts_are_recorded_as_their_size() -> None:
    blob = {"type": "blob", "modality": "image", "mime_type": "image/png", "content": PNG}
    raw = {"type": "blob", "modality": "audio", "mime_type": "audio/wav", "content": bytes(1000)}
    small = {"type": "blob", "modality": "image", "content": "aGVsbG8="}
    message = [{"role": "user", "parts": [blob, raw, small, {"type": "text", "content": "describe"}]}]
    text, truncated = serialize_content(sc.GEN_AI_INPUT_MESSAGES, message, ON)  # type: ignore[misc]
    assert json.loads(text) == [
        {
            "role": "user",
            "parts": [
                {
                    "type": "blob",
                    "modality": "image",
                    "mime_type": "image/png",
                    "content": "[10244 bytes omitted]",
                },
                {
                    "type": "blob",
                    "modality": "audio",
                    "mime_type": "audio/wav",
                    "content": "[1000 bytes omitted]",
                },
                small,
                {"type": "text", "content": "describe"},
            ],
        }
    ]
    assert not truncated
    assert blob["content"] == PNG  # the input is not modified


@pytest.mark.parametrize(
    "text",
    [
        "data:text/plain;base64,SGVsbG8sIHdvcmxkIQ==",  # short: kept
        f"data:image/png;base64,{'A' * 64}",
        "the string base64, then data: and no URL",
        f"image/png;base64,{PNG}",  # no data: before it
        f"data:image/png;charset=x y;base64,{PNG}",  # a space: not a data: URL
    ],
)
def test_what_is_not_inline_media_is_kept(text: str) -> None:
    assert serialize_content("k", text, ON) == (text, False)


def test_media_is_looked_for_only_where_it_could_be_recorded(monkeypatch) -> None:
    calls: list[int] = []
    real = _content._elide_media

    def counted(text: str, window: int) -> str:
        calls.append(len(text))
        return real(text, window)

    monkeypatch.setattr(_content, "_elide_media", counted)
    document = "lorem ipsum; dolor, sit amet " * 400_000  # 11.6 MB, no media
    serialize_content("k", [{"type": "text", "content": document}], ON)
    serialize_content("k", ["short; text"] * 100, ON)
    # a data URL beyond what is kept of the string (32 KiB) would be cut anyway
    serialize_content("k", [document + PNG_URL], ON)
    assert calls == []
    serialize_content("k", [PNG_URL + document], ON)
    assert calls == [len(PNG_URL + document)]
