"""Request parameters of a LlamaIndex model call: as the LLM builds them if it says how, else call
kwargs, then additional_kwargs, then fields."""

from __future__ import annotations

from llama_index.core.llms import MockLLM
from llama_index.llms.openai import OpenAI, OpenAIResponses
from llmtrace_llama_index import _extract


def test_request_params_priority_call_kwargs_then_additional_kwargs_then_fields() -> None:
    """An LLM that does not say how it builds its request (its fields as a mapping)."""
    extra = {"top_p": 0.9, "seed": 7, "stop": ["END"], "temperature": 0.3}
    llm = {"temperature": 0.2, "max_tokens": 50, "additional_kwargs": extra}
    params = _extract.request_params(llm, {"temperature": 0.5, "max_completion_tokens": 9, "formatted": True})
    assert params.temperature == 0.5  # the call's own value wins
    assert params.max_tokens == 9  # the call's value wins over the field, whatever its name
    assert params.top_p == 0.9
    assert params.seed == 7
    assert params.stop_sequences == ["END"]
    assert params.top_k is None and params.frequency_penalty is None and params.presence_penalty is None

    fields_only = _extract.request_params(llm, None)
    assert (fields_only.temperature, fields_only.max_tokens) == (0.3, 50)  # additional_kwargs over fields


def test_request_params_of_openai_are_the_ones_it_sends() -> None:
    """llama-index-llms-openai's ``OpenAI`` builds its request itself: ``additional_kwargs`` win over
    the call's kwargs, and so does its ``max_tokens`` field; its ``reasoning_effort`` goes to reasoning
    models only."""
    llm = OpenAI(
        model="gpt-4o-mini",
        api_key="test",
        temperature=0.2,
        max_tokens=50,
        reasoning_effort="low",
        additional_kwargs={"top_p": 0.9, "seed": 7, "stop": ["END"], "temperature": 0.3},
    )
    params = _extract.request_params(llm, {"temperature": 0.5, "max_tokens": 9, "formatted": True})
    assert (params.temperature, params.max_tokens, params.top_p, params.seed) == (0.3, 50, 0.9, 7)
    assert params.stop_sequences == ["END"]
    assert params.reasoning_level is None  # not sent to gpt-4o-mini
    assert _extract.request_params(llm, {"max_tokens": 9}).max_tokens == 50
    assert _extract.request_params(OpenAI(api_key="t"), {"temperature": 0.5}).temperature == 0.5

    reasoning = OpenAI(model="o3-mini", api_key="test", reasoning_effort="high", max_tokens=64)
    params = _extract.request_params(reasoning, None)
    assert (params.reasoning_level, params.max_tokens) == ("high", 64)  # sent as max_completion_tokens


def test_request_params_of_openai_responses_are_the_ones_it_sends() -> None:
    llm = OpenAIResponses(
        model="o4-mini", api_key="test", max_output_tokens=100, reasoning_options={"effort": "high"}
    )
    params = _extract.request_params(llm, None)
    assert (params.max_tokens, params.reasoning_level) == (100, "high")
    sent = llm._get_model_kwargs()  # recent releases send no sampling parameters with reasoning options
    assert (params.temperature, params.top_p) == (sent.get("temperature"), sent.get("top_p"))
    plain = OpenAIResponses(model="gpt-4.1-mini", api_key="test", temperature=0.4, instructions="Be brief.")
    params = _extract.request_params(plain, {"temperature": 0.7})
    assert (params.temperature, params.top_p, params.instructions) == (0.7, 1.0, "Be brief.")
    json_format = {"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}
    assert _extract.request_params(plain, json_format).output_type == "json"


def test_request_params_of_odd_inputs_are_empty_not_errors() -> None:
    class Exploding(dict):
        def get(self, *args, **kwargs):
            raise RuntimeError("no")

    params = _extract.request_params(MockLLM(max_tokens=5), Exploding(temperature=1))
    assert params.max_tokens == 5 and params.temperature is None
    assert _extract.request_params(None, None).max_tokens is None
    assert _extract.request_params({"temperature": 0.7, "stop": "x"}, None).stop_sequences == ["x"]


def test_provider_names_cached_per_class_and_bounded() -> None:
    assert _extract.provider_name(MockLLM()) == "mock"
    assert _extract.known_provider(MockLLM()) is None
    assert _extract.provider_name(OpenAI(model="gpt-4o-mini", api_key="test")) == "openai"
    assert _extract.known_provider(OpenAI(model="gpt-4o-mini", api_key="test")) == "openai"
    for i in range(_extract._MAX_CACHED_CLASSES + 5):
        assert _extract.provider_name(type(f"Acme{i}LLM", (), {})()) == f"acme{i}"
    assert 0 < len(_extract._providers) <= _extract._MAX_CACHED_CLASSES


def test_output_type_from_a_requested_format() -> None:
    json_mode = OpenAI(
        model="gpt-4o-mini", api_key="test", additional_kwargs={"response_format": {"type": "json_object"}}
    )
    assert _extract.request_params(json_mode, None).output_type == "json"
    schema = {"response_format": {"type": "json_schema", "json_schema": {"name": "p"}}}
    assert _extract.request_params(MockLLM(), schema).output_type == "json"  # the call's kwargs
    assert _extract.request_params({"json_mode": True}, None).output_type == "json"  # Ollama's switch
    assert _extract.request_params({"json_mode": False}, None).output_type is None
    assert _extract.request_params(MockLLM(), None).output_type is None  # no format requested
