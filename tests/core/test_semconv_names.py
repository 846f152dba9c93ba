"""No module but llmtrace.semconv spells a gen_ai.* or llmtrace.* name as a string literal."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import llmtrace
from llmtrace import semconv

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"^(gen_ai|llmtrace)\.[a-z0-9][a-z0-9_]*(\.[a-z0-9][a-z0-9_<>{}]*)*\.?$")
"""An attribute, event or metric name; module paths such as ``llmtrace._manual`` have private parts."""
THIS_FILE = Path(__file__).resolve()
SEMCONV = ROOT / "src" / "llmtrace" / "semconv.py"  # the checkout's (llmtrace may be installed from a wheel)


def _python_files() -> list[Path]:
    dirs = [ROOT / "src", ROOT / "integrations", ROOT / "examples", ROOT / "tests", ROOT / "bench"]
    return sorted(
        p
        for d in dirs
        if d.exists()
        for p in d.rglob("*.py")
        if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)  # .venv, bench/.venvs
    )


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    # attribute docstrings: a bare string expression statement anywhere
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            ids.add(id(node.value))
    return ids


def test_names_are_spelled_only_in_semconv() -> None:
    offenders: list[str] = []
    files = _python_files()
    assert len(files) > 10
    for path in files:
        if path.resolve() in (SEMCONV, THIS_FILE):  # this test pins the exact strings on purpose
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        docstrings = _docstring_nodes(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and NAME.match(node.value)
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert offenders == []


def test_the_check_catches_a_literal() -> None:
    tree = ast.parse('span.set_attribute("gen_ai.usage.input_tokens", 3)\nx = f"llmtrace.cache.{y}"')
    found = [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and NAME.match(n.value)
    ]
    assert found == ["gen_ai.usage.input_tokens", "llmtrace.cache."]


def test_extension_names_are_exact() -> None:
    assert semconv.GEN_AI_USAGE_COST_AMOUNT == "gen_ai.usage.cost.amount"
    assert semconv.GEN_AI_USAGE_COST_CURRENCY == "gen_ai.usage.cost.currency"
    assert semconv.GEN_AI_USAGE_COST_SOURCE == "gen_ai.usage.cost.source"
    assert semconv.LLMTRACE_COST_UNPRICED == "llmtrace.cost.unpriced"
    assert semconv.LLMTRACE_CACHE_HIT == "llmtrace.cache.hit"
    assert semconv.LLMTRACE_CACHE_SOURCE == "llmtrace.cache.source"
    assert semconv.LLMTRACE_AGENT_STEP_EVENT == "llmtrace.agent.step"
    assert semconv.LLMTRACE_AGENT_STEP_INDEX == "llmtrace.agent.step.index"
    assert semconv.LLMTRACE_AGENT_STEP_KIND == "llmtrace.agent.step.kind"
    assert semconv.LLMTRACE_RETRIEVAL_DOCUMENT_COUNT == "llmtrace.retrieval.document_count"
    assert semconv.LLMTRACE_EVICTED == "llmtrace.evicted"
    assert semconv.METRIC_USAGE_COST == "llmtrace.usage.cost"
    assert semconv.METRIC_CACHE_LOOKUPS == "llmtrace.cache.lookups"
    assert semconv.GEN_AI_PROVIDER_NAME == "gen_ai.provider.name"
    assert semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS == "gen_ai.usage.cache_read.input_tokens"
    assert semconv.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS == "gen_ai.usage.cache_write.input_tokens"
    assert semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS == "gen_ai.usage.reasoning.output_tokens"
    assert {"thought", "action", "observation", "final"} == semconv.AGENT_STEP_KINDS


def test_public_api_is_pinned() -> None:
    public = sorted(
        n
        for n in vars(llmtrace)
        if n.isidentifier()
        and not n.startswith("_")
        and n not in {"annotations", "semconv", "version", "testing", "store", "cli"}
    )
    assert sorted(set(llmtrace.__all__) - {"__version__"}) == [
        n for n in public if not n.startswith("_") and n in llmtrace.__all__
    ]
    assert set(public) - set(llmtrace.__all__) == set()
