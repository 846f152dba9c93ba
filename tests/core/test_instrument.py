"""llmtrace.instrument() / uninstrument(): discovery by entry point, disabling, idempotence."""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint

import pytest

import llmtrace
from llmtrace import _instrument
from llmtrace import semconv as sc


@pytest.fixture(autouse=True)
def clean_instrumentation():
    llmtrace.uninstrument()
    yield
    llmtrace.uninstrument()


def test_installed_integrations_are_found_by_entry_point(tracer_provider, meter_provider):
    names = {ep.name for ep in _instrument._entry_points(())}
    assert {"langchain", "llama_index"} <= names
    done = llmtrace.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    assert sorted(done) == ["langchain", "llama_index"]
    assert sorted(llmtrace.instrument()) == ["langchain", "llama_index"]  # idempotent
    assert sorted(llmtrace.uninstrument()) == ["langchain", "llama_index"]
    assert llmtrace.uninstrument() == []


def test_only_named_integrations(tracer_provider):
    assert llmtrace.instrument("langchain", tracer_provider=tracer_provider) == ["langchain"]
    assert llmtrace.uninstrument("llama_index") == []
    assert llmtrace.uninstrument("langchain") == ["langchain"]


def test_unknown_name_is_skipped_quietly(caplog):
    with caplog.at_level(logging.INFO, logger="llmtrace"):
        assert llmtrace.instrument("crewai") == []
    assert "no integration named 'crewai'" in caplog.text


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("LLMTRACE_DISABLED_INSTRUMENTATIONS", " llama_index , other")
    assert llmtrace.instrument() == ["langchain"]
    monkeypatch.setenv("LLMTRACE_DISABLED_INSTRUMENTATIONS", "*")
    assert llmtrace.instrument() == []


def test_missing_framework_is_skipped_not_raised(monkeypatch):
    ghost = EntryPoint(
        name="ghost",
        value="llmtrace_ghost_integration:GhostInstrumentor",
        group=sc.INSTRUMENTORS_ENTRY_POINT_GROUP,
    )
    real = _instrument._entry_points

    monkeypatch.setattr(_instrument, "_entry_points", lambda names: [ghost, *real(names)])
    assert sorted(llmtrace.instrument()) == ["langchain", "llama_index"]


def test_broken_integration_is_contained(monkeypatch, caplog):
    broken = EntryPoint(name="broken", value="json:loads", group=sc.INSTRUMENTORS_ENTRY_POINT_GROUP)
    monkeypatch.setattr(_instrument, "_entry_points", lambda names: [broken])
    assert llmtrace.instrument() == []  # json.loads() raises TypeError: reported, not raised
    assert "llmtrace internal error in instrument(broken)" in caplog.text


@pytest.fixture
def unwarned(monkeypatch):
    """The once-per-value warning about unknown disabled names not given yet in this process."""
    monkeypatch.setattr(_instrument, "_warned_disabled", None)


@pytest.mark.parametrize("value", ["llama-index", "LLAMA_INDEX", " Llama-Index ", "llama.index"])
def test_disabled_names_are_matched_as_package_names(monkeypatch, caplog, unwarned, value):
    monkeypatch.setenv("LLMTRACE_DISABLED_INSTRUMENTATIONS", value)
    with caplog.at_level(logging.WARNING, logger="llmtrace"):
        assert llmtrace.instrument() == ["langchain"]
    assert caplog.records == []  # a known name, in another spelling: no warning


def test_an_unknown_disabled_name_is_warned_about_once(monkeypatch, caplog, unwarned):
    monkeypatch.setenv("LLMTRACE_DISABLED_INSTRUMENTATIONS", "LangChain,crewai,llama-indexx")
    with caplog.at_level(logging.WARNING, logger="llmtrace"):
        assert llmtrace.instrument() == ["llama_index"]
        assert llmtrace.uninstrument() == ["llama_index"]
        assert llmtrace.instrument() == ["llama_index"]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "llmtrace: LLMTRACE_DISABLED_INSTRUMENTATIONS names no integration: 'crewai', "
            "'llama-indexx' (ignored; integrations: langchain, llama_index)",
        )
    ]


def test_a_shipped_integration_that_is_not_installed_is_no_typo(monkeypatch, caplog, unwarned):
    """``llama_index`` in the variable of an application with only the LangChain integration is
    not a typo: no warning (the entry points seen are LangChain's only)."""
    from llmtrace._instrument import entry_points as real_entry_points

    def langchain_only(group):
        return [ep for ep in real_entry_points(group=group) if ep.name == "langchain"]

    monkeypatch.setattr(_instrument, "entry_points", langchain_only)
    monkeypatch.setenv("LLMTRACE_DISABLED_INSTRUMENTATIONS", "llama-index")
    with caplog.at_level(logging.WARNING, logger="llmtrace"):
        assert llmtrace.instrument() == ["langchain"]
    assert caplog.records == []


def test_names_given_to_instrument_are_matched_as_package_names(tracer_provider):
    assert llmtrace.instrument("Llama-Index", tracer_provider=tracer_provider) == ["llama_index"]
    assert llmtrace.uninstrument("llama-index") == ["llama_index"]
