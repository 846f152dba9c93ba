"""Representative workloads of both frameworks, run with and without llmtrace.

Each workload returns a list of plain values (outputs, or the type and message of the exception a
call raised) that does not depend on run ids, so a traced run can be compared with a baseline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from uuid import uuid4

from langchain.agents import create_agent
from langchain_core.agents import AgentAction, AgentFinish
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import CallbackManager
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models import BaseLLM
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import Generation, LLMResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.tools import tool
from langchain_core.tools.retriever import create_retriever_tool
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core import Document as LIDocument
from llama_index.core import VectorStoreIndex
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent
from llama_index.core.base.llms.types import ImageBlock, TextBlock, ToolCallBlock
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    CustomLLM,
    LLMMetadata,
    MockFunctionCallingLLM,
    MockLLM,
)
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts import PromptTemplate
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import (
    Context,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)
from llmtrace_langchain import LLMTraceCallbackHandler
from pydantic import BaseModel
from tenacity import Future, RetryCallState, Retrying

from tests.langchain.fakes import ScriptedChatModel, SlowChatModel, answer, call


# ---- outcomes --------------------------------------------------------------------------------------------
def outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        return ("ok", fn())
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


async def aoutcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        return ("ok", await fn())
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


def messages_value(messages: list[BaseMessage]) -> list[tuple[Any, ...]]:
    """Messages without their generated ids."""
    return [
        (
            m.type,
            m.content,
            [(c["name"], c["args"], c["id"]) for c in getattr(m, "tool_calls", None) or []],
            getattr(m, "tool_call_id", None),
        )
        for m in messages
    ]


# ---- LangChain ---------------------------------------------------------------------------------------------
@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@tool
def broken_tool(x: int) -> int:
    """Always fails."""
    raise ValueError("tool broke")


def lc_store() -> InMemoryVectorStore:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_documents(
        [
            Document(page_content="Paris is in France", id="d1"),
            Document(page_content="Rome is in Italy", id="d2"),
        ]
    )
    return store


class BrokenRetriever(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        raise LookupError(f"no index for {query}")


class BrokenEmbeddings(DeterministicFakeEmbedding):
    def embed_query(self, text: str) -> list[float]:
        raise ConnectionError(f"embedding service down for {text}")


def _embed_in_chain(text: str) -> list[float]:
    """An embedding model called inside a chain run (a RunnableLambda): nests under the run."""
    return DeterministicFakeEmbedding(size=4).embed_query(text)


class UsageLLM(BaseLLM):
    """A completion model reporting usage the pre-``usage_metadata`` way (``llm_output``)."""

    reply: str = "cached answer"

    @property
    def _llm_type(self) -> str:
        return "usage-llm"

    def _generate(
        self, prompts: list[str], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> LLMResult:
        return LLMResult(
            generations=[[Generation(text=self.reply)] for _ in prompts],
            llm_output={
                "token_usage": {"prompt_tokens": 3, "completion_tokens": 2},
                "model_name": "legacy-1",
            },
        )


class FailingChatModel(ScriptedChatModel):
    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        raise ConnectionError("provider down")


class BindingChatModel(ScriptedChatModel):
    """Binds its tools as LangChain tool objects (they reach the callbacks in ``invocation_params``)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=list(tools))


def lc_agent(name: str = "helper") -> Any:
    """A LangGraph agent (``create_agent``): two tools in parallel, a retriever tool, a final answer."""
    script = [
        call(("add", {"a": 1, "b": 2}, "call_add"), ("weather", {"city": "Paris"}, "call_weather")),
        call(("search_docs", {"query": "Paris"}, "call_search")),
        answer("3, sunny, France"),
    ]
    retriever_tool = create_retriever_tool(
        lc_store().as_retriever(search_kwargs={"k": 1}), "search_docs", "Search the docs."
    )
    return create_agent(BindingChatModel(script=script), tools=[add, weather, retriever_tool], name=name)


def lc_agent_as_tool() -> Any:
    """An unnamed agent that a tool of another unnamed agent runs (it inherits that node's metadata)."""
    inner = create_agent(ScriptedChatModel(script=[answer("inner 3")]), tools=[])

    @tool
    def delegate(question: str) -> str:
        """Ask another agent."""
        return str(inner.invoke({"messages": [("user", question)]})["messages"][-1].content)

    script = [call(("delegate", {"question": "1+2?"}, "call_delegate")), answer("it is 3")]
    return create_agent(ScriptedChatModel(script=script), tools=[delegate])


def _interrupted_agent() -> list[Any]:
    """A run paused by ``interrupt()`` in a tool, then resumed."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command, interrupt

    @tool
    def approve(amount: int) -> str:
        """Needs a human's approval."""
        return str(interrupt({"amount": amount}))

    script = [call(("approve", {"amount": 5}, "call_approve")), answer("approved")]
    agent = create_agent(ScriptedChatModel(script=script), tools=[approve], checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t-1"}}
    paused = agent.invoke({"messages": [("user", "pay 5")]}, config=config)
    resumed = agent.invoke(Command(resume="yes"), config=config)
    return ["__interrupt__" in paused, messages_value(resumed["messages"])]


def lc_rag_chain() -> Any:
    retriever = lc_store().as_retriever(search_kwargs={"k": 1})
    prompt = ChatPromptTemplate.from_messages([("system", "Context: {context}"), ("user", "{question}")])
    model = ScriptedChatModel(script=[answer("France")])
    return (
        {
            "context": retriever | RunnableLambda(lambda docs: " ".join(d.page_content for d in docs)),
            "question": RunnablePassthrough(),
        }
        | prompt
        | model
        | StrOutputParser()
    )


def _flaky() -> Callable[[str], str]:
    attempts = {"n": 0}

    def flaky(text: str) -> str:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise TimeoutError("first attempt times out")
        return text.upper()

    return flaky


def _legacy_agent_callbacks() -> str:
    """A legacy AgentExecutor's callbacks, fired through LangChain's own callback manager."""
    manager = CallbackManager.configure()
    run = manager.on_chain_start({"name": "AgentExecutor"}, {"input": "x"}, run_id=uuid4())
    state = RetryCallState(Retrying(), None, (), {})
    state.attempt_number = 2
    failed: Future = Future(attempt_number=1)
    failed.set_exception(TimeoutError("attempt 1"))
    state.outcome = failed
    run.on_retry(state)
    run.on_agent_action(AgentAction(tool="add", tool_input={"a": 1}, log=""))
    run.on_agent_finish(AgentFinish(return_values={"output": "done"}, log=""))
    run.on_chain_end({"output": "done"})
    manager.on_chain_start({"name": "abandoned"}, {"input": "x"}, run_id=uuid4())  # never ends
    return "done"


def lc_workload_sync() -> list[Any]:
    """Every LangChain callback and every wrapper of the instrumentor is reached."""
    out: list[Any] = []
    agent = lc_agent()
    out.append(outcome(lambda: messages_value(agent.invoke({"messages": [("user", "go")]})["messages"])))
    out.append(outcome(lambda: lc_rag_chain().invoke("Where is Paris?")))
    # a hand-registered handler (with or without the instrumentor: it then replaces the automatic one)
    mine = {"callbacks": [LLMTraceCallbackHandler()]}
    out.append(outcome(lambda: lc_rag_chain().invoke("Where is Paris?", config=mine)))
    model = ScriptedChatModel(script=[answer("streamed words here")])
    out.append(outcome(lambda: "".join(str(c.content) for c in model.stream("hi"))))
    llm = UsageLLM(cache=InMemoryCache())
    out.append(outcome(lambda: [llm.invoke("q"), llm.invoke("q")]))  # miss, then hit
    out.append(outcome(lambda: FailingChatModel(script=[answer("x")]).invoke("hi")))
    out.append(outcome(lambda: broken_tool.invoke({"x": 1})))
    out.append(outcome(lambda: BrokenRetriever().invoke("q")))
    out.append(outcome(lambda: RunnableLambda(_embed_in_chain).invoke("embed me")))
    out.append(outcome(lambda: BrokenEmbeddings(size=4).embed_query("q")))
    out.append(
        outcome(
            lambda: (
                RunnableLambda(_flaky())
                .with_retry(stop_after_attempt=2, wait_exponential_jitter=False)
                .invoke("retry")
            )
        )
    )
    out.append(outcome(_legacy_agent_callbacks))
    out.append(
        outcome(lambda: messages_value(lc_agent_as_tool().invoke({"messages": [("user", "go")]})["messages"]))
    )
    out.append(outcome(_interrupted_agent))
    out.append(outcome(lambda: ScriptedChatModel(script=[answer("a picture")]).invoke(MULTIMODAL).content))
    # a rate limiter: its acquire is wrapped, for invoke and for stream
    limited = ScriptedChatModel(script=[answer("waited")], rate_limiter=_limiter())
    out.append(outcome(lambda: limited.invoke("hi").content))
    out.append(outcome(lambda: "".join(str(c.content) for c in limited.stream("hi"))))
    return out


def _limiter() -> InMemoryRateLimiter:
    return InMemoryRateLimiter(requests_per_second=1000, check_every_n_seconds=0.001, max_bucket_size=1)


PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
MULTIMODAL = [
    HumanMessage(
        content=[
            {"type": "text", "text": "what is in these?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
            {"type": "file", "file": {"file_id": "file-1"}},
        ]
    ),
    AIMessage(content=[{"type": "reasoning", "reasoning": "look closely"}, {"type": "text", "text": "ok"}]),
    HumanMessage(content="and now?"),
]


async def lc_workload_async() -> list[Any]:
    out: list[Any] = []
    agent = lc_agent()
    result = await aoutcome(lambda: agent.ainvoke({"messages": [("user", "go")]}))
    out.append(result if result[0] == "raised" else ("ok", messages_value(result[1]["messages"])))
    out.append(await aoutcome(lambda: lc_rag_chain().ainvoke("Where is Paris?")))
    model = ScriptedChatModel(script=[answer("async streamed words")])

    async def astream() -> str:
        return "".join([str(c.content) async for c in model.astream("hi")])

    out.append(await aoutcome(astream))
    llm = UsageLLM(cache=InMemoryCache())

    async def twice() -> list[str]:
        return [await llm.ainvoke("q"), await llm.ainvoke("q")]

    out.append(await aoutcome(twice))
    out.append(await aoutcome(lambda: FailingChatModel(script=[answer("x")]).ainvoke("hi")))
    out.append(await aoutcome(lambda: DeterministicFakeEmbedding(size=4).aembed_documents(["a", "b"])))
    out.append(await aoutcome(lambda: BrokenEmbeddings(size=4).aembed_query("q")))
    # cancelled while awaiting a model: inside a chain, and on its own
    slow = SlowChatModel(script=[answer("late")])
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | slow
    out.append(await aoutcome(lambda: asyncio.wait_for(chain.ainvoke({"q": "hi"}), 0.01)))
    out.append(await aoutcome(lambda: asyncio.wait_for(slow.ainvoke("hi"), 0.01)))
    out.append(await aoutcome(lambda: asyncio.wait_for(slow_tool.ainvoke({"x": "q"}), 0.01)))
    return out


@tool
async def slow_tool(x: str) -> str:
    """Answers after a second."""
    await asyncio.sleep(1)
    return x


def lc_workload() -> list[Any]:
    return [*lc_workload_sync(), *asyncio.run(lc_workload_async())]


# ---- LlamaIndex --------------------------------------------------------------------------------------------
def li_add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def li_broken(a: int) -> int:
    """Always fails."""
    raise RuntimeError("tool broke")


def scripted(*turns: Any) -> Callable[..., ChatMessage]:
    """A response generator answering each call with the next scripted turn."""
    queue = list(turns)

    def respond(messages: Any, **kwargs: Any) -> ChatMessage:
        turn = queue.pop(0)
        if isinstance(turn, str):
            return ChatMessage(role="assistant", content=turn)
        return ChatMessage(
            role="assistant",
            blocks=[
                ToolCallBlock(tool_call_id=cid, tool_name=name, tool_kwargs=args) for cid, name, args in turn
            ],
        )

    return respond


def li_agent(name: str = "calculator") -> FunctionAgent:
    llm = MockFunctionCallingLLM(
        response_generator=scripted(
            [("call_1", "li_add", {"a": 1, "b": 2}), ("call_2", "li_broken", {"a": 3})], "3 and an error"
        )
    )
    return FunctionAgent(name=name, description="does math", tools=[li_add, li_broken], llm=llm)


def li_multi_agent() -> AgentWorkflow:
    front = FunctionAgent(
        name="front",
        description="routes",
        tools=[],
        can_handoff_to=["math"],
        llm=MockFunctionCallingLLM(
            response_generator=scripted([("h1", "handoff", {"to_agent": "math", "reason": "numbers"})])
        ),
    )
    math = FunctionAgent(
        name="math",
        description="adds",
        tools=[li_add],
        llm=MockFunctionCallingLLM(response_generator=scripted([("c1", "li_add", {"a": 2, "b": 2})], "4")),
    )
    return AgentWorkflow(agents=[front, math], root_agent="front")


async def li_approve(ctx: Context, a: int) -> str:
    """Asks a human first (human in the loop: the call_tool step runs again once the answer comes)."""
    answer = await ctx.wait_for_event(
        HumanResponseEvent, waiter_id="approval", waiter_event=InputRequiredEvent(prefix="approve?")
    )
    return f"approved={answer.response} a={a}"


li_approve.__annotations__["ctx"] = Context  # LlamaIndex finds the Context parameter by its annotation object


async def li_hitl() -> str:
    llm = MockFunctionCallingLLM(response_generator=scripted([("h1", "li_approve", {"a": 2})], "approved"))
    handler = FunctionAgent(name="careful", tools=[li_approve], llm=llm).run("go")
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            handler.ctx.send_event(HumanResponseEvent(response="yes"))
    return str(await handler)


def li_lookup(a: int) -> str:
    """An answer the user gets verbatim."""
    return f"answer {a}"


def li_direct_agent() -> FunctionAgent:
    llm = MockFunctionCallingLLM(response_generator=scripted([("d1", "li_lookup", {"a": 2})]))
    direct = FunctionTool.from_defaults(li_lookup, return_direct=True)
    return FunctionAgent(name="direct", tools=[direct], llm=llm)


class LIInvoice(BaseModel):
    total: int


def li_predicting_llm() -> MockFunctionCallingLLM:
    """predict_and_call (a model call and the tool it chose), then structured_predict (its output
    class run as a tool: response parsing)."""
    return MockFunctionCallingLLM(
        response_generator=scripted(
            [("p1", "li_add", {"a": 1, "b": 2})],
            [("s1", "LIInvoice", {"total": 3})],
            [("p2", "li_add", {"a": 2, "b": 3})],
            [("s2", "LIInvoice", {"total": "many"})],
        )
    )


async def li_predict_workload() -> list[Any]:
    out: list[Any] = []
    llm = li_predicting_llm()
    tools = [FunctionTool.from_defaults(li_add)]
    prompt = PromptTemplate("the invoice of {text}")
    out.append(outcome(lambda: str(llm.predict_and_call(tools, "1 + 2?"))))
    out.append(outcome(lambda: llm.structured_predict(LIInvoice, prompt, text="x").total))
    out.append(await aoutcome(lambda: _astr(llm.apredict_and_call(tools, "2 + 3?"))))
    out.append(await aoutcome(lambda: _astr(llm.astructured_predict(LIInvoice, prompt, text="y"))))
    out.append(await aoutcome(li_hitl))
    out.append(await aoutcome(lambda: _astr(li_direct_agent().run("go"))))
    return out


class UsageLLM2(CustomLLM):
    """A completion model reporting OpenAI-style raw usage, whose stream breaks after one chunk."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="raw-usage-1")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        usage = {"prompt_tokens": 3, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 1}}
        return CompletionResponse(
            text=f"echo {prompt}", raw={"id": "r-1", "model": "raw-usage-1", "usage": usage}
        )

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text="partial", delta="partial")
            raise ValueError("stream broke")

        return gen()


class ResponsesLLM(MockLLM):
    """Answers like OpenAI's Responses API (a status, not a finish reason)."""

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(
            text="done", raw={"object": "response", "status": "completed", "output": []}
        )


class Answer(Workflow):
    @step
    async def answer(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=42)


class Stuck(Workflow):
    """A run whose step waits until its handler's ``cancel_run()`` stops it."""

    @step
    async def wait(self, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(30)
        return StopEvent(result="late")


class FailingRun(Workflow):
    @step
    async def fail(self, ev: StartEvent) -> StopEvent:
        raise ValueError("step failed")


class ManyCalls(Workflow):
    """A run with as many model calls as make its list of children prune itself (64)."""

    @step
    async def calls(self, ev: StartEvent) -> StopEvent:
        llm = MockLLM(max_tokens=1)
        for i in range(64):
            await llm.acomplete(str(i))
        return StopEvent(result="done")


async def _cancelled_run() -> str:
    handler = Stuck(timeout=60).run()
    await asyncio.sleep(0.05)  # the step is waiting
    await handler.cancel_run()
    try:
        await handler
    except Exception as exc:
        return type(exc).__name__
    return "finished"


LI_DOCS = [LIDocument(text="The sky is blue.", id_="sky"), LIDocument(text="Grass is green.", id_="grass")]
_li_dispatcher = get_dispatcher(__name__)


class CohereRerank(BaseNodePostprocessor):
    """An offline reranker reporting its work like LlamaIndex's rerankers (a provider-like name)."""

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        _li_dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=1, model_name="rr"))
        kept = [NodeWithScore(node=n.node, score=float(len(n.node.get_content()))) for n in nodes][:1]
        _li_dispatcher.event(ReRankEndEvent(nodes=kept))
        return kept


HELD: list[Any] = []
"""Responses a workload keeps unread until the test that ran it ends (``HELD.clear()``)."""


async def li_workload_async() -> list[Any]:
    out: list[Any] = []
    index = VectorStoreIndex.from_documents(LI_DOCS, embed_model=MockEmbedding(embed_dim=8))
    engine = index.as_query_engine(llm=MockLLM(max_tokens=2), similarity_top_k=2)
    out.append(outcome(lambda: str(engine.query("what color is the sky?"))))
    out.append(await aoutcome(lambda: _astr(engine.aquery("what color is grass?"))))
    reranked = index.as_query_engine(llm=MockLLM(max_tokens=2), node_postprocessors=[CohereRerank()])
    out.append(outcome(lambda: str(reranked.query("sky?"))))
    streamed = index.as_query_engine(llm=MockLLM(max_tokens=2), streaming=True)
    out.append(outcome(lambda: list(streamed.query("sky?").response_gen)))
    out.append(await aoutcome(lambda: _astream(streamed.aquery("grass?"))))  # model call made lazily
    context_chat = index.as_chat_engine(
        chat_mode="context", llm=MockLLM(max_tokens=2), memory=ChatMemoryBuffer.from_defaults()
    )
    out.append(outcome(lambda: list(context_chat.stream_chat("hi").response_gen)))
    out.append(await aoutcome(lambda: _astream(context_chat.astream_chat("hi"))))
    never_read = streamed.query("never read")  # held: its engine waits, ended by eviction (uninstrument)
    HELD.append(never_read)
    out.append(outcome(lambda: type(never_read).__name__))
    out.append(outcome(lambda: type(streamed.query("dropped unread")).__name__))  # freed: ends as cancelled
    chat_engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=2))
    out.append(outcome(lambda: "".join(chat_engine.stream_chat("hi").response_gen)))
    # CustomLLM.astream_chat -> stream_chat, made by the engine's history-writer task: one model call
    achat_engine = SimpleChatEngine.from_defaults(
        llm=MockLLM(max_tokens=2), memory=ChatMemoryBuffer.from_defaults()
    )
    out.append(await aoutcome(lambda: _astream(achat_engine.astream_chat("hi"))))
    out.append(await aoutcome(lambda: _astr(li_agent().run("compute"))))
    out.append(await aoutcome(lambda: _astr(li_multi_agent().run(user_msg="2+2?"))))
    out.extend(await li_predict_workload())
    llm = MockLLM(max_tokens=2)
    messages = [ChatMessage(role="user", content="hi")]
    out.append(outcome(lambda: llm.chat(messages).message.content))
    picture = ChatMessage(
        role="user", blocks=[TextBlock(text="what is this?"), ImageBlock(url="https://x.test/a.png")]
    )
    out.append(outcome(lambda: llm.chat([picture]).message.content))
    out.append(outcome(lambda: ResponsesLLM().chat(messages).message.content))
    out.append(outcome(lambda: [c.delta for c in llm.stream_complete("x y")]))
    out.append(outcome(lambda: [c.delta for c in llm.stream_chat(messages)]))

    async def astream() -> list[Any]:
        return [c.delta async for c in await llm.astream_chat(messages)]

    out.append(await aoutcome(astream))
    out.append(outcome(lambda: llm.complete()))  # missing prompt: raises inside the dispatcher span
    raw = UsageLLM2()
    out.append(outcome(lambda: raw.complete("usage").text))
    out.append(outcome(lambda: [c.delta for c in raw.stream_complete("x")]))  # fails after its span
    out.append(await aoutcome(lambda: _astr(Answer().run())))
    out.append(await aoutcome(_cancelled_run))  # stopped by cancel_run()
    out.append(await aoutcome(lambda: _astr(FailingRun().run())))
    out.append(await aoutcome(lambda: _astr(ManyCalls().run())))
    abandoned = llm.stream_complete("never read")  # ended by eviction (uninstrument)
    out.append(outcome(lambda: type(abandoned).__name__))
    return out


async def _astr(awaitable: Any) -> str:
    return str(await awaitable)


async def _astream(awaitable: Any) -> list[str]:
    response = await awaitable
    return [token async for token in response.async_response_gen()]


def li_workload() -> list[Any]:
    return asyncio.run(li_workload_async())
