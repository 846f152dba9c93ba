"""Open dispatcher spans, keyed by the dispatcher's span id, in a bounded map.

Every dispatcher span that matters gets a :class:`Node`: either it owns an invocation (a
model call, a retrieval, a tool, an agent or workflow run), or it is plumbing inside one
and only remembers the nearest enclosing invocation, so that its children parent there.
Parents therefore always come from the dispatcher's ``parent_span_id``; a span without a
known parent parents to the caller's active OTel span.

The OTel context of an owned invocation is attached while its dispatcher span is open, so
HTTP-client and provider-SDK spans made inside it nest under it. It is detached only from
the same thread and task that attached it, and only if it is still the current context;
otherwise it is left alone (no "Failed to detach context").
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context

from llmtrace import AgentInvocation, Invocation, RerankInvocation, TelemetryHandler, ToolInvocation, _fork
from llmtrace._invocation import is_open
from llmtrace._runmap import RunMap, add_child
from llmtrace_llama_index._classify import ENGINE_KINDS, Kind
from llmtrace_llama_index._lazy import LazyStreams, response_generator


@dataclass(slots=True, eq=False)
class RunState:
    """One workflow or agent run (``Workflow.run``), shared by the nodes of its steps."""

    invocation: Invocation
    """The run's own invocation: ``invoke_agent`` for a single agent, else ``invoke_workflow``."""
    multi_agent: bool = False
    agent: AgentInvocation | None = None
    """The agent currently acting (the run itself for a single agent)."""
    agent_name: str | None = None
    workflow: Any = None
    children: list[Node] = field(default_factory=list)
    """Nodes of the invocations started for steps of this run (ended with the run if still open
    then, unless their dispatcher span still runs: see ``end_run_children``). Ended ones are
    dropped whenever the list reaches a power of two from 64 on (``add_child``)."""
    waiting: dict[str, ToolInvocation] | None = None
    """Tool calls waiting for an event (``ctx.wait_for_event``, human in the loop), by call id (else
    tool name): the workflow runs their ``call_tool`` step again once the event comes, and that run
    continues the same invocation."""
    tool_names: frozenset[str] | None = None
    """Names of the acting agent's tools (read at its first tool call; None if not all known): a tool
    call naming none of them was made up by the model."""
    tool_names_read: bool = False

    @property
    def current(self) -> Invocation:
        return self.agent or self.invocation

    def hold(self, tool: ToolInvocation) -> None:
        """A tool call of this run waits for an event: its span stays open for the step's next run."""
        if self.waiting is None:
            self.waiting = {}
        self.waiting[tool.call_id or tool.name] = tool

    def holds(self, tool: ToolInvocation) -> bool:
        waiting = self.waiting
        return waiting is not None and waiting.get(tool.call_id or tool.name) is tool

    def resume(self, key: str) -> ToolInvocation | None:
        """The open invocation of a tool call that waited for an event, if ``key`` names one."""
        waiting = self.waiting
        tool = waiting.pop(key, None) if waiting else None
        return tool if tool is not None and not tool.ended else None

    def adopt(self, node: Node) -> None:
        """``node``'s invocation belongs to this run (a step's model call, tool, retrieval...)."""
        self.children = add_child(self.children, node, _owns_open)


def _owns_open(node: Node) -> bool:
    return node.invocation is not None and is_open(node.invocation)


class Node:
    """One open dispatcher span. A plain class: the fields below the constructor's are class-level
    defaults, set on a node only when they change (most nodes are plumbing and change none)."""

    kind: Kind
    invocation: Invocation | None
    """The invocation this dispatcher span owns, if any."""
    parent: Invocation | None
    """The nearest enclosing invocation (what children of a plumbing span parent to)."""
    owner_id: int | None
    """``id()`` of the component that owns ``effective`` (its own inner spans are plumbing)."""
    run: RunState | None

    def __init__(
        self,
        kind: Kind,
        invocation: Invocation | None,
        parent: Invocation | None,
        owner_id: int | None,
        run: RunState | None = None,
        *,
        merged: bool = False,
        component: Any = None,
    ) -> None:
        self.kind = kind
        self.invocation = invocation
        self.parent = parent
        self.owner_id = owner_id
        self.run = run
        if merged:
            self.merged = True
        if component is not None:
            self.component = component

    merged: bool = False
    """A model call inside another model call: feeds that invocation, starts nothing."""
    exited: bool = False
    """The dispatcher span returned (a stream may still be running)."""
    cancelled: bool = False
    """LlamaIndex reported this span cancelled (``SpanCancelledEvent``) before it returns: a run
    stopped by ``handler.cancel_run()``, a step whose task the workflow cancelled. Such spans return
    normally (no result), not with the exception."""
    token: object | None = None
    attached: otel_context.Context | None = None
    where: tuple[int, object] | None = None
    host_id: str | None = None
    """Span id of the nearest enclosing node that owns an invocation (``parent``'s node)."""
    component: Any = None
    """The node postprocessor of a ``POSTPROCESSOR`` node (read only if it reports a rerank)."""
    reranks: list[RerankInvocation] | None = None
    """Open reranks reported inside this dispatcher span (``ReRankStartEvent``), usually one."""
    open_streams: int = 0
    """Engine nodes: model streams of this engine's invocation still running."""
    deferred: bool = False
    """Engine nodes: the dispatcher span returned a stream; the span ends when its streams do."""
    result: Callable[[], Any] | None = None
    """Engine nodes: the deferred result, held weakly (read once, when the span ends). A streamed
    response owns its stream's generator: the caller dropping it must free it, which closes the
    stream and so ends this span."""
    stream_host: str | None = None
    """Model stream nodes (and engines returning an inner engine's stream): span id of the
    engine node that waits for this one."""
    lazy_host: str | None = None
    """Span id of the returned engine whose lazily iterated stream this node runs in (see ``_lazy``)."""
    lazy_keys: list[int] | None = None
    """Engine nodes: keys of the not-yet-consumed stream generators remembered for this engine."""
    lazy_id: str | None = None
    """Engine nodes: this node's span id, under which ``lazy_keys`` were remembered."""
    lazy_done: bool = False
    """Engine nodes: a model call made by this engine's lazy stream has ended."""
    dimensions: Mapping[str, str] | None = None
    """Engine nodes: the ``llmtrace.dimensions()`` current when the engine started (if any), given
    to the model calls of its lazily iterated stream, which may run after the caller's block."""
    early_end: str | BaseException | None = None
    """Engine nodes: how a model stream of this engine failed (the exception) or was cancelled
    (``"cancel"``) before the engine's dispatcher span returned (a chat engine's history thread
    runs the stream at once); applied when the engine returns that stream."""
    pending: tuple[int, str] | None = None
    """Model stream nodes: key and span id under which ``Runs.streams`` remembers the returned
    generator until its first chunk (see ``Runs.pending_stream``)."""
    refreshed: float = 0.0
    """``time.monotonic()`` when a span starting below this node last refreshed its expiry."""
    parsing: bool = False
    """Inside ``structured_predict`` or a pydantic program: a tool called here builds the output
    object (response parsing), it is not a tool execution."""
    feeders: list[str] | None = None
    """Model call nodes: span ids of the model calls merged into this one that returned a stream
    (see ``Runs.feed``), at most ``_MAX_FEEDERS``."""
    reporting: bool = False
    """Model call nodes: LlamaIndex reported an event of this call's own (its method reports its
    stream; the events of a merged call's stream then only add usage)."""
    failure: str | None = None
    """Model call nodes: the ``error.type`` of a failure the response reported instead of raising (an
    OpenAI Responses ``error`` or ``response.failed`` event): the call ends with it."""
    fed: bool = False
    """Model stream nodes: chunks counted from a merged call's stream events, until this call
    reports its own (which then count instead)."""

    @property
    def effective(self) -> Invocation | None:
        if self.reranks:
            rerank = self.current_rerank()
            if rerank is not None:
                return rerank
        return self.invocation or self.parent

    # Reranks report no id: a ``ReRankEndEvent`` carries only its span id, which is the
    # enclosing span's when the reranker has no dispatcher span of its own (an async
    # ``_apostprocess_nodes`` override), so concurrent reranks share it. Each start is
    # remembered in a context variable of the task (or thread) that reported it. The
    # dispatcher's own span id travels in a context variable too, so whatever sees this span as
    # its parent (the rerank's end event, the calls it makes, tasks it creates) sees that one.
    def current_rerank(self) -> RerankInvocation | None:
        """The open rerank of this span that the caller's context started, if any."""
        reranks = self.reranks
        if not reranks:
            return None
        current = _current_rerank.get()
        if current is not None and not current.ended and any(r is current for r in reranks):
            return current
        return None

    def start_rerank(self, rerank: RerankInvocation) -> None:
        """A rerank starts in this span; one the same context started before and never ended stops."""
        previous = _current_rerank.get()
        reranks = self.reranks or []
        if previous is not None and not previous.ended and any(r is previous for r in reranks):
            previous.stop()  # a second rerank in one context without an end event in between
        self.reranks = [r for r in reranks if not r.ended] + [rerank]
        _current_rerank.set(rerank)

    def end_rerank(self) -> RerankInvocation | None:
        """A rerank of this span reports its end: the one to end (removed from the open ones)."""
        rerank = self.current_rerank()
        if rerank is not None and self.reranks is not None:
            self.reranks = [r for r in self.reranks if r is not rerank and not r.ended]
            if _current_rerank.get() is rerank:
                _current_rerank.set(None)
        return rerank

    def pop_reranks(self) -> list[RerankInvocation]:
        """The span ends: its reranks still open (removed)."""
        if not self.reranks:
            return []
        reranks, self.reranks = self.reranks, None
        current = _current_rerank.get()
        if current is not None and any(r is current for r in reranks):
            _current_rerank.set(None)
        return [r for r in reranks if not r.ended]


_current_rerank: ContextVar[RerankInvocation | None] = ContextVar("llmtrace_llama_index_rerank", default=None)


_MAX_FEEDERS = 8
"""Merged model calls whose streams one model call keeps in the map (``Runs.feed``): an
``OpenAILike`` stream has one (two for a completion model's ``stream_chat``)."""

_MAX_NESTING = 8
"""Engines returning an inner engine's stream: at most this many refreshed per stream chunk."""


def _host_of(node: Node) -> str | None:
    return node.host_id


def _where() -> tuple[int, object]:
    try:
        task: object = asyncio.current_task()
    except RuntimeError:
        task = None
    return threading.get_ident(), task


class Runs:
    """State shared by the span handler and the event handler of one instrumentation."""

    def __init__(self, handler: TelemetryHandler) -> None:
        self.handler = handler
        self.nodes: RunMap[str, Node] = RunMap(self._evict)
        self._streams_lock = _fork.lock()
        self.streams = LazyStreams()
        """Generators returned by model stream calls that have not yielded a chunk yet, keyed by
        frame (see ``pending_stream``)."""
        self.lazy = LazyStreams()
        self.on_parse: Callable[[], None] | None = None
        """Called when a ``structured_predict`` that calls its provider's parse API starts (``_parse``)."""

    # ---- a model call made by the stream of another one -----------------------------------
    # Some LLMs (LlamaIndex ``CustomLLM``) implement ``astream_*`` with a generator that calls
    # the sync ``stream_*`` only when first iterated: after the outer dispatcher span returned,
    # maybe in another task or thread (a chat engine's history writer), so the inner call's
    # parent span id is the consumer's, not the outer call's. It is the same model call, and
    # the outer stream's generator is running when it starts: its frame is on the stack.
    def remember_model_stream(self, span_id: str, node: Node, result: Any) -> None:
        """A model call returned a stream: until its first chunk, a model call made while its
        generator runs is this call (see ``pending_stream``)."""
        key = self.streams.remember(result, span_id)
        if key is not None:
            node.pending = (key, span_id)

    def pending_stream(self) -> tuple[str, Node] | None:
        """The model stream whose not-yet-yielded generator is running in the caller's stack, if any
        (its span id and node).

        Walks at most ``_lazy.MAX_DEPTH`` frames; called only while such a stream exists.
        """
        span_id = self.streams.find()
        node = self.nodes.peek(span_id) if span_id is not None else None
        if span_id is None or node is None or node.invocation is None or node.invocation.ended:
            return None
        return span_id, node

    # ---- a model call whose stream another model call made ----------------------------------
    # ``OpenAILike.stream_chat`` (and every subclass of a provider's class that overrides a stream
    # method and calls ``super()``) is a dispatcher span around the provider's: LlamaIndex reports the
    # stream's events (chunks, end, error) under the inner span's id only, since the inner method's
    # callback sends them, while the outer call owns the model span. The inner node stays in the map
    # after its dispatcher span returns, so that its stream's events reach the outer call.
    def feed(self, span_id: str, node: Node) -> bool:
        """A model call merged into another one (``node``) returned a stream: True if ``node`` stays
        in the map for its stream's events (it then feeds the call that owns the model span)."""
        owner = self.nodes.peek(node.host_id) if node.host_id is not None else None
        invocation = owner.invocation if owner is not None else None
        if owner is None or invocation is None or invocation is not node.parent or invocation.ended:
            return False
        feeders = owner.feeders
        if feeders is None:
            owner.feeders = [span_id]
        elif len(feeders) < _MAX_FEEDERS:
            feeders.append(span_id)
        else:
            return False
        return True

    def feeding(self, node: Node) -> Node | None:
        """The node of the model call a merged call's stream feeds (``node``: a merged model call
        that returned a stream), if it is still open; refreshes its expiry (the stream is alive)."""
        owner = self.nodes.get(node.host_id) if node.host_id is not None else None
        if owner is None or owner.invocation is None or owner.invocation.ended:
            return None
        return owner

    def drop_feeders(self, node: Node) -> None:
        """A model call ended: the merged calls whose streams fed it leave the map."""
        feeders, node.feeders = node.feeders, None
        for span_id in feeders or ():
            self.nodes.pop(span_id)

    def forget_pending(self, node: Node) -> None:
        """A model stream yielded, ended or was evicted: calls made by its generator are its own."""
        pending, node.pending = node.pending, None
        if pending is not None:
            self.streams.forget((pending[0],), pending[1])

    def refresh_hosts(self, host_id: str) -> None:
        """A span starts under the node ``host_id``: it and the invocations around it (engine,
        tool, agent run...) are alive, whatever plumbing spans lie between."""
        self.nodes.refresh_up(host_id, _host_of)

    def attach(self, node: Node, invocation: Invocation | None = None) -> None:
        invocation = invocation or node.invocation
        if invocation is None:
            return
        node.attached = invocation.context
        node.token = otel_context.attach(node.attached)
        node.where = _where()

    def detach(self, node: Node) -> None:
        token, node.token = node.token, None
        if token is None:
            return
        if node.where == _where() and otel_context.get_current() is node.attached:
            otel_context.detach(token)  # type: ignore[arg-type]

    def clear(self, reason: str) -> None:
        self.nodes.clear(reason)
        self.streams.clear()
        self.lazy.clear()

    # ---- engines that returned a stream -------------------------------------------------
    # A streamed query or chat engine returns before its model stream runs. The engine's
    # node then stays in the map (``deferred``) until the last model stream of its own
    # invocation ends; the lock orders "engine returns" against "stream ends" across threads
    # (chat engines consume the stream in a thread of their own). A stream whose model call
    # starts only when the caller iterates it is found through ``_lazy``: the engine waits
    # for the model calls made inside it (``lazy_host``).
    def stream_opened(self, node: Node) -> None:
        """A model stream (or an engine returning one) outlives its dispatcher span: the engine
        it was returned to, if any, waits for it."""
        with self._streams_lock:
            self._open(node)

    def _open(self, node: Node) -> None:
        host_id = node.host_id
        if host_id is None or node.stream_host is not None:
            return
        host = self.nodes.peek(host_id)
        if host is None or host.kind not in ENGINE_KINDS or host.exited:
            return
        if host.invocation is None or host.invocation is not node.parent:
            return
        host.open_streams += 1
        node.stream_host = host_id

    def open_lazy(self, node: Node) -> None:
        """A model call starts inside an engine's lazily iterated stream: the engine waits for it."""
        host_id = node.lazy_host
        if host_id is None or node.stream_host is not None:
            return
        with self._streams_lock:
            host = self.nodes.peek(host_id)
            if host is None or host.invocation is None or host.invocation.ended:
                return
            host.open_streams += 1
            node.stream_host = host_id

    def remember_stream(self, span_id: str, node: Node, result: Any) -> None:
        """An engine, or a synthesizer inside one, returns a stream that has not called its model
        yet: remember its generator so that the model call finds the engine (see ``_lazy``)."""
        generator = response_generator(result)
        if generator is None:
            return
        host_id = span_id if node.kind in ENGINE_KINDS and node.invocation is not None else node.host_id
        host = self.nodes.peek(host_id) if host_id is not None else None
        if host_id is None or host is None or host.kind not in ENGINE_KINDS or host.invocation is None:
            return
        if host is not node and (host.exited or host.invocation is not node.parent):
            return
        key = self.lazy.remember(generator, host_id, lambda: self._collected(host_id))
        if key is None:
            return
        with self._streams_lock:
            host.lazy_id = host_id
            if host.lazy_keys is None:
                host.lazy_keys = [key]
            elif key not in host.lazy_keys:
                host.lazy_keys.append(key)

    def _collected(self, host_id: str) -> None:
        """A generator remembered for engine ``host_id`` was freed (a weakref callback, which can
        fire inside any code, ours under a lock included: only queue the work)."""
        at = time.time_ns()
        self.nodes.later(lambda: self._dropped_unread(host_id, at))

    def _dropped_unread(self, host_id: str, at: int) -> None:
        """End an engine whose returned stream was dropped before anyone read it: the caller gave
        up (a cancellation, like a stream dropped half-way), at the time it was freed."""
        with self._streams_lock:
            host = self.nodes.peek(host_id)
            if host is None or not host.deferred or host.open_streams > 0 or host.lazy_done:
                return  # not waiting, or a model call from the stream runs (its end ends the engine)
            if host.lazy_keys and self.lazy.alive(host.lazy_keys):
                return
            self.nodes.pop(host_id)
        self.forget_lazy(host)
        while host is not None:  # and the engines that returned this engine's stream
            if host.invocation is not None:
                host.invocation.cancel(at)
            host.result = None
            host = self.stream_closed(host, "cancel")

    def forget_lazy(self, node: Node) -> None:
        """An engine ended: its remembered generators are no longer looked for."""
        keys, node.lazy_keys = node.lazy_keys, None
        if keys and node.lazy_id is not None:
            self.lazy.forget(keys, node.lazy_id)

    def defer(self, node: Node, result: Any) -> bool:
        """An engine returns: True if it must wait for its streams (it stays in the map)."""
        with self._streams_lock:
            keys = node.lazy_keys
            waiting_lazy = bool(keys) and not node.lazy_done and self.lazy.alive(keys or ())
            if node.open_streams <= 0 and not waiting_lazy:
                return False
            node.deferred = True
            node.result = _weak(result)
            self._open(node)  # an engine that returned this engine's stream waits for it too
            return True

    def stream_closed(self, node: Node, how: str | BaseException | None = None) -> Node | None:
        """A stream ended (``how``: ``"stop"``, ``"cancel"``, an exception, or None if not known):
        the engine node to end now (removed from the map), if any. An engine that has not returned
        yet remembers a failure or cancellation for when it does (``early_end``)."""
        host_id, node.stream_host = node.stream_host, None
        if host_id is None:
            return None
        with self._streams_lock:
            host = self.nodes.peek(host_id)
            if host is None:
                return None
            host.open_streams -= 1
            if node.lazy_host == host_id:
                host.lazy_done = True
            if not host.deferred and how is not None and how != "stop" and host.early_end is None:
                host.early_end = how
            if host.open_streams > 0 or not host.deferred:
                return None
            self.nodes.pop(host_id)
        self.forget_lazy(host)
        return host

    def touch_stream_host(self, node: Node) -> None:
        """A stream reports progress: the engines waiting for it are alive too (refreshes their expiry)."""
        host_id = node.stream_host
        for _ in range(_MAX_NESTING):
            host = self.nodes.get(host_id) if host_id is not None else None
            if host is None:
                return
            host_id = host.stream_host

    def _evict(self, node: Node, reason: str) -> None:
        self.forget_pending(node)
        if node.feeders:
            self.drop_feeders(node)
        for rerank in node.pop_reranks():
            rerank.evict(reason)
        invocation = node.invocation
        if invocation is None or invocation.ended:
            return
        run = node.run
        if run is not None and run.invocation is invocation:
            end_run_children(run, lambda child: child.evict(reason), running=True)
        # an engine whose lazy stream ran to its end without a model call we saw is not abandoned
        keys = node.lazy_keys
        finished = node.open_streams <= 0 and keys is not None and self.lazy.finished(keys)
        self.forget_lazy(node)
        if finished:
            invocation.stop()
        else:
            invocation.evict(reason)
        host = self.stream_closed(node)  # an abandoned stream: the engines waiting for it are too
        while host is not None:
            if host.invocation is not None:
                if finished:
                    host.invocation.stop()
                else:
                    host.invocation.evict(reason)
            host = self.stream_closed(host)


def _weak(value: Any) -> Callable[[], Any]:
    """A weak reference to ``value``, or (for objects that take none) a strong one."""
    try:
        return weakref.ref(value)
    except TypeError:
        return lambda: value


def deferred_result(node: Node) -> Any:
    """The result an engine node deferred, if the caller still holds it."""
    return node.result() if node.result is not None else None


def end_run_children(run: RunState, end: Any, *, owned: bool = True, running: bool = False) -> None:
    """End the still-open invocations of a run's steps and its current sub-agent.

    A call whose dispatcher span still runs (a sync step's thread, a shielded call, a step the
    workflow did not cancel) goes on after the run: it ends with its own span, when it really does,
    with its usage; ``running=True`` (eviction) ends those too. With ``owned=False``, only what no
    dispatcher span owns is ended, the tool calls waiting for an event and the sub-agent: a stream
    still being read ends too with its own end event."""
    if owned:
        children, run.children = run.children, []
        busy = {id(c.invocation) for c in children if not c.exited} if not running else set()
        for child in children:
            invocation = child.invocation
            if invocation is not None and not invocation.ended and id(invocation) not in busy:
                end(invocation)
    else:
        waiting, run.waiting = run.waiting, None
        for tool in (waiting or {}).values():
            if not tool.ended:
                end(tool)
    if run.agent is not None and run.agent is not run.invocation and not run.agent.ended:
        end(run.agent)
