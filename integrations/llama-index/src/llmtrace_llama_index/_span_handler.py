"""Dispatcher span handler: starts and ends invocations as LlamaIndex enters and leaves methods.

What becomes which span (see ``_classify``):

- ``LLM.chat/achat/stream_chat/astream_chat`` -> ``chat {model}``; ``complete`` family ->
  ``text_completion {model}``. ``predict``, ``structured_predict`` and the other wrappers get
  no span: the model call they make is the one model span (``OpenAIResponses.structured_predict``,
  which calls the Responses API's ``parse`` itself, is that model call: see ``_parse``). The tool
  call a pydantic program makes with its output class (``FunctionCallingProgram``) is response
  parsing: no span.
  ``predict_and_call`` outside any traced operation -> ``invoke_workflow predict_and_call`` over
  its model call and the tools it runs (plumbing inside one). A model call made inside another
  one (``MockLLM.chat`` -> ``complete``, ``StructuredLLM.chat`` -> inner LLM, a ``CustomLLM``'s
  ``astream_*`` -> its sync ``stream_*`` made by the returned generator, see ``Runs.pending_stream``;
  ``OpenAILike.stream_chat`` -> ``OpenAI.stream_chat``, whose stream's events feed the outer call,
  see ``Runs.feed``) is merged into the outer span: one span, one usage record, the request
  parameters of the inner call (what was sent).
- embedding methods -> ``embeddings {model}``; ``retrieve`` -> ``retrieval {data source}``.
- query and chat engines, ``Workflow.run`` -> ``invoke_workflow {class}``.
- agents (``FunctionAgent``, ``ReActAgent``...) ``run`` -> ``invoke_agent {name}``; in an
  ``AgentWorkflow`` each acting agent gets its own ``invoke_agent`` span under the workflow.
- the ``call_tool`` step (or ``BaseTool.call/acall`` outside an agent) -> ``execute_tool {tool}``;
  a tool waiting for an event (``WaitingForEvent``) keeps its span for the step's next run.
- node postprocessors that report a rerank (``ReRankStartEvent``) -> ``rerank {model}``, started
  by the event handler inside the postprocessor's dispatcher span.

A streamed model call outlives its dispatcher span: it ends on the stream's end or error
event (``_event_handler``), or, if abandoned, when the bounded run map evicts it. A query or
chat engine that returns such a stream of its own stays open until the stream ends, also when
the model call starts only as the caller iterates the response (``_lazy`` finds its engine).
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any, cast

from llama_index.core.agent.workflow import AgentWorkflow, BaseWorkflowAgent
from llama_index.core.tools import calling as _tool_calling
from llama_index.core.workflow import StopEvent
from llama_index_instrumentation.span.base import BaseSpan
from llama_index_instrumentation.span_handlers.base import BaseSpanHandler
from pydantic import Field

from llmtrace import (
    AgentInvocation,
    Invocation,
    ModelInvocation,
    RetrievalInvocation,
    ToolInvocation,
    _parts,
    semconv,
)
from llmtrace._errors import CANCELLED
from llmtrace._safety import never_raise, report_internal_error
from llmtrace._settings import settings
from llmtrace._usage import current_dimensions, dimensions
from llmtrace_llama_index import _extract
from llmtrace_llama_index._classify import (
    ENGINE_KINDS,
    Kind,
    classify,
    is_multi_agent,
    is_stream,
    method_name,
)
from llmtrace_llama_index._runs import Node, Runs, RunState, deferred_result, end_run_children

# Exceptions that end a span normally: workflow control flow and a consumer closing a stream.
_CONTROL_FLOW_NAMES = frozenset(
    {
        "WorkflowDone",
        "WorkflowCancelledByUser",
        "WaitingForEvent",
        "GeneratorExit",
        "StopIteration",
        "StopAsyncIteration",
    }
)


def is_control_flow(err: BaseException | None) -> bool:
    return err is not None and any(cls.__name__ in _CONTROL_FLOW_NAMES for cls in type(err).__mro__)


def capture_content() -> bool:
    """Whether content is captured anywhere (content is never built otherwise)."""
    mode = settings.content.mode
    return mode.on_span or mode.on_event


def _argument(bound_args: inspect.BoundArguments | None, name: str) -> Any:
    """An argument of the traced call; None if absent or if ``bound_args`` is not what it should be
    (read after an invocation started: raising here would leave its span open)."""
    arguments = getattr(bound_args, "arguments", None)
    return arguments.get(name) if isinstance(arguments, Mapping) else None


def _prompt(bound_args: inspect.BoundArguments | None) -> Any:
    """The prompt of a completion call. LlamaIndex's completion wrapper (``llm_completion_callback``)
    takes ``(self, *args, **kwargs)``: the prompt is its first positional argument or ``prompt=``."""
    prompt = _argument(bound_args, "prompt")  # a method traced without that wrapper
    if prompt is not None:
        return prompt
    args = _argument(bound_args, "args")
    if isinstance(args, tuple) and args:
        return args[0]
    kwargs = _argument(bound_args, "kwargs")
    return kwargs.get("prompt") if isinstance(kwargs, dict) else None


class LlamaIndexSpanHandler(BaseSpanHandler[BaseSpan]):
    """Registered on the root dispatcher by :class:`~llmtrace_llama_index.LlamaIndexInstrumentor`.

    Keeps nothing in the base class's ``open_spans`` (always returns None): open runs live
    in the bounded :class:`~llmtrace_llama_index._runs.Runs` map.
    """

    runs: Runs = Field(default=cast(Runs, None), exclude=True, repr=False)
    """The shared run map. A plain field, not a private attribute: pydantic serves private
    attributes through ``__getattr__`` (~1.7 us a read), and the handlers read it on every span
    and event."""

    def __init__(self, runs: Runs) -> None:
        super().__init__()
        self.runs = runs

    @classmethod
    def class_name(cls) -> str:
        return "LLMTraceSpanHandler"

    # ---- BaseSpanHandler API (each never raises) ------------------------------------
    @never_raise
    def new_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        parent_span_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> BaseSpan | None:
        self._enter(id_, bound_args, instance, parent_span_id)
        return None

    @never_raise
    def prepare_to_exit_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        result: Any | None = None,
        **kwargs: Any,
    ) -> BaseSpan | None:
        self._exit(id_, bound_args, result)
        return None

    @never_raise
    def prepare_to_drop_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> BaseSpan | None:
        self._drop(id_, err)
        return None

    @never_raise
    def close(self) -> None:
        self.runs.clear(semconv.EVICTED_SHUTDOWN)

    # ---- entering ---------------------------------------------------------------------
    def _enter(
        self, id_: str, bound_args: inspect.BoundArguments, instance: Any, parent_id: str | None
    ) -> None:
        runs = self.runs
        kind = classify(id_, instance)
        parent_node = runs.nodes.get(parent_id) if parent_id else None
        parent = parent_node.effective if parent_node is not None else None
        run = parent_node.run if parent_node is not None else None
        instance_id = id(instance) if instance is not None else None
        host_id: str | None = None
        if parent_node is not None:
            host_id = parent_id if parent_node.invocation is not None else parent_node.host_id

        lazy_host = _lazy_host(parent_id, parent_node)
        model_call = kind is Kind.CHAT or kind is Kind.COMPLETION
        if kind is Kind.PARSE and runs.on_parse is not None:
            runs.on_parse()  # its parse call reports the request sent and the response (``_parse``)
        if model_call and len(runs.streams) and not isinstance(parent, ModelInvocation):
            # maybe made by the generator of another model call's stream (``Runs.pending_stream``)
            pending = runs.pending_stream()
            if pending is not None:
                host_id, outer = pending  # its stream's events feed that call (``Runs.feed``)
                parent_node, parent, run, lazy_host = outer, outer.invocation, outer.run, outer.lazy_host
        if len(runs.lazy) and not isinstance(parent, ModelInvocation):
            # maybe a call made by a stream that an engine returned before iterating it (``_lazy``)
            found = runs.lazy.find()
            host = runs.nodes.peek(found) if found is not None and found != lazy_host else None
            if host is not None and host.invocation is not None:
                lazy_host = found
                if parent_node is None or host.exited:  # the dispatcher's parent is the consumer's
                    host_id = found
                    parent_node, parent, run = host, host.invocation, host.run
        if host_id is not None:
            runs.refresh_hosts(host_id)  # before ``put``, whose collection could end them
        if kind in (Kind.CHAT, Kind.COMPLETION, Kind.EMBEDDING) and isinstance(parent, ModelInvocation):
            # a model call inside another one: one span, one usage record
            node = Node(kind, None, parent, instance_id, run, merged=True)
            if model_call and not parent.ended:
                owner_id = parent_node.owner_id if parent_node is not None else None
                self._describe_inner(parent, bound_args, instance, owner_id != instance_id)
        elif kind is Kind.POSTPROCESSOR:
            # plumbing until it reports a rerank; kept even outside any operation for that
            node = Node(kind, None, parent, instance_id, run, component=instance)
        elif parent_node is not None and instance_id is not None and parent_node.owner_id == instance_id:
            node = Node(Kind.OTHER, None, parent, instance_id, run)  # the component's inner method
        elif kind is Kind.TOOL and parent_node is not None and parent_node.parsing:
            node = Node(Kind.OTHER, None, parent, instance_id, run)  # builds a structured output object
        elif (
            kind is Kind.TOOL
            and isinstance(parent, ToolInvocation)
            and parent_node is not None
            and parent_node.kind is not Kind.PREDICT_AND_CALL
        ):
            node = Node(Kind.TOOL, None, parent, instance_id, run)  # the tool behind a call_tool step
        elif kind is Kind.STEP:
            node = self._enter_step(id_, bound_args, parent, run)
        elif kind is Kind.OTHER:
            if parent is None and run is None:
                return  # plumbing outside any operation: nothing to parent
            node = Node(kind, None, parent, parent_node.owner_id if parent_node else None, run)
        elif kind is Kind.STRUCTURED or (kind is Kind.PARSE and isinstance(parent, ModelInvocation)):
            # plumbing, kept even outside any operation: its tool calls are response parsing (a parse
            # call made inside a model call, ``StructuredLLM.chat``'s, is that call's: see ``_parse``)
            node = Node(kind, None, parent, parent_node.owner_id if parent_node else None, run)
            node.parsing = True
        elif kind is Kind.PREDICT_AND_CALL and (
            parent is not None or run is not None or (parent_node is not None and parent_node.parsing)
        ):
            node = Node(kind, None, parent, parent_node.owner_id if parent_node else None, run)
        elif kind is Kind.PREDICT_AND_CALL:
            # outside any operation: the model call and the tools it chose get a root of their own
            messages = _call_messages(bound_args) if capture_content() else None
            workflow = self.runs.handler.start_workflow("predict_and_call", parent=None)
            if messages is not None:
                _set_input_messages(workflow, messages)
            node = Node(kind, workflow, None, None, None)  # owns no component: its model call is traced
            runs.attach(node)
        else:
            call_id = None
            if kind is Kind.TOOL and parent_node is not None and parent_node.kind is Kind.PREDICT_AND_CALL:
                call_id = _selected_call_id()  # a tool the model chose: its call id is on the stack
            engine_dimensions = self._lazy_dimensions(kind, lazy_host)
            if engine_dimensions:
                # a model call made by an engine's lazily iterated stream (maybe after the caller's
                # ``llmtrace.dimensions()`` block): it is the engine's call, with the engine's ones
                with dimensions(**engine_dimensions):
                    invocation, child_run = self._start(kind, id_, bound_args, instance, parent, run, call_id)
            else:
                invocation, child_run = self._start(kind, id_, bound_args, instance, parent, run, call_id)
            node = Node(kind, invocation, parent, instance_id, child_run)
            if run is not None and child_run is run:
                run.adopt(node)  # ended with the run if still open then
            if kind in ENGINE_KINDS:
                called_with = current_dimensions()
                if called_with:
                    node.dimensions = called_with  # for the model calls of its lazy stream
            runs.attach(node)
        if host_id is not None:
            node.host_id = host_id
        if lazy_host is not None:
            node.lazy_host = lazy_host
        if parent_node is not None and parent_node.parsing and node.invocation is None:
            node.parsing = True
        runs.nodes.put(id_, node)
        if lazy_host is not None and isinstance(node.invocation, ModelInvocation):
            runs.open_lazy(node)  # the engine that returned the stream waits for this call

    def _lazy_dimensions(self, kind: Kind, lazy_host: str | None) -> dict[str, str] | None:
        """The ``llmtrace.dimensions()`` of the engine whose lazy stream a model call runs in, that
        the caller's context lacks (None if none: a thread the engine started copied its context)."""
        if lazy_host is None or kind not in (Kind.CHAT, Kind.COMPLETION, Kind.EMBEDDING):
            return None
        host = self.runs.nodes.peek(lazy_host)
        saved = host.dimensions if host is not None else None
        if not saved:
            return None
        current = current_dimensions()
        missing = {key: value for key, value in saved.items() if key not in current}
        return missing or None

    def _start(
        self,
        kind: Kind,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any,
        parent: Invocation | None,
        run: RunState | None,
        call_id: str | None = None,
    ) -> tuple[Invocation, RunState | None]:
        handler = self.runs.handler
        capture = capture_content()
        if kind in (Kind.CHAT, Kind.COMPLETION, Kind.PARSE):
            return self._start_model(kind, id_, bound_args, instance, parent, capture), run
        if kind is Kind.EMBEDDING:
            host, port = _extract.server_address(instance)
            invocation = handler.start_embeddings(
                _extract.model_name(instance),
                provider=_extract.provider_name(instance),
                parent=parent,
                server_address=host,
                server_port=port,
            )
            return invocation, run
        if kind is Kind.RETRIEVAL:
            store = _extract.get(instance, "_vector_store")
            source = type(store).__name__ if store is not None else type(instance).__name__
            top_k = _extract.get(instance, "similarity_top_k") or _extract.get(instance, "_similarity_top_k")
            retrieval = handler.start_retrieval(
                source, top_k=top_k if isinstance(top_k, int) else None, parent=parent
            )
            if capture:
                retrieval.query = _extract.query_text(_argument(bound_args, "str_or_query_bundle"))
            return retrieval, run
        if kind in (Kind.QUERY_ENGINE, Kind.CHAT_ENGINE):
            workflow = handler.start_workflow(type(instance).__name__, parent=parent)
            if capture:
                text = _extract.query_text(_argument(bound_args, "str_or_query_bundle")) or _argument(
                    bound_args, "message"
                )
                if isinstance(text, str):
                    workflow.input_messages = _extract.prompt_messages(text)
            return workflow, run
        if kind is Kind.TOOL:
            metadata = _extract.get(instance, "metadata")
            name = _extract.get(metadata, "name") or type(instance).__name__
            description = _extract.get(metadata, "description")
            tool = handler.start_tool(
                str(name),
                call_id=call_id,
                description=description if isinstance(description, str) else None,
                parent=parent,
            )
            if capture:
                tool.arguments = _argument(bound_args, "kwargs") or _argument(bound_args, "args")
            return tool, run
        if kind is Kind.AGENT_RUN:
            llm = _extract.get(instance, "llm")
            description = _extract.get(instance, "description")
            messages = _run_messages(bound_args) if capture else None
            agent = handler.start_agent(
                _agent_name(instance),
                description=description if isinstance(description, str) else None,
                request_model=_extract.model_name(_extract.unwrap_llm(llm)) if llm is not None else None,
                parent=parent,
            )
            if messages is not None:
                _set_input_messages(agent, messages)
            if capture:
                agent.system_instructions = _system_instructions(instance)
            return agent, RunState(agent, agent=agent, agent_name=agent.name, workflow=instance)
        # Kind.WORKFLOW_RUN
        multi_agent = is_multi_agent(instance)
        messages = _run_messages(bound_args) if capture and multi_agent else None
        workflow = handler.start_workflow(type(instance).__name__, parent=parent)
        if messages is not None:
            _set_input_messages(workflow, messages)
        return workflow, RunState(workflow, multi_agent=multi_agent, workflow=instance)

    def _start_model(
        self,
        kind: Kind,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any,
        parent: Invocation | None,
        capture: bool,
    ) -> ModelInvocation:
        handler = self.runs.handler
        llm = _extract.unwrap_llm(instance)
        host, port = _extract.server_address(llm)
        start = handler.start_text_completion if kind is Kind.COMPLETION else handler.start_chat
        call_kwargs = _argument(bound_args, "kwargs")
        if not isinstance(call_kwargs, dict):
            call_kwargs = None
        # content is converted before the span starts: its cost is not the model's latency
        content = _model_content(kind, bound_args, call_kwargs) if capture else None
        invocation = start(
            _extract.model_name(llm),
            provider=_extract.provider_name(llm),
            parent=parent,
            stream=is_stream(method_name(id_)),
            server_address=host,
            server_port=port,
        )
        try:
            if kind is Kind.PARSE:  # it sends its ``llm_kwargs`` only (with a JSON schema)
                llm_kwargs = _argument(bound_args, "llm_kwargs")
                sent = dict(llm_kwargs) if isinstance(llm_kwargs, Mapping) else {}
                self._describe_model(invocation, sent, None, capture)
                invocation.output_type = semconv.OUTPUT_TYPE_JSON
            else:
                self._describe_model(invocation, llm, call_kwargs, capture)
            if content is not None:
                messages, dropped, invocation.tool_definitions = content
                invocation.input_messages = messages
                if dropped:
                    invocation.mark_truncated(semconv.GEN_AI_INPUT_MESSAGES)
        except Exception as exc:  # the span started: it must stay in the run map to be ended
            report_internal_error(f"{__name__}.LlamaIndexSpanHandler._describe_model", exc)
        return invocation

    def _describe_inner(
        self, invocation: ModelInvocation, bound_args: inspect.BoundArguments, instance: Any, other: bool
    ) -> None:
        """A model call made inside another one is what goes to the provider (``StructuredLLM.chat``
        -> the LLM's ``chat(response_format=...)``): its request parameters are the span's, when it is
        another component's call (``other``) or is given parameters (else they are the outer call's)."""
        call_kwargs = _argument(bound_args, "kwargs")
        if not isinstance(call_kwargs, dict):
            call_kwargs = None
        if other or (call_kwargs and not _extract.PARAM_NAMES.isdisjoint(call_kwargs)):
            try:
                llm = _extract.unwrap_llm(instance)
                self._describe_model(invocation, llm, call_kwargs, capture_content())
            except Exception as exc:  # the outer call's parameters stand
                report_internal_error(f"{__name__}.LlamaIndexSpanHandler._describe_inner", exc)

    @staticmethod
    def _describe_model(
        invocation: ModelInvocation, llm: Any, call_kwargs: dict[str, Any] | None, capture: bool
    ) -> None:
        """The request parameters of a model call (and its instructions, content capture only)."""
        params = _extract.request_params(llm, call_kwargs)
        invocation.temperature = params.temperature
        invocation.max_tokens = params.max_tokens
        invocation.top_p = params.top_p
        invocation.top_k = params.top_k
        invocation.seed = params.seed
        invocation.frequency_penalty = params.frequency_penalty
        invocation.presence_penalty = params.presence_penalty
        invocation.stop_sequences = params.stop_sequences
        invocation.output_type = params.output_type
        invocation.reasoning_level = params.reasoning_level
        invocation.previous_response_id = params.previous_response_id
        if capture:
            instructions = params.instructions
            invocation.system_instructions = (
                [{"type": "text", "content": instructions}] if instructions is not None else None
            )

    def _enter_step(
        self, id_: str, bound_args: inspect.BoundArguments, parent: Invocation | None, run: RunState | None
    ) -> Node:
        if run is None:
            return Node(Kind.STEP, None, parent, None, None)
        step = method_name(id_)
        event = _argument(bound_args, "ev")
        if run.multi_agent and step in ("setup_agent", "run_agent_step"):
            # setup_agent's event holds the messages the agent is given (its AgentInput)
            given = event if step == "setup_agent" else None
            self._switch_agent(run, _extract.get(event, "current_agent_name"), given)
        if step == "call_tool" and isinstance(_extract.get(event, "tool_name"), str):
            call_id = _extract.get(event, "tool_id") or None
            # a tool call that waited for an event (human in the loop) runs its step again: same span
            tool = run.resume(str(call_id) if call_id else event.tool_name) if run.waiting else None
            if tool is None:
                name = _declared_name(run, event.tool_name)
                tool = self.runs.handler.start_tool(
                    name,
                    call_id=call_id,
                    description=_tool_description(run, name) if name != _parts.OTHER else None,
                    parent=run.current,
                )
                if name == _parts.OTHER:  # a name the model made up is no span name either
                    tool.span.update_name(semconv.OP_EXECUTE_TOOL)
                if capture_content():
                    tool.arguments = _extract.get(event, "tool_kwargs")
            node = Node(Kind.TOOL, tool, run.current, None, run)
            run.adopt(node)  # a resumed tool call too: this step's node runs it now
            self.runs.attach(node)
            return node
        return Node(Kind.STEP, None, run.current, None, run)

    def _switch_agent(self, run: RunState, name: Any, agent_input: Any) -> None:
        """The acting agent of a multi-agent workflow is now ``name``: end the one before, start its
        span, with the messages it is given (``agent_input``, the ``AgentInput`` event of its
        ``setup_agent`` step, if known) and its system prompt (content capture only)."""
        if not isinstance(name, str) or name == run.agent_name:
            return
        if run.agent is not None and run.agent is not run.invocation:
            run.agent.stop()
        agent_obj = _extract.get(_extract.get(run.workflow, "agents"), name)
        llm = _extract.get(agent_obj, "llm")
        description = _extract.get(agent_obj, "description")
        run.agent = self.runs.handler.start_agent(
            name,
            description=description if isinstance(description, str) else None,
            request_model=_extract.model_name(_extract.unwrap_llm(llm)) if llm is not None else None,
            parent=run.invocation,
        )
        run.agent_name = name
        run.tool_names, run.tool_names_read = None, False  # the new agent's tools
        if capture_content():
            messages = _given_messages(agent_input)
            if messages is not None:
                _set_input_messages(run.agent, messages)
            run.agent.system_instructions = _system_instructions(agent_obj)

    # ---- leaving ----------------------------------------------------------------------
    def _exit(self, id_: str, bound_args: inspect.BoundArguments, result: Any) -> None:
        # the node leaves the map only once handled: if handling fails, eviction still ends its span
        nodes = self.runs.nodes
        node = nodes.peek(id_)
        if node is None:
            return
        node.exited = True
        self.runs.detach(node)
        reranks = node.pop_reranks()
        for rerank in reranks:  # reranks that reported no end event
            if node.kind is Kind.POSTPROCESSOR and len(reranks) == 1 and rerank.documents is None:
                rerank.documents = _extract.documents(result, capture_content())
            rerank.stop()
        self.runs.remember_stream(id_, node, result)
        invocation = node.invocation
        if invocation is None:
            if node.kind is Kind.STEP and node.run is not None:
                _record_step(node.run, method_name(id_), result)
            elif (
                node.merged
                and (inspect.isgenerator(result) or inspect.isasyncgen(result))
                and self.runs.feed(id_, node)
            ):
                return  # LlamaIndex reports its stream's events under this span id: kept for them
            nodes.pop(id_)
            return
        streaming = inspect.isgenerator(result) or inspect.isasyncgen(result)
        if isinstance(invocation, ModelInvocation) and streaming:
            self.runs.remember_model_stream(id_, node, result)
            self.runs.stream_opened(node)
            return  # a stream: ends on its end event, or by eviction if abandoned
        if node.kind in ENGINE_KINDS and self.runs.defer(node, result):
            nodes.get(id_)  # returning is news: its wait for the stream counts from now
            return  # the engine returned a stream of its own: it ends when that stream does
        if node.kind is Kind.TOOL and _held(node, invocation):
            nodes.pop(id_)
            return  # its tool waits for an event: the step's next run goes on with this invocation
        early = node.early_end
        if early is not None and node.kind in ENGINE_KINDS and _is_stream_response(result):
            # the stream it returns already failed (or was cancelled): so does the caller's read of it
            nodes.pop(id_)
            self.runs.forget_lazy(node)
            if isinstance(early, BaseException):
                invocation.fail(early)
            else:
                invocation.cancel()
            self.runs.stream_opened(node)  # an engine returning this engine's stream learns it too
            end_stream_host(self.runs, node, early)
            return
        if node.cancelled:  # stopped by the workflow (``cancel_run()``, a cancelled step): no result
            _end_cancelled(node, invocation)
        else:
            _finish(node, invocation, result)
        nodes.pop(id_)
        if node.feeders:
            self.runs.drop_feeders(node)
        self.runs.forget_lazy(node)
        if node.stream_host is not None:  # a model call made by an engine's lazy stream
            end_stream_host(self.runs, node, "cancel" if node.cancelled else "stop")

    def _drop(self, id_: str, err: BaseException | None) -> None:
        nodes = self.runs.nodes
        node = nodes.peek(id_)
        if node is None:
            return
        node.exited = True
        self.runs.detach(node)
        for rerank in node.pop_reranks():
            if err is None or is_control_flow(err):
                rerank.stop()
            else:
                rerank.fail(err)
        tool = node.parent if node.kind is Kind.TOOL else None
        if err is not None and isinstance(tool, ToolInvocation) and not is_control_flow(err):
            # the tool behind a call_tool step raised or was cancelled (a workflow timeout): the step
            # itself may still return normally, with no result, so the execute_tool span fails here
            tool.fail(err)
        elif isinstance(tool, ToolInvocation) and _waits_for_event(err):
            # the tool waits for an event: the workflow runs its call_tool step again when it comes
            step = nodes.peek(node.host_id) if node.host_id is not None else None
            if step is not None and step.invocation is tool and _is_tool_step(step) and step.run is not None:
                step.run.hold(tool)
        invocation = node.invocation
        run = node.run
        paused = _is_tool_step(node) and _waits_for_event(err)
        if paused and isinstance(invocation, ToolInvocation) and run is not None:
            run.hold(invocation)  # the step itself was paused: its next run goes on with this invocation
            nodes.pop(id_)
            return
        if invocation is not None:
            owns_run = run is not None and run.invocation is invocation
            if (node.cancelled and (err is None or is_control_flow(err))) or (
                owns_run and _cancelled_by_user(err)
            ):
                _end_cancelled(node, invocation)
            elif err is None or is_control_flow(err):
                if owns_run and run is not None:
                    end_run_children(run, lambda child: child.stop())
                invocation.stop()
            else:
                if owns_run and run is not None and isinstance(err, asyncio.CancelledError):
                    # the caller's task awaiting the run was cancelled, not its steps: a model call
                    # or tool still running ends when it really does (its usage counts); only what
                    # no dispatcher span of its own ends (a sub-agent, a tool waiting) ends here
                    end_run_children(run, lambda child: child.fail(err), owned=False)
                elif owns_run and run is not None:
                    end_run_children(run, lambda child: child.fail(err))
                invocation.fail(err)
        nodes.pop(id_)
        if node.feeders:
            self.runs.drop_feeders(node)
        self.runs.forget_lazy(node)
        if node.stream_host is not None:  # a model call made by an engine's lazy stream
            end_stream_host(self.runs, node, "stop" if err is None or is_control_flow(err) else err)


def _lazy_host(parent_id: str | None, parent: Node | None) -> str | None:
    """The engine whose lazily iterated stream a span under ``parent`` runs in, if any."""
    if parent is None:
        return None
    if parent.lazy_host is not None:
        return parent.lazy_host
    if parent.kind in ENGINE_KINDS and parent.deferred:
        return parent_id  # started under an engine that returned (a task it created)
    return None


def _cancelled_by_user(err: BaseException | None) -> bool:
    """``WorkflowCancelledByUser``: the run was stopped by its handler's ``cancel_run()``."""
    return err is not None and any(cls.__name__ == "WorkflowCancelledByUser" for cls in type(err).__mro__)


def _end_cancelled(node: Node, invocation: Invocation) -> None:
    """End an invocation the workflow stopped: a run stopped by ``cancel_run()``, or the tool of a
    ``call_tool`` step whose task the workflow cancelled. Like a run whose caller gave up (an
    ``asyncio.CancelledError``), it ends ``cancelled``, and so do the run's parts that no dispatcher
    span of their own ends (its acting sub-agent, its tool calls waiting for an event). A model call
    or tool still running is not ended here: the workflow cancels its step's task (the call then
    ends ``cancelled`` itself), or cannot (a sync step's thread, a shielded call) and the call ends
    when it really does, with its usage."""
    run = node.run
    if run is not None and run.invocation is invocation:
        end_run_children(run, lambda child: child.fail(CANCELLED), owned=False)
    invocation.fail(CANCELLED)


def _waits_for_event(err: BaseException | None) -> bool:
    """``WaitingForEvent``: a step paused until an event comes (``ctx.wait_for_event``)."""
    return err is not None and any(cls.__name__ == "WaitingForEvent" for cls in type(err).__mro__)


def _is_tool_step(node: Node) -> bool:
    """A ``call_tool`` workflow step's node (a tool node of no component)."""
    return node.kind is Kind.TOOL and node.owner_id is None


def _held(node: Node, invocation: Invocation) -> bool:
    """Whether a call_tool step's invocation waits for an event (kept open for the step's next run)."""
    run = node.run
    if run is None or run.waiting is None or not isinstance(invocation, ToolInvocation):
        return False
    return run.holds(invocation)


_SELECTION_CODES = frozenset(
    code
    for code in (
        getattr(getattr(_tool_calling, name, None), "__code__", None)
        for name in ("call_tool_with_selection", "acall_tool_with_selection")
    )
    if code is not None
)
_SELECTION_DEPTH = 32
"""Frames walked up from a tool span started by ``predict_and_call`` to the call that runs it."""


def _selected_call_id() -> str | None:
    """The id of the model's tool call that ``predict_and_call`` is running: the ``tool_call``
    (``ToolSelection``) argument of LlamaIndex's ``call_tool_with_selection`` or its async twin,
    a few frames up the stack (the tool's own dispatcher span carries no call id)."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_SELECTION_DEPTH):
        if frame is None:
            return None
        if frame.f_code in _SELECTION_CODES:
            call_id = _extract.get(frame.f_locals.get("tool_call"), "tool_id")
            return call_id if isinstance(call_id, str) and call_id else None
        frame = frame.f_back
    return None


Messages = tuple[list[dict[str, Any]], int]
"""Input messages, and how many of the oldest were left out."""


def _call_messages(bound_args: inspect.BoundArguments | None) -> Messages:
    """The chat history and user message of a ``predict_and_call`` (content capture only)."""
    return _extract.conversation(_argument(bound_args, "chat_history"), _argument(bound_args, "user_msg"))


def _run_messages(bound_args: inspect.BoundArguments | None) -> Messages | None:
    """The chat history and user message an agent run starts with (its ``AgentWorkflowStartEvent``);
    None for a run resumed from a context, which carries none (content capture only)."""
    event = _argument(bound_args, "start_event")
    read = getattr(event, "get", None)  # a StartEvent's fields are served by its get()
    if not callable(read):
        return None
    try:
        history, user_msg = read("chat_history"), read("user_msg")
    except Exception:
        return None
    if not history and user_msg is None:
        return None
    return _extract.conversation(history, user_msg)


def _given_messages(agent_input: Any) -> Messages | None:
    """The messages an ``AgentWorkflow`` gives its acting agent: its ``AgentInput`` event's ``input``
    (the workflow's memory: the conversation so far, the hand-off included); None if not known or
    if converting them failed."""
    given = _extract.get(agent_input, "input") if agent_input is not None else None
    if not isinstance(given, list):
        return None
    try:
        return _extract.input_messages(given)
    except Exception as exc:
        report_internal_error(f"{__name__}._given_messages", exc)
        return None


def _model_content(
    kind: Kind, bound_args: inspect.BoundArguments | None, call_kwargs: Mapping[str, Any] | None
) -> tuple[list[dict[str, Any]] | None, int, list[dict[str, Any]] | None] | None:
    """(input messages, how many of the oldest were left out, tool definitions) of a model call; None
    if converting them failed (the call is traced without them)."""
    try:
        messages = _argument(bound_args, "messages")
        dropped = 0
        converted: list[dict[str, Any]] | None = None
        if messages is not None:
            converted, dropped = _extract.input_messages(messages)
        elif kind is Kind.COMPLETION:
            prompt = _prompt(bound_args)
            if isinstance(prompt, str):
                converted = _extract.prompt_messages(prompt)
        elif kind is Kind.PARSE:  # the messages its prompt template makes, as the call makes them
            prompt_args = _argument(bound_args, "prompt_args")
            formatted = _argument(bound_args, "prompt").format_messages(
                **(prompt_args if isinstance(prompt_args, dict) else {})
            )
            converted, dropped = _extract.input_messages(formatted)
        tools = _extract.tool_definitions(call_kwargs.get("tools")) if call_kwargs else None
    except Exception as exc:
        report_internal_error(f"{__name__}._model_content", exc)
        return None
    return converted, dropped, tools


def _set_input_messages(invocation: Any, messages: Messages) -> None:
    converted, dropped = messages
    invocation.input_messages = converted
    if dropped:
        invocation.mark_truncated(semconv.GEN_AI_INPUT_MESSAGES)


def _acting_agent(run: RunState) -> Any:
    """The agent object acting in a run: the run's own, or the current one of a multi-agent workflow."""
    owner = run.workflow
    if run.multi_agent:
        agents = _extract.get(owner, "agents")
        owner = agents.get(run.agent_name) if isinstance(agents, Mapping) and run.agent_name else None
    return owner


_HANDOFF = "handoff"
"""The tool an ``AgentWorkflow`` gives its agents to hand over to one another (a reserved name)."""


def _agent_tool_names(run: RunState) -> frozenset[str] | None:
    """Names of the tools the acting agent offers the model, or None when they are not known before
    the call: tools from a ``tool_retriever``, a ``get_tools`` of the application's own."""
    owner = _acting_agent(run)
    if not isinstance(owner, BaseWorkflowAgent) or owner.tool_retriever is not None:
        return None
    if type(owner).get_tools is not BaseWorkflowAgent.get_tools:
        return None
    workflow = run.workflow
    if run.multi_agent and type(workflow).get_tools is not AgentWorkflow.get_tools:
        return None
    names = _extract.declared_tool_names(list(owner.tools or ()))
    if names is not None and run.multi_agent:
        names = names | {_HANDOFF}
    return names


def _declared_name(run: RunState, name: str) -> str:
    """``name`` if the acting agent declares a tool of that name (or its tools are not known), else
    ``_parts.OTHER``: the model made it up. The names are read once per agent (a set lookup per call)."""
    if not run.tool_names_read:
        run.tool_names_read = True
        try:
            run.tool_names = _agent_tool_names(run)
        except Exception as exc:  # an odd agent: its tools are not known, its names are kept
            report_internal_error(f"{__name__}._declared_name", exc)
            run.tool_names = None
    names = run.tool_names
    return name if names is None or name in names else _parts.OTHER


def _tool_description(run: RunState, name: str) -> str | None:
    """The description the acting agent gives the model for its tool ``name``, if it has one."""
    owner = _acting_agent(run)
    tools = _extract.get(owner, "tools")
    if not isinstance(tools, (list, tuple)):
        return None
    for tool in tools:
        metadata = _extract.get(tool, "metadata")
        if _extract.get(metadata, "name") == name:
            description = _extract.get(metadata, "description")
            return description if isinstance(description, str) and description else None
    return None


def _system_instructions(agent: Any) -> list[dict[str, Any]] | None:
    """An agent's system prompt (``system_prompt`` of a ``FunctionAgent``, ``ReActAgent``...) as the
    conventions' ``gen_ai.system_instructions``; None if it has none."""
    prompt = _extract.get(agent, "system_prompt")
    return [{"type": "text", "content": prompt}] if isinstance(prompt, str) and prompt else None


def _agent_name(instance: Any) -> str:
    name = _extract.get(instance, "name")
    return name if isinstance(name, str) and name else type(instance).__name__


def _record_step(run: RunState, step: str, result: Any) -> None:
    """Agent step events from the outputs of the agent's workflow steps."""
    agent = run.agent
    if agent is None:
        return
    if step == "aggregate_tool_results":
        if isinstance(result, StopEvent):  # a return_direct tool's output is the run's answer
            agent.step(semconv.STEP_FINAL)
        return
    if step != "run_agent_step":
        return
    tool_calls = _extract.get(result, "tool_calls")
    if tool_calls:
        for call in tool_calls:
            name = _extract.get(call, "tool_name")
            agent.step(
                semconv.STEP_ACTION,
                tool_name=_declared_name(run, name) if isinstance(name, str) else None,
                tool_call_id=_extract.get(call, "tool_id") or None,
            )
    elif result is not None:
        agent.step(semconv.STEP_FINAL)


def end_stream_host(runs: Runs, node: Node, how: str | BaseException) -> None:
    """A model stream ended (``"stop"``, ``"cancel"`` or an exception): end the engine that
    returned it, if it was waiting for it, and the engines that returned that engine's stream."""
    stream = node.invocation
    host = runs.stream_closed(node, how)
    while host is not None:
        invocation = host.invocation
        if invocation is not None and not invocation.ended:
            if isinstance(how, BaseException):
                invocation.fail(how)
            elif how == "cancel":
                invocation.cancel()
            else:
                if (
                    capture_content()
                    and isinstance(stream, ModelInvocation)
                    and hasattr(invocation, "output_messages")
                    and _stream_text(deferred_result(host)) is None
                ):
                    invocation.output_messages = stream.output_messages
                _finish(host, invocation, deferred_result(host))
        host.result = None
        host = runs.stream_closed(host, how)


def _finish(node: Node, invocation: Invocation, result: Any) -> None:
    """End an owned invocation when its dispatcher span returns ``result``."""
    capture = capture_content()
    if isinstance(invocation, RetrievalInvocation):
        invocation.documents = _extract.documents(result, capture)
    elif isinstance(invocation, ToolInvocation):
        output = _extract.get(result, "tool_output") or result  # ToolCallResult or ToolOutput
        run = node.run
        if run is not None and isinstance(run.agent, AgentInvocation) and result is not None:
            run.agent.step(
                semconv.STEP_OBSERVATION, tool_name=invocation.name, tool_call_id=invocation.call_id
            )
        if _extract.get(output, "is_error") is True:
            exception = _extract.get(output, "exception")
            invocation.fail(
                exception if isinstance(exception, BaseException) else semconv.ERROR_TYPE_TOOL_ERROR
            )
            return
        if capture:
            result_value = _extract.tool_result(output)
            invocation.result = result_value if result_value is not None else _safe_str(output)
    elif node.run is not None and node.run.invocation is invocation:
        end_run_children(node.run, lambda child: child.stop())
        if capture:
            final = _extract.get(result, "result")  # StopEvent
            _set_output(invocation, final if final is not None else result)
    elif node.kind in _OUTPUT_KINDS and capture:
        _set_output(invocation, result)
    elif node.failure is not None:  # a model call whose response reported a failure
        invocation.fail(node.failure)
        return
    invocation.stop()


_OUTPUT_KINDS = frozenset({Kind.QUERY_ENGINE, Kind.CHAT_ENGINE, Kind.PREDICT_AND_CALL})
_STREAM_FIELDS = ("response_gen", "async_response_gen", "chat_stream", "achat_stream")


def _is_stream_response(result: Any) -> bool:
    return any(_extract.get(result, name) is not None for name in _STREAM_FIELDS)


def _stream_text(result: Any) -> str | None:
    """The text a streamed engine response already holds (never consumes the stream)."""
    for name in ("response_txt", "response"):
        text = _extract.get(result, name)
        if isinstance(text, str) and text:
            return text
    return None


def _set_output(invocation: Invocation, result: Any) -> None:
    if _is_stream_response(result):
        # str() of a streamed response consumes its stream: read only what it already holds
        value: str | None = _stream_text(result)
        if value is None:
            return  # the model stream's output, if any, was copied by end_stream_host
    else:
        text = _extract.get(result, "response")
        message = _extract.get(text, "content") if text is not None and not isinstance(text, str) else text
        value = message if isinstance(message, str) else _safe_str(result)
    if value is not None and hasattr(invocation, "output_messages"):
        invocation.output_messages = [
            {"role": "assistant", "parts": [{"type": "text", "content": value}], "finish_reason": "stop"}
        ]


def _safe_str(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return str(value)
    except Exception:
        return None
