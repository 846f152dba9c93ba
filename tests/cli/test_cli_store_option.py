"""``--store`` before the command name or after it (README: "works with every command"), and
``LLMTRACE_STORE`` when neither is given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmtrace.cli import cli
from llmtrace.store._open import ENV_VAR
from llmtrace.store._sqlite import SqliteStore
from tests.cli.test_cli import cli_runner
from tests.store.dataset import TRACE_A, TRACES, write_dataset


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # the default store (./.llmtrace/traces.db) does not exist here
    monkeypatch.delenv(ENV_VAR, raising=False)
    path = tmp_path / "elsewhere" / "traces.db"
    writer = SqliteStore(path)
    write_dataset(writer)
    writer.close()
    return str(path)


def _run(*args: str) -> tuple[int, str, str]:
    result = cli_runner().invoke(cli, list(args), prog_name="llmtrace")
    return result.exit_code, result.stdout, result.stderr


def _trace_ids(out: str) -> list[str]:
    return [json.loads(line)["trace_id"] for line in out.splitlines() if "trace_id" in line]


NEWEST_FIRST = [t.trace_id for t in reversed(TRACES)]


def test_every_command_takes_store() -> None:
    names = sorted(cli.commands)
    assert names == ["diagnostics", "export", "prices", "prune", "show", "stats", "traces"]
    without = [n for n in names if not any("--store" in p.opts for p in cli.commands[n].params)]
    assert without == []


def test_store_after_the_command_name(store: str) -> None:
    code, out, err = _run("traces", "--store", store, "--json")
    assert (code, err) == (0, "")
    assert _trace_ids(out) == NEWEST_FIRST


def test_store_before_the_command_name_still_works(store: str) -> None:
    code, out, err = _run("--store", store, "traces", "--json")
    assert (code, err) == (0, "")
    assert _trace_ids(out) == NEWEST_FIRST


def test_the_commands_store_wins_over_the_groups(store: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.db")
    code, out, _ = _run("--store", missing, "traces", "--store", store, "--json")
    assert (code, _trace_ids(out)) == (0, NEWEST_FIRST)
    code, out, err = _run("--store", store, "traces", "--store", missing, "--json")
    assert (code, out) == (1, "")
    assert err.startswith(f"error: no llmtrace store at {missing}")


def test_store_after_the_command_name_wins_over_the_variable(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing.db"))
    code, out, _ = _run("traces", "--json", "--store", store)
    assert (code, _trace_ids(out)) == (0, NEWEST_FIRST)
    monkeypatch.setenv(ENV_VAR, store)  # and without --store, the variable
    code, out, _ = _run("traces", "--json")
    assert (code, _trace_ids(out)) == (0, NEWEST_FIRST)


def test_each_command_reads_the_store_given_after_its_name(store: str) -> None:
    code, out, _ = _run("show", TRACE_A.trace_id[:8], "--store", store)
    assert code == 0 and TRACE_A.root_name in out
    code, out, _ = _run("stats", "--json", "--store", store)
    assert code == 0 and json.loads(out)["summary"]["calls"] == 9
    code, out, _ = _run("export", TRACE_A.trace_id, "--store", store)
    assert code == 0 and TRACE_A.trace_id in out
    code, out, _ = _run("diagnostics", "--json", "--store", store)
    assert code == 0 and json.loads(out)["store"]["store"] == store
    code, out, _ = _run("prune", "--older-than", "1d", "--dry-run", "--json", "--store", store)
    assert code == 0 and json.loads(out)["store"] == store
    code, out, _ = _run("prices", "gpt-4o", "--store", store)  # reads no store, refuses no option
    assert code == 0 and "$2.5" in out


def test_the_next_page_hint_names_the_store_once(store: str) -> None:
    code, out, _ = _run("traces", "--store", store, "--limit", "2")
    assert code == 0
    hint = out.split("next page: ", 1)[1]
    assert hint.startswith(f"llmtrace --store {store} traces --limit 2 --cursor ")
    assert hint.count("--store") == 1
