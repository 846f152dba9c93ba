"""Classify exceptions into a small set of ``error.type`` values.

Provider SDKs (openai, anthropic, google) and HTTP clients (httpx, requests, ...) each have
their own exception hierarchy. :func:`classify_error` maps them onto a handful of categories
without importing any of those packages: it looks at the class names along the exception's
MRO, then at an HTTP status code carried by the exception, then at the error type the provider
put in its error body (an error sent inside a stream that started with HTTP 200). Anything it
cannot place is reported by its fully qualified class name, as the OpenTelemetry ``error.type``
convention asks.
"""

from __future__ import annotations

import logging
from typing import Final

logger = logging.getLogger(__name__)

RATE_LIMIT: Final = "rate_limit"
AUTHENTICATION: Final = "authentication"
INVALID_REQUEST: Final = "invalid_request"
SERVER_ERROR: Final = "server_error"
TIMEOUT: Final = "timeout"
CONNECTION: Final = "connection"
CANCELLED: Final = "cancelled"

ERROR_TYPES: Final[frozenset[str]] = frozenset(
    {RATE_LIMIT, AUTHENTICATION, INVALID_REQUEST, SERVER_ERROR, TIMEOUT, CONNECTION, CANCELLED}
)

_FALLBACK: Final = "_OTHER"
"""Returned only if even the class name of the exception cannot be read."""

# Class name -> category. The MRO is walked from the most specific class, so the first
# listed ancestor wins: openai.APITimeoutError (a subclass of APIConnectionError) and
# requests.ConnectTimeout (a subclass of requests' ConnectionError) are timeouts.
_CATEGORY_BY_CLASS_NAME: Final[dict[str, str]] = {
    # openai / anthropic (and other SDKs generated the same way)
    "RateLimitError": RATE_LIMIT,
    "AuthenticationError": AUTHENTICATION,
    "PermissionDeniedError": AUTHENTICATION,
    "BadRequestError": INVALID_REQUEST,
    "NotFoundError": INVALID_REQUEST,
    "ConflictError": INVALID_REQUEST,
    "UnprocessableEntityError": INVALID_REQUEST,
    "InternalServerError": SERVER_ERROR,
    "APITimeoutError": TIMEOUT,
    "RequestTimeoutError": TIMEOUT,
    "APIConnectionError": CONNECTION,
    # google.api_core.exceptions, google.genai.errors, google.auth.exceptions
    "TooManyRequests": RATE_LIMIT,
    "ResourceExhausted": RATE_LIMIT,
    "Unauthorized": AUTHENTICATION,
    "Unauthenticated": AUTHENTICATION,
    "Forbidden": AUTHENTICATION,
    "PermissionDenied": AUTHENTICATION,
    "RefreshError": AUTHENTICATION,
    "DefaultCredentialsError": AUTHENTICATION,
    "BadRequest": INVALID_REQUEST,
    "InvalidArgument": INVALID_REQUEST,
    "FailedPrecondition": INVALID_REQUEST,
    "OutOfRange": INVALID_REQUEST,
    "NotFound": INVALID_REQUEST,
    "Conflict": INVALID_REQUEST,
    "ServerError": SERVER_ERROR,
    "DeadlineExceeded": TIMEOUT,
    "Cancelled": CANCELLED,
    # httpx / httpcore
    "TimeoutException": TIMEOUT,
    "ConnectTimeout": TIMEOUT,
    "ReadTimeout": TIMEOUT,
    "WriteTimeout": TIMEOUT,
    "PoolTimeout": TIMEOUT,
    "ConnectError": CONNECTION,
    "NetworkError": CONNECTION,
    "ProxyError": CONNECTION,
    "RemoteProtocolError": CONNECTION,
    # requests / urllib3 / aiohttp
    "Timeout": TIMEOUT,
    "ConnectTimeoutError": TIMEOUT,
    "ReadTimeoutError": TIMEOUT,
    "ServerTimeoutError": TIMEOUT,
    "NewConnectionError": CONNECTION,
    "ClientConnectionError": CONNECTION,
    # builtins and the standard library (asyncio, concurrent.futures, socket)
    "TimeoutError": TIMEOUT,
    "ConnectionError": CONNECTION,
    "gaierror": CONNECTION,
    "CancelledError": CANCELLED,
    # frameworks: a LlamaIndex workflow (or agent) run cut off by its own timeout
    "WorkflowTimeoutError": TIMEOUT,
}

# Attributes that may hold an HTTP status: openai/anthropic ``status_code``, google ``code``,
# aiohttp ``status``; httpx.HTTPStatusError and requests.HTTPError carry it on ``response``.
_STATUS_ATTRIBUTES: Final = ("status_code", "code", "status")
_INVALID_REQUEST_STATUSES: Final = frozenset({400, 404, 409, 413, 422})

# The error types providers name in their error bodies -> category, as their HTTP statuses map
# (``overloaded_error`` is Anthropic's 529, a server-side capacity error like a 503). Read when an
# error arrives inside a stream that started with HTTP 200: the SDKs raise their generic error class
# then (openai.APIError with ``type``/``code`` from the body; anthropic.APIStatusError with status
# 200 and ``body={"type": "error", "error": {"type": ...}}``).
_CATEGORY_BY_PROVIDER_TYPE: Final[dict[str, str]] = {
    # Anthropic (https://docs.anthropic.com/en/api/errors)
    "invalid_request_error": INVALID_REQUEST,
    "not_found_error": INVALID_REQUEST,
    "request_too_large": INVALID_REQUEST,
    "authentication_error": AUTHENTICATION,
    "permission_error": AUTHENTICATION,
    "rate_limit_error": RATE_LIMIT,
    "api_error": SERVER_ERROR,
    "timeout_error": SERVER_ERROR,  # the API's 504: it timed out, not the client
    "overloaded_error": SERVER_ERROR,
    # OpenAI (``type``, else ``code``)
    "server_error": SERVER_ERROR,
    "rate_limit_exceeded": RATE_LIMIT,
    "insufficient_quota": RATE_LIMIT,  # sent with 429
    "invalid_api_key": AUTHENTICATION,
    "context_length_exceeded": INVALID_REQUEST,
}
_MAX_PROVIDER_TYPE_LENGTH: Final = 64


def classify_error(exc: BaseException) -> str:
    """The ``error.type`` value for ``exc``: one of :data:`ERROR_TYPES` or the class's qualified name.

    Never raises, whatever ``exc`` is.
    """
    try:
        is_class = isinstance(exc, type)
        cls: type = exc if is_class else type(exc)  # type: ignore[assignment]
        category, qualified_name = _classify_class(cls)
        if category is None and not is_class:
            category = _category_for_status(_http_status(exc)) or _category_for_body(exc)
        return category or qualified_name
    except Exception:
        logger.debug("could not classify exception", exc_info=True)
        return _FALLBACK


_class_cache: dict[type, tuple[str | None, str]] = {}
_CLASS_CACHE_SIZE: Final = 1024


def _classify_class(cls: type) -> tuple[str | None, str]:
    """The category given by the class names along ``cls``'s MRO (if any), and its qualified name.

    Depends on the class only, so it is cached per class.
    """
    try:
        return _class_cache[cls]
    except KeyError:
        pass
    category: str | None = None
    for klass in cls.__mro__:
        category = _CATEGORY_BY_CLASS_NAME.get(getattr(klass, "__name__", ""))
        if category is not None:
            break
    result = (category, _qualified_name(cls))
    if len(_class_cache) >= _CLASS_CACHE_SIZE:  # classes created on the fly must not grow it forever
        _class_cache.clear()
    _class_cache[cls] = result
    return result


def _qualified_name(cls: type) -> str:
    try:
        name = getattr(cls, "__qualname__", None)
        if not isinstance(name, str):
            name = cls.__name__
        module = getattr(cls, "__module__", None)
        if not isinstance(module, str) or module == "builtins":
            return name
        return f"{module}.{name}"
    except Exception:
        return _FALLBACK


def _http_status(exc: BaseException) -> int | None:
    """An HTTP status code carried by ``exc`` or by its ``response``, if any."""
    for holder in (exc, _safe_getattr(exc, "response")):
        if holder is None:
            continue
        for attribute in _STATUS_ATTRIBUTES:
            value = _safe_getattr(holder, attribute)
            # bool is an int, but never a status; grpc's ``code()`` is a method and is skipped.
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return int(value)
    return None


def _category_for_status(status: int | None) -> str | None:
    if status is None:
        return None
    if status == 429:
        return RATE_LIMIT
    if status in (401, 403):
        return AUTHENTICATION
    if status == 408:
        return TIMEOUT
    if status in _INVALID_REQUEST_STATUSES:
        return INVALID_REQUEST
    if status >= 500:
        return SERVER_ERROR
    return None


def _category_for_body(exc: BaseException) -> str | None:
    """The category of the error type the provider's error body names (see
    ``_CATEGORY_BY_PROVIDER_TYPE``): the exception's ``type`` or ``code`` (openai), else its
    ``body``'s ``type`` or ``error.type`` (anthropic). Untrusted: only short strings that name a
    known type count, and only plain dicts are read."""
    try:
        body = _safe_getattr(exc, "body")
        nested = body.get("error") if type(body) is dict else None
        for value in (
            _safe_getattr(exc, "type"),
            _safe_getattr(exc, "code"),
            nested.get("type") if type(nested) is dict else None,
            body.get("type") if type(body) is dict else None,
        ):
            if type(value) is str and len(value) <= _MAX_PROVIDER_TYPE_LENGTH:
                category = _CATEGORY_BY_PROVIDER_TYPE.get(value.lower())
                if category is not None:
                    return category
    except Exception:  # an odd body: the class name stands
        return None
    return None


def provider_error_type(value: object) -> str | None:
    """The category of an error type or code a provider names outside any exception (an OpenAI
    Responses stream's ``error`` event, a failed response's ``error.code``), as for an error body's;
    None if it names no known one."""
    if type(value) is str and len(value) <= _MAX_PROVIDER_TYPE_LENGTH:
        return _CATEGORY_BY_PROVIDER_TYPE.get(value.lower())
    return None


def _safe_getattr(obj: object, name: str) -> object:
    try:
        return getattr(obj, name, None)
    except Exception:
        return None
