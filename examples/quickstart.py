"""The smallest llmtrace example: an agent with a tool and a model call, traced by hand.

Runs offline. Spans are printed to the console and written to .llmtrace/quickstart.jsonl.

    python examples/quickstart.py
"""

from __future__ import annotations

import os

import llmtrace


def get_weather(city: str) -> str:
    return f"Rainy in {city}"


def main() -> None:
    exporters = ["jsonl", "otlp"] if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else ["jsonl"]
    pipeline = llmtrace.configure(
        service_name="llmtrace-quickstart", exporters=exporters, jsonl_path=".llmtrace/quickstart.jsonl"
    )
    handler = llmtrace.TelemetryHandler()
    with llmtrace.agent_span("weather-agent") as agent:
        # What an integration does for each model call: start, fill in, stop.
        chat = handler.start_chat("gpt-4o-mini", provider="openai", parent=agent)
        chat.response_model = "gpt-4o-mini-2024-07-18"
        chat.finish_reasons = ["tool_call"]
        chat.set_usage(input_tokens=412, output_tokens=23, cache_read_tokens=256)
        chat.stop()
        llmtrace.record_agent_step("action", tool_name="get_weather", tool_call_id="call_1")
        with llmtrace.tool_span("get_weather", call_id="call_1", arguments={"city": "Paris"}) as tool:
            tool.result = get_weather("Paris")
        llmtrace.record_agent_step("observation", tool_name="get_weather", tool_call_id="call_1")
        llmtrace.record_agent_step("final")
        trace_id = format(agent.span.get_span_context().trace_id, "032x")
    pipeline.shutdown()

    cost = llmtrace.estimate_cost("gpt-4o-mini", input_tokens=412, output_tokens=23, cache_read_tokens=256)
    print(f"trace {trace_id}: 3 spans written to .llmtrace/quickstart.jsonl")
    print(f"model call cost: ${cost:.6f} (gpt-4o-mini, 256 of 412 input tokens from the provider's cache)")
    print("To see it in Jaeger: start Jaeger (see README), set OTEL_EXPORTER_OTLP_ENDPOINT and run again.")


if __name__ == "__main__":
    main()
