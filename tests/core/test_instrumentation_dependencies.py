"""Each instrumentor declares the framework floor its package requires (``opentelemetry-instrument``
and ``instrument()`` skip an instrumentor whose declared dependency is not met)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from llmtrace_langchain import LangChainInstrumentor
from llmtrace_llama_index import LlamaIndexInstrumentor

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("instrumentor", "pyproject", "framework"),
    [
        (LangChainInstrumentor, "integrations/langchain/pyproject.toml", "langchain-core"),
        (LlamaIndexInstrumentor, "integrations/llama-index/pyproject.toml", "llama-index-core"),
    ],
)
def test_declared_dependency_is_the_floor(instrumentor: type, pyproject: str, framework: str) -> None:
    text = (ROOT / pyproject).read_text()
    floor = re.search(rf'"{re.escape(framework)}>=([\d.]+)', text)
    assert floor is not None
    assert instrumentor().instrumentation_dependencies() == (f"{framework} >= {floor.group(1)}",)
