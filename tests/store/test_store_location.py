"""Where ``LLMTRACE_STORE`` puts the store: a path or URL, ``off`` (and its synonyms), or ``true``
(and its synonyms) for the default location, alike in ``configure()`` and on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmtrace
from llmtrace._config import _store_url
from llmtrace.store._open import DEFAULT_PATH, ENV_VAR, default_store_url, env_store, env_store_off

ON_VALUES = ("true", "TRUE", " True ", "1", "yes", "Yes", "on", "ON")


@pytest.mark.parametrize("value", ON_VALUES)
def test_a_true_value_means_the_default_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, value)
    default = str(tmp_path / DEFAULT_PATH)
    assert (env_store(), env_store_off()) == (None, False)
    assert default_store_url() == default  # the command line reads it there
    assert _store_url(None) == default  # configure() writes it there
    assert _store_url(True) == default  # as configure(store=True)


def test_configure_with_store_true_writes_the_default_store_and_no_file_named_true(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, "true")
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    pipeline = llmtrace.configure(set_global=False)
    try:
        assert pipeline.exporters == ("store",)
        assert pipeline.store_writer is not None
        assert pipeline.store_writer.store_url == str(tmp_path / DEFAULT_PATH)
        handler = llmtrace.TelemetryHandler(
            tracer_provider=pipeline.tracer_provider, meter_provider=pipeline.meter_provider
        )
        handler.start_chat("gpt-4o", provider="openai").stop()
        assert pipeline.force_flush()
    finally:
        pipeline.shutdown()
    assert (tmp_path / DEFAULT_PATH).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [DEFAULT_PATH.parts[0]]  # no ./true


def test_a_path_given_in_code_is_a_path_even_when_it_reads_true(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``configure(store="true")`` names a file: only the variable, a switch as much as a
    location, gives true/false a meaning."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert _store_url("true") == str(tmp_path / "true")


@pytest.mark.parametrize("value", ["off", " OFF ", "0", "false", "no", "none"])
def test_an_off_value_switches_the_store_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ENV_VAR, value)
    assert (env_store(), env_store_off()) == (None, True)


@pytest.mark.parametrize("value", ["truely.db", "on.db", "yes/traces.db", "postgresql://h/db"])
def test_other_values_are_locations(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ENV_VAR, f" {value} ")
    assert (env_store(), env_store_off()) == (value, False)
