"""What the traced application wrote (span names, error messages, model names) is printed as text:
terminal escape sequences and Rich markup in it never reach the operator's terminal as such."""

from __future__ import annotations

from dataclasses import replace

from click.testing import CliRunner

from llmtrace import semconv as sc
from llmtrace.cli import cli
from llmtrace.store import SpanEvent
from llmtrace.store._sqlite import SqliteStore
from tests.store.dataset import all_spans, all_usage

EVIL = "\x1b[2J\x1b]0;PWNED\x1b\\\x9b31m\u202e[link=https://evil.example]click[/link]"


def _store(tmp_path) -> tuple[str, str]:
    path = str(tmp_path / "traces.db")
    spans, usage = all_spans(), all_usage()
    root = next(s for s in spans if s.parent_span_id is None)
    evil_root = replace(
        root,
        name=f"invoke_agent {EVIL}",
        status_code="ERROR",
        status_message=EVIL,
        attributes={**root.attributes, sc.ERROR_TYPE: EVIL},
        events=(SpanEvent(sc.EVENT_EXCEPTION, root.start_ns, {sc.EXCEPTION_MESSAGE: EVIL}),),
        resource={**root.resource, sc.SERVICE_NAME: EVIL},
    )
    spans = [evil_root if s is root else s for s in spans]
    usage = [replace(usage[0], request_model=EVIL, response_model=EVIL), *usage[1:]]
    store = SqliteStore(path)
    store.write(spans, usage)
    store.close()
    return path, root.trace_id


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), prog_name="llmtrace", color=True)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_control_characters_and_markup_are_shown_escaped(tmp_path):
    store, trace_id = _store(tmp_path)
    outputs = {
        "traces": _run("--store", store, "traces", "--since", "2000-01-01"),
        "show": _run("--store", store, "show", trace_id),
        "stats": _run("--store", store, "stats", "--since", "2000-01-01"),
    }
    for command, out in outputs.items():
        assert "\x9b" not in out and "\u202e" not in out and "PWNED\x1b" not in out, command
        assert "\x1b[2J" not in out and "\x1b]0;" not in out, command
        unstyled = out.replace("\n", "")
        for code in ("\x1b[0m", "\x1b[1m", "\x1b[2m", "\x1b[31m", "\x1b[32m", "\x1b[35m", "\x1b[36m"):
            unstyled = unstyled.replace(code, "")  # the styles llmtrace itself applies
        assert r"\x1b[2J" in unstyled, command
    show = outputs["show"]
    assert show.count(r"\x1b]0;PWNED") >= 3  # the name, the error and the exception event, escaped
    assert "[link=https://evil.example]click[/link]" in show  # markup printed as typed, not a link
    assert "\x1b]8;" not in show  # no hyperlink escape
