"""The five benchmark workloads. Framework code only: nothing here knows about tracing.

Every workload is built once per process by ``build(name)`` and returns ``invoke(config)``, one
invocation of the workload. ``config`` is the LangChain ``RunnableConfig`` the implementation asks
for (callbacks for handler-based tracers), or ``None``; the LlamaIndex workload ignores it.

The fake models do no I/O and no sleeping, so what is measured is the framework plus the tracer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

WORKLOADS = ("chain", "tool_loop", "llamaindex_query", "stream", "agent")
LANGCHAIN_WORKLOADS = frozenset({"chain", "tool_loop", "stream", "agent"})
TITLES = {
    "chain": "LangChain prompt → chat model → parser",
    "tool_loop": "LangChain tool loop: 2 model calls, 2 tools, 2 retrievals",
    "llamaindex_query": "LlamaIndex VectorStoreIndex query (mock LLM and embeddings)",
    "stream": "LangChain streamed chat (20 chunks)",
    "agent": "LangGraph agent (create_agent, 1 tool, 2 model calls)",
}

Invoke = Callable[[Any], Any]

MODEL_NAME = "gpt-4o-mini"
ANSWER_WORDS = [  # 20 words: 20 stream chunks
    "The",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "the",
    "careful",
    "tracer",
    "quietly",
    "counts",
    "every",
    "single",
    "span",
    "it",
    "sees.",
]
assert len(ANSWER_WORDS) == 20

DOCS = [
    "Paris is the capital of France and sits on the Seine.",
    "Berlin is the capital of Germany; it has many museums.",
    "Madrid is the capital of Spain and lies on a plateau.",
    "Rome is the capital of Italy and was founded long ago.",
    "Lisbon is the capital of Portugal, on the Atlantic coast.",
    "Vienna is the capital of Austria and is known for music.",
    "Warsaw is the capital of Poland, rebuilt after the war.",
    "Prague is the capital of Czechia, with a famous bridge.",
]


def _langchain_fakes() -> dict[str, Any]:
    """Classes built lazily so the LlamaIndex workload does not import LangChain."""
    from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.retrievers import BaseRetriever

    def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {
            "input_tokens": prompt_tokens,
            "output_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    class FakeUsageChatModel(BaseChatModel):
        """A chat model that answers instantly and reports token usage like a real provider.

        ``tool_calls``: names of tools to call while the conversation has no tool result yet;
        once tool results are there it answers with text. With no ``tool_calls`` it always answers.
        """

        model_name: str = MODEL_NAME
        tool_calls: tuple[str, ...] = ()

        @property
        def _llm_type(self) -> str:
            return "fake-usage-chat"

        @property
        def _identifying_params(self) -> dict[str, Any]:
            return {"model_name": self.model_name}

        def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> FakeUsageChatModel:
            return self

        def _reply(self, messages: list[BaseMessage]) -> AIMessage:
            prompt_tokens = 12 + 3 * len(messages)
            meta = {"model_name": self.model_name, "finish_reason": "stop"}
            if self.tool_calls and not any(isinstance(m, ToolMessage) for m in messages):
                args = {"query": "capital of France"}
                calls = [
                    {"name": name, "args": args, "id": f"call_{i}", "type": "tool_call"}
                    for i, name in enumerate(self.tool_calls)
                ]
                meta["finish_reason"] = "tool_calls"
                return AIMessage(
                    content="",
                    tool_calls=calls,
                    usage_metadata=usage(prompt_tokens, 9),  # type: ignore[arg-type]
                    response_metadata=meta,
                )
            return AIMessage(
                content=" ".join(ANSWER_WORDS),
                usage_metadata=usage(prompt_tokens, len(ANSWER_WORDS)),  # type: ignore[arg-type]
                response_metadata=meta,
            )

        def _generate(
            self,
            messages: list[BaseMessage],
            stop: list[str] | None = None,
            run_manager: CallbackManagerForLLMRun | None = None,
            **kwargs: Any,
        ) -> ChatResult:
            return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

        def _stream(
            self,
            messages: list[BaseMessage],
            stop: list[str] | None = None,
            run_manager: CallbackManagerForLLMRun | None = None,
            **kwargs: Any,
        ) -> Iterator[ChatGenerationChunk]:
            last = len(ANSWER_WORDS) - 1
            for i, word in enumerate(ANSWER_WORDS):
                chunk = AIMessageChunk(
                    content=word + ("" if i == last else " "),
                    usage_metadata=usage(12 + 3 * len(messages), len(ANSWER_WORDS)) if i == last else None,
                    response_metadata={"model_name": self.model_name, "finish_reason": "stop"}
                    if i == last
                    else {},
                )
                # BaseChatModel.stream() reports each chunk to the callbacks (on_llm_new_token).
                yield ChatGenerationChunk(message=chunk)

    class KeywordRetriever(BaseRetriever):
        """Returns the documents sharing the most words with the query (top 3)."""

        k: int = 3

        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[Document]:
            words = set(query.lower().split())
            scored = sorted(DOCS, key=lambda d: -len(words & set(d.lower().split())))
            return [
                Document(page_content=d, metadata={"source": f"doc{DOCS.index(d)}"}) for d in scored[: self.k]
            ]

    return {"model": FakeUsageChatModel, "retriever": KeywordRetriever}


def _tools() -> list[Any]:
    from langchain_core.tools import tool

    @tool
    def lookup_capital(query: str) -> str:
        """Look up a capital city."""
        return "Paris"

    @tool
    def population(query: str) -> str:
        """Return a city's population."""
        return "2.1 million"

    return [lookup_capital, population]


def build_chain() -> Invoke:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    fakes = _langchain_fakes()
    prompt = ChatPromptTemplate.from_messages([("system", "You are terse."), ("human", "{question}")])
    chain = prompt | fakes["model"]() | StrOutputParser()

    def invoke(config: Any) -> Any:
        return chain.invoke({"question": "What is the capital of France?"}, config=config)

    return invoke


def build_stream() -> Invoke:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    fakes = _langchain_fakes()
    prompt = ChatPromptTemplate.from_messages([("system", "You are terse."), ("human", "{question}")])
    chain = prompt | fakes["model"]() | StrOutputParser()

    def invoke(config: Any) -> Any:
        parts = list(chain.stream({"question": "Tell me about foxes."}, config=config))
        assert len(parts) >= len(ANSWER_WORDS), len(parts)
        return parts

    return invoke


def build_tool_loop() -> Invoke:
    """A hand-written agent loop in one RunnableLambda: retrieve, model (2 tool calls), run both
    tools, retrieve again, model (final answer). Children get the parent's config, so they nest."""
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_core.runnables import RunnableConfig, RunnableLambda

    fakes = _langchain_fakes()
    tools = {t.name: t for t in _tools()}
    model = fakes["model"](tool_calls=tuple(tools))
    retriever = fakes["retriever"]()

    def loop(question: str, config: RunnableConfig) -> str:
        docs = retriever.invoke(question, config=config)
        messages: list[Any] = [
            SystemMessage("Context:\n" + "\n".join(d.page_content for d in docs)),
            HumanMessage(question),
        ]
        ai = model.invoke(messages, config=config)
        messages.append(ai)
        for call in ai.tool_calls:
            messages.append(tools[call["name"]].invoke(call, config=config))
        more = retriever.invoke("population of " + question, config=config)
        messages.append(HumanMessage("More context:\n" + "\n".join(d.page_content for d in more)))
        final = model.invoke(messages, config=config)
        assert final.content, final
        return str(final.content)

    agent = RunnableLambda(loop, name="tool_loop")

    def invoke(config: Any) -> Any:
        return agent.invoke("What is the capital of France?", config=config)

    return invoke


def build_agent() -> Invoke:
    from langchain.agents import create_agent
    from langchain_core.messages import HumanMessage

    fakes = _langchain_fakes()
    tool = _tools()[0]
    model = fakes["model"](tool_calls=(tool.name,))
    agent = create_agent(model, tools=[tool], system_prompt="You answer geography questions.")

    def invoke(config: Any) -> Any:
        out = agent.invoke({"messages": [HumanMessage("What is the capital of France?")]}, config=config)
        assert len(out["messages"]) == 4, out
        return out

    return invoke


def build_llamaindex_query() -> Invoke:
    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms import MockLLM

    Settings.llm = MockLLM(max_tokens=32)
    Settings.embed_model = MockEmbedding(embed_dim=64)
    index = VectorStoreIndex.from_documents([Document(text=d) for d in DOCS])
    engine = index.as_query_engine(similarity_top_k=2)

    def invoke(config: Any) -> Any:
        return engine.query("What is the capital of France?")

    return invoke


BUILDERS: dict[str, Callable[[], Invoke]] = {
    "chain": build_chain,
    "tool_loop": build_tool_loop,
    "llamaindex_query": build_llamaindex_query,
    "stream": build_stream,
    "agent": build_agent,
}


def build(name: str) -> Invoke:
    return BUILDERS[name]()
