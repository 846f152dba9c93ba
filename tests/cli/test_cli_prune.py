"""``llmtrace prune`` on SQLite and PostgreSQL, and the smaller command line additions: trace id
prefixes (show, export), unpriced calls in the trace list, the automatic stats bucket, the
writers' retention in diagnostics."""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from llmtrace import semconv as sc
from llmtrace.store import Store, open_store
from llmtrace.store._writer import StoreWriter, status_path_for
from tests.cli.test_cli import _as_reader, run, shared_dir  # noqa: F401 (shared_dir: a fixture)
from tests.store.conftest import fresh_postgres_url, new_postgres_url, postgres_url  # noqa: F401
from tests.store.dataset import R6, TRACE_D, TRACES, S, root_span, usage_record, write_dataset
from tests.store.test_retention import _trace

CUTOFF = "2024-03-10T12:00"  # traces A, B and C ended before it; D and E after
CUTOFF_TEXT = "2024-03-10 12:00:00Z"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    target = (
        str(tmp_path / "traces.db")
        if request.param == "sqlite"
        else request.getfixturevalue("fresh_postgres_url")
    )
    store = open_store(target)
    write_dataset(store)
    store.close()
    yield target


def _listed(url: str) -> list[str]:
    code, out, err = run(url, "traces", "--json", "--limit", "100")
    assert code == 0, err
    return sorted(json.loads(line)["trace_id"][0] for line in out.splitlines() if "trace_id" in line)


# --------------------------------------------------------------------------------------
# prune
# --------------------------------------------------------------------------------------
def test_a_dry_run_says_what_would_go_and_deletes_nothing(url: str) -> None:
    code, out, err = run(url, "prune", "--before", CUTOFF, "--dry-run")
    assert (code, err) == (0, "")
    store_name = out.rsplit(" from ", 1)[1].strip()
    assert (
        out
        == f"would delete 3 traces (9 spans) and 5 usage records older than {CUTOFF_TEXT} from {store_name}\n"
    )
    code, out, _ = run(url, "prune", "--before", CUTOFF, "--dry-run", "--json")
    assert json.loads(out) == {
        "store": store_name,
        "cutoff": CUTOFF_TEXT,
        "dry_run": True,
        "traces": 3,
        "spans": 9,
        "usage": 5,
        "evaluations": 0,
    }
    assert _listed(url) == ["a", "b", "c", "d", "e"]


def test_prune_deletes_and_reports_counts(url: str) -> None:
    code, out, err = run(url, "prune", "--before", CUTOFF, "--yes")
    assert (code, err) == (0, "")
    assert out == f"deleted 3 traces (9 spans) and 5 usage records older than {CUTOFF_TEXT}\n"
    assert _listed(url) == ["d", "e"]
    code, out, _ = run(url, "stats", "--json")
    assert json.loads(out)["summary"]["calls"] == 4
    code, out, _ = run(url, "prune", "--before", CUTOFF, "--yes", "--json")
    assert code == 0 and json.loads(out)["traces"] == 0
    code, out, _ = run(url, "prune", "--before", CUTOFF, "--yes")
    assert (code, out) == (0, f"nothing older than {CUTOFF_TEXT}\n")


def test_older_than_counts_back_from_now(tmp_path: Path) -> None:
    path = str(tmp_path / "traces.db")
    store = open_store(path)
    now = time.time_ns()
    store.write(_trace(1, now - 3 * 86400 * S, 2) + _trace(2, now - 3600 * S, 2), [])
    store.close()
    code, out, err = run(path, "prune", "--older-than", "2d", "-y")
    assert code == 0, err
    assert out.startswith("deleted 1 trace (2 spans) and 0 usage records older than ")
    code, out, _ = run(path, "traces", "--json")
    assert [json.loads(line)["trace_id"] for line in out.splitlines()] == [f"{2:032x}"]
    # with both, the earlier cutoff wins
    code, out, _ = run(path, "prune", "--older-than", "1m", "--before", "2020-01-01", "--dry-run")
    assert out.startswith(
        "would delete 0 traces (0 spans) and 0 usage records older than 2020-01-01 00:00:00Z"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: say what to delete: --older-than AGE (such as 7d), --before TIME, or both"),
        (["--older-than", "soon"], "error: Invalid value for --older-than: 'soon' is not an age such as 30m"),
        (["--older-than", "2024-01-01"], "error: Invalid value for --older-than: '2024-01-01' is not an age"),
        (["--before", "yesterday"], "error: Invalid value for --before: 'yesterday' is neither an ISO time"),
        (["--before", "2300-01-01"], "error: Invalid value for --before: '2300-01-01' is out of range"),
    ],
)
def test_prune_option_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    code, _, err = run(str(tmp_path / "traces.db"), "prune", *args)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1


def test_prune_without_a_terminal_needs_yes(tmp_path: Path) -> None:
    path = str(tmp_path / "traces.db")
    store = open_store(path)
    write_dataset(store)
    store.close()
    code, out, err = run(path, "prune", "--before", CUTOFF)
    assert (code, out) == (2, "")
    assert err == (
        "error: prune deletes data: add --yes to confirm (standard input is not a terminal, so it cannot "
        "ask), or --dry-run to see what would go\n"
    )
    assert _listed(path) == ["a", "b", "c", "d", "e"]


def _on_a_terminal(path: str, answer: str) -> subprocess.CompletedProcess[str]:
    """The command with a pseudo-terminal as standard input, answering the prompt."""
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMTRACE_"))}
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from llmtrace.cli import main; main()",
                "--store",
                path,
                "prune",
                "--before",
                CUTOFF,
            ],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        os.write(controller, answer.encode() + b"\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_prune_asks_on_a_terminal(tmp_path: Path) -> None:
    path = str(tmp_path / "traces.db")
    store = open_store(path)
    write_dataset(store)
    store.close()
    refused = _on_a_terminal(path, "n")
    assert refused.returncode == 1 and refused.stdout.strip(" ") == ""
    assert refused.stderr.startswith(
        f"Delete 3 traces (9 spans) and 5 usage records older than {CUTOFF_TEXT} from {path}? [y/N]:"
    )
    assert refused.stderr.endswith("error: aborted\n")
    assert _listed(path) == ["a", "b", "c", "d", "e"]
    agreed = _on_a_terminal(path, "y")
    assert agreed.returncode == 0, agreed.stderr
    # (click 8.1 echoes a space to standard output after the prompt)
    deleted = f"deleted 3 traces (9 spans) and 5 usage records older than {CUTOFF_TEXT}\n"
    assert agreed.stdout.lstrip(" ") == deleted
    assert _listed(path) == ["d", "e"]


def test_vacuum_gives_the_space_back(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    store = open_store(str(path))
    old = time.time_ns() - 30 * 86400 * S
    content = {sc.GEN_AI_INPUT_MESSAGES: "x" * 3000}
    store.write([replace(s, attributes=content) for t in range(1, 301) for s in _trace(t, old + t, 5)], [])
    store.close()
    before = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    code, out, err = run(str(path), "prune", "--older-than", "7d", "--yes", "--vacuum", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["traces"], report["spans"]) == (300, 1500)
    assert report["size_before"] == before and report["size_after"] < before / 10
    assert path.stat().st_size == report["size_after"]
    code, out, _ = run(str(path), "prune", "--older-than", "7d", "--yes", "--vacuum")
    assert code == 0 and out.startswith("nothing older than") and "\nvacuumed: " in out


def test_vacuum_on_postgresql(fresh_postgres_url: str) -> None:  # noqa: F811
    store = open_store(fresh_postgres_url)
    store.write(_trace(1, time.time_ns() - 30 * 86400 * S, 3), [])
    store.close()
    code, out, err = run(fresh_postgres_url, "prune", "--older-than", "7d", "--yes", "--vacuum", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["traces"] == 1 and report["size_before"] > 0 and report["size_after"] > 0


def test_a_store_the_user_may_only_read_is_counted_not_pruned(shared_dir: Path) -> None:  # noqa: F811
    store_path = shared_dir / "traces.db"
    store = open_store(str(store_path))
    write_dataset(store)
    store.close()
    store_path.chmod(0o644)
    before = store_path.read_bytes()
    result = _as_reader(store_path, "prune", "--before", CUTOFF, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("would delete 3 traces (9 spans)")
    result = _as_reader(store_path, "prune", "--before", CUTOFF, "--yes")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(f"error: the store {store_path} is read-only for this user: cannot write")
    assert result.stderr.count("\n") == 1
    assert store_path.read_bytes() == before


def test_a_busy_store_is_one_clear_error(tmp_path: Path) -> None:
    """Another process holds the write lock longer than the busy timeout (5 s)."""
    path = tmp_path / "traces.db"
    store = open_store(str(path))
    write_dataset(store)
    store.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        code, out, err = run(str(path), "prune", "--before", CUTOFF, "--yes")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (code, out) == (1, "")
    assert err.startswith(f"error: the store {path} is busy: another process held its lock for more than 5 s")
    assert err.rstrip().endswith("(deleted before that: 0 traces (0 spans) and 0 usage records)")
    assert err.count("\n") == 1
    assert _listed(str(path)) == ["a", "b", "c", "d", "e"]


# --------------------------------------------------------------------------------------
# show/export with a prefix, unpriced calls in the list, the stats bucket
# --------------------------------------------------------------------------------------
def _add_trace(url: str, trace_id: str) -> None:
    store: Store = open_store(url)
    store.write([replace(root_span(TRACES[0]), trace_id=trace_id)], [])
    store.close()


def test_show_and_export_take_a_unique_prefix(url: str) -> None:
    code, out, err = run(url, "show", "AAAA")
    assert code == 0, err
    assert TRACES[0].root_name in out and "a" * 32 in out
    code, out, err = run(url, "export", "0xaaaaaa")
    assert code == 0 and '"traceId":"' + "a" * 32 + '"' in out
    _add_trace(url, "aaaab" + "0" * 27)
    code, _, err = run(url, "show", "aaaa")
    assert code == 1 and err.startswith("error: 2 traces start with aaaa in ")
    assert err.rstrip().endswith(": give more digits of the trace id")
    code, out, _ = run(url, "show", "aaaaa")
    assert code == 0 and "a" * 32 in out
    code, _, err = run(url, "show", "aaa")
    assert code == 2 and err.startswith(
        "error: Invalid value for TRACE_ID: 'aaa' is too short: give at least the first 4 hex digits"
    )
    code, _, err = run(url, "show", "f00d")
    assert code == 1 and err.startswith("error: no trace id starts with f00d in ")
    code, _, err = run(url, "show", "a" * 33)
    assert code == 2 and "is not a trace id" in err


def test_the_trace_list_says_which_costs_leave_out_unpriced_calls(url: str) -> None:
    code, out, _ = run(url, "traces", "--json")
    assert code == 0
    rows = {json.loads(line)["trace_id"][0]: json.loads(line) for line in out.splitlines()}
    assert {k: r["unpriced_calls"] for k, r in rows.items()} == {"a": 0, "b": 0, "c": 0, "d": 1, "e": 0}
    assert rows["d"]["cost"] is None
    code, out, _ = run(url, "traces")
    assert code == 0
    (line,) = [line for line in out.splitlines() if TRACE_D.trace_id in line]
    assert "- +1 unpriced: 1 unknown_model" in line
    assert "+N unpriced: calls without a price, left out of the cost, by reason (unknown_model: " in out
    _, out, _ = run(url, "traces", "--service", "checkout")
    assert "unpriced" not in out


def test_stats_picks_its_bucket(url: str) -> None:
    def bucket(*args: str) -> str:
        code, out, err = run(url, "stats", "--json", *args)
        assert code == 0, err
        return str(json.loads(out)["bucket"])

    assert bucket() == "hour"  # 28.5 hours from R1 to R9
    assert bucket("--since", "2024-03-11") == "minute"  # R8 and R9, 40 s apart
    assert bucket("--bucket", "day") == "day"
    store = open_store(url)
    store.write(
        [],
        [
            replace(
                usage_record(TRACE_D, 0, R6), span_id="f" * 16, start_time_unix_nano=R6.start + 30 * 86400 * S
            )
        ],
    )
    store.close()
    assert bucket() == "day"  # a month
    _, out, _ = run(url, "stats")
    assert "Usage by model per day" in out


def test_diagnostics_shows_the_writers_retention(tmp_path: Path) -> None:
    path = str(tmp_path / "traces.db")
    store = open_store(path)
    write_dataset(store)
    store.close()
    writer = StoreWriter(lambda: open_store(path), retention_s=7 * 86400, status_path=status_path_for(path))
    deadline = time.monotonic() + 60
    while writer.snapshot().last_prune_time is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    writer.shutdown(5)
    code, out, err = run(path, "diagnostics", "--json")
    assert code == 0, err
    (snap,) = json.loads(out)["writers"]
    assert (snap["retention_s"], snap["pruned_traces"], snap["pruned_usage"]) == (604800, 5, 9)
    code, out, _ = run(path, "diagnostics")
    assert "pruned" in out and "5 traces (> 7d" in out
