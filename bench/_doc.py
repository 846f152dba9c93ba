"""Shared helpers: the generated blocks of docs/benchmarks.md, machine facts, env versions."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = BENCH / "results"
VENVS = BENCH / ".venvs"

VERSION_PACKAGES = (
    "langchain-core",
    "langchain",
    "langgraph",
    "llama-index-core",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "llmtrace",
    "llmtrace-langchain",
    "llmtrace-llama-index",
    "openinference-instrumentation-langchain",
    "openinference-instrumentation-llama-index",
    "opentelemetry-instrumentation-langchain",
    "opentelemetry-instrumentation-llamaindex",
    "langfuse",
    "openlit",
    "opentelemetry-instrumentation-genai-langchain",
)


def env_python(env: str) -> Path:
    return VENVS / env / "bin" / "python"


def env_versions(env: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        f"names = {list(VERSION_PACKAGES)!r}\n"
        "out = {'python': sys.version.split()[0]}\n"
        "for n in names:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    try:
        out = subprocess.run([str(env_python(env)), "-c", code], capture_output=True, text=True, timeout=60)
        return dict(json.loads(out.stdout))
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "os": platform.platform(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def replace_block(name: str, body: str, path: Path = DOC) -> None:
    """Put ``body`` between ``<!-- name:begin -->`` and ``<!-- name:end -->`` (appended if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else ""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
