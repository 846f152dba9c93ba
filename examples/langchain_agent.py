"""A LangChain agent traced by llmtrace, offline: a scripted model with usage, one tool.

Run:  uv run python examples/langchain_agent.py
The spans are written to ./langchain_agent_trace.jsonl (one JSON object per span).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from llmtrace_langchain import LLMTraceCallbackHandler
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

OUT = Path("langchain_agent_trace.jsonl")


class JsonlExporter(SpanExporter):
    def __init__(self, path: Path) -> None:
        self.file = path.open("w", encoding="utf-8")

    def export(self, spans: Any) -> SpanExportResult:
        for span in spans:
            self.file.write(json.dumps(json.loads(span.to_json())) + "\n")
        self.file.flush()
        return SpanExportResult.SUCCESS


class OfflineModel(BaseChatModel):
    """Calls the weather tool once, then answers; reports OpenAI-style usage."""

    @property
    def _llm_type(self) -> str:
        return "offline"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params.update(ls_provider="openai", ls_model_name="gpt-4o-mini")
        return params

    def bind_tools(self, tools: Any, **kwargs: Any) -> OfflineModel:
        return self

    def _generate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        usage = {"input_tokens": 42, "output_tokens": 7, "total_tokens": 49}
        if not any(m.type == "tool" for m in messages):
            message = AIMessage(
                content="",
                usage_metadata=usage,  # type: ignore[arg-type]
                tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "call_1"}],
            )
        else:
            message = AIMessage(content="It is sunny in Paris.", usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def main() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonlExporter(OUT)))
    handler = LLMTraceCallbackHandler(tracer_provider=provider)
    agent = create_agent(OfflineModel(), tools=[weather], name="weather_agent")
    result = agent.invoke({"messages": [("user", "Weather in Paris?")]}, config={"callbacks": [handler]})
    provider.shutdown()
    print(result["messages"][-1].content)
    names = [json.loads(line)["name"] for line in OUT.read_text().splitlines()]
    print(f"{len(names)} spans written to {OUT.resolve()}: {', '.join(names)}")


if __name__ == "__main__":
    main()
