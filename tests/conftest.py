"""Suite-wide settings."""

from __future__ import annotations

import os

from hypothesis import settings

# CI replays the same examples every run (a failure there is reproducible, never a flake);
# developers' runs explore new examples each time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# tests talk to servers on 127.0.0.1 only; never through a proxy
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


def pytest_sessionfinish(session: object, exitstatus: object) -> None:
    """Runs tests left open (on purpose: eviction and memory tests) are dropped, not ended at exit:
    their providers are shut down by then, and ending them would only print the SDK's warnings."""
    from llmtrace._runmap import _sweeper

    for run_map in _sweeper.maps():
        run_map._forget()
