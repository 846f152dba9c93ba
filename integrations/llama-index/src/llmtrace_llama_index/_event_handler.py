"""Dispatcher event handler: fills the invocations of open spans from LlamaIndex events.

Events carry the id of the dispatcher span they belong to. Model end events give usage,
response id/model and finish reasons; in-progress events count stream chunks (the first one
sets the time to first chunk; of an ``OpenAIResponses`` stream, only the events that carry part of
the answer, see ``_extract.counts_as_chunk``) and carry the usage of the last chunk; a stream's end or
exception event ends its span, since a stream outlives its dispatcher span (and the span of
the engine that returned the stream). Rerank events start and end ``rerank {model}`` spans
inside the dispatcher span that reports them (a node postprocessor's, usually). A workflow's
``SpanCancelledEvent`` marks the run or step span it is sent in as cancelled.
"""

from __future__ import annotations

from typing import Any, cast

from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
)
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index_instrumentation.event_handlers.base import BaseEventHandler
from pydantic import Field

from llmtrace import ModelInvocation, _parts
from llmtrace._safety import never_raise
from llmtrace_llama_index import _extract
from llmtrace_llama_index._classify import Kind
from llmtrace_llama_index._runs import Node, Runs
from llmtrace_llama_index._span_handler import capture_content, end_stream_host, is_control_flow

_IN_PROGRESS = (LLMChatInProgressEvent, LLMCompletionInProgressEvent)
_END = (LLMChatEndEvent, LLMCompletionEndEvent)
_SPAN_CANCELLED = "SpanCancelledEvent"
"""llama-index-workflows' event (``workflows.runtime.types.step_function``, not a public module)
sent inside a span that returns normally although it was cancelled: a run stopped by
``handler.cancel_run()`` (``WorkflowCancelledByUser``), a step whose task the workflow cancelled."""


class LlamaIndexEventHandler(BaseEventHandler):
    """Registered on the root dispatcher next to the span handler; shares its run map."""

    runs: Runs = Field(default=cast(Runs, None), exclude=True, repr=False)
    """The shared run map. A plain field, not a private attribute: pydantic serves private
    attributes through ``__getattr__`` (~1.7 us a read), and the handlers read it on every span
    and event."""

    def __init__(self, runs: Runs) -> None:
        super().__init__()
        self.runs = runs

    @classmethod
    def class_name(cls) -> str:
        return "LLMTraceEventHandler"

    @never_raise
    def handle(self, event: Any, **kwargs: Any) -> None:
        span_id = event.span_id
        if not span_id:
            return
        if isinstance(event, _IN_PROGRESS):
            node = self.runs.nodes.get(span_id)  # refreshes the run's expiry: the stream is alive
            if node is not None:
                self._chunk(node, event.response)
        elif isinstance(event, _END):
            node = self.runs.nodes.peek(span_id)
            if node is not None:
                self._end(span_id, node, event.response)
        elif isinstance(event, ExceptionEvent):
            node = self.runs.nodes.peek(span_id)
            if node is not None:
                self._stream_error(span_id, node, event.exception)
        elif isinstance(event, EmbeddingEndEvent):
            node = self.runs.nodes.peek(span_id)
            invocation = node.effective if node is not None else None
            if isinstance(invocation, ModelInvocation):
                invocation.input_count = (invocation.input_count or 0) + len(event.chunks)
                if invocation.dimension_count is None:
                    invocation.dimension_count = _extract.embedding_dimension(event.embeddings)
        elif isinstance(event, ReRankStartEvent):
            node = self.runs.nodes.get(span_id)
            if node is not None:
                self._rerank_start(node, event)
        elif isinstance(event, ReRankEndEvent):
            node = self.runs.nodes.peek(span_id)
            rerank = node.end_rerank() if node is not None else None
            if rerank is not None:
                rerank.documents = _extract.documents(_extract.get(event, "nodes"), capture_content())
                rerank.stop()
        elif type(event).__name__ == _SPAN_CANCELLED:
            node = self.runs.nodes.peek(span_id)
            if node is not None and node.invocation is not None:
                node.cancelled = True  # its span returns next, with no result (see ``_span_handler``)

    # ---- rerank events ------------------------------------------------------------------
    def _rerank_start(self, node: Node, event: Any) -> None:
        model = _extract.get(event, "model_name")
        top_n = _extract.get(event, "top_n")
        component = node.component
        rerank = self.runs.handler.start_rerank(
            model if isinstance(model, str) else None,
            provider=_extract.known_provider(component) if component is not None else None,
            top_n=top_n if isinstance(top_n, int) and not isinstance(top_n, bool) else None,
            parent=node.effective,
        )
        if capture_content():
            rerank.query = _extract.query_text(_extract.get(event, "query"))
        node.start_rerank(rerank)
        if node.kind is Kind.POSTPROCESSOR and node.token is None:
            # provider SDK and HTTP spans of the reranker nest under the rerank span
            self.runs.attach(node, rerank)

    # ---- model events -------------------------------------------------------------------
    # A model call merged into another one that returned a stream (``OpenAILike.stream_chat`` ->
    # ``OpenAI.stream_chat``, ``Runs.feed``) feeds the outer call's span with its stream's events:
    # its chunks count until the outer call reports chunks of its own (then those count), its end
    # or error ends the outer call's stream unless the outer call reports its own; its usage,
    # response id and finish reasons always count (a wrapper's own events may report none).
    def _chunk(self, node: Node, response: Any) -> None:
        invocation = node.invocation
        if invocation is None and node.merged and node.exited:
            owner = self.runs.feeding(node)
            if owner is None or not isinstance(owner.invocation, ModelInvocation):
                return
            invocation = owner.invocation
            if owner.reporting or not owner.exited:
                _apply_response(owner, invocation, response, content=False)
                return
            node, owner.fed = owner, True
        elif not isinstance(invocation, ModelInvocation):
            return  # merged inner call still in its dispatcher span: the outer call counts the chunks
        elif not node.reporting:
            node.reporting = True
            if node.fed:  # a merged call's stream counted the chunks so far: this call's own count
                node.fed = False
                invocation.chunk_count = 0
        if node.pending is not None:  # its generator yielded: calls it makes from now on are its own
            self.runs.forget_pending(node)
        self.runs.touch_stream_host(node)
        if _extract.counts_as_chunk(response):  # not the events that only frame the answer
            invocation.chunk()
        _apply_response(node, invocation, response, content=False)

    def _end(self, span_id: str, node: Node, response: Any) -> None:
        invocation = node.effective
        if not isinstance(invocation, ModelInvocation):
            return
        owned = node.invocation is invocation
        if owned:
            node.reporting = True
        elif node.merged:
            owner = self.runs.feeding(node)
            if owner is not None and owner.invocation is not invocation:
                owner = None
            owner_id = node.host_id
            if node.exited:  # a merged call's stream ended
                self.runs.nodes.pop(span_id)
                if owner is not None and owner_id is not None and owner.exited and not owner.reporting:
                    _apply_response(owner, invocation, response, content=capture_content())
                    self._end_stream(owner_id, owner, invocation, "stop")  # so does the outer call's
                    return
            # the outer call's output, unless the outer call reports its own end (which then wins)
            content = owner is not None and not owner.reporting and capture_content()
            _apply_response(owner, invocation, response, content=content)
            return
        _apply_response(node if owned else None, invocation, response, content=owned and capture_content())
        if owned and node.exited:  # the end of a stream that outlived its dispatcher span
            self._end_stream(span_id, node, invocation, "stop")

    def _stream_error(self, span_id: str, node: Node, exception: BaseException) -> None:
        invocation = node.invocation
        if invocation is None and node.merged and node.exited:  # a merged call's stream failed
            self.runs.nodes.pop(span_id)
            owner = self.runs.feeding(node)
            if owner is None or node.host_id is None or not owner.exited or owner.reporting:
                return  # the outer call reports its own error, or ends through its span
            span_id, node, invocation = node.host_id, owner, owner.invocation
        if not isinstance(invocation, ModelInvocation) or not node.exited:
            return  # errors inside the dispatcher span end it through span drop
        if isinstance(exception, GeneratorExit):  # the consumer closed the stream early
            self._end_stream(span_id, node, invocation, "cancel")
        elif is_control_flow(exception):
            self._end_stream(span_id, node, invocation, "stop")
        else:
            self._end_stream(span_id, node, invocation, exception)

    def _end_stream(
        self, span_id: str, node: Node, invocation: ModelInvocation, how: str | BaseException
    ) -> None:
        """End a model stream that outlived its dispatcher span (``how``: ``"stop"``, ``"cancel"`` or
        the exception), and the engine waiting for it."""
        self.runs.nodes.pop(span_id)
        self.runs.forget_pending(node)
        if node.feeders:
            self.runs.drop_feeders(node)
        if isinstance(how, BaseException):
            invocation.fail(how)
        elif node.failure is not None:  # the response reported a failure (the caller got no error)
            invocation.fail(node.failure)
        elif how == "cancel":
            invocation.cancel()
        else:
            invocation.stop()
        end_stream_host(self.runs, node, how)


def _apply_response(node: Node | None, invocation: ModelInvocation, response: Any, *, content: bool) -> None:
    """Usage, response id/model and finish reasons of a (possibly partial) response; a failure it
    reports (``_extract.response_error``) is kept on ``node``, the model call's (finish reason
    ``error``), which then ends with it.

    Only values the response reports overwrite earlier ones, so a stream keeps the finish
    reason of its penultimate chunk and the usage of its last one.
    """
    usage = _extract.usage_from_response(response)
    if usage is not None:
        invocation.set_usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            service_tier=usage.service_tier,
        )
    info = _extract.response_info(response)
    if info.response_id is not None:
        invocation.response_id = info.response_id
    if info.response_model is not None:
        invocation.response_model = info.response_model
    if info.finish_reasons is not None:
        invocation.finish_reasons = info.finish_reasons
    failure = _extract.response_error(response)
    if failure is not None:
        invocation.finish_reasons = [_parts.ERROR]
        if node is not None:
            node.failure = failure
    if content:
        invocation.output_messages = _extract.output_messages(response, invocation.finish_reasons)
