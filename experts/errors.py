"""Typed errors of the expert layer.

Exception tree::

    OrchestratorError                 base of every error this project raises on purpose
    └── ExpertError                   an expert could not give an answer
        ├── ExpertUnavailable         connection refused / reset, DNS failure, server not loaded
        ├── ExpertTimeout             no complete answer within the expert's timeout
        ├── ExpertRateLimited         the server said 429 (carries retry_after_s when it gave one)
        ├── ExpertServerError         the server failed (5xx)
        ├── ExpertBadResponse         the server answered, but not with a valid OpenAI-shaped body
        ├── ExpertRequestRejected     4xx caused by our request (never retried)
        ├── ExpertOverloaded          the dispatcher's queue for this expert is full (retryable)
        └── UnknownQuestion           a recorded expert has no recorded output for this question
    ConfigError                       an invalid expert configuration file (names file and field)

`retryable` says whether trying the same expert again may succeed.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base class of all errors raised on purpose by this project."""


class ConfigError(OrchestratorError):
    """Raised when a configuration file is missing, unreadable or invalid."""


class ExpertError(OrchestratorError):
    """Raised (or returned per request) when an expert could not answer."""

    retryable: bool = False
    kind: str = "expert_error"

    def __init__(self, message: str, *, expert: str | None = None) -> None:
        super().__init__(message)
        self.expert = expert

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.kind


class ExpertUnavailable(ExpertError):
    """Raised when the expert cannot be reached (connection refused, reset, not loaded)."""

    retryable = True
    kind = "unavailable"


class ExpertTimeout(ExpertError):
    """Raised when the expert gives no complete answer within its timeout."""

    retryable = True
    kind = "timeout"


class ExpertRateLimited(ExpertError):
    """Raised when the expert's server answers 429; `retry_after_s` is its Retry-After."""

    retryable = True
    kind = "rate_limited"

    def __init__(self, message: str, *, expert: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message, expert=expert)
        self.retry_after_s = retry_after_s


class ExpertServerError(ExpertError):
    """Raised when the expert's server fails with a 5xx status."""

    retryable = True
    kind = "server_error"

    def __init__(self, message: str, *, expert: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message, expert=expert)
        self.status_code = status_code


class ExpertBadResponse(ExpertError):
    """Raised when the server answers with a body that is not a valid completion."""

    retryable = True
    kind = "bad_response"


class ExpertRequestRejected(ExpertError):
    """Raised when the server rejects our request with a 4xx (other than 429); never retried."""

    retryable = False
    kind = "rejected"

    def __init__(self, message: str, *, expert: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message, expert=expert)
        self.status_code = status_code


class ExpertOverloaded(ExpertError):
    """Raised when the dispatcher's queue for an expert is full; the caller may retry later."""

    retryable = True
    kind = "overloaded"


class UnknownQuestion(ExpertError):
    """Raised when a recorded expert is asked a question it has no recorded output for."""

    retryable = False
    kind = "unknown_question"


ERROR_KINDS: dict[str, type[ExpertError]] = {
    cls.kind: cls
    for cls in (
        ExpertError,
        ExpertUnavailable,
        ExpertTimeout,
        ExpertRateLimited,
        ExpertServerError,
        ExpertBadResponse,
        ExpertRequestRejected,
        ExpertOverloaded,
        UnknownQuestion,
    )
}
