"""The command line end to end, on a store filled by examples/demo.py (run once, in a subprocess)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import llmtrace
from llmtrace import semconv as sc
from llmtrace.cli import cli
from llmtrace.cli._app import parse_time
from llmtrace.cli._otlp import parse_otlp_json
from llmtrace.store import SpanRecord, _schema
from llmtrace.store._sqlite import SqliteStore
from tests.store.dataset import TRACES, write_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> tuple[str, str]:
    workdir = tmp_path_factory.mktemp("demo")
    store = str(workdir / "traces.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMTRACE_"))}
    env["LLMTRACE_STORE"] = store
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return store, result.stdout


def cli_runner() -> CliRunner:
    """A runner that keeps stderr apart from stdout: click 8.2+ always does, 8.1 (the declared
    floor) only when asked with ``mix_stderr=False`` (a keyword 8.2 removed)."""
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def run(store: str | None, *args: str) -> tuple[int, str, str]:
    runner = cli_runner()
    argv = (["--store", store] if store else []) + list(args)
    result = runner.invoke(cli, argv, prog_name="llmtrace")
    return result.exit_code, result.stdout, result.stderr


def trace_ids(store: str) -> list[str]:
    code, out, _ = run(store, "traces", "--json", "--limit", "50")
    assert code == 0
    return [json.loads(line)["trace_id"] for line in out.splitlines() if "trace_id" in line]


def agent_trace(store: str) -> str:
    _, out, _ = run(store, "traces", "--json", "--limit", "50")
    rows = [json.loads(line) for line in out.splitlines() if "trace_id" in line]
    (row,) = [r for r in rows if r["root_name"].startswith("invoke_agent")]
    return str(row["trace_id"])


def test_demo_prints_tree_summary_and_hints(demo_store):
    _, stdout = demo_store
    assert "invoke_agent docs_agent" in stdout and "execute_tool search_docs" in stdout
    assert "cache HIT" in stdout and "step 1: action" in stdout
    assert "response-cache hits" in stdout and "claude-sonnet-4-5" in stdout
    assert " show " in stdout and "uv run llmtrace" in stdout and "16686" in stdout


def test_demo_hints_show_the_agents_trace(demo_store):
    store_path, stdout = demo_store
    shown = stdout.split(" show ", 1)[1].split()[0]
    store = SqliteStore(store_path, create=False, write=False)
    try:
        roots = [span.name for span in store.get_trace(shown).spans if span.parent_span_id is None]
    finally:
        store.close()
    assert roots == ["invoke_agent docs_agent"]


def test_traces_lists_and_paginates(demo_store):
    store, _ = demo_store
    code, out, _ = run(store, "traces")
    assert code == 0
    assert "invoke_agent docs_agent" in out and "llmtrace-demo" in out and "$" in out
    everything = trace_ids(store)
    assert len(everything) >= 4
    code, out, _ = run(store, "traces", "--limit", "2")
    assert f"next page: llmtrace --store {store} traces --limit 2 --cursor " in out
    cursor = out.split("--cursor", 1)[1].split()[0]
    code, out2, _ = run(store, "traces", "--limit", "2", "--cursor", cursor, "--json")
    assert code == 0
    page2 = [json.loads(line)["trace_id"] for line in out2.splitlines() if "trace_id" in line]
    assert page2 == everything[2:4]


def test_traces_filters(demo_store):
    store, _ = demo_store
    code, out, _ = run(store, "traces", "--provider", "anthropic", "--json")
    rows = [json.loads(line) for line in out.splitlines() if "trace_id" in line]
    assert code == 0 and [r["root_name"] for r in rows] == ["invoke_agent docs_agent"]
    code, out, _ = run(store, "traces", "--since", "1h", "--min-cost", "0.001", "--json")
    assert code == 0 and len([line for line in out.splitlines() if "trace_id" in line]) == 1
    code, out, _ = run(store, "traces", "--service", "nobody")
    assert code == 0 and "no traces match" in out
    code, out, _ = run(store, "traces", "--until", "2000-01-01")
    assert code == 0 and "no traces match" in out


def test_show_renders_the_span_tree(demo_store):
    store, _ = demo_store
    code, out, _ = run(store, "show", agent_trace(store))
    assert code == 0
    for text in (
        "invoke_agent docs_agent",
        "chat claude-sonnet-4-5",
        "model=claude-sonnet-4-5",
        "cache_read=1,536",
        "execute_tool search_docs",
        "tool=search_docs call=toolu_1",
        "retrieval InMemoryVectorStore",
        "step 3: final",
        "cost",
        "1 tool calls",
    ):
        assert text in out, text


def test_stats_sections_and_json(demo_store):
    store, _ = demo_store
    code, out, _ = run(store, "stats", "--by", "provider", "--bucket", "day", "--tz", "Europe/Paris")
    assert code == 0
    for title in (
        "Usage and cost",
        "Per model",
        "Usage by provider per day",
        "Latency by model",
        "Errors by",
    ):
        assert title in out
    code, out, _ = run(store, "stats", "--json", "--latency-by", "operation", "--errors-by", "provider")
    data = json.loads(out)
    assert data["summary"]["calls"] >= 5 and data["summary"]["cache_hits"] == 1
    assert {row["key"] for row in data["latency"]} >= {"chat"}
    assert {row["model"] for row in data["models"]} >= {"claude-sonnet-4-5", "gpt-4o-mini"}


def test_prices():
    code, out, _ = run(None, "prices", "gpt-4o-mini-2024-07-18", "no-such-model")
    assert code == 0
    assert "gpt-4o-mini" in out and "$0.15" in out and "unknown" in out


def _table(out: str) -> list[list[str]]:
    """The header and rows of a rich table, cells stripped."""
    return [
        [cell.strip() for cell in line.strip().strip("┃│").split("┃" if "┃" in line else "│")]
        for line in out.splitlines()
        if line.lstrip().startswith(("┃", "│"))
    ]


def test_prices_show_one_hour_writes_and_service_tiers():
    code, out, _ = run(None, "prices", "o3", "claude-haiku-4-5-20251001", "no-such-model")
    assert code == 0
    header, *rows = _table(out)
    assert header == [
        "model", "tier", "priced as", "provider", "input", "cached input", "cache write",
        "1h cache write", "output", "reasoning",
    ]  # fmt: skip
    assert rows == [
        ["o3", "standard", "o3", "openai", "$2", "$0.5", "$2", "$2", "$8", "$8"],
        ["o3", "flex", "o3", "openai", "$1", "$0.25", "$1", "$1", "$4", "$4"],
        ["o3", "priority", "o3", "openai", "$3.5", "$0.875", "$3.5", "$3.5", "$14", "$14"],
        ["claude-haiku-4-5-20251001", "standard", "claude-haiku-4-5", "anthropic",
         "$1", "$0.1", "$1.25", "$2", "$5", "$5"],
        ["no-such-model", "-", "unknown", "-", "-", "-", "-", "-", "-", "-"],
    ]  # fmt: skip
    # models without tier prices or one-hour writes: those columns left out
    code, out, _ = run(None, "prices", "text-embedding-3-small", "mistral-large-latest")
    header, *rows = _table(out)
    assert code == 0 and len(header) == 8 and "tier" not in header and "1h cache write" not in header
    assert rows[1] == ["mistral-large-latest", "mistral-large", "mistral_ai"] + ["$0.5"] * 3 + ["$1.5"] * 2


def test_export_is_loadable_otlp_json(demo_store, tmp_path):
    store, _ = demo_store
    trace_id = agent_trace(store)
    target = tmp_path / "trace.jsonl"
    code, _, err = run(store, "export", trace_id, "-o", str(target))
    assert code == 0 and "wrote 6 spans" in err  # agent, 2 chats, tool, retrieval, its query embedding
    text = target.read_text()
    assert text.endswith("\n") and text.count("\n") == 1  # the OTLP file format: JSON Lines
    assert f'"traceId":"{trace_id}"' in text  # OTLP/JSON: hex ids
    request = parse_otlp_json(text)
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) == 6 and {s.trace_id.hex() for s in spans} == {trace_id}
    (resource,) = request.resource_spans
    assert any(
        kv.key == sc.SERVICE_NAME and kv.value.string_value == "llmtrace-demo"
        for kv in resource.resource.attributes
    )
    # llmtrace's own scope, with the version and schema URL its tracer was made with
    (scope_spans,) = [ss for ss in resource.scope_spans if ss.scope.name == sc.INSTRUMENTATION_SCOPE]
    assert (scope_spans.scope.version, scope_spans.schema_url) == (llmtrace.__version__, sc.SCHEMA_URL)
    assert len(scope_spans.spans) == 6
    code, out, _ = run(store, "export", trace_id, "--encoding", "proto3")
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    parsed = json_format.Parse(out, ExportTraceServiceRequest())
    assert parsed == request


def test_diagnostics_shows_the_demo_writer(demo_store):
    store, _ = demo_store
    code, out, _ = run(store, "diagnostics", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["store"]["schema version"] and data["store"]["model calls"] >= 5
    (writer,) = data["writers"]
    assert writer["process"] == "exited" and writer["dropped"] == 0
    assert writer["state"] == "stopped"  # saved by the writer as it stopped, not "stopping"
    assert writer["accepted"] == writer["written"] > 0
    code, out, _ = run(store, "diagnostics")
    assert code == 0 and "Writers" in out and "exited" in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["show", "not-a-trace"], 2, "error: Invalid value for TRACE_ID: 'not-a-trace' is not a trace id"),
        (["show", "0" * 31 + "1"], 1, "error: no trace 00000000000000000000000000000001 in "),
        (["export", "0" * 31 + "1"], 1, "error: no trace 00000000000000000000000000000001 in "),
        (["traces", "--since", "yesterday"], 2, "error: Invalid value for --since: 'yesterday' is neither"),
        (["traces", "--cursor", "garbage"], 2, "error: invalid cursor: "),
        (["traces", "--status", "weird"], 2, "error: Invalid value for '--status'"),
        (
            ["traces", "--since", "1h", "--until", "2h"],
            2,
            "error: Invalid value for --since: --since must be",
        ),
        (["traces", "--min-cost", "-1"], 2, "error: Invalid value for '--min-cost'"),
        (["stats", "--tz", "Mars/Olympus"], 2, "error: Invalid value for --tz: unknown time zone"),
        (["nonsense"], 2, "error: No such command 'nonsense'."),
        # values that parse but that no int64 nanosecond time or duration can hold
        (["traces", "--min-duration", "inf"], 2, "error: Invalid value for --min-duration: inf is out"),
        (["traces", "--min-duration", "nan"], 2, "error: Invalid value for --min-duration: nan is out"),
        (["traces", "--min-duration", "1e10"], 2, "error: Invalid value for --min-duration: 10000000000.0"),
        (["stats", "--min-duration", "inf"], 2, "error: Invalid value for --min-duration: inf is out"),
        (["traces", "--since", "99999999999d"], 2, "error: Invalid value for --since: '99999999999d' is out"),
        (["traces", "--since", "1000000000h"], 2, "error: Invalid value for --since: '1000000000h' is out"),
        (["stats", "--since", "1" + "0" * 400 + "s"], 2, "error: Invalid value for --since: '1000"),
        (["traces", "--until", "2300-01-01"], 2, "error: Invalid value for --until: '2300-01-01' is out"),
        (["traces", "--since", "0001-01-01"], 2, "error: Invalid value for --since: '0001-01-01' is out"),
        (["stats", "--until", "2300-01-01"], 2, "error: Invalid value for --until: '2300-01-01' is out"),
    ],
)
def test_errors_are_one_line(demo_store, args, code, message):
    store, _ = demo_store
    got, _, err = run(store, *args)
    assert got == code
    assert err.startswith(message), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_foreign_cursor_is_refused(demo_store, tmp_path):
    store, _ = demo_store
    code, out, _ = run(store, "traces", "--limit", "1")
    cursor = out.split("--cursor", 1)[1].split()[0]
    code, _, err = run(store, "traces", "--limit", "1", "--provider", "openai", "--cursor", cursor)
    assert code == 2 and err.startswith("error: invalid cursor")


@pytest.mark.parametrize("command", ["traces", "stats", "diagnostics", "show " + "a" * 32])
def test_a_missing_store_is_one_clear_line(tmp_path, command):
    missing = str(tmp_path / "nowhere" / "traces.db")
    code, _, err = run(missing, *command.split())
    assert code == 1
    assert err.startswith(f"error: no llmtrace store at {missing}") and err.count("\n") == 1
    assert not Path(missing).exists()  # reading never creates a store


def test_store_from_the_environment(demo_store, monkeypatch):
    store, _ = demo_store
    monkeypatch.setenv("LLMTRACE_STORE", store)
    code, out, _ = run(None, "traces")
    assert code == 0 and "invoke_agent docs_agent" in out


def test_console_script_main(demo_store):
    store, _ = demo_store
    result = subprocess.run(
        [sys.executable, "-c", "from llmtrace.cli import main; main()", "--store", store, "show", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: Invalid value for TRACE_ID")


def test_relative_and_iso_times():
    import datetime as dt

    now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    hour = 3600 * 10**9
    base = int(now.timestamp()) * 10**9
    assert parse_time("1h", now=now) == base - hour
    assert parse_time("90m", now=now) == base - hour * 3 // 2
    assert parse_time("2d", now=now) == base - 48 * hour
    assert parse_time("2026-03-01T11:00:00Z", now=now) == base - hour
    assert parse_time("2026-03-01T11:00:00", now=now) == base - hour  # naive: UTC
    assert parse_time("2026-03-01T12:00:00+01:00", now=now) == base - hour


def _rows(out: str) -> list[str]:
    return [json.loads(line)["trace_id"] for line in out.splitlines() if "trace_id" in line]


def test_paging_with_a_relative_time_window(demo_store):
    """``--since 1h`` is resolved anew on every call; the cursor carries the first page's window."""
    store, _ = demo_store
    everything = trace_ids(store)
    code, out, _ = run(store, "traces", "--json", "--since", "1h", "--limit", "2")
    assert code == 0 and _rows(out) == everything[:2]
    cursor = json.loads(out.splitlines()[-1])["next_cursor"]
    code, out, err = run(store, "traces", "--json", "--since", "1h", "--limit", "2", "--cursor", cursor)
    assert code == 0, err
    assert _rows(out) == everything[2:4]
    # another filter is still refused
    code, _, err = run(store, "traces", "--json", "--since", "1h", "--model", "x", "--cursor", cursor)
    assert code == 2 and err.startswith("error: invalid cursor: cursor was issued for a different filter")


def test_the_next_page_hint_repeats_the_command(demo_store, tmp_path):
    store, _ = demo_store
    spaced = tmp_path / "my traces"  # a store path the shell must quote
    spaced.symlink_to(Path(store).parent, target_is_directory=True)
    spaced_store = str(spaced / Path(store).name)
    everything = trace_ids(store)
    code, out, _ = run(spaced_store, "traces", "--since", "1h", "--service", "llmtrace-demo", "--limit", "1")
    assert code == 0
    (hint,) = [line for line in out.splitlines() if line.startswith("next page: ")]
    argv = shlex.split(hint.removeprefix("next page: "))
    cursor = argv[-1]
    assert argv == [
        "llmtrace",
        "--store",
        spaced_store,
        "traces",
        "--service",
        "llmtrace-demo",
        "--since",
        "1h",
        "--limit",
        "1",
        "--cursor",
        cursor,
    ]
    result = cli_runner().invoke(cli, [*argv[1:], "--json"], prog_name="llmtrace")
    assert result.exit_code == 0, result.stderr
    assert _rows(result.stdout) == everything[1:2]


def _many_traces(path: Path, count: int) -> None:
    store = SqliteStore(path)
    spans = [
        SpanRecord(
            trace_id=f"{i + 1:032x}",
            span_id=f"{i + 1:016x}",
            parent_span_id=None,
            name=f"root {i}",
            kind="INTERNAL",
            start_ns=1_700_000_000 * 10**9 + i,
            end_ns=1_700_000_000 * 10**9 + i + 1000,
            status_code="UNSET",
            status_message="",
            attributes={},
            events=(),
            links=(),
            resource={sc.SERVICE_NAME: "pipe"},
            scope="test",
        )
        for i in range(count)
    ]
    store.write(spans, [])
    store.close()


def _cli_process(*args: str, **popen: object) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMTRACE_"))}
    return subprocess.Popen(
        [sys.executable, "-c", "from llmtrace.cli import main; main()", *args],
        env=env,
        text=True,
        **popen,  # type: ignore[call-overload]
    )


@pytest.mark.parametrize("mode", [["--json"], [], ["--since", "2000-01-01"]])
def test_a_reader_that_stops_early_is_no_error(tmp_path, mode):
    """``llmtrace traces ... | head -1``: exit 0, nothing on stderr (pipefail scripts keep working).
    The reader is gone before the first write here (as ``head`` is after its line), so the write
    fails with EPIPE every time, whatever the output's size."""
    store = tmp_path / "many.db"
    _many_traces(store, 200)
    args = ["--store", str(store), "traces", "--limit", "200", *mode]
    proc = _cli_process(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    assert err == ""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="llmtrace-ro-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _as_reader(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process that may read ``store`` but not write it (nor its directory, unless
    that is world-writable): as ``nobody`` (setpriv) when the tests run as root, else after a chmod."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot read as another user")
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = subprocess.run([*prefix, sys.executable, "-c", ""], capture_output=True, text=True)
        if probe.returncode != 0:  # e.g. an interpreter (or its libpython) under root's private home
            pytest.skip(f"this Python cannot run as nobody: {probe.stderr.strip()}")
    else:
        store.chmod(0o444)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMTRACE_"))}
    cli_main = [sys.executable, "-c", "from llmtrace.cli import main; main()"]
    return subprocess.run(
        [*prefix, *cli_main, "--store", str(store), *args],
        env=env,
        cwd=store.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("directory_mode", [0o755, 0o777])
def test_a_store_the_user_may_only_read(shared_dir, directory_mode):
    store = shared_dir / "traces.db"
    writer = SqliteStore(store)
    write_dataset(writer)
    writer.close()
    shared_dir.chmod(directory_mode)
    store.chmod(0o644)
    before = store.read_bytes()
    result = _as_reader(store, "traces", "--json")
    assert result.returncode == 0, result.stderr
    assert _rows(result.stdout) == [t.trace_id for t in sorted(TRACES, key=lambda t: -t.start)]
    result = _as_reader(store, "stats", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["calls"] == 9
    result = _as_reader(store, "show", TRACES[0].trace_id)
    assert result.returncode == 0 and TRACES[0].root_name in result.stdout
    assert store.read_bytes() == before  # not migrated, journal mode untouched


def test_a_read_only_store_too_old_to_read_says_so(shared_dir):
    store = shared_dir / "old.db"
    conn = sqlite3.connect(store, isolation_level=None)
    _schema.migrate(lambda sql, params=(): conn.execute(sql, tuple(params)).fetchall(), "sqlite", target=1)
    conn.close()
    store.chmod(0o644)
    result = _as_reader(store, "traces")
    assert result.returncode == 1
    oldest, current = _schema.MIN_READABLE_VERSION, _schema.CURRENT_VERSION
    expected = f"error: {store} has schema version 1, older than this llmtrace reads ({oldest} to {current})"
    assert result.stderr.startswith(expected), result.stderr
    assert result.stderr.count("\n") == 1
    assert (
        _schema.schema_version(
            lambda sql, params=(): sqlite3.connect(store).execute(sql, tuple(params)).fetchall()
        )
        == 1
    )
