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
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context

from llmtrace import AgentInvocation, Invocation, RerankInvocation, TelemetryHandler
from llmtrace._runmap import RunMap
from llmtrace_llama_index._classify import ENGINE_KINDS, Kind


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
    children: list[Invocation] = field(default_factory=list)
    """Invocations started for steps of this run (ended with the run if still open)."""

    @property
    def current(self) -> Invocation:
        return self.agent or self.invocation


@dataclass(slots=True, eq=False)
class Node:
    kind: Kind
    invocation: Invocation | None
    """The invocation this dispatcher span owns, if any."""
    parent: Invocation | None
    """The nearest enclosing invocation (what children of a plumbing span parent to)."""
    owner_id: int | None
    """``id()`` of the component that owns ``effective`` (its own inner spans are plumbing)."""
    run: RunState | None = None
    merged: bool = False
    """A model call inside another model call: feeds that invocation, starts nothing."""
    exited: bool = False
    """The dispatcher span returned (a stream may still be running)."""
    token: object | None = None
    attached: otel_context.Context | None = None
    where: tuple[int, object] | None = None
    host_id: str | None = None
    """Span id of the nearest enclosing node that owns an invocation (``parent``'s node)."""
    component: Any = None
    """The node postprocessor of a ``POSTPROCESSOR`` node (read only if it reports a rerank)."""
    rerank: RerankInvocation | None = None
    """A rerank reported inside this dispatcher span (``ReRankStartEvent``)."""
    open_streams: int = 0
    """Engine nodes: model streams of this engine's invocation still running."""
    deferred: bool = False
    """Engine nodes: the dispatcher span returned a stream; the span ends when its streams do."""
    result: Any = None
    """Engine nodes: the deferred result (read once, when the span ends)."""
    stream_host: str | None = None
    """Model stream nodes: span id of the engine node that waits for this stream."""

    @property
    def effective(self) -> Invocation | None:
        rerank = self.rerank
        if rerank is not None and not rerank.ended:
            return rerank
        return self.invocation or self.parent


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
        self._streams_lock = threading.Lock()
        self.pending_streams: dict[int, str] = {}
        """Per LLM instance, the span id of its latest stream not yet iterated (see ``pending_stream``)."""

    def pending_stream(self, instance_id: int | None) -> Node | None:
        """The not-yet-iterated stream of this LLM that the caller's task just created, if any.

        Some LLMs (LlamaIndex ``CustomLLM``) implement ``astream_*`` with a generator that
        calls the sync ``stream_*`` only when first iterated, outside the dispatcher span of
        the outer call, so the inner call has no parent span id. It is the same model call,
        recognised by: same LLM object, same thread and task, outer stream not started yet.
        """
        if instance_id is None:
            return None
        span_id = self.pending_streams.get(instance_id)
        node = self.nodes.peek(span_id) if span_id is not None else None
        if node is None or node.invocation is None or node.invocation.ended or node.where != _where():
            return None
        return node

    def forget_pending(self, node: Node) -> None:
        if node.owner_id is not None:
            span_id = self.pending_streams.get(node.owner_id)
            if span_id is not None and self.nodes.peek(span_id) in (node, None):
                self.pending_streams.pop(node.owner_id, None)

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
        self.pending_streams.clear()
        self.nodes.clear(reason)

    # ---- engines that returned a stream -------------------------------------------------
    # A streamed query or chat engine returns before its model stream runs. The engine's
    # node then stays in the map (``deferred``) until the last model stream of its own
    # invocation ends; the lock orders "engine returns" against "stream ends" across threads
    # (chat engines consume the stream in a thread of their own).
    def stream_opened(self, node: Node) -> None:
        """A model stream outlives its dispatcher span: its engine, if any, waits for it."""
        host_id = node.host_id
        if host_id is None:
            return
        with self._streams_lock:
            host = self.nodes.peek(host_id)
            if host is None or host.kind not in ENGINE_KINDS or host.exited:
                return
            if host.invocation is None or host.invocation is not node.parent:
                return
            host.open_streams += 1
            node.stream_host = host_id

    def defer(self, node: Node, result: Any) -> bool:
        """An engine returns: True if it must wait for its open streams (it stays in the map)."""
        with self._streams_lock:
            if node.open_streams <= 0:
                return False
            node.deferred = True
            node.result = result
            return True

    def stream_closed(self, node: Node) -> Node | None:
        """A model stream ended: the engine node to end now (removed from the map), if any."""
        host_id, node.stream_host = node.stream_host, None
        if host_id is None:
            return None
        with self._streams_lock:
            host = self.nodes.peek(host_id)
            if host is None:
                return None
            host.open_streams -= 1
            if host.open_streams > 0 or not host.deferred:
                return None
            self.nodes.pop(host_id)
            return host

    def touch_stream_host(self, node: Node) -> None:
        """A stream reports progress: its waiting engine is alive too (refreshes its expiry)."""
        if node.stream_host is not None:
            self.nodes.get(node.stream_host)

    def _evict(self, node: Node, reason: str) -> None:
        rerank = node.rerank
        if rerank is not None and not rerank.ended:
            rerank.evict(reason)
        invocation = node.invocation
        if invocation is None or invocation.ended:
            return
        run = node.run
        if run is not None and run.invocation is invocation:
            end_run_children(run, lambda child: child.evict(reason))
        invocation.evict(reason)
        host = self.stream_closed(node)  # an abandoned stream: its engine is abandoned too
        if host is not None and host.invocation is not None:
            host.invocation.evict(reason)


def end_run_children(run: RunState, end: Any) -> None:
    """End the still-open invocations of a run's steps and its current sub-agent."""
    for child in run.children:
        if not child.ended:
            end(child)
    run.children.clear()
    if run.agent is not None and run.agent is not run.invocation and not run.agent.ended:
        end(run.agent)
