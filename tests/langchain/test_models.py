"""Model calls: chat and completion LLMs, invoke/stream/batch, sync and async, usage, cache, retries."""

from __future__ import annotations

import time
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import set_llm_cache
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.llms import create_base_retry_decorator
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult, Generation, LLMResult
from langchain_core.runnables import RunnableLambda

from llmtrace import semconv
from llmtrace.testing import metric_points

from .conftest import attrs, events, tree
from .fakes import ScriptedChatModel, answer

FULL_USAGE = {
    "input_tokens": 100,
    "output_tokens": 40,
    "total_tokens": 140,
    "input_token_details": {"cache_read": 60, "cache_creation": 20},
    "output_token_details": {"reasoning": 30},
}


def model(**kwargs: Any) -> ScriptedChatModel:
    kwargs.setdefault("script", [answer("hello there friend")])
    return ScriptedChatModel(**kwargs)


def test_chat_invoke_attributes(handler, span_exporter, metric_reader):
    result = model().invoke("hi", config={"callbacks": [handler]})
    assert result.content == "hello there friend"
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "chat gpt-4o-mini"
    assert span.parent is None
    a = attrs(span)
    assert a[semconv.GEN_AI_OPERATION_NAME] == semconv.OP_CHAT
    assert a[semconv.GEN_AI_PROVIDER_NAME] == semconv.PROVIDER_OPENAI
    assert a[semconv.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert a[semconv.GEN_AI_REQUEST_TEMPERATURE] == 0.2
    assert a[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 100
    assert a[semconv.GEN_AI_RESPONSE_ID] == "chatcmpl-1"
    assert a[semconv.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini-2024-07-18"
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 10
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert a[semconv.GEN_AI_USAGE_COST_AMOUNT] > 0
    assert semconv.GEN_AI_INPUT_MESSAGES not in a  # content capture is off by default
    points = metric_points(metric_reader, semconv.METRIC_CLIENT_TOKEN_USAGE)
    assert sorted(p.sum for p in points) == [5, 10]
    assert handler.open_runs() == 0


def test_usage_metadata_details(handler, span_exporter):
    model(script=[answer("x", usage=FULL_USAGE)]).invoke("hi", config={"callbacks": [handler]})
    a = attrs(span_exporter.get_finished_spans()[0])
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 100
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 40
    assert a[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 60
    assert a[semconv.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 20
    assert a[semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 30


class LegacyUsageModel(ScriptedChatModel):
    llm_output: dict[str, Any]

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage(content="ok"))], llm_output=self.llm_output
        )


@pytest.mark.parametrize(
    ("llm_output", "expected"),
    [
        (
            {
                "token_usage": {
                    "prompt_tokens": 12,
                    "completion_tokens": 7,
                    "prompt_tokens_details": {"cached_tokens": 4},
                    "completion_tokens_details": {"reasoning_tokens": 2},
                },
                "model_name": "gpt-4o",
            },
            (12, 7, 4, None, 2),
        ),
        (
            {
                "usage": {
                    "input_tokens": 3,
                    "output_tokens": 9,
                    "cache_read_input_tokens": 5,
                    "cache_creation_input_tokens": 2,
                },
                "model": "claude-3-5-haiku-20241022",
            },
            (10, 9, 5, 2, None),
        ),
    ],
)
def test_legacy_llm_output_usage(handler, span_exporter, llm_output, expected):
    LegacyUsageModel(script=[], llm_output=llm_output).invoke("hi", config={"callbacks": [handler]})
    a = attrs(span_exporter.get_finished_spans()[0])
    got = tuple(
        a.get(k)
        for k in (
            semconv.GEN_AI_USAGE_INPUT_TOKENS,
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
            semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
            semconv.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
            semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
        )
    )
    assert got == expected
    assert a[semconv.GEN_AI_RESPONSE_MODEL] == llm_output.get("model_name", llm_output.get("model"))


def test_no_usage_is_flagged_not_guessed(handler, span_exporter):
    LegacyUsageModel(script=[], llm_output={}).invoke("hi", config={"callbacks": [handler]})
    a = attrs(span_exporter.get_finished_spans()[0])
    assert a[semconv.LLMTRACE_USAGE_REPORTED] is False
    assert semconv.GEN_AI_USAGE_INPUT_TOKENS not in a
    assert semconv.GEN_AI_USAGE_COST_AMOUNT not in a


def test_stream_sets_ttfc_chunks_and_final_usage(handler, span_exporter, metric_reader):
    chunks = list(model().stream("hi", config={"callbacks": [handler]}))
    assert "".join(str(c.content) for c in chunks).strip() == "hello there friend"
    (span,) = span_exporter.get_finished_spans()
    a = attrs(span)
    assert a[semconv.GEN_AI_REQUEST_STREAM] is True
    # 3 words and the usage chunk; not the empty closing chunk LangChain adds itself
    assert a[semconv.LLMTRACE_STREAM_CHUNKS] == 4
    assert a[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 10
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert span.events == ()  # no event per token
    assert len(metric_points(metric_reader, semconv.METRIC_CLIENT_TIME_TO_FIRST_CHUNK)) == 1


async def test_astream_and_ainvoke(handler, span_exporter):
    chunks = [c async for c in model().astream("hi", config={"callbacks": [handler]})]
    assert chunks
    await model().ainvoke("hi", config={"callbacks": [handler]})
    spans = span_exporter.get_finished_spans()
    assert [s.name for s in spans] == ["chat gpt-4o-mini"] * 2
    assert attrs(spans[0])[semconv.GEN_AI_REQUEST_STREAM] is True
    assert semconv.GEN_AI_REQUEST_STREAM not in attrs(spans[1])


def test_batch_and_abatch_make_one_span_each(handler, span_exporter):
    model().batch(["a", "b", "c"], config={"callbacks": [handler], "max_concurrency": 2})
    assert len(span_exporter.get_finished_spans()) == 3
    assert all(s.parent is None for s in span_exporter.get_finished_spans())


async def test_abatch(handler, span_exporter):
    await model().abatch(["a", "b"], config={"callbacks": [handler]})
    assert len(span_exporter.get_finished_spans()) == 2


def test_completion_llm(handler, span_exporter):
    llm = FakeListLLM(responses=["one", "two"])
    assert llm.invoke("p", config={"callbacks": [handler]}) == "one"
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "text_completion"
    a = attrs(span)
    assert a[semconv.GEN_AI_OPERATION_NAME] == semconv.OP_TEXT_COMPLETION
    assert a[semconv.GEN_AI_PROVIDER_NAME] == "fakelist"
    assert a[semconv.LLMTRACE_USAGE_REPORTED] is False


def test_content_capture_on(handler, span_exporter, content_capture):
    from llmtrace import CaptureMode
    from llmtrace._content import ContentPolicy

    content_capture.content = ContentPolicy(mode=CaptureMode.SPAN_ONLY)
    model().invoke([("system", "be brief"), ("user", "hi")], config={"callbacks": [handler]})
    a = attrs(span_exporter.get_finished_spans()[0])
    import json

    # a system message of the history is an input message, in the order sent: instructions given
    # apart from the history are gen_ai.system_instructions, and a LangChain chat call has none
    assert json.loads(a[semconv.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
    ]
    assert semconv.GEN_AI_SYSTEM_INSTRUCTIONS not in a
    assert json.loads(a[semconv.GEN_AI_OUTPUT_MESSAGES]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "hello there friend"}],
            "finish_reason": "stop",
        }
    ]


class Boom(ScriptedChatModel):
    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        raise TimeoutError("slow")


def test_model_error(handler, span_exporter):
    with pytest.raises(TimeoutError):
        Boom(script=[]).invoke("hi", config={"callbacks": [handler]})
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code.name == "ERROR"
    assert attrs(span)[semconv.ERROR_TYPE] == "timeout"
    assert [e[0] for e in events(span)] == [semconv.EVENT_EXCEPTION]


def _fallbacks_tree() -> list[tuple[str, str | None]]:
    return [
        ("chat primary", "invoke_workflow RunnableWithFallbacks"),
        ("chat backup", "invoke_workflow RunnableWithFallbacks"),
        ("invoke_workflow RunnableWithFallbacks", None),
    ]


def test_fallbacks_stay_in_one_trace_with_a_hand_registered_handler(handler, span_exporter):
    """RunnableWithFallbacks hands its caller's config (with the handler list) to each fallback, so
    LangChain reports them without a parent; the run its context names is the parent."""
    chain = Boom(script=[], model="primary").with_fallbacks([model(model="backup")])
    assert chain.invoke("hi", config={"callbacks": [handler]}).content == "hello there friend"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == _fallbacks_tree()
    assert len({s.context.trace_id for s in spans}) == 1
    assert attrs(spans[0])[semconv.ERROR_TYPE] == "timeout"
    assert handler.open_runs() == 0


async def test_async_fallbacks_stay_in_one_trace_with_a_hand_registered_handler(handler, span_exporter):
    chain = Boom(script=[], model="primary").with_fallbacks([model(model="backup")])
    assert (await chain.ainvoke("hi", config={"callbacks": [handler]})).content == "hello there friend"
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == _fallbacks_tree()
    assert len({s.context.trace_id for s in spans}) == 1


@pytest.mark.parametrize("calls_model", [True, False])
def test_workflow_duration_metric_equals_its_span(handler, span_exporter, metric_reader, calls_model):
    """A root chain's span starts when its first child shows it is a workflow, back-dated to the
    chain's own start: the duration metric must count from there too, as the span does."""

    def work(_: Any) -> str:
        time.sleep(0.2)  # the chain's own work before its first child run
        return str(model().invoke("hi").content) if calls_model else "done"

    RunnableLambda(work).with_config(run_name="pipeline").invoke(None, config={"callbacks": [handler]})
    workflow = next(s for s in span_exporter.get_finished_spans() if s.name == "invoke_workflow pipeline")
    span_s = (workflow.end_time - workflow.start_time) / 1e9
    (point,) = metric_points(metric_reader, semconv.METRIC_WORKFLOW_DURATION)
    assert span_s >= 0.2
    assert point.sum == pytest.approx(span_s, abs=0.01)


class Flaky(ScriptedChatModel):
    failures: int = 2

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        retry = create_base_retry_decorator(
            error_types=[ConnectionError], max_retries=3, run_manager=run_manager
        )

        @retry
        def attempt() -> ChatResult:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("reset")
            return super(Flaky, self)._generate(messages, stop, run_manager, **kwargs)

        return attempt()


def test_retry_events(handler, span_exporter, monkeypatch):
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda s: None)
    result = Flaky(script=[answer("ok")]).invoke("hi", config={"callbacks": [handler]})
    assert result.content == "ok"
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code.name == "UNSET"
    assert events(span) == [
        (semconv.LLMTRACE_RETRY_EVENT, {semconv.LLMTRACE_RETRY_ATTEMPT: 1, semconv.ERROR_TYPE: "connection"}),
        (semconv.LLMTRACE_RETRY_EVENT, {semconv.LLMTRACE_RETRY_ATTEMPT: 2, semconv.ERROR_TYPE: "connection"}),
    ]


# ---- LLM cache ------------------------------------------------------------------------------------------
def test_chat_cache_hit_in_band_with_handler_only(handler, span_exporter, metric_reader):
    set_llm_cache(InMemoryCache())
    m = model()
    m.invoke("hi", config={"callbacks": [handler]})
    m.invoke("hi", config={"callbacks": [handler]})
    miss, hit = span_exporter.get_finished_spans()
    assert attrs(miss)[semconv.LLMTRACE_CACHE_HIT] is False
    assert attrs(miss)[semconv.LLMTRACE_CACHE_SOURCE] == "InMemoryCache"
    a = attrs(hit)
    assert a[semconv.LLMTRACE_CACHE_HIT] is True
    assert a[semconv.LLMTRACE_CACHE_SOURCE] == "InMemoryCache"
    assert a[semconv.GEN_AI_USAGE_COST_AMOUNT] == 0
    assert semconv.GEN_AI_USAGE_INPUT_TOKENS not in a
    points = metric_points(metric_reader, semconv.METRIC_CLIENT_TOKEN_USAGE)
    assert sorted(p.sum for p in points) == [5, 10]  # only the miss is billed


def test_per_model_cache_when_instrumented(instrumented, span_exporter):
    class MyCache(InMemoryCache):
        pass

    m = model(cache=MyCache())
    m.invoke("hi")
    m.invoke("hi")
    miss, hit = span_exporter.get_finished_spans()
    assert (attrs(miss)[semconv.LLMTRACE_CACHE_HIT], attrs(miss)[semconv.LLMTRACE_CACHE_SOURCE]) == (
        False,
        "MyCache",
    )
    assert (attrs(hit)[semconv.LLMTRACE_CACHE_HIT], attrs(hit)[semconv.LLMTRACE_CACHE_SOURCE]) == (
        True,
        "MyCache",
    )
    assert attrs(hit)[semconv.GEN_AI_USAGE_COST_AMOUNT] == 0


def test_no_cache_attribute_without_cache(handler, span_exporter):
    model().invoke("hi", config={"callbacks": [handler]})
    assert semconv.LLMTRACE_CACHE_HIT not in attrs(span_exporter.get_finished_spans()[0])


def test_completion_llm_fully_cached_still_makes_a_span(instrumented, span_exporter):
    set_llm_cache(InMemoryCache())
    llm = FakeListLLM(responses=["one", "two", "three"])
    chain = RunnableLambda(lambda x: x) | llm
    assert chain.invoke("p") == "one"
    assert chain.invoke("p") == "one"  # from the cache: LangChain fires no LLM callback
    spans = span_exporter.get_finished_spans()
    assert tree(spans) == [
        ("text_completion", "invoke_workflow RunnableSequence"),
        ("invoke_workflow RunnableSequence", None),
        ("text_completion", "invoke_workflow RunnableSequence"),
        ("invoke_workflow RunnableSequence", None),
    ]
    assert attrs(spans[0])[semconv.LLMTRACE_CACHE_HIT] is False
    hit = attrs(spans[2])
    assert hit[semconv.LLMTRACE_CACHE_HIT] is True
    assert hit[semconv.LLMTRACE_CACHE_SOURCE] == "InMemoryCache"
    assert hit[semconv.GEN_AI_USAGE_COST_AMOUNT] == 0
    assert spans[2].parent.trace_id == spans[3].context.trace_id


async def test_completion_llm_async_partially_cached(instrumented, span_exporter):
    cache = InMemoryCache()
    llm = FakeListLLM(responses=["one", "two", "three"], cache=cache)
    await llm.ainvoke("a")
    span_exporter.clear()
    await llm.abatch(["a", "b"])
    spans = span_exporter.get_finished_spans()
    assert sorted(attrs(s)[semconv.LLMTRACE_CACHE_HIT] for s in spans) == [False, True]


def test_generation_level_llm_result_usage():
    from llmtrace_langchain import _extract

    result = LLMResult(generations=[[Generation(text="x")]], llm_output={"token_usage": {"prompt_tokens": 1}})
    assert _extract.usage(result, _extract.generations(result)) == (1, None, None, None, None, None, None)
