"""Per-implementation virtual environments for the benchmark.

Every environment gets the same Python and the same framework versions as the project's own venv
(read from it at build time), plus llmtrace from this repository (path install) or exactly one peer.
Peers therefore never enter the project's dependencies. Build with::

    uv run python bench/envs.py            # all environments
    uv run python bench/envs.py openlit    # only some
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENVS = BENCH / ".venvs"

# Framework packages pinned to the versions installed in the project's venv.
PINNED = [
    "langchain-core",
    "langchain",
    "langgraph",
    "llama-index-core",
    "llama-index-llms-openai",  # OpenLLMetry's LlamaIndex instrumentor imports llama_index.llms
    "opentelemetry-api",
    "opentelemetry-sdk",
]

# env name -> extra requirements (llmtrace envs are installed from the repository).
ENVS: dict[str, list[str]] = {
    # editable, so the benchmark always measures the working tree
    "llmtrace": [
        "-e",
        str(ROOT),
        "-e",
        str(ROOT / "integrations" / "langchain"),
        "-e",
        str(ROOT / "integrations" / "llama-index"),
    ],
    "openinference": ["openinference-instrumentation-langchain", "openinference-instrumentation-llama-index"],
    "openllmetry": ["opentelemetry-instrumentation-langchain", "opentelemetry-instrumentation-llamaindex"],
    "langfuse": ["langfuse"],
    "openlit": ["openlit>=1.45"],
    "otel-genai": ["opentelemetry-instrumentation-genai-langchain"],
}


# Where an environment cannot take the project's exact version, the override and the reason.
OVERRIDES: dict[str, dict[str, str]] = {
    # openlit depends on opentelemetry-instrumentation-aiohttp-client, which has no 0.66b2 release to
    # match opentelemetry-sdk 1.45.2; without this override the resolver falls back to openlit
    # 1.34, which imports the removed ``opentelemetry._events`` and fails at import.
    "openlit": {"opentelemetry-api": "1.45.1", "opentelemetry-sdk": "1.45.1"},
}
OVERRIDE_REASONS = {
    "openlit": "OTel API/SDK 1.45.1 instead of 1.45.2: openlit needs "
    "opentelemetry-instrumentation-aiohttp-client, which has no release matching SDK 1.45.2 (semconv "
    "0.66b2); otherwise the resolver picks openlit 1.34, which fails to import (`opentelemetry._events` "
    "is gone).",
}


def pins(env: str = "") -> list[str]:
    over = OVERRIDES.get(env, {})
    return [f"{name}=={over.get(name, md.version(name))}" for name in PINNED]


def python_for(env: str) -> Path:
    return VENVS / env / "bin" / "python"


def build(env: str) -> tuple[bool, str]:
    """Create (or refresh) one environment; return (ok, log tail)."""
    target = VENVS / env
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    log: list[str] = []
    if not python_for(env).exists():
        cmd = ["uv", "venv", "-q", "--python", py, str(target)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        log.append(out.stdout + out.stderr)
        if out.returncode:
            return False, "\n".join(log)
    cmd = ["uv", "pip", "install", "-q", "--python", str(python_for(env)), *pins(env), *ENVS[env]]
    out = subprocess.run(cmd, capture_output=True, text=True)
    log.append(out.stdout + out.stderr)
    (target / "build.log").write_text(" ".join(cmd) + "\n" + "\n".join(log))
    return out.returncode == 0, "\n".join(log)[-3000:]


def main(argv: list[str]) -> int:
    names = argv or list(ENVS)
    failed = 0
    for env in names:
        ok, tail = build(env)
        print(f"[{'ok' if ok else 'FAILED'}] {env}")
        if not ok:
            failed += 1
            print(tail)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
