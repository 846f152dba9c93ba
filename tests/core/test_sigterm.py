"""SIGTERM (``kill``, ``docker stop``, Kubernetes) exports what is queued before the process dies.

Each test runs a real Python process that configures llmtrace with the SQLite store and an
OTLP/HTTP receiver on 127.0.0.1, ends spans, and gets SIGTERM. Spans wait in the batch processor
(``schedule_delay_ms=60000``) and in the store's writer (0.5 s), so only a flush on the signal
gets them out: with SIGTERM's default action the process used to die before any exit hook ran.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from llmtrace import semconv as sc
from tests.otlp_receivers import HangingServer, HttpReceiver

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no SIGTERM semantics on Windows")

KILLED = -signal.SIGTERM

PRELUDE = """
import os, signal, sys, time
import llmtrace

def end_spans(count, model="gpt-4o"):
    for _ in range(count):
        inv = llmtrace.TelemetryHandler().start_chat(model, provider="openai")
        inv.set_usage(input_tokens=1, output_tokens=2)
        inv.stop()

def sigterm_myself():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
    sys.exit(5)  # the signal did not end the process
"""


def _env(endpoint: str, db: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMTRACE_"))}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "sigterm-test",
            "LLMTRACE_STORE": str(db),
        }
    )
    env.update(extra or {})
    return env


def _start(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _run(code: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = _start(code, env)
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def _stored(db: Path) -> tuple[list[str], int]:
    """Span names and the number of usage records in the store (none if it was never written)."""
    if not db.exists():
        return [], 0
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "spans" not in tables:
            return [], 0
        names = sorted(row[0] for row in conn.execute("SELECT name FROM spans"))
        usage = conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0]
    return names, int(usage)


def test_default_action_flushes_store_and_otlp_then_dies_of_the_signal(tmp_path):
    db = tmp_path / "traces.db"
    with HttpReceiver() as rx:
        returncode, _out, err = _run(
            """
            llmtrace.configure(schedule_delay_ms=60000)
            end_spans(3)
            sigterm_myself()
            """,
            _env(rx.endpoint, db),
        )
        assert returncode == KILLED, err
        assert [span.name for span in rx.wait_for_spans(3, timeout=5)] == ["chat gpt-4o"] * 3
    assert _stored(db) == (["chat gpt-4o"] * 3, 3)


def test_server_that_restores_the_handler_and_raises_the_signal_again(tmp_path):
    """uvicorn's way: it saves the handler it finds, installs its own, shuts down gracefully (a
    request in flight ends meanwhile), puts the saved handler back and raises SIGTERM again."""
    db = tmp_path / "traces.db"
    with HttpReceiver() as rx:
        process = _start(
            """
            llmtrace.configure(schedule_delay_ms=60000)
            saved = signal.getsignal(signal.SIGTERM)
            received = []
            signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
            end_spans(2)
            print("serving", flush=True)
            while not received:
                time.sleep(0.01)
            end_spans(1, "gpt-4o-mini")  # the request in flight ends during the graceful shutdown
            signal.signal(signal.SIGTERM, saved)
            signal.raise_signal(signal.SIGTERM)
            time.sleep(30)
            sys.exit(5)
            """,
            _env(rx.endpoint, db),
        )
        assert process.stdout is not None
        assert process.stdout.readline() == "serving\n"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == KILLED, err
        names = sorted(span.name for span in rx.wait_for_spans(3, timeout=5))
    expected = ["chat gpt-4o", "chat gpt-4o", "chat gpt-4o-mini"]
    assert names == expected
    assert _stored(db) == (expected, 3)


def test_a_handler_the_application_installed_first_is_kept(tmp_path):
    """Guard (passes on the old code too): llmtrace never replaces a handler it did not install,
    and does not flush on a signal that handler takes."""
    db = tmp_path / "traces.db"
    with HttpReceiver() as rx:
        returncode, out, err = _run(
            """
            def mine(signum, frame):
                print("application handler", flush=True)
                os._exit(7)

            signal.signal(signal.SIGTERM, mine)
            llmtrace.configure(schedule_delay_ms=60000)
            print("kept:", signal.getsignal(signal.SIGTERM) is mine, flush=True)
            end_spans(3)
            sigterm_myself()
            """,
            _env(rx.endpoint, db),
        )
        assert returncode == 7, err
        assert out.splitlines() == ["kept: True", "application handler"]
        time.sleep(0.5)
        assert rx.spans() == []


@pytest.mark.parametrize(
    ("configure_args", "env"),
    [
        ("handle_sigterm=False", {}),
        ("", {"LLMTRACE_HANDLE_SIGTERM": "false"}),
        ("handle_sigterm=False", {"LLMTRACE_HANDLE_SIGTERM": "true"}),  # the keyword wins
    ],
    ids=["keyword", "variable", "keyword-over-variable"],
)
def test_opt_out_leaves_sigterm_alone(tmp_path, configure_args, env):
    """The keyword fails on the old code (no such argument); the variable alone is a guard."""
    db = tmp_path / "traces.db"
    with HttpReceiver() as rx:
        returncode, out, err = _run(
            f"""
            llmtrace.configure(schedule_delay_ms=60000, {configure_args})
            print("default action:", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)
            end_spans(3)
            sigterm_myself()
            """,
            _env(rx.endpoint, db, env),
        )
        assert returncode == KILLED, err
        assert out == "default action: True\n"
        time.sleep(0.5)
        assert rx.spans() == []


def test_variable_turns_it_on_explicitly_and_a_bad_value_keeps_the_default(tmp_path):
    db = tmp_path / "traces.db"
    for value in ("on", "maybe"):
        with HttpReceiver() as rx:
            returncode, _out, err = _run(
                """
                llmtrace.configure(schedule_delay_ms=60000)
                end_spans(1)
                sigterm_myself()
                """,
                _env(rx.endpoint, db, {"LLMTRACE_HANDLE_SIGTERM": value}),
            )
            assert returncode == KILLED, err
            assert [span.name for span in rx.wait_for_spans(1, timeout=5)] == ["chat gpt-4o"]
        assert ("LLMTRACE_HANDLE_SIGTERM='maybe'" in err) is (value == "maybe")


def test_forked_child_inherits_the_handler_and_flushes_its_own_spans(tmp_path):
    """gunicorn --preload, multiprocessing's fork: the child's pipeline is flushed on its SIGTERM."""
    db = tmp_path / "traces.db"
    with HttpReceiver() as rx:
        returncode, out, err = _run(
            """
            import warnings
            warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads, 3.12+
            llmtrace.configure(schedule_delay_ms=60000)
            pid = os.fork()
            if pid == 0:
                end_spans(2, "gpt-4o-child")
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
                os._exit(5)
            _, status = os.waitpid(pid, 0)
            print("child:", os.WIFSIGNALED(status) and os.WTERMSIG(status), flush=True)
            """,
            _env(rx.endpoint, db),
        )
        assert returncode == 0, err
        assert out == f"child: {int(signal.SIGTERM)}\n"
        assert [span.name for span in rx.wait_for_spans(2, timeout=5)] == ["chat gpt-4o-child"] * 2
    assert _stored(db) == (["chat gpt-4o-child"] * 2, 2)


def test_after_an_explicit_shutdown_the_signal_is_only_raised_again(tmp_path):
    """Guard: nothing is left to flush, the process dies of the signal at once."""
    db = tmp_path / "traces.db"
    with HttpReceiver() as rx:
        returncode, out, err = _run(
            """
            llmtrace.configure(schedule_delay_ms=60000)
            end_spans(2)
            llmtrace.shutdown()
            started = time.monotonic()
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:
                print("alive after", round(time.monotonic() - started), flush=True)
            """,
            _env(rx.endpoint, db),
        )
        assert returncode == KILLED, err
        assert out == ""  # the handler raised the signal again without returning
        assert len(rx.spans()) == 2  # exported by shutdown()


def test_flush_is_bounded_when_the_collector_hangs_and_a_second_signal_ends_it_at_once(tmp_path):
    """A hung collector: the first SIGTERM's flush writes the store and gives OTLP up within the
    exit bound; the process stays alive during the flush (the old code died at once) and a second
    SIGTERM then ends it immediately."""
    db = tmp_path / "traces.db"
    code = """
        llmtrace.configure(schedule_delay_ms=60000, export_timeout_ms=1000)
        end_spans(2)
        print("ready", flush=True)
        time.sleep(30)
        sys.exit(5)
        """
    with HangingServer() as hung:
        env = _env(hung.endpoint, db, {"OTEL_EXPORTER_OTLP_TIMEOUT": "1000"})
        # one signal: the flush ends within the bound (1 s export timeout, +1 s for the store)
        process = _start(code, env)
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert process.poll() is None  # flushing
        _, err = process.communicate(timeout=30)
        elapsed = time.monotonic() - started
        assert process.returncode == KILLED, err
        assert elapsed < 2.0 + 0.5 + 1.5  # the bound, the handler's margin, slack for a busy machine
        assert _stored(db) == (["chat gpt-4o"] * 2, 2)  # the store did not wait for the collector

        # a second signal during the flush
        db.unlink()
        process = _start(code, env)
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert process.poll() is None
        second = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        assert process.returncode == KILLED, err
        assert time.monotonic() - second < 0.5 + 0.5


def test_a_lock_held_by_the_interrupted_main_thread_does_not_hang_the_handler(tmp_path):
    """Guard: the signal comes while the main thread holds a lock the flush needs (here
    configure()'s own): the flush waits on a helper thread, given up at the bound, and the process
    still dies of the signal. (A flush run in the handler itself would wait forever.)"""
    db = tmp_path / "traces.db"
    with HttpReceiver() as rx:
        started = time.monotonic()
        returncode, _out, err = _run(
            """
            from llmtrace import _config
            llmtrace.configure(schedule_delay_ms=60000, export_timeout_ms=1000)
            end_spans(1)
            with _config._lock:
                sigterm_myself()
            """,
            _env(rx.endpoint, db),
        )
        elapsed = time.monotonic() - started
        assert returncode == KILLED, err
        assert elapsed < 20  # not the 30 s sleep: the handler gave up waiting and raised the signal


UVICORN_APP = """
import socket
import uvicorn
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

llmtrace.configure(schedule_delay_ms=60000)
llmtrace.instrument()

async def app(scope, receive, send):
    model = GenericFakeChatModel(messages=iter([AIMessage("pong")]))
    answer = await model.ainvoke("ping")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": answer.content.encode()})

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning")).run(sockets=[sock])
"""


def test_uvicorn_stopped_with_sigterm_exports_the_last_request(tmp_path):
    """A real uvicorn server (its own SIGTERM handling: graceful shutdown, then the original
    handler back and the signal raised again) serving a LangChain fake-model call."""
    pytest.importorskip("uvicorn")
    db = tmp_path / "traces.db"
    with HttpReceiver() as rx:
        process = _start(UVICORN_APP, _env(rx.endpoint, db))
        try:
            assert process.stdout is not None
            port = int(process.stdout.readline())
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
                        assert response.read() == b"pong"
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == KILLED, err
        (span,) = rx.wait_for_spans(1, timeout=5)
        assert span.name == "chat"  # a fake model has no model name
        assert span.attributes[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert _stored(db) == (["chat"], 1)  # and its usage record
