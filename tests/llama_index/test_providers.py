"""Provider-specific response shapes and provider names of LlamaIndex integrations.

llama-index-llms-google-genai is not a dependency: ``GoogleGenAI`` below builds its responses as
that integration's ``ResponseConverter`` does, from real ``google.genai`` SDK objects: the raw
response is the top candidate's ``model_dump()`` (so ``finish_reason`` is at the top level) plus
``usage_metadata``'s dump, and ``additional_kwargs`` get ``prompt_tokens``/``completion_tokens``
(``candidates_token_count``, which leaves the thinking tokens out).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from google.genai import types
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llmtrace_llama_index import _extract

from llmtrace import semconv
from llmtrace.testing import metric_points
from tests.llama_index.conftest import one

PROMPT, CACHED, CANDIDATES, THOUGHTS = 1000, 600, 50, 800
# gemini-2.5-flash: $0.30 / M input, $0.03 / M cached input, $2.50 / M output (thinking included)
COST = ((PROMPT - CACHED) * 0.30 + CACHED * 0.03 + (CANDIDATES + THOUGHTS) * 2.50) / 1e6


RESPONSE_ID, MODEL_VERSION = "resp-gem-1", "gemini-2.5-flash-preview-05-20"


def sdk_response(
    text: str, candidates: int, thoughts: int | None, finish: bool
) -> types.GenerateContentResponse:
    """What google-genai returns, with the response's id and model version (in the SDK since 1.9,
    llmtrace's floor, at least)."""
    return types.GenerateContentResponse(
        response_id=RESPONSE_ID,
        model_version=MODEL_VERSION,
        candidates=[
            types.Candidate(
                content=types.Content(role="model", parts=[types.Part(text=text)]),
                finish_reason=types.FinishReason.STOP if finish else None,
                index=0,
            )
        ],
        usage_metadata=types.GenerateContentResponseUsageMetadata(
            prompt_token_count=PROMPT,
            cached_content_token_count=CACHED,
            candidates_token_count=candidates,
            thoughts_token_count=thoughts,
            total_token_count=PROMPT + candidates + (thoughts or 0),
        ),
    )


def gemini_response(text: str, candidates: int, thoughts: int | None, finish: bool) -> ChatResponse:
    response = sdk_response(text, candidates, thoughts, finish)
    raw: dict[str, Any] = {}
    raw.update(response.candidates[0].model_dump())  # type: ignore[index]
    raw["usage_metadata"] = response.usage_metadata.model_dump()  # type: ignore[union-attr]
    usage = response.usage_metadata
    extra = {
        "prompt_tokens": usage.prompt_token_count,  # type: ignore[union-attr]
        "completion_tokens": usage.candidates_token_count,  # type: ignore[union-attr]
        "total_tokens": usage.total_token_count,  # type: ignore[union-attr]
    }
    return ChatResponse(
        message=ChatMessage(role="assistant", content=text, additional_kwargs=extra),
        raw=raw,
        additional_kwargs=extra,
        delta=text,
    )


class GoogleGenAI(CustomLLM):
    """Named as llama-index-llms-google-genai's class (its provider name comes from it)."""

    model: str = "gemini-2.5-flash"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model, is_chat_model=True)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return gemini_response("hi", CANDIDATES, THOUGHTS, finish=True)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            yield gemini_response("h", 1, THOUGHTS, finish=False)  # usage so far, as Gemini streams it
            yield gemini_response("i", CANDIDATES, THOUGHTS, finish=True)

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise NotImplementedError

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        raise NotImplementedError


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream_chat"])
def test_gemini_thinking_and_cached_tokens(instrumentor, span_exporter, metric_reader, streamed):
    llm = GoogleGenAI()
    messages = [ChatMessage(role="user", content="think hard")]
    if streamed:
        assert [r.delta for r in llm.stream_chat(messages)] == ["h", "i"]
    else:
        assert llm.chat(messages).message.content == "hi"
    span = one(span_exporter.get_finished_spans(), "chat gemini-2.5-flash")
    attrs = span.attributes
    assert attrs[semconv.GEN_AI_PROVIDER_NAME] == semconv.PROVIDER_GCP_GEN_AI
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT  # cached tokens are part of the prompt
    assert attrs[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == CACHED
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == CANDIDATES + THOUGHTS  # thinking is output
    assert attrs[semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == THOUGHTS
    assert attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attrs[semconv.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(COST)
    (cost,) = metric_points(metric_reader, semconv.METRIC_USAGE_COST)
    assert cost.value == pytest.approx(COST)
    # llama-index-llms-google-genai's raw response keeps neither (docs/limitations.md)
    assert semconv.GEN_AI_RESPONSE_ID not in attrs
    assert semconv.GEN_AI_RESPONSE_MODEL not in attrs


class GeminiRaw(GoogleGenAI):
    """A Gemini LLM whose responses' raw is google-genai's response: the SDK object itself
    (``dump=False``) or its ``model_dump()``."""

    dump: bool = False

    def _response(self, text: str, candidates: int, finish: bool) -> ChatResponse:
        response = sdk_response(text, candidates, THOUGHTS, finish)
        raw = response.model_dump() if self.dump else response
        return ChatResponse(message=ChatMessage(role="assistant", content=text), raw=raw, delta=text)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._response("hi", CANDIDATES, finish=True)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            yield self._response("h", 1, finish=False)
            yield self._response("i", CANDIDATES, finish=True)

        return gen()


@pytest.mark.parametrize("dump", [False, True], ids=["sdk_object", "dump"])
@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream_chat"])
def test_gemini_response_id_and_model_version(instrumentor, span_exporter, dump, streamed):
    llm = GeminiRaw(dump=dump)
    messages = [ChatMessage(role="user", content="hi")]
    if streamed:
        assert [r.delta for r in llm.stream_chat(messages)] == ["h", "i"]
    else:
        assert llm.chat(messages).message.content == "hi"
    attrs = one(span_exporter.get_finished_spans(), "chat gemini-2.5-flash").attributes
    assert attrs[semconv.GEN_AI_RESPONSE_ID] == RESPONSE_ID
    assert attrs[semconv.GEN_AI_RESPONSE_MODEL] == MODEL_VERSION
    assert attrs[semconv.GEN_AI_REQUEST_MODEL] == "gemini-2.5-flash"
    assert attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)  # the candidates' (a full response)
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == CANDIDATES + THOUGHTS
    if streamed:
        assert attrs[semconv.LLMTRACE_STREAM_CHUNKS] == 2


def test_response_id_and_model_of_other_providers_win_over_geminis_names() -> None:
    """``id``/``model`` (OpenAI, Anthropic...) are read first; empty values are no id or model."""
    both = {"id": "chatcmpl-1", "model": "gpt-4o", "response_id": "x", "model_version": "y"}
    info = _extract.response_info(ChatResponse(message=ChatMessage(role="assistant"), raw=both))
    assert (info.response_id, info.response_model) == ("chatcmpl-1", "gpt-4o")
    empty = {"response_id": "", "model_version": ""}
    info = _extract.response_info(ChatResponse(message=ChatMessage(role="assistant"), raw=empty))
    assert (info.response_id, info.response_model) == (None, None)


def test_gemini_usage_without_thinking_and_with_tool_use_prompts() -> None:
    raw = {
        "finish_reason": types.FinishReason.MAX_TOKENS,
        "usage_metadata": types.GenerateContentResponseUsageMetadata(
            prompt_token_count=10, candidates_token_count=4, tool_use_prompt_token_count=6
        ).model_dump(),
    }
    response = ChatResponse(message=ChatMessage(role="assistant", content="x"), raw=raw)
    usage = _extract.usage_from_response(response)
    assert usage == _extract.UsageCounts(input_tokens=16, output_tokens=4)  # tool-use prompts are input
    assert _extract.response_info(response).finish_reasons == ["length"]


@pytest.mark.parametrize(
    ("class_name", "provider"),
    [
        ("Vllm", "vllm"),  # llama-index-llms-vllm
        ("VllmServer", "vllm"),
        ("LiteLLM", "litellm"),
        ("OpenAILike", semconv.PROVIDER_OPENAI),  # an OpenAI-compatible server speaks OpenAI's API
        ("OpenRouter", "openrouter"),
        ("HuggingFaceInferenceAPI", "huggingface"),
        ("SageMakerLLM", "sagemaker"),
        ("MaxAILLM", "maxai"),  # not xAI: a provider matches whole words of the name only
        ("DemoOpenAILLM", semconv.PROVIDER_OPENAI),  # an acronym before the kind suffix is a word
        ("MyAnthropicLLM", semconv.PROVIDER_ANTHROPIC),
        ("XAI", semconv.PROVIDER_XAI),
        ("AzureOpenAIEmbedding", semconv.PROVIDER_AZURE_OPENAI),
        ("AWSBedrockRerank", semconv.PROVIDER_AWS_BEDROCK),
        ("GoogleGenAIEmbedding", semconv.PROVIDER_GCP_GEN_AI),
        ("MistralAI", semconv.PROVIDER_MISTRAL),
        ("WatsonxLLM", semconv.PROVIDER_IBM_WATSONX),
        ("MockFunctionCallingLLM", "mock"),
        ("TogetherLLM", "together"),
    ],
)
def test_provider_name_from_class_name(class_name: str, provider: str) -> None:
    assert _extract.provider_name(type(class_name, (), {})()) == provider
