"""The ``llmtrace`` command line: traces, show, stats, prices, export, diagnostics.

The renderings are reusable (``examples/demo.py`` prints with them)::

    from llmtrace.cli import render_trace, render_usage
"""

from __future__ import annotations

from collections.abc import Sequence

from llmtrace.cli._app import cli
from llmtrace.cli._render import render_trace, render_usage, trace_tree, traces_table

__all__ = ["cli", "main", "render_trace", "render_usage", "trace_tree", "traces_table"]


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``llmtrace`` console script."""
    cli.main(args=list(args) if args is not None else None, prog_name="llmtrace")
