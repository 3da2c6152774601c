"""Gateway errors and the ONE place that maps exceptions to HTTP statuses and OpenAI envelopes.

    APIError
    ├── BadRequest          400 invalid_request_error
    ├── Unauthorized        401 authentication_error
    ├── Forbidden           403 permission_error
    ├── NotFound            404 invalid_request_error (unknown model, trace, batch, route)
    ├── PayloadTooLarge     413 invalid_request_error
    ├── Unprocessable       422 invalid_request_error (validation; names the field)
    ├── RateLimited         429 rate_limit_error (+ Retry-After)
    ├── UpstreamFailed      502 upstream_error (every expert failed)
    ├── ServiceUnavailable  503 service_unavailable (store down, expert overloaded; + Retry-After)
    └── UpstreamTimeout     504 timeout

    install_handlers(app)                # one handler per exception type, rendering the envelope
    with map_store_exceptions():         # a failing store -> ServiceUnavailable (503, Retry-After)
        rec = await store.get_trace(trace_id)
"""

from __future__ import annotations

import logging
import re
from types import TracebackType

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.protocol import ErrorInfo, ErrorResponse
from store.db import StoreUnavailable

logger = logging.getLogger("orchestrator.gateway")


class APIError(Exception):
    status_code = 500
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.retry_after = message, param, code, retry_after
        self.headers: dict[str, str] = {}  # extra response headers (e.g. the trace id of a failed request)


class BadRequest(APIError):
    status_code, type = 400, "invalid_request_error"


class Unauthorized(APIError):
    status_code, type = 401, "authentication_error"


class Forbidden(APIError):
    status_code, type = 403, "permission_error"


class NotFound(APIError):
    status_code, type = 404, "invalid_request_error"


class PayloadTooLarge(APIError):
    status_code, type = 413, "invalid_request_error"


class Unprocessable(APIError):
    status_code, type = 422, "invalid_request_error"


class RateLimited(APIError):
    status_code, type = 429, "rate_limit_error"


class UpstreamFailed(APIError):
    status_code, type = 502, "upstream_error"


class ServiceUnavailable(APIError):
    status_code, type = 503, "service_unavailable"


class UpstreamTimeout(APIError):
    status_code, type = 504, "timeout"


def store_unavailable(reason: str) -> ServiceUnavailable:
    """The error of every request the store cannot serve right now (clients retry after 2 s)."""
    return ServiceUnavailable(f"the store is unavailable ({reason}); retry shortly", retry_after=2)


def is_store_failure(exc: BaseException) -> bool:
    """Whether `exc` says the database failed: our `StoreUnavailable`, an SQLAlchemy or asyncpg
    error, or an OSError (SQLAlchemy passes a refused connection through unwrapped)."""
    module = type(exc).__module__
    return isinstance(exc, (StoreUnavailable, OSError)) or "sqlalchemy" in module or "asyncpg" in module


class map_store_exceptions:  # noqa: N801 - used like a function, as contextlib.suppress is
    """A store failure inside becomes `store_unavailable` (a 503, not a 500); anything else passes.

    A class rather than a `@contextmanager` generator: it is on the chat path, and a generator
    context manager costs eight Python calls per use, this one two."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(exc, Exception) and is_store_failure(exc):
            raise store_unavailable(type(exc).__name__) from exc


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def sanitize(message: str) -> str:
    """No object addresses (or other process internals) in messages sent to clients."""
    return _ADDRESS.sub("", message)[:2000]


def error_body(exc: APIError) -> dict:
    return ErrorResponse(error=ErrorInfo(message=sanitize(exc.message), type=exc.type, param=exc.param, code=exc.code)).model_dump()


def error_response(exc: APIError) -> JSONResponse:
    headers = dict(getattr(exc, "headers", {}))
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return JSONResponse(error_body(exc), status_code=exc.status_code, headers=headers or None)


def validation_error(exc: RequestValidationError) -> APIError:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ())]
    # Drop where the value came from (the body itself, the query string), not a field named "body".
    loc = loc[1:] if loc[:1] in (["body"], ["query"], ["path"], ["header"]) else loc
    param = ".".join(loc) or None
    msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if first.get("type") == "json_invalid":
        return BadRequest(f"the request body is not valid JSON: {msg}", code="invalid_json")
    return Unprocessable(f"{param}: {msg}" if param else msg, param=param, code=str(first.get("type", "invalid")))


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        cls = {404: NotFound, 405: BadRequest, 413: PayloadTooLarge, 401: Unauthorized, 403: Forbidden}.get(exc.status_code, BadRequest)
        err = cls(str(exc.detail) if exc.status_code != 404 else "no such route; see GET /v1/models and the API docs")
        if exc.status_code == 405:
            err.message = "method not allowed for this route"
        resp = error_response(err)
        resp.status_code = exc.status_code
        return resp

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return error_response(APIError("internal error; the trace id in the logs has details"))
