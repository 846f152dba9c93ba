"""The dispatcher-span classifier's cache: same answers as the uncached checks, and bounded."""

from __future__ import annotations

from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.response_synthesizers import CompactAndRefine
from llmtrace_llama_index import _classify
from llmtrace_llama_index._classify import Kind, classify

SUFFIX = "-12345678-1234-1234-1234-123456789012"


def test_cached_kinds_match_uncached_checks() -> None:
    llm, embed = MockLLM(), MockEmbedding(embed_dim=4)
    cases = [
        (llm, "MockLLM.chat", Kind.CHAT),
        (llm, "MockLLM.stream_complete", Kind.COMPLETION),
        (llm, "MockLLM.predict", Kind.OTHER),
        (embed, "MockEmbedding.get_query_embedding", Kind.EMBEDDING),
        (CompactAndRefine(llm=llm), "CompactAndRefine.get_response", Kind.OTHER),
        (None, "MyWorkflow.step_one", Kind.STEP),
    ]
    for _ in range(2):  # first call fills the cache, second reads it
        for instance, name, kind in cases:
            assert classify(name + SUFFIX, instance) is kind, name
    assert _classify._cache[(MockLLM, "chat")] is Kind.CHAT


def test_cache_stays_bounded_with_classes_made_at_run_time() -> None:
    for i in range(_classify._MAX_CACHED + 10):
        instance = type(f"Made{i}", (), {})()
        assert classify(f"Made{i}.run{SUFFIX}", instance) is Kind.OTHER
    assert 0 < len(_classify._cache) <= _classify._MAX_CACHED
