"""The llmtrace demo: an agent, a cached call and a RAG query, traced into the local store. Offline.

    pip install uv && uv run python examples/demo.py

1. A LangGraph tool-calling agent (``langchain.agents.create_agent``) on a scripted chat model
   that reports Anthropic-style usage for ``claude-sonnet-4-5`` (with prompt-cache reads),
   calling a retriever tool over an in-memory vector store.
2. The same question asked twice of a ``gpt-4o-mini`` chat model behind LangChain's
   InMemoryCache: the second answer comes from the cache (a cache-hit span, no cost).
3. A LlamaIndex VectorStoreIndex query whose LLM reports OpenAI-style usage for ``gpt-4o-mini``.

No network, no API key: the models are fakes that report the usage real ones would. Everything
goes through ``llmtrace.configure()`` (spans and usage records to the SQLite store
``.llmtrace/traces.db``) and ``llmtrace.instrument()``; the demo then reads the traces back
from the store and prints them with the same code as the ``llmtrace`` command line.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from langchain.agents import create_agent
from langchain_core.caches import InMemoryCache
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.globals import set_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import create_retriever_tool
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from rich.console import Console
from rich.rule import Rule

import llmtrace
from llmtrace.cli import render_trace, render_usage
from llmtrace.store import TraceFilter, open_store

STORE = os.environ.get("LLMTRACE_STORE") or ".llmtrace/traces.db"
SERVICE = "llmtrace-demo"

DOCS = [
    "llmtrace records every model call as an OpenTelemetry span with token usage and cost.",
    "Traces are kept in a local SQLite store by default; set LLMTRACE_STORE to use PostgreSQL.",
    "With OTEL_EXPORTER_OTLP_ENDPOINT set, llmtrace also exports spans to Jaeger over OTLP.",
    "The llmtrace command line lists traces, shows span trees and computes cost statistics.",
]


# --------------------------------------------------------------------------------------
# Fake models that report realistic usage
# --------------------------------------------------------------------------------------
class ScriptedChatModel(BaseChatModel):
    """Answers from a script; reports usage as the named provider's API would."""

    model: str = "claude-sonnet-4-5"
    provider: str = "anthropic"
    latency_s: float = 0.05

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params.update(ls_provider=self.provider, ls_model_name=self.model)
        return params

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        time.sleep(self.latency_s)  # a model takes a moment
        tool_results = [m for m in messages if m.type == "tool"]
        prompt = sum(len(str(m.content)) for m in messages) // 4 + 1800  # + system prompt and tools
        usage = {
            "input_tokens": prompt,
            "output_tokens": 38 if not tool_results else 64,
            "total_tokens": prompt + (38 if not tool_results else 64),
            "input_token_details": {"cache_read": 1536},  # the system prompt was cached upstream
        }
        if messages and messages[-1].type == "human" and len(messages) <= 2 and self.provider == "anthropic":
            message = AIMessage(
                content="",
                usage_metadata=usage,  # type: ignore[arg-type]
                tool_calls=[
                    {"name": "search_docs", "args": {"query": "where are traces kept"}, "id": "toolu_1"}
                ],
                response_metadata={"model_name": "claude-sonnet-4-5-20250929", "stop_reason": "tool_use"},
            )
        else:
            answer = (
                "Traces go to a local SQLite store by default, and to Jaeger over OTLP when "
                "OTEL_EXPORTER_OTLP_ENDPOINT is set."
                if tool_results
                else "OpenTelemetry is a vendor-neutral standard for traces, metrics and logs."
            )
            message = AIMessage(content=answer, usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])


class DemoOpenAILLM(CustomLLM):
    """A LlamaIndex LLM answering offline, with the raw usage an OpenAI response carries."""

    model: str = "gpt-4o-mini"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model, context_window=128_000, num_output=256)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        time.sleep(0.03)
        prompt_tokens = len(prompt) // 4
        raw = {
            "id": "chatcmpl-demo",
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": 42,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        }
        return CompletionResponse(text="llmtrace keeps traces in a local SQLite store.", raw=raw)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        response = self.complete(prompt)
        yield response


# --------------------------------------------------------------------------------------
def run_workloads() -> None:
    # 1. a tool-calling agent with a retriever
    vectors = InMemoryVectorStore(DeterministicFakeEmbedding(size=64))
    vectors.add_texts(DOCS)
    search = create_retriever_tool(
        vectors.as_retriever(search_kwargs={"k": 2}), "search_docs", "Search the llmtrace documentation."
    )
    agent = create_agent(ScriptedChatModel(), tools=[search], name="docs_agent")
    result = agent.invoke({"messages": [("user", "Where does llmtrace keep my traces?")]})
    print(f"agent: {result['messages'][-1].content}")

    # 2. the same question twice, the second answered by LangChain's cache
    set_llm_cache(InMemoryCache())
    chat = ScriptedChatModel(model="gpt-4o-mini", provider="openai")
    for attempt in ("first", "repeat"):
        answer = chat.invoke("What is OpenTelemetry?")
        print(f"chat ({attempt}): {answer.content}")
    set_llm_cache(None)

    # 3. a LlamaIndex RAG query
    Settings.llm = DemoOpenAILLM()
    Settings.embed_model = MockEmbedding(embed_dim=16)
    index = VectorStoreIndex.from_documents([Document(text=text) for text in DOCS])
    print(f"query: {index.as_query_engine(similarity_top_k=2).query('Where are traces kept?')}")


def main() -> None:
    started = time.time_ns()
    pipeline = llmtrace.configure(service_name=SERVICE, store=STORE)
    llmtrace.instrument()
    run_workloads()
    pipeline.force_flush()
    writer = pipeline.store_writer
    snapshot = writer.snapshot() if writer is not None else None

    console = Console(width=None if sys.stdout.isatty() else 120)
    store = open_store(STORE)
    try:
        recent = TraceFilter(service=SERVICE, since_ns=started)
        traces = list(reversed(store.list_traces(recent, limit=20).items))  # oldest first
        for summary in traces:
            console.print(Rule(summary.root_name))
            console.print(render_trace(store.get_trace(summary.trace_id)))
        console.print(Rule("usage and cost of this run"))
        console.print(render_usage(store.usage_summary(recent), store.model_stats(recent)))
    finally:
        store.close()
    pipeline.shutdown()

    if snapshot is not None:
        print(
            f"\nstore writer: {snapshot.accepted} items accepted, {snapshot.written} written, "
            f"{snapshot.dropped} dropped, queue high-water mark {snapshot.high_water_mark}"
        )
    store_option = "" if STORE == ".llmtrace/traces.db" else f" --store {STORE}"
    # the richest trace (the agent's) for the show / export hints
    first = max(traces, key=lambda t: t.span_count).trace_id if traces else "TRACE_ID"
    print(
        f"""
The same traces, from the store ({os.path.abspath(STORE) if "://" not in STORE else STORE}):
  uv run llmtrace{store_option} traces
  uv run llmtrace{store_option} show {first}
  uv run llmtrace{store_option} stats --by model --bucket hour
  uv run llmtrace{store_option} export {first} -o trace.jsonl    # OTLP JSON Lines

And in Jaeger (spans are exported over OTLP as well as stored):
  docker run --rm -p 16686:16686 -p 4317:4317 -p 4318:4318 jaegertracing/jaeger:latest
  OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 uv run python examples/demo.py
  then open http://localhost:16686 and pick the service "{SERVICE}"."""
    )


if __name__ == "__main__":
    main()
