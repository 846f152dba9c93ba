"""Usage of a call answered with several choices (``n`` > 1): the request's usage, counted once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_openai import ChatOpenAI

from llmtrace import semconv
from llmtrace.testing import metric_points

from .conftest import attrs
from .wire_server import WireServer

# OPENAI_USAGE of the wire server at gpt-4o's prices: 18 uncached input tokens at $2.50/M, 32 cached
# at $1.25/M, 8 output tokens at $10/M
ONE_REQUEST_COST = 18 * 2.5e-6 + 32 * 1.25e-6 + 8 * 10e-6


@pytest.fixture(scope="module")
def server() -> Iterator[WireServer]:
    s = WireServer()
    yield s
    s.close()


def test_openai_n_choices_count_the_request_usage_once(server, handler, span_exporter, metric_reader):
    """langchain-openai copies the request's usage onto every choice's message."""
    llm = ChatOpenAI(
        model="gpt-4o",
        base_url=server.url + "/v1",
        api_key="test",
        max_retries=0,
        n=3,
        http_client=httpx.Client(),
    )
    result = llm.generate([[HumanMessage("hi")]], callbacks=[handler])
    assert [g.text for g in result.generations[0]] == ["hello from openai", "choice 1", "choice 2"]
    (span,) = span_exporter.get_finished_spans()
    a = attrs(span)
    assert a[semconv.GEN_AI_REQUEST_CHOICE_COUNT] == 3
    assert (a[semconv.GEN_AI_USAGE_INPUT_TOKENS], a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]) == (50, 8)
    assert a[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 32
    assert a[semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 3
    assert a[semconv.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(ONE_REQUEST_COST)
    (cost,) = metric_points(metric_reader, semconv.METRIC_USAGE_COST)
    assert cost.value == pytest.approx(ONE_REQUEST_COST)
    tokens = {
        p.attributes[semconv.GEN_AI_TOKEN_TYPE]: p.sum
        for p in metric_points(metric_reader, semconv.METRIC_CLIENT_TOKEN_USAGE)
    }
    assert tokens == {"input": 50, "output": 8}


class PerChoiceUsage(BaseChatModel):
    """A model reporting each choice's own usage (different per choice)."""

    @property
    def _llm_type(self) -> str:
        return "per-choice"

    def _generate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        return ChatResult(
            generations=[
                ChatGeneration(
                    message=AIMessage(
                        content=f"choice {i}",
                        usage_metadata={"input_tokens": 10, "output_tokens": out, "total_tokens": 10 + out},
                    )
                )
                for i, out in enumerate((3, 4))
            ]
        )


def test_distinct_usage_per_choice_is_summed(handler, span_exporter):
    PerChoiceUsage().invoke("hi", config={"callbacks": [handler]})
    (span,) = span_exporter.get_finished_spans()
    a = attrs(span)
    assert (a[semconv.GEN_AI_USAGE_INPUT_TOKENS], a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]) == (20, 7)
