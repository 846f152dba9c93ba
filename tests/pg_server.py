"""A throwaway PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` in a temporary directory.

Listens on 127.0.0.1 on a free port (and a Unix socket in its directory), runs as the
``postgres`` user when the tests run as root, and can be stopped and started again (the data
directory is kept until :meth:`PgServer.destroy`), so a test can take the database away from
code under test and bring it back.

:func:`unavailable` is the suite's convention when no server can be had: skip with the reason,
except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Literal, NoReturn

import pytest

ENV_URL = "LLMTRACE_TEST_POSTGRES_URL"

StopMode = Literal["smart", "fast", "immediate"]


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server program from PATH or Debian's versioned directories (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail under ``CI=true`` (where PostgreSQL must be there)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


class PgServer:
    """A throwaway PostgreSQL cluster in a temporary directory, started on construction."""

    def __init__(self) -> None:
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("initdb/pg_ctl not found (install the postgresql package)")
        self.pg_ctl = pg_ctl
        self.dir = Path(tempfile.mkdtemp(prefix="llmtrace-pg-"))
        self.prefix: list[str] = []
        try:
            if os.geteuid() == 0:
                runuser = shutil.which("runuser")
                if not runuser:
                    raise RuntimeError(
                        "running as root without runuser: cannot start postgres as a non-root user"
                    )
                shutil.chown(self.dir, user="postgres")
                self.prefix = [runuser, "-u", "postgres", "--"]
            self.port = free_port()
            self.data = str(self.dir / "data")
            self.log = self.dir / "log"
            self._run(
                initdb,
                *("-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"),
            )
            self.start()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{Path(args[0]).name} failed: {result.stderr.strip()[-2000:]} {tail}")

    def start(self) -> None:
        """Start (again) and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(self.pg_ctl, "-D", self.data, "-l", str(self.log), "-w", "-t", "30", "-o", options, "start")

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop and wait until it is down (``fast``: roll back and disconnect every session)."""
        self._run(self.pg_ctl, "-D", self.data, "-m", mode, "-w", "-t", "30", "stop")

    def destroy(self) -> None:
        """Stop (if running) and delete the cluster."""
        subprocess.run(
            [*self.prefix, self.pg_ctl, "-D", self.data, "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.dir, ignore_errors=True)
