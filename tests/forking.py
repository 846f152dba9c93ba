"""Running test code in a forked child, with a watchdog (the fork tests of core and store)."""

from __future__ import annotations

import json
import os
import signal
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any


def wait_or_kill(pid: int, timeout_s: float) -> int | None:
    """The child's exit code, or None when it was still running after ``timeout_s`` (then killed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.01)


def run_in_child(body: Callable[[], Any], timeout_s: float) -> tuple[Any, int, float]:
    """Run ``body`` in a forked child that ends with ``os._exit``: its JSON-able result, the child's
    pid and how long it took. Fails the test if the child raised or hung (it is then killed)."""
    read_end, write_end = os.pipe()
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "use of fork() may lead to deadlocks"
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        message = ""
        try:
            os.close(read_end)
            message = json.dumps({"ok": body()})
            code = 0
        except BaseException:
            message = json.dumps({"error": traceback.format_exc()})
        finally:
            try:
                os.write(write_end, message.encode())
            finally:
                os._exit(code)
    os.close(write_end)
    code = wait_or_kill(pid, timeout_s)
    took = time.monotonic() - started
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode()
    assert code is not None, f"the forked child did not exit within {timeout_s:.0f} s (killed)"
    result = json.loads(report)
    assert code == 0, result.get("error")
    return result["ok"], pid, took
