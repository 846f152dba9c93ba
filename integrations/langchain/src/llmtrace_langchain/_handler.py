"""The LangChain callback handler: LangChain runs in, llmtrace invocations out.

Parents come only from ``parent_run_id`` (a bounded map of runs); the OTel context is never
attached in a callback. Chains are decided lazily: a chain that is not a model, tool or
retriever gets a span only if it is the root (``invoke_workflow``), an agent (a LangGraph graph,
``create_agent``, a legacy ``AgentExecutor``: ``invoke_agent``) or ``keep_chain_spans`` is set;
whether a chain is a graph is known from its first child (LangGraph nodes carry
``langgraph_node`` metadata; a subgraph's nodes are a checkpoint namespace deeper), so the span is
started then, with the chain's own start time (and a root's caller's OTel context as its parent).
Plumbing chains make no span and their children hang under the nearest traced ancestor.

Each run is traced by one llmtrace handler, the first that sees it start (``_owners``): several may
be registered for one call, at different levels, and a run whose parent another handler traces
hangs under that handler's span.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NewType, TypeVar
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.globals import get_llm_cache
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables.config import var_child_runnable_config
from opentelemetry import _logs, metrics, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from llmtrace import _fork, _parts, semconv
from llmtrace._errors import classify_error
from llmtrace._handler import TelemetryHandler
from llmtrace._invocation import (
    AgentInvocation,
    Invocation,
    ModelInvocation,
    RetrievalInvocation,
    ToolInvocation,
)
from llmtrace._runmap import RunMap, add_child
from llmtrace._safety import never_raise, report_internal_error
from llmtrace._settings import settings
from llmtrace_langchain import _extract
from llmtrace_langchain._cache import note_model_start, pending_cache_source

if TYPE_CHECKING:
    from langchain_core.agents import AgentAction, AgentFinish
    from langchain_core.documents import Document
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult
    from tenacity import RetryCallState

try:  # LangChain's markers of the callback handlers that make a chat model stream (private)
    from langchain_core.tracers._streaming import _StreamingCallbackHandler

    _STREAMING_HANDLERS: tuple[type, ...] = (_StreamingCallbackHandler,)
except ImportError:  # moved or removed: a call streamed only this way is flagged from its first chunk
    _STREAMING_HANDLERS = ()
try:
    from langchain_core.tracers._streaming import _V2StreamingCallbackHandler

    _STREAMING_HANDLERS += (_V2StreamingCallbackHandler,)
except ImportError:  # an older langchain-core (no stream_events v3)
    pass

FRAMEWORK = "langchain"
LEGACY_AGENT_NAMES = frozenset({"AgentExecutor"})
MODEL_NODE = "model"
"""The node of a ``create_agent`` graph that calls the model, with the agent's system prompt first.
Middleware may call models of their own in it (a guardrail, a router, a tool selector): the agent's
own call is the one whose answer the node puts into the state (see ``_settle``)."""
_MAX_ANSWERS = 32
"""Model calls of one model node kept until the node ends (``_Run.answers``; the oldest are dropped)."""
_NOT_ERRORS = frozenset({"GraphBubbleUp", "GraphInterrupt", "NodeInterrupt", "ParentCommand"})
"""LangGraph control flow raised as exceptions: an interrupt or a command is not a failure."""
_INTERRUPTS = frozenset({"GraphInterrupt", "NodeInterrupt"})
"""A run paused for human input (``interrupt()``): it ends normally, but it did not finish."""

_LEAF_KINDS = (ModelInvocation, ToolInvocation, RetrievalInvocation)
_monotonic = time.monotonic
"""The run maps' clock (``time.monotonic``), read once per streamed chunk."""
_CHUNK_REFRESH_S = 0.125
"""A streamed chunk within this long of its run's last refresh does not call ``refresh_up``, which
would do nothing then for any TTL of a second or more (it refreshes at most once a second, or
every eighth of the TTL): one clock read per chunk instead of a call."""
_ABANDONED = (asyncio.CancelledError, GeneratorExit)
"""A task cancelled or a stream closed by its consumer: LangChain reports it to the chains that were
running (``on_chain_error``) but not to the model or tool they were awaiting."""

RunKey = NewType("RunKey", object)
"""A run id as a key of the run map (only made by ``_key``)."""


def _key(run_id: object) -> RunKey:
    """The run map key of a run id: a UUID's int (hashed in C; ``UUID.__hash__`` is Python code, and
    the map hashes a key several times per callback), anything else (malformed ids) as is."""
    return RunKey(run_id.int if isinstance(run_id, UUID) else run_id)


_DECIDE_LOCKS = tuple(_fork.lock() for _ in range(64))

_owners: dict[RunKey, LLMTraceCallbackHandler] = {}
"""The llmtrace handler that traces each open run, for all of them in the process: a run gets to
several handlers when several are registered (a hand-registered handler in a sub-agent's config
under a graph that has its own, or under ``llmtrace.instrument()``'s). The first to see a run start
traces it and the others leave it alone (one span, one usage record); a handler whose run's parent
another one traces hangs the run under that handler's span. An entry is added when a run starts
(one ``setdefault``) and removed when it ends or its owner evicts it; bounded besides (see
``_claim``), and emptied in a forked child (the runs are the parent's)."""
_OWNERS_PER_MAX_OPEN_RUNS = 8
"""The registry holds at most this many times ``max_open_runs`` entries (over it, it is emptied:
only links between handlers of the runs then open are lost)."""
_fork.in_child(_owners.clear)


def _claim(handler: LLMTraceCallbackHandler, key: RunKey) -> bool:
    """Whether ``handler`` traces the run ``key`` that is starting: it is the first llmtrace handler
    to see it start."""
    owners = _owners
    if len(owners) >= settings.max_open_runs * _OWNERS_PER_MAX_OPEN_RUNS:
        owners.clear()
    return owners.setdefault(key, handler) is handler


# chain states
_PENDING = 0
_PLUMBING = 1
_TRACED = 2


class _Run:
    """One LangChain run: its invocation (if traced) and where its children hang."""

    __slots__ = (
        "agent",
        "answers",
        "caller",
        "children",
        "done_calls",
        "final",
        "in_tool",
        "inputs",
        "invocation",
        "key",
        "metadata",
        "name",
        "node_messages",
        "ns",
        "parent",
        "refreshed",
        "root",
        "start_ns",
        "state",
        "system",
        "tools",
        "up",
    )
    system: Any
    """The system prompt a model call under a model node was sent, as the parts of
    ``gen_ai.system_instructions`` (content capture only, read with getattr; see ``_note_system_prompt``)."""
    node_messages: Any
    """The state messages of a ``create_agent`` model node, kept (content capture only, read with
    getattr) until it ends: a system message a model call in it starts with and that is not the
    state's first message was added by the agent (its system prompt) or by a middleware (see
    ``_note_system_prompt``)."""
    ns: Any
    """A chain's LangGraph checkpoint namespace (``langgraph_checkpoint_ns``; set on chains only, read
    with getattr): a graph's run shares the namespace of the node or tool that runs it, its nodes
    are one deeper; a node's or a task's own is new (see ``_starts_graph``)."""
    caller: Context
    """A pending root chain's caller's OTel context, the parent of the span it may get (which starts
    with its first child, maybe in another thread; set only then, read with getattr)."""
    tools: Any
    """A model call's bound tools (``invocation_params["tools"]``), set only under an agent (read with
    getattr: other runs never pay for it); a tool call naming none of them was made up by the model
    (see ``on_llm_end``)."""

    def __init__(
        self, invocation: Invocation | None, parent: Invocation | None, agent: _Run | None, up: _Run | None
    ) -> None:
        self.invocation = invocation
        self.parent = parent
        """The nearest traced ancestor's invocation (children of a plumbing run hang there)."""
        self.agent = agent
        """The nearest agent run (itself for an agent)."""
        self.up = up
        """The parent run (traced or not), if known."""
        self.key: RunKey | None = None
        self.refreshed = 0.0
        """``time.monotonic()`` when a run starting below this one last refreshed its expiry."""
        self.state = _TRACED if invocation is not None else _PLUMBING
        self.name: str | None = None
        self.metadata: Mapping[str, Any] | None = None
        self.start_ns = 0
        self.root = False
        self.done_calls: set[str] | None = None
        self.final = False
        """No ``final`` step to add when the run ends (one was recorded, or the run was interrupted)."""
        self.in_tool = False
        """A chain started by a tool: not a node of the graph around it, whatever metadata it inherits."""
        self.inputs: Any = None
        """A pending chain's inputs, kept only while content is captured (for the span it may get)."""
        self.children: list[RunKey] | None = None
        """Keys of the runs started under this one (those that ended are pruned now and then)."""
        self.answers: list[Any] | None = None
        """A ``create_agent`` model node's model calls that answered (a list on model nodes only), as
        (answer message, tool calls, bound tools, system prompt): as the node ends, those of the call
        whose answer it puts into the state are the agent's (see ``_settle``)."""

    @property
    def span_parent(self) -> Invocation | None:
        return self.invocation if self.invocation is not None else self.parent


def _up_key(run: _Run) -> RunKey | None:
    up = run.up
    return None if up is None else up.key


def _capturing() -> bool:
    return settings.content.enabled


def _not_an_error(error: BaseException) -> bool:
    return any(cls.__name__ in _NOT_ERRORS for cls in type(error).__mro__)


def _is_interrupt(error: BaseException) -> bool:
    return any(cls.__name__ in _INTERRUPTS for cls in type(error).__mro__)


def _end_raised(invocation: Invocation, error: BaseException) -> None:
    """End the invocation of a run that raised ``error``: a stream closed by its consumer is a
    cancellation, LangGraph's control flow (an interrupt) ends it normally, anything else fails it."""
    if isinstance(error, GeneratorExit):
        invocation.cancel()
    elif _not_an_error(error):
        invocation.stop()
    else:
        invocation.fail(error)


class LLMTraceCallbackHandler(BaseCallbackHandler):
    """Turns LangChain and LangGraph callbacks into OpenTelemetry GenAI spans and metrics.

    Add it to ``config={"callbacks": [LLMTraceCallbackHandler()]}`` (or let
    ``llmtrace.instrument()`` add one everywhere). ``keep_chain_spans=True`` keeps a span
    (``invoke_workflow {name}``) for every chain, including LangChain's plumbing runnables and
    LangGraph nodes, instead of re-parenting their children to the nearest traced run.
    """

    run_inline = True
    raise_error = False
    # Read by LangChain before every callback; the base class answers each through a property call.
    ignore_llm = False
    ignore_retry = False
    ignore_chain = False
    ignore_agent = False
    ignore_retriever = False
    ignore_chat_model = False
    ignore_custom_event = False

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        logger_provider: _logs.LoggerProvider | None = None,
        *,
        keep_chain_spans: bool = False,
    ) -> None:
        super().__init__()
        self.telemetry = TelemetryHandler(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            logger_provider=logger_provider,
            framework=FRAMEWORK,
        )
        self.keep_chain_spans = keep_chain_spans
        self._runs: RunMap[RunKey, _Run] = RunMap(_evict)

    # ---- run bookkeeping -------------------------------------------------------------------
    def open_runs(self) -> int:
        """How many runs are open (for diagnostics and tests)."""
        return len(self._runs)

    def invocation(self, run_id: UUID) -> Invocation | None:
        """The live invocation of a traced run (for the instrumentor's call-scope wrappers)."""
        run = self._runs.peek(_key(run_id))
        return None if run is None else run.invocation

    def child_parent(self, run_id: UUID) -> Invocation | None:
        """The invocation a child of run ``run_id`` hangs under, as a child run's callback would find it
        (for operations that fire no callbacks: the instrumentor's embeddings spans)."""
        run = self._parent(run_id, None)
        return None if run is None else run.span_parent

    def close(self) -> None:
        """End every open run (on uninstrument)."""
        self._runs.clear()

    def _end_run(self, run_id: UUID, kind: type[Invocation] | None) -> _Run | None:
        """Take the run out of the map if it is of the kind this end callback is for.

        ``kind`` None means a chain (agent, workflow or plumbing). A callback for another kind
        of run leaves the run in place, so its own end (or eviction) still ends its span.
        """
        key = _key(run_id)
        run = self._runs.peek(key)
        if run is None:
            return None
        invocation = run.invocation
        if kind is None:
            if isinstance(invocation, _LEAF_KINDS):
                return None
        elif not isinstance(invocation, kind):
            return None
        _owners.pop(key, None)
        return self._runs.pop(key)

    def _put_leaf(
        self, run_id: UUID, invocation: Invocation, parent: Invocation | None, parent_run: _Run | None
    ) -> _Run:
        """Register a model, tool or retriever run (first: whatever fails later, its span still ends)."""
        agent = parent_run.agent if parent_run is not None else None
        key = _key(run_id)
        run = _Run(invocation, parent, agent, parent_run)
        run.key = key
        self._runs.put(key, run)
        if parent_run is not None:
            self._adopt(parent_run, key)
        return run

    def _adopt(self, parent_run: _Run, key: RunKey) -> None:
        """Remember ``key`` as a child of ``parent_run`` (to end it if the parent is abandoned)."""
        children = parent_run.children
        if children is None:
            parent_run.children = [key]
        else:
            # a child another handler traces is open as long as it is owned
            parent_run.children = add_child(children, key, _owners.__contains__)

    def _end_abandoned(self, run: _Run, error: BaseException) -> None:
        """End the runs still open below ``run``, deepest first, as ``run`` ends with ``error``."""
        found: list[_Run] = []
        pending = list(run.children or ())
        while pending:
            key = pending.pop()
            child = self._runs.pop(key)
            if child is None:  # traced by another handler (one registered deeper in the call)?
                owner = _owners.get(key)
                if owner is None or owner is self:
                    continue
                child = owner._runs.pop(key)
                if child is None:
                    continue
            _owners.pop(key, None)
            found.append(child)
            if child.children:
                pending.extend(child.children)
        for child in reversed(found):
            if child.invocation is not None:
                _end_raised(child.invocation, error)

    def _end_failed(self, run: _Run, error: BaseException) -> None:
        """End a run whose error callback came (its open children too if it was abandoned)."""
        if isinstance(error, _ABANDONED):
            self._end_abandoned(run, error)
        if run.invocation is not None:
            _end_raised(run.invocation, error)

    def _parent(self, parent_run_id: UUID | None, child_metadata: Mapping[str, Any] | None) -> _Run | None:
        if parent_run_id is None:
            # Reported as a root. LangChain code that hands its caller's config to a child instead
            # of its own child config (RunnableWithFallbacks) loses the parent its context still names.
            parent_run_id = current_run_id()
            if parent_run_id is None:
                return None
        key = _key(parent_run_id)
        owner = self
        run = self._runs.get(key)
        if run is None:  # a run another llmtrace handler traces (registered at another level)?
            found = _owners.get(key)
            if found is None or found is self:
                return None
            owner = found
            run = owner._runs.get(key)
            if run is None:
                return None
        if run.state == _PENDING:
            owner._decide(run, child_metadata)
        if run.up is not None:
            owner._runs.refresh_up(run.key, _up_key)
        return run

    def _decide(self, run: _Run, child_metadata: Mapping[str, Any] | None) -> None:
        """Decide what a pending chain is, now that its first child (or its end) is known.

        Under a lock of a few shared by all runs (by the run's identity): children of this chain
        starting in other threads wait for its span, runs of other chains almost never do."""
        with _DECIDE_LOCKS[(id(run) >> 4) % len(_DECIDE_LOCKS)]:
            if run.state != _PENDING:
                return
            own = run.metadata or {}
            is_graph = _starts_graph(run, own, child_metadata)
            if is_graph:
                self._start_agent(run, _graph_name(run, own), own)
            elif run.root or self.keep_chain_spans:
                run.invocation = self.telemetry.start_workflow(
                    run.name, parent=_span_parent(run), start_time_ns=run.start_ns
                )
                run.state = _TRACED
            else:
                run.state = _PLUMBING
            run.metadata = None
            inputs, run.inputs = run.inputs, None
            if inputs is not None and run.invocation is not None:
                _set_input(run.invocation, inputs)

    def _start_agent(self, run: _Run, name: str | None, metadata: Mapping[str, Any]) -> None:
        invocation = self.telemetry.start_agent(
            name, parent=_span_parent(run), start_time_ns=run.start_ns or None
        )
        run.invocation = invocation
        run.agent = run
        run.state = _TRACED
        invocation.conversation_id = _extract.conversation_id(metadata)

    # ---- chains and agents -------------------------------------------------------------------
    @never_raise
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        key = _key(run_id)
        if not _claim(self, key):
            return
        md = metadata or {}
        parent_run = self._parent(parent_run_id, md)
        parent = parent_run.span_parent if parent_run is not None else None
        agent_run = parent_run.agent if parent_run is not None else None
        run = _Run(None, parent, agent_run, parent_run)
        run.ns = md.get("langgraph_checkpoint_ns")
        name = _extract.run_name(serialized, kwargs.get("name"))
        agent_name = md.get("lc_agent_name")
        # a graph a tool runs (an agent used as a tool) inherits the enclosing node's metadata
        in_tool = parent_run is not None and isinstance(parent_run.invocation, ToolInvocation)
        if name in LEGACY_AGENT_NAMES or (
            isinstance(agent_name, str)
            and (
                (in_tool and name == agent_name)
                or (
                    (agent_run is None or _agent_name(agent_run) != agent_name)
                    and (parent_run is None or "langgraph_node" not in md or name == agent_name)
                )
            )
        ):
            run.start_ns = 0
            self._start_agent(run, agent_name if isinstance(agent_name, str) else name, md)
        else:  # decided by its first child: a graph (a subgraph node too), the root, or plumbing
            run.state = _PENDING
            if parent is None:
                run.root = True
                run.caller = otel_context.get_current()
            run.in_tool = in_tool
            run.name = name
            run.metadata = md
            run.start_ns = time.time_ns()
            if _capturing():
                run.inputs = inputs
        if (
            parent_run is not None
            and parent_run is agent_run
            and run.agent is not run
            and md.get("langgraph_node") == MODEL_NODE
        ):  # the agent's model node (the chains run in it inherit its metadata)
            run.answers = []
            _keep_node_messages(run, agent_run, inputs)
        run.key = key
        self._runs.put(key, run)  # first: whatever fails below, the run's span still gets ended
        if parent_run is not None:
            self._adopt(parent_run, key)
        if run.state == _TRACED and _capturing() and run.invocation is not None:
            _set_input(run.invocation, inputs)

    @never_raise
    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._end_run(run_id, None)
        if run is None:
            return
        if run.state == _PENDING:
            self._decide(run, None)
        answers = run.answers  # a model node's model calls
        invocation = run.invocation
        if invocation is None:
            if answers:
                _settle(run, answers, outputs)
            return
        try:
            if answers:  # a model node with a span (keep_chain_spans)
                _settle(run, answers, outputs)
            if isinstance(invocation, AgentInvocation):
                if not run.final:
                    run.final = True
                    invocation.step(semconv.STEP_FINAL)
                if isinstance(outputs, Mapping) and _STRUCTURED_RESPONSE in outputs:
                    # the agent was given a response_format (create_agent): it answers a JSON object
                    invocation.set_attribute(semconv.GEN_AI_OUTPUT_TYPE, semconv.OUTPUT_TYPE_JSON)
            if _capturing():
                _set_output(invocation, outputs)
        finally:  # the span ends even if reading the outputs failed
            invocation.stop()

    @never_raise
    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._end_run(run_id, None)
        if run is None:
            return
        if run.state == _PENDING:
            self._decide(run, None)
        _note_interrupt(run, error)
        self._end_failed(run, error)

    @never_raise
    def on_agent_action(self, action: AgentAction, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.get(_key(run_id))
        agent_run = run.agent if run is not None else None
        if agent_run is None or not isinstance(agent_run.invocation, AgentInvocation):
            return
        call_id = getattr(action, "tool_call_id", None)
        if isinstance(call_id, str) and agent_run.done_calls and call_id in agent_run.done_calls:
            return  # already reported from the model's tool calls
        agent_run.invocation.step(
            semconv.STEP_ACTION,
            tool_name=str(action.tool),
            tool_call_id=call_id if isinstance(call_id, str) else None,
        )

    @never_raise
    def on_agent_finish(self, finish: AgentFinish, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.get(_key(run_id))
        agent_run = run.agent if run is not None else None
        if agent_run is None or agent_run.final or not isinstance(agent_run.invocation, AgentInvocation):
            return
        agent_run.final = True
        agent_run.invocation.step(semconv.STEP_FINAL)

    # ---- model calls ----------------------------------------------------------------------------
    @never_raise
    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not _claim(self, _key(run_id)):
            return
        params = kwargs.get("invocation_params")
        # content is converted before the span starts: its cost is not the model's latency
        content = _chat_content(messages, params) if _capturing() else None
        invocation = self._start_model(
            semconv.OP_CHAT, serialized, run_id, parent_run_id, metadata, params, tags
        )
        if invocation is None:
            return
        chained = _extract.chained_response_id(serialized, messages)
        if chained is not None:  # ChatOpenAI(use_previous_response_id=True): it wins over a call's own
            invocation.previous_response_id = chained
        if invocation.output_type is None:
            invocation.output_type = _extract.structured_output_type(kwargs.get("options"))
        if content is not None:
            invocation.input_messages, dropped, invocation.tool_definitions = content
            if dropped:
                invocation.mark_truncated(semconv.GEN_AI_INPUT_MESSAGES)
            if parent_run_id is not None:
                self._note_system_prompt(parent_run_id, run_id, messages)

    @never_raise
    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not _claim(self, _key(run_id)):
            return
        content = _extract.prompt_messages(prompts) if _capturing() else None
        invocation = self._start_model(
            semconv.OP_TEXT_COMPLETION,
            serialized,
            run_id,
            parent_run_id,
            metadata,
            kwargs.get("invocation_params"),
            tags,
        )
        if invocation is not None and content is not None:
            invocation.input_messages = content

    def _note_system_prompt(
        self, parent_run_id: UUID, run_id: UUID, messages: Sequence[Sequence[Any]]
    ) -> None:
        """The system prompt a model call of a ``create_agent`` model node was sent: the system message
        the call starts with, if the node's state does not (the agent adds its prompt to its calls; a
        system message of the conversation is in the state, and stays a message). Kept on the call's
        run: it is the agent's if the call is the agent's own (``_settle``), not a middleware's."""
        node = self._runs.peek(_key(parent_run_id))
        state = getattr(node, "node_messages", None)
        if node is None or state is None:
            return
        agent_run = node.agent
        agent = agent_run.invocation if agent_run is not None else None
        if not isinstance(agent, AgentInvocation) or agent.system_instructions is not None:
            return
        prompt = _extract.agent_system_prompt(messages[0] if messages else (), state)
        run = self._runs.peek(_key(run_id)) if prompt is not None else None
        if run is not None:
            run.system = prompt

    def _start_model(
        self,
        operation: str,
        serialized: Mapping[str, Any] | None,
        run_id: UUID,
        parent_run_id: UUID | None,
        metadata: Mapping[str, Any] | None,
        invocation_params: Mapping[str, Any] | None,
        tags: list[str] | None = None,
    ) -> ModelInvocation | None:
        md = metadata or {}
        params = invocation_params or {}
        parent_run = self._parent(parent_run_id, md)
        parent = parent_run.span_parent if parent_run is not None else None
        provider = _extract.provider_name(md, serialized)
        model = _extract.request_model(md, params)
        stream = _extract.is_streaming(params)
        host, port = _extract.serialized_server_address(serialized)
        telemetry = self.telemetry
        start = telemetry.start_chat if operation == semconv.OP_CHAT else telemetry.start_text_completion
        invocation = start(
            model, provider=provider, parent=parent, stream=stream, server_address=host, server_port=port
        )
        # registered first: whatever fails below, the run's span still gets ended
        run = self._put_leaf(run_id, invocation, parent, parent_run)
        # just put (and its ancestors refreshed as it started): its first chunks need not refresh
        run.refreshed = _monotonic()
        if run.agent is not None:
            run.tools = params.get("tools")
        note_model_start(invocation)
        _extract.apply_request_params(invocation, md, params)
        if md:
            invocation.conversation_id = _extract.conversation_id(md)
        if tags:
            invocation.retry_attempt = _extract.retry_attempt(tags)
        # the instrumentor's call-scope wrapper corrects this with the model's own cache; a stream,
        # which consults none, drops it at its end (on_llm_end)
        source = pending_cache_source() if operation == semconv.OP_TEXT_COMPLETION else _global_cache_name()
        if source is not None:
            invocation.cache_source = source
        return invocation

    @never_raise
    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        key = _key(run_id)
        runs = self._runs
        run = runs.peek(key)
        if run is None:
            return
        # a stream that delivers is alive, and so are the runs above it: refreshed at most once a
        # second by refresh_up; a chunk soon after the last refresh costs one clock read
        if _monotonic() - run.refreshed >= _CHUNK_REFRESH_S:
            runs.refresh_up(key, _up_key)
        invocation = run.invocation
        if isinstance(invocation, ModelInvocation) and (token or _carries_something(kwargs.get("chunk"))):
            invocation.chunk()

    @never_raise
    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._end_run(run_id, ModelInvocation)
        if run is None or not isinstance(run.invocation, ModelInvocation):
            return
        invocation = run.invocation
        try:
            gens = _extract.generations(response)
            counts = _extract.usage(response, gens)
            if counts is not None:
                invocation.set_usage(*counts)
            response_id, model, reasons = _extract.response_fields(response, gens)
            invocation.response_id = response_id
            invocation.response_model = model
            invocation.finish_reasons = reasons
            if invocation.operation == semconv.OP_CHAT and _extract.is_cache_replay(gens, run_id):
                invocation.cache_hit = True
                if invocation.cache_source is None:
                    invocation.cache_source = _global_cache_name()
            elif invocation.cache_hit is None and invocation.cache_source is not None:
                # stream() / astream() end with the merged chunks (a ChatGenerationChunk) and look in
                # no cache; invoke, batch and a model streaming inside invoke end with ChatGenerations
                if (
                    invocation.operation == semconv.OP_CHAT
                    and gens
                    and isinstance(gens[0], ChatGenerationChunk)
                ):
                    invocation.cache_source = None
                else:
                    invocation.cache_hit = False
            agent_run = run.agent
            if agent_run is not None and isinstance(agent_run.invocation, AgentInvocation):
                calls = _extract.tool_calls(gens)
                system = getattr(run, "system", None) if _capturing() else None
                node = _model_node(run, agent_run) if calls or system is not None else None
                answers = node.answers if node is not None else None
                if answers is not None:  # the agent's call or a middleware's: known as the node ends
                    if len(answers) >= _MAX_ANSWERS:
                        del answers[0]
                    tools = getattr(run, "tools", None)
                    answers.append((_extract.answer_message(gens), calls, tools, system))
                elif calls:
                    _actions(agent_run, calls, getattr(run, "tools", None), None)
            if _capturing():
                invocation.output_messages = _extract.output_messages(gens)
        finally:  # the span ends even if reading the response failed
            invocation.stop()

    @never_raise
    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._end_run(run_id, ModelInvocation)
        if run is None:
            return
        invocation = run.invocation
        try:
            if (
                isinstance(invocation, ModelInvocation)
                and not invocation.stream
                and invocation.operation == semconv.OP_CHAT
                and _streamed_by_callback()
            ):  # failed before its first chunk, in a stream no parameter asked for (LangGraph's)
                invocation.stream = True
                invocation.set_attribute(semconv.GEN_AI_REQUEST_STREAM, True)
        finally:  # the span ends even if that failed
            self._end_failed(run, error)

    # ---- tools --------------------------------------------------------------------------------------
    @never_raise
    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not _claim(self, _key(run_id)):
            return
        parent_run = self._parent(parent_run_id, metadata)
        parent = parent_run.span_parent if parent_run is not None else None
        ser = serialized or {}
        name = _extract.tool_name(ser, kwargs.get("name")) or "tool"
        call_id = kwargs.get("tool_call_id")
        if call_id is None and isinstance(inputs, Mapping):
            call_id = inputs.get("tool_call_id")
        description = ser.get("description")
        invocation = self.telemetry.start_tool(
            name,
            call_id=call_id if isinstance(call_id, str) else None,
            description=description if isinstance(description, str) else None,
            parent=parent,
        )
        self._put_leaf(run_id, invocation, parent, parent_run)
        if _capturing():
            invocation.arguments = inputs if inputs is not None else input_str

    @never_raise
    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._end_run(run_id, ToolInvocation)
        if run is None or not isinstance(run.invocation, ToolInvocation):
            return
        invocation = run.invocation
        try:
            self._observation(run, invocation)
            if _extract.handled_tool_error(output):
                invocation.fail(semconv.ERROR_TYPE_TOOL_ERROR)
                return
            if _capturing():
                invocation.result = _extract.tool_result(output)
        finally:  # the span ends even if reading the output failed (no-op after fail)
            invocation.stop()

    @never_raise
    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._end_run(run_id, ToolInvocation)
        if run is None or not isinstance(run.invocation, ToolInvocation):
            return
        try:
            if _is_interrupt(error):  # paused for human input: the tool gave no result (yet)
                _note_interrupt(run, error)
            else:
                self._observation(run, run.invocation)
        finally:
            self._end_failed(run, error)

    def _observation(self, run: _Run, invocation: ToolInvocation) -> None:
        agent_run = run.agent
        if agent_run is not None and isinstance(agent_run.invocation, AgentInvocation):
            agent_run.invocation.step(
                semconv.STEP_OBSERVATION, tool_name=invocation.name, tool_call_id=invocation.call_id
            )

    # ---- retrieval ----------------------------------------------------------------------------------
    @never_raise
    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not _claim(self, _key(run_id)):
            return
        md = metadata or {}
        parent_run = self._parent(parent_run_id, md)
        parent = parent_run.span_parent if parent_run is not None else None
        embedding = md.get("ls_embedding_model") or md.get("ls_embedding_provider")
        top_k = md.get("ls_retriever_k", md.get("k"))
        invocation = self.telemetry.start_retrieval(
            _extract.retrieval_source(md, serialized, kwargs.get("name")),
            request_model=embedding if isinstance(embedding, str) else None,
            top_k=top_k if isinstance(top_k, int) and not isinstance(top_k, bool) else None,
            parent=parent,
        )
        self._put_leaf(run_id, invocation, parent, parent_run)
        if _capturing():
            invocation.query = query

    @never_raise
    def on_retriever_end(self, documents: Sequence[Document], *, run_id: UUID, **kwargs: Any) -> None:
        run = self._end_run(run_id, RetrievalInvocation)
        if run is None or not isinstance(run.invocation, RetrievalInvocation):
            return
        try:
            run.invocation.documents = _extract.documents(documents, _capturing())
        finally:  # the span ends even if reading the documents failed
            run.invocation.stop()

    @never_raise
    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._end_run(run_id, RetrievalInvocation)
        if run is not None:
            self._end_failed(run, error)

    # ---- retries ------------------------------------------------------------------------------------
    @never_raise
    def on_retry(self, retry_state: RetryCallState, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.get(_key(run_id))
        target = run.span_parent if run is not None else None
        if target is None:
            return
        attrs: dict[str, Any] = {semconv.LLMTRACE_RETRY_ATTEMPT: int(retry_state.attempt_number)}
        outcome = retry_state.outcome
        if outcome is not None and outcome.failed:
            error = outcome.exception()
            if error is not None:
                attrs[semconv.ERROR_TYPE] = classify_error(error)
        target.add_event(semconv.LLMTRACE_RETRY_EVENT, attrs)

    # ---- cached completions (called by the instrumentor's cache wrapper) ----------------------------
    def cached_completion(
        self,
        serialized: Mapping[str, Any] | None,
        params: Mapping[str, Any],
        metadata: Mapping[str, Any] | None,
        parent_run_id: UUID | None,
        prompt: str,
        cached: Sequence[Any],
        source: str,
    ) -> None:
        """A span for a completion-LLM prompt answered from LangChain's cache (which fires no callbacks)."""
        md = metadata or {}
        parent_run = self._parent(parent_run_id, md)
        parent = parent_run.span_parent if parent_run is not None else None
        invocation = self.telemetry.start_text_completion(
            _extract.request_model(md, params), provider=_extract.provider_name(md, serialized), parent=parent
        )
        _extract.apply_request_params(invocation, md, params)
        invocation.cache_hit = True
        invocation.cache_source = source
        if _capturing():
            invocation.input_messages = _extract.prompt_messages([prompt])
            invocation.output_messages = _extract.output_messages(cached)
        invocation.stop()


def current_run_id() -> Any:
    """The run LangChain has current in this context, whose children a run started here belongs to
    (its ``var_child_runnable_config``, set while a runnable runs its children); None outside any run."""
    config = var_child_runnable_config.get()
    callbacks = config.get("callbacks") if isinstance(config, dict) else None
    return getattr(callbacks, "parent_run_id", None)


def _streamed_by_callback() -> bool:
    """Whether LangChain streams a chat call made here that no parameter asked to stream: a streaming
    callback handler is attached to it (LangGraph's ``stream_mode="messages"``, ``astream_events``),
    as ``BaseChatModel`` decides (``_should_stream``; a model that cannot stream is not told apart).
    The call's handlers are those of the config current where it runs."""
    config = var_child_runnable_config.get()
    callbacks = config.get("callbacks") if isinstance(config, dict) else None
    handlers = getattr(callbacks, "handlers", None)
    if not isinstance(handlers, list) or not _STREAMING_HANDLERS:
        return False
    return any(isinstance(handler, _STREAMING_HANDLERS) for handler in handlers)


def _model_node(run: _Run, agent_run: _Run) -> _Run | None:
    """The ``create_agent`` model node a model call runs in, directly or in a chain a middleware runs
    there (``with_structured_output``), if any: the nearest run above it that is one, below its agent."""
    up = run.up
    while up is not None and up is not agent_run:
        if up.answers is not None:
            return up
        up = up.up
    return None


def _settle(node: _Run, answers: list[Any], outputs: Any) -> None:
    """A model node ended with ``outputs``: the model calls whose answer it puts into the state are
    the agent's own. Their system prompt is the agent's, their tool calls its actions (but those the
    node answers itself: ``ToolStrategy``'s structured response). The calls of middleware (a
    guardrail, a router, a tool selector: their answers stay in the middleware) add nothing. Output
    of a shape not known (no messages in it): every call counts."""
    node.answers = None
    agent_run = node.agent
    agent = agent_run.invocation if agent_run is not None else None
    if agent_run is None or not isinstance(agent, AgentInvocation):
        return
    found = _extract.node_output(outputs)
    for message, calls, tools, system in answers:
        if found is not None and not _extract.is_among(message, found[0]):
            continue
        if system is not None and agent.system_instructions is None:
            agent.system_instructions = system
        if calls:
            _actions(agent_run, calls, tools, found[1] if found is not None else None)


def _actions(
    agent_run: _Run, calls: list[tuple[str | None, str | None]], tools: Any, answered: frozenset[str] | None
) -> None:
    """The agent's ``action`` steps for the tool calls of its model call (bound to ``tools``), but
    those ``answered`` already."""
    agent = agent_run.invocation
    if not isinstance(agent, AgentInvocation):
        return
    # the names of the tools bound to the call, when known (once per call): a name that is none of
    # them is the model's own text, recorded as a fixed value
    declared = _extract.declared_tool_names(tools)
    for tool_name, call_id in calls:
        if answered and call_id in answered:
            continue
        if declared is not None and tool_name not in declared:
            tool_name = _parts.OTHER
        agent.step(semconv.STEP_ACTION, tool_name=tool_name, tool_call_id=call_id)
        if call_id:
            if agent_run.done_calls is None:
                agent_run.done_calls = set()
            agent_run.done_calls.add(call_id)


def _starts_graph(run: _Run, own: Mapping[str, Any], child: Mapping[str, Any] | None) -> bool:
    """Whether a pending chain is a LangGraph graph, from the metadata of its first child: a node
    of a graph under no graph; under a graph's node (a subgraph added as a node, a graph a node, a
    task or a tool runs), a node of a deeper checkpoint namespace than the chain's own, which it
    shares with the run above it (a plain chain there inherits the node's metadata unchanged; a
    node or a functional API task has a namespace of its own, and the tasks it calls are deeper)."""
    if child is None or "langgraph_node" not in child:
        return False
    if "langgraph_node" not in own:
        return True
    namespace = own.get("langgraph_checkpoint_ns")
    if namespace is None or child.get("langgraph_checkpoint_ns") == namespace:
        return False
    return run.in_tool or getattr(run.up, "ns", None) == namespace


_DEFAULT_GRAPH_NAME = "LangGraph"
"""The name of a compiled graph given none (``create_agent`` and ``compile()`` without a name)."""


def _graph_name(run: _Run, own: Mapping[str, Any]) -> str | None:
    """The agent name of a graph decided from its first child: its ``lc_agent_name`` unless inherited
    from the enclosing agent (or, in a tool, from the enclosing node), else its run name; a subgraph
    without a name of its own run by a graph's node (not by a tool) is named after that node."""
    name = own.get("lc_agent_name")
    if run.in_tool or not isinstance(name, str) or not name:
        name = None
    elif run.agent is not None and _agent_name(run.agent) == name:
        name = None  # the enclosing agent's name, which everything under it inherits
    if name is None:
        name = run.name
        node = own.get("langgraph_node")
        if name == _DEFAULT_GRAPH_NAME and not run.in_tool and isinstance(node, str) and node:
            name = node
    return name


def _span_parent(run: _Run) -> Invocation | Context | None:
    """The parent of a chain's span: its nearest traced ancestor, else (a root) its caller's context."""
    parent = run.parent
    if parent is not None:
        return parent
    return getattr(run, "caller", None)


def _carries_something(chunk: Any) -> bool:
    """Whether a streamed chunk without text carries anything else: a tool call, usage, a finish
    reason or other metadata (not the empty ``chunk_position="last"`` chunk LangChain itself adds
    at the end of a chat stream whose model did not mark its last one)."""
    if chunk is None:
        return False
    message = getattr(chunk, "message", None)
    if message is None:  # a completion LLM's GenerationChunk
        return bool(getattr(chunk, "text", None) or getattr(chunk, "generation_info", None))
    return bool(
        message.content
        or getattr(message, "tool_call_chunks", None)
        or getattr(message, "usage_metadata", None)
        or message.response_metadata
        or message.additional_kwargs
        or getattr(chunk, "generation_info", None)
    )


def _note_interrupt(run: _Run, error: BaseException) -> None:
    """A run raised ``interrupt()``'s pause: its agent has not finished (no ``final`` step)."""
    agent_run = run.agent
    if agent_run is not None and _is_interrupt(error):
        agent_run.final = True  # nothing more to add when it ends


def _agent_name(run: _Run) -> str | None:
    invocation = run.invocation
    return invocation.name if isinstance(invocation, AgentInvocation) else None


def _global_cache_name() -> str | None:
    cache = get_llm_cache()
    return None if cache is None else type(cache).__name__


def _chat_content(
    messages: Sequence[Sequence[Any]], params: Mapping[str, Any] | None
) -> tuple[list[dict[str, Any]], int, list[dict[str, Any]] | None] | None:
    """(input messages, how many of the oldest were left out, tool definitions) of a chat call; None
    if converting them failed (the call is traced without them)."""
    try:
        converted, dropped = _extract.input_messages(messages)
        tools = _extract.tool_definitions(params.get("tools")) if params else None
    except Exception as exc:
        report_internal_error(f"{__name__}._chat_content", exc)
        return None
    return converted, dropped, tools


def _keep_node_messages(run: _Run, agent_run: _Run, inputs: Any) -> None:
    """Keep the state messages of an agent's model node until its model call (``_note_system_prompt``),
    while content is captured and the agent's system prompt is not known yet."""
    agent = agent_run.invocation
    if _capturing() and isinstance(agent, AgentInvocation) and agent.system_instructions is None:
        messages = inputs.get("messages") if isinstance(inputs, Mapping) else None
        if isinstance(messages, Sequence) and not isinstance(messages, str):
            run.node_messages = messages


def _set_input(invocation: Invocation, inputs: Any) -> None:
    if isinstance(invocation, AgentInvocation):
        messages = inputs.get("messages") if isinstance(inputs, Mapping) else None
        if isinstance(messages, list):
            invocation.input_messages, dropped = _extract.newest_messages(messages)
            if dropped:
                invocation.mark_truncated(semconv.GEN_AI_INPUT_MESSAGES)


_STRUCTURED_RESPONSE = "structured_response"
"""The state key of a ``create_agent`` agent's structured response (given a ``response_format``)."""


def _set_output(invocation: Invocation, outputs: Any) -> None:
    if isinstance(invocation, AgentInvocation) and isinstance(outputs, Mapping):
        messages = outputs.get("messages")
        if isinstance(messages, list) and messages:
            # its answer: the structured response if it was asked for one (its last message is then
            # the tool message ToolStrategy adds, or the model's JSON text), else its last message
            invocation.output_messages = [
                _extract.agent_output_message(messages[-1], outputs.get(_STRUCTURED_RESPONSE))
            ]


def _evict(run: _Run, reason: str) -> None:
    if reason != semconv.EVICTED_REPLACED and run.key is not None:  # a replaced run's key lives on
        _owners.pop(run.key, None)
    if run.invocation is not None:
        run.invocation.evict(reason)


InvocationT = TypeVar("InvocationT", bound=Invocation)


def traced_invocation(
    run_manager: Any, kind: type[InvocationT]
) -> tuple[LLMTraceCallbackHandler, InvocationT] | None:
    """The live ``kind`` invocation of ``run_manager``'s run and the llmtrace handler tracing it
    (for the instrumentor's wrappers, which see the run manager but no callback)."""
    if run_manager is None:
        return None
    for handler in run_manager.handlers:
        if isinstance(handler, LLMTraceCallbackHandler):
            invocation = handler.invocation(run_manager.run_id)
            if isinstance(invocation, kind):
                return handler, invocation
    return None
