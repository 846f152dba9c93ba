"""A LlamaIndex RAG query and a tool-using agent, traced by llmtrace. Runs offline.

MockLLM, MockFunctionCallingLLM and MockEmbedding stand in for real models. Spans go to
.llmtrace/llama_index.jsonl (and to OTLP if OTEL_EXPORTER_OTLP_ENDPOINT is set, e.g. Jaeger).

    python examples/llama_index_query.py
"""

from __future__ import annotations

import asyncio
import os

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ToolCallBlock
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import ChatMessage, MockFunctionCallingLLM, MockLLM

import llmtrace

JSONL_PATH = ".llmtrace/llama_index.jsonl"


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def respond(messages, **kwargs):
    """The mock agent model: call the tool once, then answer."""
    if any(m.role == "tool" for m in messages):
        return ChatMessage(role="assistant", content="2 + 3 = 5")
    return ChatMessage(
        role="assistant",
        blocks=[ToolCallBlock(tool_call_id="call_1", tool_name="add", tool_kwargs={"a": 2, "b": 3})],
    )


async def run_agent() -> str:
    agent = FunctionAgent(
        name="calculator", tools=[add], llm=MockFunctionCallingLLM(response_generator=respond)
    )
    return str(await agent.run("What is 2 + 3?"))


def main() -> None:
    exporters = ["jsonl", "otlp"] if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else ["jsonl"]
    pipeline = llmtrace.configure(
        service_name="llmtrace-llama-index", exporters=exporters, jsonl_path=JSONL_PATH
    )
    llmtrace.instrument("llama_index")

    Settings.llm = MockLLM(max_tokens=8)
    Settings.embed_model = MockEmbedding(embed_dim=16)
    index = VectorStoreIndex.from_documents(
        [Document(text="llmtrace turns LlamaIndex events into OpenTelemetry GenAI spans.")]
    )
    answer = index.as_query_engine(similarity_top_k=1).query("What does llmtrace do?")
    print(f"query answer: {answer}")
    print(f"agent answer: {asyncio.run(run_agent())}")

    llmtrace.uninstrument("llama_index")
    pipeline.shutdown()
    print(f"traces written to {os.path.abspath(JSONL_PATH)}", end="")
    print(" and sent over OTLP" if "otlp" in exporters else "")


if __name__ == "__main__":
    main()
