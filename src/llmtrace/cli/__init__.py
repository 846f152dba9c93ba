"""The ``llmtrace`` command line (in progress)."""

from __future__ import annotations


def main() -> None:
    raise SystemExit("the llmtrace command line is not ready yet")
