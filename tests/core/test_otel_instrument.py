"""llmtrace's exporter names under ``opentelemetry-instrument`` (the SDK's own configuration).

The SDK's configurator looks every name of ``OTEL_TRACES_EXPORTER`` / ``OTEL_LOGS_EXPORTER`` up in
an entry-point group; before llmtrace registered ``store`` and ``jsonl`` there, a name the docs
recommend (``OTEL_TRACES_EXPORTER=otlp,store``) made the configurator fail and install nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmtrace import semconv as sc

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the venv's scripts are .exe files there")

CONFIGURATOR_FAILED = ("Configuration of configurator failed", "Failed to auto initialize")

APP = """
import llmtrace
inv = llmtrace.TelemetryHandler().start_chat("gpt-4o", provider="openai")
inv.set_usage(input_tokens=3, output_tokens=4)
inv.stop()
llmtrace.record_evaluation("relevance", score=0.75, trace_id="0" * 31 + "1", span_id="0" * 15 + "2")
print("app done", flush=True)
"""


def _instrumented(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(APP))
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMTRACE_"))}
    full_env.update({"OTEL_SERVICE_NAME": "instrumented", "OTEL_METRICS_EXPORTER": "none", **env})
    return subprocess.run(
        [str(instrument), sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        cwd=tmp_path,
    )


def test_store_and_console_under_opentelemetry_instrument(tmp_path):
    db = tmp_path / "traces.db"
    result = _instrumented(
        tmp_path,
        {"OTEL_TRACES_EXPORTER": "console,store", "OTEL_LOGS_EXPORTER": "none", "LLMTRACE_STORE": str(db)},
    )
    assert result.returncode == 0, result.stderr
    for failure in CONFIGURATOR_FAILED:
        assert failure not in result.stderr
    assert "app done" in result.stdout
    assert '"name": "chat gpt-4o"' in result.stdout  # the SDK's console exporter, beside the store
    with sqlite3.connect(db) as conn:
        spans = conn.execute("SELECT name, resource FROM spans").fetchall()
        usage = conn.execute(
            "SELECT request_model, input_tokens, output_tokens, service FROM usage"
        ).fetchall()
    assert [name for name, _ in spans] == ["chat gpt-4o"]
    assert json.loads(spans[0][1])["service.name"] == "instrumented"
    assert usage == [("gpt-4o", 3, 4, "instrumented")]  # usage records go to the store too


def test_jsonl_spans_and_events_under_opentelemetry_instrument(tmp_path):
    path = tmp_path / "out" / "telemetry.jsonl"
    result = _instrumented(
        tmp_path,
        {
            "OTEL_TRACES_EXPORTER": "jsonl",
            "OTEL_LOGS_EXPORTER": "jsonl",
            "LLMTRACE_JSONL_PATH": str(path),
            "LLMTRACE_STORE": str(tmp_path / "unused.db"),
        },
    )
    assert result.returncode == 0, result.stderr
    for failure in CONFIGURATOR_FAILED:
        assert failure not in result.stderr
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["name"] for line in lines if "name" in line and "context" in line] == ["chat gpt-4o"]
    events = [line for line in lines if line.get("event_name") or "body" in line]
    assert [event.get("event_name") for event in events] == [sc.EVENT_EVALUATION_RESULT]
    assert not (tmp_path / "unused.db").exists()  # jsonl only: no store


def test_store_keeps_evaluations_under_opentelemetry_instrument(tmp_path):
    # OTEL_LOGS_EXPORTER=store: the evaluation event reaches the store through the writer the
    # span exporter made (one writer for both names)
    db = tmp_path / "traces.db"
    result = _instrumented(
        tmp_path,
        {"OTEL_TRACES_EXPORTER": "store", "OTEL_LOGS_EXPORTER": "store", "LLMTRACE_STORE": str(db)},
    )
    assert result.returncode == 0, result.stderr
    for failure in CONFIGURATOR_FAILED:
        assert failure not in result.stderr
    with sqlite3.connect(db) as conn:
        spans = conn.execute("SELECT name FROM spans").fetchall()
        evaluations = conn.execute(
            "SELECT trace_id, span_id, name, score, service FROM evaluations"
        ).fetchall()
    assert spans == [("chat gpt-4o",)]
    assert evaluations == [("0" * 31 + "1", "0" * 15 + "2", "relevance", 0.75, "instrumented")]
