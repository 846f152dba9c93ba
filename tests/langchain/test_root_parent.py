"""A root chain's span, started with its first child, hangs under the span that was current where
the chain was called, not where (or when) its first child starts."""

from __future__ import annotations

import threading

from langchain_core.runnables import RunnableConfig, RunnableLambda

from .conftest import tree
from .fakes import ScriptedChatModel, answer


def test_root_parent_is_the_callers_span_not_the_first_childs(tracer_provider, handler, span_exporter):
    tracer = tracer_provider.get_tracer("app")
    model = ScriptedChatModel(script=[answer("ok")])

    def step(text: str) -> str:
        with tracer.start_as_current_span("app.lookup"):  # current when the model call starts
            return str(model.invoke(text).content)

    with tracer.start_as_current_span("http.request"):
        assert RunnableLambda(step).invoke("hi", config={"callbacks": [handler]}) == "ok"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        ("chat gpt-4o-mini", "invoke_workflow step"),
        ("app.lookup", "http.request"),
        ("invoke_workflow step", "http.request"),
        ("http.request", None),
    ]
    assert len({s.context.trace_id for s in spans}) == 1


def test_root_parent_when_the_first_child_runs_in_another_thread(tracer_provider, handler, span_exporter):
    """A plain thread starts with an empty OTel context: the config passed on still links the model
    call to the chain, and the chain's span to its caller's."""
    tracer = tracer_provider.get_tracer("app")
    model = ScriptedChatModel(script=[answer("ok")])

    def step(text: str, config: RunnableConfig) -> str:
        out: list[str] = []
        worker = threading.Thread(target=lambda: out.append(str(model.invoke(text, config=config).content)))
        worker.start()
        worker.join()
        return out[0]

    with tracer.start_as_current_span("http.request"):
        assert RunnableLambda(step).invoke("hi", config={"callbacks": [handler]}) == "ok"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        ("chat gpt-4o-mini", "invoke_workflow step"),
        ("invoke_workflow step", "http.request"),
        ("http.request", None),
    ]
    assert len({s.context.trace_id for s in spans}) == 1
