"""Tiny fake models and tools for the LangChain tests (real LangChain classes, no mocks)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

USAGE = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
SLOW_S = 5.0


class ScriptedChatModel(BaseChatModel):
    """Answers from a script of AIMessages; in an agent the script loops per conversation.

    The reply is chosen by how many AI messages the conversation already holds, so one model
    serves many concurrent agent runs deterministically.
    """

    script: list[AIMessage]
    model: str = "gpt-4o-mini"
    provider: str = "openai"
    temperature: float | None = 0.2
    max_tokens: int | None = 100

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = self.provider
        params["ls_model_name"] = self.model
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        return params

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        turn = sum(1 for m in messages if isinstance(m, AIMessage))
        return self.script[min(turn, len(self.script) - 1)].model_copy(deep=True)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply = self._reply(messages)
        if reply.tool_calls:
            chunks = [
                {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i}
                for i, c in enumerate(reply.tool_calls)
            ]
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    tool_call_chunks=chunks,
                    usage_metadata=reply.usage_metadata,  # type: ignore[arg-type]
                    response_metadata={"finish_reason": "tool_calls", "model_name": self.model},
                )
            )
            return
        text = str(reply.content)
        for word in text.split(" "):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word + " "))
        final = AIMessageChunk(
            content="",
            usage_metadata=reply.usage_metadata,
            response_metadata={"finish_reason": "stop", "model_name": self.model},
        )
        yield ChatGenerationChunk(message=final)


class SlowChatModel(ScriptedChatModel):
    """A chat model whose async calls take ``SLOW_S`` seconds (to be cancelled while they wait)."""

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.sleep(SLOW_S)
        return self._generate(messages, stop, None, **kwargs)


def answer(text: str, usage: dict[str, Any] | None = None, **meta: Any) -> AIMessage:
    return AIMessage(
        content=text,
        usage_metadata=usage or dict(USAGE),  # type: ignore[arg-type]
        response_metadata={
            "finish_reason": "stop",
            "model_name": "gpt-4o-mini-2024-07-18",
            "id": "chatcmpl-1",
            **meta,
        },
    )


def call(*calls: tuple[str, dict[str, Any], str]) -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[{"name": n, "args": a, "id": i, "type": "tool_call"} for n, a, i in calls],
        usage_metadata=dict(USAGE),  # type: ignore[arg-type]
        response_metadata={"finish_reason": "tool_calls", "model_name": "gpt-4o-mini-2024-07-18"},
    )
