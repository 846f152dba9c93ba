"""A LangChain chat model whose model name carries credentials (a Hugging Face endpoint URL with a
token, a key in a query parameter) and whose API base URL has a user and password: no credential
reaches a span name, a span attribute, a metric data point, a usage record, llmtrace's logs or the
SQLite store, and the masked names are the ones recorded."""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from pathlib import Path

from llmtrace import semconv as sc
from llmtrace.store import open_store, span_to_record
from tests.conftest import metric_attributes

from .conftest import attrs
from .fakes import ScriptedChatModel, answer

# Fake credentials, built by concatenation so that secret scanners do not take this file for a leak.
TOKEN = "hf" + "_" + "Fake0123456789abcdefghijklmnopqrstu"
KEY = "sk-" + "proj-" + "Fake0123456789abcdefghijklmn"
PASSWORD = "S3cret" + "Pw9"
LEAKS = (TOKEN, KEY, PASSWORD, "Fake0123456789")

MODEL = f"https://user:{TOKEN}@my-endpoint.example/models/llama?api_key={KEY}"
MASKED_MODEL = "https://my-endpoint.example/models/llama?api_key=[REDACTED]"
RESPONSE_MODEL = f"https://{TOKEN}@tgi.example/llama-3"
MASKED_RESPONSE_MODEL = "https://tgi.example/llama-3"


class EndpointChatModel(ScriptedChatModel):
    """A scripted model with an API base URL, serialisable so that LangChain hands its constructor
    arguments to the callbacks (where llmtrace reads the server address)."""

    openai_api_base: str = f"https://admin:{PASSWORD}@gateway.example:8443/v1"

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True


def _stored(path: Path) -> str:
    """Every row of every table of the SQLite store, as text."""
    connection = sqlite3.connect(path)
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()


def _leaks(text: str) -> list[str]:
    return [secret for secret in LEAKS if secret in text]


def test_credentials_in_a_model_name_reach_no_record(
    handler, span_exporter, metric_reader, records, caplog, tmp_path
):
    caplog.set_level(logging.DEBUG, logger="llmtrace")
    model = EndpointChatModel(model=MODEL, script=[answer("hello", model_name=RESPONSE_MODEL)])
    assert model.invoke("hi", config={"callbacks": [handler]}).content == "hello"

    (span,) = span_exporter.get_finished_spans()
    span_attributes = attrs(span)
    metrics = metric_attributes(metric_reader)
    (record,) = records
    store = open_store(tmp_path / "traces.db")
    try:
        store.write([span_to_record(span)], [record])
    finally:
        store.close()
    stored = _stored(tmp_path / "traces.db")

    assert span.name == f"chat {MASKED_MODEL}"
    assert span_attributes[sc.GEN_AI_REQUEST_MODEL] == MASKED_MODEL
    assert span_attributes[sc.GEN_AI_RESPONSE_MODEL] == MASKED_RESPONSE_MODEL
    assert (span_attributes[sc.SERVER_ADDRESS], span_attributes[sc.SERVER_PORT]) == ("gateway.example", 8443)
    assert metrics
    for attributes in metrics:
        assert attributes[sc.GEN_AI_REQUEST_MODEL] == MASKED_MODEL
        assert attributes[sc.GEN_AI_RESPONSE_MODEL] == MASKED_RESPONSE_MODEL
    assert (record.request_model, record.response_model) == (MASKED_MODEL, MASKED_RESPONSE_MODEL)
    assert MASKED_MODEL in stored and MASKED_RESPONSE_MODEL in stored

    assert _leaks(span.name) == []
    assert _leaks(json.dumps(span_attributes, default=repr)) == []
    assert _leaks(json.dumps([dict(e.attributes or {}) for e in span.events], default=repr)) == []
    assert _leaks(json.dumps(metrics, default=repr)) == []
    assert _leaks(json.dumps(dataclasses.asdict(record), default=repr)) == []
    assert _leaks(caplog.text) == []
    assert _leaks(stored) == []
