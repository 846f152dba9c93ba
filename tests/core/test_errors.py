from __future__ import annotations

import asyncio
import concurrent.futures
import socket

import anthropic
import google.api_core.exceptions as gexc
import httpx
import openai
import pytest
import requests
from google.genai import errors as genai_errors

from llmtrace._errors import ERROR_TYPES, classify_error

URL = "http://127.0.0.1/v1/chat/completions"


def _request() -> httpx.Request:
    return httpx.Request("POST", URL)


def _response(status: int) -> httpx.Response:
    return httpx.Response(status, request=_request())


def _requests_response(status: int) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.url = URL
    return response


def test_error_types_are_the_seven_categories() -> None:
    expected = {
        "rate_limit",
        "authentication",
        "invalid_request",
        "server_error",
        "timeout",
        "connection",
        "cancelled",
    }
    assert expected == ERROR_TYPES


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
@pytest.mark.parametrize(
    ("class_name", "status", "expected"),
    [
        ("RateLimitError", 429, "rate_limit"),
        ("AuthenticationError", 401, "authentication"),
        ("PermissionDeniedError", 403, "authentication"),
        ("BadRequestError", 400, "invalid_request"),
        ("NotFoundError", 404, "invalid_request"),
        ("ConflictError", 409, "invalid_request"),
        ("UnprocessableEntityError", 422, "invalid_request"),
        ("InternalServerError", 500, "server_error"),
    ],
)
def test_stainless_sdk_status_errors(sdk, class_name: str, status: int, expected: str) -> None:
    exc = getattr(sdk, class_name)("x", response=_response(status), body=None)
    assert classify_error(exc) == expected


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
def test_stainless_sdk_timeout_wins_over_connection(sdk) -> None:
    assert issubclass(sdk.APITimeoutError, sdk.APIConnectionError)
    assert classify_error(sdk.APITimeoutError(request=_request())) == "timeout"
    assert classify_error(sdk.APIConnectionError(request=_request())) == "connection"


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, "rate_limit"),
        (401, "authentication"),
        (403, "authentication"),
        (400, "invalid_request"),
        (404, "invalid_request"),
        (409, "invalid_request"),
        (422, "invalid_request"),
        (500, "server_error"),
        (502, "server_error"),
        (503, "server_error"),
        (529, "server_error"),
    ],
)
def test_generic_status_error_uses_the_status(sdk, status: int, expected: str) -> None:
    exc = sdk.APIStatusError("x", response=_response(status), body=None)
    assert classify_error(exc) == expected


def test_generic_status_error_with_unmapped_status_is_qualified_name() -> None:
    exc = openai.APIStatusError("x", response=_response(402), body=None)
    assert classify_error(exc) == "openai.APIStatusError"


@pytest.mark.parametrize(
    ("name", "status", "expected"),
    [
        ("OverloadedError", 529, "server_error"),  # anthropic 1.0+
        ("ServiceUnavailableError", 503, "server_error"),  # anthropic 1.0+
        ("RequestTimeoutError", 408, "timeout"),  # anthropic 2.5+
    ],
)
def test_anthropic_specific_subclasses(name: str, status: int, expected: str) -> None:
    if not hasattr(anthropic, name):
        pytest.skip(f"anthropic {anthropic.__version__} has no {name}")
    assert classify_error(getattr(anthropic, name)("x", response=_response(status), body=None)) == expected


# errors sent inside a stream that started with HTTP 200: the SDKs raise their generic class, with the
# provider's error body (constructed here as the SDKs' stream readers construct them)
@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("overloaded_error", "server_error"),  # Anthropic's 529, a capacity error (as 529 and 503 map)
        ("api_error", "server_error"),
        ("rate_limit_error", "rate_limit"),
        ("invalid_request_error", "invalid_request"),
        ("authentication_error", "authentication"),
    ],
)
def test_anthropic_error_event_in_a_stream(error_type: str, expected: str) -> None:
    body = {"type": "error", "error": {"type": error_type, "message": "Overloaded"}}
    exc = anthropic.APIStatusError("Overloaded", response=_response(200), body=body)
    assert classify_error(exc) == expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ({"message": "The server had an error", "type": "server_error"}, "server_error"),
        ({"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}, "rate_limit"),
        ({"message": "too long", "type": "invalid_request_error"}, "invalid_request"),
    ],
)
def test_openai_error_chunk_in_a_stream(error: dict[str, str], expected: str) -> None:
    exc = openai.APIError(error["message"], _request(), body=error)
    assert classify_error(exc) == expected


@pytest.mark.parametrize(
    "body",
    [
        {"type": "error", "error": {"type": "mystery_error"}},
        {"type": "error", "error": {"type": "overloaded_error" + "x" * 100}},  # not a known type
        {"type": "error", "error": "overloaded_error"},  # not an object
        {"type": "error", "error": {"type": ["overloaded_error"]}},
        ["overloaded_error"],
        "overloaded_error",
        None,
    ],
)
def test_unknown_or_malformed_error_body_keeps_the_class_name(body: object) -> None:
    exc = anthropic.APIStatusError("x", response=_response(200), body=body)
    assert classify_error(exc) == "anthropic.APIStatusError"


def test_error_body_whose_reading_raises_keeps_the_class_name() -> None:
    class HostileBody(dict):  # type: ignore[type-arg]
        def get(self, *args: object) -> object:
            raise RuntimeError("no")

    class Hostile(Exception):
        body = HostileBody(error={"type": "overloaded_error"})

        @property
        def type(self) -> str:
            raise RuntimeError("no")

    class WithBody(Exception):
        def __init__(self, body: object) -> None:
            super().__init__("x")
            self.body = body

    assert classify_error(Hostile()) == f"{__name__}.{Hostile.__qualname__}"
    assert classify_error(WithBody({"error": {"type": "overloaded_error"}})) == "server_error"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused", request=_request()), "connection"),
        (httpx.ReadError("reset", request=_request()), "connection"),
        (httpx.RemoteProtocolError("disconnected", request=_request()), "connection"),
        (httpx.ConnectTimeout("slow", request=_request()), "timeout"),
        (httpx.ReadTimeout("slow", request=_request()), "timeout"),
        (httpx.WriteTimeout("slow", request=_request()), "timeout"),
        (httpx.PoolTimeout("slow", request=_request()), "timeout"),
        (httpx.HTTPStatusError("x", request=_request(), response=_response(429)), "rate_limit"),
        (httpx.HTTPStatusError("x", request=_request(), response=_response(401)), "authentication"),
        (httpx.HTTPStatusError("x", request=_request(), response=_response(422)), "invalid_request"),
        (httpx.HTTPStatusError("x", request=_request(), response=_response(503)), "server_error"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value,
)
def test_httpx(exc: BaseException, expected: str) -> None:
    assert classify_error(exc) == expected


def test_httpx_status_error_with_unmapped_status() -> None:
    exc = httpx.HTTPStatusError("x", request=_request(), response=_response(302))
    assert classify_error(exc) == "httpx.HTTPStatusError"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (requests.exceptions.ConnectionError("refused"), "connection"),
        (requests.exceptions.ProxyError("proxy"), "connection"),
        (requests.exceptions.SSLError("ssl"), "connection"),
        (requests.exceptions.Timeout("slow"), "timeout"),
        (requests.exceptions.ReadTimeout("slow"), "timeout"),
        # ConnectTimeout is both a ConnectionError and a Timeout: timeout wins.
        (requests.exceptions.ConnectTimeout("slow"), "timeout"),
        (requests.exceptions.HTTPError("x", response=_requests_response(429)), "rate_limit"),
        (requests.exceptions.HTTPError("x", response=_requests_response(403)), "authentication"),
        (requests.exceptions.HTTPError("x", response=_requests_response(404)), "invalid_request"),
        (requests.exceptions.HTTPError("x", response=_requests_response(500)), "server_error"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value,
)
def test_requests(exc: BaseException, expected: str) -> None:
    assert classify_error(exc) == expected


def test_requests_http_error_without_response() -> None:
    assert classify_error(requests.exceptions.HTTPError("x")) == "requests.exceptions.HTTPError"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (gexc.ResourceExhausted("quota"), "rate_limit"),
        (gexc.TooManyRequests("quota"), "rate_limit"),
        (gexc.Unauthenticated("who"), "authentication"),
        (gexc.PermissionDenied("no"), "authentication"),
        (gexc.Forbidden("no"), "authentication"),
        (gexc.InvalidArgument("bad"), "invalid_request"),
        (gexc.BadRequest("bad"), "invalid_request"),
        (gexc.NotFound("missing"), "invalid_request"),
        (gexc.FailedPrecondition("bad"), "invalid_request"),
        (gexc.AlreadyExists("dup"), "invalid_request"),
        (gexc.ServiceUnavailable("down"), "server_error"),
        (gexc.InternalServerError("boom"), "server_error"),
        (gexc.BadGateway("boom"), "server_error"),
        (gexc.GatewayTimeout("504"), "server_error"),
        (gexc.DeadlineExceeded("slow"), "timeout"),
        (gexc.Cancelled("cancelled"), "cancelled"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value,
)
def test_google_api_core(exc: BaseException, expected: str) -> None:
    assert classify_error(exc) == expected


def test_google_api_core_client_error_uses_code() -> None:
    assert classify_error(gexc.MethodNotAllowed("x")) == "google.api_core.exceptions.MethodNotAllowed"
    assert classify_error(gexc.ClientError("x")) == "google.api_core.exceptions.ClientError"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (genai_errors.ClientError(429, {"error": {"status": "RESOURCE_EXHAUSTED"}}), "rate_limit"),
        (genai_errors.ClientError(401, {"error": {"status": "UNAUTHENTICATED"}}), "authentication"),
        (genai_errors.ClientError(403, {"error": {"status": "PERMISSION_DENIED"}}), "authentication"),
        (genai_errors.ClientError(400, {"error": {"status": "INVALID_ARGUMENT"}}), "invalid_request"),
        (genai_errors.ClientError(404, {"error": {"status": "NOT_FOUND"}}), "invalid_request"),
        (genai_errors.ServerError(500, {"error": {"status": "INTERNAL"}}), "server_error"),
        (genai_errors.ServerError(503, {"error": {"status": "UNAVAILABLE"}}), "server_error"),
        (genai_errors.APIError(429, {}), "rate_limit"),
    ],
    ids=lambda value: f"{type(value).__name__}-{value.code}" if isinstance(value, BaseException) else value,
)
def test_google_genai(exc: BaseException, expected: str) -> None:
    assert classify_error(exc) == expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError("slow"), "timeout"),
        (asyncio.TimeoutError(), "timeout"),
        (concurrent.futures.TimeoutError(), "timeout"),
        (ConnectionError("x"), "connection"),
        (ConnectionRefusedError("x"), "connection"),
        (ConnectionResetError("x"), "connection"),
        (BrokenPipeError("x"), "connection"),
        (socket.gaierror("dns"), "connection"),
        (asyncio.CancelledError(), "cancelled"),
        (concurrent.futures.CancelledError(), "cancelled"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (SystemExit(1), "SystemExit"),
        (ValueError("x"), "ValueError"),
        (PermissionError("file"), "PermissionError"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value,
)
def test_builtins(exc: BaseException, expected: str) -> None:
    assert classify_error(exc) == expected


def test_llama_index_workflow_timeout() -> None:
    from workflows.errors import WorkflowTimeoutError  # what Workflow(timeout=...).run() raises

    assert classify_error(WorkflowTimeoutError("Operation timed out after 0.2 seconds")) == "timeout"


class UnknownProblem(Exception):
    pass


class Outer:
    class Inner(RuntimeError):
        pass


def test_unknown_exception_is_qualified_name() -> None:
    assert classify_error(UnknownProblem()) == f"{__name__}.UnknownProblem"
    assert classify_error(Outer.Inner()) == f"{__name__}.Outer.Inner"


def test_user_subclass_of_sdk_error_keeps_category() -> None:
    class MyRateLimit(openai.RateLimitError):
        pass

    assert classify_error(MyRateLimit("x", response=_response(429), body=None)) == "rate_limit"


def test_status_attribute_on_unknown_exception() -> None:
    class WithStatus(Exception):
        def __init__(self, status_code: object) -> None:
            super().__init__("x")
            self.status_code = status_code

    assert classify_error(WithStatus(429)) == "rate_limit"
    assert classify_error(WithStatus(503)) == "server_error"
    # Not a status: the class is cached, the status is read per instance.
    assert classify_error(WithStatus(True)) == f"{__name__}.{WithStatus.__qualname__}"
    assert classify_error(WithStatus("429")) == f"{__name__}.{WithStatus.__qualname__}"
    assert classify_error(WithStatus(1)) == f"{__name__}.{WithStatus.__qualname__}"
    assert classify_error(WithStatus(401)) == "authentication"


def test_exception_whose_attribute_access_raises() -> None:
    class Hostile(Exception):
        def __getattribute__(self, name: str) -> object:
            if name in ("status_code", "code", "status", "response"):
                raise RuntimeError("no")
            return super().__getattribute__(name)

        def __repr__(self) -> str:
            raise RuntimeError("no repr")

        def __str__(self) -> str:
            raise RuntimeError("no str")

    result = classify_error(Hostile())
    assert isinstance(result, str)
    assert result == f"{__name__}.{Hostile.__qualname__}"


def test_response_whose_attribute_access_raises() -> None:
    class BadResponse:
        @property
        def status_code(self) -> int:
            raise ValueError("nope")

    class WithResponse(Exception):
        response = BadResponse()

    assert classify_error(WithResponse()) == f"{__name__}.{WithResponse.__qualname__}"


def test_classes_and_non_exceptions_do_not_raise() -> None:
    assert classify_error(openai.RateLimitError) == "rate_limit"
    assert classify_error(ValueError) == "ValueError"
    assert isinstance(classify_error(None), str)  # type: ignore[arg-type]
    assert isinstance(classify_error("not an exception"), str)  # type: ignore[arg-type]
