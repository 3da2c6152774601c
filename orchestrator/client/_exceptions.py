"""Client exceptions, mapped from the gateway's OpenAI error envelope.

    ClientError
    ├── APIConnectionError        the gateway could not be reached (after retries)
    ├── APIStatusError            the gateway answered with an error status
    │   ├── BadRequestError           400 (also raised before sending, for invalid arguments;
    │   │                                  `param` names the argument; `response` is None)
    │   ├── AuthenticationError       401 (missing or invalid API key)
    │   ├── PermissionDeniedError     403
    │   ├── NotFoundError             404 (unknown model, trace, batch, expert)
    │   ├── PayloadTooLargeError      413
    │   ├── UnprocessableEntityError  422 (servers other than this gateway; it answers 400)
    │   ├── RateLimitError            429 (after retries; `retry_after` in seconds)
    │   ├── InternalServerError       500
    │   ├── UpstreamError             502 (no expert answered)
    │   ├── ServiceUnavailableError   503 (after retries)
    │   └── GatewayTimeoutError       504
    ├── StreamError               an error event inside a stream (after the first chunk)
    └── BatchTimeout              `wait_batch` gave up before the job finished
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import ValidationError


class ClientError(Exception):
    """Base of every error this client raises."""


class APIConnectionError(ClientError):
    """Raised when the gateway cannot be reached (connection refused, reset, timeout)."""


class APIStatusError(ClientError):
    """Raised for an error status; carries the envelope's fields."""

    status_code = 0

    def __init__(self, message: str, *, response: httpx.Response | None = None, type: str | None = None,
                 param: str | None = None, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(f"{self.status_code or (response.status_code if response else '')} {message}".strip())
        self.message, self.response, self.type, self.param, self.code, self.retry_after = message, response, type, param, code, retry_after
        if response is not None:
            self.status_code = response.status_code


class BadRequestError(APIStatusError):
    status_code = 400


class AuthenticationError(APIStatusError):
    status_code = 401


class PermissionDeniedError(APIStatusError):
    status_code = 403


class NotFoundError(APIStatusError):
    status_code = 404


class PayloadTooLargeError(APIStatusError):
    status_code = 413


class UnprocessableEntityError(APIStatusError):
    status_code = 422


class RateLimitError(APIStatusError):
    status_code = 429


class InternalServerError(APIStatusError):
    status_code = 500


class UpstreamError(APIStatusError):
    status_code = 502


class ServiceUnavailableError(APIStatusError):
    status_code = 503


class GatewayTimeoutError(APIStatusError):
    status_code = 504


class StreamError(ClientError):
    """Raised when a stream carries an error event (the gateway failed after the first chunk)."""

    def __init__(self, message: str, *, type: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.type, self.code = message, type, code


class BatchTimeout(ClientError):
    """Raised when `wait_batch` times out; the job keeps running on the gateway."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    c.status_code: c
    for c in (BadRequestError, AuthenticationError, PermissionDeniedError, NotFoundError, PayloadTooLargeError,
              UnprocessableEntityError, RateLimitError, InternalServerError, UpstreamError, ServiceUnavailableError,
              GatewayTimeoutError)
}


def invalid_arguments(err: ValidationError) -> BadRequestError:
    """The client-side `BadRequestError` for arguments the gateway would refuse with a 400."""
    errors = err.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid arguments"}
    unknown = [".".join(str(p) for p in e["loc"]) for e in errors if e.get("type") == "extra_forbidden"]
    if unknown:
        message = f"unrecognized argument(s): {', '.join(map(repr, unknown))}; the gateway does not support them"
        return BadRequestError(message, type="invalid_request_error", param=unknown[0], code="unsupported_parameter")
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    msg = str(first.get("msg", "invalid arguments")).removeprefix("Value error, ")
    return BadRequestError(f"{param}: {msg}" if param else msg, type="invalid_request_error", param=param,
                           code=str(first.get("type", "invalid")))


def retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def error_from_response(response: httpx.Response) -> APIStatusError:
    """The most specific exception for an error response (any body shape tolerated)."""
    info: dict[str, Any] = {}
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            info = body["error"]
    except ValueError:
        pass
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = InternalServerError if response.status_code >= 500 else BadRequestError
    code = info.get("code")
    return cls(
        str(info.get("message") or response.text[:500] or response.reason_phrase), response=response, type=info.get("type"),
        param=info.get("param"), code=None if code is None else str(code), retry_after=retry_after_s(response),
    )
