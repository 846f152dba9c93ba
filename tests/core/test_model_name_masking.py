"""Credentials in model names and server addresses: a model given as a URL with a token in it
(``https://user:token@host/model``, ``...?api_key=...``) or a key pasted into a model string never
reaches a span name, a span or metric attribute, a usage record, the details event or a log; plain
model names are recorded byte for byte. The masking rules themselves are test_masking's."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import pytest

from llmtrace import _content
from llmtrace import semconv as sc
from llmtrace._content import CaptureMode, ContentPolicy, mask_name
from tests.conftest import metric_attributes

# Fake credentials, built by concatenation so that secret scanners do not take this file for a leak.
TOKEN = "hf" + "_" + "Fake0123456789abcdefghijklmnopqrstu"
KEY = "sk-" + "proj-" + "Fake0123456789abcdefghijklmn"
PASSWORD = "S3cret" + "Pw9"
LEAKS = (TOKEN, KEY, PASSWORD, "Fake0123456789")

SECRET_MODEL = f"https://user:{PASSWORD}@my-endpoint.example/models/llama?api_key={KEY}"
MASKED_MODEL = "https://my-endpoint.example/models/llama?api_key=[REDACTED]"
SECRET_RESPONSE_MODEL = f"https://{TOKEN}@tgi.example/llama-3"
MASKED_RESPONSE_MODEL = "https://tgi.example/llama-3"

ORDINARY_NAMES = [
    "gpt-4o-mini",
    "claude-3-5-sonnet-20241022",
    "models/gemini-2.0-flash",
    "meta-llama/Llama-3.1-8B-Instruct",
    "ft:gpt-4o-mini:org:custom:id",
    "accounts/fireworks/models/x",
    "anthropic.claude-3-haiku-20240307-v1:0",
    "azure/my-deployment",
    "claude-3-5-sonnet-v2@20241022",  # Vertex AI: an @ that is no userinfo
    "vertex_ai/claude-3-5-sonnet-v2@20241022",
    "bedrock/us.anthropic.claude-3-5-sonnet-20241022-v2:0",
    "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
    "ollama/llama3.1:8b",
    "text-embedding-3-small",
    "https://api-inference.huggingface.co/models/meta-llama/Llama-3.1-8B-Instruct",
    "http://localhost:8080/v1?api-version=2024-02-01",
    "my-resource.openai.azure.com",
    "127.0.0.1",
]


def _no_leak(*recorded: Any) -> None:
    dumped = json.dumps(recorded, default=repr)
    for secret in LEAKS:
        assert secret not in dumped


# --------------------------------------------------------------------------------------
# mask_name
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ORDINARY_NAMES)
def test_ordinary_names_are_kept_byte_for_byte(name: str) -> None:
    """A guard: these pass on the code before names were masked, and must stay so."""
    assert mask_name(name, 256) == name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (f"https://user:{PASSWORD}@host.example/model", "https://host.example/model"),
        (f"https://{TOKEN}@host.example/model", "https://host.example/model"),  # a user alone
        (f"https://a:b@{PASSWORD}@host.example/m", "https://host.example/m"),  # to the last @
        (f"redis://:{PASSWORD}@cache:6379", "redis://cache:6379"),
        (f"http://x/v1?api_key={KEY}", "http://x/v1?api_key=[REDACTED]"),
        (f"http://x/v1?key={PASSWORD}&api-version=1", "http://x/v1?key=[REDACTED]&api-version=1"),
        (f"gpt-4o?access_token={PASSWORD}", "gpt-4o?access_token=[REDACTED]"),
        (f"openai/{KEY}", "openai/[REDACTED]"),  # a LiteLLM model string with a key pasted in
        (f"huggingface/{TOKEN}/llama", "huggingface/[REDACTED]/llama"),
        (SECRET_MODEL, MASKED_MODEL),
    ],
)
def test_credentials_in_names_are_masked(name: str, expected: str) -> None:
    assert mask_name(name, 256) == expected


def test_a_name_is_masked_before_it_is_cut() -> None:
    """A key across the 256th character is masked, not cut in two with its start recorded."""
    name = "m" * 200 + f"?api_key={KEY}"
    assert mask_name(name, 256) == "m" * 200 + "?api_key=[REDACTED]"
    assert mask_name("x" * 250 + f"/{KEY}", 256) == "x" * 250 + "/[REDA"


def test_the_cache_of_masked_names_is_bounded_and_keeps_no_huge_key() -> None:
    for index in range(3000):
        assert mask_name(f"model-{index}", 256) == f"model-{index}"
    assert len(_content._masked_names) <= 1024
    huge = "gpt-" + "x" * 100_000
    assert mask_name(huge, 256) == huge[:256]
    assert max(len(key) for key in _content._masked_names) <= 1024


def test_a_str_subclass_is_masked_as_a_plain_string() -> None:
    class Evil(str):
        def __hash__(self) -> int:
            raise RuntimeError("no hash")

    masked = mask_name(Evil(f"https://u:{PASSWORD}@h/m"), 256)
    assert (masked, type(masked)) == ("https://h/m", str)


# --------------------------------------------------------------------------------------
# Everything a model call records
# --------------------------------------------------------------------------------------
def test_a_model_call_records_no_credential_anywhere(
    telemetry_handler, span_exporter, metric_reader, log_exporter, content_capture, records, caplog
):
    """Span name, span attributes, the details event, every metric data point, the usage record and
    llmtrace's own logs (the price look-up logs the model it has no price for)."""
    content_capture.content = ContentPolicy(mode=CaptureMode.EVENT_ONLY)
    caplog.set_level(logging.DEBUG, logger="llmtrace")
    inv = telemetry_handler.start_chat(
        SECRET_MODEL, provider="openai", server_address=f"https://u:{PASSWORD}@gw.example", server_port=443
    )
    inv.response_model = SECRET_RESPONSE_MODEL
    inv.set_usage(input_tokens=10, output_tokens=5)
    inv.stop()

    (span,) = span_exporter.get_finished_spans()
    (log,) = log_exporter.get_finished_logs()
    (record,) = records
    event = dict(log.log_record.attributes or {})
    metrics = metric_attributes(metric_reader)
    _no_leak(span.name, dict(span.attributes or {}), event, metrics, dataclasses.asdict(record), caplog.text)

    assert span.name == f"chat {MASKED_MODEL}"
    for attributes in (dict(span.attributes or {}), event):
        assert attributes[sc.GEN_AI_REQUEST_MODEL] == MASKED_MODEL
        assert attributes[sc.GEN_AI_RESPONSE_MODEL] == MASKED_RESPONSE_MODEL
        assert attributes[sc.SERVER_ADDRESS] == "https://gw.example"
    assert (record.request_model, record.response_model) == (MASKED_MODEL, MASKED_RESPONSE_MODEL)
    assert metrics
    for attributes in metrics:
        assert attributes[sc.GEN_AI_REQUEST_MODEL] == MASKED_MODEL
        assert attributes[sc.GEN_AI_RESPONSE_MODEL] == MASKED_RESPONSE_MODEL
    assert MASKED_RESPONSE_MODEL in caplog.text  # the price look-up saw the masked name


def test_plain_names_reach_every_record_unchanged(telemetry_handler, span_exporter, metric_reader, records):
    """A guard: the name a user gave is the name recorded."""
    inv = telemetry_handler.start_chat("claude-3-5-sonnet-v2@20241022", provider="gcp.vertex_ai")
    inv.response_model = "claude-3-5-sonnet-v2@20241022"
    inv.stop()
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "chat claude-3-5-sonnet-v2@20241022"
    assert records[0].request_model == records[0].response_model == "claude-3-5-sonnet-v2@20241022"
    assert {a[sc.GEN_AI_REQUEST_MODEL] for a in metric_attributes(metric_reader)} == {
        "claude-3-5-sonnet-v2@20241022"
    }


def test_agent_retrieval_rerank_and_embeddings_models(telemetry_handler, span_exporter):
    telemetry_handler.start_agent("helper", request_model=SECRET_MODEL).stop()
    telemetry_handler.start_retrieval("docs", request_model=f"openai/{KEY}").stop()
    telemetry_handler.start_rerank(SECRET_RESPONSE_MODEL, provider="cohere").stop()
    telemetry_handler.start_embeddings(SECRET_MODEL, provider="openai").stop()
    spans = span_exporter.get_finished_spans()
    _no_leak([(s.name, dict(s.attributes or {})) for s in spans])
    assert [(s.name, (s.attributes or {}).get(sc.GEN_AI_REQUEST_MODEL)) for s in spans] == [
        ("invoke_agent helper", MASKED_MODEL),
        ("retrieval docs", "openai/[REDACTED]"),
        (f"rerank {MASKED_RESPONSE_MODEL}", MASKED_RESPONSE_MODEL),
        (f"embeddings {MASKED_MODEL}", MASKED_MODEL),
    ]
