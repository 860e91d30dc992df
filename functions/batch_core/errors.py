"""Typed domain errors; the adapters map them to HTTP or event outcomes in one place."""

from __future__ import annotations


class BatchCoreError(Exception):
    """Base of every error the core raises on purpose: a message for people, the offending
    parameter (`param`) and a machine-readable `code`, as OpenAI's error objects carry them."""

    code = "server_error"
    retry: bool | None = None
    """False: asking again cannot help, whatever the status (the SDKs read `x-should-retry`
    and would otherwise retry a 409 or a 429)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.param = param
        if code:
            self.code = code
        if retry is not None:
            self.retry = retry


class NotFoundError(BatchCoreError):
    code = "not_found"


class MissingObjectError(NotFoundError):
    """An S3 object (or the version an event named) is not there (any more)."""


class ConflictError(BatchCoreError):
    """The request does not fit the object's current state (e.g. cancelling a completed batch)."""

    code = "conflict"


class InvalidRequestError(BatchCoreError):
    code = "invalid_request"


class LineError(BatchCoreError):
    """One problem with one line of a batch input file."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message, param=param, code=code)
        self.message = message

    @classmethod
    def invalid(cls, message: str, param: str) -> LineError:
        """The common case: an `invalid_request` line naming the field at fault."""
        return cls("invalid_request", message, param)


class AuthenticationError(BatchCoreError):
    """No API key, or one we do not know (HTTP 401)."""

    code = "invalid_api_key"


class PayloadTooLargeError(BatchCoreError):
    """A request body over what the API accepts in one call (HTTP 413)."""

    code = "payload_too_large"


class RateLimitError(BatchCoreError):
    """The tenant sent more requests than its share (HTTP 429); `retry_after_ms`, when
    known, is how long until the same request would be admitted (the `retry-after` headers
    the SDKs wait for)."""

    code = "rate_limit_exceeded"

    def __init__(
        self, message: str, *, param: str | None = None, retry_after_ms: int | None = None
    ) -> None:
        super().__init__(message, param=param)
        self.retry_after_ms = retry_after_ms
