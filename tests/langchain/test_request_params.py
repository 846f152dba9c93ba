"""Request parameters of a LangChain model call: every one the conventions name, from invocation params
and ``ls_*`` metadata, and nothing when the call carries none."""

from __future__ import annotations

from uuid import uuid4

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from llmtrace import semconv

REQUEST_KEYS = {
    semconv.GEN_AI_REQUEST_TEMPERATURE,
    semconv.GEN_AI_REQUEST_MAX_TOKENS,
    semconv.GEN_AI_REQUEST_TOP_P,
    semconv.GEN_AI_REQUEST_TOP_K,
    semconv.GEN_AI_REQUEST_FREQUENCY_PENALTY,
    semconv.GEN_AI_REQUEST_PRESENCE_PENALTY,
    semconv.GEN_AI_REQUEST_SEED,
    semconv.GEN_AI_REQUEST_CHOICE_COUNT,
    semconv.GEN_AI_REQUEST_STOP_SEQUENCES,
    semconv.GEN_AI_REQUEST_REASONING_LEVEL,
}


def _chat_span(handler, span_exporter, params, metadata=None):
    run_id = uuid4()
    handler.on_chat_model_start(
        {"name": "ChatOpenAI"},
        [[HumanMessage("hi")]],
        run_id=run_id,
        metadata={"ls_provider": "openai", "ls_model_name": "gpt-4o-mini", **(metadata or {})},
        invocation_params=params,
    )
    handler.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage("ok"))]]), run_id=run_id)
    (span,) = span_exporter.get_finished_spans()
    return span.attributes


def test_every_request_parameter_reaches_the_span(handler, span_exporter):
    attrs = _chat_span(
        handler,
        span_exporter,
        {
            "model": "gpt-4o-mini",
            "temperature": 0.3,
            "max_output_tokens": 64,
            "top_p": 0.9,
            "top_k": 40,
            "frequency_penalty": 0.1,
            "presence_penalty": 0.2,
            "seed": 7,
            "n": 2,
            "stop_sequences": ["END", "STOP"],
            "reasoning": {"effort": "high"},
            "stream": False,
            "_type": "openai-chat",
        },
    )
    assert {k: attrs[k] for k in REQUEST_KEYS} == {
        semconv.GEN_AI_REQUEST_TEMPERATURE: 0.3,
        semconv.GEN_AI_REQUEST_MAX_TOKENS: 64,
        semconv.GEN_AI_REQUEST_TOP_P: 0.9,
        semconv.GEN_AI_REQUEST_TOP_K: 40,
        semconv.GEN_AI_REQUEST_FREQUENCY_PENALTY: 0.1,
        semconv.GEN_AI_REQUEST_PRESENCE_PENALTY: 0.2,
        semconv.GEN_AI_REQUEST_SEED: 7,
        semconv.GEN_AI_REQUEST_CHOICE_COUNT: 2,
        semconv.GEN_AI_REQUEST_STOP_SEQUENCES: ("END", "STOP"),
        semconv.GEN_AI_REQUEST_REASONING_LEVEL: "high",
    }


def test_ls_metadata_wins_and_reasoning_effort_has_a_flat_spelling(handler, span_exporter):
    attrs = _chat_span(
        handler,
        span_exporter,
        {"temperature": 0.3, "max_tokens": 64, "stop": ["x"], "reasoning_effort": "low"},
        {"ls_temperature": 0.0, "ls_max_tokens": 10, "ls_stop": "halt"},
    )
    assert attrs[semconv.GEN_AI_REQUEST_TEMPERATURE] == 0.0
    assert attrs[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 10
    assert attrs[semconv.GEN_AI_REQUEST_STOP_SEQUENCES] == ("halt",)
    assert attrs[semconv.GEN_AI_REQUEST_REASONING_LEVEL] == "low"


def test_a_call_without_parameters_sets_none_and_bad_values_are_dropped(handler, span_exporter):
    attrs = _chat_span(handler, span_exporter, {"model": "gpt-4o-mini", "stop": None, "_type": "fake"})
    assert not REQUEST_KEYS & set(attrs)
    span_exporter.clear()
    attrs = _chat_span(handler, span_exporter, {"temperature": "hot", "seed": True, "n": 1, "top_k": 2.5})
    assert not REQUEST_KEYS & set(attrs)  # wrong types, and n=1 (the default) is not worth an attribute


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"response_format": {"type": "json_object"}}, "json"),  # OpenAI JSON mode
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "p"}}}, "json"),
        ({"response_format": {"type": "text"}}, "text"),
        ({"format": "json"}, "json"),  # Ollama
        ({"format": {"type": "object", "properties": {}}}, "json"),  # Ollama with a schema
        ({"response_mime_type": "application/json"}, "json"),  # Gemini
        ({"response_format": "not a format"}, None),
        ({"format": "markdown"}, None),
        ({"temperature": 0.1}, None),
    ],
)
def test_output_type_from_the_requested_format(handler, span_exporter, params, expected):
    attrs = _chat_span(handler, span_exporter, {"model": "gpt-4o-mini", **params})
    assert attrs.get(semconv.GEN_AI_OUTPUT_TYPE) == expected
